"""The component's exports: ``check`` and ``run`` of tenant source (see ``wit/world.wit``).

componentize-py executes this module when it builds the component and snapshots the result,
so everything imported here is ready in every instance: import what workflows commonly use.
Nothing may escape an export: an uncaught exception aborts the component.
"""

import base64  # noqa: F401 - pre-imported for tenant code
import collections  # noqa: F401
import decimal  # noqa: F401
import fractions  # noqa: F401
import hashlib  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import textwrap  # noqa: F401

import wit_world
from wit_world.imports import host

import treadle  # noqa: F401
from treadle import _guest

_guest.bind(host.call, host.log)


def _reply(value):
    try:
        return json.dumps(value, separators=(",", ":"))
    except BaseException as exc:  # an unserializable problem or error text: say so plainly
        fallback = {"kind": "TypeError", "name": "TypeError", "message": str(exc)[:500]}
        return json.dumps({"error": fallback})


class WitWorld(wit_world.WitWorld):
    def check(self, source: str, class_name: str) -> str:
        try:
            return _reply(_guest.check(source, class_name or None))
        except BaseException as exc:
            message = f"the code could not be checked: {type(exc).__name__}: {exc}"
            return _reply({"problems": [{"line": 1, "column": 1, "message": message[:1000]}]})

    def run(self, source: str, class_name: str, request: str) -> str:
        try:
            return _reply(_guest.run(source, class_name or None, json.loads(request)))
        except BaseException as exc:
            error = {"kind": type(exc).__name__, "name": type(exc).__name__, "message": str(exc)}
            return _reply({"error": error})
