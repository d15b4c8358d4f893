"""The software a run used: recorded exactly, compared on replay, and sae-bench's evaluation importable."""

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from agent import environment, history, review
from test_review import Builder, experiment, wide, workspace  # noqa: F401  (the review fixture)


def test_package_versions_are_the_installed_ones():
    versions = environment.package_versions()
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("torch", "scikit-learn", "rich", "gitpython"):
        assert versions["packages"][name] == metadata.version(name)


def test_differences_list_key_packages_first_and_count_the_rest():
    now = {"python": "3.11.7", "packages": {"torch": "2.13.0", "numpy": "1.26.4", "aaa": "1", "rich": "14"}}
    then = {"python": "3.11.7", "packages": {"torch": "2.12.0", "numpy": "1.26.4", "aaa": "2", "Rich": "14",
                                             "gone": "0.1"}}
    diffs = environment.differences(then, now)
    assert [str(d) for d in diffs] == ["torch 2.12.0 → 2.13.0", "aaa 2 → 1", "gone 0.1 → absent"]
    assert environment.differences(now, now) == []
    many = {"packages": {f"p{i}": "1" for i in range(9)}}
    text = environment.describe(environment.differences(many, {"packages": {}}))
    assert text.endswith("and 4 more") and text.startswith("p0 1 → absent")


def test_replay_says_when_the_environment_differs(workspace):
    recorded = environment.package_versions()
    recorded["packages"]["torch"] = "0.0.1"
    environment.write_packages(workspace, recorded)
    b = Builder(workspace)
    sha = b.attempt(3, 1, experiment(0.72), None)
    console, out = wide()
    assert review.replay(workspace, "3.1", console=console) == 0
    assert f"the environment differs from the recorded run's: torch 0.0.1 → {metadata.version('torch')}" \
        in out.getvalue()
    verdict = json.loads(next((workspace.parent / f"{workspace.name}.replays").glob("run_3.1_*/replay.json"))
                         .read_text())
    assert verdict["package_changes"].startswith("torch 0.0.1 →")
    assert history.find_attempt(workspace, "3.1").sha == sha


def test_replay_in_the_same_environment_says_nothing_about_it(workspace):
    environment.write_packages(workspace)
    Builder(workspace).attempt(3, 1, experiment(0.72), None)
    console, out = wide()
    assert review.replay(workspace, "3.1", console=console) == 0
    assert "environment differs" not in out.getvalue()


@pytest.mark.slow  # imports SAEBench and its evaluation (~20-50 s)
def test_sae_bench_sparse_probing_evaluation_imports():
    """What the gemma-2-2b profile runs; sae-bench is installed without its declared dependencies."""
    done = subprocess.run([sys.executable, "-c", "import sae_bench.evals.sparse_probing.main"],
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert done.returncode == 0, done.stderr[-2000:]
