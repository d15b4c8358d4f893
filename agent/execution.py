"""One execution path for every run of a workspace: prepare, train in a box, evaluate in another.

The loop, the baseline and `replay` all run attempts through `Pipeline.run` (where each step
executes, here or as a Slurm job, is its `executor`: agent/executors.py):

1. **prepare** (once per profile and smoke setting): the pristine harness computes every cached
   entry the runs need (`python -m harness.prepare`). Trusted code, before any generated code runs.
2. **train**: `python experiment.py --out_dir=run_i` in a box (agent/sandbox.py) that can read the
   training activations and nothing else of the cache; it exports the SAE and exits.
3. **evaluate**: `python -m harness.evaluate_run` from the pristine harness, in a second box, on
   the exported SAE. Only this step writes `final_info.json`; the agent copies it into the run
   folder and records its SHA-256. A results file experiment.py wrote itself is a failure.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent import runner, sandbox
from agent.process import RunResult, RunStatus
from agent.template import Template

RESULT_FILE = "final_info.json"
EVAL_OUT = "eval_out"
EVAL_LOG = "eval_log.txt"
STAGE_FOLDER = "stages"   # under the cache folder: outside every repository, shared with cluster nodes
# Files a run may not leave in its run folder: the agent writes the logs, the evaluator the results
# (a template without an evaluator keeps the results its experiment writes).
PREPARE_LOG = "prepare_log.txt"   # in the first run that computed the profile's cached data
AGENT_LOGS = ("log.txt", EVAL_LOG, PREPARE_LOG)


@dataclass
class Step:
    """What one attempt's execution came to."""
    result: RunResult                 # the step that decided: training, or evaluation if training worked
    phase: str                        # "train" | "evaluate"
    box: str                          # "bwrap" | "staged"
    results_sha256: str | None = None
    problem: str | None = None        # the agent's own finding, e.g. a results file the run wrote itself
    skipped: list[str] = field(default_factory=list)   # what did not come back from the box

    @property
    def ok(self) -> bool:
        return self.result.status == RunStatus.OK and self.problem is None


def cache_dir() -> Path:
    return Path(os.environ.get("SAE_CACHE_DIR") or Path.home() / ".cache" / "sae-agent")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _labelled_data_dirs() -> list[Path]:
    """The installed labelled data sets (sae-probes'): hidden from the training box."""
    spec = importlib.util.find_spec("sae_probes")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(list(spec.submodule_search_locations)[0]) / "data"]


class PrepareError(RuntimeError):
    pass


