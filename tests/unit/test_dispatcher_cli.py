"""The ``treadle`` command line, without starting anything."""

from __future__ import annotations

import threading

import pytest

from bench._server import free_port
from dispatcher import Settings
from dispatcher._server_cli import _first_start_banner
from dispatcher._startup import FIRST_DELAY, next_delay, open_platform
from tenants import Bootstrap
from treadle.client._main import main, parser
from treadle.errors import Unavailable


def test_the_commands_and_their_options() -> None:
    commands = parser()
    serve = commands.parse_args(["serve", "--host", "0.0.0.0", "--port", "9", "--workers", "2"])
    assert (serve.host, serve.port, serve.workers) == ("0.0.0.0", 9, 2)
    assert commands.parse_args(["worker", "--database-url", "sqlite:///x"]).database_url
    assert commands.parse_args(["migrate"]).database_url is None


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "command" in capsys.readouterr().err


def test_the_first_start_banner_shows_both_secrets() -> None:
    banner = _first_start_banner(Bootstrap("tdla_a_b", "default", "tdl_c_d"), "http://h:1")
    assert "admin token:" in banner and "tdla_a_b" in banner
    assert "'default'" in banner and "tdl_c_d" in banner
    assert "shown only this once" in banner
    # The key rides in the fragment, which browsers never send to the server.
    assert "http://h:1/playground#key=tdl_c_d" in banner


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_help_states_the_defaults_of_the_settings(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default: TREADLE_WORKERS, else {Settings.model_fields['workers'].default})" in shown


def test_waiting_for_the_database_backs_off_to_five_seconds() -> None:
    delays = [FIRST_DELAY]
    for _ in range(5):
        delays.append(next_delay(delays[-1]))
    assert delays == [0.5, 1, 2, 4, 5, 5]


def _nowhere(port: int, **overrides: object) -> Settings:
    return Settings(database_url=f"postgresql://treadle:s3cret@127.0.0.1:{port}/db", **overrides)


def test_with_no_wait_allowed_an_unreachable_database_is_one_clear_error() -> None:
    port = free_port()
    with pytest.raises(Unavailable) as raised:
        open_platform(_nowhere(port, database_wait_seconds=0), threading.Event(), print)
    where = f"postgresql://treadle:***@127.0.0.1:{port}/db"
    assert raised.value.message == f"the database at {where} does not answer (connection refused)"


def test_a_stop_while_waiting_for_the_database_ends_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    stop.set()
    assert open_platform(_nowhere(free_port()), stop, print) is None
    assert "waiting for the database at postgresql://treadle:***@" in caplog.text
