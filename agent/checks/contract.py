"""Rule: the edit dropped what the agent runs the file by.

A whole file from the coder (aider's whole format) replaces everything, and a small model's
rewrite easily loses the `if __name__ == "__main__":` entry, `main`, the export through
`harness.save_sae`, or a `Config` field that the agent sets for the baseline's seeds and frontier.
Each of these worked before the edit (only what the edit removed is reported) and without it the
run does nothing useful: it exits at once, leaves nothing to evaluate, or cannot be set.
"""

from __future__ import annotations

import ast

from agent.checks.core import FUNCTIONS, Finding, Rule, Source

ENTRY = "main"
EXPORTS = ("save_sae",)  # the harness's export: the evaluator scores only what it wrote


def _has_entry(tree: ast.Module) -> bool:
    """A top-level `if __name__ == "__main__":`."""
    for node in tree.body:
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            return True
    return False


def _top_functions(tree: ast.Module) -> set[str]:
    return {n.name for n in tree.body if isinstance(n, FUNCTIONS)}


def _called(tree: ast.Module) -> set[str]:
    """Names of every function called, `harness.save_sae(...)` and `save_sae(...)` alike."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return names


def _config_fields(tree: ast.Module) -> set[str]:
    config = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config"), None)
    if config is None:
        return set()
    fields = set()
    for node in config.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            fields.add(node.target.id)
        elif isinstance(node, ast.Assign):
            fields.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return fields


def dropped_contract(src: Source) -> list[Finding]:
    if src.old_tree is None:
        return []
    old, new = src.old_tree, src.tree
    findings = []
    if _has_entry(old) and not _has_entry(new):
        findings.append(src.finding(1, "dropped-entry", 'the `if __name__ == "__main__":` block is gone',
                                    "`python experiment.py` would define everything and run nothing; "
                                    "keep the entry that calls main()"))
    if ENTRY in _top_functions(old) and ENTRY not in _top_functions(new):
        findings.append(src.finding(1, "dropped-entry", f"{ENTRY}() is gone",
                                    "the run starts at main(): send the whole file, main() included"))
    for name in EXPORTS:
        if name in _called(old) and name not in _called(new):
            findings.append(src.finding(1, "dropped-export", f"harness.{name}(...) is no longer called",
                                        "the harness evaluates only what save_sae exports: without it the "
                                        "run leaves nothing to evaluate and fails"))
    gone = sorted(set(src.keep_fields) & _config_fields(old) - _config_fields(new))
    for name in gone:
        findings.append(src.finding(1, "dropped-config-field", f"Config.{name} is gone",
                                    "the agent sets this field to train the baseline's seeds and frontier "
                                    "(template.json); keep it (change its default if you must)"))
    return findings


RULE = Rule("contract", ("dropped-entry", "dropped-export", "dropped-config-field"), dropped_contract,
            "the edit dropped the __main__ entry, main(), the save_sae export or a Config field the agent sets")
