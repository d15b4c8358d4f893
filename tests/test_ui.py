"""Output a person can read: no markup injection, no hard wraps off a terminal, logging and agent.log.

The loop tests drive the real CLI (strict loopback provider, mini template, real runs) and read
what reached stdout/stderr, the workspace's agent.log and its git history.
"""

import io
import os
import subprocess
import sys

import git
import pytest
from rich.console import Console

from agent import history, logs, ui
from agent.cli import main
from mini import MINI, MODEL, NOTES, block, workspace_of

REPO = MINI.parent.parent.parent
GOOD = "Raise it.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")
PLACEHOLDER = "Shorter.\n\n" + block("def train():\n    accuracy = ACCURACY\n    return accuracy\n",
                                     "def train():\n    # [rest of code]\n    pass\n")
MARKUP_ERROR = "Check it.\n\n" + block(
    "    accuracy = ACCURACY\n",
    "    accuracy = ACCURACY\n    if accuracy:\n        raise ValueError('closing tag [/red] and [bold]open')\n")
AFTER_ERROR = "Undo.\n\n" + block("    if accuracy:\n        raise ValueError('closing tag [/red] and [bold]open')\n",
                                  "    accuracy += 0.05\n")


@pytest.fixture
def idea(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "ideas" / "mini_idea.md"
    path.parent.mkdir()
    path.write_text(f"---\ntemplate: {MINI}\nmax_runs: 1\n---\n# Raise the accuracy\n\n"
                    "## Experiment\n1. Raise it.\n2. Measure it.\n")
    return path


def run(idea, results, fake, *extra):
    return main(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake.url,
                 "--no-smoke", *extra])


def lines_with(text: str, *words: str) -> list[str]:
    return [ln for ln in text.splitlines() if all(w in ln for w in words)]


# -- the view takes plain text ------------------------------------------------------------------

def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return ui.make_console(file=buffer, color_system=None), buffer


def test_view_shows_markup_like_text_verbatim():
    console, out = plain_console()
    view = ui.LiveView(console, "idea", 1)
    view.say(("run 1 attempt 1 failed", "red"), ": ", "ValueError: closing tag [/red] and [bold]open")
    view.say("experiment.py:2: placeholder comment `# [rest of code]`", style="yellow")
    view.log("[/] a run's own output line [x]")
    text = out.getvalue()
    assert "run 1 attempt 1 failed: ValueError: closing tag [/red] and [bold]open" in text
    assert "`# [rest of code]`" in text
    assert "[/] a run's own output line [x]" in text


def test_console_off_a_terminal_never_wraps_but_a_terminal_does():
    long = "word " * 60 + "[/red] end"
    console, out = plain_console()
    console.print(ui.message(("error:", "red"), " ", long))
    assert out.getvalue() == f"error: {long}\n"
    tty = io.StringIO()
    ui.make_console(file=tty, width=80, force_terminal=True, color_system=None).print(ui.message(long))
    assert max(len(ln) for ln in tty.getvalue().splitlines()) <= 80


def test_a_reply_off_a_terminal_is_printed_as_written_and_rendered_on_one():
    """rich's markdown lays lists and code blocks out at 80 columns and crops them; off a terminal
    the reply's source comes out line for line instead."""
    bullet = "- Run 1: the idea as specified: 90th-percentile similarity mask over |cos| of decoder directions"
    code = "    inhibition = self.gamma * (self.similar @ self.ema) / self.neighbours.clamp(min=1) / self.ema.mean()"
    reply = f"Plan:\n{bullet}\n\n```python\n{code}\n```\n"
    console, out = plain_console()
    ui.print_markdown(console, reply)
    assert out.getvalue() == reply + "\n"
    tty = io.StringIO()
    ui.print_markdown(ui.make_console(file=tty, width=80, force_terminal=True, color_system=None), reply)
    assert "• Run 1" in tty.getvalue() and max(len(ln) for ln in tty.getvalue().splitlines()) <= 80


# -- through the loop -----------------------------------------------------------------------------

def test_bracketed_text_from_runs_and_replies_reaches_the_user(fake_llm, idea, tmp_path, capsys):
    fake_llm.script([PLACEHOLDER, MARKUP_ERROR, AFTER_ERROR, NOTES])
    results = tmp_path / "results"
    assert run(idea, results, fake_llm) == 0
    out = capsys.readouterr().out
    assert lines_with(out, "placeholder comment `# [rest of code]`"), out
    assert lines_with(out, "run 1 attempt 2 failed: ValueError: closing tag [/red] and [bold]open"), out

    ws = workspace_of(results)
    repo = git.Repo(ws)
    assert not repo.is_dirty(untracked_files=True), "agent.log is committed with the attempts"
    log = repo.git.show("HEAD:agent.log")
    assert lines_with(log, "INFO", "agent.view", "gate: the edit was not run")
    assert lines_with(log, "run 1 attempt 2 failed: ValueError: closing tag [/red] and [bold]open")
    assert lines_with(log, "waiting for the LLM"), "phase changes are in the log, with times"
    failed = [a for a in history.read_history(ws) if a.status == "failed"][0]
    assert "run 1 attempt 2 failed" in repo.git.show(f"{failed.sha}:agent.log"), \
        "each attempt's commit holds the log up to that attempt"


