"""The terminal view: a rich live status line under the streamed output of the run."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text


class LiveView:
    """Shows idea, run i/N, attempt, phase, elapsed time, tokens and cost while the loop works.

    Lines of the experiment's output are printed above the status (dimmed). When the console is
    not a terminal (CI, pipes) the status is printed as plain lines on each phase change instead.
    """

    def __init__(self, console: Console, idea: str, max_runs: int, coder=None):
        self.console = console
        self.idea = idea
        self.max_runs = max_runs
        self.coder = coder
        self.run = 0
        self.attempt = 0
        self.phase = "starting"
        self.started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> "LiveView":
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4,
                              transient=True, get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live:
            self._live.__exit__(*exc)
            self._live = None

    def set(self, *, run: int | None = None, attempt: int | None = None, phase: str | None = None) -> None:
        self.run = self.run if run is None else run
        self.attempt = self.attempt if attempt is None else attempt
        if phase and phase != self.phase:
            self.phase = phase
            if not self._live:
                self.console.print(f"[dim]{self.status_line()}[/dim]", highlight=False)

    def log(self, line: str) -> None:
        self.console.print(Text(line.rstrip("\n"), style="dim"), highlight=False)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def status_line(self) -> str:
        elapsed = time.monotonic() - self.started
        tokens = getattr(self.coder, "total_tokens", 0) or 0
        cost = getattr(self.coder, "total_cost", None)
        cost_text = f"${cost:.4f}" if cost else "$0"
        return (f"{self.idea} · run {self.run}/{self.max_runs} · attempt {self.attempt} · "
                f"{self.phase} · {elapsed:.0f}s · {tokens} tokens · {cost_text}")

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_row(Text("●", style="bold green"), Text(self.status_line(), style="bold"))
        return grid
