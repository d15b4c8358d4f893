"""`export --to mlflow | wandb`: one tracked run per attempt, read back with the trackers' own readers.

MLflow: a real file store in tmp_path, read with `mlflow.tracking.MlflowClient`. wandb: offline
mode (no key), read from the offline run's transaction log with wandb's own protobuf schema.
"""

import json
import os

import git
import pytest

from agent import cli, export, history
from agent.conversation import Conversation
from test_review import PLOT, TEMPLATE, Builder

SAE = "tiny-model/blocks.3.hook_resid_post"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # the artefact's bytes are what is compared
LOSSES = [1.0 - i * 0.05 for i in range(11)]  # the harness logs steps 0, 10, ..., 90 and 99

EXPERIMENT = '''\
import argparse, json, os

TOP_1 = {top1}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out_dir", required=True)
    out_dir = parser.parse_args().out_dir
    {broken}
    info = {{"{sae}": {{
        "eval_type_id": "sparse_probing",
        "eval_result_metrics": {{"sae": {{"sae_top_1_test_accuracy": TOP_1, "sae_test_accuracy": 0.9}},
                                "llm": {{"llm_top_1_test_accuracy": 0.7}}}},
        "sae_cfg_dict": {{"model_name": "tiny-model", "d_sae": 1536, "hook_name": "blocks.3.hook_resid_post"}},
        "core_metrics": {{"l0": 30.0, "explained_variance": 0.8, "frac_dead": 0.01, "ce_loss_score": None}},
        "training": {{"training_steps": 100, "final_loss": 0.5, "learning_rate": 0.003}},
        "loss_curve": {losses}}}}}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "final_info.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
'''


def experiment(top1: float, works: bool = True) -> str:
    broken = "" if works else "raise AttributeError(\"'Trainer' object has no attribute 'ae'\")"
    return EXPERIMENT.format(top1=top1, sae=SAE, losses=LOSSES, broken=broken)


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "results" / "20250101_000000_tiny_idea"
    history.init_repo(ws)
    (ws / "template.json").write_text(json.dumps(TEMPLATE))
    (ws / "plot.py").write_text(PLOT)
    (ws / "idea.md").write_text("# Tiny idea\n\nMake top-1 accuracy go up.\n")
    (ws / "profile.json").write_text('{"profile": "tiny"}\n')
    b = Builder(ws)
    b.conv = Conversation("You are an SAE researcher.")
    b.user("Implement the tiny idea.")
    b.attempt(0, 1, experiment(0.70), None)
    b.attempt(1, 1, experiment(0.75, works=False), "I will raise TOP_1.")
    b.user("Run 1 failed: AttributeError")
    (ws / "top1.png").write_bytes(PNG)
    b.attempt(1, 2, experiment(0.75), "Fixed it.")
    return ws


def attempts_by_label(ws):
    return {a.label: a for a in history.read_history(ws)}


def steps_and_losses():
    return [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99], LOSSES


# -- MLflow -------------------------------------------------------------------------------------

@pytest.fixture
def mlflow_client(tmp_path, monkeypatch):
    tracking = pytest.importorskip("mlflow.tracking")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri, tracking.MlflowClient(tracking_uri=uri)


def mlflow_runs(client, experiment="sae-agent"):
    exp = client.get_experiment_by_name(experiment)
    return {r.data.tags["sae_agent.commit"]: r for r in client.search_runs([exp.experiment_id])}


def test_mlflow_one_run_per_attempt_with_trailers_metrics_curve_and_artefacts(workspace, mlflow_client,
                                                                               tmp_path, capsys):
    uri, client = mlflow_client
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", uri]) == 0
    assert "3 new run(s), 0 already there" in capsys.readouterr().out
    attempts = attempts_by_label(workspace)
    runs = mlflow_runs(client)
    assert set(runs) == {a.sha for a in attempts.values()}

    success = runs[attempts["1.2"].sha]
    assert success.info.run_name == "run 1.2 success" and success.info.status == "FINISHED"
    assert success.data.tags["mlflow.source.git.commit"] == attempts["1.2"].sha
    assert success.data.params["status"] == "success" and success.data.params["model"] == "openai/fake"
    assert success.data.params["cost"] == "$0.0100" and success.data.params["sae_cfg.d_sae"] == "1536"
    metrics = success.data.metrics
    assert metrics["sae_top_1_test_accuracy"] == 0.75 and metrics["l0"] == 30.0
    assert metrics["explained_variance"] == 0.8 and metrics["llm_top_1_test_accuracy"] == 0.7
    assert "ce_loss_score" not in metrics, "a null metric is left out, not logged as 0"
    history_ = client.get_metric_history(success.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history_, key=lambda m: m.step)] == list(zip(*steps_and_losses()))

    root = {f.path for f in client.list_artifacts(success.info.run_id)}
    assert root == {"diff.patch", "plots"}
    assert [f.path for f in client.list_artifacts(success.info.run_id, "plots")] == ["plots/top1.png"]
    local = client.download_artifacts(success.info.run_id, "diff.patch", str(tmp_path / "dl"))
    diff = open(local).read()
    assert "-    raise AttributeError" in diff and "+TOP_1" not in diff, "the diff against 1.1"
    png = client.download_artifacts(success.info.run_id, "plots/top1.png", str(tmp_path / "dl"))
    assert open(png, "rb").read() == PNG

    failed = runs[attempts["1.1"].sha]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"].startswith("AttributeError: 'Trainer' object has no attribute 'ae'")
    assert "sae_top_1_test_accuracy" not in failed.data.metrics
    baseline = runs[attempts["0.1"].sha]
    assert "diff.patch" not in {f.path for f in client.list_artifacts(baseline.info.run_id)}


