"""What went wrong in a run, and what the LLM is told about it.

The runner (agent/runner.py) boxes the process in and hands back its output; this module reads
that output:

- `describe_outcome` turns a status, exit code and output into (traceback, one-line error,
  signature); `parse_failure` finds the last Python traceback, and the signature it builds lets
  the loop notice the same failure twice.
- `feedback_text` is what the LLM reads about a run (its wording is in agent/prompts.py), with
  workspace-relative paths and the traceback's end kept whole; `files_in_traceback` says which
  workspace files a traceback passes through, so only those are sent.
- `content_hash` lets the loop refuse to run a file it already saw fail.

Whether a run that exited 0 produced valid results is decided in `agent/results.py`, not here.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path
from typing import Iterable

from agent import prompts
from agent.process import RunResult, RunStatus

TRACEBACK_HEADER = "Traceback (most recent call last):"


# --------------------------------------------------------------------------- outcome

def describe_outcome(status: RunStatus, returncode: int | None, output: str,
                     timeout: float) -> tuple[str | None, str | None, str | None]:
    if status == RunStatus.OK:
        return None, None, None
    if status == RunStatus.TIMEOUT:
        return None, f"Timeout: the run exceeded {timeout:g} s and was killed", "Timeout"
    if status == RunStatus.INTERRUPTED:
        return None, "KeyboardInterrupt: the run was interrupted by the user", None
    if status == RunStatus.LOST:
        return None, "the cluster lost the run", "Lost"
    traceback, error, signature = parse_failure(output)
    if error is None:
        error, signature = exit_error(returncode, output)
    return traceback, error, signature


def exit_error(returncode: int | None, output: str) -> tuple[str, str]:
    """Error and signature for a failure without a Python traceback (signal, sys.exit)."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {"SIGKILL": " (out of memory?)", "SIGXCPU": " (CPU time limit)"}.get(name, "")
        return f"Killed by {name}{hint}", f"Signal:{name}"
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    error = f"Exit code {returncode}" + (f": {last[:300]}" if last else "")
    return error, f"ExitCode:{returncode}"


# --------------------------------------------------------------------------- failure analysis

FRAME_RE = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+(?:, in (?P<func>.+))?$')
EXCEPTION_RE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")


def traceback_starts(lines: list[str]) -> list[int]:
    """Where tracebacks begin: the usual header, or the bare `File "x.py", line 3` that a
    SyntaxError in the main script prints without one (the script never started running)."""
    starts = []
    for i, line in enumerate(lines):
        if line.strip() == TRACEBACK_HEADER:
            starts.append(i)
        elif (m := FRAME_RE.match(line)) and m.group("func") is None:
            before = lines[i - 1] if i else ""
            if not before[:1].isspace():  # not a frame inside a traceback already open
                starts.append(i)
    return starts


def last_traceback_lines(output: str) -> list[str] | None:
    """The lines of the last traceback in `output`, exception line included."""
    lines = output.splitlines()
    starts = traceback_starts(lines)
    if not starts:
        return None
    block = [lines[starts[-1]]]
    for line in lines[starts[-1] + 1:]:
        block.append(line)
        # Frames and their source lines are indented; the first unindented line is the exception.
        if line and not line[0].isspace():
            break
    return block


