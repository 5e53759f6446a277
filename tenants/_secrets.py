"""Credentials: API keys and admin tokens, of which only a hash of the secret is stored.

A credential reads ``<prefix>_<id>_<secret>``: the id finds the row with one primary-key
lookup, the secret is checked against its SHA-256 in constant time. Secrets are 256 random
bits, so a fast hash is enough; a slow password hash would only slow every request down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "tdl"
ADMIN_PREFIX = "tdla"


@dataclass(frozen=True)
class Credential:
    id: str
    secret: str
    prefix: str

    @property
    def text(self) -> str:
        """The credential as the user sees it, once."""
        return f"{self.prefix}_{self.id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def new_credential(prefix: str) -> Credential:
    # The id is hex, so it never contains the "_" separating it from the secret.
    return Credential(secrets.token_hex(8), secrets.token_urlsafe(32), prefix)


def parse_credential(text: str, prefix: str) -> Credential | None:
    """The parts of ``text``, or None when it is not shaped like a credential of ``prefix``."""
    head, sep, rest = text.partition("_")
    if head != prefix or not sep:
        return None
    key_id, sep, secret = rest.partition("_")
    if not sep or not secret or len(key_id) > 32 or not (key_id.isascii() and key_id.isalnum()):
        return None  # ids are hex: anything else (a NUL, say) must not reach a database query
    return Credential(key_id, secret, prefix)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` hashes to ``secret_hash``, in time independent of where they differ."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)
