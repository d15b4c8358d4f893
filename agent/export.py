"""Export a workspace to the trackers researchers already use: MLflow and Weights & Biases.

One tracked run per attempt (every commit of the workspace): the commit trailers as parameters and
tags, the headline and core metrics of each SAE, the per-step loss curve (`loss_curve` in
`final_info.json`), the plots and the code diff as artefacts, and the commit as the run's source
version. Runs are keyed by the commit sha, so exporting twice adds only what is new. Everything is
read from git, like `log` and `report`; the workspace is never written.

    python -m agent export WORKSPACE --to mlflow [--uri URI] [--project NAME]
    python -m agent export WORKSPACE --to wandb  [--uri DIR]   (offline without an API key)
"""

from __future__ import annotations

import math
import netrc
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agent import history
from agent.attempt import WITH_RESULTS, Status
from agent.history import Attempt

DEFAULT_PROJECT = "sae-agent"
COMMIT_TAG = "sae_agent.commit"        # the key exported runs are found by
COMPLETE_TAG = "sae_agent.complete"    # set last: a run without it was cut short and is redone
WORKSPACE_TAG = "sae_agent.workspace"
# MLflow run status per attempt status: it ran and worked, it did not, it was stopped.
MLFLOW_STATUS = {Status.SUCCESS: "FINISHED", Status.BASELINE: "FINISHED", Status.NOTES: "FINISHED",
                 Status.INTERRUPTED: "KILLED"}
PARAM_TRAILERS = ("Run", "Attempt", "Status", "Model", "Profile", "Duration", "Cost", "Tokens")


class ExportError(Exception):
    """The tracker cannot be used as asked (not installed, bad URI); exit status 2."""


@dataclass
class AttemptRecord:
    """What one attempt becomes in a tracker: plain data, tracker-neutral."""
    attempt: Attempt
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    loss_curves: dict[str, list[tuple[int, float]]]   # metric key → (step, loss)
    artefacts: dict[str, bytes] = field(default_factory=dict)  # relative path → content
    start_ms: int = 0
    end_ms: int = 0


@dataclass
class Exported:
    label: str
    sha: str
    run_id: str
    existed: bool  # found from an earlier export, left as it was


# -- reading the workspace --------------------------------------------------------------------

def attempt_records(workspace: Path) -> list[AttemptRecord]:
    """One record per attempt, oldest first."""
    from agent import review

    workspace = Path(workspace)
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    records = []
    for a in attempts:
        prev = history.previous_attempt(attempts, a)
        info = review.final_info_at(repo, a) if a.status in WITH_RESULTS else None
        diff = repo.git.diff(prev.sha, a.sha, "--", ".", *review.DIFF_EXCLUDES) if prev else ""
        records.append(_record(workspace, repo, a, info, diff))
    return records


def _record(workspace: Path, repo, a: Attempt, info: dict | None, diff: str) -> AttemptRecord:
    params = {k.lower(): v for k, v in a.trailers.items() if k in PARAM_TRAILERS and v}
    params.update(_hyperparameters(info))
    tags = {COMMIT_TAG: a.sha, WORKSPACE_TAG: str(workspace.resolve()), "status": str(a.status),
            "run": str(a.run), "attempt": str(a.attempt), "subject": a.subject[:5000]}
    if a.error:
        tags["error"] = a.error[:5000]
    artefacts = {f"plots/{path}": data for path, data in _committed_pngs(repo, a.sha)}
    if diff.strip():
        artefacts["diff.patch"] = (diff + "\n").encode()
    start = int(a.date.timestamp() * 1000)
    end = start + int((a.duration or 0) * 1000)
    return AttemptRecord(attempt=a, name=f"run {a.label} {a.status}", params=params, tags=tags,
                         metrics=_metrics(info), loss_curves=_loss_curves(info), artefacts=artefacts,
                         start_ms=start, end_ms=end)


def _sae_entries(info: dict | None) -> dict[str, dict]:
    return {k: v for k, v in (info or {}).items()
            if isinstance(v, dict) and isinstance(v.get("eval_result_metrics"), dict)}


def _prefix(key: str, entries: dict) -> str:
    """Metric names carry the SAE only when a run trained several."""
    return "" if len(entries) == 1 else key.rsplit("/", 1)[-1].replace(".", "_") + "/"


