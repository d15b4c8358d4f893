"""The message list sent to the coder, with its alternation guarantee.

Strict providers (deepseek-reasoner) answer HTTP 400 to two user messages in a row, to a first
or last non-system message that is not the user's, and to `reasoning_content` sent back. The old
tool died that way: it appended "Run failed ..." after a user turn that was still pending. So
every message goes through this class, and the shape is checked before every call:

    system, user, assistant, user, ..., assistant, user

Feedback that arrives while a user turn is pending is merged into that turn.

Two lists are kept: `_context` (what is sent) and `_log` (everything ever said, never shortened;
this is what `transcript.md` and a replay read). Both end with the same turn: only the pending
user turn is ever merged into (in both). What does not fit the model's window is left out of a
request by agent/budget.py, which builds it from `messages()`, never editing these. A reply's reasoning (deepseek's `reasoning_content`,
a local model's `<think>…</think>`) is kept in `_log` beside it and never sent; a reply longer
than MAX_REPLY_CHARS is sent back cut (`cap_reply`), kept whole in `_log`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TRANSCRIPT_JSON = "transcript.json"
TRANSCRIPT_MD = "transcript.md"
TRANSCRIPT_VERSION = 1

# Joins feedback merged into a pending user turn; readable in transcript.md and to the model.
MERGE_SEPARATOR = "\n\n---\n\n"

# The budget (agent/budget.py) keeps this many of the latest messages whole (besides the task).
KEEP_LATEST = 3
# Fenced blocks (file dumps) longer than this many lines are collapsed in older turns.
MAX_BLOCK_LINES = 12
# Tracebacks in older turns keep only their last lines (the exception itself).
TRACEBACK_TAIL_LINES = 4
# Older messages are cut to this many characters once blocks and tracebacks are gone.
MAX_OLD_CHARS = 2000
# What one reply may keep in what is sent back: a reply of whole files fits (the template's
# experiment.py is ~8k characters); a 2 MB essay would otherwise ride along in every later call.
MAX_REPLY_CHARS = 40000


class ConversationError(Exception):
    """The message list would break the alternation contract. Always a bug in the caller."""


class Conversation:
    def __init__(self, system: str):
        self.system = system
        self._context: list[dict] = []
        self._log: list[dict] = []
        # One record per LLM call: model, prompt_tokens, completion_tokens, cost, seconds.
        self.usage: list[dict] = []

    # -- building -------------------------------------------------------------------------

    @property
    def pending_user(self) -> bool:
        """True when the last message is a user turn awaiting a reply."""
        return bool(self._context) and self._context[-1]["role"] == "user"

    def add_user(self, text: str) -> None:
        """Add a user turn, or merge `text` into the one still waiting for a reply."""
        text = _as_text(text)
        if self.pending_user:
            for turns in (self._context, self._log):
                turns[-1]["content"] += MERGE_SEPARATOR + text
        else:
            self._context.append({"role": "user", "content": text})
            self._log.append({"role": "user", "content": text})

    def add_assistant(self, text: str, reasoning: str = "") -> None:
        """Store a reply as plain text, its reasoning beside it in the log only (never sent).
        Only a pending user turn can be answered."""
        if not self.pending_user:
            raise ConversationError("add_assistant() without a pending user turn")
        text = _as_text(text)
        if not text.strip():  # strict providers refuse an empty assistant turn on every later call
            raise ConversationError("an empty reply is never stored: retry the call or stop")
        self._context.append({"role": "assistant", "content": cap_reply(text)})
        logged = {"role": "assistant", "content": text}
        if reasoning:
            logged["reasoning"] = _as_text(reasoning)
        self._log.append(logged)

    def record_usage(self, **record) -> None:
        self.usage.append(record)

    # -- reading --------------------------------------------------------------------------

    def messages(self) -> list[dict]:
        """The list to send: fresh dicts with only role and content, checked first."""
        out = [{"role": "system", "content": self.system}]
        out += [{"role": m["role"], "content": m["content"]} for m in self._context]
        check_messages(out)
        return out

    def transcript(self) -> list[dict]:
        """Everything said, uncut, system message first."""
        return [{"role": "system", "content": self.system}] + [dict(m) for m in self._log]

    def assistant_replies(self) -> list[str]:
        return [m["content"] for m in self._log if m["role"] == "assistant"]

    # -- saving ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write transcript.json (reloadable) and transcript.md (for people) into `directory`."""
        directory = Path(directory)
        data = {
            "version": TRANSCRIPT_VERSION,
            "system": self.system,
            "messages": self.transcript(),
            "context": self._context,
            "usage": self.usage,
        }
        _write_atomic(directory / TRANSCRIPT_JSON, _json_text(data))
        _write_atomic(directory / TRANSCRIPT_MD, self.to_markdown(), errors="backslashreplace")

    @classmethod
    def load(cls, path: Path) -> "Conversation":
        """Read a transcript.json (or the directory holding one) back, ready to go on."""
        path = Path(path)
        if path.is_dir():
            path = path / TRANSCRIPT_JSON
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as e:
            raise ConversationError(f"cannot load transcript {path}: {e}") from e
        return cls.loads(text, source=str(path))

    @classmethod
    def loads(cls, text: str, source: str = TRANSCRIPT_JSON) -> "Conversation":
        """The same from the text of a transcript.json (a file, or as committed)."""
        path = source
        try:
            data = json.loads(text)
            messages = data["messages"]
            conv = cls(data["system"])
            conv._log = _drop_empty_replies([_plain(m, keep_reasoning=True) for m in messages[1:]])
            conv._context = _drop_empty_replies([_plain(m) for m in data.get("context", messages[1:])])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ConversationError(f"cannot load transcript {path}: {e}") from e
        conv.usage = list(data.get("usage", []))
        # Refuse a transcript that breaks alternation now, not at the next call. One saved just
        # after a reply legitimately ends with the assistant: check it as if a turn followed.
        probe = [] if conv.pending_user else [{"role": "user", "content": ""}]
        check_messages([{"role": "system", "content": conv.system}] + conv._context + probe)
        return conv

    def to_markdown(self) -> str:
        lines = ["# Transcript", ""]
        calls = iter(self.usage)
        for n, m in enumerate(self.transcript()):
            heading = m["role"]
            if m["role"] == "assistant":
                rec = next(calls, None)
                if rec:
                    heading += f" — {_usage_line(rec)}"
            lines += [f"## {n}. {heading}", ""]
            if m.get("reasoning"):
                lines += ["<details><summary>reasoning (never sent back to the provider)</summary>", "",
                          m["reasoning"], "", "</details>", ""]
            lines += [m["content"], ""]
        if self.usage:
            lines += ["## Usage", "", _usage_total(self.usage), ""]
        return "\n".join(lines)


