"""Rule: a function or class defined twice in one scope, so the first definition never runs."""

from __future__ import annotations

import ast

from agent.checks.core import FUNCTIONS, Finding, Rule, Source

# Decorators that redefine a name on purpose: @x.setter, @overload, @f.register(...), @override.
_REDEFINERS = ("setter", "getter", "deleter", "overload", "register", "override", "dispatch")


def _deliberate(node: ast.stmt) -> bool:
    return node.name == "_" or any(word in ast.unparse(d) for d in node.decorator_list
                                   for word in _REDEFINERS)


def _definitions_by_scope(tree: ast.Module) -> dict[tuple[str, str], list[ast.stmt]]:
    """Unconditional definitions per (scope, name): those directly in the module or a class body.

    One under `if`/`try` is a conditional alternative, chosen at run time, and is not counted.
    """
    scopes = [("", tree.body)] + [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
    found: dict[tuple[str, str], list[ast.stmt]] = {}
    for scope, body in scopes:
        for node in body:
            if isinstance(node, FUNCTIONS + (ast.ClassDef,)) and not _deliberate(node):
                found.setdefault((scope, node.name), []).append(node)
    return found


def _used_before_redefinition(body: list[ast.stmt], name: str, first: ast.stmt, second: ast.stmt) -> bool:
    """True when a statement between the two definitions reads `name`: the first one is registered,
    aliased or called there (`TRAINERS["l1"] = make`, `_old = forward`), so replacing it is meant."""
    between = [s for s in body if first.lineno < s.lineno < second.lineno]
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
               for s in between for n in _run_now(s))


def _run_now(stmt: ast.stmt):
    """The nodes of a statement that run when it does: not the bodies of functions it defines
    (a call in there finds the last definition, so it does not make the first one deliberate)."""
    todo = [stmt]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, FUNCTIONS + (ast.Lambda,)):
            todo.extend(n for n in getattr(node, "decorator_list", []) + node.args.defaults
                        + node.args.kw_defaults if n is not None)
            continue
        todo.extend(n for n in ast.iter_child_nodes(node) if n is not None)


def duplicate_definitions(src: Source) -> list[Finding]:
    before = _definitions_by_scope(src.old_tree) if src.old_tree else {}
    bodies = {"": src.tree.body} | {n.name: n.body for n in src.tree.body if isinstance(n, ast.ClassDef)}
    findings = []
    for (scope, name), nodes in _definitions_by_scope(src.tree).items():
        nodes = [n for n, later in zip(nodes, nodes[1:] + [None])
                 if later is None or not _used_before_redefinition(bodies[scope], name, n, later)]
        if len(nodes) < 2 or len(before.get((scope, name), ())) >= len(nodes):
            continue
        qual = f"{scope}.{name}" if scope else name
        lines = " and ".join(str(n.lineno) for n in nodes)
        findings.append(src.finding(
            nodes[-1].lineno, "duplicate-definition", f"{qual} is defined {len(nodes)} times "
            f"(lines {lines})", "Python keeps only the last one, so the code of the earlier "
            f"definition never runs; merge them into one {name}"))
    return findings


RULE = Rule("duplicate-definitions", ("duplicate-definition",), duplicate_definitions,
            "a function or class defined twice in one scope (not conditional, not registered)")
