"""The pre-run gate: cheap static checks that catch an edit which cannot run, before a run is spent on it.

Each rule compares the edited file with the version before the edit where it can, and reports only
what the edit introduced, so old code that has always run is never blamed. A blocking finding means
"do not run this"; a warning is passed on to the LLM but does not stop the run.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyflakes.messages as flake_messages
from pyflakes.checker import Checker


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    code: str
    message: str  # what is wrong
    why: str  # why it matters for the run, and what to do
    blocking: bool


def check_source(new: str, old: str | None = None, *, path: str = "experiment.py",
                 python: str | None = None, search_path: str | Path | None = None) -> list[Finding]:
    """Every finding for `new`; with `old`, only what changed since `old` is held against the edit.

    `python` is the interpreter of the run (None: this one); `search_path` is the file's folder, whose
    modules (e.g. `harness`) the run can import.
    """
    try:
        tree = _parse(new)
        compile(tree, path, "exec", dont_inherit=True)  # symbol-table errors ast.parse lets through
    except (SyntaxError, ValueError) as err:  # ValueError: a NUL byte in the source
        return [_syntax_finding(err, path)]
    old_tree = None
    if old is not None:
        try:
            old_tree = _parse(old)
        except (SyntaxError, ValueError):
            old, old_tree = None, None  # no usable baseline: judge every line
    src = _Source(path, new, tree, old, old_tree, _added_lines(old, new) if old_tree else None)
    findings = (_undefined_names(src) + _placeholders(src) + _emptied_bodies(src)
                + _duplicate_definitions(src) + _missing_self_attributes(src) + _shrunk_functions(src)
                + _unresolved_imports(src, python, search_path))
    return sorted(findings, key=lambda f: (f.line, f.code))


def format_findings(findings: list[Finding]) -> str:
    """One `file:line: what — why` line per finding, warnings marked; for people and for the LLM."""
    return "\n".join(f"{f.path}:{f.line}: {'' if f.blocking else 'warning: '}{f.message} — {f.why}"
                     for f in findings)


def check_command(file: Path, before: Path | None = None, *, python: str | None = None) -> int:
    """`agent check FILE [--before OLD]`: print the findings; 1 when any blocks the run, else 0."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)  # one finding per line, greppable
    file = Path(file)
    try:
        new = file.read_text()
        old = Path(before).read_text() if before else None
    except OSError as err:
        console.print(f"[red]cannot read: {escape(str(err))}[/red]")
        return 1
    findings = check_source(new, old, path=str(file), python=python, search_path=_import_root(file))
    for f in findings:
        style = "red" if f.blocking else "yellow"
        console.print(f"[{style}]{escape(format_findings([f]))}[/{style}]")
    blocking = sum(f.blocking for f in findings)
    warnings = len(findings) - blocking
    summary = f"{blocking} blocking, {warnings} warning{'s' if warnings != 1 else ''}"
    console.print(f"[bold {'red' if blocking else 'green'}]{file}: {summary}[/]")
    return 1 if blocking else 0


def _import_root(file: Path) -> Path:
    """The folder the file's own imports resolve from: above any package it sits in."""
    folder = file.resolve().parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        folder = folder.parent
    return folder


# ---------------------------------------------------------------- shared parsing


@functools.lru_cache(maxsize=16)
def _parse(source: str) -> ast.Module:
    # Cached: the loop checks many attempts against the same `old`. Callers must not mutate trees.
    return ast.parse(source)


@dataclass
class _Source:
    path: str
    text: str
    tree: ast.Module
    old: str | None
    old_tree: ast.Module | None
    added: set[int] | None  # new line numbers the edit wrote; None when there is no baseline

    def is_added(self, first: int, last: int | None = None) -> bool:
        if self.added is None:
            return True
        return any(n in self.added for n in range(first, (last or first) + 1))

    def finding(self, line: int, code: str, message: str, why: str, blocking: bool = True) -> Finding:
        return Finding(self.path, line, code, message, why, blocking)


