"""The context budget: how many tokens the model takes, and every prompt made to fit before it is sent.

A hosted provider answers an overlong prompt with HTTP 400; a local server may not: Ollama cuts the
prompt silently, and llama.cpp on a 2-core CPU reads a prompt for minutes before it refuses it. So
the coder learns the window once (`find_window`) and cuts each request to fit it (`Budget.fit`)
before the call. Should the provider still refuse one (its count came out longer than ours), the
same cut is made again to a lower limit (`Budget.tighten`): there is one way a prompt is shortened.

`fit` never edits the conversation: it builds the list to send from it. The system message and the
task (the first user turn) go out byte-identical on every call, so a local server's prefix cache
always holds them; older turns are summarised, then dropped in whole (assistant, user) pairs,
oldest first; the latest turn, with the files that matter, goes out whole.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from agent import llm, prompts
from agent.conversation import (KEEP_LATEST, MAX_OLD_CHARS, check_messages, collapse_code_blocks,
                                collapse_tracebacks, cut_middle)

log = logging.getLogger(__name__)

# Nothing else says how large the window is: llama.cpp's `local:` server default. A guess too large
# is what this module exists to prevent (Ollama cuts silently), so --context-window says better.
DEFAULT_WINDOW = 8192
# At most this share of the window is held back for the reply: a reply here is edits, a few thousand
# tokens; a model whose own output limit is smaller gets that limit.
REPLY_SHARE = 0.25
# For a model litellm does not know: characters per token, and a margin, because code and
# non-English text run denser than prose (the template's code: ~3.7 characters a token for DeepSeek's
# tokenizer, 4.0 for OpenAI's).
CHARS_PER_TOKEN = 4
ESTIMATE_MARGIN = 1.15
# What a chat template adds around each message (role, separators), and before the reply.
PER_MESSAGE_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# Once turns must go, go down to this share of the limit: the next turns then fit without moving the
# cut, so the server's prefix cache keeps everything before the newest turns, not only the task.
REFILL_SHARE = 0.75
# After a provider refused a prompt as too long: the next aims at this share of what was refused.
TIGHTEN_SHARE = 0.8
SERVER_TIMEOUT = 3.0  # seconds for each of the server's own endpoints asked about its window
COUNT_CACHE = 2048  # texts whose counts are kept: every message of a long conversation, and its cut forms


class PromptTooLarge(Exception):
    """Even the smallest prompt the conversation can send does not fit the window."""


@dataclass(frozen=True)
class Window:
    tokens: int    # the model's context window: prompt and reply together
    reserve: int   # held back for the reply
    source: str    # how it was found, in words for the user

    @property
    def limit(self) -> int:
        """The most tokens a prompt may have."""
        return self.tokens - self.reserve

    def describe(self) -> str:
        return (f"context window {self.tokens} tokens ({self.source}): prompts are cut to "
                f"{self.limit} tokens, {self.reserve} kept for the reply")


# -- the window ---------------------------------------------------------------------------

def find_window(model: str, api_base: str | None = None, given: int | None = None) -> Window:
    """The window: --context-window when given (the user knows the server best); else litellm's
    model list for the model string; else what the server at --api-base reports; else litellm's
    list for the bare name (`openai/deepseek-reasoner` at DeepSeek's base); else DEFAULT_WINDOW."""
    info = _litellm_info(model) or _litellm_info(_bare(model)) or {}
    output = info.get("max_output_tokens")
    found = ((given, "from --context-window") if given else None) or _litellm_window(model) or (
        _server_window(api_base, _bare(model)) if api_base else None) or _litellm_window(_bare(model))
    if found is None:
        asked = f"; {api_base} did not report one" if api_base else ""
        found = (DEFAULT_WINDOW, f"a conservative default: litellm does not know {model}{asked}; "
                                 f"give --context-window N")
    tokens, source = found
    reserve = min(output or tokens, int(tokens * REPLY_SHARE))
    return Window(int(tokens), int(reserve), source)


def _bare(model: str) -> str:
    return model.split("/", 1)[-1]


def _litellm_info(name: str) -> dict | None:
    """litellm's entry for the model, None when it has none (or one without a window: it answers
    `ollama_chat/<anything>` with every field None)."""
    try:
        info = llm.litellm().get_model_info(name)
    except Exception:  # litellm raises for a model it has not mapped
        return None
    return info if info.get("max_input_tokens") or info.get("max_tokens") else None


def _litellm_window(name: str) -> tuple[int, str] | None:
    info = _litellm_info(name)
    tokens = info and (info.get("max_input_tokens") or info.get("max_tokens"))
    return (int(tokens), f"litellm's model list for {name}") if tokens else None


def _server_window(api_base: str, name: str) -> tuple[int, str] | None:
    """What an OpenAI-compatible server says of its window. llama.cpp: `GET /props` gives the
    context of one slot (`default_generation_settings.n_ctx`, what `-c` set, divided among
    `--parallel` slots), and its `/v1/models` only the model's training context (`meta.n_ctx_train`),
    an upper bound. vLLM: `max_model_len` in `/v1/models`. OpenRouter: `context_length` there."""
    base = api_base.rstrip("/")
    props = _get_json(re.sub(r"/v1$", "", base) + "/props")
    n_ctx = _dig(props, "default_generation_settings", "n_ctx")
    if n_ctx:
        return n_ctx, f"reported by the server: /props n_ctx {n_ctx}"
    listing = _get_json(base + "/models")
    entries = [e for e in (listing or {}).get("data") or [] if isinstance(e, dict)]
    entry = next((e for e in entries if e.get("id") == name), entries[0] if entries else {})
    for path in (("max_model_len",), ("context_length",), ("meta", "n_ctx"), ("meta", "n_ctx_train")):
        value = _dig(entry, *path)
        if value:
            return value, f"reported by the server: /models {'.'.join(path)} {value}"
    return None


def _dig(data, *keys) -> int | None:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, int) and not isinstance(data, bool) and data > 0 else None


