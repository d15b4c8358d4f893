"""A real local model drives the loop: what came of each of its turns, per idea.

Assembles the model's GGUF once (`python -m agent.local_model fetch`, into
~/.cache/sae-agent/local-models), then runs each idea exactly as a user would,

    python -m agent run ideas/<idea>.md --profile synth-tiny --model local:<gguf> --results DIR --max-runs N

(the agent starts the model server on 127.0.0.1 and stops it at the end), and reads back from the
workspace's git history (`python -m agent log WS --json`), its transcript.json and agent.log, per
idea: turns (replies), provider rejections (retried errors, condensations, a fatal error), replies
whose edit was applied, replies the gate refused and why, replies with no usable edit and why, runs
that trained and were evaluated, their verdicts against the baseline, tokens, seconds per turn and
replies cut at the output limit. Prints them (and DIR/bench_real_model.json); asserts nothing.

Needs xllamacpp (`pip install xllamacpp`). On a busy 2-core machine one turn of the 1.5B model
with a 4k-token prompt takes minutes: start with one idea and --max-runs 1.

    .venv/bin/python benchmarks/bench_real_model.py                                   # 1.5B, batchtopk, 2 runs
    .venv/bin/python benchmarks/bench_real_model.py --model qwen2.5-coder-0.5b --ideas batchtopk topk_activation
    .venv/bin/python benchmarks/bench_real_model.py --report results/bench_real_model/*_batchtopk   # read back only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import local_model  # noqa: E402

APPLIED = {"success", "failed", "untrained", "gate-failed", "interrupted"}  # the edit was written
NO_EDIT = {"edit-failed", "no-edits"}
NOTES = {"notes", "notes-missing"}
RETRY = re.compile(r"retry \d+ of \d+")
CONDENSED = re.compile(r"context window exceeded: ")
FATAL = re.compile(r"the LLM call failed: (.*)")
WORKSPACE = re.compile(r"^workspace: (\S+)")
SHOWN = ("f1", "mcc", "sae_top_1_test_accuracy", "explained_variance")


# -- running one idea -----------------------------------------------------------------------------

def run_idea(idea: str, gguf: Path, args) -> tuple[Path | None, list[str], float, int]:
    """The agent on one idea, its output echoed and kept: (workspace, output lines, seconds, exit code)."""
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "agent", "run", f"ideas/{idea}.md", "--profile", args.profile,
           "--model", f"local:{gguf}", "--results", str(results), "--max-runs", str(args.max_runs),
           *(["--edit-format", args.edit_format] if args.edit_format else [])]
    if args.max_attempts:
        cmd += ["--max-attempts", str(args.max_attempts)]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    before = set(results.iterdir())
    started, lines = time.monotonic(), []
    out_file = results / f"{idea}.agent.out"
    with open(out_file, "w") as out, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, errors="replace") as proc:
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                out.write(line)
                out.flush()
                print(f"  {idea} | {line}", end="", flush=True)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # the agent commits the attempt and stops its server
            proc.wait()
            raise
    seconds = time.monotonic() - started
    ws = next((Path(m.group(1)) for line in lines if (m := WORKSPACE.match(line.strip()))), None)
    if ws is None:  # the line is missing when the workspace could not be made
        new = sorted((p for p in set(results.iterdir()) - before if p.is_dir() and p.name.endswith(idea)),
                     key=lambda p: p.stat().st_mtime)
        ws = new[-1] if new else None
    return ws, lines, seconds, proc.returncode


# -- reading one workspace back -------------------------------------------------------------------

def read_back(ws: Path, output: list[str] | None = None) -> dict:
    """What the history, the transcript and the agent's log say of each turn."""
    proc = subprocess.run([sys.executable, "-m", "agent", "log", str(ws), "--json"], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"workspace": str(ws), "error": f"agent log failed: {proc.stderr.strip()[-500:]}"}
    attempts = json.loads(proc.stdout)["attempts"]
    try:
        transcript = json.loads((ws / "transcript.json").read_text())
    except (OSError, ValueError):
        transcript = {"messages": [], "usage": []}
    usage = transcript.get("usage", [])
    agent_log = ws / "agent.log"
    log_lines = agent_log.read_text(errors="replace").splitlines() if agent_log.exists() else (output or [])

    replies = [a for a in attempts if a["run"] > 0 and a["status"] not in NOTES]
    status = Counter(a["status"] for a in replies)
    seconds = [u.get("seconds") or 0.0 for u in usage]
    fatal = [m.group(1) for line in log_lines if (m := FATAL.search(line))]
    return {
        "workspace": str(ws),
        # the coder's model: the baseline's attempt says "template"
        "model": next((a["model"] for a in attempts if a.get("model") and a["model"] != "template"), None),
        "turns": sum(m.get("role") == "assistant" for m in transcript.get("messages", [])),
        "usage_records": len(usage),
        "provider_retries": sum(bool(RETRY.search(line)) for line in log_lines),
        "condensed": sum(bool(CONDENSED.search(line)) for line in log_lines),
        "provider_fatal": fatal[-1] if fatal else None,
        "attempts": len(replies),
        "statuses": dict(status),
        "applied": sum(status[s] for s in APPLIED),
        "gate_refused": [_why(a) for a in replies if a["status"] == "gate-failed"],
        "no_edit": [_why(a) for a in replies if a["status"] in NO_EDIT],
        "ran_failed": [_why(a) for a in replies if a["status"] in ("failed", "untrained")],
        "trained_and_evaluated": [a["run"] for a in replies if a["status"] == "success" and a["metrics"]],
        "verdicts": {f"run {a['run']}.{a['attempt']}": _verdicts(a) for a in replies
                     if a["status"] == "success" and a["intervals"]},
        "notes": [a["status"] for a in attempts if a["status"] in NOTES],
        "prompt_tokens": sum(u.get("prompt_tokens", 0) for u in usage),
        "completion_tokens": sum(u.get("completion_tokens", 0) for u in usage),
        "truncated_replies": sum(bool(u.get("truncated")) for u in usage),
        "seconds_per_turn": {"mean": _round(statistics.fmean(seconds)) if seconds else None,
                             "median": _round(statistics.median(seconds)) if seconds else None,
                             "max": _round(max(seconds)) if seconds else None},
        "completion_tokens_per_second": _round(sum(u.get("completion_tokens", 0) for u in usage)
                                               / sum(seconds)) if sum(seconds) else None,
    }