def test_mlflow_export_twice_adds_only_new_attempts(workspace, mlflow_client, capsys):
    uri, client = mlflow_client
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", uri]) == 0
    first = {sha: r.info.run_id for sha, r in mlflow_runs(client).items()}
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", uri]) == 0
    assert "0 new run(s), 3 already there" in capsys.readouterr().out
    assert {sha: r.info.run_id for sha, r in mlflow_runs(client).items()} == first

    Builder(workspace).attempt(2, 1, experiment(0.8), None)  # a new attempt since the last export
    cut_short = first[attempts_by_label(workspace)["1.1"].sha]
    client.delete_tag(cut_short, export.COMPLETE_TAG)  # as if the first export died mid-run
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", uri]) == 0
    runs = mlflow_runs(client)
    assert len(runs) == 4, "one live run per attempt"
    assert runs[attempts_by_label(workspace)["1.1"].sha].info.run_id != cut_short, "redone"
    assert client.get_run(cut_short).info.lifecycle_stage == "deleted"


def test_mlflow_bad_uri_is_a_clear_error(workspace, capsys):
    pytest.importorskip("mlflow")
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", "nosuchscheme://x"]) == 2
    assert "error: MLflow at nosuchscheme://x" in capsys.readouterr().err


# -- wandb (offline) ------------------------------------------------------------------------------

BLOCK = 32 * 1024  # the transaction log is LevelDB's log format: 32 KiB blocks of chunked records


def wandb_records(path):
    """Every record of an offline run's `run-<id>.wandb`, parsed with wandb's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""  # header: ':W&B', magic (2 bytes), version (1 byte)
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            yield pb.Record.FromString(pending)
            pending = b""


def read_offline_run(folder):
    (log,) = folder.glob("run-*.wandb")
    run, history_, summary, artefacts, exit_code = None, {}, {}, [], None
    for r in wandb_records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history_[r.history.step.num] = items
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        elif kind == "artifact":
            artefacts.append((r.artifact.type, sorted(m.path for m in r.artifact.manifest.contents)))
        elif kind == "exit":
            exit_code = r.exit.exit_code
    return run, history_, summary, artefacts, exit_code


@pytest.fixture
def offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login, no user settings
    return tmp_path / "wb"


def test_wandb_offline_run_per_attempt(workspace, offline, capsys):
    assert export.wandb_mode() == "offline"
    assert cli.main(["export", str(workspace), "--to", "wandb", "--uri", str(offline)]) == 0
    assert "wandb offline runs under" in capsys.readouterr().out
    attempts = attempts_by_label(workspace)
    folders = {p.name.rsplit("-", 1)[1]: p for p in (offline / "wandb").glob("offline-run-*")}
    assert set(folders) == {export.wandb_run_id(a.sha) for a in attempts.values()}

    success = attempts["1.2"]
    run, history_, summary, artefacts, exit_code = read_offline_run(folders[export.wandb_run_id(success.sha)])
    assert run.display_name == "run 1.2 success" and list(run.tags) == ["success"]
    assert run.git.commit == success.sha
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["status"] == "success" and config["model"] == "openai/fake"
    assert config["sae_agent.commit"] == success.sha
    steps, losses = steps_and_losses()
    assert sorted(history_) == steps
    assert [history_[s]["loss"] for s in steps] == losses
    assert summary["sae_top_1_test_accuracy"] == 0.75 and summary["l0"] == 30.0
    assert artefacts == [("attempt", ["diff.patch", "plots/top1.png"])]
    assert exit_code == 0

    _, _, _, _, failed_exit = read_offline_run(folders[export.wandb_run_id(attempts["1.1"].sha)])
    assert failed_exit == 1


def test_wandb_export_twice_does_not_duplicate(workspace, offline, capsys):
    assert cli.main(["export", str(workspace), "--to", "wandb", "--uri", str(offline)]) == 0
    assert cli.main(["export", str(workspace), "--to", "wandb", "--uri", str(offline)]) == 0
    assert "0 new run(s), 3 already there" in capsys.readouterr().out
    assert len(list((offline / "wandb").glob("offline-run-*"))) == 3


def test_export_reads_git_only_and_leaves_the_workspace_alone(workspace, mlflow_client):
    uri, _ = mlflow_client
    repo = git.Repo(workspace)
    head, status = repo.head.commit.hexsha, repo.git.status("--porcelain")
    assert cli.main(["export", str(workspace), "--to", "mlflow", "--uri", uri]) == 0
    assert (repo.head.commit.hexsha, repo.git.status("--porcelain")) == (head, status)
    assert not any(p.name == "mlruns" for p in workspace.iterdir())
    assert os.path.isdir(uri[len("file://"):])