def _get_json(url: str) -> dict | None:
    # The key litellm would send this base, if any: a vLLM started with --api-key wants it on /models too.
    key = os.environ.get("OPENAI_API_KEY")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=SERVER_TIMEOUT) as resp:
            return json.loads(resp.read(1 << 22))
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not there, not JSON, refused, slow: the next source decides


# -- counting -----------------------------------------------------------------------------

class Counter:
    """Tokens of a message list: litellm's `token_counter` with the model's tokenizer when litellm
    knows the model; else an estimate from the length (`note` says so, for the user, once)."""

    def __init__(self, model: str):
        self.model = model
        self.note: str | None = None
        self._cache: dict[str, int] = {}
        if _litellm_info(model) is None and _litellm_info(_bare(model)) is None:
            self._estimate(f"litellm does not know {model}'s tokenizer")

    def __call__(self, messages: list[dict]) -> int:
        return sum(self.text(m["content"]) + PER_MESSAGE_TOKENS for m in messages) + REPLY_PRIMING_TOKENS

    def text(self, text: str) -> int:
        if text not in self._cache:  # a long conversation is counted once per message, not per call
            if len(self._cache) >= COUNT_CACHE:
                self._cache.clear()
            self._cache[text] = self._count(text)
        return self._cache[text]

    @property
    def estimated(self) -> bool:
        return self.note is not None

    def _count(self, text: str) -> int:
        if not self.estimated:
            try:
                return int(llm.litellm().token_counter(model=self.model, text=text))
            except Exception as exc:  # a tokenizer it cannot load offline, say
                self._estimate(f"litellm could not count {self.model}'s tokens ({exc})")
                log.warning(self.note)
        return math.ceil(len(text) / CHARS_PER_TOKEN * ESTIMATE_MARGIN)

    def _estimate(self, why: str) -> None:
        self._cache.clear()
        self.note = (f"{why}: prompt sizes are estimated at {CHARS_PER_TOKEN} characters a token, "
                     f"plus {round((ESTIMATE_MARGIN - 1) * 100)}%")


# -- fitting ------------------------------------------------------------------------------

