"""Turn an AI-Scientist/aider chat log (`*_aider.txt`) into a workspace with a reviewable history.

An aider chat log is markdown with three kinds of lines: the user's (`#### ` prefix; AI-Scientist's
prompts and "Run failed ..." feedback), aider's own notes (`> ` prefix: token counts, "Applied
edit", litellm errors), and everything else, which is the assistant's text. The import replays the
assistant turns one by one: each turn's SEARCH/REPLACE blocks are applied (with agent.edits, as
the loop would) to the file given with `--onto`, and the result is committed with the trailers
`log`/`show`/`replay` read. The run outcome of a turn comes from the user message that follows
it: "Run N completed" → success, "Run failed with the following error" → failed (its quoted
output is kept as run_N/log.txt, so `show` finds the traceback and `replay` can compare).

We do not have the file the log's edits were written against; `--onto` supplies it (the
template's experiment.py). Blocks that do not match it are reported as aider would report them
and committed as failed outcomes; the turn is still committed.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent import edits, history
from agent.attempt import Attempt, Status
from agent.conversation import Conversation
from agent.history import HistoryError
from agent.ui import prog

MODEL = "aider-import"
SYSTEM_NOTE = ("(imported from an aider chat log: the system prompt and aider's file listings "
               "are not in the log)")
IGNORED_TEMPLATE_PARTS = {"__pycache__", ".git", ".pytest_cache"}


class AiderImportError(HistoryError):
    """The log or the options cannot make a workspace; the CLI exits with status 2."""


# -- parsing the chat log -----------------------------------------------------------------

@dataclass
class Message:
    role: str                 # "user" | "assistant" | "tool" (aider's reply to the model, echoed)
    text: str
    notes: list[str] = field(default_factory=list)   # aider's `> ` lines that followed it
    line: int = 0             # 1-based line in the log where it starts


# aider writes a multi-line tool message with `> ` on its first line only (io.append_chat_history),
# so the rest of it (the failed block it echoes, ...) looks like assistant text. These open one:
_FAILED_TO_MATCH = re.compile(r"^# \d+ SEARCH/REPLACE blocks? failed to match!")
_NOT_CONFORMING = "The LLM did not conform to the edit format."
# ... and these are the last line of the message, after which the next reply begins.
_ECHO_ENDS = (re.compile(r"^Just reply with fixed versions of the blocks? above"),
              re.compile(r"^\^\^\^ "))
_NO_MATCH_TAIL = "The SEARCH section must exactly match an existing block of lines"


def is_aider_log(text: str) -> bool:
    """aider's header, or a user line the way aider writes them (`#### ...` + markdown break)."""
    return any(raw.startswith("# aider chat started at") or
               (raw.startswith("#### ") and raw.endswith("  ")) or raw.rstrip() == "####"
               for raw in text.splitlines())


def parse_chat_log(text: str) -> list[Message]:
    """The log's messages in order: user, assistant, and aider's echoed replies to the model
    ("tool"), each with the aider notes after it."""
    messages: list[Message] = []
    kind, lines, start = None, [], 0
    echo_next = False  # the next `> ` note opens a multi-line tool message
    raws = text.splitlines()

    def flush():
        if kind in ("user", "assistant", "tool"):
            body = "\n".join(lines).strip("\n")
            if body.strip():
                messages.append(Message(kind, body, line=start))
        elif kind == "note" and messages:
            messages[-1].notes.extend(ln for ln in lines if ln.strip())

    for n, raw in enumerate(raws, start=1):
        line = raw[:-2] if raw.endswith("  ") else raw  # aider ends its lines with a markdown break
        if raw.startswith("#### ") or raw.rstrip() == "####":
            this, content = "user", line[5:]
        elif raw.startswith("> ") or raw.rstrip() == ">":
            this, content = "note", line[2:]
            if (_FAILED_TO_MATCH.match(content) or echo_next) and not content.startswith("http") \
                    and not raw.endswith("  "):
                this = "tool"  # its first line; the unprefixed lines after it belong to it
            echo_next = content.strip() == _NOT_CONFORMING or (echo_next and content.startswith("http"))
        elif kind == "tool":
            this, content = "tool", line if raw.strip() else raw
        elif raw.startswith("# aider chat started at"):
            this, content = "session", line
        elif not raw.strip() and kind == "user":
            this, content = "gap", ""  # a blank line ends a user message
        else:
            this, content = "assistant", raw
        if this != kind or this == "session" or (this == "tool" and raw.startswith("> ")):
            flush()
            kind, lines, start = this, [], n
        lines.append(content)
        if kind == "tool" and _echo_ends(raw, raws[n:]):
            flush()
            kind, lines = "echo-done", []
    flush()
    return messages


