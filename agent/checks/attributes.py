"""Rule: `self.X` (or `self.ae.X`) read where nothing gives the object an X: AttributeError at run time.

Three checks share the class facts of `classes.py`:
- an attribute read that no code of the class, its bases (in the file or installed) or its
  subclasses assigns, or whose assignment the edit removed;
- a read in `__init__`, or in a method `__init__` calls, before `__init__` has assigned it;
- a read through another object whose class is in the file (`self.ae.W_dec` where `self.ae` is a
  `CustomSAE` with no `W_dec`).
Reads guarded by hasattr / getattr(o, "x", default) / try-except AttributeError never count.
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from dataclasses import dataclass

from agent.checks.classes import (FUNCTIONS, MODULE_ATTRS, REGISTERS, ClassFacts, ancestors,
                                  class_facts, descendants, function_info, is_torch_module, lineage)
from agent.checks.core import Finding, Rule, Source, nodes


def _unknowable(name: str, classes: dict[str, ClassFacts]) -> bool:
    """A class (or one in its in-file family) whose attributes cannot be listed statically."""
    family = {name} | ancestors(name, classes) | descendants(name, classes)
    return any(classes[c].dynamic for c in family if c in classes)


def _subclass_provides(name: str, classes: dict[str, ClassFacts]) -> set[str]:
    """Attributes in-file subclasses assign: a base class may read what its subclasses set."""
    return {a for c in descendants(name, classes) for a in classes[c].provides}


def _old_provider_touched(attr: str, name: str, src: Source, old_classes: dict[str, ClassFacts],
                          facts: ClassFacts) -> bool:
    """True when the edit deleted or rewrote a line that gave `attr` before, or left it only in a
    definition that a later one now shadows. Otherwise the assignment is still where it was, and
    the gate merely cannot see it any more: no reason to blame the edit."""
    if attr in facts.dead_provides:
        return True
    family = {name} | ancestors(name, old_classes) | descendants(name, old_classes)
    lines = {n for c in family if c in old_classes for n in old_classes[c].provides.get(attr, ())}
    # No line at all: an installed base gave it (self.training), and a base the gate cannot see
    # now may give it still; that is not an assignment the edit removed.
    return bool(lines & (src.removed or set()))


def missing_attributes(src: Source) -> list[Finding]:
    classes = class_facts(src.text)
    old_classes = class_facts(src.old) if src.old else {}
    findings = []
    for name, facts in classes.items():
        if _unknowable(name, classes):
            continue
        subclasses = _subclass_provides(name, classes)
        local = lineage(name, classes, resolve=False)[0] | subclasses
        if all(a in local or a.startswith("__") for a in facts.reads):
            continue  # everything read is set in this file: no installed base needs importing
        provided, external = lineage(name, classes)
        provided |= subclasses
        old = old_classes.get(name)
        old_provided = (lineage(name, old_classes)[0] | _subclass_provides(name, old_classes)) if old else set()
        torch_module = is_torch_module(name, classes)
        groups: dict[str, dict[str, int]] = {"lost": {}, "missing": {}, "external": {}}
        for attr, line in facts.reads.items():
            if attr in provided or attr.startswith("__"):
                continue
            if attr.startswith("_") and torch_module:
                continue  # nn.Module internals (_parameters, _buffers, ...)
            if attr in old_provided:
                if _old_provider_touched(attr, name, src, old_classes, facts):
                    groups["lost"][attr] = line  # the edit removed the assignment this read relies on
                continue
            newly_read = old is None or src.old_tree is None or attr not in old.reads
            if not newly_read or (external and attr in MODULE_ATTRS):
                continue
            groups["external" if external else "missing"][attr] = line
        findings += [_attribute_finding(src, name, kind, attrs) for kind, attrs in groups.items() if attrs]
    return findings


def _attribute_finding(src: Source, cls: str, kind: str, attrs: dict[str, int]) -> Finding:
    """One finding per class and kind, naming every attribute: the fix is usually one __init__."""
    names = sorted(attrs, key=attrs.get)
    shown = ", ".join(f"self.{a}" for a in names)
    are = "is" if len(names) == 1 else "are"
    crash = f"AttributeError: '{cls}' object has no attribute '{names[0]}'"
    line = min(attrs.values())
    if kind == "lost":
        return src.finding(line, "self-attribute", f"{shown} {are} read but no longer assigned in "
                           f"{cls}", f"the code that set {'it' if are == 'is' else 'them'} is gone or no "
                           f"longer runs; the run would stop with {crash}")
    if kind == "external":
        return src.finding(line, "self-attribute", f"{shown} {are} read but not assigned in {cls}",
                           "a base class defined in another module may set it, which the gate cannot "
                           f"see; if not, the run stops with {crash}", blocking=False)
    return src.finding(line, "self-attribute", f"{shown} {are} read but never assigned in {cls} "
                       "or its base classes", f"the run would stop with {crash}")


# ---------------------------------------------------------------- read in __init__ before assigned


@dataclass(frozen=True)
class _EarlyRead:
    attr: str
    line: int  # the read
    via: str | None  # the method __init__ called on the way to the read
    call_line: int | None
    method: str | None = None  # the method that holds the read, when __init__ does not


class _InitOrder:
    """Walk `__init__` in order, into the methods it calls on `self`, noting reads of attributes
    that only this class's own methods assign and that are not assigned yet at that point.

    May-assign: an assignment in any branch counts from then on, and a loop's assignments count for
    its whole body (a later iteration sees them), so only reads that fail on every path are kept.
    """

    MAX_DEPTH = 4

    def __init__(self, name: str, classes: dict[str, ClassFacts]):
        self.classes, self.facts = classes, classes[name]
        inherited = set(self.facts.real_attrs)
        for base in self.facts.in_file_bases:
            if base in classes:
                inherited |= lineage(base, classes, resolve=False)[0]
        self.pending = {a for a in self.facts.provides if a not in self.facts.class_level} \
            - inherited - _subclass_provides(name, classes) - self.facts.helper_provides
        if "__new__" in self.facts.methods:
            self.pending -= {n.attr for n in ast.walk(self.facts.methods["__new__"])
                             if isinstance(n, ast.Attribute)}
        self.found: dict[str, _EarlyRead] = {}

    def run(self) -> dict[str, _EarlyRead]:
        init = self.facts.methods.get("__init__")
        if init is not None and self.pending:
            self._function(init, set(), None, None, (init.name,))
        return self.found

    def _method(self, name: str) -> ast.FunctionDef | None:
        for cls in [self.facts.name] + sorted(ancestors(self.facts.name, self.classes)):
            if name in self.classes[cls].methods:
                return self.classes[cls].methods[name]
        return None

    def _function(self, fn, assigned: set[str], via, call_line, stack) -> None:
        args = fn.args.posonlyargs + fn.args.args
        if not args:
            return
        info = function_info(fn)
        ctx = (args[0].arg, info.guards, info.in_try, via, call_line, stack, info.aug, fn.name)
        self._block(fn.body, assigned, ctx)

    def _block(self, body, assigned, ctx) -> None:
        for stmt in body:
            self._stmt(stmt, assigned, ctx)

    def _stmt(self, stmt, assigned, ctx) -> None:
        if isinstance(stmt, FUNCTIONS + (ast.ClassDef,)):
            return  # runs later, if ever
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            self._expr(stmt.iter if not isinstance(stmt, ast.While) else stmt.test, assigned, ctx)
            assigned |= self._stores(stmt.body, ctx[0], ctx[6])
            self._block(stmt.body, assigned, ctx)
            self._block(stmt.orelse, assigned, ctx)
            return
        if isinstance(stmt, ast.If):
            self._expr(stmt.test, assigned, ctx)
            self._block(stmt.body, assigned, ctx)
            self._block(stmt.orelse, assigned, ctx)
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self._expr(item.context_expr, assigned, ctx)
            self._block(stmt.body, assigned, ctx)
            return
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self._block(stmt.body, assigned, ctx)
            for handler in stmt.handlers:
                self._block(handler.body, assigned, ctx)
            self._block(stmt.orelse, assigned, ctx)
            self._block(stmt.finalbody, assigned, ctx)
            return
        self._expr(stmt, assigned, ctx)
        assigned |= self._stores([stmt], ctx[0], ctx[6])

    def _expr(self, tree, assigned, ctx) -> None:
        me, guards, in_try, via, call_line, stack, aug, current = ctx
        calls, reads = [], []
        for node in _eager_walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == me:
                calls.append(node)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == me and (isinstance(node.ctx, ast.Load) or id(node) in aug):
                reads.append(node)
        for call in calls:  # a helper's assignments count for the rest of the statement
            method = self._method(call.func.attr)
            if method is not None and method.name not in stack and len(stack) <= self.MAX_DEPTH:
                self._function(method, assigned, via or method.name,
                               call_line or call.lineno, stack + (method.name,))
        for node in reads:
            attr = node.attr
            if attr in self.pending and attr not in assigned and attr not in guards \
                    and id(node) not in in_try and attr not in self.found:
                self.found[attr] = _EarlyRead(attr, node.lineno, via, call_line, current if via else None)

    @staticmethod
    def _stores(body, me, aug) -> set[str]:
        found = set()
        for stmt in body:
            for node in _eager_walk(stmt):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                        and node.value.id == me and isinstance(node.ctx, ast.Store) and id(node) not in aug:
                    found.add(node.attr)
                elif isinstance(node, ast.Call) and node.args:
                    func = node.func
                    named = None
                    if isinstance(func, ast.Attribute) and func.attr in REGISTERS | {"__setattr__"}:
                        named = node.args[0]
                    elif isinstance(func, ast.Name) and func.id == "setattr" and len(node.args) > 1:
                        named = node.args[1]
                    if isinstance(named, ast.Constant) and isinstance(named.value, str):
                        found.add(named.value)
        return found


def _eager_walk(tree: ast.AST):
    """ast.walk without the bodies of nested functions, lambdas and classes (they run later)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, FUNCTIONS + (ast.Lambda, ast.ClassDef)):
                todo.append(child)


