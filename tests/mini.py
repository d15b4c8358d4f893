"""What the loop tests share: the mini template (tests/data/mini_template: no torch, runs in a
blink), the model name the strict loopback server answers to, and the replies they script.

The fixture `idea` (a mini-template idea with its own cache) is in conftest.py."""

from pathlib import Path

from agent.cli import main

MINI = Path(__file__).resolve().parent / "data" / "mini_template"
MODEL = "openai/deepseek-reasoner"   # reached at the fake server's api_base, as a real provider


def block(search: str, replace: str, path: str = "experiment.py") -> str:
    """One SEARCH/REPLACE block for `path`, as aider's diff format writes it."""
    search, replace = search.rstrip("\n"), replace.rstrip("\n")
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"


def notes(line: str) -> str:
    """The write-up reply: one line added to notes.txt, then ALL_COMPLETED."""
    return "Notes.\n\n" + block("# Notes\n", f"# Notes\n{line}\n", "notes.txt") + "\nALL_COMPLETED\n"


def mini_idea(folder: Path, max_runs: int = 2) -> Path:
    """An idea on the mini template: raise the accuracy."""
    path = folder / "ideas" / "mini_idea.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\ntemplate: {MINI}\nmax_runs: {max_runs}\n---\n# Raise the accuracy\n\n"
                    "## Experiment\n1. Raise it.\n2. Measure it.\n")
    return path


# The replies most scenarios script: a run that fails, its fix, the write-up.
PLANT_ERROR = "Run 1: raise the accuracy.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY / 0\n")
FIX_ERROR = "Fix the division.\n\n" + block("    accuracy = ACCURACY / 0\n", "    accuracy = ACCURACY + 0.05\n")
NOTES = notes("Run 1 raised top-1 accuracy by 0.05.")


def run_agent(idea: Path, results: Path, *extra, fake=None) -> int:
    """`agent run IDEA --results RESULTS [extra]` in this process; with `fake`, against that server."""
    args = ["run", str(idea), "--results", str(results)]
    if fake is not None:
        args += ["--model", MODEL, "--api-base", fake.url]
    return main(args + list(extra))


def workspace_of(results: Path) -> Path:
    (ws,) = [p for p in results.iterdir() if p.is_dir()]
    return ws


def last_user(request) -> str:
    """The last user message of a request the fake server received."""
    return [m for m in request.messages if m["role"] == "user"][-1]["content"]
