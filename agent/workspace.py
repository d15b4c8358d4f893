"""Stage 2 — the workspace: `results/<timestamp>_<name>/`, a copy of the template that is its own git repo.

Its first commit holds the template, the idea and the baseline results (`run_0/`). The baseline is
the unmodified template run once per (template content, profile) and cached, so a second idea on
the same template starts at once. A baseline that looks untrained is refused.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from agent import history, results, runner
from agent.idea import Idea
from agent.template import Template, load_template

BASELINE_RUN = "run_0"
# Bytecode is not part of an attempt; model checkpoints are too big for git history.
WORKSPACE_GITIGNORE = "__pycache__/\n*.pyc\n*.pt\n*.safetensors\n"


class WorkspaceError(Exception):
    """A workspace cannot be made or used; the message says why and what to do."""


@dataclass
class Workspace:
    path: Path
    idea: Idea
    template: Template
    profile: str | None

    @property
    def name(self) -> str:
        return self.path.name

    def read(self, rel: str) -> str:
        file = self.path / rel
        return file.read_text(encoding="utf-8") if file.exists() else ""

    def editable_files(self) -> dict[str, str]:
        return {rel: self.read(rel) for rel in self.template.editable if (self.path / rel).exists()}

    def run_env(self) -> dict[str, str]:
        return {"SAE_PROFILE": self.profile} if self.profile else {}

    def baseline(self) -> dict:
        return results.load_results(self.path / BASELINE_RUN)


def cache_dir() -> Path:
    return Path(os.environ.get("SAE_CACHE_DIR", Path.home() / ".cache" / "sae-agent"))


def _copy_template(template: Template, target: Path) -> None:
    for rel in template.files():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template.root / rel, target / rel)


def _new_path(parent: Path, name: str) -> Path:
    """A new, empty folder `<timestamp>_<name>[_N]`, made here. mkdir is atomic: two ideas (or two
    processes) started in the same second get different folders, and none is ever overwritten."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in itertools.count(1):
        path = parent / (f"{stamp}_{name}" if n == 1 else f"{stamp}_{name}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def create(idea: Idea, results_dir: Path, profile: str | None = None, *,
           timeout: float = 3600, on_line: Callable[[str], None] | None = None,
           executor=None) -> Workspace:
    """Make the workspace, produce or reuse the baseline, and commit both."""
    template = load_template(idea.template_dir)
    profile = template.choose_profile(profile or idea.profile)
    path = _new_path(Path(results_dir), idea.name)
    _copy_template(template, path)
    shutil.copy2(idea.path, path / "idea.md")
    (path / "idea.json").write_text(json.dumps(idea.to_json(), indent=2) + "\n")
    (path / "profile.json").write_text(json.dumps({"profile": profile}) + "\n")
    (path / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    history.init_repo(path)
    ws = Workspace(path=path, idea=idea, template=template, profile=profile)
    _baseline(ws, timeout=timeout, on_line=on_line, executor=executor)
    return ws


def _baseline(ws: Workspace, *, timeout: float, on_line, executor=None) -> None:
    cached = cache_dir() / "baselines" / f"{ws.template.name}-{ws.template.fingerprint()}-{ws.profile}"
    cached.parent.mkdir(parents=True, exist_ok=True)
    # One process computes a baseline; another one started meanwhile waits here, then reuses it.
    lock = FileLock(str(cached) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_line:
            on_line(f"[agent] waiting for another process to finish the baseline {cached.name}")
        lock.acquire()
    try:
        _baseline_locked(ws, cached, timeout=timeout, on_line=on_line, executor=executor)
    finally:
        lock.release()


def _baseline_locked(ws: Workspace, cached: Path, *, timeout: float, on_line, executor) -> None:
    started = time.monotonic()
    if (cached / "final_info.json").exists():
        shutil.copytree(cached, ws.path / BASELINE_RUN)
        source = f"cached baseline from {cached}"
    else:
        result = runner.run_experiment(
            ws.path, BASELINE_RUN, command=ws.template.argv(BASELINE_RUN), timeout=timeout,
            env_allow=ws.template.allowed_env(ws.profile), extra_env=ws.run_env(), on_line=on_line,
            executor=executor, **ws.template.resource_limits(ws.profile))
        if result.status != "ok":
            _commit_baseline(ws, "failed", time.monotonic() - started, error=result.error)
            raise WorkspaceError(
                f"the baseline (the unmodified template, profile {ws.profile}) did not run: "
                f"{result.error or result.status}.\n  Its log is {result.log_path}; the workspace "
                f"{ws.path} was kept for inspection. Fix the template or the environment and retry.")
        source = "baseline run of the unmodified template"
    try:
        baseline = ws.baseline()
    except results.ResultsError as exc:
        _commit_baseline(ws, "failed", time.monotonic() - started, error=str(exc))
        raise WorkspaceError(f"the baseline produced no usable results: {exc}") from None
    problems = results.untrained_problems(baseline)
    if problems:
        _commit_baseline(ws, "untrained", time.monotonic() - started, error=problems[0])
        raise WorkspaceError(
            "the baseline SAE looks untrained, so every comparison against it would be meaningless:\n  - "
            + "\n  - ".join(problems)
            + f"\n  Refusing to start. Check the template's training settings ({ws.path / BASELINE_RUN}).")
    if not (cached / "final_info.json").exists():  # renamed into place: never read half-written
        staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(ws.path / BASELINE_RUN, staging)
        shutil.rmtree(cached, ignore_errors=True)
        staging.rename(cached)
    _commit_baseline(ws, "baseline", time.monotonic() - started, source=source,
                     summary=results.subject_summary(None, baseline))


def _commit_baseline(ws: Workspace, status: str, seconds: float, *, error: str | None = None,
                     source: str = "", summary: str = "") -> None:
    if status == "baseline":
        subject = f"run 0: baseline — {summary}" if summary else "run 0: baseline"
    else:
        subject = f"run 0: baseline {status} — {error}"
    trailers = {"Run": "0", "Attempt": "1", "Status": status, "Duration": f"{seconds:.1f}s",
                "Model": "template", "Profile": str(ws.profile)}
    if error:
        trailers["Error"] = error.splitlines()[0][:200]
    body = f"Idea: {ws.idea.title}\nTemplate: {ws.template.name} ({ws.template.fingerprint()})\n{source}"
    history.commit_attempt(ws.path, subject=subject[:200], body=body, trailers=trailers)


def open_workspace(path: Path) -> Workspace:
    """Reopen an existing workspace (resume, replay)."""
    path = Path(path)
    if not (path / "idea.json").is_file() or not (path / ".git").exists():
        raise WorkspaceError(f"{path} is not a workspace (it needs idea.json and a git repository); "
                             "give a folder made by `python -m agent run`.")
    try:
        data = json.loads((path / "idea.json").read_text())
        data["path"] = Path(data["path"])
        idea = Idea(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise WorkspaceError(f"{path}/idea.json is missing or unreadable ({exc}); is this a workspace?") from None
    template = load_template(path)  # the workspace carries its template.json
    profile = json.loads((path / "profile.json").read_text()).get("profile") \
        if (path / "profile.json").exists() else None
    return Workspace(path=path, idea=idea, template=template, profile=profile)
