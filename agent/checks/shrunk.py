"""Rule (a warning): a function the edit kept lost most of its statements."""

from __future__ import annotations

from agent.checks.core import Finding, Rule, Source, kept_functions, statement_count

# A warning, not a block: extracting helpers shrinks a function legitimately, and the ways a lost body
# breaks a run (placeholders, dropped self.X assignments, duplicate defs) are blocked by their own rules.
SHRINK_MIN_STATEMENTS = 5
SHRINK_KEEP = 0.4


def shrunk_functions(src: Source) -> list[Finding]:
    findings = []
    for name, fn, before in kept_functions(src):
        was, now = statement_count(before), statement_count(fn)
        if was >= SHRINK_MIN_STATEMENTS and now <= SHRINK_KEEP * was:
            findings.append(src.finding(
                fn.lineno, "shrunk-function", f"{name} went from {was} statements to {now}",
                "if the edit meant to keep the rest of it, the code is gone: write the whole function",
                blocking=False))
    return findings


RULE = Rule("shrunk-functions", ("shrunk-function",), shrunk_functions,
            "a kept function that lost most of its statements (warning)")
