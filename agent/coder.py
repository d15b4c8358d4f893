"""The coder: every LLM call (LiteLLMCoder) or a replay of recorded replies (ReplayCoder).

Both take a Conversation whose user turn is pending and, on success, append the reply to it.
On failure the conversation is left as it was, the user turn still pending, so whatever the
loop adds next (a traceback, a note) merges into that turn instead of making a second one.

Retries are ours, not litellm's: litellm and the OpenAI client it wraps both retry silently
by default (three requests per call, measured), which hides rate limits and doubles spend.

A reply's text is made storable first (`settle`): lone surrogates replaced, reasoning
(`reasoning_content`, a leading `<think>…</think>`) set apart from the answer the loop reads
edits from, and a reply the provider cut at its output limit marked `truncated`.

Each request is made to fit the model's context window before it is sent (agent/budget.py); after
a provider's context error (its count came out longer than ours) the same budget cuts it further.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import budget, llm
from agent.conversation import Conversation, split_reasoning, valid_text

# litellm fetches its price list from GitHub at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

log = logging.getLogger(__name__)

MODEL_ENV = "AGENT_MODEL"
API_BASE_ENV = "AGENT_API_BASE"
REPLAY_PREFIX = "replay:"
ALL_COMPLETED = "ALL_COMPLETED"

# Worth another try: rate limits, timeouts, overloaded or failing servers.
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# What to do when the provider refuses outright; retrying would only repeat the refusal.
FATAL_HINTS = {
    400: "the provider refused the request as malformed",
    401: "the API key was refused: check the key for this provider",
    402: "the account has no credit left: top it up or use another model",
    403: "the API key may not use this model: check the account's permissions",
    404: "the model or endpoint was not found: check --model / AGENT_MODEL and --api-base",
    422: "the provider refused the request's parameters",
}
_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many tokens|prompt is too long|"
    r"reduce the length", re.I)  # llama.cpp: "request (N tokens) exceeds the available context size"
# Sent to an OpenAI-compatible --api-base when no key is set: the OpenAI client refuses to send
# a request without one, and local servers (vLLM, llama.cpp, ollama) ignore it.
PLACEHOLDER_KEY = "sk-no-key-set"


# The answer stored for a reply cut off before its reasoning ended: strict providers refuse an
# empty assistant turn, and the loop tells the coder what happened in the next one.
CUT_IN_REASONING = "[the reply was cut off while reasoning, before any answer]"


@dataclass
class Reply:
    text: str  # the answer: what edits are read from and what is sent back
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # dollars; None where litellm does not know the model's price
    model: str
    seconds: float
    reasoning: str = ""      # kept in the transcript, never sent back
    truncated: bool = False  # finish_reason "length": the provider stopped it at its output limit


def settle(reply: Reply) -> Reply:
    """The reply as stored: valid text, its leading `<think>` reasoning apart from the answer.

    litellm already moves a leading `<think>…</think>` from an OpenAI-compatible server into
    `reasoning_content`; not the distills' `…</think>` (their chat template opened the tag), nor
    a replayed text, so the split is ours too."""
    thought, answer = split_reasoning(valid_text(reply.text))
    reply.reasoning = "\n\n".join(r for r in (valid_text(reply.reasoning).strip(), thought) if r)
    if reply.reasoning:
        answer = answer.lstrip("\n")  # the blank lines that followed `</think>`
    if not answer.strip() and reply.truncated:
        answer = CUT_IN_REASONING
    reply.text = answer
    return reply


class LLMError(Exception):
    """A call that cannot succeed as things stand; the message says what the user can do."""

    def __init__(self, message: str, status_code: int | None = None,
                 provider_message: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.provider_message = provider_message


class BudgetExceeded(LLMError):
    """The --max-cost or --max-tokens cap is reached; the loop ends the idea cleanly."""


def resolve_model(model: str | None = None, api_base: str | None = None):
    """--model / --api-base, or else the AGENT_MODEL / AGENT_API_BASE environment variables."""
    return model or os.environ.get(MODEL_ENV) or None, api_base or os.environ.get(API_BASE_ENV) or None


def preflight(model: str, api_base: str | None = None) -> list[str]:
    """Refuse an unusable model before any workspace exists; return notes worth printing.

    Raises LLMError for a provider litellm cannot tell or a missing API key. With an api_base
    (an OpenAI-compatible server) a missing key is only a note: local servers need none.
    """
    if model.startswith(REPLAY_PREFIX):
        path = Path(model[len(REPLAY_PREFIX):])
        if not path.is_file():
            raise LLMError(f"replay file not found: {path}")
        return []
    litellm = llm.litellm()
    try:
        _, provider, _, _ = litellm.get_llm_provider(model, api_base=api_base)
    except Exception as e:
        raise LLMError(
            f"unknown model {model!r}: litellm cannot tell which provider serves it. Prefix the "
            f"provider, e.g. openai/gpt-4o, anthropic/claude-3-5-sonnet-20241022, "
            f"deepseek/deepseek-reasoner; for any OpenAI-compatible server use "
            f"openai/<model> with --api-base.", provider_message=_provider_words(e)) from e
    notes = []
    missing = litellm.validate_environment(model, api_base=api_base).get("missing_keys") or []
    if missing and not api_base:
        raise LLMError(f"missing API key for {model}: set {' and '.join(missing)} "
                       f"(e.g. export {missing[0]}=...) and run again.")
    if missing:
        notes.append(f"{' and '.join(missing)} not set: sending a placeholder key to {api_base}.")
    if not _price_known(litellm, model):
        notes.append(f"litellm has no price for {model}: cost is not tracked and --max-cost "
                     f"cannot stop it; --max-tokens can.")
    return notes


class _Coder:
    """Totals and budget caps shared by both coders."""

    name: str

    def __init__(self, max_cost: float | None = None, max_tokens: int | None = None):
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.total_tokens = 0
        self.total_cost = 0.0  # of the calls whose price is known
        self.unpriced_calls = 0
        self.calls = 0
        self.notes: list[str] = []  # preflight's remarks, worth showing the user once

    def count_usage(self, records: list[dict]) -> None:
        """Add calls made before (a resumed transcript's usage) to the totals and caps."""
        for r in records:
            self._count(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0), r.get("cost"))

    def check_budget(self) -> None:
        if self.max_cost is not None and self.total_cost >= self.max_cost:
            raise BudgetExceeded(f"cost cap reached: ${self.total_cost:.4f} spent of "
                                 f"--max-cost ${self.max_cost:.4f}; no further LLM call made.")
        if self.max_tokens is not None and self.total_tokens >= self.max_tokens:
            raise BudgetExceeded(f"token cap reached: {self.total_tokens} tokens used of "
                                 f"--max-tokens {self.max_tokens}; no further LLM call made.")

    def _count(self, tokens: int, cost: float | None) -> None:
        self.calls += 1
        self.total_tokens += tokens
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.total_cost += cost

    def _accept(self, conv: Conversation, reply: Reply) -> Reply:
        conv.add_assistant(reply.text, reasoning=reply.reasoning)
        conv.record_usage(model=reply.model, prompt_tokens=reply.prompt_tokens,
                          completion_tokens=reply.completion_tokens, cost=reply.cost,
                          seconds=round(reply.seconds, 3), **({"truncated": True} if reply.truncated else {}))
        self._count(reply.prompt_tokens + reply.completion_tokens, reply.cost)
        log.info("reply from %s: %d prompt + %d completion tokens, %s, %.1fs", reply.model,
                 reply.prompt_tokens, reply.completion_tokens,
                 "unpriced" if reply.cost is None else f"${reply.cost:.4f}", reply.seconds)
        return reply


