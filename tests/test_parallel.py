"""Many ideas at once (`run ideas/*.md --jobs N`) and what they share, across real processes.

The ideas use the mini template (tests/data/mini_template, no torch) and the strict loopback server;
each idea gets its own reply queue (keyed by its title), since their requests interleave.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest

from agent import baseline, history, parallel, workspace
from agent.cli import build_parser, main, run_options
from agent.options import RunOptions, SlurmOptions
from mini import block, MINI, MODEL, notes

REPO = Path(__file__).resolve().parent.parent


def raise_by(bonus: str) -> str:
    return f"Raise it by {bonus}.\n\n" + block("    accuracy = ACCURACY\n", f"    accuracy = ACCURACY + {bonus}\n")


NOTES = notes("The run raised the accuracy.")


def make_ideas(tmp_path, n: int, body: str = "") -> list[Path]:
    folder = tmp_path / "ideas"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"idea_{i}.md"
        path.write_text(f"---\ntemplate: {MINI}\nmax_runs: 2\n---\n# Raise the accuracy, variant {i}\n\n"
                        f"## Experiment\n1. Raise it by 0.0{i + 1}.\n2. Measure it.\n{body}")
        paths.append(path)
    return paths


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def baseline_sources(results: Path) -> list[str]:
    """Per workspace: how its run 0 came to be (the baseline commit's body says)."""
    out = []
    for ws in sorted(p for p in results.iterdir() if p.is_dir()):
        first = history.read_history(ws)[0]
        body = history.open_workspace(ws).commit(first.sha).message
        out.append("computed" if "baseline run of the unmodified template" in body else "cached")
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_ideas_in_parallel_from_a_cold_cache(fake_llm, tmp_path, cold_cache, capsys, n):
    ideas = make_ideas(tmp_path, n)
    for i in range(n):
        fake_llm.script([raise_by(f"0.0{i + 1}"), "ALL_COMPLETED", NOTES], key=f"variant {i}")
    results = tmp_path / "results"
    code = main(["run", *map(str, ideas), "--jobs", str(n), "--results", str(results),
                 "--model", MODEL, "--api-base", fake_llm.url])
    out = capsys.readouterr().out
    assert code == 0, out
    workspaces = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(workspaces) == n, "every idea got its own workspace"
    assert sorted(baseline_sources(results)) == ["cached"] * (n - 1) + ["computed"], \
        "the baseline was computed once, the others waited and reused it"
    for ws in workspaces:
        statuses = [(a.run, a.status) for a in history.read_history(ws)]
        assert statuses == [(0, "baseline"), (1, "success"), (1, "notes")], (ws, statuses)
        i = int(json.loads((ws / "idea.json").read_text())["title"].rsplit(" ", 1)[1])
        assert f"ACCURACY + 0.0{i + 1}" in (ws / "experiment.py").read_text(), "each idea got its own replies"
        transcript = (ws / "transcript.md").read_text()
        assert f"variant {i}" in transcript and all(f"variant {j}" not in transcript for j in range(n) if j != i)
    assert fake_llm.violations == [] and fake_llm.remaining == 0
    assert "ideas" in out, "the summary table"


def test_parallel_ctrl_c_commits_every_idea_as_interrupted(fake_llm, tmp_path, cold_cache):
    ideas = make_ideas(tmp_path, 2)
    slow = "Slow.\n\n" + block("def train():\n", "def train():\n    import time\n    time.sleep(120)\n")
    for i in range(2):
        fake_llm.script([slow], key=f"variant {i}")
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", *map(str, ideas), "--jobs", "2",
                             "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                             "--no-smoke"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list(results.glob("*/run_1/log.txt"))) < 2:
            time.sleep(0.2)
        assert len(list(results.glob("*/run_1/log.txt"))) == 2, "both ideas are running run 1"
        os.kill(proc.pid, signal.SIGINT)  # the driver only: it forwards the Ctrl-C to each idea
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    for ws in (p for p in results.iterdir() if p.is_dir()):
        attempts = history.read_history(ws)
        assert attempts[-1].status == "interrupted", (ws, [a.status for a in attempts])
        assert not history.open_workspace(ws).is_dirty(untracked_files=True)
    assert fake_llm.violations == []


def _make_workspace(args):
    results, idea_path, cache = args
    os.environ["SAE_CACHE_DIR"] = cache
    from agent.idea import load_idea
    ws = workspace.create(load_idea(Path(idea_path)), Path(results))
    baseline.establish(ws)
    return str(ws.path)


def test_two_ideas_with_one_name_in_the_same_second_both_get_a_workspace(tmp_path, cold_cache):
    (idea,) = make_ideas(tmp_path, 1)
    results = tmp_path / "results"
    with ProcessPoolExecutor(3) as pool:
        paths = list(pool.map(_make_workspace, [(str(results), str(idea), str(cold_cache))] * 3))
    assert len(set(paths)) == 3 and all(Path(p, "run_0", "final_info.json").exists() for p in paths)
    assert sorted(baseline_sources(results)).count("computed") == 1


ACTIVATIONS_WORKER = textwrap.dedent('''
    import sys, time, types
    sys.path.insert(0, sys.argv[1])
    import torch
    from harness.activations import ActivationStore
    profile = types.SimpleNamespace(model_name="m", model_source="s", dtype="float32",
                                    hook_name=lambda layer: f"blocks.{layer}.hook_resid_post")
    store = ActivationStore(profile, log=lambda *a: None)
    spec = store._spec("train", 0, tokens=10)

    def compute():
        with open(sys.argv[2], "a") as f:
            f.write("computed\\n")
        time.sleep(1.5)   # long enough for the others to arrive while it works
        return store._commit(spec, {"acts": torch.ones(4, 2)}, {"scale": 1.0})

    path = store._cached(spec, compute)
    print(float(torch.load(path / "tensors.pt")["acts"].sum()))
''')


def test_activation_cache_is_computed_once_across_processes(tmp_path, cold_cache):
    """Three runs miss the same cold activation cache at once: one computes, two wait and reuse."""
    worker = tmp_path / "worker.py"
    worker.write_text(ACTIVATIONS_WORKER)
    counter = tmp_path / "computed.txt"
    harness_root = REPO / "templates" / "sae_variants"
    env = dict(os.environ, SAE_CACHE_DIR=str(cold_cache))
    procs = [subprocess.Popen([sys.executable, str(worker), str(harness_root), str(counter)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert counter.read_text().count("computed") == 1
    assert [o.strip().splitlines()[-1] for o in outputs] == ["8.0"] * 3, "all read the whole file"
    assert not list((cold_cache / "activations").glob("*.tmp-*")), "no half-written folder left"


def test_jobs_below_one_is_refused_before_any_workspace(fake_llm, tmp_path, cold_cache, capsys):
    ideas = make_ideas(tmp_path, 2)
    assert main(["run", *map(str, ideas), "--jobs", "0", "--results", str(tmp_path / "r"),
                 "--model", MODEL, "--api-base", fake_llm.url]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and fake_llm.requests == []


# A value other than the default for every run option; a new option needs one here, or this fails.
NOT_DEFAULT = {"results": "elsewhere", "profile": "tiny", "model": "openai/m", "api_base": "http://127.0.0.1:9",
               "max_runs": 3, "max_attempts": 2, "timeout": 12.5, "llm_timeout": 7.0, "max_cost": 0.5,
               "max_tokens": 1000, "context_window": 4096, "smoke": False, "sandbox": "staged", "executor": "slurm", "edit_format": "whole",
               "partition": "gpu", "gpus": 2, "cpus": 8, "mem_gb": 31.5, "time": "1-02:00:00", "account": "lab"}


def not_default(record_type):
    values = {}
    for f in fields(record_type):
        if is_dataclass(f.default_factory):
            values[f.name] = not_default(f.default_factory)
            continue
        assert f.name in NOT_DEFAULT, f"give {record_type.__name__}.{f.name} a test value in NOT_DEFAULT"
        assert NOT_DEFAULT[f.name] != f.default, f.name
        values[f.name] = NOT_DEFAULT[f.name]
    return record_type(**values)


def parsed_child(argv: list[str]) -> RunOptions:
    """The options a child started with `argv` runs with (`python -m agent.child STATUS run ...`)."""
    assert argv[1:3] == ["-m", "agent.child"]
    return run_options(build_parser().parse_args(argv[4:]))


@pytest.mark.parametrize("opts", [RunOptions(), not_default(RunOptions),
                                  replace(not_default(RunOptions), smoke=True, slurm=SlurmOptions())],
                         ids=["defaults", "every-option-set", "some-set"])
def test_every_run_option_reaches_each_child_unchanged(tmp_path, opts):
    argv = parallel.child_argv(opts, tmp_path / "idea.md", tmp_path / "status.json")
    assert argv[4:6] == ["run", str(tmp_path / "idea.md")] and argv[6:8] == ["--jobs", "1"]
    assert parsed_child(argv) == opts


def _subcommand(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def _flags(record_type) -> set[str]:
    out = set()
    for f in fields(record_type):
        nested = f.default_factory if is_dataclass(f.default_factory) else None
        out |= _flags(nested) if nested else {f.metadata["flag"]}
    return out


@pytest.mark.parametrize("command, own", [("run", {"--jobs", "--gpus"}), ("resume", set())])
def test_every_option_of_run_and_resume_is_in_the_typed_record(command, own):
    """An option added to the parser but not to RunOptions would never reach a --jobs child."""
    output = {"--help", "--verbose", "--quiet"}  # the command's own output, not the idea's settings
    given = {s for a in _subcommand(command)._actions for s in a.option_strings if s.startswith("--")}
    assert given - output - own <= _flags(RunOptions), "options missing from agent/options.py RunOptions"
    if command == "run":
        assert given - output - own == _flags(RunOptions)


def one_seed_template(tmp_path) -> tuple[Path, list[Path]]:
    """The SAE template with its baseline cut to one seed, no frontier and no reference SAEs, and
    two shipped ideas (with their recorded replies) pointed at it. The test below is about a cold
    cache shared by ideas at once, not about the noise floor: one SAE trains for the baseline. (Every
    step of every shipped replay is applied and trained in tests/test_experiment_config.py.)"""
    template = tmp_path / "one_seed"
    shutil.copytree(REPO / "templates" / "sae_variants", template, ignore=shutil.ignore_patterns("__pycache__"))
    spec = json.loads((template / "template.json").read_text())
    spec.update(baseline_seeds=[0], profile_baseline_seeds={}, frontier={}, profile_frontier={}, references={})
    (template / "template.json").write_text(json.dumps(spec, indent=2))
    ideas = []
    for name in ("lateral_inhibition", "topk_orthogonality"):
        (tmp_path / "ideas").mkdir(exist_ok=True)
        text = (REPO / "ideas" / f"{name}.md").read_text().replace("template: sae_variants", "template: ../one_seed")
        (tmp_path / "ideas" / f"{name}.md").write_text(text)
        shutil.copy(REPO / "ideas" / f"{name}.replay.json", tmp_path / "ideas")
        ideas.append(tmp_path / "ideas" / f"{name}.md")
    return template, ideas


@pytest.mark.slow
def test_tiny_profile_ideas_in_parallel_from_a_cold_cache(tmp_path):
    """The real template and language model: two shipped ideas (offline replays) at once, nothing cached."""
    _, ideas = one_seed_template(tmp_path)
    cache = tmp_path / "cache"
    env = {"SAE_CACHE_DIR": str(cache), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "COLUMNS": "160",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    # The converted language model is not what this test is about (it is atomic, see harness/models.py):
    # reuse one where it exists; the baseline and activation caches start cold.
    models = Path(os.environ.get("SAE_MODEL_DIR") or Path.home() / ".cache" / "sae-agent" / "models")
    if models.is_dir():
        env["SAE_MODEL_DIR"] = str(models)
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "agent", "run", *map(str, ideas), "--profile", "tiny",
                           "--jobs", "2", "--max-runs", "1",
                           "--results", str(results)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    workspaces = [p for p in results.iterdir() if p.is_dir()]
    assert len(workspaces) == 2
    assert sorted(baseline_sources(results)) == ["cached", "computed"]
    # A cached baseline's run_0 is a copy (its log included): count the computed one and the runs.
    computed = [ws for ws, how in zip(sorted(workspaces), baseline_sources(results)) if how == "computed"]
    logs = "\n".join(p.read_text() for p in [computed[0] / "run_0" / "prepare_log.txt", computed[0] / "run_0" / "log.txt",
                                              *results.glob("*/run_1/log.txt")])
    assert logs.count("training activations in") == 1, "the activations were computed once"
    assert logs.count("probing activations in") == 1
    for ws in workspaces:
        statuses = [a.status for a in history.read_history(ws)]
        assert statuses[:2] == ["baseline", "success"], statuses
        assert "activation cache hit" in (ws / "run_1" / "log.txt").read_text()


def accuracies_from_the_environment(fake_llm, tmp_path, expression: str, *flags: str) -> list[float]:
    """Two ideas run with `flags`, each run's accuracy set from its environment by `expression` (the
    replies make experiment.py `import os`): what each idea's runs saw, sorted."""
    ideas = make_ideas(tmp_path, 2)
    edit = "Read the environment.\n\n" + block("import argparse\n", "import argparse\nimport os\n") + "\n" + block(
        "    accuracy = ACCURACY\n", f"    accuracy = ACCURACY + {expression}\n")
    for i in range(2):
        fake_llm.script([edit, NOTES], key=f"variant {i}")
    results = tmp_path / "results"
    assert main(["run", *map(str, ideas), *flags, "--max-runs", "1", "--results", str(results),
                 "--model", MODEL, "--api-base", fake_llm.url]) == 0
    return sorted(
        json.loads((ws / "run_1" / "final_info.json").read_text())["mini-model/blocks.0.hook_resid_post"]
        ["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] for ws in results.iterdir() if ws.is_dir())


def test_each_idea_is_pinned_to_its_own_gpu(fake_llm, tmp_path, cold_cache):
    """--gpus 0,1: each idea's runs see CUDA_VISIBLE_DEVICES of their own."""
    seen = accuracies_from_the_environment(fake_llm, tmp_path, "0.01 * (1 + int(os.environ['CUDA_VISIBLE_DEVICES']))",
                                           "--gpus", "0,1")
    assert seen == pytest.approx([0.76, 0.77]), "GPU 0 for one idea, GPU 1 for the other"


def test_ideas_at_once_share_the_cores_out(fake_llm, tmp_path, cold_cache, monkeypatch, capsys):
    """--jobs 2: each idea's runs get half the cores as OMP_NUM_THREADS, not one torch thread per
    core each; a value the user set is left alone."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = accuracies_from_the_environment(fake_llm, tmp_path, "0.01 * int(os.environ['OMP_NUM_THREADS'])", "--jobs", "2")
    share = max(1, (os.cpu_count() or 1) // 2)
    assert f"{share} CPU thread" in capsys.readouterr().out
    assert seen == pytest.approx([0.75 + 0.01 * share] * 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.threads_per_idea(2, slurm=False) is None and parallel.threads_per_idea(8, slurm=True) is None


@pytest.mark.parametrize("verbosity, verbose, quiet", [(0, 0, False), (2, 2, False), (-1, 0, True)])
def test_each_child_gets_the_verbosity_the_run_was_given(tmp_path, verbosity, verbose, quiet):
    """`run ideas/*.md --jobs 3 -vv`: every idea's own agent.log is written at debug level too."""
    argv = parallel.child_argv(RunOptions(), tmp_path / "idea.md", tmp_path / "status.json", verbosity)
    args = build_parser().parse_args(argv[4:])
    assert (args.verbose, args.quiet) == (verbose, quiet)
