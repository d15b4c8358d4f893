"""A fake OpenAI-compatible chat server on 127.0.0.1 that is as strict as deepseek-reasoner.

The coder reaches it through litellm exactly as it would a real provider
(`--model openai/deepseek-reasoner --api-base http://127.0.0.1:PORT/v1`), so the tests exercise
litellm's request building, error mapping and timeouts, not a mock of them.

Rules enforced on every request (HTTP 400 with deepseek's error JSON, recorded in `violations`):
successive messages from the same role; a first or last non-system message not from the user;
`reasoning_content` in an input message; and one of ours, in the same spirit: reasoning written
into an assistant message's text (`<think>…</think>`, as local models send it) sent back.
A request that breaks a rule consumes no script item.

GET answers what a model server says of itself, when a test sets it: `models` is the body of
`GET /v1/models` (vLLM's `max_model_len`, llama.cpp's `meta.n_ctx_train`), `props` of llama.cpp's
`GET /props` (`default_generation_settings.n_ctx`); unset, 404. The paths asked are in `gets`.

The script is a list played in order, one item per accepted request:
    "text"                     a reply (with usage and a `reasoning_content`, as deepseek sends)
    reply(text, ...)           the same with chosen token counts, reasoning (None: no
                               `reasoning_content`, as local servers) or finish_reason
    truncated(text)            a reply cut at the output limit (finish_reason "length")
    error(status, message)     an HTTP error with an OpenAI-style error body
    delay(seconds, then)       sleep before answering `then` (to make the client time out)
    context_exceeded()         OpenAI's 400 `context_length_exceeded`
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SUCCESSIVE = ("deepseek-reasoner does not support successive user or assistant messages "
              "(messages[{a}] and messages[{b}] in your input). You should interleave the "
              "user/assistant messages in the message sequence.")
FIRST_NOT_USER = ("The first message (except the system message) of deepseek-reasoner must be "
                  "a user message, but an {role} message detected.")
LAST_NOT_USER = ("The last message of deepseek-reasoner must be a user message, or an "
                 "assistant message with prefix mode on (refer to "
                 "https://api-docs.deepseek.com/guides/chat_prefix_completion).")
REASONING_SENT = ("The reasoning_content is an intermediate result for display purposes only and "
                  "should not be included in the context for inference (messages[{i}]).")
THINK_SENT = ("fake_llm: messages[{i}] carries the model's reasoning (<think>) back to it; local "
              "servers take it as the answer's text and it wastes the context window.")
CONTEXT_EXCEEDED = ("This model's maximum context length is 65536 tokens. However, you requested "
                    "70123 tokens (70123 in the messages, 0 in the completion). Please reduce "
                    "the length of the messages or completion.")


@dataclass
class Reply:
    text: str
    reasoning: str | None = "Let me think about the SAE first."
    prompt_tokens: int = 100
    completion_tokens: int = 20
    finish_reason: str = "stop"


@dataclass
class Error:
    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = "invalid_request_error"


@dataclass
class Delay:
    seconds: float
    then: object = "late reply"


def reply(text: str, **kw) -> Reply:
    return Reply(text, **kw)


def truncated(text: str, **kw) -> Reply:
    return Reply(text, finish_reason="length", **kw)


def error(status: int, message: str, **kw) -> Error:
    return Error(status, message, **kw)


def delay(seconds: float, then: object = "late reply") -> Delay:
    return Delay(seconds, then)


def context_exceeded() -> Error:
    return Error(400, CONTEXT_EXCEEDED, code="context_length_exceeded")


@dataclass
class Request:
    """One POST as received: the decoded JSON body and whether a rule rejected it."""
    body: dict
    headers: dict
    violation: str | None = None

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])


@dataclass
class FakeLLM:
    host: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    models: dict | None = None
    props: dict | None = None
    gets: list[str] = field(default_factory=list)
    _script: list = field(default_factory=list)
    _keyed: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, items: list, key: str | None = None) -> None:
        """Queue replies (see the module docstring), played one per accepted request.

        With `key`, the replies go to a queue of their own, played to requests whose first user
        message contains `key` (e.g. an idea's title): ideas running in parallel each get theirs.
        """
        with self._lock:
            (self._keyed.setdefault(key, []) if key else self._script).extend(items)

    @property
    def remaining(self) -> int:
        return len(self._script) + sum(len(q) for q in self._keyed.values())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeLLM":
        self._server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, and every test stops one.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_item(self, messages: list[dict] | None = None):
        first_user = next((m.get("content", "") for m in messages or [] if m.get("role") == "user"), "")
        with self._lock:
            for key, queue in self._keyed.items():
                if key in str(first_user):
                    return queue.pop(0) if queue else None
            return self._script.pop(0) if self._script else None

    # -- the request, as the server sees it -------------------------------------------

    def handle(self, body: dict, headers: dict) -> tuple[int, dict, float]:
        """Returns (status, JSON body, seconds to wait before answering)."""
        request = Request(body, headers)
        self.requests.append(request)
        violation = check_deepseek_rules(body.get("messages", []))
        if violation:
            request.violation = violation
            self.violations.append(violation)
            return 400, _error_body(violation, "invalid_request_error", "invalid_request_error"), 0
        item = self._next_item(body.get("messages", []))
        if item is None:
            return 400, _error_body("fake_llm: no scripted reply left", "invalid_request_error",
                                    "script_exhausted"), 0
        wait = 0.0
        if isinstance(item, Delay):
            wait, item = item.seconds, item.then
        if isinstance(item, Error):
            return item.status, _error_body(item.message, item.type, item.code), wait
        if isinstance(item, str):
            item = Reply(item)
        return 200, _completion_body(item, body.get("model", "deepseek-reasoner")), wait


def check_deepseek_rules(messages: list[dict]) -> str | None:
    """The message deepseek-reasoner answers with a 400, or None if it would accept them."""
    for i, m in enumerate(messages):
        if "reasoning_content" in m:
            return REASONING_SENT.format(i=i)
        if m.get("role") == "assistant" and any(tag in str(m.get("content", "")) for tag in ("<think>", "</think>")):
            return THINK_SENT.format(i=i)
    for i in range(1, len(messages)):
        if messages[i].get("role") == messages[i - 1].get("role"):
            return SUCCESSIVE.format(a=i - 1, b=i)
    rest = [m for m in messages if m.get("role") != "system"]
    if not rest:
        return LAST_NOT_USER
    if rest[0].get("role") != "user":
        return FIRST_NOT_USER.format(role=rest[0].get("role"))
    if rest[-1].get("role") != "user":
        return LAST_NOT_USER
    return None


def _error_body(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _completion_body(item: Reply, model: str) -> dict:
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": item.text,
                        **({"reasoning_content": item.reasoning} if item.reasoning is not None else {})},
            "finish_reason": item.finish_reason,
        }],
        "usage": {"prompt_tokens": item.prompt_tokens,
                  "completion_tokens": item.completion_tokens,
                  "total_tokens": item.prompt_tokens + item.completion_tokens},
    }


def _handler_for(fake: FakeLLM):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, _error_body(f"no route {self.path}", "not_found", None))
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._send(400, _error_body("invalid JSON", "invalid_request_error", None))
            status, payload, wait = fake.handle(body, dict(self.headers))
            time.sleep(wait)
            self._send(status, payload)

        def _send(self, status: int, payload: dict):
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up: that is what a delay item is for

        def log_message(self, *args):
            pass  # keep pytest output clean

        def do_GET(self):
            fake.gets.append(self.path)
            path = self.path.rstrip("/")
            body = fake.models if path.endswith("/models") else fake.props if path.endswith("/props") else None
            if body is None:
                return self._send(404, _error_body(f"no route {self.path}", "not_found", None))
            self._send(200, body)

    return Handler
