"""What `log`, `show` and `report` share: one row per attempt with its metrics, and how a status,
a metric, a duration and a cost look."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from agent import history
from agent.attempt import WITH_RESULTS, Status
from agent.history import Attempt

# Headline metrics: (key in results.headline(), column title); a column no attempt has a value for
# (F1 and MCC outside a synthetic world) is left out. Higher is better for all but L0, the sparsity
# setting (never judged), and frac_dead, where the sign of the change is left for the reader.
METRICS = (("f1", "F1"), ("mcc", "MCC"), ("sae_top_1_test_accuracy", "top-1 acc"),
           ("sae_test_accuracy", "test acc"), ("l0", "L0"), ("explained_variance", "expl. var"))
EXTRA_METRICS = ("uniqueness", "frac_dead", "training_steps")

# What `show` leaves out of the code diff: run outputs and the bookkeeping the loop writes.
DIFF_EXCLUDES = (":(exclude)run_*", ":(exclude)transcript.json", ":(exclude)transcript.md",
                 ":(exclude).agent", ":(exclude)agent.log", ":(exclude)packages.json")
# How each status looks: its rich style in `log` and `show`, its colour in the HTML report (a
# test fails for a status missing here).
STATUS_STYLE = {Status.SUCCESS: "green", Status.BASELINE: "cyan", Status.FAILED: "red",
                Status.UNTRAINED: "red", Status.GATE_FAILED: "yellow", Status.EDIT_FAILED: "yellow",
                Status.NO_EDITS: "yellow", Status.INTERRUPTED: "magenta", Status.NOTES: "blue",
                Status.NOTES_MISSING: "blue", Status.UNKNOWN: "white"}
STATUS_CSS = {Status.SUCCESS: "#080", Status.BASELINE: "#058", Status.FAILED: "#b00",
              Status.UNTRAINED: "#b00", Status.GATE_FAILED: "#a60", Status.EDIT_FAILED: "#a60",
              Status.NO_EDITS: "#a60", Status.INTERRUPTED: "#a0a", Status.NOTES: "#00a",
              Status.NOTES_MISSING: "#00a", Status.UNKNOWN: "#666"}


# -- rows: one attempt with its metrics ---------------------------------------------------

@dataclass
class Row:
    attempt: Attempt
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)  # SAE key → metric
    delta: dict[str, dict[str, float | None]] = field(default_factory=dict)    # against run 0
    intervals: dict = field(default_factory=dict)   # run_i/intervals.json: intervals and verdicts

    def to_json(self) -> dict:
        a = self.attempt
        return {"run": a.run, "attempt": a.attempt, "status": a.status, "commit": a.sha,
                "date": a.date.isoformat(), "subject": a.subject, "duration_s": a.duration,
                "cost_usd": a.cost, "tokens": a.tokens, "model": a.model, "profile": a.profile,
                "error": a.error, "metrics": self.metrics, "delta_vs_run_0": self.delta,
                "intervals": self.intervals}

    def change(self, sae: str, key: str) -> dict | None:
        """The recorded change against the baseline's seeds, with its interval and verdict."""
        return (self.intervals.get(sae) or {}).get("vs_baseline", {}).get(key)

    def baseline_seeds(self, sae: str, key: str) -> tuple[float, float | None, int] | None:
        """What the changes are against: the mean over the baseline's seeds, their sd and number,
        as recorded with this row's change (None where no change was recorded)."""
        c = self.change(sae, key)
        if not c or not c.get("baseline_seeds"):
            return None
        mean = c.get("baseline_mean")
        if mean is None:   # recorded before the mean was: the change is this value minus it
            value = self.metrics.get(sae, {}).get(key)
            if value is None:
                return None
            mean = value - c["change"]
        return mean, c.get("baseline_seed_sd"), c["baseline_seeds"]


def shown_metrics(rows: list[Row]) -> list[tuple[str, str]]:
    """The (key, column title) of METRICS that some attempt has a value for."""
    return [(k, title) for k, title in METRICS
            if any(m.get(k) is not None for r in rows for m in r.metrics.values())]


def final_info_at(repo, attempt: Attempt) -> dict | None:
    """`run_<run>/final_info.json` as committed with this attempt, or None."""
    text = history.file_at(repo, attempt.sha, f"run_{attempt.run}/final_info.json")
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def headline_of(final_info: dict | None) -> dict[str, dict]:
    """SAE key → headline metrics, through agent.results (empty when there is nothing usable)."""
    if not final_info:
        return {}
    from agent import results
    try:
        return results.headline(final_info) or {}
    except Exception:  # a malformed final_info.json is shown as "no metrics", not a crash
        return {}