def _echo_ends(raw: str, rest: list[str]) -> bool:
    """True when `raw` is the last line of an echoed tool message."""
    text = raw.rstrip()
    if any(p.match(text) for p in _ECHO_ENDS):
        return True
    if text.startswith(_NO_MATCH_TAIL):  # last unless "# The other N blocks were applied" follows
        following = next((r for r in rest if r.strip()), "")
        return not following.startswith("# The other ")
    # Any other message ends at aider's markdown break on a line with text (indentation alone
    # can end in two spaces, as the template's blank lines do).
    return raw.endswith("  ") and bool(raw.strip())


# -- what each assistant turn did ---------------------------------------------------------

@dataclass
class Turn:
    number: int                   # 1-based among the assistant turns
    run: int
    attempt: int
    status: Status
    reply: Message
    before: list[Message]         # user messages since the previous turn
    after: list[Message]          # user messages until the next turn (the run's outcome)
    echoes: list[Message] = field(default_factory=list)   # what aider replied to the model
    outcomes: list = field(default_factory=list)
    feedback: str = ""
    files: dict[str, str] = field(default_factory=dict)   # editable files after this turn
    error: str | None = None
    run_output: str | None = None
    results: dict | None = None
    tokens: int | None = None
    cost: float | None = None
    executions: int = 0

    def counts(self) -> Counter:
        return Counter(o.status for o in self.outcomes)


_COMPLETED = re.compile(r"^Run (\d+) completed", re.M)
_FAILED = "Run failed with the following error"
_TIMED_OUT = re.compile(r"^Run timed out", re.M)
_TOKENS = re.compile(r"Tokens: ([\d.]+)(k?) sent.*?([\d.]+)(k?) received\. Cost: \$([\d.]+) message")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::.*)?$")


def plan_turns(messages: list[Message], files: dict[str, str],
               editable: tuple[str, ...]) -> list[Turn]:
    """Apply every assistant turn in order (pure: texts in, turns with outcomes out)."""
    turns: list[Turn] = []
    run, attempt = 1, 1
    current = dict(files)
    indices = [i for i, m in enumerate(messages) if m.role == "assistant"]
    # The user messages between two turns answer the earlier one (`after`); only the first turn
    # has messages of its own before it (the idea prompt).
    pending_users = [m for m in messages[:indices[0] if indices else 0] if m.role == "user"]
    for k, i in enumerate(indices):
        end = indices[k + 1] if k + 1 < len(indices) else len(messages)
        reply = messages[i]
        after = [m for m in messages[i + 1:end] if m.role == "user"]
        turn = Turn(number=k + 1, run=run, attempt=attempt, status=Status.INTERRUPTED, reply=reply,
                    before=pending_users, after=after,
                    echoes=[m for m in messages[i + 1:end] if m.role == "tool"])
        changed, turn.outcomes = edits.apply_reply(reply.text, current, editable, aider_compat=True)
        current.update(changed)
        turn.files = dict(current)
        turn.feedback = edits.feedback(turn.outcomes)
        turn.tokens, turn.cost = _usage(reply.notes)
        _judge(turn, after)
        turns.append(turn)
        pending_users = []
        if turn.status == Status.SUCCESS:
            run, attempt = turn.run + 1, 1
        elif turn.status in (Status.FAILED, Status.EDIT_FAILED, Status.NO_EDITS):
            attempt += 1  # as in the loop: every reply that did not finish its run is an attempt
    return turns


