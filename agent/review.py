"""Reading a workspace's history back: `log`, `show`, `replay`, `report`.

Everything comes from git (commit trailers, and files as they were at each commit), never from a
side database, so these commands work on any clone of a workspace. None of them writes into the
workspace: replays go to `<workspace>.replays/` and reports to `<workspace>.report.html` beside it.

Each `*_command(args, console)` is what the CLI calls; the keyword functions under them
(`log`, `show`, `replay`, `report`) are the same commands for Python callers and tests.
Exit status: 0 done (a replay that reproduced), 1 a replay that did not reproduce, 2 bad input
(raised as HistoryError, which the CLI prints).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agent import history
from agent.attempt import RAN, WITH_RESULTS, Status
from agent.history import Attempt, HistoryError
from agent.ui import message, print_unclipped

# Headline metrics: (key in results.headline(), column title). Higher is better for all but L0
# and frac_dead, where the sign of the change is left for the reader to judge.
METRICS = (("sae_top_1_test_accuracy", "top-1 acc"), ("sae_test_accuracy", "test acc"),
           ("l0", "L0"), ("explained_variance", "expl. var"))  # (key, column title)
EXTRA_METRICS = ("frac_dead", "training_steps")

# How close a replayed success must come to the recorded metrics. Accuracies and the other
# fractions are compared in absolute terms (`--tolerance`, default 0.02); L0 relative to its
# recorded value; the number of training steps exactly.
DEFAULT_TOLERANCE = 0.02
L0_RELATIVE_TOLERANCE = 0.05

# What `show` leaves out of the code diff: run outputs and the bookkeeping the loop writes.
DIFF_EXCLUDES = (":(exclude)run_*", ":(exclude)transcript.json", ":(exclude)transcript.md",
                 ":(exclude).agent", ":(exclude)agent.log", ":(exclude)packages.json")
# How each status looks: its rich style in `log` and `show`, its colour in the HTML report (a
# test fails for a status missing here).
STATUS_STYLE = {Status.SUCCESS: "green", Status.BASELINE: "cyan", Status.FAILED: "red",
                Status.UNTRAINED: "red", Status.GATE_FAILED: "yellow", Status.EDIT_FAILED: "yellow",
                Status.NO_EDITS: "yellow", Status.INTERRUPTED: "magenta", Status.NOTES: "blue",
                Status.NOTES_MISSING: "blue", Status.UNKNOWN: "white"}
STATUS_CSS = {Status.SUCCESS: "#080", Status.BASELINE: "#058", Status.FAILED: "#b00",
              Status.UNTRAINED: "#b00", Status.GATE_FAILED: "#a60", Status.EDIT_FAILED: "#a60",
              Status.NO_EDITS: "#a60", Status.INTERRUPTED: "#a0a", Status.NOTES: "#00a",
              Status.NOTES_MISSING: "#00a", Status.UNKNOWN: "#666"}
PLOT_TIMEOUT = 300
# What `show` prints is bounded: a run can print a multi-megabyte line, a reply can be huge.
SHOW_LINE_CHARS = 400      # a longer line is cut, saying how much was left out
SHOW_BLOCK_CHARS = 20000   # a longer text (a reply, the diff, a traceback) keeps its start and end
UNBOUNDED = 1_000_000  # the width `log` lays its table out for when the output is not a terminal


# -- rows: one attempt with its metrics ---------------------------------------------------

@dataclass
class Row:
    attempt: Attempt
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # SAE key → metric
    delta: dict[str, dict[str, float | None]] = field(default_factory=dict)    # against run 0
    intervals: dict = field(default_factory=dict)   # run_i/intervals.json: intervals and verdicts

    def to_json(self) -> dict:
        a = self.attempt
        return {"run": a.run, "attempt": a.attempt, "status": a.status, "commit": a.sha,
                "date": a.date.isoformat(), "subject": a.subject, "duration_s": a.duration,
                "cost_usd": a.cost, "tokens": a.tokens, "model": a.model, "profile": a.profile,
                "error": a.error, "metrics": self.metrics, "delta_vs_run_0": self.delta,
                "intervals": self.intervals}

    def change(self, sae: str, key: str) -> dict | None:
        """The recorded change against the baseline's seeds, with its interval and verdict."""
        return (self.intervals.get(sae) or {}).get("vs_baseline", {}).get(key)


