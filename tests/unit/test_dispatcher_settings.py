"""Settings come from TREADLE_* variables; the command line goes on top."""

from __future__ import annotations

import pytest

from dispatcher import Settings


def test_defaults_are_those_of_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TREADLE_DATABASE_URL", "TREADLE_ADMIN_TOKEN", "TREADLE_HOST", "TREADLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite:///./treadle.db"
    assert (settings.host, settings.port) == ("127.0.0.1", 8787)
    assert settings.admin_token_value() is None


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREADLE_DATABASE_URL", "postgresql://db/treadle")
    monkeypatch.setenv("TREADLE_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("TREADLE_WORKERS", "3")
    settings = Settings()
    assert settings.database_url == "postgresql://db/treadle"
    assert settings.admin_token_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.workers == 3
    assert Settings(workers=5).workers == 5


def test_the_log_level_is_checked_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREADLE_LOG_LEVEL", "DEBUG")
    assert Settings().log_level == "debug"
    monkeypatch.setenv("TREADLE_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="log_level"):
        Settings()
