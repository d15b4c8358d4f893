"""How long a broken reply costs before the LLM hears about it: with the gate, and without.

The broken reply is the seeds' own mistake (AI-Scientist log 001): `CustomTrainer.__init__`
rewritten as `super().__init__(...)` + `# Existing init code...` + new attributes. We time

  gate     apply the reply, run the pre-run gate, have the feedback text ready;
  smoke    no gate: the smoke run (SAE_SMOKE=1) of the broken file until it fails;
  full     no gate, no smoke: the full run of the broken file until it fails.

Runs in a temporary copy of templates/sae_variants with the `tiny` profile (override with
SAE_PROFILE). Prints numbers; asserts nothing.

    .venv/bin/python benchmarks/bench_feedback.py
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent import checks, edits, failures, runner  # noqa: E402

TEMPLATE = REPO / "templates" / "sae_variants"


def seed_style_reply(source: str) -> str:
    """A SEARCH/REPLACE reply that guts CustomTrainer.__init__ the way the seed log did."""
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CustomTrainer")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    lines = source.splitlines()
    first_body = init.body[0]
    if isinstance(first_body, ast.Expr) and isinstance(getattr(first_body, "value", None), ast.Constant):
        first_body = init.body[1]  # skip the docstring
    indent = " " * first_body.col_offset
    search = lines[init.lineno - 1:init.end_lineno]
    header = lines[init.lineno - 1:first_body.lineno - 1]
    replace = header + [f"{indent}super().__init__()", "", f"{indent}# Existing init code...", "",
                        f"{indent}self.tau = 1.0", f"{indent}self.tau_decay = 0.999"]
    return ("experiment.py\n```python\n<<<<<<< SEARCH\n" + "\n".join(search) + "\n=======\n"
            + "\n".join(replace) + "\n>>>>>>> REPLACE\n```\n")


def time_gate(source: str, reply: str, workspace: Path) -> tuple[float, int]:
    started = time.perf_counter()
    new_files, outcomes = edits.apply_reply(reply, {"experiment.py": source})
    assert all(o.status == "applied" for o in outcomes), edits.feedback(outcomes)
    findings = checks.check_source(new_files["experiment.py"], source, search_path=workspace)
    checks.format_findings(findings)
    return time.perf_counter() - started, sum(f.blocking for f in findings)


def time_run(workspace: Path, out_dir: str, smoke: bool) -> tuple[float, str | None]:
    env = {"SAE_PROFILE": os.environ.get("SAE_PROFILE", "tiny")} | ({"SAE_SMOKE": "1"} if smoke else {})
    started = time.perf_counter()
    result = runner.run_experiment(workspace, out_dir, extra_env=env, timeout=1800)
    failures.feedback_text(result)
    return time.perf_counter() - started, result.error


def main() -> None:
    source = (TEMPLATE / "experiment.py").read_text()
    reply = seed_style_reply(source)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        shutil.copytree(TEMPLATE, workspace, ignore=shutil.ignore_patterns("__pycache__"))
        gate_seconds, blocking = time_gate(source, reply, workspace)
        broken, _ = edits.apply_reply(reply, {"experiment.py": source})
        (workspace / "experiment.py").write_text(broken["experiment.py"])
        smoke_seconds, smoke_error = time_run(workspace, "run_smoke", smoke=True)
        full_seconds, full_error = time_run(workspace, "run_full", smoke=False)
    print(f"profile: {os.environ.get('SAE_PROFILE', 'tiny')}")
    print(f"gate:  {gate_seconds * 1000:8.1f} ms   ({blocking} blocking findings; nothing run)")
    print(f"smoke: {smoke_seconds:8.2f} s    (no gate; fails with: {smoke_error})")
    print(f"full:  {full_seconds:8.2f} s    (no gate, no smoke; fails with: {full_error})")
    if gate_seconds:
        print(f"the gate answers {smoke_seconds / gate_seconds:,.0f}x faster than the smoke run "
              f"and {full_seconds / gate_seconds:,.0f}x faster than the full run")


if __name__ == "__main__":
    main()