def final_info_at(repo, attempt: Attempt) -> dict | None:
    """`run_<run>/final_info.json` as committed with this attempt, or None."""
    text = history.file_at(repo, attempt.sha, f"run_{attempt.run}/final_info.json")
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def headline_of(final_info: dict | None) -> dict[str, dict]:
    """SAE key → headline metrics, through agent.results (empty when there is nothing usable)."""
    if not final_info:
        return {}
    from agent import results
    try:
        return results.headline(final_info) or {}
    except Exception:  # a malformed final_info.json is shown as "no metrics", not a crash
        return {}


def collect_rows(workspace: Path) -> tuple[list[Row], Row | None]:
    """Every attempt with its metrics and their change against the baseline (run 0)."""
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    rows = []
    for a in attempts:
        metrics = headline_of(final_info_at(repo, a)) if a.status in WITH_RESULTS else {}
        rows.append(Row(a, metrics, intervals=_intervals_at(repo, a) if metrics else {}))
    baseline = next((r for r in reversed(rows) if r.attempt.run == 0 and r.metrics), None)
    for r in rows:
        if baseline is not None and r.metrics:
            r.delta = _deltas(r.metrics, baseline.metrics)
    return rows, baseline


def _intervals_at(repo, attempt: Attempt) -> dict:
    text = history.file_at(repo, attempt.sha, f"run_{attempt.run}/intervals.json")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _deltas(current: dict, baseline: dict) -> dict:
    out = {}
    for sae, values in current.items():
        base = baseline.get(sae)
        if base is None and len(baseline) == 1 and len(current) == 1:
            base = next(iter(baseline.values()))  # one SAE on each side: compare them
        if base is None:
            continue
        out[sae] = {k: (v - base[k] if v is not None and base.get(k) is not None else None)
                    for k, v in values.items()}
    return out


# -- log ----------------------------------------------------------------------------------

def log_command(args, console: Console) -> int:
    return log(Path(args.workspace), as_json=args.json, console=console)


def log(workspace: Path, *, as_json: bool = False, console: Console) -> int:
    rows, baseline = collect_rows(workspace)
    if as_json:
        data = {"workspace": str(workspace),
                "baseline": baseline.attempt.label if baseline else None,
                "total_cost_usd": _total_cost(rows), "total_tokens": _total_tokens(rows),
                "attempts": [r.to_json() for r in rows]}
        console.file.write(json.dumps(data, indent=2) + "\n")
        return 0
    # Off a terminal (a pipe, a file) nothing is cropped: the error column takes what it needs.
    width = console.width if console.is_terminal else UNBOUNDED
    table, errors = log_table(rows, baseline, width=width)
    console.print(Text(str(workspace), style="bold"), soft_wrap=True)
    print_unclipped(console, table)
    for line in errors:
        console.print(Text(line, style="red"), overflow="ellipsis", no_wrap=True)
    console.print(Text(summary_line(rows)))
    return 0


def log_table(rows: list[Row], baseline: Row | None, title: str = "",
              width: int = 160) -> tuple[Table, list[str]]:
    """One row per attempt; every column keeps its content's width and the error gets what is
    left. On a terminal too narrow for a useful error column, the errors come back as lines to
    print under the table instead."""
    many_saes = len({sae for r in rows for sae in r.metrics}) > 1
    # The commit right after the status: on a narrow terminal rich crops the rightmost columns.
    headers = ["run", "att", "status", "commit"] + (["SAE"] if many_saes else []) + \
        [name for _, name in METRICS] + ["time", "cost"]
    body = []
    for r in rows:
        a = r.attempt
        saes = sorted(r.metrics) or [""]
        cells = [str(a.run), str(a.attempt), a.status, a.short_sha]
        if many_saes:
            cells.append("\n".join(_short_sae(s) for s in saes))  # cells become Text: no markup
        cells += ["\n".join(metric_cell(r, sae, key) for sae in saes) for key, _ in METRICS]
        cells += [_duration(a.duration), _cost(a.cost)]
        body.append((cells, _first_line(a.error)))
    widths = [max([len(h)] + [len(ln) for cells, _ in body for ln in cells[i].splitlines()])
              for i, h in enumerate(headers)]
    caption = (f"metrics: value and change against the baseline (commit {baseline.attempt.short_sha}) "
               "± its 95% interval; ▲/▼ better/worse, no mark: no detectable change"
               if baseline else None)
    table = Table(title=title or None, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for i, (h, w) in enumerate(zip(headers, widths)):
        right = i < 2 or h in [name for _, name in METRICS] + ["time", "cost"]
        table.add_column(h, justify="right" if right else "left", no_wrap=True, min_width=w)
    left = width - sum(widths) - 2 * len(headers) - 1
    inline = left >= 24
    if inline:
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=left)
    for r, (cells, error) in zip(rows, body):
        texts = [Text(c, style=STATUS_STYLE.get(a.status, "") if i == 2 else "") for i, c in enumerate(cells)]
        table.add_row(*texts, *([Text(error)] if inline else []))
    below = [] if inline else [f"{r.attempt.label}: {error}" for r, (_, error) in zip(rows, body)
                               if error]
    return table, below