def test_retry_notices_go_through_logging_to_stderr_and_agent_log(fake_llm, idea, tmp_path, capsys):
    from fake_llm import error
    fake_llm.script([error(429, "Rate limit reached, slow down"), GOOD, NOTES])
    results = tmp_path / "results"
    assert run(idea, results, fake_llm) == 0
    err = capsys.readouterr().err
    assert lines_with(err, "WARNING", "retry 1 of"), err
    log = (workspace_of(results) / "agent.log").read_text()
    assert lines_with(log, "WARNING", "agent.coder", "retry 1 of")


def test_quiet_hides_warnings_and_run_output(fake_llm, idea, tmp_path, capsys):
    from fake_llm import error
    fake_llm.script([error(429, "Rate limit reached"), GOOD, NOTES])
    assert run(idea, tmp_path / "results", fake_llm, "-q") == 0
    out = capsys.readouterr()
    assert "retry 1 of" not in out.err
    assert "waiting for the LLM" not in out.out
    assert "run 1 succeeded" in out.out, "results still reach the user"


def test_lines_after_the_last_commit_wait_in_git_and_come_back_on_resume(fake_llm, idea, tmp_path):
    from fake_llm import error
    fake_llm.script([error(400, "Model Not Exist")])
    results = tmp_path / "results"
    assert run(idea, results, fake_llm) == 1
    ws = workspace_of(results)
    repo = git.Repo(ws)
    assert "agent.log" not in repo.git.status("--porcelain"), "the stop message leaves agent.log clean"
    pending = (os.path.join(repo.git_dir, logs.PENDING_FILE))
    assert "stopped:" in open(pending).read()

    fake_llm.script([GOOD, NOTES])
    assert main(["resume", str(ws), "--model", MODEL, "--api-base", fake_llm.url, "--no-smoke"]) == 0
    assert [a.status for a in history.read_history(ws)][-2:] == ["success", "notes"]
    log = repo.git.show("HEAD:agent.log")
    assert log.index("stopped: the LLM call failed") < log.index("run 1 succeeded")
    assert not os.path.exists(pending)


# -- the CLI off a terminal ----------------------------------------------------------------------

def test_cli_errors_stay_on_one_line_without_a_terminal(tmp_path):
    deep = tmp_path.joinpath(*[f"a_rather_long_folder_name_{i}" for i in range(8)])
    deep.mkdir(parents=True)
    bad = deep / "idea [draft].md"
    bad.write_text("---\nmax_runs: zero\n---\n# T\n## Experiment\n1. x\n")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", str(bad), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert lines_with(proc.stderr, "error:", str(bad), "not a positive whole number"), proc.stderr


def test_verbose_shows_info_records_on_stderr(fake_llm, idea, tmp_path, capsys):
    fake_llm.script([GOOD, NOTES])
    assert run(idea, tmp_path / "results", fake_llm, "-v") == 0
    err = capsys.readouterr().err
    assert lines_with(err, "INFO", f"reply from {MODEL}: 100 prompt + 20 completion tokens"), err
    log = (workspace_of(tmp_path / "results") / "agent.log").read_text()
    assert lines_with(log, "agent.coder", "reply from")


def test_workspaces_go_under_the_current_directory_by_default(fake_llm, idea, tmp_path, monkeypatch):
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    fake_llm.script([GOOD, NOTES])
    assert main(["run", str(idea), "--model", MODEL, "--api-base", fake_llm.url, "--no-smoke"]) == 0
    (ws,) = (here / "results").iterdir()
    assert ws.name.endswith("_mini_idea") and (ws / "agent.log").is_file()


def test_a_chatty_run_is_drawn_at_a_bounded_rate_and_the_rest_is_counted():
    import io

    from rich.console import Console

    from agent import ui
    out = io.StringIO()
    view = ui.LiveView(Console(file=out, width=200), "idea", 1)
    for i in range(20_000):
        view.log(f"line {i}")
    view.set(phase="committing")            # a phase change says how many were not drawn
    text = out.getvalue()
    drawn = sum(1 for line in text.splitlines() if line.startswith("line "))
    assert drawn < 20_000 and drawn >= ui.LINES_PER_SECOND
    skipped = sum(int(part.split(" lines")[0]) for part in text.split("[... ")[1:])
    assert drawn + skipped == 20_000 and "log.txt has every one" in text
