"""Where the ``treadle`` client commands find the server and their credentials.

Each of the URL, the tenant API key and the admin token comes from the first of: its flag
(``--url``, ``--key``, ``--admin-token``), its environment variable (``TREADLE_URL``,
``TREADLE_API_KEY``, ``TREADLE_ADMIN_TOKEN``), the config file, the default (only the URL
has one: ``http://127.0.0.1:8787``). The config file is ``$TREADLE_CONFIG``, else
``$XDG_CONFIG_HOME/treadle/config.toml``, else ``~/.config/treadle/config.toml``::

    url = "http://127.0.0.1:8787"
    api_key = "tdl_..."
    admin_token = "tdla_..."
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from treadle.errors import InvalidInput

DEFAULT_URL = "http://127.0.0.1:8787"
FIELDS = {"url": "TREADLE_URL", "api_key": "TREADLE_API_KEY", "admin_token": "TREADLE_ADMIN_TOKEN"}
"""The settings of the config file, with the environment variable of each."""
SECRETS = ("api_key", "admin_token")


@dataclass(frozen=True)
class Target:
    """The server to talk to and the credentials to do it with."""

    url: str
    api_key: str | None
    admin_token: str | None


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("TREADLE_CONFIG"):
        return Path(env["TREADLE_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "treadle" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    """The settings in the config file at ``path``; none when there is no file."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read the config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"{path}: unknown settings {', '.join(unknown)} (known: {_known()})")
    return {k: str(v) for k, v in data.items()}


def write_config(path: Path, settings: Mapping[str, str]) -> None:
    """Write ``settings`` to the file at ``path``, readable by its owner only (it has keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A JSON string is a valid TOML basic string: json.dumps quotes and escapes for both.
    text = "".join(f"{k} = {json.dumps(settings[k])}\n" for k in FIELDS if k in settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def set_setting(path: Path, name: str, value: str | None) -> None:
    """Set (or with ``None`` remove) one setting of the config file."""
    if name not in FIELDS:
        raise InvalidInput(f"unknown setting {name!r} (known: {_known()})")
    settings = read_config(path)
    if value is None:
        settings.pop(name, None)
    else:
        settings[name] = value
    write_config(path, settings)


def resolve(flags: Mapping[str, str | None], env: Mapping[str, str]) -> Target:
    """Each setting from its flag, else its environment variable, else the config file."""
    file: dict[str, str] | None = None
    found: dict[str, str | None] = {}
    for name, variable in FIELDS.items():
        value = flags.get(name) or env.get(variable)
        if not value:
            file = read_config(config_path(env)) if file is None else file
            value = file.get(name)
        found[name] = value
    return Target(found["url"] or DEFAULT_URL, found["api_key"], found["admin_token"])


def masked(value: str | None) -> str:
    """A secret as it may be shown: its first characters only."""
    if not value:
        return "(not set)"
    return value[: min(8, len(value) // 2)] + "…"


def _known() -> str:
    return ", ".join(FIELDS)