def metric_cell(row: Row, sae: str, key: str) -> str:
    value = row.metrics.get(sae, {}).get(key)
    if value is None:
        return "—" if row.metrics else ""
    text = _fmt(key, value)
    change = row.change(sae, key)
    if change and row.attempt.run != 0:   # the change against the seeds' mean, its interval, its verdict
        mark = {"better": " ▲", "worse": " ▼"}.get(change.get("verdict"), "")
        return text + f" {_fmt(key, change['change'], signed=True)}±{_fmt(key, change['half_width'])}{mark}"
    d = row.delta.get(sae, {}).get(key)
    if d is not None and row.attempt.run != 0:
        text += f" {_fmt(key, d, signed=True)}"
    return text


def _fmt(key: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if key == "training_steps":
        return f"{value:{sign}.0f}"
    if key == "l0":
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.3f}"


def _short_sae(key: str) -> str:
    return key.rsplit("/", 1)[-1] if key else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _cost(cost: float | None) -> str:
    return "" if cost is None else f"${cost:.4f}"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _total_cost(rows: list[Row]) -> float:
    return round(sum(r.attempt.cost or 0.0 for r in rows), 6)


def _total_tokens(rows: list[Row]) -> int:
    return sum(r.attempt.tokens or 0 for r in rows)


def summary_line(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.attempt.status] = counts.get(r.attempt.status, 0) + 1
    runs = len({r.attempt.run for r in rows if r.attempt.run > 0})
    parts = [f"{len(rows)} attempts over {runs} run(s) after the baseline"]
    parts.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    parts.append(f"cost ${_total_cost(rows):.4f}, {_total_tokens(rows)} tokens")
    return " · ".join(parts)


# -- show ---------------------------------------------------------------------------------

def show_command(args, console: Console) -> int:
    return show(Path(args.workspace), args.run, console=console)


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
        from agent import runner
        tail = log_text[-2 * SHOW_BLOCK_CHARS:]  # a traceback is at the end; never parse megabytes
        traceback = runner.parse_failure(tail)[0]
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
    console.print(Text(" · ").join(Text(*f) if isinstance(f, tuple) else Text(f) for f in facts))
    console.print(Text(a.subject, style="bold"))
    if d.body:
        console.print(Text(bound_text(d.body)))

    console.rule("what the LLM said")
    if d.said:
        for text in d.said:
            console.print(Markdown(bound_text(text, line_chars=4 * SHOW_LINE_CHARS)))
    else:
        console.print("(no reply in this commit: the baseline, or a commit made without the LLM)")

    against = f"run {d.previous.run} attempt {d.previous.attempt}" if d.previous else "nothing"
    console.rule(f"code diff against {against}")
    if d.diff.strip():
        console.print(_code(console, bound_text(d.diff), "diff"))
    else:
        console.print("(no change to the code)" if d.previous else "(the first commit: no diff)")

    console.rule("outcome")
    if d.row and d.row.metrics:
        console.print(metrics_table(d.row))
    elif a.status in WITH_RESULTS:
        console.print(f"no readable run_{a.run}/final_info.json in this commit")
    if d.traceback:
        console.print(_code(console, bound_text(d.traceback), "pytb"))
    elif d.log_tail:
        console.print(f"last lines of run_{a.run}/log.txt:")
        console.print(Text(bound_text(d.log_tail)))
    if a.error:
        console.print(Text(f"error: {a.error}", style="red"))
    return 0