def _judge(turn: Turn, after: list[Message]) -> None:
    """Status, error and run output of a turn, from the user message(s) that answered it."""
    if not after:
        if turn.echoes:  # aider refused the edit and asked the model again at once
            turn.status, turn.error = Status.EDIT_FAILED, "aider: " + turn.echoes[0].text.splitlines()[0]
        elif not turn.outcomes:
            turn.status = Status.NO_EDITS
        else:
            turn.status, turn.error = Status.INTERRUPTED, "the log ends before this turn's code was run"
        return
    first = after[0].text
    done = _COMPLETED.search(first)
    turn.executions = sum(1 for m in after if _FAILED in m.text or _COMPLETED.search(m.text)
                          or _TIMED_OUT.search(m.text))
    if done:
        turn.status, turn.run = Status.SUCCESS, int(done.group(1))
        turn.results = _literal_dict(first)
    elif _FAILED in first:
        turn.status = Status.FAILED
        turn.run_output = first.split(_FAILED, 1)[1].lstrip(" :\n")
        turn.error = failure_line(turn.run_output)
    elif _TIMED_OUT.search(first):
        turn.status, turn.error = Status.FAILED, "Timeout: " + first.strip().splitlines()[0]
        turn.run_output = first
    elif _edits_only(turn, ("notes.txt", "plot.py")):
        turn.status = Status.NOTES
    elif not turn.outcomes:
        turn.status = Status.NO_EDITS
    else:
        turn.status = Status.INTERRUPTED
        turn.error = "the next message is not a run result: " + first.strip().splitlines()[0][:120]


def _edits_only(turn: Turn, names: tuple[str, ...]) -> bool:
    paths = {o.path for o in turn.outcomes if o.path}
    return bool(paths) and paths <= set(names)


def failure_line(output: str) -> str:
    """The exception line of the last traceback in `output`, else a note that there is none."""
    from agent import failures
    error = failures.parse_failure(output)[1]
    if error:
        return error
    for line in reversed(output.splitlines()):
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()[:300]
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    return "no traceback in the quoted output" + (f"; last line: {last[:150]}" if last else "")


def _usage(notes: list[str]) -> tuple[int | None, float | None]:
    for note in notes:
        m = _TOKENS.search(note)
        if m:
            sent = float(m.group(1)) * (1000 if m.group(2) else 1)
            received = float(m.group(3)) * (1000 if m.group(4) else 1)
            return int(round(sent + received)), float(m.group(5))
    return None, None


def _literal_dict(text: str) -> dict | None:
    """The first Python-literal dict on a line of its own (AI-Scientist prints results that way)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = ast.literal_eval(line)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    return None


def as_final_info(result: dict | None) -> dict | None:
    """An AI-Scientist result dict (one SAEBench eval, flat training fields) in our schema."""
    if not result:
        return None
    if "eval_result_metrics" not in result:
        return None
    cfg = result.get("sae_cfg_dict") or {}
    key = f"{cfg.get('model_name') or result.get('eval_config', {}).get('model_name', 'model')}/" \
          f"{cfg.get('hook_name') or 'sae'}"
    entry = dict(result)
    training = {k: result[k] for k in ("training_steps", "final_loss", "layer", "dict_size",
                                       "learning_rate", "sparsity_penalty") if k in result}
    if training and "training" not in entry:
        entry["training"] = training
    return {key: entry}


# -- writing the workspace ----------------------------------------------------------------

@dataclass
class ImportSummary:
    workspace: Path
    target: str
    turns: list[Turn]
    commits: int
    note: str | None = None   # e.g. that no edit was made


def import_log(log: Path, onto: Path, out: Path | None = None,
               name: str | None = None) -> ImportSummary:
    """Make the workspace; raise AiderImportError (nothing written) on bad input."""
    log, onto = Path(log), Path(onto)
    if not log.is_file():
        raise AiderImportError(f"{log} does not exist or is not a file")
    if not onto.is_file():
        raise AiderImportError(f"--onto {onto} does not exist or is not a file")
    text = log.read_text(encoding="utf-8", errors="replace")
    messages = parse_chat_log(text)
    if not is_aider_log(text) or not messages:
        raise AiderImportError(f"{log} is not an aider chat log: aider's logs start with '# aider chat "
                               "started at' and its user lines with '#### '")
    replies = [m for m in messages if m.role == "assistant"]
    target = name or _target_name(onto, [m.text for m in replies])
    files, template_root = _starting_files(onto, target)
    editable = tuple(dict.fromkeys((target,) + edits.DEFAULT_EDITABLE))
    turns = plan_turns(messages, {p: t for p, t in files.items() if p in editable}, editable)
    note = None if any(t.outcomes for t in turns) else _no_edit_note(messages, replies)
    out = Path(out) if out else Path.cwd() / "results" / f"imported_{_slug(log.stem)}"
    if out.exists() and any(out.iterdir()):
        raise AiderImportError(f"{out} already exists and is not empty; choose another --out")

    out.mkdir(parents=True, exist_ok=True)
    try:
        commits = _write_workspace(out, log, messages, files, template_root, turns, target, note)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a half-made workspace is worse than none
        raise
    return ImportSummary(out, target, turns, commits, note)


def _no_edit_note(messages: list[Message], replies: list[Message]) -> str:
    """Why a log that made no edit still has a history: what its replies (or its provider) did."""
    if replies:
        return (f"No edit was made: the log's {len(replies)} assistant repl"
                f"{'y holds' if len(replies) == 1 else 'ies hold'} no SEARCH/REPLACE blocks.")
    errors = [n for m in messages for n in m.notes if "Error" in n]
    said = f"; the provider answered: {_clip(errors[0], 200)}" if errors else ""
    return f"No edit was made: the log has no assistant reply{said}."


def _target_name(onto: Path, replies: list[str]) -> str:
    """The name the log's blocks use for the --onto file (its own name if they use it)."""
    named = Counter(b.path for r in replies for b in edits.find_blocks(r, aider_compat=True).blocks)
    if onto.name in named or not named:
        return onto.name
    return named.most_common(1)[0][0]


