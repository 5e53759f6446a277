"""Uploads: body validation, names and content versions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loader import Upload, check_workflow_name, content_version
from treadle.errors import InvalidInput


def test_python_source_and_wasm_modules_are_the_two_kinds_of_upload() -> None:
    assert Upload.model_validate({"source": "x", "sandbox": "restricted"}).source == "x"
    wasm = Upload.model_validate({"wasm_base64": "AA==", "sandbox": "wasm"})
    assert wasm.wasm_base64 == "AA==" and wasm.source is None


@pytest.mark.parametrize(
    "body",
    [
        {"sandbox": "restricted"},
        {"source": "x", "wasm_base64": "AA==", "sandbox": "wasm"},
        {"wasm_base64": "AA==", "sandbox": "restricted"},
        {"wasm_base64": "AA==", "sandbox": "wasm", "class_name": "A"},
        {"source": "x", "sandbox": "restricted", "class_name": "1abc"},
        {"source": "x", "sandbox": "restricted", "class_name": "A\n"},
        {"source": "x", "sandbox": "other"},
        {"source": b"x", "sandbox": "restricted"},
        {"source": "x", "sandbox": "restricted", "unknown": 1},
    ],
)
def test_malformed_uploads_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Upload.model_validate(body)


def test_the_version_is_a_hash_of_everything_that_decides_how_code_runs() -> None:
    version = content_version("restricted", None, "source")
    assert len(version) == 32 and int(version, 16) >= 0
    assert content_version("restricted", None, "source") == version
    assert content_version("wasm", None, "source") != version
    assert content_version("restricted", "A", "source") != version
    assert content_version("restricted", None, "source ") != version


@pytest.mark.parametrize("name", ["a", "A_b-1", "_x", "x" * 64])
def test_good_workflow_names(name: str) -> None:
    assert check_workflow_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a b", "a.b", "x" * 65, "a\n", "é"])
def test_bad_workflow_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_workflow_name(name)