def _code(console: Console, text: str, lexer: str):
    """Highlighted on a terminal; off one, the plain text, each line whole (grep finds it)."""
    return Syntax(text, lexer, word_wrap=True) if console.is_terminal else Text(text)


def metrics_table(row: Row) -> Table:
    table = Table()
    table.add_column("SAE")
    for key in [k for k, _ in METRICS] + list(EXTRA_METRICS):
        table.add_column(key, justify="right")
    for sae in sorted(row.metrics):
        table.add_row(Text(sae), *[metric_cell(row, sae, key) or "—"
                             for key in [k for k, _ in METRICS] + list(EXTRA_METRICS)])
    return table


# -- replay -------------------------------------------------------------------------------

@dataclass
class ReplayVerdict:
    attempt: str
    commit: str
    reproduced: bool
    summary: str
    replay_dir: str
    profile: str | None
    recorded_status: str
    replay_status: str
    recorded_signature: str | None = None  # the comparison key (digits masked)
    replay_signature: str | None = None
    recorded_error: str | None = None      # the real error lines, as printed

    replay_error: str | None = None
    metric_checks: list[dict] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    duration_s: float | None = None
    package_changes: str | None = None  # recorded → current versions, where packages.json differs


def replay_command(args, console: Console) -> int:
    return replay(Path(args.workspace), args.run, console=console,
                  timeout=getattr(args, "timeout", None),
                  tolerance=getattr(args, "tolerance", None) or DEFAULT_TOLERANCE,
                  box=getattr(args, "sandbox", None))


def replay(workspace: Path, spec: str, *, console: Console, timeout: float | None = None,
           tolerance: float = DEFAULT_TOLERANCE, replays_dir: Path | None = None,
           on_line=None, box: str | None = None) -> int:
    """Re-run one attempt from its commit, outside the workspace, and compare with the record.

    The commit's tree is extracted with `git archive` into
    `<workspace>.replays/run_<R>.<A>_<timestamp>/` (beside the workspace; its .git and files are
    only read), the recorded `run_<R>/` is moved to `run_<R>.recorded/` there, and the run is
    repeated as the loop ran it: the template's command, the recorded profile (SAE_PROFILE), the
    template's allowed variables, a smoke run first when the template asks for one.
    """
    workspace = Path(workspace)
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    a = history.find_attempt(workspace, spec, attempts)
    if a.status not in RAN:
        raise HistoryError(f"run {a.run} attempt {a.attempt} never ran (status {a.status}): "
                           "nothing to replay. Pick one that ran: "
                           + ", ".join(x.label for x in attempts if x.status in RAN))
    recorded_log = history.file_at(repo, a.sha, f"run_{a.run}/log.txt")
    recorded_info = final_info_at(repo, a)
    out_dir = f"run_{a.run}"

    parent = Path(replays_dir) if replays_dir else workspace.parent / f"{workspace.name}.replays"
    dest = parent / f"{out_dir}.{a.attempt}_{time.strftime('%Y%m%d_%H%M%S')}"
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{out_dir}.{a.attempt}_{time.strftime('%Y%m%d_%H%M%S')}_{n}")
    skipped = extract_commit(repo, a.sha, dest)
    if skipped:
        console.print(Text(f"not extracted (links or special files): {', '.join(skipped[:10])}",
                           style="yellow"), soft_wrap=True)
    if (dest / out_dir).exists():
        (dest / out_dir).rename(dest / f"{out_dir}.recorded")

    # The settings are the workspace's own, from its baseline commit: never a template.json or
    # profile.json that a run may have rewritten in the commit being replayed.
    root = repo.git.rev_list("--max-parents=0", a.sha).split()[-1]
    profile = a.profile if a.profile not in (None, "None") else _profile_at(repo, root)
    _command, _env_allow, smoke = _run_settings(repo, root, dest, profile)
    if timeout is None:
        timeout = max(600.0, 3 * (a.duration or 1200.0))
    console.print(Text(f"replaying run {a.run} attempt {a.attempt} (commit {a.short_sha}, recorded "
                       f"{a.status}) in {dest}\n  profile {profile or '(template default)'}, "
                       f"timeout {timeout:g}s{', smoke run first' if smoke else ''}"), soft_wrap=True)
    package_changes = _package_changes(repo, a.sha)
    if package_changes:
        console.print(message(("the environment differs from the recorded run's:", "yellow"),
                              f" {package_changes}"), soft_wrap=True)

    started = time.monotonic()
    result = _replay_run(repo, a.sha, dest, out_dir, profile, smoke, timeout, on_line, box)
    seconds = time.monotonic() - started

    verdict = ReplayVerdict(attempt=a.label, commit=a.sha, reproduced=False, summary="",
                            replay_dir=str(dest), profile=profile, recorded_status=a.status,
                            replay_status=result.status, replay_signature=result.signature,
                            replay_error=result.error, duration_s=round(seconds, 1),
                            package_changes=package_changes)
    if a.status == Status.FAILED:
        _judge_failure(verdict, a, recorded_log, result)
    elif a.status in WITH_RESULTS:
        _judge_success(verdict, recorded_info, dest / out_dir, result, tolerance)
    else:  # interrupted: there is no recorded outcome to compare with
        verdict.reproduced = True
        verdict.summary = (f"the recorded run was interrupted, so there is nothing to compare; "
                           f"the replay ended {result.status}"
                           + (f": {result.error}" if result.error else ""))
    (dest / "replay.json").write_text(json.dumps(asdict(verdict), indent=2) + "\n")
    _print_verdict(console, verdict)
    return 0 if verdict.reproduced else 1


