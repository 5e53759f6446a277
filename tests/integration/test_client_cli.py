"""The client commands of ``treadle`` (deploy, run, instances, events, logs, tenants, config)
against a real server, on both databases."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.app import ADMIN_TOKEN, APPROVAL, SUM
from tests.integration.test_sdk import FAILING
from tests.wasm_guests import conformance_module, python_runtime
from treadle.client import main

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "treadle" / "config.toml"


@pytest.fixture
def treadle(
    client: httpx.Client,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """``treadle ARGS...`` in this process: its exit status, stdout and stderr."""
    for name in [n for n in os.environ if n.startswith("TREADLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TREADLE_CONFIG", str(config_file))
    monkeypatch.setenv("TREADLE_URL", str(client.base_url).rstrip("/"))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def acme(treadle: Run, tmp_path: Path) -> Run:
    """A tenant whose API key is in the config file, with workflows sum, approval, failing."""
    code, out, _ = treadle(
        "tenants", "create", "acme", "--with-key", "--json", "--admin-token", ADMIN_TOKEN
    )
    assert code == 0, out
    assert treadle("config", "set", "api_key", json.loads(out)["key"]["key"])[0] == 0
    for name, source in (("sum", SUM), ("approval", APPROVAL), ("failing", FAILING)):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        code, out, err = treadle("deploy", str(tmp_path / f"{name}.py"))
        assert code == 0 and out.startswith(f"deployed {name}: version "), err
    return treadle


def test_run_follow_prints_live_progress_to_the_end(acme: Run) -> None:
    code, out, err = acme("run", "sum", "--params", '{"x": 1}', "--id", "r1", "--follow")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("created r1")
    assert "workflow.queued" in lines[1] and "workflow.complete" in lines[-1]
    assert any("step.completed" in line and "a -> 2" in line for line in lines)
    assert any(line.endswith("log  a is 2") for line in lines)
    assert 'output {"a": 2, "vars": {}}' in lines[-1]

    code, out, _ = acme("instances", "list", "sum", "--json")
    assert code == 0 and [i["id"] for i in json.loads(out)["instances"]] == ["r1"]
    code, out, _ = acme("instances", "get", "sum", "r1")
    assert (
        code == 0
        and "status:    complete" in out
        and "a     1      do    complete  1         2" in out
    )
    code, out, _ = acme("logs", "sum", "r1")
    assert code == 0 and out.splitlines()[1].endswith("-     a is 2")
    code, out, _ = acme("run", "sum", "--params", '{"x": 2}', "--follow", "--json")
    assert code == 0 and json.loads(out)["output"] == {"a": 3, "vars": {}}


def test_events_send_wait_and_control_an_instance(acme: Run) -> None:
    assert acme("run", "approval", "--id", "a1")[0] == 0
    _until_status(acme, "approval", "a1", "waiting")
    assert acme("instances", "pause", "approval", "a1") == (0, "a1: paused\n", "")
    code, _, err = acme("instances", "pause", "approval", "a1")
    assert code == 2 and "[instance.invalid_transition]" in err
    assert acme("instances", "resume", "approval", "a1")[0] == 0
    code, out, _ = acme(
        "events", "send", "approval", "a1", "approved", "--payload", '{"by": "ada"}'
    )
    assert (code, out) == (0, "sent approved to a1\n")
    assert acme("instances", "wait", "approval", "a1", "--timeout", "30") == (
        0,
        '{"by": "ada"}\n',
        "",
    )
    code, out, _ = acme("logs", "approval", "a1", "--follow", "--json")
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert code == 0 and "wait.completed" in kinds and kinds[-1] == "workflow.complete"

    assert acme("run", "approval", "--id", "a2")[0] == 0
    code, _, err = acme("instances", "wait", "approval", "a2", "--timeout", "1")
    assert code == 1 and "did not finish within 1 s" in err
    assert acme("instances", "terminate", "approval", "a2")[1] == "a2: terminated\n"
    code, out, _ = acme("instances", "restart", "approval", "a2")  # a worker may be quick
    assert code == 0 and out in ("a2: queued\n", "a2: running\n", "a2: waiting\n")
    assert acme("instances", "delete", "approval", "a2") == (0, "deleted a2\n", "")
    code, _, err = acme("instances", "get", "approval", "a2")
    assert code == 2 and "[instance.not_found]" in err


def test_failures_are_messages_and_exit_statuses(acme: Run, tmp_path: Path) -> None:
    code, out, err = acme("run", "failing", "--id", "f1", "--follow")
    assert code == 1 and "workflow.errored" in out
    assert "is errored (NonRetryableError: card declined)" in err
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    code, _, err = acme("deploy", str(bad))
    assert code == 2 and "[code.invalid]" in err and "line 1, column" in err
    code, _, err = acme("run", "approval", "--id", "a b")
    assert code == 2 and "error:" in err
    code, _, err = acme("tenants", "list")
    assert code == 2 and "no admin token" in err
    code, out, _ = acme("workflows", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "NAME", "approval", "failing", "sum"
    ]  # fmt: skip
    assert acme("workflows", "delete", "failing") == (0, "deleted workflow failing\n", "")
    code, _, err = acme("workflows", "get", "failing")
    assert code == 2 and "[workflow.not_found]" in err


def test_tenants_admin_and_the_config_file(
    treadle: Run, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = treadle("tenants", "list")
    assert code == 2 and "TREADLE_ADMIN_TOKEN" in err
    monkeypatch.setenv("TREADLE_ADMIN_TOKEN", ADMIN_TOKEN)
    assert treadle("tenants", "create", "zeta", "--policy", '{"creates_per_second": 7}')[0] == 0
    code, out, _ = treadle("tenants", "list", "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["zeta"]
    code, out, _ = treadle("tenants", "policy", "zeta", "--set", 'vars={"region": "eu"}')
    assert code == 0 and "vars:" in out and '{"region": "eu"}' in out
    code, out, _ = treadle("tenants", "get", "zeta")
    assert "creates_per_second:" in out and " 7" in out
    code, out, _ = treadle("tenants", "keys", "create", "zeta", "--json")
    key = json.loads(out)
    assert code == 0 and key["key"].startswith("tdl_")

    # The config file is where the API key and admin token come from when no flag or
    # variable gives them; a flag wins over the variable.
    monkeypatch.delenv("TREADLE_ADMIN_TOKEN")
    assert treadle("config", "set", "admin_token", ADMIN_TOKEN)[0] == 0
    assert treadle("config", "set", "api_key", key["key"])[0] == 0
    assert config_file.stat().st_mode & 0o777 == 0o600
    assert treadle("workflows", "list", "--json")[1] == "[]\n"
    code, out, _ = treadle("config", "show", "--json")
    shown = json.loads(out)
    assert shown["config_file"] == str(config_file) and key["key"] not in out
    assert treadle("workflows", "list", "--key", "tdl_wrong")[0] == 2
    assert treadle("tenants", "keys", "delete", "zeta", key["id"])[0] == 0
    code, _, err = treadle("workflows", "list")
    assert code == 2 and "[auth.unauthorized]" in err
    monkeypatch.setenv("TREADLE_URL", "http://127.0.0.1:9")  # nobody listens there
    code, _, err = treadle("workflows", "list")
    assert code == 2 and "could not reach the treadle server at http://127.0.0.1:9" in err


def test_keys_list_create_rotate_and_last_use(
    treadle: Run, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TREADLE_ADMIN_TOKEN", ADMIN_TOKEN)
    assert treadle("tenants", "create", "zeta")[0] == 0
    code, out, err = treadle("tenants", "keys", "create", "zeta", "--ttl", "90d", "--json")
    timed = json.loads(out)
    assert code == 0 and timed["expires_at"] is not None, err
    code, out, _ = treadle("tenants", "keys", "create", "zeta", "--expires-at", "2099-01-01T00:00Z")
    assert code == 0 and "(shown only this once); it works until 2099-01-01 00:00:00" in out
    code, out, _ = treadle("tenants", "keys", "create", "zeta", "--json")
    plain = json.loads(out)
    assert code == 0 and plain["expires_at"] is None
    assert treadle("workflows", "list", "--key", timed["key"])[0] == 0

    code, out, _ = treadle("tenants", "keys", "list", "zeta")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == [
        "ID", "CREATED", "LAST", "USED", "EXPIRES", "STATE", "ROTATED", "FROM"
    ]  # fmt: skip
    assert len(rows) == 3 and rows[0].startswith(timed["id"]) and rows[2].startswith(plain["id"])
    assert "never" not in rows[0] and "active" in rows[0] and "never" in rows[2]
    assert "2099-01-01 00:00:00" in rows[1]
    code, out, _ = treadle("tenants", "keys", "list", "zeta", "--json")
    listed = json.loads(out)
    assert listed[0]["last_used_at"] is not None and listed[2]["last_used_at"] is None

    # Rotation with an overlap: both keys work; with 0 the old one stops at once.
    code, out, err = treadle("tenants", "keys", "rotate", "zeta", plain["id"], "--overlap", "1h")
    new_line, old_line = out.splitlines()
    new_key = new_line.split(": ")[1].split()[0]
    assert code == 0 and new_key.startswith("tdl_"), err
    assert old_line.startswith(f"the old key {plain['id']} works until ")
    assert treadle("workflows", "list", "--key", plain["key"])[0] == 0
    assert treadle("workflows", "list", "--key", new_key)[0] == 0
    code, out, _ = treadle("tenants", "keys", "list", "zeta", "--json")
    until = dt.datetime.fromisoformat(json.loads(out)[2]["expires_at"])
    assert abs((until - dt.datetime.now(dt.UTC)).total_seconds() - 3600) < 60
    code, out, _ = treadle(
        "tenants", "keys", "rotate", "zeta", timed["id"], "--overlap", "0", "--json"
    )
    rotated = json.loads(out)
    assert code == 0 and rotated["rotated_from"] == timed["id"]
    code, _, err = treadle("workflows", "list", "--key", timed["key"])
    assert code == 2 and "the API key has expired [auth.unauthorized]" in err
    assert treadle("workflows", "list", "--key", rotated["key"])[0] == 0
    code, out, _ = treadle("tenants", "keys", "list", "zeta")
    assert "expired" in out.splitlines()[1] and timed["id"] in out.splitlines()[-1]
    code, _, err = treadle("tenants", "keys", "rotate", "zeta", timed["id"])
    assert code == 2 and "[key.expired]" in err
    with pytest.raises(SystemExit) as refused:
        treadle("tenants", "keys", "rotate", "zeta", plain["id"], "--overlap", "soon")
    assert refused.value.code == 2
    assert "argument --overlap: 'soon' is not a duration like 90" in capsys.readouterr().err


def test_the_audit_command_lists_and_filters(treadle: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREADLE_ADMIN_TOKEN", ADMIN_TOKEN)
    assert treadle("tenants", "create", "zeta", "--with-key")[0] == 0
    assert treadle("tenants", "create", "omega")[0] == 0
    assert treadle("tenants", "policy", "zeta", "--set", "creates_per_second=9")[0] == 0
    code, out, _ = treadle("tenants", "keys", "list", "zeta", "--json")
    key_id = json.loads(out)[0]["id"]
    assert treadle("tenants", "keys", "rotate", "zeta", key_id)[0] == 0

    code, out, _ = treadle("audit")
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == [
        "TIME",
        "ACTOR",
        "ACTION",
        "TENANT",
        "TARGET",
        "OUTCOME",
    ]
    assert [row.split()[3] for row in rows] == [
        "key.rotated", "policy.updated", "tenant.created", "key.created", "tenant.created"
    ]  # fmt: skip
    assert rows[0].split()[2:] == ["configured", "key.rotated", "zeta", key_id, "ok"]
    assert rows[1].split()[4:] == ["zeta", "-", "ok"]
    code, out, _ = treadle("audit", "--tenant", "omega")
    assert code == 0 and [row.split()[3:5] for row in out.splitlines()[1:]] == [
        ["tenant.created", "omega"]
    ]
    code, out, _ = treadle("audit", "--action", "tenant.created", "--json")
    page = json.loads(out)
    assert [e["tenant"] for e in page["entries"]] == ["omega", "zeta"]
    assert page["next_cursor"] is None
    code, out, err = treadle("audit", "--tenant", "zeta", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2 and err.startswith("more: --cursor ")
    code, out, _ = treadle("audit", "--tenant", "zeta", "--cursor", err.split()[-1], "--json")
    assert [e["action"] for e in json.loads(out)["entries"]] == [
        "policy.updated", "key.created", "tenant.created"
    ]  # fmt: skip
    code, _, err = treadle("audit", "--tenant", "nobody")
    assert code == 2 and "[tenant.not_found]" in err
    code, _, err = treadle("audit", "--action", "key.stolen")
    assert code == 2 and "action must be one of" in err


def test_the_installed_command_end_to_end(
    acme: Run, client: httpx.Client, config_file: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env.update(TREADLE_CONFIG=str(config_file), TREADLE_URL=str(client.base_url).rstrip("/"))
    command = [sys.executable, "-m", "dispatcher"]
    done = subprocess.run(
        [*command, "run", "sum", "--params", '{"x": 4}', "--follow"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "workflow.complete" in done.stdout and '"a": 5' in done.stdout
    missing = subprocess.run(
        [*command, "instances", "get", "sum", "nope"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "[instance.not_found]" in missing.stderr


def test_a_closed_pipe_ends_every_command_quietly(
    acme: Run, client: httpx.Client, config_file: Path
) -> None:
    """``treadle ... | head``: the reader has gone before the command prints a line."""
    assert acme("run", "sum", "--params", '{"x": 1}', "--id", "p1", "--follow")[0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env.update(TREADLE_CONFIG=str(config_file), TREADLE_URL=str(client.base_url).rstrip("/"))
    commands = (
        ["instances", "get", "sum", "p1"],
        ["instances", "list", "sum", "--json"],
        ["workflows", "list"],
        ["logs", "sum", "p1", "--follow"],
        ["run", "sum", "--params", '{"x": 2}', "--follow"],
    )
    for args in commands:
        reader, writer = os.pipe()
        os.close(reader)  # as `head` does once it has its lines
        try:
            done = subprocess.run(
                [sys.executable, "-m", "dispatcher", *args],
                env=env,
                stdout=writer,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
            )
        finally:
            os.close(writer)
        assert done.returncode == 141, (args, done.stderr)
        assert done.stderr == "", args  # no traceback, no "Exception ignored"


def _until_status(treadle: Run, workflow: str, id: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while json.loads(treadle("instances", "get", workflow, id, "--json")[1])["status"] != status:
        assert time.monotonic() < deadline, f"{id} never became {status}"
        time.sleep(0.02)


def test_deploy_a_wasm_module_and_python_for_the_wasm_sandbox(acme: Run, tmp_path: Path) -> None:
    module = tmp_path / "conformance.wasm"
    module.write_bytes(conformance_module())
    code, out, err = acme("deploy", str(module), "--json")
    assert code == 0 and json.loads(out)["sandbox"] == "wasm", err
    code, out, err = acme("run", "conformance", "--params", '{"scenario": "steps"}', "--follow")
    assert code == 0 and 'output {"b": 42}' in out.splitlines()[-1], err

    python_runtime()
    code, out, err = acme("deploy", str(tmp_path / "sum.py"), "--name", "wsum", "--sandbox", "wasm")
    assert code == 0 and out.endswith("(wasm)\n"), err
    code, out, err = acme("run", "wsum", "--params", '{"x": 1}', "--follow", "--json")
    assert code == 0 and json.loads(out)["output"] == {"a": 2, "vars": {}}, err
