"""The WebAssembly backends: ``wasm`` (CPython compiled to a component, one for every tenant;
``_python``) and ``wasm-module`` (a tenant's own core module; ``_module``), on wasmtime.

``_engine`` holds the shared wasmtime engine and its limits, ``_build`` builds and caches the
Python runtime, ``_abi`` checks a core module's imports and exports, ``_guest`` is one run of a
guest, and ``guest/`` holds what is compiled into the guests. Worker processes load the
backends by module name (:data:`sandbox._backends.SANDBOXES`), so nothing is exported here: the
engine process must not load wasmtime.
"""

from __future__ import annotations

__all__: list[str] = []
