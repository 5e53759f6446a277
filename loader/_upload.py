"""The body of ``PUT /v1/workflows/{name}``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loader._flow import FlowBody


class Upload(BaseModel):
    """Python source for the ``restricted`` (or wasm-python) sandbox, or a WebAssembly core
    module, base64-encoded, for the ``wasm`` sandbox."""

    # The document says what ``_one_kind_of_code`` checks, so that clients (and the fuzz tests)
    # know exactly which bodies are accepted.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["source"],
                    "properties": {"source": {"type": "string"}, "wasm_base64": {"type": "null"}},
                },
                {
                    "required": ["wasm_base64", "sandbox"],
                    "properties": {
                        "wasm_base64": {"type": "string"},
                        "sandbox": {"const": "wasm"},
                        "source": {"type": "null"},
                        "class_name": {"type": "null"},
                    },
                },
            ]
        },
    )

    sandbox: Literal["restricted", "wasm"]
    source: str | None = None
    class_name: str | None = Field(
        default=None, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    wasm_base64: str | None = None
    # Per-key flow control (docs/flow-control.md); an upload without it leaves none.
    flow: FlowBody | None = None

    @model_validator(mode="after")
    def _one_kind_of_code(self) -> Self:
        if (self.source is None) == (self.wasm_base64 is None):
            raise ValueError('give exactly one of "source" and "wasm_base64"')
        if self.wasm_base64 is not None and self.sandbox != "wasm":
            raise ValueError('"wasm_base64" needs "sandbox": "wasm"')
        if self.wasm_base64 is not None and self.class_name is not None:
            raise ValueError('"class_name" names a Python class; a wasm module has none')
        return self