@functools.lru_cache(maxsize=4096)
def _eager_nodes(fn: ast.AST) -> tuple[ast.AST, ...]:
    return tuple(_eager_walk(fn))


@functools.lru_cache(maxsize=16)
def early_reads(text: str) -> dict[tuple[str, str], _EarlyRead]:
    classes = class_facts(text)
    found = {}
    for name, facts in classes.items():
        if _unknowable(name, classes):
            continue
        early = _InitOrder(name, classes).run()
        if not early:
            continue
        provided, external = lineage(name, classes)  # now import installed bases, if any
        if external:
            continue  # an unknown base may set anything in its own __init__
        real = set().union(*(classes[c].real_attrs for c in {name} | ancestors(name, classes)))
        for attr, read in early.items():
            if attr not in real:
                found[(name, attr)] = read
    return found


def reads_before_assignment(src: Source) -> list[Finding]:
    before = set(early_reads(src.old)) if src.old else set()
    findings = []
    for (cls, attr), read in early_reads(src.text).items():
        if (cls, attr) in before:
            continue
        where = f"{cls}.__init__"
        if read.via:
            where = f"{read.via}(), which {cls}.__init__ calls at line {read.call_line}"
            if read.method != read.via:
                where = f"{read.method}() (reached from {where})"
        findings.append(src.finding(
            read.line, "self-attribute-order", f"self.{attr} is read in {where}, before __init__ "
            "assigns it", f"the object is built in that order, so the run would stop with "
            f"AttributeError: '{cls}' object has no attribute '{attr}'; assign it earlier"))
    return findings


