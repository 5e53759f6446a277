"""The body of ``PUT /v1/workflows/{name}``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Upload(BaseModel):
    """Python source for the ``restricted`` (or wasm-python) sandbox, or a WebAssembly core
    module, base64-encoded, for the ``wasm`` sandbox."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sandbox: Literal["restricted", "wasm"]
    source: str | None = None
    class_name: str | None = Field(
        default=None, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    wasm_base64: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_code(self) -> Self:
        if (self.source is None) == (self.wasm_base64 is None):
            raise ValueError('give exactly one of "source" and "wasm_base64"')
        if self.wasm_base64 is not None and self.sandbox != "wasm":
            raise ValueError('"wasm_base64" needs "sandbox": "wasm"')
        if self.wasm_base64 is not None and self.class_name is not None:
            raise ValueError('"class_name" names a Python class; a wasm module has none')
        return self
