"""Stage 2b — the baseline: the unmodified template run into `run_0/` and its first commit.

Its seeds are the noise floor every change is judged against; its frontier (other sparsity
settings) and reference SAEs are context. All of it is run once per (template content, profile)
and cached, so a second idea on the same template starts at once; the seeds' final-split scores,
needed once at the end of every idea, are cached too. A baseline that looks untrained is
refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from agent import execution, history, results
from agent.attempt import Attempt, Status
from agent.ui import prog
from agent.workspace import BASELINE_RUN, Workspace, WorkspaceError, frontier_dir, reference_dir


def cache_path(ws: Workspace) -> Path:
    """Where a new workspace's baseline is cached: keyed by the template's content and the profile."""
    return execution.cache_dir() / "baselines" / f"{ws.template.name}-{ws.template.fingerprint()}-{ws.profile}"


def knobs(ws: Workspace) -> dict[str, object]:
    """The `Config` fields the agent sets in experiment.py to run the baseline, each with a value
    it takes: the seed (when there are several seeds, or a frontier) and the frontier's knobs. An
    edit must keep them (the gate's contract rule)."""
    seeds, frontier = ws.template.seeds_for(ws.profile), ws.template.frontier_for(ws.profile)
    out = {"seed": seeds[0]} if len(seeds) > 1 or frontier else {}
    out.update({knob: values[0] for knob, values in frontier.items() if values})
    return out


def check_overrides(ws: Workspace) -> None:
    """Refuse a seed or frontier knob that experiment.py has no hyperparameter for, before any run."""
    knobs_set = knobs(ws)
    if not knobs_set or not (ws.path / "experiment.py").is_file():
        return
    try:
        execution.override_assignments((ws.path / "experiment.py").read_bytes(), knobs_set)
    except execution.OverrideError as exc:
        raise WorkspaceError(f"the baseline cannot be run: {exc} (template.json's baseline_seeds and frontier "
                             f"name hyperparameters of {ws.template.root / 'experiment.py'})") from None


def establish(ws: Workspace, *, timeout: float = 3600, on_line: Callable[[str], None] | None = None,
              sandbox: str | None = None, executor=None) -> None:
    """Run the unmodified template (or reuse its cached runs) into `run_0/` and make the
    workspace's first commit. Raises WorkspaceError when there is no usable baseline."""
    cached = cache_path(ws)
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
        _baseline_locked(ws, cached, timeout=timeout, on_line=on_line, sandbox=sandbox, executor=executor)
    finally:
        lock.release()


def _baseline_locked(ws: Workspace, cached: Path, *, timeout: float, on_line, sandbox: str | None,
                     executor) -> None:
    started = time.monotonic()
    if (cached / "final_info.json").exists():
        shutil.copytree(cached, ws.path / BASELINE_RUN)
        source = f"cached baseline from {cached}"
    else:
        runs = execution.Pipeline(ws.path, ws.template, ws.profile,
                                      protected=execution.protected_from_template(ws.template),
                                      box=sandbox, timeout=timeout, on_line=on_line,
                                      executor=executor)
        seeds = ws.template.seeds_for(ws.profile)
        check_overrides(ws)
        for seed, out_dir in zip(seeds, ws.seed_dirs()):
            try:
                step = runs.run(out_dir, overrides={"seed": seed} if len(seeds) > 1 else None)
            except execution.PrepareError as exc:
                raise WorkspaceError(f"{exc}\n  The workspace {ws.path} was kept; fix the environment and "
                                     f"retry (`{prog()} prepare --profile P` shows the whole output).") from None
            if not step.ok:
                error = step.problem or step.result.error or step.result.status
                _commit_baseline(ws, Status.FAILED, time.monotonic() - started, error=error)
                raise WorkspaceError(
                    f"the baseline (the unmodified template, profile {ws.profile}, seed {seed}) did not run: "
                    f"{error}.\n  Its log is {step.result.log_path}; the workspace "
                    f"{ws.path} was kept for inspection. Fix the template or the environment and retry.")
        for knob, values in ws.template.frontier_for(ws.profile).items():
            for value in values:
                step = runs.run(frontier_dir(knob, value), overrides={"seed": seeds[0], knob: value})
                if not step.ok:   # the frontier is extra evidence: a point that fails is left out, said so
                    (on_line or print)(f"baseline frontier {knob}={value} failed: {step.problem or step.result.error}")
        _run_references(ws, runs, on_line)
        source = ("baseline run of the unmodified template"
                  + (f", seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ""))
    try:
        baseline = ws.baseline()
    except results.ResultsError as exc:
        _commit_baseline(ws, Status.FAILED, time.monotonic() - started, error=str(exc))
        raise WorkspaceError(f"the baseline produced no usable results: {exc}") from None
    problems = results.untrained_problems(baseline)
    if problems:
        _commit_baseline(ws, Status.UNTRAINED, time.monotonic() - started, error=problems[0])
        raise WorkspaceError(
            "the baseline SAE looks untrained, so every comparison against it would be meaningless:\n  - "
            + "\n  - ".join(problems)
            + f"\n  Refusing to start. Check the template's training settings ({ws.path / BASELINE_RUN}).")
    record = results.uncertainty_record(ws.baseline_seeds(), baseline, ws.baseline_frontier(), ws.baseline_references())
    (ws.path / BASELINE_RUN / "intervals.json").write_text(json.dumps(record, indent=2) + "\n")
    if not (cached / "final_info.json").exists():  # renamed into place: never read half-written
        staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(ws.path / BASELINE_RUN, staging)
        shutil.rmtree(cached, ignore_errors=True)
        staging.rename(cached)
    _commit_baseline(ws, Status.BASELINE, time.monotonic() - started, source=source,
                     summary=results.subject_summary(None, baseline))


def _run_references(ws: Workspace, runs: execution.Pipeline, on_line) -> None:
    """Each reference SAE of the template at k = the baseline's mean L0 over its seeds. Like the
    frontier it is context, not the noise floor: one that fails is left out, and said so."""
    if not ws.template.references:
        return
    try:
        seeds = ws.baseline_seeds()
    except results.ResultsError:
        return   # no usable baseline: said below, with what to do
    if results.untrained_problems(seeds[0]):
        return   # refused below: a reference beside an untrained baseline would cost a training for nothing
    l0s = [h["l0"] for seed in seeds for h in results.headline(seed).values() if h.get("l0")]
    if not l0s:
        return
    k = str(max(1, round(sum(l0s) / len(l0s))))
    for name, command in ws.template.references.items():
        step = runs.run(reference_dir(name), command=[part.replace("{k}", k) for part in command])
        if not step.ok:
            (on_line or print)(f"baseline reference {name} (k {k}) failed: {step.problem or step.result.error}")


def _commit_baseline(ws: Workspace, status: Status, seconds: float, *, error: str | None = None,
                     source: str = "", summary: str = "") -> None:
    if status == Status.BASELINE:
        subject = f"run 0: baseline — {summary}" if summary else "run 0: baseline"
    else:
        subject = f"run 0: baseline {status} — {error}"
    record = Attempt(run=0, attempt=1, status=status, duration=seconds, model="template",
                     profile=str(ws.profile), error=error.splitlines()[0][:200] if error else None)
    body = f"Idea: {ws.idea.title}\nTemplate: {ws.template.name} ({ws.template.fingerprint()})\n{source}"
    history.commit_attempt(ws.path, subject=subject[:200], body=body, trailers=record)


def final_split_scores(ws: Workspace, evaluate_final: Callable[[str], Path | None]) -> list[dict]:
    """Each baseline seed scored on the final split, with `evaluate_final(out_dir)` only where
    neither the workspace nor the cache holds its score. A score is cached under what it depends
    on, the seed's results, its exported SAE and the pristine harness, so any later idea on the same baseline (a
    resumed one too) reuses it, and a retrained baseline or a changed evaluator never does."""
    harness = hashlib.sha256(b"".join(k.encode() + v for k, v in sorted(ws.protected_files().items())))
    scores = []
    for rel in ws.seed_dirs():
        here = ws.path / rel / FINAL_SPLIT
        run = ws.path / rel
        if not (run / "final_info.json").is_file():
            continue   # a seed that left no results has nothing to score
        key = harness.copy()
        for file in [run / "final_info.json", *sorted(run.glob("sae_*"))]:   # the results and the exported SAE
            key.update(rel.encode() + file.name.encode() + file.read_bytes())
        cached = execution.cache_dir() / "final_split" / f"{key.hexdigest()[:32]}.json"
        if not here.is_file() and cached.is_file():
            shutil.copyfile(cached, here)
        if not here.is_file() and evaluate_final(rel) is None:
            continue
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")   # renamed into place
            shutil.copyfile(here, staging)
            staging.rename(cached)
        scores.append(json.loads(here.read_text()))
    return scores


FINAL_SPLIT = "final_split.json"
