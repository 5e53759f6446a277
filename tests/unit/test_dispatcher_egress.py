from __future__ import annotations

import pytest

from dispatcher._egress import EgressDenied, check_allowed
from treadle.errors import InvalidInput


def test_listed_hosts_and_subdomain_wildcards_are_allowed() -> None:
    allow = ["api.example.com", "*.inventory.test", "127.0.0.1"]
    assert check_allowed("https://api.example.com/v1", allow) == "api.example.com"
    assert check_allowed("http://eu.inventory.test/x", allow) == "eu.inventory.test"
    assert check_allowed("http://127.0.0.1:8080/", allow) == "127.0.0.1"


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.com/", "https://inventory.test.evil/", "http://localhost:8787/"],
)
def test_everything_else_is_denied(url: str) -> None:
    with pytest.raises(EgressDenied):
        check_allowed(url, ["api.example.com", "*.inventory.test"])


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:5432/", "http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/"],
)
def test_a_star_policy_still_keeps_internal_addresses_out(url: str) -> None:
    with pytest.raises(EgressDenied):
        check_allowed(url, ["*"])


def test_only_http_urls() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/", "not a url"):
        with pytest.raises(InvalidInput):
            check_allowed(url, ["*"])