class LiteLLMCoder(_Coder):
    def __init__(self, model: str, api_base: str | None = None, timeout: float = 600.0,
                 max_cost: float | None = None, max_tokens: int | None = None,
                 max_attempts: int = 6, base_delay: float | None = None, max_delay: float = 60.0,
                 max_tighten: int = 4, on_retry: Callable[[str], None] | None = None,
                 context_window: int | None = None):
        super().__init__(max_cost, max_tokens)
        self.model = model
        self.name = model
        self.api_base = api_base
        # Once, before any call: the window (it may ask the server) and how prompts are counted.
        self.budget = budget.Budget(budget.find_window(model, api_base, context_window), budget.Counter(model))
        self.notes = [n for n in (self.budget.window.describe(), self.budget.count.note) if n]
        self.timeout = timeout
        self.max_attempts = max_attempts
        # SAE_AGENT_RETRY_DELAY: the first backoff in seconds (default 2), so tests need not sleep for real
        self.base_delay = base_delay if base_delay is not None else float(os.environ.get("SAE_AGENT_RETRY_DELAY", 2.0))
        self.max_delay = max_delay
        self.max_tighten = max_tighten
        self.on_retry = on_retry or log.warning  # the live view passes its own

    def complete(self, conv: Conversation) -> Reply:
        """One reply for the pending user turn, retried and cut further as needed."""
        self.check_budget()
        llm.litellm()  # import before the clock starts: a call's seconds are the provider's
        attempt = tightened = 0
        while True:
            messages = self._fit(conv)
            started = time.monotonic()
            try:
                response = self._call(messages)
            except Exception as e:  # litellm maps every provider failure to an exception
                kind = _classify(e)
                if (kind == "context" and tightened < self.max_tighten
                        and self.budget.tighten(conv.messages(), messages)):
                    tightened += 1
                    self.on_retry(f"context window exceeded: the provider counts more tokens than estimated "
                                  f"here; prompts now cut to {self.budget.limit} tokens ({tightened}), retrying")
                    continue
                if kind == "retry" and attempt + 1 < self.max_attempts:
                    wait = self._backoff(attempt, e)
                    attempt += 1
                    self.on_retry(f"{_short(e)}: retry {attempt} of {self.max_attempts - 1} in {wait:.1f}s")
                    time.sleep(wait)
                    continue
                raise _as_llm_error(e, self.model, kind, attempt + 1) from e
            reply = self._reply(response, time.monotonic() - started)
            if not reply.text.strip():  # never stored: a strict provider refuses it ever after
                self._count(reply.prompt_tokens + reply.completion_tokens, reply.cost)
                if attempt + 1 < self.max_attempts:
                    wait = self._backoff(attempt, Exception())
                    attempt += 1
                    self.on_retry(f"empty reply: retry {attempt} of {self.max_attempts - 1} in {wait:.1f}s")
                    time.sleep(wait)
                    continue
                raise LLMError(f"{self.model}: the provider sent an empty reply {attempt + 1} times "
                               "in a row (nothing was stored; try again later or another model)")
            return self._accept(conv, reply)

    def _fit(self, conv: Conversation) -> list[dict]:
        """The request for the pending turn, within the context window; an error, never a call,
        when even its smallest form is too large (the conversation is left as it was)."""
        try:
            messages = self.budget.fit(conv.messages())
        except budget.PromptTooLarge as exc:
            raise LLMError(f"{self.model}: {exc}") from None
        log.info("prompt: %d messages, %d tokens%s of %d", len(messages), self.budget.count(messages),
                 " (estimated)" if self.budget.count.estimated else "", self.budget.limit)
        return messages

    def _call(self, messages: list[dict]):
        litellm = llm.litellm()
        kwargs = dict(model=self.model, messages=messages, timeout=self.timeout,
                      num_retries=0, max_retries=0)
        if self.api_base:
            kwargs["api_base"] = self.api_base
            if litellm.validate_environment(self.model, api_base=self.api_base).get("missing_keys"):
                kwargs["api_key"] = PLACEHOLDER_KEY
        return litellm.completion(**kwargs)

    def _reply(self, response, seconds: float) -> Reply:
        # reasoning_content goes to the transcript only: it must never go back to the provider.
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return settle(Reply(text=choice.message.content or "",
                            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                            cost=_cost(llm.litellm(), response, self.model, usage),
                            model=self.model, seconds=seconds,
                            reasoning=getattr(choice.message, "reasoning_content", None) or "",
                            truncated=getattr(choice, "finish_reason", None) == "length"))

    def _backoff(self, attempt: int, error: Exception) -> float:
        """Exponential with full jitter; a provider's Retry-After wins when it asks for longer."""
        wait = random.uniform(0.5, 1.0) * min(self.max_delay, self.base_delay * 2 ** attempt)
        retry_after = _retry_after(error)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


