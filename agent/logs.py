"""Logging: retry notices and warnings on the terminal through rich's RichHandler, and one
`agent.log` per workspace.

Everything under the `agent` logger (and Python warnings) goes to the terminal at the level that
`-q` / `-v` / `-vv` choose, and, while an idea runs, to `<workspace>/agent.log` (what the view said,
phase changes, retries, warnings, with timestamps). The loop commits the whole work tree, so the
log travels with each attempt. Lines written after the last commit (the "stopped: ..." at the end)
are set aside in the workspace's `.git/` so the tree stays clean, and are put back at the top of the
next session's log (resume): nothing is lost and nothing looks half-written.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

LOG_FILE = "agent.log"
PENDING_FILE = "sae-agent-pending.log"  # inside the workspace's .git/: not part of any attempt
LOGGERS = ("agent", "py.warnings")
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def terminal_level(verbosity: int) -> int:
    """-q → errors only, default → warnings (retries included), -v → info, -vv → debug."""
    return {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG if verbosity > 1 else logging.ERROR)


class TerminalHandler(RichHandler):
    """RichHandler on a terminal; off a terminal one plain `LEVEL message` line per record."""

    def render(self, *, record, traceback, message_renderable):
        if self.console.is_terminal:
            return super().render(record=record, traceback=traceback,
                                  message_renderable=message_renderable)
        return Text.assemble(self.get_level_text(record), " ", message_renderable)


def _not_the_view(record: logging.LogRecord) -> bool:
    return not record.name.startswith("agent.view")  # the view prints its own messages


def setup_logging(verbosity: int, console: Console) -> None:
    """Send the agent's records to `console` (stderr); idempotent, so tests may call main() often."""
    handler = TerminalHandler(console=console, level=terminal_level(verbosity), show_path=False,
                              markup=False, rich_tracebacks=False, keywords=[])
    handler.addFilter(_not_the_view)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, TerminalHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    logging.captureWarnings(True)


@contextmanager
def workspace_log(workspace: Path, verbosity: int = 0) -> Iterator[Path]:
    """Append this session's records to `<workspace>/agent.log` while the block runs."""
    workspace = Path(workspace)
    file = workspace / LOG_FILE
    pending = _git_dir(workspace) / PENDING_FILE
    if pending.exists():  # what the last session wrote after its last commit
        with file.open("ab") as out:
            out.write(pending.read_bytes())
        pending.unlink()
    handler = logging.FileHandler(file, encoding="utf-8", delay=True)  # no file until a record
    handler.setFormatter(logging.Formatter(FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        yield file
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
        set_aside_uncommitted(workspace)


def set_aside_uncommitted(workspace: Path) -> None:
    """Move the lines of agent.log that HEAD does not hold into .git/, restoring HEAD's file."""
    import git

    file = Path(workspace) / LOG_FILE
    if not file.exists():
        return
    try:
        repo = git.Repo(workspace)
        committed = (repo.head.commit.tree / LOG_FILE).data_stream.read()
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return  # no commit yet: nothing to compare with
    except KeyError:
        committed = b""
    current = file.read_bytes()
    if current == committed or not current.startswith(committed):
        return  # all committed, or edited by hand: leave it as it is
    with (Path(repo.git_dir) / PENDING_FILE).open("ab") as out:
        out.write(current[len(committed):])
    if committed:
        file.write_bytes(committed)
    else:
        file.unlink()


def _git_dir(workspace: Path) -> Path:
    dot_git = workspace / ".git"
    if dot_git.is_file():  # a worktree or submodule: `gitdir: <path>`
        return (workspace / dot_git.read_text().split(":", 1)[1].strip()).resolve()
    return dot_git
