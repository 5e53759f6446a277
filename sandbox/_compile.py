"""Compile tenant Python under the restricted policy, listing every problem with its position.

RestrictedPython's own ``compile_restricted`` reports violations as "Line N: ..." strings; this
module runs its transformer with an error hook instead, so each problem keeps its line and
column, and adds the checks of its own: imports outside the allowlist and the entry class.
Columns are 1-based, like an editor's.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from types import CodeType

from RestrictedPython.transformer import RestrictingNodeTransformer

from sandbox.restricted._policy import ALLOWED_MODULES, MODULES
from treadle.runtime import CodeInvalid, TenantSource
from treadle.runtime.errors import Problem as Problem

FILENAME = "<workflow>"
MAX_SOURCE_CHARS = 1024 * 1024


@dataclass(frozen=True)
class Compiled:
    code: CodeType
    class_name: str
    source: TenantSource  # the frames of errors in it are shown from this


def problem(line: int | None, column: int | None, message: str) -> Problem:
    if len(message) > 1000:
        message = message[:999] + "…"
    return {"line": line or 1, "column": max(column or 1, 1), "message": message}


class _Collecting(RestrictingNodeTransformer):
    """RestrictedPython's transformer, keeping each error's position."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(errors=[], warnings=[], used_names={})
        self.problems = problems

    def error(self, node: ast.AST, info: str) -> None:
        line = getattr(node, "lineno", None)
        column = getattr(node, "col_offset", -1) + 1
        self.problems.append(problem(line, column, info))
        self.errors.append(info)

    # Python 3.12's type parameters and ``type`` statements (and 3.13's defaults of type
    # parameters) run code in annotation scopes of their own, evaluated lazily; refused here
    # whatever a RestrictedPython release makes of them. A workflow needs none of them to run.
    def visit_TypeAlias(self, node: ast.AST) -> None:
        self.error(node, "type statements are not allowed in workflow code")

    def _type_parameter(self, node: ast.AST) -> None:
        self.error(node, "type parameters (def f[T], class C[T]) are not allowed in workflow code")

    visit_TypeVar = visit_ParamSpec = visit_TypeVarTuple = _type_parameter


def compile_workflow(source: str, class_name: str | None = None) -> Compiled:
    """Compile ``source``; raise :class:`CodeInvalid` listing every problem found."""
    tree, problems = _parse(source)
    entry = None
    if tree is not None:
        problems += _import_problems(tree)
        entry, class_problems = _entry_class(tree, class_name)
        problems += class_problems
        # The transformer rewrites the tree (guards, print); analyse the tenant's tree first.
        tree = _Collecting(problems).visit(tree)
    if problems or tree is None or entry is None:
        raise _invalid(problems)
    return Compiled(compile(tree, FILENAME, "exec"), entry, TenantSource.of(source, FILENAME))


def _parse(source: str) -> tuple[ast.Module | None, list[Problem]]:
    if not isinstance(source, str):
        return None, [problem(1, 1, "the source must be text")]
    if len(source) > MAX_SOURCE_CHARS:
        return None, [problem(1, 1, f"the source is over {MAX_SOURCE_CHARS} characters")]
    try:
        return ast.parse(source, FILENAME), []
    except SyntaxError as exc:
        return None, [problem(exc.lineno, exc.offset, f"SyntaxError: {exc.msg}")]
    except (ValueError, RecursionError, MemoryError) as exc:
        # Null bytes, or nesting deep enough to exhaust the parser: a compile bomb.
        return None, [problem(1, 1, f"the source cannot be parsed: {type(exc).__name__}: {exc}")]


def _invalid(problems: list[Problem]) -> CodeInvalid:
    unique = {(p["line"], p["column"], p["message"]): p for p in problems}
    ordered = [unique[k] for k in sorted(unique)]
    count = len(ordered)
    noun = "problem" if count == 1 else "problems"
    return CodeInvalid(f"the workflow code has {count} {noun}", problems=ordered)


def _import_problems(tree: ast.Module) -> list[Problem]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in MODULES:
                    found.append(_not_allowed(node, alias.name))
        elif isinstance(node, ast.ImportFrom):
            found += _import_from_problems(node)
    return found