def _starting_files(onto: Path, target: str) -> tuple[dict[str, str], Path | None]:
    """The files the workspace starts with: a whole template if --onto sits in one."""
    files: dict[str, str] = {}
    root = onto.parent if (onto.parent / "template.json").is_file() else None
    if root is not None:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and not (IGNORED_TEMPLATE_PARTS & set(rel.parts)) and p.suffix != ".pyc":
                try:
                    files[rel.as_posix()] = p.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    continue  # binary template files are copied as they are, below
    files[target] = onto.read_text(encoding="utf-8")
    return files, root


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "log"


def _write_workspace(out: Path, log: Path, messages: list[Message], files: dict[str, str],
                     template_root: Path | None, turns: list[Turn], target: str,
                     note: str | None = None) -> int:
    history.init_repo(out)
    if template_root is not None:  # binary files of the template (the text ones are in `files`)
        for p in template_root.rglob("*"):
            rel = p.relative_to(template_root)
            if p.is_file() and rel.as_posix() not in files and p.suffix != ".pyc" \
                    and not (IGNORED_TEMPLATE_PARTS & set(rel.parts)):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, out / rel)
    for rel, text in files.items():
        _write(out / rel, text)
    idea = messages[0].text if messages and messages[0].role == "user" else ""
    _write(out / "idea.md", _idea_markdown(idea, log))

    conv = Conversation(SYSTEM_NOTE)
    for m in turns[0].before if turns else [m for m in messages if m.role == "user"]:
        conv.add_user(m.text)
    conv.save(out)
    baseline = as_final_info(_literal_dict(idea))
    if baseline:
        _write(out / "run_0" / "final_info.json", json.dumps(baseline, indent=2) + "\n")
    source = "the baseline results quoted in the log's first prompt" if baseline else \
        "no baseline results in the log"
    history.commit_attempt(
        out, subject=f"run 0: imported baseline — {target} as given",
        body=f"Imported from {log.name}: the file the log's edits were applied to, as given "
             f"with --onto.\nrun_0/final_info.json: {source}." + (f"\n\n{note}" if note else ""),
        trailers=Attempt(run=0, attempt=1, status=Status.BASELINE, model=MODEL,
                         extra={"Source": log.name}))
    commits = 1
    for t in turns:
        if not conv.pending_user:  # a log that opens with an assistant turn
            conv.add_user("(the log has no user message before this reply)")
        conv.add_assistant(t.reply.text)
        for m in t.echoes:  # aider sent this to the model as the next user message
            conv.add_user(m.text)
        for m in t.after:
            conv.add_user(m.text)
        conv.save(out)
        for rel, text in t.files.items():
            _write(out / rel, text)
        run_dir = out / f"run_{t.run}"
        if t.run_output is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
            _write(run_dir / "log.txt", t.run_output + "\n")
        info = as_final_info(t.results)
        if info:
            _write(run_dir / "final_info.json", json.dumps(info, indent=2) + "\n")
        history.commit_attempt(out, subject=_subject(t), body=_body(t, log),
                               trailers=_trailers(t, log))
        commits += 1
    return commits


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _idea_markdown(prompt: str, log: Path) -> str:
    m = re.search(r"implement the following idea:\s*(.+?)\.(?:\s|$)", prompt)
    title = m.group(1).strip() if m else log.stem
    return f"# {title}\n\n_Imported from the aider chat log {log.name}._\n\n{prompt.strip()}\n"