def check_messages(messages: list[dict]) -> None:
    """Raise ConversationError unless `messages` has the shape strict providers accept."""
    if not messages or messages[0].get("role") != "system":
        raise ConversationError("the first message must be the system message")
    rest = messages[1:]
    if not rest:
        raise ConversationError("no user message to answer")
    for i, m in enumerate(messages):
        if set(m) != {"role", "content"} or not isinstance(m["content"], str):
            raise ConversationError(f"messages[{i}] must be a plain {{role, content}} text message")
    for i, m in enumerate(rest, start=1):
        expected = "user" if i % 2 == 1 else "assistant"
        if m["role"] != expected:
            raise ConversationError(
                f"messages[{i}] is {m['role']!r}, expected {expected!r}: roles must alternate")
    if rest[-1]["role"] != "user":
        raise ConversationError("the last message must be from the user")


# -- text helpers: pure functions on strings ---------------------------------------------

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t].*\n|\n)+")


def collapse_code_blocks(text: str, max_lines: int = MAX_BLOCK_LINES) -> str:
    """Replace long fenced blocks (file dumps, SEARCH/REPLACE bodies) with a one-line note."""
    def shorten(match: re.Match) -> str:
        n = match.group(1).count("\n")
        if n <= max_lines:
            return match.group(0)
        return f"```\n[{n} lines omitted to fit the context window]\n```"
    return _FENCE.sub(shorten, text)


def collapse_tracebacks(text: str, tail: int = TRACEBACK_TAIL_LINES) -> str:
    """Keep a traceback's last frames only; the final exception line follows the match."""
    def shorten(match: re.Match) -> str:
        frames = match.group(0).splitlines(keepends=True)[1:]
        if len(frames) <= tail:
            return match.group(0)
        kept = "".join(frames[-tail:])
        return f"Traceback (most recent call last):\n  [{len(frames) - tail} lines omitted]\n{kept}"
    return _TRACEBACK.sub(shorten, text)