def _replay_run(repo, sha: str, dest: Path, out_dir: str, profile, smoke: bool, timeout: float, on_line,
                box: str | None):
    """The attempt run again the way the loop runs it: the same box, the settings and pristine
    harness of the workspace's first commit, the profile's limits, training then evaluation."""
    from agent import execution
    from agent.template import parse_template
    root = repo.git.rev_list("--max-parents=0", sha).split()[-1]
    template = parse_template(dest, history.file_at(repo, root, "template.json") or "{}")
    executor = execution.Executor(dest, template, profile, timeout=timeout, on_line=on_line, box=box,
                                  protected=execution.protected_from_commit(repo, root, template.protected))
    step = executor.run(out_dir, smoke=True) if smoke else None
    if step is None or step.ok:
        step = executor.run(out_dir)
    result = step.result
    if step.problem:   # e.g. a results file the run wrote itself: a failure, as in the loop
        result.status, result.error = "failed", step.problem
    return result


def _package_changes(repo, sha: str) -> str | None:
    """The packages whose versions differ from the commit's packages.json (None: same, or none kept)."""
    from agent import environment
    recorded = environment.parse_packages(history.file_at(repo, sha, environment.PACKAGES_FILE))
    if recorded is None:
        return None
    return environment.describe(environment.differences(recorded)) or None


def extract_commit(repo, sha: str, dest: Path) -> list[str]:
    """Write the tree of `sha` into `dest` via `git archive`: the workspace is only read.

    Links are never written (a run may have left one pointing outside, e.g. `plot.py` →
    `/etc/passwd`), nor anything else tarfile's data filter refuses; their names are returned.
    """
    buffer = io.BytesIO()
    repo.archive(buffer, treeish=sha, format="tar")
    buffer.seek(0)
    dest.mkdir(parents=True)
    skipped: list[str] = []

    def plain_files_only(member: tarfile.TarInfo, path: str):
        if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
            skipped.append(member.name)
            return None
        if not hasattr(tarfile, "data_filter"):  # Python < 3.10.12: no absolute or .. paths here
            return member
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError:
            skipped.append(member.name)
            return None

    with tarfile.open(fileobj=buffer) as tar:
        for member in tar.getmembers():
            kept = plain_files_only(member, str(dest))
            if kept is not None:
                tar.extract(kept, dest, set_attrs=kept.isfile(), **_no_filter())
    return skipped