def _syntax_finding(err: SyntaxError | ValueError, path: str) -> Finding:
    text = (getattr(err, "text", None) or "").strip()
    shown = f": {text}" if text else ""
    msg = getattr(err, "msg", None) or str(err)
    return Finding(path, getattr(err, "lineno", None) or 0, "syntax-error", f"syntax error: {msg}{shown}",
                   "Python cannot even load the file, so the run would fail at once.", True)


def _added_lines(old: str, new: str) -> set[int]:
    """1-based line numbers of `new` that are not unchanged lines of `old`."""
    a, b = old.splitlines(), new.splitlines()
    head = 0  # an edit is usually local: diff only the middle that differs (10x faster)
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail],
                                      autojunk=False)
    return {head + j + 1 for tag, _, _, j1, j2 in matcher.get_opcodes() if tag != "equal"
            for j in range(j1, j2)}


@functools.lru_cache(maxsize=16)
def _nodes(source: str) -> tuple[ast.AST, ...]:
    """Every node of the file, walked once and shared by the rules."""
    return tuple(ast.walk(_parse(source)))


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Module functions and methods by qualified name; the last definition wins, as in Python."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _body_without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _is_ellipsis(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
        and stmt.value.value is Ellipsis


def _is_stub(fn: ast.FunctionDef) -> bool:
    """A body of only `pass` / `...` (after an optional docstring)."""
    return all(isinstance(s, ast.Pass) or _is_ellipsis(s) for s in _body_without_docstring(fn.body))


def _statement_count(fn: ast.FunctionDef) -> int:
    """Statements in the function, nested ones included, its docstring not."""
    return sum(1 for _ in _statements(_body_without_docstring(fn.body)))


# ---------------------------------------------------------------- rule: pyflakes, new findings only

# pyflakes messages that mean the code fails when the line runs; style findings (unused imports,
# redefinitions) are left to linters, so the gate never blocks on taste.
_FATAL = tuple(getattr(flake_messages, name) for name in (
    "UndefinedName", "UndefinedLocal", "UndefinedExport", "DuplicateArgument",
    "ReturnOutsideFunction", "YieldOutsideFunction", "ContinueOutsideLoop", "BreakOutsideLoop",
    "DefaultExceptNotLast", "TwoStarredExpressions", "TooManyExpressionsInStarredAssignment",
    "ForwardAnnotationSyntaxError", "FutureFeatureNotDefined", "LateFutureImport",
    "PercentFormatInvalidFormat", "PercentFormatMixedPositionalAndNamed",
    "PercentFormatUnsupportedFormatCharacter", "PercentFormatPositionalCountMismatch",
    "PercentFormatMissingArgument", "PercentFormatExpectedMapping", "PercentFormatExpectedSequence",
    "PercentFormatStarRequiresSequence", "StringDotFormatInvalidFormat",
    "StringDotFormatMissingArgument", "StringDotFormatMixingAutomatic",
) if hasattr(flake_messages, name))

_FLAKE_WHY = {
    "UndefinedName": "the run would stop with NameError when this line executes; import or define it",
    "UndefinedLocal": "the run would stop with UnboundLocalError: the name is read before this "
                      "function assigns it",
}


@functools.lru_cache(maxsize=16)
def _fatal_flakes(source: str) -> tuple:
    checker = Checker(_parse(source), withDoctest=False)
    return tuple(m for m in checker.messages if isinstance(m, _FATAL))


def _flake_key(message) -> tuple:
    return type(message).__name__, tuple(map(str, message.message_args))