class Budget:
    """One conversation's requests, each made to fit `window` before it is sent."""

    def __init__(self, window: Window, counter: Counter):
        self.window, self.count = window, counter
        # The most tokens a prompt may have: the window's limit, lowered by `tighten` when a
        # provider refuses a prompt that fit it by our count.
        self.limit = window.limit
        # Pairs of older turns left out so far. It only grows: what is sent after the task stays
        # the same from one call to the next.
        self.skip = 0

    def fit(self, messages: list[dict]) -> list[dict]:
        """`messages` (system, task, then assistant/user turns ending with a user turn) as sent:
        whole if they fit; else older turns summarised, then dropped a pair at a time, oldest first;
        at the least the task and the latest exchange. PromptTooLarge when even that does not fit."""
        head, body = messages[:2], messages[2:]
        limit = self.limit
        chosen = None
        for skip, sent in self._candidates(head, body):
            size = self.count(sent)
            if chosen is None and size <= limit:
                chosen = (skip, sent)
                if skip <= self.skip:  # no turn newly dropped: the cut stays where it was
                    break
            if chosen is not None and size <= limit * REFILL_SHARE:
                chosen = (skip, sent)
                break
        if chosen is None:
            raise PromptTooLarge(self._too_large(head, body))
        self.skip, sent = chosen
        check_messages(sent)  # alternation holds whatever was cut
        return sent

    def tighten(self, messages: list[dict], refused: list[dict]) -> bool:
        """The provider refused `refused` (fitted from `messages`) as longer than its window: lower
        the limit below it, so the next `fit` cuts further. False, the limit unchanged, when even
        the smallest prompt of `messages` would not fit under the lower limit."""
        limit = int(self.count(refused) * TIGHTEN_SHARE)
        *_, (_, smallest) = self._candidates(messages[:2], messages[2:])
        if self.count(smallest) > limit:
            return False
        self.limit = min(self.limit, limit)
        return True

    def _candidates(self, head: list[dict], body: list[dict]):
        """(pairs skipped, messages) from the fullest to the smallest. Older messages are all but
        the latest KEEP_LATEST; the latest user turn (the files that matter) is never shortened."""
        pairs = len(body) // 2
        for skip in range(min(self.skip, max(pairs - 1, 0)), max(pairs, 1)):
            kept = body[2 * skip:]
            yield skip, head + self._with_note(kept, skip)
            old = len(kept) - KEEP_LATEST
            for shrink in (_summarised, _cut) if old > 0 else ():
                turns = [_shrunk(m, shrink) for m in kept[:old]] + kept[old:]
                yield skip, head + self._with_note(turns, skip)
        if body:  # the smallest: only the latest exchange, its reply summarised
            skip = pairs - 1
            yield skip, head + self._with_note([_shrunk(body[-2], _cut), body[-1]], skip)

    @staticmethod
    def _with_note(turns: list[dict], skip: int) -> list[dict]:
        """Say where turns are left out, at the end of the latest user turn: it changes every call
        anyway, so the note costs no cached prefix (in the task it would cost all of it)."""
        if not skip or not turns:
            return turns
        note = prompts.TURNS_LEFT_OUT.format(count=2 * skip)
        return turns[:-1] + [{**turns[-1], "content": turns[-1]["content"] + "\n\n" + note}]

    def _too_large(self, head: list[dict], body: list[dict]) -> str:
        *_, (_, smallest) = self._candidates(head, body)
        w = self.window
        what = "the system message, the task and the latest exchange" if body else "the system message and the task"
        return (f"the smallest prompt this conversation can send ({what}) is {self.count(smallest)} tokens"
                f"{' (estimated)' if self.count.estimated else ''}, more than the {self.limit} a prompt may "
                f"have{self._lowered()} in a context window of {w.tokens} tokens ({w.source}; {w.reserve} kept for the reply). "
                f"Nothing was sent. Give a larger --context-window (and start the server with that "
                f"context), or use a model with a larger window; `resume` goes on from here.")


    def _lowered(self) -> str:
        if self.limit >= self.window.limit:
            return ""
        return f" (lowered from {self.window.limit}: the provider refused a longer prompt)"


def _summarised(text: str) -> str:
    return collapse_tracebacks(collapse_code_blocks(text))


def _cut(text: str) -> str:
    return cut_middle(_summarised(text), MAX_OLD_CHARS)


def _shrunk(message: dict, shrink) -> dict:
    return {"role": message["role"], "content": shrink(message["content"])}
