"""The host's objects a workflow holds (``step``, ``event``, ``self.env``, ``ctx``, the
``treadle`` facade), and the ways from them to the host process: bound methods' ``__self__``,
closures' ``__closure__``, ``__wrapped__``, ``__dict__``, ``__globals__``."""

from __future__ import annotations

from tests.sandbox.escapes import Case, Raises, Rejected, Returns

NOT_ALLOWED = Raises("AttributeError")

CASES = [
    Case("self.env.__dict__", "return self.env.__dict__", Rejected("__dict__")),
    Case("env.fetch.__self__", "return getattr(self.env.fetch, '__se' + 'lf__')", NOT_ALLOWED),
    Case(
        "env.fetch.__func__.__globals__",
        "return self.env.fetch.__func__.__globals__",
        Rejected("__func__"),
    ),
    Case(
        "a closure's cells", "f = lambda: step\nreturn getattr(f, '__clo' + 'sure__')", NOT_ALLOWED
    ),
    Case(
        "cell_contents",
        "f = lambda: step\nreturn f.__closure__[0].cell_contents",
        Rejected("__closure__"),
    ),
    Case("__wrapped__", "return getattr(step.do, '__wrap' + 'ped__')", NOT_ALLOWED),
    Case("step.do's internals", "return getattr(step.do('x'), '_' + 'replay')", NOT_ALLOWED),
    Case(
        "a step handle's node",
        "h = step.do('x')(lambda: 1)\nreturn getattr(h, '_node')",
        NOT_ALLOWED,
    ),
    Case(
        "WorkflowEntrypoint's module globals",
        "return getattr(getattr(WorkflowEntrypoint, '__init_' + '_'), '__glo' + 'bals__')",
        NOT_ALLOWED,
    ),
    Case("treadle facade internals", "return getattr(treadle, '_' + 'entrypoint')", NOT_ALLOWED),
    Case("treadle.errors through the facade", "return treadle.errors", NOT_ALLOWED),
    Case("the host's TreadleError", "return treadle.TreadleError", NOT_ALLOWED),
    Case(
        "ctx holds only its fields",
        "return step.do('c', lambda ctx: [ctx.attempt, ctx.idempotency_key, ctx.step.name, "
        "ctx.step.count, ctx.config['timeout']])",
        Returns([1, "inst-1:c:1", "c", 1, 600.0]),
    ),
    Case(
        "ctx internals",
        "return step.do('c', lambda ctx: getattr(ctx, '__sl' + 'ots__'), retries={'limit': 0})",
        Raises("StepError", "AttributeError"),
    ),
    Case("env.vars is this tenant's only", "return dict(self.env.vars)", Returns({})),
    Case(
        "env.fetch outside a step body",
        "return self.env.fetch('http://127.0.0.1:8787/')",
        Raises("NonRetryableError", message="only allowed inside a step body"),
    ),
    Case(
        "event holds only the instance's data",
        "return [event.instance_id, event.workflow, event.payload]",
        Returns(["inst-1", "wf", None]),
    ),
    Case(
        "a child of another tenant's workflow is just a name",
        "return self.env.workflows.create('bad/../name').id",
        Raises("ValueError", "InvalidInput"),
    ),
]