def _edit_summary(t: Turn) -> str:
    c = t.counts()
    return ", ".join(f"{c[s]} {s}" for s in edits.EditStatus if c[s]) or "no edit blocks"


def _subject(t: Turn) -> str:
    if t.status == Status.SUCCESS:
        return f"run {t.run}: success (imported, edits: {_edit_summary(t)})"
    tail = f" — {t.error}" if t.error else ""
    return f"run {t.run} attempt {t.attempt}: {t.status}{tail}"[:200]


def _trailers(t: Turn, log: Path) -> Attempt:
    return Attempt(run=t.run, attempt=t.attempt, status=t.status, model=MODEL, cost=t.cost, tokens=t.tokens,
                   error=t.error[:300] if t.error else None,
                   extra={"Edits": _edit_summary(t), "Source": f"{log.name} line {t.reply.line}"})


def _body(t: Turn, log: Path) -> str:
    lines = [f"Assistant turn {t.number} of {log.name} (line {t.reply.line}); edit blocks: "
             f"{_edit_summary(t)}."]
    for o in t.outcomes:
        lines.append(f"- {o.status}: {o.path or '?'}: {o.message.splitlines()[0] if o.message else ''}")
    said = [n for n in t.reply.notes if n.startswith(("Applied edit", "Failed to apply", "Committing"))]
    if said:
        lines.append("aider's log says: " + "; ".join(said))
    if t.executions > 1:
        errors = sorted({n for n in t.reply.notes + [n for m in t.after for n in m.notes]
                         if "Error" in n})
        lines.append(f"The log shows this code was run {t.executions} times in a row with no new "
                     "reply in between" + (f"; each coder call failed: {_clip(errors[0], 240)}"
                                           if errors else "") + ".")
    if t.feedback:
        lines += ["", "What aider would tell the model:", "", t.feedback.rstrip()]
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def print_summary(s: ImportSummary, console: Console) -> None:
    console.print(Text(f"imported {len(s.turns)} assistant turn(s) onto {s.target}"), soft_wrap=True)
    if s.turns:
        _print_turns(s, console)
    if s.note:
        console.print(Text(s.note, style="yellow"), soft_wrap=True)
    console.print(Text(f"workspace {s.workspace}: {s.commits} commits; "
                       f"review with `{prog()} log {s.workspace}`"), soft_wrap=True)


def _print_turns(s: ImportSummary, console: Console) -> None:
    rows = [(str(t.number), f"{t.run}.{t.attempt}", t.status, _edit_summary(t)) for t in s.turns]
    headers = ("turn", "run.att", "status", "edit blocks")
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for i, col in enumerate(headers):  # these keep their width; the error takes what is left
        table.add_column(col, no_wrap=True, min_width=max(len(r[i]) for r in rows + [headers]))
    table.add_column("error", no_wrap=True, overflow="ellipsis")
    for row, t in zip(rows, s.turns):
        table.add_row(*row, Text(t.error or ""))
    console.print(table)
    for t in s.turns:
        if t.feedback:
            console.print(Text.assemble((f"turn {t.number}: not every block applied", "yellow"),
                                        " — aider would say:"))
            console.print(Text(t.feedback.rstrip()))