def _undefined_names(src: _Source) -> list[Finding]:
    """Fatal pyflakes messages the edit added; compared by kind and name, not by line."""
    new = _fatal_flakes(src.text)
    budget = Counter(_flake_key(m) for m in _fatal_flakes(src.old)) if src.old else Counter()
    findings = []
    # Messages on lines the edit wrote are the likelier culprits, so they use up the budget last.
    for m in sorted(new, key=lambda m: (src.is_added(m.lineno), m.lineno)):
        key = _flake_key(m)
        if budget[key] > 0:
            budget[key] -= 1
            continue
        code = re.sub(r"(?<!^)(?=[A-Z])", "-", key[0]).lower()
        why = _FLAKE_WHY.get(key[0], "Python raises an error when this line runs")
        findings.append(src.finding(m.lineno, code, m.message % m.message_args, why))
    return findings


# ---------------------------------------------------------------- rule: placeholder code

_DOTS = re.compile(r"\.\.\.|…")
_DOTTED_WORDS = re.compile(
    r"\b(existing|rest of|remaining|previous|original|unchanged|same as|as before|omitted|"
    r"truncated|init code|other methods|other code|code here|code goes here)\b")
_PHRASES = [re.compile(p) for p in (
    r"(keep(ing)? )?(the )?(existing|original|previous|remaining|old|rest of( the)?)\s+"
    r"([\w.]+\s+){0,2}?(code|init|initiali[sz]ation|implementation|logic|methods?|setup|lines|body|"
    r"__init__)(\s+(remains?|stays?|is|are|goes))?(\s+(unchanged|the same|as (is|before)|here|omitted))?",
    r"(code|init|implementation|everything else|rest)\s+((remains|is|stays)\s+)?"
    r"(unchanged|the same|as before)",
    r"unchanged|same as (before|above)|as before",
)]


def is_placeholder_comment(comment: str) -> bool:
    """True for comments that stand in for code, e.g. `# Existing init code...`."""
    text = comment.strip().lstrip("#").strip().lower()
    if _DOTS.search(text) and _DOTTED_WORDS.search(text):
        return True
    core = text.strip(" .…()[]{}<>:-")
    return any(p.fullmatch(core) for p in _PHRASES)