def cut_middle(text: str, limit: int, head_share: float = 0.5) -> str:
    """Cut `text` to about `limit` characters, keeping its beginning and end."""
    if len(text) <= limit:
        return text
    head = int(limit * head_share)
    tail = limit - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted to fit the context window ...]\n{text[-tail:]}"


def cap_reply(text: str, limit: int = MAX_REPLY_CHARS) -> str:
    """A reply as sent back in later calls: whole up to `limit` characters, else its beginning and
    end with a note; the log (transcript) keeps all of it."""
    if len(text) <= limit:
        return text
    head = limit // 2
    return (f"{text[:head]}\n[... {len(text) - limit} characters of this reply are left out of the "
            f"conversation; it was {len(text)} characters long ...]\n{text[-(limit - head):]}")


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply that begins with its reasoning, as DeepSeek-R1 distills and
    Qwen3 write it: `<think>…</think>answer`, or `…</think>answer` when the chat template opened
    the tag. A reply cut off inside `<think>` is all reasoning. Anything else is all answer."""
    body = text.lstrip()
    if body.startswith(_THINK_OPEN):
        body = body[len(_THINK_OPEN):]
    elif _THINK_OPEN in text.split(_THINK_CLOSE, 1)[0] or _THINK_CLOSE not in text:
        return "", text  # no leading reasoning: a tag later on is the answer's own text
    reasoning, closed, answer = body.partition(_THINK_CLOSE)
    if not closed:
        return reasoning.strip(), ""
    return reasoning.strip(), answer.lstrip("\n")


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with lone surrogates (valid in JSON, not encodable as UTF-8) replaced by U+FFFD, so it
    can be written to files, commits and later requests."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _as_text(text) -> str:
    if not isinstance(text, str):
        raise ConversationError(f"message content must be text, got {type(text).__name__}")
    return text


def _drop_empty_replies(turns: list[dict]) -> list[dict]:
    """Transcripts saved before empty replies were refused may hold one (content "" or null):
    drop it and merge the user turn after it into the one before, so alternation holds."""
    out: list[dict] = []
    dropped = False
    for m in turns:
        if m["role"] == "assistant" and not (m["content"] or "").strip():
            dropped = True
            continue
        if dropped and m["role"] == "user" and out and out[-1]["role"] == "user":
            out[-1] = {"role": "user", "content": out[-1]["content"] + MERGE_SEPARATOR + m["content"]}
        else:
            out.append(m)
        dropped = False
    return out


def _plain(m: dict, keep_reasoning: bool = False) -> dict:
    out = {"role": m["role"], "content": m["content"]}
    if keep_reasoning and isinstance(m.get("reasoning"), str) and m["reasoning"]:
        out["reasoning"] = m["reasoning"]
    return out


def _usage_line(rec: dict) -> str:
    cost = rec.get("cost")
    cost_s = "cost unknown" if cost is None else f"${cost:.4f}"
    return (f"{rec.get('model')}, {rec.get('prompt_tokens', 0)}+{rec.get('completion_tokens', 0)}"
            f" tokens, {cost_s}, {rec.get('seconds', 0):.1f}s")


def _usage_total(usage: list[dict]) -> str:
    tokens = sum(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in usage)
    costs = [r["cost"] for r in usage if r.get("cost") is not None]
    unknown = len(usage) - len(costs)
    line = f"{len(usage)} calls, {tokens} tokens, ${sum(costs):.4f}"
    return line + (f" (+ {unknown} calls of unknown cost)" if unknown else "")


def _json_text(data: dict) -> str:
    """Readable JSON (UTF-8 as it is), or ASCII JSON when the text holds what UTF-8 cannot encode
    (a lone surrogate, valid JSON from a provider): `\\ud800` is kept exactly, nothing is lost."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, indent=1, ensure_ascii=True)
    return text


def _write_atomic(path: Path, text: str, errors: str = "strict") -> None:
    # A crash mid-write must not leave a half transcript that resume would choke on, nor a .tmp.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", errors=errors)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
