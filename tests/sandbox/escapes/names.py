# ruff: noqa: RUF001 - the fullwidth letters are the point of these cases
"""Names: name-mangled and computed dunder attributes, unicode spellings (identifiers are NFKC
normalised before RestrictedPython sees them), very long names."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

VAULT = """
class Vault:
    def __init__(self):
        self.key = "mine"
"""
NOT_ALLOWED = Raises("AttributeError")

CASES = [
    Case(
        "name mangling: self.__x",
        "return 1",
        Rejected("self.__secret"),
        prelude="class Vault:\n    def __init__(self):\n        self.__secret = 1",
    ),
    Case(
        "name mangling: obj._Class__x",
        "return Vault()._Vault__secret",
        Rejected("_Vault"),
        prelude=VAULT,
    ),
    Case(
        "name mangling: computed",
        "return getattr(Vault(), '_Vault' + '__secret')",
        NOT_ALLOWED,
        prelude=VAULT,
    ),
    Case(
        "a computed dunder on a host object", "return getattr(step, '_' + '_class__')", NOT_ALLOWED
    ),
    Case(
        "a computed private attribute of step", "return getattr(step, '_' + 'replay')", NOT_ALLOWED
    ),
    Case(
        "a computed private attribute of env",
        "return getattr(self.env, '_' + 'replay')",
        NOT_ALLOWED,
    ),
    Case("getattr with a non-string name", "return getattr(step, 1)", Raises("TypeError")),
    Case("hasattr on a private name", "return hasattr(step, '_replay')", Returns(False)),
    Case("unicode: ｅval is eval", "return ｅval('1 + 1')", Rejected("ｅval", "Eval calls")),
    Case("unicode: ｅxec is exec", "ｅxec('x = 1')", Rejected("ｅxec", "Exec calls")),
    Case(
        "unicode: a fullwidth dunder attribute",
        "return event.__ｃlass__",
        Rejected("__ｃlass__", 'starts with "_"'),
    ),
    Case(
        "unicode: a fullwidth low line",
        "return ＿＿import＿＿('os')",
        Rejected("＿＿import", "SyntaxError"),
        wasm=Rejected("＿＿import", "SyntaxError"),
    ),
    Case("unicode: a fullwidth name string", "return getattr(event, '＿＿class＿＿')", NOT_ALLOWED),
    Case("a very long name", "x" * 50_000 + " = 1\nreturn " + "x" * 50_000, Returns(1)),
    Case("a very long attribute name", "return getattr(step, 'a' * 10 ** 6)", NOT_ALLOWED),
]