def normalize_message(msg: str) -> str:
    """Drops what changes between runs of the same bug: addresses, numbers, long tails."""
    msg = re.sub(r"0x[0-9a-fA-F]+", "0x…", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg.strip()[:120]


def parse_failure(output: str, script: str = "experiment.py"
                  ) -> tuple[str | None, str | None, str | None]:
    """(traceback, one-line error, signature) of the last Python traceback in `output`.

    The signature is `Type @ file:function | message`, where file:function is the innermost
    frame in `script` (else the innermost frame at all) and the message has numbers and addresses
    replaced. Line numbers are left out on purpose: an unrelated edit above the bug moves it by a
    few lines, and "the same failure twice" must still match. The function name survives such
    edits and still tells apart the same exception type raised in different places. The message
    keeps AttributeError 'ae' apart from AttributeError 'sae' in one function, while normalized
    numbers keep `shapes (128x512 and 256x512)` stable across hyperparameter changes.
    """
    block = last_traceback_lines(output)
    if block is None:
        return None, None, None
    traceback = "\n".join(block)
    exc_line = block[-1].strip() if len(block) > 1 else ""
    match = EXCEPTION_RE.match(exc_line)
    if not match:  # truncated output: a header and frames but no exception line
        return traceback, None, None
    exc_type = match.group("type")
    location = innermost_location(block, script)
    signature = f"{exc_type} @ {location} | {normalize_message(match.group('msg') or '')}"
    return traceback, exc_line[:500], signature


def files_in_traceback(traceback: str | None, names: Iterable[str]) -> list[str]:
    """Which of `names` (workspace-relative paths) a traceback's frames pass through. A frame's
    path may be absolute (the staged copy, a box's mount): it counts when it ends with the name."""
    names = list(names)
    found = set()
    for m in map(FRAME_RE.match, (traceback or "").splitlines()):
        ends = [n for n in names if m and (m.group("file") == n or m.group("file").endswith("/" + n))]
        if ends:  # .../sub/plot.py is sub/plot.py, not plot.py as well
            found.add(max(ends, key=len))
    return [n for n in names if n in found]


def innermost_location(block: list[str], script: str) -> str:
    frames = [m for m in map(FRAME_RE.match, block) if m]
    ours = [m for m in frames if Path(m.group("file")).name == script]
    chosen = (ours or frames or [None])[-1]
    if chosen is None:
        return "?"
    return f"{Path(chosen.group('file')).name}:{chosen.group('func') or '<module>'}"


# --------------------------------------------------------------------------- feedback

def feedback_text(result: RunResult, limit: int = 6000) -> str:
    """What the LLM is told about a run, at most `limit` characters.

    A failure gets aider's "Run failed with the following error" line, the end of the output
    before the traceback (what the script was doing), then the traceback, whose end (innermost
    frames and the error) is kept whole when something has to go.
    """
    seconds = f"{result.duration:.1f} s"
    if result.status == RunStatus.OK:
        head = prompts.RUN_OUTPUT_OK.format(seconds=seconds)
        return bounded(head, "", tidy_paths(result.output, result.log_path), limit)
    if result.status == RunStatus.TIMEOUT:
        head = prompts.RUN_OUTPUT_TIMEOUT.format(seconds=seconds, error=result.error)
        return bounded(head, "", tidy_paths(result.output, result.log_path), limit)
    if result.status == RunStatus.INTERRUPTED:
        return prompts.RUN_OUTPUT_INTERRUPTED.format(seconds=seconds)[:limit]
    head = prompts.RUN_OUTPUT_FAILED.format(error=result.error)
    output = tidy_paths(result.output, result.log_path)
    if result.traceback:
        start = result.output.rfind(result.traceback.splitlines()[0])
        before = tidy_paths(result.output[:max(start, 0)], result.log_path)
        traceback = tidy_paths(result.traceback, result.log_path)
        tb_room = max(limit - len(head) - 200, 0)
        traceback = keep_end(traceback, tb_room)
        context = keep_end(before.rstrip(), max(limit - len(head) - len(traceback) - 40, 0))
        body = (prompts.OUTPUT_BEFORE_ERROR.format(context=context) if context else "") + traceback
        return (head + body)[:limit]
    return bounded(head, prompts.END_OF_OUTPUT, output, limit)


def bounded(head: str, label: str, text: str, limit: int) -> str:
    room = limit - len(head) - len(label)
    if room <= 0:
        return (head + label)[:limit]
    return head + label + keep_end(text, room)


def keep_end(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, saying that the start was cut."""
    if len(text) <= limit:
        return text
    marker = prompts.OUTPUT_CUT
    if limit <= len(marker):
        return text[len(text) - limit:] if limit else ""
    return marker + text[len(text) - (limit - len(marker)):]


def tidy_paths(text: str, log_path: Path) -> str:
    """Workspace-relative paths: the LLM does not need (or get to see) where the workspace lives."""
    for workspace in {str(log_path.parent.parent), str(log_path.resolve().parent.parent)}:
        text = text.replace(workspace + os.sep, "")
    return text


def content_hash(text: str) -> str:
    """sha256 hex of a file's text: the loop keeps the hashes of files that failed to run."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
