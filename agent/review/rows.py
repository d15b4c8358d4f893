"""What `log`, `show` and `report` share: one row per attempt with its metrics, and how a status,
a metric, a duration and a cost look."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from agent import history
from agent.attempt import WITH_RESULTS, Status
from agent.history import Attempt

# Headline metrics: (key in results.headline(), column title). Higher is better for all but L0
# and frac_dead, where the sign of the change is left for the reader to judge.
METRICS = (("sae_top_1_test_accuracy", "top-1 acc"), ("sae_test_accuracy", "test acc"),
           ("l0", "L0"), ("explained_variance", "expl. var"))  # (key, column title)
EXTRA_METRICS = ("frac_dead", "training_steps")

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
    text = _fmt(key, value)
    change = row.change(sae, key)
    if change and row.attempt.run != 0:   # the change against the seeds' mean, its interval, its verdict
        mark = {"better": " ▲", "worse": " ▼"}.get(change.get("verdict"), "")
        return text + f" {_fmt(key, change['change'], signed=True)}±{_fmt(key, change['half_width'])}{mark}"
    d = row.delta.get(sae, {}).get(key)
    if d is not None and row.attempt.run != 0:
        text += f" {_fmt(key, d, signed=True)}"
    return text


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
