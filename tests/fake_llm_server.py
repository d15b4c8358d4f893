"""tests/fake_llm.py's server as a process of its own: a stand-in for a model server command.

    python tests/fake_llm_server.py --port PORT [--reply TEXT] [--delay SECONDS] [--pid-file F]

Waits `--delay` seconds (a model loading), then listens on 127.0.0.1:PORT: GET /health and
/v1/models answer as llama.cpp's server does, POST /v1/chat/completions answers `--reply` to every
request (the same strict rules as fake_llm). Stops on SIGTERM. tests/test_local_model.py starts it
through $SAE_AGENT_LOCAL_SERVER, the way `--model local:…` starts a real server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_llm  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", default="ALL_COMPLETED")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--pid-file")
    args = p.parse_args()
    if args.pid_file:
        Path(args.pid_file).write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(args.delay)

    class Endless(fake_llm.FakeLLM):
        """Every request gets the reply: a script that never runs out."""
        def _next_item(self, messages=None):
            return args.reply

    fake = Endless(models={"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    class Handler(fake_llm._handler_for(fake)):
        def do_GET(self):  # /v1/models as FakeLLM answers it; /health as llama.cpp's server does
            if self.path.rstrip("/") == "/health":
                return self._send(200, {"status": "ok"})
            return super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
