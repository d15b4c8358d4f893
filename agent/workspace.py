"""Stage 2 — the workspace: `results/<timestamp>_<name>/`, a copy of the template that is its own git repo.

Its first commit holds the template, the idea and the baseline results (`run_0/`). The baseline is
the unmodified template run once per (template content, profile) and cached, so a second idea on
the same template starts at once. A baseline that looks untrained is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agent import execution, history, results
from agent.idea import Idea
from agent.template import Template, load_template

BASELINE_RUN = "run_0"
# Bytecode is not part of an attempt; model checkpoints are too big for git history.
WORKSPACE_GITIGNORE = "__pycache__/\n*.pyc\n*.pt\n*.pt2\n*.safetensors\n"


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

    def baseline_seeds(self) -> list[dict]:
        """Every seed of the baseline (run_0 itself first): their spread is the noise floor."""
        out = [self.baseline()]
        for seed in self.template.baseline_seeds[1:]:
            try:
                out.append(results.load_results(self.path / BASELINE_RUN / f"seed_{seed}"))
            except results.ResultsError:
                pass   # a workspace made before seeds were recorded: one seed only
        return out

    def baseline_frontier(self) -> list[dict]:
        """The baseline at other sparsity settings (seed 0 each), where they were run."""
        out = []
        for knob, values in self.template.frontier.items():
            for value in values:
                try:
                    out.append(results.load_results(self.path / frontier_dir(knob, value)))
                except results.ResultsError:
                    pass
        return out

    def protected_files(self) -> dict[str, bytes]:
        """The pristine harness: from the workspace's first commit, which no run can change."""
        repo = history.open_workspace(self.path)
        try:
            root = repo.git.rev_list("--max-parents=0", "HEAD").split()[0]
        except Exception:   # no commit yet: the workspace is being made from the agent's template
            return execution.protected_from_template(self.template)
        return execution.protected_from_commit(repo, root, self.template.protected)


def frontier_dir(knob: str, value) -> str:
    return f"{BASELINE_RUN}/frontier_{knob}_{value}"


def cache_dir() -> Path:
    return Path(os.environ.get("SAE_CACHE_DIR", Path.home() / ".cache" / "sae-agent"))


def _copy_template(template: Template, target: Path) -> None:
    for rel in template.files():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template.root / rel, target / rel)


def _new_path(parent: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    path = parent / f"{stamp}_{name}"
    if path.exists():  # never overwrite: two ideas with one name in the same second
        raise WorkspaceError(f"{path} already exists; it is never overwritten. Wait a second and retry.")
    return path


def create(idea: Idea, results_dir: Path, profile: str | None = None, *,
           timeout: float = 3600, on_line: Callable[[str], None] | None = None,
           sandbox: str | None = None) -> Workspace:
    """Make the workspace, produce or reuse the baseline, and commit both."""
    template = load_template(idea.template_dir)
    profile = template.choose_profile(profile or idea.profile)
    path = _new_path(Path(results_dir), idea.name)
    path.mkdir(parents=True)
    _copy_template(template, path)
    shutil.copy2(idea.path, path / "idea.md")
    (path / "idea.json").write_text(json.dumps(idea.to_json(), indent=2) + "\n")
    (path / "profile.json").write_text(json.dumps({"profile": profile}) + "\n")
    (path / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    history.init_repo(path)
    ws = Workspace(path=path, idea=idea, template=template, profile=profile)
    _baseline(ws, timeout=timeout, on_line=on_line, sandbox=sandbox)
    return ws


def _baseline(ws: Workspace, *, timeout: float, on_line, sandbox: str | None = None) -> None:
    cached = cache_dir() / "baselines" / f"{ws.template.name}-{ws.template.fingerprint()}-{ws.profile}"
    started = time.monotonic()
    if (cached / "final_info.json").exists():
        shutil.copytree(cached, ws.path / BASELINE_RUN)
        source = f"cached baseline from {cached}"
    else:
        executor = execution.Executor(ws.path, ws.template, ws.profile,
                                      protected=execution.protected_from_template(ws.template),
                                      box=sandbox, timeout=timeout, on_line=on_line)
        seeds = ws.template.baseline_seeds
        for seed in seeds:
            out_dir = BASELINE_RUN if seed == seeds[0] else f"{BASELINE_RUN}/seed_{seed}"
            try:
                step = executor.run(out_dir, overrides={"seed": seed} if len(seeds) > 1 else None)
            except execution.PrepareError as exc:
                raise WorkspaceError(f"{exc}\n  The workspace {ws.path} was kept; fix the environment and "
                                     "retry (`python -m agent prepare --profile P` shows the whole output).") from None
            if not step.ok:
                error = step.problem or step.result.error or step.result.status
                _commit_baseline(ws, "failed", time.monotonic() - started, error=error)
                raise WorkspaceError(
                    f"the baseline (the unmodified template, profile {ws.profile}, seed {seed}) did not run: "
                    f"{error}.\n  Its log is {step.result.log_path}; the workspace "
                    f"{ws.path} was kept for inspection. Fix the template or the environment and retry.")
        for knob, values in ws.template.frontier.items():
            for value in values:
                step = executor.run(frontier_dir(knob, value), overrides={"seed": seeds[0], knob: value})
                if not step.ok:   # the frontier is extra evidence: a point that fails is left out, said so
                    (on_line or print)(f"baseline frontier {knob}={value} failed: {step.problem or step.result.error}")
        source = ("baseline run of the unmodified template"
                  + (f", seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
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
    record = results.uncertainty_record(ws.baseline_seeds(), baseline)
    (ws.path / BASELINE_RUN / "intervals.json").write_text(json.dumps(record, indent=2) + "\n")
    if not (cached / "final_info.json").exists():
        shutil.copytree(ws.path / BASELINE_RUN, cached, dirs_exist_ok=True)
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