class ReplayCoder(_Coder):
    """Plays recorded replies in order; no LLM is called.

    Reads `{"model": ..., "replies": [...]}` (ideas/<name>.replay.json) or a saved
    transcript.json (its assistant messages). Checks the conversation's shape on every call,
    as a strict provider would, so offline runs catch alternation bugs too.
    """

    def __init__(self, path: Path, max_cost: float | None = None, max_tokens: int | None = None):
        super().__init__(max_cost, max_tokens)
        self.path = Path(path)
        self.name = f"{REPLAY_PREFIX}{path}"
        self.replies, self.recorded_model = _read_replay(self.path)
        self.played = 0

    @property
    def exhausted(self) -> bool:
        return self.played >= len(self.replies)

    def complete(self, conv: Conversation) -> Reply:
        self.check_budget()
        conv.messages()  # raises ConversationError on a malformed list, like a real call would
        if self.exhausted:
            text = (f"{ALL_COMPLETED}\n\n(The replay {self.path} is used up: all "
                    f"{len(self.replies)} recorded replies were played.)")
        else:
            text = self.replies[self.played]
            self.played += 1
        reply = settle(Reply(text, 0, 0, 0.0, self.name, 0.0))
        if not reply.text.strip():
            raise LLMError(f"recorded reply {self.played} of {self.path} is empty (or reasoning only); "
                           "an empty reply is never stored (edit the replay file)")
        return self._accept(conv, reply)


