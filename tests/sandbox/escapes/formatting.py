"""Format strings: ``str.format``'s field syntax walks attributes and items (``{0.__class__}``),
which RestrictedPython cannot see inside a string, so every way to reach it must fail."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

STR_SUBCLASS = """
class S(str):
    def walk(self, target):
        return super().format(target)
"""

NOT_ALLOWED = Raises("AttributeError", message="str.format is not allowed")

CASES = [
    Case("format: attribute of an argument", "return '{0.__class__}'.format(1)", NOT_ALLOWED),
    Case(
        "format: globals of a host method",
        "return '{0.__init__.__globals__}'.format(step)",
        NOT_ALLOWED,
    ),
    Case(
        "format: by a computed name",
        "return getattr('{0.__globals__}', 'for' + 'mat')(self.run)",
        NOT_ALLOWED,
    ),
    Case(
        "format_map: item then attribute",
        "return '{a.__class__.__mro__}'.format_map({'a': step})",
        NOT_ALLOWED,
    ),
    Case("format: unbound str.format", "return str.format('{0.__class__}', 1)", NOT_ALLOWED),
    Case(
        "format: a str subclass",
        "return S('{0.__class__}').format(1)",
        NOT_ALLOWED,
        prelude=STR_SUBCLASS,
    ),
    # Got through before: super() of a str subclass is not a str, but its .format is.
    Case(
        "format: super() of a str subclass",
        "return super(S, S('{0.__init__.__globals__}')).format(step)",
        NOT_ALLOWED,
        prelude=STR_SUBCLASS,
    ),
    Case(
        "format: zero-argument super() in a method",
        "return S('{0.__init__.__globals__[__builtins__]}').walk(step)",
        NOT_ALLOWED,
        prelude=STR_SUBCLASS,
    ),
    Case(
        "format: unbound str.format through super(S, S)",
        "return super(S, S).format('{0.__class__}', 1)",
        NOT_ALLOWED,
        prelude=STR_SUBCLASS,
    ),
    Case(
        "format_map: through super()",
        "return super(S, S('{a.__init__.__globals__}')).format_map({'a': step})",
        NOT_ALLOWED,
        prelude=STR_SUBCLASS,
    ),
    Case(
        "string.Formatter",
        "import string\nreturn string.Formatter().format('{0}', 1)",
        Rejected("import string", "import of 'string' is not allowed"),
    ),
    Case(
        "UserString.format, imported",
        "from collections import UserString\nreturn UserString('{0.__class__}').format(1)",
        Rejected("from collections import UserString", "has no 'UserString'"),
    ),
    Case(
        "UserString.format, through the module",
        "return collections.UserString('{0.__class__}').format(1)",
        Raises("AttributeError", message="has no attribute 'UserString'"),
    ),
    Case("f-string: a dunder attribute", "return f'{step.__class__}'", Rejected("f'{step")),
    Case(
        "f-string: repr of host objects",
        "return f'{step!r} {event!r} {self.env!r} {self.env.workflows!r} {self.env.vars!r}'",
        Returns("<step> <event of instance 'inst-1'> <env> <env.workflows> mappingproxy({})"),
    ),
    Case(
        "f-string: a computed format spec",
        "spec = '{0.__class__}'\nreturn f'{step:{spec}}'",
        Raises("TypeError", message="unsupported format string"),
    ),
    Case(
        "%-formatting of host objects",
        "return '%s %r %(x)s' % (step, self.env) if False else '%s|%r' % (step, self.env)",
        Returns("<step>|<env>"),
    ),
    Case(
        "%-formatting by mapping key",
        "return '%(a)s' % {'a': event}",
        Returns("<event of instance 'inst-1'>"),
    ),
    Case(
        "strftime with a field",
        "return datetime.date(2020, 1, 2).strftime('%Y {0.__class__}')",
        Returns("2020 {0.__class__}"),
    ),
]
