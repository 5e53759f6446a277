"""``treadle events link``: an approval link minted from the command line sends its event once."""

from __future__ import annotations

import json

import httpx

from tests.integration.test_client_cli import Run, _until_status, acme, config_file, treadle

__all__ = ["acme", "config_file", "treadle"]  # the fixtures this module uses


def test_the_cli_mints_a_link_that_sends_the_event_once(acme: Run, client: httpx.Client) -> None:
    assert acme("run", "approval", "--id", "l1")[0] == 0
    _until_status(acme, "approval", "l1", "waiting")
    code, out, err = acme("events", "link", "approval", "l1", "approved", "--ttl", "1 hour")
    assert code == 0, err
    url, expires = out.splitlines()
    assert "/v1/links/" in url and expires.startswith("expires ") and expires.endswith(" UTC")
    assert client.post(url, json={"by": "ada"}).status_code == 202
    assert client.post(url, json={"by": "bob"}).json()["error"]["code"] == "link.expired"
    code, out, err = acme("instances", "wait", "approval", "l1", "--timeout", "30")
    assert code == 0 and json.loads(out) == {"by": "ada"}, err

    code, out, err = acme("events", "link", "approval", "l1", "approved", "--json")
    assert code == 2 and "complete" in err  # a finished instance takes no link
    code, _, err = acme("events", "link", "approval", "l1", "approved", "--uses", "0")
    assert code == 2 and "uses" in err
