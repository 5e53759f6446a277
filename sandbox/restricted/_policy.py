"""The restricted backend's policy: builtins, attribute guards, and the import allowlist.

RestrictedPython rewrites attribute access, item access, iteration, augmented assignment and
``print`` into calls of the guard functions defined here; names starting with ``_`` are
rejected at compile time. This is the first wall only — the worker process's OS limits are the
real one — so the policy errs on the side of less: facade modules instead of real ones (the
real ``datetime`` module has a ``sys`` attribute), no ``type``/``repr``/``format``/``open``,
and no ``format``/``format_map`` on strings (their field syntax walks attributes), also not
through ``super()`` of a ``str`` subclass. docs/sandbox.md lists what the escape corpus
(tests/sandbox/escapes) pins.
"""

from __future__ import annotations

import abc
import base64
import builtins
import collections
import datetime
import decimal
import fractions
import hashlib
import importlib
import itertools
import json
import math
import operator
import random
import re
import statistics
import textwrap
import types
from collections.abc import Callable
from typing import Any

from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    raise_,
    safer_getattr,
)

import treadle.runtime

_STDLIB = (
    base64, collections, datetime, decimal, fractions, hashlib, itertools, json, math, random,
    re, statistics, textwrap,
)  # fmt: skip
# Public names that are unsafe although public: UserString.format walks attributes like
# str.format does.
_WITHHELD = {"collections": {"UserString"}}
_TREADLE_NAMES = (
    "NonRetryableError",
    "StepError",
    "WaitTimeout",
    "WorkflowEntrypoint",
    "parse_duration",
)

# Attributes that lead from harmless objects to frames, code or classes' internals. Most are
# also rejected at compile time; the guard catches the ``getattr(x, "gi_" + "frame")`` forms.
_DENIED_ATTRIBUTES = frozenset({"mro", "gi_frame", "gi_code", "cr_frame", "ag_frame", "tb_frame"})
_safer_getattr: Callable[..., Any] = safer_getattr
_OPAQUE_TYPES = (types.FrameType, types.TracebackType, types.CodeType)
_GENERATOR_TYPES = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)
_GENERATOR_METHODS = frozenset({"send", "throw", "close"})


def _facade(name: str, source: Any, names: list[str]) -> types.ModuleType:
    """A module object holding only ``names`` of ``source``, never a module."""
    facade = types.ModuleType(name)
    for attribute in names:
        value = getattr(source, attribute)
        if isinstance(value, set):  # hashlib.algorithms_available: shared, so frozen
            value = frozenset(value)
        if not attribute.startswith("_") and not isinstance(value, types.ModuleType):
            setattr(facade, attribute, value)
    return facade


def _public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    withheld = _WITHHELD.get(module.__name__, set())
    return [n for n in names if n not in withheld]


MODULES: dict[str, types.ModuleType] = {
    m.__name__: _facade(m.__name__, m, _public_names(m)) for m in _STDLIB
}
MODULES["treadle"] = _facade("treadle", treadle.runtime, list(_TREADLE_NAMES))
ALLOWED_MODULES = tuple(sorted(MODULES))
# What the C code of allowed modules imports while tenant code is the running frame (the C API
# imports through that frame's ``__import__``): ``date.strftime`` and ``timetuple`` need
# ``time``, ``datetime.strptime`` needs ``_strptime``. Only C code gets these: an import
# statement for them is refused when the code is compiled, and ``__import__`` is a ``_`` name.
_IMPLICIT_IMPORTS = {name: importlib.import_module(name) for name in ("_strptime", "time")}


def guarded_getattr(obj: Any, name: str, *default: Any) -> Any:
    """``_getattr_`` and the ``getattr`` builtin of restricted code.

    Unlike RestrictedPython's ``safer_getattr`` a missing attribute raises, as in Python,
    instead of reading as None.
    """
    _check_attribute(obj, name)
    return _safer_getattr(obj, name, default[0] if default else raise_)


def _check_attribute(obj: Any, name: Any) -> None:
    if not isinstance(name, str):
        raise TypeError("attribute name must be a string")
    # super(S, s).format is str.format itself: a super object is checked as what it stands for.
    proxy: Any = obj
    for target in (proxy.__self__, proxy.__thisclass__) if isinstance(obj, super) else (obj,):
        _check_target(target, name)


def _check_target(obj: Any, name: str) -> None:
    if name in _DENIED_ATTRIBUTES or isinstance(obj, _OPAQUE_TYPES):
        raise AttributeError(f"access to {name!r} is not allowed in workflow code")
    if isinstance(obj, _GENERATOR_TYPES) and name not in _GENERATOR_METHODS:
        raise AttributeError(f"access to {name!r} is not allowed in workflow code")
    is_str = isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
    if is_str and name in ("format", "format_map"):
        raise AttributeError("str.format is not allowed in workflow code: use f-strings")
    # ABC.register changes isinstance() answers for the whole worker, host code included;
    # AttributeError.obj can hold an object of the host's that raised it.
    if (isinstance(obj, abc.ABCMeta) and name == "register") or (
        isinstance(obj, AttributeError) and name == "obj"
    ):
        raise AttributeError(f"access to {name!r} is not allowed in workflow code")


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    return obj[key]


def guarded_iter(obj: Any) -> Any:
    return iter(obj)