def _import_from_problems(node: ast.ImportFrom) -> list[Problem]:
    if node.level:
        return [problem(node.lineno, node.col_offset + 1, "relative imports are not allowed")]
    module = MODULES.get(node.module or "")
    if module is None:
        return [_not_allowed(node, node.module or "")]
    return [
        problem(
            node.lineno,
            node.col_offset + 1,
            f"{node.module!r} has no {alias.name!r} available to workflow code",
        )
        for alias in node.names
        if alias.name != "*" and not hasattr(module, alias.name)
    ]


def _not_allowed(node: ast.stmt, name: str) -> Problem:
    allowed = ", ".join(ALLOWED_MODULES)
    message = f"import of {name!r} is not allowed (allowed modules: {allowed})"
    return problem(node.lineno, node.col_offset + 1, message)


@dataclass
class _ClassInfo:
    node: ast.ClassDef
    workflow: bool
    run: ast.FunctionDef | None
    inherits_run: bool


def _entry_class(tree: ast.Module, class_name: str | None) -> tuple[str | None, list[Problem]]:
    """The workflow class to run, found statically so that its problems have positions."""
    classes = _classes(tree)
    problems = [
        problem(c.run.lineno, c.run.col_offset + 1, "run must be defined as run(self, event, step)")
        for c in classes.values()
        if c.workflow and c.run is not None and not _takes_event_and_step(c.run)
    ]
    candidates = [n for n, c in classes.items() if c.workflow and (c.run or c.inherits_run)]
    if class_name is not None:
        return _named_class(classes, class_name, problems)
    if not candidates:
        message = (
            "no workflow class found: define a class deriving from treadle.WorkflowEntrypoint "
            "with a method run(self, event, step)"
        )
        return None, [*problems, problem(1, 1, message)]
    if len(candidates) > 1:
        second = classes[candidates[1]].node
        message = f"several workflow classes ({', '.join(candidates)}): set class_name to one"
        return None, [*problems, problem(second.lineno, second.col_offset + 1, message)]
    return candidates[0], problems


def _named_class(
    classes: dict[str, _ClassInfo], class_name: str, problems: list[Problem]
) -> tuple[str | None, list[Problem]]:
    info = classes.get(class_name)
    if info is None:
        return None, [*problems, problem(1, 1, f"class {class_name!r} not found")]
    position = (info.node.lineno, info.node.col_offset + 1)
    if not info.workflow:
        message = f"class {class_name!r} does not derive from treadle.WorkflowEntrypoint"
        return None, [*problems, problem(*position, message)]
    if info.run is None and not info.inherits_run:
        message = f"class {class_name!r} has no method run(self, event, step)"
        return None, [*problems, problem(*position, message)]
    return class_name, problems


def _classes(tree: ast.Module) -> dict[str, _ClassInfo]:
    entry_names, treadle_names = _entrypoint_names(tree)
    classes: dict[str, _ClassInfo] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [classes.get(b.id) if isinstance(b, ast.Name) else None for b in node.bases]
        direct = any(_is_entrypoint(b, entry_names, treadle_names) for b in node.bases)
        run = next(
            (s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "run"), None
        )
        classes[node.name] = _ClassInfo(
            node=node,
            workflow=direct or any(b is not None and b.workflow for b in bases),
            run=run,
            inherits_run=any(b is not None and (b.run or b.inherits_run) for b in bases),
        )
    return classes


def _entrypoint_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to WorkflowEntrypoint, and names bound to the treadle module."""
    entry, module = set(), set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "treadle" and not node.level:
            entry |= {a.asname or a.name for a in node.names if a.name == "WorkflowEntrypoint"}
        elif isinstance(node, ast.Import):
            module |= {a.asname or a.name for a in node.names if a.name == "treadle"}
    return entry, module


def _is_entrypoint(base: ast.expr, entry_names: set[str], treadle_names: set[str]) -> bool:
    if isinstance(base, ast.Name):
        return base.id in entry_names
    return (
        isinstance(base, ast.Attribute)
        and base.attr == "WorkflowEntrypoint"
        and isinstance(base.value, ast.Name)
        and base.value.id in treadle_names
    )


def _takes_event_and_step(run: ast.FunctionDef) -> bool:
    positional = len(run.args.posonlyargs) + len(run.args.args)
    required = positional - len(run.args.defaults)
    return (positional >= 3 or run.args.vararg is not None) and required <= 3
