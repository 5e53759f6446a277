"""type() tricks, metaclasses, class hooks and descriptors, and writes to what is not the
tenant's."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

READ_ONLY = Raises("TypeError", message="workflow code cannot modify")

CASES = [
    Case("type() of a builtin", "return type(len)", Raises("NameError")),
    Case(
        "type() with three arguments", "return type('X', (object,), {'y': 1})", Raises("NameError")
    ),
    Case("__subclasses__", "return object.__subclasses__()", Rejected("__subclasses__")),
    Case(
        "__subclasses__ by a computed name",
        "return getattr(object, '__subcl' + 'asses__')()",
        Raises("AttributeError"),
    ),
    Case("mro()", "return [c.mro() for c in [int]]", Raises("AttributeError")),
    Case(
        "a metaclass keyword",
        "return 1",
        Rejected("class X", '"metaclass" is not allowed'),
        wasm=Rejected("class X", "M() takes no arguments"),
        prelude="class M:\n    pass\n\n\nclass X(metaclass=M):\n    pass",
    ),
    Case(
        "__init_subclass__",
        "return 1",
        Rejected("def __init_subclass__"),
        prelude="class B:\n    def __init_subclass__(cls):\n        pass",
    ),
    Case(
        "__class_getitem__",
        "return 1",
        Rejected("__class_getitem__ ="),
        prelude="class B:\n    __class_getitem__ = classmethod(lambda c, k: k)",
    ),
    Case(
        "__set_name__",
        "return 1",
        Rejected("def __set_name__"),
        prelude="class D:\n    def __set_name__(self, owner, name):\n        pass",
    ),
    Case(
        "a descriptor's __get__",
        "return 1",
        Rejected("def __get__"),
        prelude="class D:\n    def __get__(self, obj, owner):\n        return obj",
    ),
    Case(
        "__getattribute__",
        "return 1",
        Rejected("def __getattribute__"),
        prelude="class D:\n    def __getattribute__(self, name):\n        return name",
    ),
    Case("__reduce_ex__", "return (1).__reduce_ex__(2)", Rejected("__reduce_ex__")),
    Case(
        "__reduce_ex__ by a computed name",
        "return getattr(step, '__reduce' + '_ex__')(2)",
        Raises("AttributeError"),
    ),
    Case("__build_class__", "return __build_class__", Rejected("__build_class__")),
    Case(
        "ABC register() changes isinstance for the whole worker",
        "collections.UserDict.register(list)\nreturn isinstance([], collections.UserDict)",
        Raises("AttributeError", message="'register' is not allowed"),
    ),
    Case(
        "super() of a host class",
        "return super(WorkflowEntrypoint, self).__init__",
        Rejected("__init__"),
    ),
    Case(
        "super() chain to the host's run",
        "return super().run(event, step)",
        Raises("NotImplementedError"),
    ),
    Case("writing to a host class", "WorkflowEntrypoint.env = 1", READ_ONLY),
    Case("writing to the step object", "step.do = None", READ_ONLY),
    Case("writing to env.vars", "self.env.vars['x'] = 1", READ_ONLY),
    Case("writing to an allowed module", "json.loads = len", READ_ONLY),
    Case("writing to a decimal context", "decimal.getcontext().prec = 1", READ_ONLY),
    Case(
        "augmented assignment of an attribute",
        "self.total = 1\nself.total += 1",
        Rejected("self.total += 1"),
    ),
    Case(
        "mutating a module-level set",
        "hashlib.algorithms_available.add('x')",
        Raises("AttributeError"),
    ),
    Case(
        "a tenant class may set its own attributes",
        "self.total = 1\nself.total = self.total + 1\nreturn self.total",
        Returns(2),
    ),
]
