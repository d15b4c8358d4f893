"""`show`: one attempt in full: what the LLM said, the code diff, the outcome."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agent import history
from agent.attempt import WITH_RESULTS
from agent.history import Attempt
from agent.review.rows import (DIFF_EXCLUDES, EXTRA_METRICS, METRICS, STATUS_STYLE, Row, _cost, _duration,
                               collect_rows, metric_cell, seed_count)
from agent.ui import print_markdown, print_text, print_unclipped

# What `show` prints is bounded: a run can print a multi-megabyte line, a reply can be huge.
SHOW_LINE_CHARS = 400      # a longer line is cut, saying how much was left out
SHOW_BLOCK_CHARS = 20000   # a longer text (a reply, the diff, a traceback) keeps its start and end


@dataclass
class AttemptDetail:
    attempt: Attempt
    previous: Attempt | None
    body: str
    said: list[str]             # what the LLM replied in this attempt
    diff: str                   # code diff against the previous attempt
    traceback: str | None
    log_tail: str | None
    row: Row | None


def attempt_detail(workspace: Path, spec: str) -> AttemptDetail:
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    a = history.find_attempt(workspace, spec, attempts)
    prev = history.previous_attempt(attempts, a)
    said = new_assistant_messages(repo, prev.sha if prev else None, a.sha)
    if prev is not None:
        diff = repo.git.diff("--no-ext-diff", "--no-textconv", prev.sha, a.sha, "--", ".", *DIFF_EXCLUDES)
    else:
        diff = ""
    log_text = history.file_at(repo, a.sha, f"run_{a.run}/log.txt")
    traceback = log_tail = None
    if a.status not in WITH_RESULTS and log_text:
        from agent import failures
        tail = log_text[-2 * SHOW_BLOCK_CHARS:]  # a traceback is at the end; never parse megabytes
        traceback = failures.parse_failure(tail)[0]
        if traceback is None:
            log_tail = "\n".join(tail.rstrip().splitlines()[-20:])
    rows, _ = collect_rows(workspace)
    row = next((r for r in rows if r.attempt.sha == a.sha), None)
    body = _message_body(repo.commit(a.sha).message)
    return AttemptDetail(a, prev, body, said, diff, traceback, log_tail, row)


def new_assistant_messages(repo, before_sha: str | None, sha: str) -> list[str]:
    """The assistant messages the transcript gained between two commits."""
    now = _transcript_messages(repo, sha)
    before = _transcript_messages(repo, before_sha) if before_sha else []
    if now[:len(before)] == before:
        added = now[len(before):]
    else:  # the transcript was rewritten (should not happen): show its last reply
        added = [m for m in now if m.get("role") == "assistant"][-1:]
    return [m.get("content", "") for m in added if m.get("role") == "assistant"]


def _transcript_messages(repo, sha: str) -> list[dict]:
    text = history.file_at(repo, sha, "transcript.json")
    if not text:
        return []
    try:
        messages = json.loads(text).get("messages", [])
    except (ValueError, AttributeError):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _message_body(message: str) -> str:
    """The commit message without its subject line and trailer block."""
    paragraphs = message.strip().split("\n\n")[1:]
    if paragraphs and all(re.match(r"^[A-Za-z0-9-]+: ", ln) for ln in paragraphs[-1].splitlines()):
        paragraphs = paragraphs[:-1]
    return "\n\n".join(paragraphs).strip()


def bound_text(text: str, line_chars: int = SHOW_LINE_CHARS, block_chars: int = SHOW_BLOCK_CHARS) -> str:
    """`text` cut to print in a blink: long lines shortened, a long text kept at both ends."""
    if len(text) > block_chars:
        head = block_chars // 4
        text = (f"{text[:head]}\n[... {len(text) - block_chars:,} characters left out ...]\n"
                f"{text[-(block_chars - head):]}")
    lines = []
    for line in text.split("\n"):
        if len(line) > line_chars:
            line = f"{line[:line_chars]} [... {len(line) - line_chars:,} more characters]"
        lines.append(line)
    return "\n".join(lines)


def show(workspace: Path, spec: str, *, console: Console) -> int:
    d = attempt_detail(workspace, spec)
    a = d.attempt
    facts = [(f"run {a.run} attempt {a.attempt}", "bold"), (a.status, STATUS_STYLE.get(a.status, "white")),
             f"commit {a.short_sha}", a.date.strftime("%Y-%m-%d %H:%M")]
    facts += [x for x in (a.model and f"model {a.model}", a.profile and f"profile {a.profile}",
                          a.duration is not None and f"ran {_duration(a.duration)}",
                          a.cost is not None and _cost(a.cost),
                          a.tokens is not None and f"{a.tokens} tokens") if x]
    print_text(console, Text(" · ").join(Text(*f) if isinstance(f, tuple) else Text(f) for f in facts))
    print_text(console, Text(a.subject, style="bold"))
    if d.body:
        print_text(console, bound_text(d.body))

    console.rule("what the LLM said")
    if d.said:
        for text in d.said:
            print_markdown(console, bound_text(text, line_chars=4 * SHOW_LINE_CHARS))
    else:
        console.print("(no reply in this commit: the baseline, or a commit made without the LLM)")

    against = f"run {d.previous.run} attempt {d.previous.attempt}" if d.previous else "nothing"
    console.rule(f"code diff against {against}")
    if d.diff.strip():
        _code(console, bound_text(d.diff), "diff")
    else:
        console.print("(no change to the code)" if d.previous else "(the first commit: no diff)")

    console.rule("outcome")
    if d.row and d.row.metrics:
        print_unclipped(console, metrics_table(d.row))
    elif a.status in WITH_RESULTS:
        console.print(f"no readable run_{a.run}/final_info.json in this commit")
    if d.traceback:
        _code(console, bound_text(d.traceback), "pytb")
    elif d.log_tail:
        console.print(f"last lines of run_{a.run}/log.txt:")
        print_text(console, bound_text(d.log_tail))
    if a.error:
        print_text(console, Text(f"error: {a.error}", style="red"))
    return 0


def _code(console: Console, text: str, lexer: str) -> None:
    """Highlighted on a terminal; off one, the plain text, each line whole (grep finds it)."""
    if console.is_terminal:
        console.print(Syntax(text, lexer, word_wrap=True))
    else:
        print_text(console, text)


def metrics_table(row: Row) -> Table:
    """The attempt's metrics (those it has: F1 and MCC only in a synthetic world), per SAE."""
    keys = [k for k in [k for k, _ in METRICS] + list(EXTRA_METRICS)
            if any(m.get(k) is not None for m in row.metrics.values())]
    n = seed_count(row) if row.attempt.run == 0 else 0
    table = Table(caption=f"compared metrics: the mean ± sd of the baseline's {n} seeds, what every change is "
                  "against" if n > 1 else None, caption_justify="left")
    table.add_column("SAE")
    for key in keys:
        table.add_column(key, justify="right")
    for sae in sorted(row.metrics):
        table.add_row(Text(sae), *[metric_cell(row, sae, key) or "—" for key in keys])
    return table
