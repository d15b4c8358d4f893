"""The terminal: the consoles and their factory, the name the user typed, and the rich live view.

Off a terminal (a pipe, a file, CI) nothing is hard-wrapped: a message is one line however long,
so `grep` finds it; on a terminal rich wraps to the window as usual. Text that comes from runs or
LLM replies is never read as rich markup: the view takes plain strings, styled only by the caller.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# A styled piece of a message: (plain text, rich style), as `rich.text.Text.assemble` takes it.
Part = str | tuple[str, str]

view_log = logging.getLogger("agent.view")  # what the view says, for the workspace's agent.log

_prog = "python -m agent"


class AgentConsole(Console):
    """A rich console that soft-wraps (never breaks a line) whenever its output is not a terminal.

    Decided at each print, not once: the file behind a console can change (tests capture stdout).
    """

    @property
    def soft_wrap(self) -> bool:  # read by Console.print when its soft_wrap argument is None
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:  # Console.__init__ assigns it; the property decides
        pass


def make_console(*, stderr: bool = False, file=None, **kwargs) -> Console:
    """The console every command prints to (stdout, or stderr for errors and log records)."""
    return AgentConsole(stderr=stderr, file=file, highlight=False, **kwargs)


# The two consoles of a command: what it did on stdout, errors and warnings on stderr. One pair,
# here, so the command line and the setup it calls print to the same place.
console = make_console()
err_console = make_console(stderr=True)


def print_unclipped(console: Console, renderable: RenderableType) -> None:
    """Print a table at its natural width when the output is not a terminal (no 80-column crop)."""
    if console.is_terminal:
        console.print(renderable)
        return
    need = Measurement.get(console, console.options.update_width(1_000_000), renderable).maximum
    wide = Console(file=console.file, width=max(need, console.width), highlight=False,
                   color_system=console.color_system, no_color=console.no_color,
                   force_terminal=False, soft_wrap=True)
    wide.print(renderable)


def print_text(console: Console, text: str | Text) -> None:
    """Plain text (a commit body, a log's tail, a diff): wrapped to the window on a terminal; off
    one, each line whole, whatever console it is given (not only ours soft-wraps by itself)."""
    console.print(text if isinstance(text, Text) else Text(text), soft_wrap=not console.is_terminal)


def print_markdown(console: Console, text: str) -> None:
    """An LLM's reply: rendered as markdown on a terminal; off one, exactly as it was written.

    rich lays lists, quotes and code blocks out at the console's width (80 columns in a pipe) and
    crops or pads their lines, so `show WS 1.1 | less` would lose the end of every long bullet and
    SEARCH/REPLACE line; the source itself is what a reader of a pipe or a file wants anyway.
    """
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        print_text(console, text)


# -- the name the user typed ------------------------------------------------------------------

def program_name(argv0: str | None = None) -> str:
    """`sae-agent` when run through the console script, else `python -m agent`."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    if not name or name in ("__main__.py", "-c", "-m") or name.endswith(".py"):
        return "python -m agent"
    return name


def set_prog(name: str) -> None:
    global _prog
    _prog = name


def prog() -> str:
    """The command to print in hints (`sae-agent log …` or `python -m agent log …`)."""
    return _prog


# -- the live view ------------------------------------------------------------------------------

def message(*parts: Part, style: str | None = None) -> Text:
    """Plain text pieces, each optionally styled, as one Text: brackets are shown, never parsed."""
    return Text.assemble(*parts, style=style or "")


LINES_PER_SECOND = 200   # experiment output drawn on screen; the rest is counted (log.txt has all)


class LiveView:
    """Shows idea, run i/N, attempt, phase, elapsed time, tokens and cost while the loop works.

    Lines of the experiment's output are printed above the status (dimmed). When the console is
    not a terminal (CI, pipes) the status is printed as plain lines on each phase change instead.
    `quiet` keeps the experiment's output and the phase lines off the screen (they are still in
    the run's log.txt and the workspace's agent.log).
    """

    def __init__(self, console: Console, idea: str, max_runs: int, coder=None, *, quiet: bool = False):
        self.console = console
        self.idea = idea
        self.max_runs = max_runs
        self.coder = coder
        self.quiet = quiet
        self.run = 0
        self.attempt = 0
        self.phase = "starting"
        self.started = time.monotonic()
        self._live: Live | None = None
        self._window_start, self._window_lines, self._skipped = time.monotonic(), 0, 0

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
            self._flush_skipped()
            self.phase = phase
            view_log.info("%s", self.status_line())
            if not self._live and not self.quiet:
                self.console.print(Text(self.status_line(), style="dim"))

    def log(self, line: str) -> None:
        """A line of the experiment's output. The log file already has it; the screen gets at most
        LINES_PER_SECOND of them, so a chatty run is never slowed down (or timed out) by drawing."""
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._window_lines = now, 0
            self._flush_skipped()
        if self._window_lines >= LINES_PER_SECOND:
            self._skipped += 1
            return
        self._window_lines += 1
        self.console.print(Text(line.rstrip("\n"), style="dim"))

    def _flush_skipped(self) -> None:
        if self._skipped:
            self.console.print(Text(f"[... {self._skipped} lines of output not shown here; the run's "
                                    "log.txt has every one]", style="dim"))
            self._skipped = 0

    def say(self, *parts: Part, style: str | None = None) -> None:
        """Tell the user something: plain text pieces, each a str or a (str, style) pair.

        `say(("run 1 failed", "red"), ": ", error)` colours only the prefix; the error is shown
        exactly as it came, brackets and all.
        """
        text = message(*parts, style=style)
        view_log.info("%s", text.plain)
        self.console.print(text)

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