# Containers whose items tenant code may assign; attribute writes go through Python's own
# rules (these types have no writable attributes worth protecting).
_WRITABLE_TYPES = frozenset(
    {
        dict, list, set, bytearray, collections.OrderedDict, collections.defaultdict,
        collections.Counter, collections.deque, collections.ChainMap,
    }
)  # fmt: skip


class _ReadOnly:
    """What ``_write_`` returns for objects tenant code must not modify."""

    __slots__ = ("_name",)
    _name: str

    def __init__(self, obj: Any) -> None:
        object.__setattr__(self, "_name", type(obj).__name__)

    def _refuse(self, *args: Any) -> None:
        raise TypeError(f"workflow code cannot modify a {self._name} object")

    __setattr__ = __delattr__ = __setitem__ = __delitem__ = _refuse


def write_guard(obj: Any) -> Any:
    """``_write_``: tenant classes (marked by :func:`tenant_class`) and plain containers only."""
    if type(obj) in _WRITABLE_TYPES or getattr(type(obj), "_guarded_writes", False):
        return obj
    if isinstance(obj, type) and obj.__dict__.get("_guarded_writes"):
        return obj
    return _ReadOnly(obj)


def tenant_class(name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
    """``__metaclass__``: every ``class`` statement of tenant code goes through this.

    Marking the class lets instances set attributes on themselves (``self.total = 0``); the
    mark lives in the tenant's own class, never in a shared base.
    """
    namespace["_guarded_writes"] = True
    return type(name, bases, namespace)


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow,
    "<<=": operator.ilshift, ">>=": operator.irshift, "&=": operator.iand,
    "^=": operator.ixor, "|=": operator.ior, "@=": operator.imatmul,
}  # fmt: skip


def inplace(op: str, target: Any, value: Any) -> Any:
    return _INPLACE[op](target, value)


def restricted_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> types.ModuleType:
    """``__import__`` of restricted code: the allowlisted facades, nothing else."""
    if level:
        raise ImportError("relative imports are not allowed in workflow code")
    module = MODULES.get(name) or _IMPLICIT_IMPORTS.get(name)
    if module is None:
        allowed = ", ".join(ALLOWED_MODULES)
        raise ImportError(
            f"import of {name!r} is not allowed in workflow code (allowed: {allowed})"
        )
    return module


def apply(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``_apply_``: calls with ``*args``/``**kwargs``; the arguments are already guarded."""
    return function(*args, **kwargs)


_BUILTIN_NAMES = (
    "None False True Ellipsis NotImplemented abs all any bin bool bytes callable chr "
    "classmethod complex dict divmod enumerate filter float frozenset hash hex int isinstance "
    "issubclass len list map max min next object oct ord pow property range reversed round set "
    "slice sorted staticmethod str sum super tuple zip __build_class__"
).split()
_EXCEPTIONS = [
    n for n, v in vars(builtins).items()
    if isinstance(v, type) and issubclass(v, BaseException) and not n.startswith("_")
    and not n.endswith("Group")  # exception groups serve except*, which is not allowed
]  # fmt: skip

BUILTINS: dict[str, object] = {n: getattr(builtins, n) for n in _BUILTIN_NAMES + _EXCEPTIONS}
BUILTINS.update(
    {
        "__import__": restricted_import,
        "getattr": guarded_getattr,
        "hasattr": guarded_hasattr,
        "iter": guarded_iter,
    }
)


class Printer:
    """``_print_``: RestrictedPython makes one per function that prints; lines go to ``sink``."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._text: list[str] = []

    def __call__(self) -> str:  # the ``printed`` variable of RestrictedPython
        return "".join(self._text)

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", **kwargs: Any) -> None:
        if kwargs.get("file") is not None:
            raise TypeError("print(file=...) is not supported in workflow code")
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print: sep and end must be strings")
        text = sep.join(str(o) for o in objects)
        self._text.append(text + end)
        self._sink(text)


def module_globals(name: str, sink: Callable[[str], None]) -> dict[str, object]:
    """A fresh global namespace for one execution of a tenant module."""
    return {
        "__builtins__": BUILTINS,
        "__name__": name,
        "__metaclass__": tenant_class,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": guarded_iter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": write_guard,
        "_inplacevar_": inplace,
        "_apply_": apply,
        "_print_": lambda _getattr_=None: Printer(sink),
    }


def _settings_of(context: decimal.Context) -> dict[str, object]:
    """What a context is set to; its traps and flags copied (a context's own are live)."""
    names = ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")
    settings = {name: getattr(context, name) for name in names}
    return {**settings, "traps": dict(context.traps), "flags": dict(context.flags)}


# decimal's template contexts are shared by every replay of the worker, and tenant code may
# call their methods (``DefaultContext.clear_traps()``); each new context copies DefaultContext.
_TEMPLATES = tuple(
    (context, _settings_of(context))
    for context in (decimal.DefaultContext, decimal.BasicContext, decimal.ExtendedContext)
)


def reset_module_state() -> None:
    """Undo what one replay may have changed in shared modules before the next one runs:
    ``decimal``'s templates and this thread's context, and the state of ``random``'s shared
    generator (seeded afresh from the operating system, as at start-up)."""
    for context, settings in _TEMPLATES:
        for name, value in settings.items():
            setattr(context, name, value)  # traps and flags: read into the context, not kept
    decimal.setcontext(decimal.Context())
    random.seed()
