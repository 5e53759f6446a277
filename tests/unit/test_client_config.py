"""Where the client commands find the server URL and their credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from treadle.client._config import (
    DEFAULT_URL,
    Target,
    config_path,
    masked,
    read_config,
    resolve,
    set_setting,
)
from treadle.errors import InvalidInput

NO_FLAGS: dict[str, str | None] = {"url": None, "api_key": None, "admin_token": None}


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    set_setting(path, "url", "http://file:1")
    set_setting(path, "api_key", "file-key")
    set_setting(path, "admin_token", "file-admin")
    env = {"TREADLE_CONFIG": str(path), "TREADLE_API_KEY": "env-key"}
    assert resolve(NO_FLAGS, env) == Target("http://file:1", "env-key", "file-admin")
    flags = {**NO_FLAGS, "api_key": "flag-key", "url": "http://flag:2"}
    assert resolve(flags, env) == Target("http://flag:2", "flag-key", "file-admin")


def test_without_a_file_the_url_is_the_default_and_there_are_no_credentials(
    tmp_path: Path,
) -> None:
    env = {"TREADLE_CONFIG": str(tmp_path / "missing.toml")}
    assert resolve(NO_FLAGS, env) == Target(DEFAULT_URL, None, None)


def test_the_config_file_location(tmp_path: Path) -> None:
    assert config_path({"TREADLE_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    xdg = config_path({"XDG_CONFIG_HOME": str(tmp_path)})
    assert xdg == tmp_path / "treadle" / "config.toml"
    assert config_path({}) == Path.home() / ".config" / "treadle" / "config.toml"


def test_settings_are_written_as_toml_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "config.toml"
    set_setting(path, "api_key", 'with "quotes" and \\ backslash')
    set_setting(path, "url", "http://h:1")
    assert read_config(path) == {"api_key": 'with "quotes" and \\ backslash', "url": "http://h:1"}
    assert path.stat().st_mode & 0o777 == 0o600
    set_setting(path, "api_key", None)
    assert read_config(path) == {"url": "http://h:1"}


def test_a_broken_or_unknown_setting_is_an_error_that_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("url = \n")
    with pytest.raises(InvalidInput, match=str(path)):
        read_config(path)
    path.write_text('token = "x"\n')
    with pytest.raises(InvalidInput, match="unknown settings token"):
        read_config(path)
    with pytest.raises(InvalidInput, match="unknown setting"):
        set_setting(path, "nope", "x")


def test_secrets_are_shown_masked() -> None:
    assert masked("tdl_abcdefgh_secret") == "tdl_abcd…"
    assert masked(None) == "(not set)"