def collect_rows(workspace: Path) -> tuple[list[Row], Row | None]:
    """Every attempt with its metrics and their change against the baseline (run 0)."""
    repo = history.open_workspace(workspace)
    attempts = history.read_history(workspace)
    rows = []
    for a in attempts:
        metrics = headline_of(final_info_at(repo, a)) if a.status in WITH_RESULTS else {}
        rows.append(Row(a, metrics, intervals=_intervals_at(repo, a) if metrics else {}))
    baseline = next((r for r in reversed(rows) if r.attempt.run == 0 and r.metrics), None)
    for r in rows:
        if baseline is not None and r.metrics:
            r.delta = _deltas(r.metrics, baseline.metrics)
    return rows, baseline


def _intervals_at(repo, attempt: Attempt) -> dict:
    text = history.file_at(repo, attempt.sha, f"run_{attempt.run}/intervals.json")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _deltas(current: dict, baseline: dict) -> dict:
    out = {}
    for sae, values in current.items():
        base = baseline.get(sae)
        if base is None and len(baseline) == 1 and len(current) == 1:
            base = next(iter(baseline.values()))  # one SAE on each side: compare them
        if base is None:
            continue
        out[sae] = {k: (v - base[k] if v is not None and base.get(k) is not None else None)
                    for k, v in values.items()}
    return out


def metric_cell(row: Row, sae: str, key: str) -> str:
    value = row.metrics.get(sae, {}).get(key)
    if value is None:
        return "—" if row.metrics else ""
    base = row.baseline_seeds(sae, key) if row.attempt.run == 0 else None
    if base:   # the baseline as every change is against it: its seeds' mean
        return baseline_text(key, *base)
    text = _fmt(key, value)
    change = row.change(sae, key)
    if change and row.attempt.run != 0:   # the change against the seeds' mean, its interval, its verdict
        mark = {"better": " ▲", "worse": " ▼"}.get(change.get("verdict"), "") if _judged(key) else ""
        return text + f" {_fmt(key, change['change'], signed=True)}±{_fmt(key, change['half_width'])}{mark}"
    d = row.delta.get(sae, {}).get(key)
    if d is not None and row.attempt.run != 0:
        text += f" {_fmt(key, d, signed=True)}"
    return text


def seed_count(row: Row) -> int:
    """How many baseline seeds this row's changes were computed against (0: none recorded)."""
    return max((c.get("baseline_seeds") or 0 for sae in row.intervals.values() if isinstance(sae, dict)
                for c in (sae.get("vs_baseline") or {}).values()), default=0)


def metrics_caption(baseline: Row | None) -> str | None:
    """How to read a metric cell in `log` and the report: the seed count is said once, here."""
    if baseline is None:
        return None
    n = seed_count(baseline)
    seeds = f"; its row: the mean ± sd of its {n} seeds" if n > 1 else ""
    return (f"metrics: value and change against the baseline (commit {baseline.attempt.short_sha}{seeds}) "
            "± its 95% interval; ▲/▼ better/worse, no mark: no detectable change "
            "(L0 is the sparsity setting: never better or worse)")


def baseline_text(key: str, mean: float, sd: float | None, seeds: int) -> str:
    """The baseline as the comparisons use it: its seeds' mean ± sd, e.g. `0.647 ± 0.012`; one seed: its value."""
    if seeds < 2 or sd is None:
        return _fmt(key, mean)
    return f"{_fmt(key, mean)} ± {_fmt(key, sd)}"


def _judged(key: str) -> bool:
    """False for a setting (L0), whose change is never better or worse, whatever an old record says."""
    from agent import stats
    return stats.HIGHER_IS_BETTER.get(key, True) is not None


def _fmt(key: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if key == "training_steps":
        return f"{value:{sign}.0f}"
    if key == "l0":
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.3f}"


def _short_sae(key: str) -> str:
    return key.rsplit("/", 1)[-1] if key else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _cost(cost: float | None) -> str:
    return "" if cost is None else f"${cost:.4f}"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _total_cost(rows: list[Row]) -> float:
    return round(sum(r.attempt.cost or 0.0 for r in rows), 6)


def _total_tokens(rows: list[Row]) -> int:
    return sum(r.attempt.tokens or 0 for r in rows)


def summary_line(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.attempt.status] = counts.get(r.attempt.status, 0) + 1
    runs = len({r.attempt.run for r in rows if r.attempt.run > 0})
    parts = [f"{len(rows)} attempts over {runs} run(s) after the baseline"]
    parts.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    parts.append(f"cost ${_total_cost(rows):.4f}, {_total_tokens(rows)} tokens")
    return " · ".join(parts)