def _why(a: dict) -> str:
    return f"{a['run']}.{a['attempt']} {a['status']}: {(a.get('error') or a['subject'])[:160]}"


def _verdicts(a: dict) -> dict[str, str]:
    """metric → 'change ± half-width verdict' against the baseline's seeds (and at matched sparsity)."""
    out = {}
    for sae, rec in a["intervals"].items():
        for label, part in (("", rec.get("vs_baseline") or {}), (" @matched L0", rec.get("at_matched_sparsity") or {})):
            for metric in SHOWN:
                d = part.get(metric)
                if d and d.get("change") is not None:
                    hw = d.get("half_width")
                    out[f"{metric}{label}"] = (f"{d['change']:+.3f}" + (f" ± {hw:.3f}" if hw is not None else "")
                                               + f" {d.get('verdict') or '?'}")
        break  # one SAE per run here; the log has every one
    return out


def _round(x):
    return None if x is None else round(x, 1)


def show(idea: str, r: dict, wall: float | None = None, code: int | None = None) -> None:
    print(f"\n== {idea}: {r['workspace']}")
    if "error" in r:
        print(f"   {r['error']}")
        return
    sp = r["seconds_per_turn"]
    print(f"   model {r['model']}" + (f", {wall / 60:.1f} min wall, exit {code}" if wall is not None else ""))
    print(f"   turns {r['turns']} ({r['usage_records']} with usage); attempts {r['attempts']}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())))
    print(f"   provider: {r['provider_retries']} retried error(s), {r['condensed']} condensation(s)"
          + (f", stopped by: {r['provider_fatal']}" if r["provider_fatal"] else ""))
    print(f"   replies with an applied edit: {r['applied']}; gate refused {len(r['gate_refused'])}; "
          f"no usable edit {len(r['no_edit'])}; ran and failed {len(r['ran_failed'])}")
    for label, items in (("gate refused", r["gate_refused"]), ("no usable edit", r["no_edit"]),
                         ("ran and failed", r["ran_failed"])):
        for item in items:
            print(f"     {label}: {item}")
    print(f"   trained and evaluated: {len(r['trained_and_evaluated'])} run(s) {r['trained_and_evaluated']}")
    for run, verdicts in r["verdicts"].items():
        print(f"     {run}: " + "; ".join(f"{m} {v}" for m, v in verdicts.items()))
    print(f"   notes: {r['notes'] or 'none'}")
    print(f"   tokens {r['prompt_tokens']} prompt + {r['completion_tokens']} completion; "
          f"{r['truncated_replies']} reply(ies) cut at the output limit")
    print(f"   seconds per turn: mean {sp['mean']}, median {sp['median']}, max {sp['max']}; "
          f"{r['completion_tokens_per_second']} completion tokens/s over the turns")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b",
                   help=f"{' | '.join(local_model.MODELS)}, or a .gguf path")
    p.add_argument("--ideas", nargs="+", default=["batchtopk"], help="shipped idea names")
    p.add_argument("--profile", default="synth-tiny")
    p.add_argument("--max-runs", type=int, default=2)
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--edit-format", choices=("auto", "diff", "whole"),
                   help="default: the agent's for a local model (whole)")
    p.add_argument("--results", default=str(REPO / "results" / "bench_real_model"))
    p.add_argument("--report", nargs="+", metavar="WORKSPACE", help="only read back these workspaces")
    args = p.parse_args()

    found = []
    if args.report:
        for ws in args.report:
            found.append((Path(ws).name, read_back(Path(ws)), None, None))
    else:
        missing = [i for i in args.ideas if not (REPO / "ideas" / f"{i}.md").is_file()]
        if missing:
            p.error(f"no such shipped idea: {', '.join(missing)} (see ideas/*.md)")
        if args.model in local_model.MODELS:
            gguf = local_model.fetch(local_model.MODELS[args.model])  # says what it found
        else:
            gguf = Path(args.model).resolve()
            print(local_model.check_gguf(gguf).describe())
        for idea in args.ideas:
            ws, lines, wall, code = run_idea(idea, gguf, args)
            if ws is None:
                print(f"\n== {idea}: no workspace was made (exit {code}); the output is in "
                      f"{Path(args.results) / (idea + '.agent.out')}")
                continue
            found.append((idea, read_back(ws, lines), wall, code))
    for idea, r, wall, code in found:
        show(idea, r, wall, code)
    if not args.report and found:
        out = Path(args.results) / "bench_real_model.json"
        out.write_text(json.dumps({idea: {**r, "wall_s": wall, "exit": code} for idea, r, wall, code in found},
                                  indent=1))
        print(f"\n(written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
