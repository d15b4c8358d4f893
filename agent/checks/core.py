"""What every rule of the gate shares: the finding record, the parsed file, the edit's diff."""

from __future__ import annotations

import ast
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    code: str
    message: str  # what is wrong
    why: str  # why it matters for the run, and what to do
    blocking: bool


@dataclass(frozen=True)
class Rule:
    """One check of the gate: `check(source)` returns its findings; registered in `checks.RULES`."""
    name: str
    codes: tuple[str, ...]  # the Finding.code values it can report
    check: Callable[["Source"], list[Finding]]
    summary: str


@functools.lru_cache(maxsize=16)
def parse(source: str) -> ast.Module:
    # Cached: the loop checks many attempts against the same `old`. Callers must not mutate trees.
    return ast.parse(source)


@functools.lru_cache(maxsize=16)
def nodes(source: str) -> tuple[ast.AST, ...]:
    """Every node of the file, walked once and shared by the rules."""
    return tuple(ast.walk(parse(source)))


@dataclass
class Source:
    """The edited file, the version before the edit (when usable) and where the run imports from."""
    path: str
    text: str
    tree: ast.Module
    old: str | None
    old_tree: ast.Module | None
    added: set[int] | None  # new line numbers the edit wrote; None when there is no baseline
    removed: set[int] | None = None  # old line numbers the edit deleted or rewrote
    python: str | None = None  # the run's interpreter (None: this one)
    search_path: str | None = None  # the file's folder, whose modules the run can import
    keep_fields: tuple[str, ...] = ()  # `Config` fields the agent sets (the baseline's seeds and frontier)

    def is_added(self, first: int, last: int | None = None) -> bool:
        if self.added is None:
            return True
        return any(n in self.added for n in range(first, (last or first) + 1))

    def finding(self, line: int, code: str, message: str, why: str, blocking: bool = True) -> Finding:
        return Finding(self.path, line, code, message, why, blocking)


def make_source(path: str, new: str, tree: ast.Module, old: str | None, *, python: str | None = None,
                search_path: str | Path | None = None, keep_fields: tuple[str, ...] = ()) -> Source:
    old_tree = None
    if old is not None:
        try:
            old_tree = parse(old)
        except (SyntaxError, ValueError):
            old = None  # no usable baseline: judge every line
    added, removed = diff_lines(old, new) if old_tree is not None else (None, None)
    return Source(path, new, tree, old, old_tree, added, removed, python,
                  str(search_path) if search_path else None, tuple(keep_fields))


def diff_lines(old: str, new: str) -> tuple[set[int], set[int]]:
    """(1-based lines of `new` that are not unchanged lines of `old`, lines of `old` that are gone)."""
    a, b = old.splitlines(), new.splitlines()
    head = 0  # an edit is usually local: diff only the middle that differs (10x faster)
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail],
                                      autojunk=False)
    added, removed = set(), set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            added.update(head + j + 1 for j in range(j1, j2))
            removed.update(head + i + 1 for i in range(i1, i2))
    return added, removed


def syntax_finding(err: SyntaxError | ValueError, path: str) -> Finding:
    text = (getattr(err, "text", None) or "").strip()
    shown = f": {text}" if text else ""
    msg = getattr(err, "msg", None) or str(err)
    return Finding(path, getattr(err, "lineno", None) or 0, "syntax-error", f"syntax error: {msg}{shown}",
                   "Python cannot even load the file, so the run would fail at once.", True)


# ---------------------------------------------------------------- AST helpers several rules use


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Module functions and methods by qualified name; the last definition wins, as in Python."""
    found = {}
    for node in tree.body:
        if isinstance(node, FUNCTIONS):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, FUNCTIONS):
                    found[f"{node.name}.{item.name}"] = item
    return found


def kept_functions(src: Source):
    """(name, function now, function before) for each function the edit kept but may have changed."""
    if src.old_tree is None:
        return
    old = functions(src.old_tree)
    for name, fn in functions(src.tree).items():
        if name in old:
            yield name, fn, old[name]


def body_without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def is_ellipsis(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and stmt.value.value is Ellipsis


def is_stub(fn: ast.FunctionDef) -> bool:
    """A body of only `pass` / `...` (after an optional docstring)."""
    return all(isinstance(s, ast.Pass) or is_ellipsis(s) for s in body_without_docstring(fn.body))


def statement_count(fn: ast.FunctionDef) -> int:
    """Statements in the function, nested ones included, its docstring not."""
    return sum(1 for _ in statements(body_without_docstring(fn.body)))


def statements(body: list[ast.stmt], in_function: bool = False, guarded: bool = False):
    """Every statement with its context (inside a function; guarded by an import guard)."""
    for stmt in body:
        yield stmt, in_function, guarded
        inner = in_function or isinstance(stmt, FUNCTIONS)
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            guard = guarded or (field == "body" and guards_imports(stmt))
            for item in getattr(stmt, field, None) or ():
                block = item.body if isinstance(item, (ast.ExceptHandler, ast.match_case)) else [item]
                yield from statements(block, inner, guard)


def guards_imports(stmt: ast.stmt) -> bool:
    """`try: import x / except ImportError` and `if TYPE_CHECKING:` make an import optional."""
    if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        return any(catches(h, ("ImportError", "ModuleNotFoundError")) for h in stmt.handlers)
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def catches(handler: ast.ExceptHandler, names: tuple[str, ...]) -> bool:
    """True when the handler catches one of `names` (a bare except and Exception catch them all)."""
    if handler.type is None:
        return True
    caught = ast.unparse(handler.type)
    return any(n in caught for n in names + ("Exception",))
