"""`replay`: one attempt run again from its commit, outside the workspace, and the verdict: did it
reproduce the recorded outcome (the same failure, or metrics within tolerance)?"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent import history
from agent.attempt import RAN, WITH_RESULTS, Status
from agent.history import Attempt, HistoryError
from agent.process import RunStatus
from agent.review.rows import EXTRA_METRICS, METRICS, _short_sae, final_info_at, headline_of
from agent.review.show_cmd import SHOW_BLOCK_CHARS
from agent.ui import message, print_unclipped

# How close a replayed success must come to the recorded metrics. Accuracies and the other
# fractions are compared in absolute terms (`--tolerance`, default 0.02); L0 relative to its
# recorded value; the number of training steps exactly.
DEFAULT_TOLERANCE = 0.02
L0_RELATIVE_TOLERANCE = 0.05


@dataclass
class ReplayVerdict:
    attempt: str
    commit: str
    reproduced: bool
    summary: str
    replay_dir: str
    profile: str | None
    recorded_status: Status
    replay_status: RunStatus
    recorded_signature: str | None = None  # the comparison key (digits masked)
    replay_signature: str | None = None
    recorded_error: str | None = None      # the real error lines, as printed

    replay_error: str | None = None
    metric_checks: list[dict] = field(default_factory=list)
    tolerance: dict = field(default_factory=dict)
    duration_s: float | None = None
    package_changes: str | None = None  # recorded → current versions, where packages.json differs


def replay(workspace: Path, spec: str, *, console: Console, timeout: float | None = None,
           tolerance: float = DEFAULT_TOLERANCE, replays_dir: Path | None = None,
           on_line=None, box: str | None = None) -> int:
    """Re-run one attempt from its commit, outside the workspace, and compare with the record.

    The commit's tree is extracted with `git archive` into
    `<workspace>.replays/run_<R>.<A>_<timestamp>/` (beside the workspace; its .git and files are
    only read), the recorded `run_<R>/` is moved to `run_<R>.recorded/` there, and the run is
    repeated as the loop ran it: the template's command, the recorded profile (SAE_PROFILE), the
    template's allowed variables, a smoke run first when the template asks for one.
    """
    workspace = Path(workspace)
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    a = history.find_attempt(workspace, spec, attempts)
    if a.status not in RAN:
        raise HistoryError(f"run {a.run} attempt {a.attempt} never ran (status {a.status}): "
                           "nothing to replay. Pick one that ran: "
                           + ", ".join(x.label for x in attempts if x.status in RAN))
    recorded_log = history.file_at(repo, a.sha, f"run_{a.run}/log.txt")
    recorded_info = final_info_at(repo, a)
    out_dir = f"run_{a.run}"

    parent = Path(replays_dir) if replays_dir else workspace.parent / f"{workspace.name}.replays"
    dest = parent / f"{out_dir}.{a.attempt}_{time.strftime('%Y%m%d_%H%M%S')}"
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{out_dir}.{a.attempt}_{time.strftime('%Y%m%d_%H%M%S')}_{n}")
    skipped = extract_commit(repo, a.sha, dest)
    if skipped:
        console.print(Text(f"not extracted (links or special files): {', '.join(skipped[:10])}",
                           style="yellow"), soft_wrap=True)
    if (dest / out_dir).exists():
        (dest / out_dir).rename(dest / f"{out_dir}.recorded")

    # The settings are the workspace's own, from its baseline commit: never a template.json or
    # profile.json that a run may have rewritten in the commit being replayed.
    root = history.root_commit(repo, a.sha)
    profile = a.profile if a.profile not in (None, "None") else _profile_at(repo, root)
    _command, _env_allow, smoke = _run_settings(repo, root, dest, profile)
    if timeout is None:
        timeout = max(600.0, 3 * (a.duration or 1200.0))
    console.print(Text(f"replaying run {a.run} attempt {a.attempt} (commit {a.short_sha}, recorded "
                       f"{a.status}) in {dest}\n  profile {profile or '(template default)'}, "
                       f"timeout {timeout:g}s{', smoke run first' if smoke else ''}"), soft_wrap=True)
    package_changes = _package_changes(repo, a.sha)
    if package_changes:
        console.print(message(("the environment differs from the recorded run's:", "yellow"),
                              f" {package_changes}"), soft_wrap=True)

    started = time.monotonic()
    result = _replay_run(repo, a.sha, dest, out_dir, profile, smoke, timeout, on_line, box)
    seconds = time.monotonic() - started

    verdict = ReplayVerdict(attempt=a.label, commit=a.sha, reproduced=False, summary="",
                            replay_dir=str(dest), profile=profile, recorded_status=a.status,
                            replay_status=result.status, replay_signature=result.signature,
                            replay_error=result.error, duration_s=round(seconds, 1),
                            package_changes=package_changes)
    if a.status == Status.FAILED:
        _judge_failure(verdict, a, recorded_log, result)
    elif a.status in WITH_RESULTS:
        _judge_success(verdict, recorded_info, dest / out_dir, result, tolerance)
    else:  # interrupted: there is no recorded outcome to compare with
        verdict.reproduced = True
        verdict.summary = (f"the recorded run was interrupted, so there is nothing to compare; "
                           f"the replay ended {result.status}"
                           + (f": {result.error}" if result.error else ""))
    (dest / "replay.json").write_text(json.dumps(asdict(verdict), indent=2) + "\n")
    _print_verdict(console, verdict)
    return 0 if verdict.reproduced else 1


def _replay_run(repo, sha: str, dest: Path, out_dir: str, profile, smoke: bool, timeout: float, on_line,
                box: str | None):
    """The attempt run again the way the loop runs it: the same box, the settings and pristine
    harness of the workspace's first commit, the profile's limits, training then evaluation."""
    from agent import execution
    from agent.template import parse_template
    root = history.root_commit(repo, sha)
    template = parse_template(dest, history.file_at(repo, root, "template.json") or "{}")
    pipeline = execution.Pipeline(dest, template, profile, timeout=timeout, on_line=on_line, box=box,
                                  protected=execution.protected_from_commit(repo, root, template.protected))
    step = pipeline.run(out_dir, smoke=True) if smoke else None
    if step is None or step.ok:
        step = pipeline.run(out_dir)
    result = step.result
    if step.problem:   # e.g. a results file the run wrote itself: a failure, as in the loop
        result.status, result.error = RunStatus.FAILED, step.problem
    return result


def _package_changes(repo, sha: str) -> str | None:
    """The packages whose versions differ from the commit's packages.json (None: same, or none kept)."""
    from agent import environment
    recorded = environment.parse_packages(history.file_at(repo, sha, environment.PACKAGES_FILE))
    if recorded is None:
        return None
    return environment.describe(environment.differences(recorded)) or None


