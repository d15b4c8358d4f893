"""The pre-run gate: cheap static checks that catch an edit which cannot run, before a run is spent on it.

Each rule (one module each, listed in `RULES`) compares the edited file with the version before the
edit where it can, and reports only what the edit introduced, so old code that has always run is
never blamed. A blocking finding means "do not run this"; a warning is passed on to the LLM but does
not stop the run. To add a rule: write `check(source) -> list[Finding]` in a module here, wrap it in
a `Rule`, and add it to `RULES`.
"""

from __future__ import annotations

from pathlib import Path

from agent import prompts
from agent.checks import attributes, classes, contract, core, duplicates, flakes, imports, placeholders, shrunk
from agent.checks.core import Finding, Rule, Source, make_source, parse, syntax_finding
from agent.checks.placeholders import is_placeholder_comment

RULES: tuple[Rule, ...] = (
    flakes.RULE,
    placeholders.PLACEHOLDERS,
    placeholders.EMPTIED,
    duplicates.RULE,
    attributes.RULE,
    attributes.ORDER_RULE,
    attributes.THROUGH_RULE,
    shrunk.RULE,
    imports.RULE,
    contract.RULE,
)

__all__ = ["Finding", "RULES", "Rule", "Source", "check_command", "check_source", "clear_caches",
           "format_findings", "is_placeholder_comment"]


def check_source(new: str, old: str | None = None, *, path: str = "experiment.py",
                 python: str | None = None, search_path: str | Path | None = None,
                 keep_fields: tuple[str, ...] = (), rules: tuple[Rule, ...] = RULES) -> list[Finding]:
    """Every finding for `new`; with `old`, only what changed since `old` is held against the edit.

    `python` is the interpreter of the run (None: this one); `search_path` is the file's folder, whose
    modules (e.g. `harness`) the run can import; `keep_fields` the `Config` fields the agent sets.
    """
    try:
        tree = parse(new)
        compile(tree, path, "exec", dont_inherit=True)  # symbol-table errors ast.parse lets through
    except (SyntaxError, ValueError) as err:  # ValueError: a NUL byte in the source
        return [syntax_finding(err, path)]
    src = make_source(path, new, tree, old, python=python, search_path=search_path, keep_fields=keep_fields)
    findings = [f for rule in rules for f in rule.check(src)]
    return sorted(findings, key=lambda f: (f.line, f.code))


def format_findings(findings: list[Finding]) -> str:
    """One `file:line: what — why` line per finding, warnings marked; for people and for the LLM."""
    return "\n".join(prompts.FINDING.format(path=f.path, line=f.line, message=f.message, why=f.why,
                                             warning="" if f.blocking else prompts.FINDING_WARNING)
                     for f in findings)


def clear_caches() -> None:
    """Forget parsed files (benchmarks measure a file seen for the first time); installed base
    classes stay resolved, as they do for the life of a process."""
    for cached in (core.parse, core.nodes, flakes.fatal_flakes, classes.class_facts,
                   attributes.early_reads, attributes.through_reads):
        cached.cache_clear()


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