def _finite(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _metrics(info: dict | None) -> dict[str, float]:
    """The SAE's and the LLM's probing metrics, the core metrics, a synthetic world's ground-truth
    metrics (prefixed: its explained_variance would clash with the core one) and the training numbers."""
    entries = _sae_entries(info)
    out = {}
    for key, entry in entries.items():
        p = _prefix(key, entries)
        groups = [("", entry["eval_result_metrics"].get("sae")), ("", entry["eval_result_metrics"].get("llm")),
                  ("ground_truth.", entry["eval_result_metrics"].get("ground_truth")),
                  ("", entry.get("core_metrics")), ("training.", entry.get("training"))]
        for sub, values in groups:
            for name, value in (values or {}).items():
                number = _finite(value)
                if number is not None:
                    out[f"{p}{sub}{name}"] = number
    return out


def _hyperparameters(info: dict | None) -> dict[str, str]:
    """Non-numeric training facts and the SAE's config, as parameters."""
    entries = _sae_entries(info)
    out = {}
    for key, entry in entries.items():
        p = _prefix(key, entries)
        out[f"{p}sae"] = key
        for name, value in (entry.get("sae_cfg_dict") or {}).items():
            if isinstance(value, (str, int, float, bool)) and value is not None:
                out[f"{p}sae_cfg.{name}"] = str(value)[:500]
    return out


def _loss_curves(info: dict | None) -> dict[str, list[tuple[int, float]]]:
    entries = _sae_entries(info)
    curves = {}
    for key, entry in entries.items():
        curve = entry.get("loss_curve") or (entry.get("training") or {}).get("loss_curve")
        if not isinstance(curve, list) or not curve:
            continue
        steps = _curve_steps(entry, len(curve))
        points = [(s, float(v)) for s, v in zip(steps, curve) if _finite(v) is not None]
        curves[f"{_prefix(key, entries)}loss"] = points
    return curves


def _curve_steps(entry: dict, n: int) -> list[int]:
    """The training step of each loss point: the harness logs every max(1, steps // 10) steps and
    the last one; when the curve does not fit that rule, its index stands in for the step."""
    steps = _finite((entry.get("training") or {}).get("training_steps"))
    if steps:
        steps = int(steps)
        every = max(1, steps // 10)
        logged = [s for s in range(steps) if s % every == 0 or s == steps - 1]
        if len(logged) == n:
            return logged
    return list(range(n))


def _committed_pngs(repo, sha: str) -> list[tuple[str, bytes]]:
    tree = repo.commit(sha).tree
    return sorted((b.path, b.data_stream.read()) for b in tree.traverse()
                  if b.type == "blob" and b.path.lower().endswith(".png"))


# -- the trackers -------------------------------------------------------------------------------

def export_workspace(workspace: Path, to: str, *, uri: str | None = None,
                     project: str | None = None) -> list[Exported]:
    records = attempt_records(workspace)
    project = project or DEFAULT_PROJECT
    if to == "mlflow":
        return to_mlflow(records, uri=uri, experiment=project)
    if to == "wandb":
        return to_wandb(records, directory=Path(uri) if uri else Path.cwd(), project=project)
    raise ExportError(f"unknown tracker {to!r}: use mlflow or wandb")


def where(to: str, uri: str | None, results: list[Exported]) -> str:
    """A sentence saying where the runs are, for the CLI."""
    if to == "mlflow":
        return f"MLflow tracking URI {uri or os.environ.get('MLFLOW_TRACKING_URI') or '(MLflow default)'}"
    mode = wandb_mode()
    folder = Path(uri) if uri else Path.cwd()
    if mode == "offline":
        return f"wandb offline runs under {folder / 'wandb'} (upload later with `wandb sync`)"
    return "wandb (online)"


def _is_file_store(uri: str | None) -> bool:
    if not uri:
        return False
    return uri.startswith("file:") or "://" not in uri


def to_mlflow(records: list[AttemptRecord], *, uri: str | None, experiment: str) -> list[Exported]:
    try:
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ExportError("MLflow is not installed: pip install 'sae-agent[track]' "
                          "(or mlflow-skinny)") from None
    if _is_file_store(uri):
        # MLflow 3 refuses a file store unless asked; a path given on purpose is asking.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    except MlflowException as exc:
        raise ExportError(f"MLflow at {uri or '(default URI)'}: {exc.message}") from None

    out = []
    for rec in records:
        sha = rec.attempt.sha
        existing = client.search_runs([experiment_id], filter_string=f"tags.`{COMMIT_TAG}` = '{sha}'")
        done = [r for r in existing if r.data.tags.get(COMPLETE_TAG) == "true"]
        if done:
            out.append(Exported(rec.attempt.label, sha, done[0].info.run_id, existed=True))
            continue
        for partial in existing:  # an earlier export cut short: redo it
            client.delete_run(partial.info.run_id)
        tags = rec.tags | {"mlflow.source.git.commit": sha, "mlflow.source.type": "LOCAL",
                           "mlflow.source.name": rec.tags[WORKSPACE_TAG]}
        run = client.create_run(experiment_id, start_time=rec.start_ms, tags=tags, run_name=rec.name)
        run_id = run.info.run_id
        metrics = [Metric(k, v, rec.start_ms, 0) for k, v in rec.metrics.items()]
        for key, points in rec.loss_curves.items():
            metrics += [Metric(key, v, rec.start_ms, step) for step, v in points]
        params = [Param(k, v) for k, v in rec.params.items()]
        for i in range(0, len(metrics), 1000):  # log_batch's limits: 1000 metrics, 100 params
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        if rec.artefacts:
            with tempfile.TemporaryDirectory(prefix="sae-agent-export-") as tmp:
                _write_files(Path(tmp), rec.artefacts)
                client.log_artifacts(run_id, tmp)
        client.set_tag(run_id, COMPLETE_TAG, "true")
        client.set_terminated(run_id, status=MLFLOW_STATUS.get(rec.attempt.status, "FAILED"),
                              end_time=max(rec.end_ms, rec.start_ms))
        out.append(Exported(rec.attempt.label, sha, run_id, existed=False))
    return out


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def wandb_mode() -> str:
    """WANDB_MODE if set; online with an API key (environment or ~/.netrc), else offline."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def wandb_run_id(sha: str) -> str:
    """Deterministic, so the same attempt is the same wandb run however often it is exported."""
    return sha[:32]


def _wandb_existing(directory: Path, project: str, run_id: str, mode: str) -> bool:
    if mode != "online":
        return any((directory / "wandb").glob(f"offline-run-*-{run_id}"))
    import wandb
    try:
        api = wandb.Api()
        api.run(f"{api.default_entity}/{project}/{run_id}")
        return True
    except Exception:  # wandb raises its CommError (or ValueError) for a run that is not there
        return False


def to_wandb(records: list[AttemptRecord], *, directory: Path, project: str) -> list[Exported]:
    try:
        import wandb
    except ImportError:
        raise ExportError("wandb is not installed: pip install 'sae-agent[track]' (or wandb)") from None
    mode = wandb_mode()
    os.environ.setdefault("WANDB_SILENT", "true")  # its artefact code prints progress otherwise
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for rec in records:
        sha = rec.attempt.sha
        run_id = wandb_run_id(sha)
        if _wandb_existing(directory, project, run_id, mode):
            out.append(Exported(rec.attempt.label, sha, run_id, existed=True))
            continue
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True,
                                  x_save_requirements=False, save_code=False,
                                  git_commit=sha, git_root=rec.tags[WORKSPACE_TAG],
                                  program=f"{rec.tags[WORKSPACE_TAG]}/experiment.py")
        run = wandb.init(project=project, id=run_id, name=rec.name, dir=str(directory), mode=mode,
                         config=rec.params | {k: v for k, v in rec.tags.items() if k != WORKSPACE_TAG},
                         tags=[str(rec.attempt.status)], notes=rec.attempt.subject,
                         group=Path(rec.tags[WORKSPACE_TAG]).name, job_type="attempt",
                         reinit="create_new", settings=settings)
        exit_code = 0 if MLFLOW_STATUS.get(rec.attempt.status) == "FINISHED" else 1
        try:
            with tempfile.TemporaryDirectory(prefix="sae-agent-export-") as tmp:
                _log_wandb_run(wandb, run, rec, Path(tmp))
                run.finish(exit_code=exit_code)
        except BaseException:
            run.finish(exit_code=1)
            raise
        out.append(Exported(rec.attempt.label, sha, run_id, existed=False))
    return out


def _log_wandb_run(wandb, run, rec: AttemptRecord, tmp: Path) -> None:
    """The loss curve as history (one row per training step), metrics as summary, files as an artefact."""
    rows: dict[int, dict[str, float]] = {}
    for key, points in rec.loss_curves.items():
        for step, value in points:
            rows.setdefault(step, {})[key] = value
    for step in sorted(rows):
        run.log(rows[step], step=step)
    run.summary.update(rec.metrics)
    if rec.artefacts:
        _write_files(tmp, rec.artefacts)
        artefact = wandb.Artifact(f"attempt-{rec.attempt.run}-{rec.attempt.attempt}-{rec.attempt.sha[:8]}",
                                  type="attempt", metadata={"commit": rec.attempt.sha})
        artefact.add_dir(str(tmp))
        run.log_artifact(artefact)
