"""The allowlisted modules: every public name is a facade's, never a real module; helpers that
call back into tenant code or hold internals lead nowhere."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Returns

MISSING = Raises("AttributeError")

CASES = [
    Case("a real module behind the datetime facade", "return datetime.sys.modules", MISSING),
    Case("json.decoder", "return json.decoder", MISSING),
    Case("collections.abc", "return collections.abc", MISSING),
    Case("textwrap.re", "return textwrap.re", MISSING),
    Case("base64.binascii", "return base64.binascii", MISSING),
    Case("fractions.Decimal", "return fractions.Decimal", MISSING),
    Case("random._inst", "return getattr(random, '_' + 'inst')", MISSING),
    Case("re._compile", "return getattr(re, '_' + 'compile')", MISSING),
    Case("random.Random state", "r = random.Random(7)\nreturn r.getstate()[0]", Returns(3)),
    Case(
        "random.Random internals",
        "return getattr(random.Random(7), '_' + 'randbelow')",
        MISSING,
    ),
    Case(
        "a json object_hook runs restricted code",
        "return json.loads('{\"a\": 1}', object_hook=lambda d: getattr(d, '__cl' + 'ass__'))",
        MISSING,
    ),
    Case(
        "a json hook given a builtin",
        "return json.loads('[1]', parse_int=getattr)",
        Raises("TypeError"),
    ),
    Case(
        "a json decoder subclass",
        "return json.loads('[1]', cls=Decoder)",
        Returns([1]),
        prelude="class Decoder(json.JSONDecoder):\n    pass",
    ),
    Case(
        "a datetime subclass's __module__",
        "return getattr(D, '__mod' + 'ule__')",
        MISSING,
        prelude="class D(datetime.datetime):\n    pass",
    ),
    Case(
        "re internals",
        "p = re.compile('(a)')\nreturn [p.pattern, p.groups, p.flags]",
        Returns(["(a)", 1, 32]),
    ),
    Case(
        "decimal contexts are reset per replay",
        "decimal.setcontext(decimal.Context(prec=3))\nreturn str(decimal.Decimal(1) / 3)",
        Returns("0.333"),
    ),
    Case(
        "hashlib objects",
        "h = hashlib.sha256(b'x')\nreturn [h.name, h.digest_size]",
        Returns(["sha256", 32]),
    ),
    Case(
        "hashlib.file_digest of a tenant object",
        "return hashlib.file_digest(event, 'sha256')",
        Raises("ValueError"),
    ),
    Case(
        "namedtuple field names are not code",
        "return collections.namedtuple('T', ['a=__import__(\"os\")'])",
        Raises("ValueError"),
    ),
    # The one name lookup an allowed module does with a tenant's string: a prefixed getattr.
    Case(
        "hashlib.new looks names up",
        "return hashlib.new('__class__').name",
        Raises("ValueError", message="unsupported hash type"),
    ),
    Case("statistics internals", "return getattr(statistics, '_' + 'sum')", MISSING),
    Case("itertools", "return list(itertools.islice(itertools.count(), 3))", Returns([0, 1, 2])),
]