# ---------------------------------------------------------------- read through an object of a file class


def _typed_locals(fn: ast.FunctionDef, classes: dict[str, ClassFacts]) -> dict[str, tuple[str, int]]:
    """Local names bound only by calls of one file class in `fn`: name -> (class, line)."""
    params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
    walked = _eager_nodes(fn)
    stores = Counter(n.id for n in walked if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    made: dict[str, list[tuple[str, int]]] = {}
    for node in walked:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            cls = _constructed(node.value, classes)
            if cls:
                made.setdefault(node.targets[0].id, []).append((cls, node.lineno))
    return {name: sorted(m, key=lambda x: x[1])[0] for name, m in made.items()
            if name not in params and stores[name] == len(m) and len({c for c, _ in m}) == 1}


def _typed_self_attributes(facts: ClassFacts, classes) -> dict[str, tuple[str, int]]:
    """`self.ae` -> ("CustomSAE", line) when every assignment of self.ae is `CustomSAE(...)`."""
    kinds: dict[str, set] = {}
    lines: dict[str, int] = {}
    for method in facts.methods.values():
        args = method.args.posonlyargs + method.args.args
        if not args:
            continue
        me = args[0].arg
        for node in function_info(method).nodes:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For)) else []
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me:
                        simple = isinstance(node, ast.Assign) and target is t
                        cls = _constructed(node.value, classes) if simple else None
                        kinds.setdefault(t.attr, set()).add(cls)
                        if cls:
                            lines.setdefault(t.attr, node.lineno)
    untyped = set(facts.provides) - set(kinds) - facts.class_level
    return {a: (next(iter(k)), lines[a]) for a, k in kinds.items()
            if len(k) == 1 and None not in k and a not in untyped and a not in facts.class_level}