def make_coder(model: str | None, api_base: str | None = None, timeout: float = 600.0,
               max_cost: float | None = None, max_tokens: int | None = None,
               replay_default: Path | None = None, context_window: int | None = None):
    """A LiteLLMCoder for a litellm model string, a ReplayCoder for `replay:PATH` or no model.

    Runs `preflight` for a model string (raising LLMError on a missing key or unknown provider);
    its notes, and where the context window came from, are kept in `coder.notes` for the banner.
    """
    if model is None:
        if replay_default is None:
            raise LLMError(f"no model given: pass --model (or set {MODEL_ENV}), or ship "
                           f"ideas/<name>.replay.json to replay offline.")
        return ReplayCoder(replay_default, max_cost, max_tokens)
    if model.startswith(REPLAY_PREFIX):
        return ReplayCoder(Path(model[len(REPLAY_PREFIX):]), max_cost, max_tokens)
    notes = preflight(model, api_base)  # before any workspace exists: fail while it is cheap
    coder = LiteLLMCoder(model, api_base, timeout, max_cost, max_tokens, context_window=context_window)
    coder.notes = notes + coder.notes
    return coder


# -- helpers -------------------------------------------------------------------------------

def _classify(error: Exception) -> str:
    """'context' (cut further and retry), 'retry' (back off and retry) or 'fatal'."""
    litellm = llm.litellm()
    status = getattr(error, "status_code", None)
    if isinstance(error, litellm.ContextWindowExceededError) or (
            status == 400 and _CONTEXT_WORDS.search(str(error))):
        return "context"
    if "missing credentials" in str(error).lower():
        return "fatal"  # litellm reports a missing key as HTTP 500; no retry will find one
    if isinstance(error, (litellm.Timeout, litellm.APIConnectionError, litellm.RateLimitError)):
        return "retry"
    if status in RETRY_STATUS or (isinstance(status, int) and status >= 500):
        return "retry"
    return "fatal"


def _as_llm_error(error: Exception, model: str, kind: str, attempts: int) -> LLMError:
    status = getattr(error, "status_code", None)
    words = _provider_words(error)
    if kind == "context":
        advice = ("the provider's context window is smaller than this prompt, even cut to the task and the "
                  "latest exchange: use a model with a larger window (or start the server with a larger "
                  "context); `resume` goes on from here")
    elif kind == "retry":
        advice = f"still failing after {attempts} attempts; try again later"
    else:
        advice = FATAL_HINTS.get(status, "the provider refused the request")
    code = f"HTTP {status}" if status else type(error).__name__
    return LLMError(f"{model}: {code} — {words} ({advice})", status_code=status,
                    provider_message=words)


def _provider_words(error: Exception) -> str:
    """The provider's own message, without litellm's 'litellm.X: OpenAIException - ' prefixes."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    text = str(getattr(error, "message", None) or error)
    return re.split(r"Exception - |Error - ", text)[-1].strip()


def _short(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    return f"HTTP {status} {_provider_words(error)[:120]}" if status else _provider_words(error)[:120]


def _retry_after(error: Exception) -> float | None:
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _cost(litellm, response, model: str, usage) -> float | None:
    """Dollars for this call, or None when litellm has no price (never an exception).

    A model served through an OpenAI-compatible base (`openai/deepseek-reasoner` at
    api.deepseek.com) is priced under its bare name and that name's own provider.
    """
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:
        pass
    bare = model.split("/", 1)[-1]
    info = litellm.model_cost.get(bare)
    if not info or usage is None:
        return None
    try:
        prompt, completion = litellm.cost_per_token(
            model=bare, custom_llm_provider=info.get("litellm_provider"),
            prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
        return float(prompt + completion)
    except Exception:
        return None


def _price_known(litellm, model: str) -> bool:
    return any(name in litellm.model_cost for name in (model, model.split("/", 1)[-1]))


def _read_replay(path: Path) -> tuple[list[str], str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LLMError(f"cannot read replay file {path}: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("replies"), list):
        replies, model = data["replies"], data.get("model")
    elif isinstance(data, dict) and isinstance(data.get("messages"), list):
        replies = [m["content"] for m in data["messages"] if m.get("role") == "assistant"]
        model = next((u.get("model") for u in data.get("usage", [])), None)
    else:
        raise LLMError(f"{path} is neither a replay file ({{\"replies\": [...]}}) "
                       f"nor a transcript.json ({{\"messages\": [...]}})")
    if not all(isinstance(r, str) for r in replies):
        raise LLMError(f"{path}: every recorded reply must be text")
    return replies, model
