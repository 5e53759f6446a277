"""One pool per test module: forking the zygote once keeps the corpus fast."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sandbox import SandboxPool

# The pool must never pass the server's environment on to tenant code (checked in the tests).
SECRET = "TREADLE_TEST_SECRET"


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    os.environ[SECRET] = "hunter2"
    pool = SandboxPool(max_workers=8, per_tenant=2)
    try:
        yield pool
    finally:
        pool.close()
        os.environ.pop(SECRET, None)