def extract_commit(repo, sha: str, dest: Path) -> list[str]:
    """Write the tree of `sha` into `dest` via `git archive`: the workspace is only read.

    Links are never written (a run may have left one pointing outside, e.g. `plot.py` →
    `/etc/passwd`), nor anything else tarfile's data filter refuses; their names are returned.
    """
    buffer = io.BytesIO()
    repo.archive(buffer, treeish=sha, format="tar")
    buffer.seek(0)
    dest.mkdir(parents=True)
    skipped: list[str] = []

    def plain_files_only(member: tarfile.TarInfo, path: str):
        if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
            skipped.append(member.name)
            return None
        if not hasattr(tarfile, "data_filter"):  # Python < 3.10.12: no absolute or .. paths here
            return member
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError:
            skipped.append(member.name)
            return None

    with tarfile.open(fileobj=buffer) as tar:
        for member in tar.getmembers():
            kept = plain_files_only(member, str(dest))
            if kept is not None:
                tar.extract(kept, dest, set_attrs=kept.isfile(), **_no_filter())
    return skipped


def _no_filter() -> dict:
    # Members are filtered above; tell tarfile so (3.12+ warns, 3.14 defaults to refusing).
    return {"filter": "fully_trusted"} if hasattr(tarfile, "data_filter") else {}


def _profile_at(repo, sha: str) -> str | None:
    try:
        return json.loads(history.file_at(repo, sha, "profile.json") or "").get("profile")
    except (ValueError, AttributeError):
        return None


def _run_settings(repo, root_sha: str, dest: Path, profile: str | None):
    """(command, allowed env names, smoke first?) from the template.json of the baseline commit."""
    from agent.template import TemplateError, parse_template
    spec = history.file_at(repo, root_sha, "template.json")
    if spec is None:
        return None, (), False
    try:
        t = parse_template(dest, spec)
    except TemplateError:
        return None, (), False
    smoke = t.smoke_profiles is None or profile in t.smoke_profiles
    return list(t.command), t.allowed_env(profile), smoke and (dest / "experiment.py").exists()


def recorded_signature(log_text: str | None, error: str | None) -> str | None:
    """The failure signature of the recorded run: from its log, else from its Error trailer."""
    from agent import failures
    if log_text:
        signature = failures.parse_failure(log_text)[2]
        if signature:
            return signature
    if not error:
        return None
    if error.startswith("Timeout"):
        return "Timeout"
    m = re.match(r"Killed by (SIG\w+)", error)
    if m:
        return f"Signal:{m.group(1)}"
    m = re.match(r"Exit code (-?\d+)", error)
    if m:
        return f"ExitCode:{m.group(1)}"
    return None