class Pipeline:
    """Runs attempts of one workspace, each step staged and boxed; `protected` are the pristine
    harness files (path -> bytes)."""

    def __init__(self, workspace: Path, template: Template, profile: str | None, *,
                 protected: dict[str, bytes], box: str | None = None, timeout: float = 3600,
                 on_line: Callable[[str], None] | None = None, python: str | None = None, executor=None):
        self.path = Path(workspace)
        self.template, self.profile = template, profile
        self.protected = protected
        self.box = sandbox.choose(box)
        self.timeout, self.on_line = timeout, on_line
        # Where each step's argv runs (agent/executors.py): here, or as a Slurm job. The box wraps
        # the argv either way, so a job runs in the same box as a local run.
        self.executor = executor
        self.python = python or sys.executable
        self._prepared: dict[bool, dict] = {}
        self._prepare_log: dict[bool, list[str]] = {}
        # A template without an evaluator (a minimal test template) lets experiment.py write its
        # own results; the SAE template never does.
        self.evaluator = "harness/evaluate_run.py" in protected
        if self.box == "staged":
            sandbox.become_subreaper()
        # What an agent killed mid-run (kill -9) left behind; a live process's stage is never touched.
        sandbox.remove_stale_stages(cache_dir() / STAGE_FOLDER)

    # -- environment and boxes --------------------------------------------------------------

    def _env(self, smoke: bool, home: Path | None = None) -> dict[str, str]:
        env = {"SAE_CACHE_DIR": str(cache_dir()), "SAE_CACHE_READONLY": "1"}
        if self.profile:
            env["SAE_PROFILE"] = self.profile
        if smoke:
            env["SAE_SMOKE"] = "1"
        if os.environ.get("SAE_MODEL_DIR"):
            env["SAE_MODEL_DIR"] = os.environ["SAE_MODEL_DIR"]
        hub = self._prepared.get(smoke, {}).get("hub_cache")
        if hub:   # the weights prepare fetched, read-only in the box (whose $HOME is its own)
            env["HF_HUB_CACHE"] = hub
        if home is not None:   # the staged box: a private home; bwrap sets its own
            env["HOME"] = str(home)
        return env

    def _stage(self, out_dir: str, phase: str) -> Path:
        name = f"{self.path.name}-{out_dir}-{phase}".replace("/", "-")
        return sandbox.new_stage(cache_dir() / STAGE_FOLDER, name)

    def _network(self) -> bool:
        return bool(self.profile) and self.profile in self.template.network_profiles

    def _run(self, box: sandbox.Box, out_dir: str, command: list[str], log_path: Path, smoke: bool) -> RunResult:
        home = None
        if box.kind == "staged":
            home = box.stage / ".home"
            home.mkdir(exist_ok=True)
        before = sandbox.descendants() if box.kind == "staged" else set()
        try:
            return runner.run_experiment(
                self.path, out_dir, command=command, timeout=self.timeout,
                env_allow=self.template.allowed_env(self.profile), extra_env=self._env(smoke, home),
                on_line=self.on_line, python=self.python, cwd=box.stage, log_path=log_path, wrap=box.wrap,
                executor=self.executor, **self.template.resource_limits(self.profile))
        finally:
            if box.kind == "staged":
                sandbox.kill_leftovers(before)

    # -- the steps --------------------------------------------------------------------------

    def prepare(self, smoke: bool = False) -> dict:
        """The cache folders each step reads, computing what is missing (trusted, unboxed)."""
        if smoke in self._prepared:
            return self._prepared[smoke]
        stage = self._stage("prepare", "smoke" if smoke else "full")
        try:
            sandbox.stage_files(stage, self.protected)
            if not (stage / "harness" / "prepare.py").exists():   # a template without a prepare step
                self._prepared[smoke] = {"train": [], "eval": [], "models": None}
                return self._prepared[smoke]
            env = runner.child_env(self.template.allowed_env(self.profile), self._env(smoke))
            env.pop("SAE_CACHE_READONLY")
            proc = subprocess.Popen([self.python, "-m", "harness.prepare", "--json"], cwd=stage, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
            lines = self._prepare_log.setdefault(smoke, [])
            for line in proc.stderr:   # progress, as it happens
                lines.append(line.rstrip("\n"))
                if self.on_line:
                    self.on_line(lines[-1])
            out = proc.stdout.read()
            proc.wait()
        finally:
            sandbox.remove_stage(stage)
        if proc.returncode != 0:
            tail = "\n".join(lines[-15:])
            raise PrepareError(f"preparing the {self.profile} profile's cached data failed:\n{tail}")
        self._prepared[smoke] = json.loads(out.strip().splitlines()[-1])
        return self._prepared[smoke]

    def run(self, out_dir: str, *, smoke: bool = False, overrides: dict[str, object] | None = None,
            attach_stage: Path | None = None, command: list[str] | None = None) -> Step:
        """Train and evaluate the workspace's code as `out_dir`; `overrides` set hyperparameters of
        the staged experiment.py (the baseline's seeds and frontier), never the workspace's.
        `command`: another training command than the template's (a reference SAE of the harness).
        `attach_stage`: the stage of a Slurm job still training this run (a resumed agent follows
        it there instead of staging and submitting again; its job record is in `out_dir`)."""
        run_dir = self.path / out_dir
        if attach_stage is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        fresh = smoke not in self._prepared
        dirs = self.prepare(smoke)
        if fresh and self._prepare_log.get(smoke):   # what preparing printed stays with the run it delayed
            (run_dir / PREPARE_LOG).write_text("\n".join(self._prepare_log[smoke]) + "\n")
        train_stage = attach_stage or self._stage(out_dir, "train")
        try:
            if attach_stage is None:
                try:
                    files = {rel: sandbox.read_regular(self.path, rel) for rel in self.template.editable
                             if os.path.lexists(self.path / rel)}
                except sandbox.SandboxError as exc:
                    return Step(_refused(str(exc), run_dir), "train", self.box, problem=str(exc))
                if overrides and "experiment.py" in files:
                    files["experiment.py"] = override_assignments(files["experiment.py"], overrides)
                sandbox.stage_files(train_stage, {**files, **self.protected})
                (train_stage / out_dir).mkdir(parents=True)
            box = sandbox.Box(self.box, train_stage, writable=[train_stage / out_dir],
                              readable=[Path(p) for p in dirs["train"]], hidden=_labelled_data_dirs(),
                              network=self._network())
            result = self._run(box, out_dir, list(command or self.template.command), run_dir / "log.txt", smoke)
            written = [name for name in (RESULT_FILE,) if os.path.lexists(train_stage / out_dir / name)]
            for name in AGENT_LOGS + ((RESULT_FILE,) if self.evaluator else ()):
                _remove(train_stage / out_dir / name)
            skipped = sandbox.copy_back(train_stage / out_dir, run_dir)
            step = Step(result, "train", self.box, skipped=skipped)
            if not self.evaluator:
                if (run_dir / RESULT_FILE).is_file():
                    step.results_sha256 = sha256_file(run_dir / RESULT_FILE)
                return step
            if written and result.status == RunStatus.OK:
                step.problem = (f"experiment.py wrote {out_dir}/{RESULT_FILE} itself; only the harness's "
                                "evaluator writes results (experiment.py ends with harness.save_sae)")
            if not step.ok:
                return step

            result, wrote = self._evaluate(out_dir, train_stage / out_dir, smoke, "test", run_dir / RESULT_FILE)
            step = Step(result, "evaluate", self.box, skipped=skipped)
            if result.status == RunStatus.OK:
                if wrote:
                    step.results_sha256 = sha256_file(run_dir / RESULT_FILE)
                else:
                    step.problem = "the evaluator wrote no final_info.json"
            return step
        finally:
            sandbox.remove_stage(train_stage)

    def _evaluate(self, out_dir: str, artefacts: Path, smoke: bool, split: str, dest: Path) -> tuple[RunResult, bool]:
        """The harness's evaluator on the SAE saved in `artefacts`, in its own box; what it wrote is
        copied to `dest` (the second value says whether it wrote anything)."""
        dirs = self.prepare(smoke)
        stage = self._stage(out_dir, f"eval-{split}")
        try:
            sandbox.stage_files(stage, self.protected)
            sandbox.copy_back(artefacts, stage / out_dir)
            (stage / EVAL_OUT).mkdir()
            readable = [Path(p) for p in dirs["eval"]] + ([Path(dirs["models"])] if dirs.get("models") else [])
            box = sandbox.Box(self.box, stage, writable=[stage / EVAL_OUT], readable=readable,
                              network=self._network())
            command = ["{python}", "-m", "harness.evaluate_run", "--run", out_dir, "--out", EVAL_OUT,
                       "--split", split]
            log = self.path / out_dir / (EVAL_LOG if split == "test" else f"eval_{split}_log.txt")
            result = self._run(box, out_dir, command, log, smoke)
            produced = stage / EVAL_OUT / (RESULT_FILE if split == "test" else f"{split}_split.json")
            if result.status != RunStatus.OK or not produced.is_file() or produced.is_symlink():
                return result, False
            shutil.copyfile(produced, dest)
            return result, True
        finally:
            sandbox.remove_stage(stage)

    def evaluate_final(self, out_dir: str) -> Path | None:
        """Score the SAE saved in `out_dir` on the final split into `out_dir/final_split.json`."""
        if not self.evaluator:
            return None
        target = self.path / out_dir / "final_split.json"
        _, wrote = self._evaluate(out_dir, self.path / out_dir, False, "final", target)
        return target if wrote else None


def staged_as_now(workspace: Path, stage: Path, editable: list[str]) -> bool:
    """Whether `stage` holds the workspace's editable files as they are now (a job training them
    may be followed by a resumed agent; one training other code may not)."""
    stage, workspace = Path(stage), Path(workspace)
    if not stage.is_dir():
        return False
    for rel in editable:
        here, there = workspace / rel, stage / rel
        if os.path.lexists(here) != os.path.lexists(there):
            return False
        if os.path.lexists(here) and (here.is_symlink() or not here.is_file()
                                      or here.read_bytes() != there.read_bytes()):
            return False
    return True


class OverrideError(ValueError):
    """experiment.py has no hyperparameter of that name for the agent to set."""


def override_assignments(source: bytes, values: dict[str, object]) -> bytes:
    """experiment.py with hyperparameters set to `values`: the default of a field of its top-level
    `class Config` (`    seed: int = 0` becomes `    seed: int = 1  # set by the agent`), or, in
    a module without one, a top-level `name = ...` line."""
    text = source.decode("utf-8")
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise OverrideError(f"experiment.py does not parse, so no hyperparameter can be set: {exc}") from None
    lines = text.splitlines(keepends=True)
    config = next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Config"), None)
    for name, value in values.items():
        node = _assignment(config.body if config else tree.body, name)
        if node is None:
            where = "field in its `class Config`" if config else "top-level `name = ...` line"
            raise OverrideError(f"experiment.py has no `{name}` {where} to set to {value!r}")
        first = lines[node.lineno - 1]
        indent = first[:len(first) - len(first.lstrip())]
        annotation = f": {ast.get_source_segment(text, node.annotation)}" if isinstance(node, ast.AnnAssign) else ""
        newline = "\n" if lines[node.end_lineno - 1].endswith("\n") else ""
        lines[node.lineno - 1:node.end_lineno] = [f"{indent}{name}{annotation} = {value!r}  # set by the agent{newline}"]
        lines[node.lineno:node.lineno] = [""] * (node.end_lineno - node.lineno)   # later nodes keep their line numbers
    return "".join(lines).encode("utf-8")


def _assignment(body: list, name: str):
    """The last statement of `body` that gives `name` a value (`name = v` or `name: T = v`)."""
    found = None
    for node in body:
        if isinstance(node, ast.AnnAssign) and node.value is not None and getattr(node.target, "id", None) == name:
            found = node
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            found = node
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def _refused(error: str, run_dir: Path) -> RunResult:
    """A RunResult for a step the agent refused to start."""
    log = run_dir / "log.txt"
    log.write_text(f"not run: {error}\n")
    return RunResult(RunStatus.FAILED, None, 0.0, error, None, error, None, log)


def protected_from_template(template: Template) -> dict[str, bytes]:
    """The protected files as the agent's own template has them (for a workspace being made)."""
    return {str(rel): (template.root / rel).read_bytes() for rel in template.files()
            if _is_protected(str(rel), template.protected)}


def protected_from_commit(repo, sha: str, protected: tuple[str, ...]) -> dict[str, bytes]:
    """The protected files as the workspace's first commit has them: a run cannot have changed those."""
    tree = repo.commit(sha).tree
    return {b.path: b.data_stream.read() for b in tree.traverse()
            if b.type == "blob" and _is_protected(b.path, protected) and not b.path.endswith(".pyc")}


def _is_protected(rel: str, protected: tuple[str, ...]) -> bool:
    return any(rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in protected)
