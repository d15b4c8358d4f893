"""Rules: placeholder code that stands for lines the edit dropped, and bodies emptied to `pass`."""

from __future__ import annotations

import io
import re
import tokenize

from agent.checks.core import (Finding, Rule, Source, body_without_docstring, is_ellipsis, is_stub,
                               kept_functions, nodes, statement_count)

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


def _candidate_comment_lines(src: Source) -> set[int]:
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


def placeholders(src: Source) -> list[Finding]:
    findings = []
    candidates = _candidate_comment_lines(src)
    for line, comment in _comments(src.text) if candidates else ():
        if line in candidates and is_placeholder_comment(comment):
            findings.append(src.finding(
                line, "placeholder", f"placeholder comment `{comment.strip()}`",
                "the code it stands for is not in the file any more: a REPLACE section replaces the "
                "whole SEARCH text, so write every line you keep out in full"))
    for node in nodes(src.text):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or len(body_without_docstring(body)) < 2:
            continue
        for stmt in body:
            if is_ellipsis(stmt) and src.is_added(stmt.lineno):
                findings.append(src.finding(
                    stmt.lineno, "placeholder", "a bare `...` line among real statements",
                    "`...` here stands for elided code, which is not in the file; write it out"))
    return findings


def emptied_bodies(src: Source) -> list[Finding]:
    """A function that had real code before the edit and now holds only `pass` or `...`."""
    findings = []
    for name, fn, before in kept_functions(src):
        if is_stub(fn) and not is_stub(before):
            findings.append(src.finding(
                fn.lineno, "emptied-body", f"{name} now has an empty body (was "
                f"{statement_count(before)} statements)",
                "the edit dropped its code; write the full function, including the unchanged lines"))
    return findings


PLACEHOLDERS = Rule("placeholders", ("placeholder",), placeholders,
                    "comments such as `# Existing init code...` and bare `...` lines the edit wrote")
EMPTIED = Rule("emptied-bodies", ("emptied-body",), emptied_bodies,
               "a function that had code and now holds only `pass` or `...`")