def _comments(text: str) -> list[tuple[int, str]]:
    try:
        return [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                if tok.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return []


def _candidate_comment_lines(src: _Source) -> set[int]:
    """Lines with a `#` whose tail reads as a placeholder: a cheap filter before tokenizing."""
    lines = src.text.splitlines()
    numbers = range(1, len(lines) + 1) if src.added is None else sorted(src.added)
    found = set()
    for n in numbers:
        line = lines[n - 1] if n <= len(lines) else ""
        if "#" in line and any(is_placeholder_comment(line[i:]) for i in
                               (k for k, ch in enumerate(line) if ch == "#")):
            found.add(n)
    return found


def _placeholders(src: _Source) -> list[Finding]:
    findings = []
    candidates = _candidate_comment_lines(src)
    for line, comment in _comments(src.text) if candidates else ():
        if line in candidates and is_placeholder_comment(comment):
            findings.append(src.finding(
                line, "placeholder", f"placeholder comment `{comment.strip()}`",
                "the code it stands for is not in the file any more: a REPLACE section replaces the "
                "whole SEARCH text, so write every line you keep out in full"))
    for node in _nodes(src.text):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or len(_body_without_docstring(body)) < 2:
            continue
        for stmt in body:
            if _is_ellipsis(stmt) and src.is_added(stmt.lineno):
                findings.append(src.finding(
                    stmt.lineno, "placeholder", "a bare `...` line among real statements",
                    "`...` here stands for elided code, which is not in the file; write it out"))
    return findings


def _kept_functions(src: _Source):
    """(name, function now, function before) for each function the edit kept but may have changed."""
    if src.old_tree is None:
        return
    old = _functions(src.old_tree)
    for name, fn in _functions(src.tree).items():
        if name in old:
            yield name, fn, old[name]


def _emptied_bodies(src: _Source) -> list[Finding]:
    """A function that had real code before the edit and now holds only `pass` or `...`."""
    findings = []
    for name, fn, before in _kept_functions(src):
        if _is_stub(fn) and not _is_stub(before):
            findings.append(src.finding(
                fn.lineno, "emptied-body", f"{name} now has an empty body (was "
                f"{_statement_count(before)} statements)",
                "the edit dropped its code; write the full function, including the unchanged lines"))
    return findings


# ---------------------------------------------------------------- rule: a definition repeated in one scope

_REDEFINERS = re.compile(r"(^|\.)(setter|getter|deleter)$|overload|register")


def _definitions_by_scope(tree: ast.Module) -> dict[tuple[str, str], list[ast.stmt]]:
    scopes = [("", tree.body)] + [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
    found: dict[tuple[str, str], list[ast.stmt]] = {}
    for scope, body in scopes:
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if node.name == "_" or any(_REDEFINERS.search(ast.unparse(d)) for d in node.decorator_list):
                continue  # @x.setter, @overload, @f.register(...), `def _` redefine on purpose
            found.setdefault((scope, node.name), []).append(node)
    return found


def _duplicate_definitions(src: _Source) -> list[Finding]:
    before = _definitions_by_scope(src.old_tree) if src.old_tree else {}
    findings = []
    for (scope, name), nodes in _definitions_by_scope(src.tree).items():
        if len(nodes) < 2 or len(before.get((scope, name), ())) >= len(nodes):
            continue
        qual = f"{scope}.{name}" if scope else name
        lines = " and ".join(str(n.lineno) for n in nodes)
        findings.append(src.finding(
            nodes[-1].lineno, "duplicate-definition", f"{qual} is defined {len(nodes)} times "
            f"(lines {lines})", "Python keeps only the last one, so the code of the earlier "
            f"definition never runs; merge them into one {name}"))
    return findings


# ---------------------------------------------------------------- rule: self.X read but never assigned

# What torch.nn.Module gives every subclass (dir() of torch 2.13 plus instance attributes, private
# ones left out because reads of `self._x` are skipped for it). A subclass of nn.Module is checked
# as strictly as an in-file class: an attribute nobody sets is not hiding in nn.Module.
_MODULE_ATTRS = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda "
    "double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter "
    "get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules "
    "named_parameters parameters register_backward_hook register_buffer register_forward_hook "
    "register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook "
    "register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module "
    "register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ "
    "set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu "
    "zero_grad".split())
_TORCH_MODULE = "torch.nn.Module"
_TORCH_MODULE_SPELLINGS = {"nn.Module", "torch.nn.Module"}
# Calls through which an nn.Module gets an attribute without `self.x = ...`.
_REGISTERS = {"register_buffer", "register_parameter", "add_module", "register_module"}


@dataclass
class _ClassFacts:
    name: str
    bases: list[str | None]  # in-file base names, _TORCH_MODULE, or None for one defined elsewhere
    provides: dict[str, int]  # attribute -> line where the class assigns or defines it
    reads: dict[str, int]  # attribute -> first line where a method reads self.<attr>
    dynamic: bool  # __getattr__, setattr(self, name, ...) or vars(self): attributes unknowable


@functools.lru_cache(maxsize=16)
def _class_facts(source: str) -> dict[str, _ClassFacts]:
    # Cached by text like the rest: the facts of `old` are reused for every attempt.
    classes = [n for n in _nodes(source) if isinstance(n, ast.ClassDef)]
    names = {c.name for c in classes}
    return {c.name: _facts_of(c, names) for c in classes}


def _facts_of(cls: ast.ClassDef, in_file: set[str]) -> _ClassFacts:
    bases = []
    for base in cls.bases:
        if isinstance(base, ast.Name) and (base.id in in_file or base.id == "object"):
            bases.append(base.id if base.id != "object" else "")
        elif ast.unparse(base) in _TORCH_MODULE_SPELLINGS:
            bases.append(_TORCH_MODULE)
        else:
            bases.append(None)
    facts = _ClassFacts(cls.name, [b for b in bases if b != ""], {}, {}, False)
    methods = {}
    for node in cls.body:
        for name, line in _bound_names(node):
            facts.provides.setdefault(name, line)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            methods[node.name] = node  # the last definition is the one that exists
    facts.dynamic = "__getattr__" in methods or "__getattribute__" in methods
    facts.provides.update(dict.fromkeys(_slots(cls), cls.lineno))
    for method in methods.values():
        _scan_method(method, facts)
    if "__new__" in methods:  # `self = object.__new__(cls); self.x = ...` sets attributes too
        for node in ast.walk(methods["__new__"]):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                facts.provides.setdefault(node.attr, node.lineno)
    return facts


def _slots(cls: ast.ClassDef) -> list[str]:
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
            return [n.value for n in ast.walk(node.value)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return []


def _bound_names(node: ast.stmt) -> list[tuple[str, int]]:
    """Names a class-body statement binds (methods, class attributes, nested classes)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [(node.name, node.lineno)]
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        return [((a.asname or a.name).split(".")[0], node.lineno) for a in node.names]
    return [(n.id, node.lineno) for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _scan_method(method: ast.FunctionDef, facts: _ClassFacts) -> None:
    decorators = {ast.unparse(d) for d in method.decorator_list}
    args = method.args.posonlyargs + method.args.args
    if not args or decorators & {"staticmethod", "classmethod"}:
        return
    me = args[0].arg
    for node in ast.walk(method):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == me:
            if isinstance(node.ctx, ast.Load):
                facts.reads.setdefault(node.attr, node.lineno)
            else:
                facts.provides.setdefault(node.attr, node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in _REGISTERS and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == me and node.args and isinstance(node.args[0], ast.Constant):
            facts.provides.setdefault(str(node.args[0].value), node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == me:
            if node.func.id == "setattr":
                name = node.args[1] if len(node.args) > 1 else None
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    facts.provides.setdefault(name.value, node.lineno)
                else:
                    facts.dynamic = True
            elif node.func.id == "vars":
                facts.dynamic = True
        elif isinstance(node, ast.Attribute) and node.attr == "__dict__" and \
                isinstance(node.value, ast.Name) and node.value.id == me:
            facts.dynamic = True


def _lineage(name: str, classes: dict[str, _ClassFacts], seen: frozenset = frozenset()):
    """(attributes provided by the class and its in-file bases, whether some base is external)."""
    facts = classes[name]
    provided, external = set(facts.provides), facts.dynamic
    for base in facts.bases:
        if base == _TORCH_MODULE:
            provided |= _MODULE_ATTRS
        elif base is None:
            external = True
        elif base not in seen and base in classes:
            more, ext = _lineage(base, classes, seen | {name})
            provided |= more
            external = external or ext
    return provided, external


def _all_bases(name: str, classes: dict[str, _ClassFacts], seen: frozenset = frozenset()) -> set:
    found = set()
    for base in classes[name].bases:
        found.add(base)
        if base in classes and base not in seen:
            found |= _all_bases(base, classes, seen | {name})
    return found


def _subclass_provides(name: str, classes: dict[str, _ClassFacts]) -> set[str]:
    """Attributes in-file subclasses assign: a base class may read what its subclasses set."""
    found: set[str] = set()
    for other in classes.values():
        if name in other.bases:
            found |= set(other.provides) | _subclass_provides(other.name, {
                k: v for k, v in classes.items() if k != name})
    return found


def _missing_self_attributes(src: _Source) -> list[Finding]:
    classes = _class_facts(src.text)
    old_classes = _class_facts(src.old) if src.old else {}
    findings = []
    for name, facts in classes.items():
        provided, external = _lineage(name, classes)
        if any(classes[b].dynamic for b in facts.bases if b in classes) or facts.dynamic:
            continue
        provided |= _subclass_provides(name, classes)
        old = old_classes.get(name)
        old_provided = _lineage(name, old_classes)[0] if old else set()
        groups: dict[str, dict[str, int]] = {"lost": {}, "missing": {}, "external": {}}
        for attr, line in facts.reads.items():
            if attr in provided or attr.startswith("__"):
                continue
            if attr.startswith("_") and _TORCH_MODULE in _all_bases(name, classes):
                continue  # nn.Module internals (_parameters, _buffers, ...)
            lost = attr in old_provided  # the edit removed the assignment this read relies on
            newly_read = old is None or src.old_tree is None or attr not in old.reads
            if not (lost or newly_read) or (external and not lost and attr in _MODULE_ATTRS):
                continue
            kind = "lost" if lost else "external" if external else "missing"
            groups[kind][attr] = line
        findings += [_attribute_finding(src, name, kind, attrs) for kind, attrs in groups.items() if attrs]
    return findings


def _attribute_finding(src: _Source, cls: str, kind: str, attrs: dict[str, int]) -> Finding:
    """One finding per class and kind, naming every attribute: the fix is usually one __init__."""
    names = sorted(attrs, key=attrs.get)
    shown = ", ".join(f"self.{a}" for a in names)
    are = "is" if len(names) == 1 else "are"
    crash = f"AttributeError: '{cls}' object has no attribute '{names[0]}'"
    line = min(attrs.values())
    if kind == "lost":
        return src.finding(line, "self-attribute", f"{shown} {are} read but no longer assigned in "
                           f"{cls}", f"the code that set {'it' if are == 'is' else 'them'} is gone or no longer runs; "
                           f"the run would stop with {crash}")
    if kind == "external":
        return src.finding(line, "self-attribute", f"{shown} {are} read but not assigned in {cls}",
                           "a base class defined in another module may set it, which the gate cannot "
                           f"see; if not, the run stops with {crash}", blocking=False)
    return src.finding(line, "self-attribute", f"{shown} {are} read but never assigned in {cls} "
                       "or its base classes", f"the run would stop with {crash}")


# ---------------------------------------------------------------- rule: a function lost most of its code

# A warning, not a block: extracting helpers shrinks a function legitimately, and the ways a lost body
# breaks a run (placeholders, dropped self.X assignments, duplicate defs) are blocked by their own rules.
SHRINK_MIN_STATEMENTS = 5
SHRINK_KEEP = 0.4


def _shrunk_functions(src: _Source) -> list[Finding]:
    findings = []
    for name, fn, before in _kept_functions(src):
        was, now = _statement_count(before), _statement_count(fn)
        if was >= SHRINK_MIN_STATEMENTS and now <= SHRINK_KEEP * was:
            findings.append(src.finding(
                fn.lineno, "shrunk-function", f"{name} went from {was} statements to {now}",
                "if the edit meant to keep the rest of it, the code is gone: write the whole function",
                blocking=False))
    return findings


# ---------------------------------------------------------------- rule: every import resolves


def _unresolved(names: list[str], search_path: str | None) -> list[str]:
    """The module names among `names` that the running interpreter cannot find.

    Self-contained (imports inside): it is also sent as source to the run's interpreter. Nothing is
    imported (importing torch takes seconds): a top-level name goes through the import system's
    finders, a submodule is looked for as a file or folder in its parent package's folders.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    suffixes = importlib.machinery.all_suffixes()

    def top_level(name):
        """The folders of the package `name`, [] for a plain module, None when absent."""
        spec = importlib.machinery.PathFinder.find_spec(name, [search_path]) if search_path else None
        try:
            spec = spec or importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return []  # imported already without a spec (e.g. __main__): it exists
        if spec is None:
            return None
        folders = spec.submodule_search_locations
        # A namespace package's path recomputes itself from sys.modules; read its folder list.
        return list(getattr(folders, "_path", folders) or [])

    def inside(folders, name):
        """Like top_level, for a submodule of a package with those folders."""
        found = [os.path.join(f, name) for f in folders if os.path.isdir(os.path.join(f, name))]
        if found:
            return found
        if any(os.path.isfile(os.path.join(f, name) + s) for f in folders for s in suffixes):
            return []
        return None

    missing = []
    for name in names:
        parts = name.split(".")
        folders = top_level(parts[0])
        for depth in range(1, len(parts)):
            if folders is None or ".".join(parts[:depth + 1]) in sys.modules:
                break
            if not folders:
                folders = []  # a plain module's "submodule" (os.path, six.moves): set at run time
                break
            folders = inside(folders, parts[depth])
        if folders is None:
            missing.append(name)
    return missing


def _imported_modules(tree: ast.Module) -> list[tuple[str, ast.stmt, bool, bool]]:
    """(module, statement, always runs, guarded by try/except ImportError) per import.

    "Always runs" means directly in the module body: the run fails there for sure.
    """
    top = {id(stmt) for stmt in tree.body}
    found = []
    for stmt, in_function, guarded in _statements(tree.body):
        if isinstance(stmt, ast.Import):
            modules = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            modules = [stmt.module]
        else:
            continue
        found += [(m, stmt, id(stmt) in top, guarded) for m in modules if m != "__future__"]
    return found


def _statements(body: list[ast.stmt], in_function: bool = False, guarded: bool = False):
    """Every statement with its context; imports are statements, so expressions are skipped."""
    for stmt in body:
        yield stmt, in_function, guarded
        inner = in_function or isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            guard = guarded or (field == "body" and _guards_imports(stmt))
            for item in getattr(stmt, field, None) or ():
                block = item.body if isinstance(item, (ast.ExceptHandler, ast.match_case)) else [item]
                yield from _statements(block, inner, guard)


def _guards_imports(stmt: ast.stmt) -> bool:
    """`try: import x / except ImportError` and `if TYPE_CHECKING:` make an import optional."""
    if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
        return any(_catches_import_error(h) for h in stmt.handlers)
    return isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    caught = ast.unparse(handler.type)
    return any(n in caught for n in ("ImportError", "ModuleNotFoundError", "Exception"))


def _same_interpreter(python: str | None) -> bool:
    if python is None:
        return True
    found = shutil.which(python) or python
    return os.path.abspath(found) == os.path.abspath(sys.executable)


def _missing_modules(names: list[str], python: str | None, search_path: str | None) -> list[str]:
    """Ask the run's interpreter once for all names; raises OSError/ValueError when it cannot."""
    if _same_interpreter(python):
        return _unresolved(names, search_path)
    code = (inspect.getsource(_unresolved)
            + "\nimport json, sys\nprint(json.dumps(_unresolved(json.loads(sys.argv[1]), sys.argv[2] "
              "or None)))\n")
    done = subprocess.run([python, "-c", code, json.dumps(names), search_path or ""],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                         f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _unresolved_imports(src: _Source, python: str | None,
                        search_path: str | Path | None) -> list[Finding]:
    imports = [i for i in _imported_modules(src.tree) if not i[3]]
    names = sorted({module for module, *_ in imports})
    if not names:
        return []
    where = str(search_path) if search_path else None
    try:
        missing = set(_missing_modules(names, python, where))
    except (OSError, ValueError, subprocess.SubprocessError, json.JSONDecodeError) as err:
        return [src.finding(1, "import-check-failed", f"could not check imports with {python}: {err}",
                            "imports are unverified; a missing module will only show when the run "
                            "starts", blocking=False)]
    interpreter = python or sys.executable
    findings = []
    for module, node, always, _ in imports:
        added = src.is_added(node.lineno, node.end_lineno)
        if module not in missing or not (always or added or src.added is None):
            continue  # an old import under an `if` or in a function may sit on a path never taken
        blocking = always or (added and src.added is not None)
        findings.append(src.finding(
            node.lineno, "unresolved-import", f"module '{module}' is not installed for {interpreter}",
            "the run would stop with ModuleNotFoundError; use an installed package or write the code",
            blocking))
    return findings
