"""The ``treadle`` command line, without starting anything."""

from __future__ import annotations

import pytest

from dispatcher._cli import _parser, main
from dispatcher._server_cli import _first_start_banner
from tenants import Bootstrap


def test_the_commands_and_their_options() -> None:
    parser = _parser()
    serve = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9", "--workers", "2"])
    assert (serve.host, serve.port, serve.workers) == ("0.0.0.0", 9, 2)
    assert parser.parse_args(["worker", "--database-url", "sqlite:///x"]).database_url
    assert parser.parse_args(["migrate"]).database_url is None


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