def _judge_failure(v: ReplayVerdict, a: Attempt, recorded_log: str | None, result) -> None:
    v.recorded_signature = recorded_signature(recorded_log, a.error)
    v.recorded_error = _recorded_error_line(recorded_log) or a.error
    if result.status == RunStatus.OK:
        v.summary = "not reproduced: the recorded run failed, the replay succeeded"
    elif v.recorded_signature is None:
        v.summary = ("cannot tell: the recorded run left no traceback or exit signature to "
                     f"compare; the replay failed with {result.error}")
    elif result.signature == v.recorded_signature:
        v.reproduced = True
        where = result.signature.split(" | ")[0]
        v.summary = f"reproduced: same exception and frame ({where}): {result.error or result.signature}"
    else:
        v.summary = (f"not reproduced: recorded {v.recorded_error or v.recorded_signature}, "
                     f"replay {result.error or result.signature}")


def _recorded_error_line(log_text: str | None) -> str | None:
    """The recorded run's own error line (the signature masks its digits)."""
    from agent import failures
    if not log_text:
        return None
    return failures.parse_failure(log_text[-2 * SHOW_BLOCK_CHARS:])[1]


def _judge_success(v: ReplayVerdict, recorded_info: dict | None, run_dir: Path, result,
                   tolerance: float) -> None:
    v.tolerance = {"accuracies, explained_variance, frac_dead": f"±{tolerance:g} absolute",
                   "l0": f"±{L0_RELATIVE_TOLERANCE:.0%} relative", "training_steps": "exact"}
    if result.status != RunStatus.OK:
        v.summary = f"not reproduced: the recorded run succeeded, the replay failed with {result.error}"
        return
    recorded = headline_of(recorded_info)
    try:
        replayed = headline_of(json.loads((run_dir / "final_info.json").read_text()))
    except (OSError, ValueError):
        replayed = {}
    if not recorded:
        v.summary = "cannot tell: the commit holds no readable final_info.json to compare with"
        return
    if not replayed:
        v.summary = "not reproduced: the replay wrote no readable final_info.json"
        return
    checks = []
    for sae in sorted(set(recorded) | set(replayed)):
        for key in [k for k, _ in METRICS] + list(EXTRA_METRICS):
            want, got = recorded.get(sae, {}).get(key), replayed.get(sae, {}).get(key)
            if want is None and got is None:
                continue
            checks.append({"sae": sae, "metric": key, "recorded": want, "replay": got,
                           "ok": _within(key, want, got, tolerance)})
    v.metric_checks = checks
    bad = [c for c in checks if not c["ok"]]
    if bad:
        v.summary = (f"not reproduced: {len(bad)} of {len(checks)} metrics outside tolerance ("
                     + ", ".join(f"{c['metric']} {c['recorded']} → {c['replay']}" for c in bad[:3])
                     + ")")
    else:
        v.reproduced = True
        v.summary = f"reproduced: all {len(checks)} metrics within tolerance"


def _within(key: str, want, got, tolerance: float) -> bool:
    if want is None or got is None:
        return False
    if key == "training_steps":
        return want == got
    if key == "l0":
        return abs(got - want) <= L0_RELATIVE_TOLERANCE * max(abs(want), 1e-9)
    return abs(got - want) <= tolerance + 1e-12


def _print_verdict(console: Console, v: ReplayVerdict) -> None:
    if v.metric_checks:
        table = Table(title="recorded vs replay")
        for col in ("SAE", "metric", "recorded", "replay", ""):
            table.add_column(col)
        for c in v.metric_checks:
            table.add_row(Text(_short_sae(c["sae"])), Text(c["metric"]), _show_value(c["recorded"]),
                          _show_value(c["replay"]), "ok" if c["ok"] else Text("differs", style="red"))
        print_unclipped(console, table)
        console.print(Text("tolerance: " + "; ".join(f"{k} {t}" for k, t in v.tolerance.items())))
    elif v.recorded_signature or v.replay_signature:
        console.print(Text(f"recorded: {v.recorded_error or v.recorded_signature or '—'}\nreplay:   "
                           f"{v.replay_error or v.replay_signature or v.replay_status}"), soft_wrap=True)
    style = "green" if v.reproduced else "red"
    console.print(Text(v.summary, style=f"bold {style}"), soft_wrap=True)
    console.print(Text(f"replay output kept in {v.replay_dir} (log: run_*/log.txt, verdict: replay.json)"),
                  soft_wrap=True)


def _show_value(value) -> str:
    return "—" if value is None else f"{value:.4g}"