def _constructed(value: ast.AST | None, classes) -> str | None:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in classes:
        return value.func.id
    return None


@functools.lru_cache(maxsize=16)
def through_reads(text: str) -> dict[tuple[str, str, str], tuple[int, str, int]]:
    """(class, attr, spelled object) -> (line, class of the object, line it was made)."""
    classes = class_facts(text)
    stored = {n.attr for n in nodes(text) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    local = {name: lineage(name, classes, resolve=False)[0] for name in classes}
    full: dict[str, set[str] | None] = {}

    def lacks(cls: str, attr: str) -> bool:
        """True when instances of the file class `cls` have no `attr` (None: cannot be known)."""
        if attr in local[cls]:
            return False
        if cls not in full:  # only now import its installed bases
            provided, external = lineage(cls, classes)
            full[cls] = None if external or _unknowable(cls, classes) else provided
        return full[cls] is not None and attr not in full[cls]

    found = {}

    def check(fn, objects: dict[str, tuple[str, int]], owner: str, walk=None):
        info = function_info(fn)
        guards, in_try = info.guards, info.in_try
        for node in walk(fn) if walk else info.nodes:
            if not (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)):
                continue
            spelled = ast.unparse(node.value)
            if spelled not in objects:
                continue
            cls, made = objects[spelled]
            attr = node.attr
            if attr in stored or attr in guards or id(node) in in_try or attr.startswith("__") \
                    or not lacks(cls, attr) or (attr.startswith("_") and is_torch_module(cls, classes)):
                continue
            found.setdefault((owner, attr, spelled), (node.lineno, cls, made))

    for name, facts in classes.items():
        typed = _typed_self_attributes(facts, classes)
        for method in facts.methods.values():
            args = method.args.posonlyargs + method.args.args
            if args and typed:
                check(method, {f"{args[0].arg}.{a}": t for a, t in typed.items()}, name)
    for fn in (n for n in nodes(text) if isinstance(n, FUNCTIONS)):
        if not any(_constructed(n, classes) for n in function_info(fn).nodes):
            continue  # cheap filter: the function makes no object of a file class
        typed = _typed_locals(fn, classes)
        if typed:
            check(fn, typed, fn.name, _eager_nodes)
    return found


def reads_through_objects(src: Source) -> list[Finding]:
    before = set(through_reads(src.old)) if src.old else set()
    findings = []
    for (owner, attr, spelled), (line, cls, made) in sorted(through_reads(src.text).items(),
                                                             key=lambda kv: kv[1][0]):
        if (owner, attr, spelled) in before:
            continue
        findings.append(src.finding(
            line, "object-attribute", f"{spelled}.{attr} is read but {cls} has no attribute {attr}",
            f"{spelled} is a {cls} (made at line {made}), which neither defines nor assigns {attr}; "
            f"the run would stop with AttributeError: '{cls}' object has no attribute '{attr}'"))
    return findings


RULE = Rule("self-attributes", ("self-attribute",), missing_attributes,
            "self.X read but assigned nowhere in the class, its bases or subclasses")
ORDER_RULE = Rule("init-order", ("self-attribute-order",), reads_before_assignment,
                  "self.X read in __init__ (or a method it calls) before __init__ assigns it")
THROUGH_RULE = Rule("object-attributes", ("object-attribute",), reads_through_objects,
                    "obj.X read where obj is an instance of a file class that has no X")