def _no_filter() -> dict:
    # Members are filtered above; tell tarfile so (3.12+ warns, 3.14 defaults to refusing).
    return {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def _profile_at(repo, sha: str) -> str | None:
    try:
        return json.loads(history.file_at(repo, sha, "profile.json") or "").get("profile")
    except (ValueError, AttributeError):
        return None


def _run_settings(repo, root_sha: str, dest: Path, profile: str | None):
    """(command, allowed env names, smoke first?) from the template.json of the baseline commit."""
    from agent.template import TemplateError, parse_template
    spec = history.file_at(repo, root_sha, "template.json")
    if spec is None:
        return None, (), False
    try:
        t = parse_template(dest, spec)
    except TemplateError:
        return None, (), False
    smoke = t.smoke_profiles is None or profile in t.smoke_profiles
    return list(t.command), t.allowed_env(profile), smoke and (dest / "experiment.py").exists()


def recorded_signature(log_text: str | None, error: str | None) -> str | None:
    """The failure signature of the recorded run: from its log, else from its Error trailer."""
    from agent import runner
    if log_text:
        signature = runner.parse_failure(log_text)[2]
        if signature:
            return signature
    if not error:
        return None
    if error.startswith("Timeout"):
        return "Timeout"
    m = re.match(r"Killed by (SIG\w+)", error)
    if m:
        return f"Signal:{m.group(1)}"
    m = re.match(r"Exit code (-?\d+)", error)
    if m:
        return f"ExitCode:{m.group(1)}"
    return None


def _judge_failure(v: ReplayVerdict, a: Attempt, recorded_log: str | None, result) -> None:
    v.recorded_signature = recorded_signature(recorded_log, a.error)
    v.recorded_error = _recorded_error_line(recorded_log) or a.error
    if result.status == "ok":
        v.summary = "not reproduced: the recorded run failed, the replay succeeded"
    elif v.recorded_signature is None:
        v.summary = ("cannot tell: the recorded run left no traceback or exit signature to "
                     f"compare; the replay failed with {result.error}")
    elif result.signature == v.recorded_signature:
        v.reproduced = True
        where = result.signature.split(" | ")[0]
        v.summary = f"reproduced: same exception and frame ({where}): {result.error or result.signature}"
    else:
        v.summary = (f"not reproduced: recorded {v.recorded_error or v.recorded_signature}, "
                     f"replay {result.error or result.signature}")


def _recorded_error_line(log_text: str | None) -> str | None:
    """The recorded run's own error line (the signature masks its digits)."""
    from agent import runner
    if not log_text:
        return None
    return runner.parse_failure(log_text[-2 * SHOW_BLOCK_CHARS:])[1]


def _judge_success(v: ReplayVerdict, recorded_info: dict | None, run_dir: Path, result,
                   tolerance: float) -> None:
    v.tolerance = {"accuracies, explained_variance, frac_dead": f"±{tolerance:g} absolute",
                   "l0": f"±{L0_RELATIVE_TOLERANCE:.0%} relative", "training_steps": "exact"}
    if result.status != "ok":
        v.summary = f"not reproduced: the recorded run succeeded, the replay failed with {result.error}"
        return
    recorded = headline_of(recorded_info)
    try:
        replayed = headline_of(json.loads((run_dir / "final_info.json").read_text()))
    except (OSError, ValueError):
        replayed = {}
    if not recorded:
        v.summary = "cannot tell: the commit holds no readable final_info.json to compare with"
        return
    if not replayed:
        v.summary = "not reproduced: the replay wrote no readable final_info.json"
        return
    checks = []
    for sae in sorted(set(recorded) | set(replayed)):
        for key in [k for k, _ in METRICS] + list(EXTRA_METRICS):
            want, got = recorded.get(sae, {}).get(key), replayed.get(sae, {}).get(key)
            if want is None and got is None:
                continue
            checks.append({"sae": sae, "metric": key, "recorded": want, "replay": got,
                           "ok": _within(key, want, got, tolerance)})
    v.metric_checks = checks
    bad = [c for c in checks if not c["ok"]]
    if bad:
        v.summary = (f"not reproduced: {len(bad)} of {len(checks)} metrics outside tolerance ("
                     + ", ".join(f"{c['metric']} {c['recorded']} → {c['replay']}" for c in bad[:3])
                     + ")")
    else:
        v.reproduced = True
        v.summary = f"reproduced: all {len(checks)} metrics within tolerance"


def _within(key: str, want, got, tolerance: float) -> bool:
    if want is None or got is None:
        return False
    if key == "training_steps":
        return want == got
    if key == "l0":
        return abs(got - want) <= L0_RELATIVE_TOLERANCE * max(abs(want), 1e-9)
    return abs(got - want) <= tolerance + 1e-12


def _print_verdict(console: Console, v: ReplayVerdict) -> None:
    if v.metric_checks:
        table = Table(title="recorded vs replay")
        for col in ("SAE", "metric", "recorded", "replay", ""):
            table.add_column(col)
        for c in v.metric_checks:
            table.add_row(Text(_short_sae(c["sae"])), Text(c["metric"]), _show_value(c["recorded"]),
                          _show_value(c["replay"]), "ok" if c["ok"] else Text("differs", style="red"))
        console.print(table)
        console.print(Text("tolerance: " + "; ".join(f"{k} {t}" for k, t in v.tolerance.items())))
    elif v.recorded_signature or v.replay_signature:
        console.print(Text(f"recorded: {v.recorded_error or v.recorded_signature or '—'}\nreplay:   "
                           f"{v.replay_error or v.replay_signature or v.replay_status}"), soft_wrap=True)
    style = "green" if v.reproduced else "red"
    console.print(Text(v.summary, style=f"bold {style}"), soft_wrap=True)
    console.print(Text(f"replay output kept in {v.replay_dir} (log: run_*/log.txt, verdict: replay.json)"),
                  soft_wrap=True)


def _show_value(value) -> str:
    return "—" if value is None else f"{value:.4g}"


# -- report -------------------------------------------------------------------------------

def report_command(args, console: Console) -> int:
    out = Path(args.out) if getattr(args, "out", None) else None
    return report(Path(args.workspace), console=console, out=out)


def default_report_path(workspace: Path) -> Path:
    return workspace.parent / f"{workspace.name}.report.html"


def report(workspace: Path, *, console: Console, out: Path | None = None,
           run_plot: bool = True) -> int:
    """Write a self-contained report (HTML, or markdown if `out` ends in .md) beside the workspace."""
    workspace = Path(workspace)
    repo = history.open_workspace(workspace)
    rows, baseline = collect_rows(workspace)
    head = repo.head.commit.hexsha
    idea = history.file_at(repo, head, "idea.md") or "(no idea.md in this workspace)"
    notes = history.file_at(repo, head, "notes.txt")
    final = final_split_lines(history.file_at(repo, head, "final_split.json"))
    if final:   # shown with the notes: both are written once, at the end of the idea
        notes = (notes or "").rstrip() + "\n\n" + "\n".join(final)
    plots, plot_note = collect_plots(repo, head, run_plot=run_plot)
    out = Path(out) if out else default_report_path(workspace)
    as_markdown = out.suffix.lower() in (".md", ".markdown")
    render = report_markdown if as_markdown else report_html
    text = render(workspace, rows, baseline, idea, notes, plots, plot_note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(Text(f"wrote {out} ({len(rows)} attempts, {len(plots)} plot(s)"
                       + (f"; {plot_note}" if plot_note else "") + ")"), soft_wrap=True)
    return 0


def final_split_lines(text: str | None) -> list[str]:
    """The final split's scores (never shown to the coder), one line per run."""
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return []
    if not isinstance(record, dict) or not record.get("runs"):
        return []
    lines = [f"Final split (scored once at the end, never shown to the coder; baseline: "
             f"{record.get('baseline_seeds', 1)} seed(s)):"]
    for run, saes in record["runs"].items():
        for key, metrics in saes.items():
            top1 = metrics.get("sae_top_1_test_accuracy") or {}
            vs = (metrics.get("vs_baseline") or {}).get("sae_top_1_test_accuracy") or {}
            if not top1 or not vs:
                continue
            best = " (best on the test split)" if str(record.get("best_on_test")) == str(run) else ""
            lines.append(f"- run {run}{best}: sae_top_1 {top1['value']:.3f} "
                         f"({vs['change']:+.3f} ± {vs['half_width']:.3f}, {vs['verdict']})")
    return lines if len(lines) > 1 else []


def collect_plots(repo, sha: str, *, run_plot: bool = True) -> tuple[list[tuple[str, bytes]], str]:
    """PNGs committed at `sha`; if there are none, those plot.py makes in a scratch copy."""
    tree = repo.commit(sha).tree
    committed = [(b.path, b.data_stream.read()) for b in tree.traverse()
                 if b.type == "blob" and b.mode != history.LINK_MODE and b.path.lower().endswith(".png")]
    if committed:
        return sorted(committed), ""
    if not any(b.path == "plot.py" for b in tree.traverse() if b.type == "blob"):
        return [], "no plots: no PNG committed and no plot.py"
    if not run_plot:
        return [], "no PNG committed (plot.py not run)"
    import tempfile
    from agent import runner, sandbox
    with tempfile.TemporaryDirectory(prefix="sae-agent-report-") as tmp:
        root = Path(tmp) / "tree"
        extract_commit(repo, sha, root)
        box = sandbox.Box(sandbox.choose(), root, writable=[root])   # plot.py is the LLM's code too
        result = runner.run_experiment(root, ".plot", command=["{python}", "plot.py"],
                                       timeout=PLOT_TIMEOUT, wrap=box.wrap)
        made = sorted((p.relative_to(root).as_posix(), p.read_bytes()) for p in root.rglob("*.png"))
        if result.status != "ok":
            return made, f"plot.py failed: {result.error or result.status}"
        return made, "" if made else "plot.py ran but made no PNG"


def _idea_title(idea: str) -> str:
    for line in idea.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return "SAE experiment"


def report_markdown(workspace, rows, baseline, idea, notes, plots, plot_note) -> str:
    lines = [f"# Report: {_idea_title(idea)}", "", f"Workspace `{workspace}` · {summary_line(rows)}",
             "", "## Idea", "", idea.strip(), "", "## Runs", ""]
    header = ["run", "attempt", "status"] + [name for _, name in METRICS] + \
             ["time", "cost", "commit", "error"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in _report_cells(r)) + " |")
    lines += ["", "## Plots", ""]
    for name, data in plots:
        lines += [f"### {name}", "", f"![{name}](data:image/png;base64,{base64.b64encode(data).decode()})", ""]
    if plot_note:
        lines += [f"_{plot_note}_", ""]
    lines += ["## Notes", "", (notes or "(no notes.txt)").strip(), "", "## Cost", "", _cost_text(rows), ""]
    return "\n".join(lines)


def _report_cells(r: Row) -> list[str]:
    a = r.attempt
    saes = sorted(r.metrics) or [""]
    metrics = ["<br>".join(metric_cell(r, sae, key) for sae in saes) for key, _ in METRICS]
    return [str(a.run), str(a.attempt), a.status] + metrics + \
        [_duration(a.duration), _cost(a.cost), a.short_sha, _first_line(a.error)]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cost_text(rows: list[Row]) -> str:
    models = sorted({r.attempt.model for r in rows if r.attempt.model not in (None, "template")})
    return (f"${_total_cost(rows):.4f} over {sum(1 for r in rows if r.attempt.cost is not None)} "
            f"LLM replies, {_total_tokens(rows)} tokens; model(s): {', '.join(models) or 'unknown'}")


def report_html(workspace, rows, baseline, idea, notes, plots, plot_note) -> str:
    esc = html.escape
    title = _idea_title(idea)
    header = ["run", "attempt", "status"] + [name for _, name in METRICS] + \
             ["time", "cost", "commit", "error"]
    table = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = [esc(c).replace("&lt;br&gt;", "<br>") for c in _report_cells(r)]
        cells[2] = f'<span class="{esc(r.attempt.status)}">{cells[2]}</span>'
        table.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table.append("</tbody></table>")
    figures = [f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
               f'{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
               for name, data in plots]
    if plot_note:
        figures.append(f"<p><em>{esc(plot_note)}</em></p>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}td:nth-child(3),td:last-child{text-align:left}pre{white-space:pre-wrap;"
             "background:#f6f6f6;padding:1em}img{max-width:100%}"
             + "".join(f".{status}{{color:{colour}}}" for status, colour in STATUS_CSS.items()))
    return "\n".join([
        "<!doctype html>", '<html><head><meta charset="utf-8">',
        f"<title>Report: {esc(title)}</title><style>{style}</style></head><body>",
        f"<h1>Report: {esc(title)}</h1>",
        f"<p>Workspace <code>{esc(str(workspace))}</code> · {esc(summary_line(rows))}</p>",
        "<h2>Idea</h2>", f"<pre>{esc(idea.strip())}</pre>",
        "<h2>Runs</h2>", *table,
        "<h2>Plots</h2>", *(figures or ["<p>(no plots)</p>"]),
        "<h2>Notes</h2>", f"<pre>{esc((notes or '(no notes.txt)').strip())}</pre>",
        "<h2>Cost</h2>", f"<p>{esc(_cost_text(rows))}</p>",
        "</body></html>", ""])
