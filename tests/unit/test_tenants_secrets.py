"""Credentials: their shape, and that only a hash of the secret is needed to check them."""

from __future__ import annotations

import pytest

from tenants._secrets import hash_secret, matches, new_credential, parse_credential


def test_a_credential_reads_prefix_id_secret_and_parses_back() -> None:
    credential = new_credential("tdl")
    assert credential.text == f"tdl_{credential.id}_{credential.secret}"
    assert parse_credential(credential.text, "tdl") == credential
    assert len(credential.secret) >= 40  # 256 random bits


def test_a_secret_is_checked_against_its_hash() -> None:
    credential = new_credential("tdl")
    assert credential.secret_hash == hash_secret(credential.secret)
    assert credential.secret not in credential.secret_hash
    assert matches(credential.secret, credential.secret_hash)
    assert not matches(credential.secret + "x", credential.secret_hash)


@pytest.mark.parametrize(
    "text", ["", "tdl", "tdl_", "tdl_abc", "tdl__secret", "tdla_abc_secret", "x_abc_secret"]
)
def test_malformed_credentials_do_not_parse(text: str) -> None:
    assert parse_credential(text, "tdl") is None


def test_secrets_with_underscores_parse() -> None:
    parsed = parse_credential("tdl_0123abcd_se_cr-et", "tdl")
    assert parsed is not None and (parsed.id, parsed.secret) == ("0123abcd", "se_cr-et")
