"""plot.py draws each run against the baseline at its own sparsity: the frontier and the TopK reference."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT = Path(__file__).resolve().parent.parent / "templates" / "sae_variants" / "plot.py"
KEY = "google/gemma-3-270m/blocks.3.hook_resid_post"


def info(l0, ev, acc):
    return {KEY: {"eval_config": {"k_values": [1, 2]},
                  "eval_result_metrics": {"sae": {"sae_top_1_test_accuracy": acc, "sae_top_2_test_accuracy": acc},
                                          "llm": {"llm_top_1_test_accuracy": 0.7, "llm_top_2_test_accuracy": 0.8}},
                  "core_metrics": {"l0": l0, "explained_variance": ev}}}


def write(root: Path, rel: str, data: dict) -> None:
    (root / rel).mkdir(parents=True, exist_ok=True)
    (root / rel / "final_info.json").write_text(json.dumps(data))


def workspace(tmp_path: Path) -> Path:
    write(tmp_path, "run_0", info(20, 0.80, 0.60))
    write(tmp_path, "run_0/seed_1", info(21, 0.81, 0.61))
    write(tmp_path, "run_0/frontier_sparsity_penalty_0.5", info(45, 0.88, 0.63))
    write(tmp_path, "run_0/frontier_sparsity_penalty_4.0", info(9, 0.70, 0.55))
    write(tmp_path, "run_0/reference_topk", info(20, 0.90, 0.62))
    write(tmp_path, "run_1", info(30, 0.86, 0.62))
    return tmp_path


def test_the_frontier_is_a_dashed_line_through_the_baselines_trainings_and_the_reference_a_cross(tmp_path):
    spec = importlib.util.spec_from_file_location("plot_under_test", PLOT)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    fig, (ax_ev, ax_acc) = plt.subplots(1, 2)
    plot.draw_baseline(ax_ev, ax_acc, workspace(tmp_path))
    (line,) = [ln for ln in ax_ev.get_lines() if ln.get_label() == "baseline frontier"]
    assert list(line.get_xdata()) == [9, 20, 21, 45], "sorted by L0, every seed and frontier point"
    assert list(line.get_ydata()) == [0.70, 0.80, 0.81, 0.88]
    (cross,) = [c for c in ax_ev.collections if c.get_label() == "topk reference"]
    assert cross.get_offsets().tolist() == [[20.0, 0.90]]
    plt.close(fig)


def test_plot_py_runs_in_a_workspace_with_a_frontier(tmp_path):
    ws = workspace(tmp_path)
    proc = subprocess.run([sys.executable, str(PLOT)], cwd=ws, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (ws / "sparsity_fidelity.png").read_bytes()[:4] == b"\x89PNG"


def load_plot():
    spec = importlib.util.spec_from_file_location("plot_under_test", PLOT)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    return plot


def drawn_figure(plot, monkeypatch, runs, root):
    """The sparsity_fidelity figure, kept from plt.close so its points can be read."""
    kept = {}
    monkeypatch.setattr(plot.plt, "close", lambda fig: kept.setdefault("fig", fig))
    plot.plot_sparsity_fidelity(runs, out=str(root / "s.png"), root=root)
    return kept["fig"]


def points(ax) -> dict:
    return {c.get_label(): c.get_offsets().tolist() for c in ax.collections if c.get_label()}


def test_the_baseline_is_drawn_at_its_seeds_mean_with_their_spread(tmp_path, monkeypatch):
    plot = load_plot()
    ws = workspace(tmp_path)
    fig = drawn_figure(plot, monkeypatch, plot.load_runs(ws), ws)
    ax_ev, ax_acc = fig.axes
    assert points(ax_ev)["run_0 (mean ± sd of 2 seeds)"] == [[20.5, pytest.approx(0.805)]], "not seed 0's (20, 0.80)"
    assert points(ax_acc)["run_0 (mean ± sd of 2 seeds)"] == [[20.5, pytest.approx(0.605)]]
    assert ax_acc.get_ylabel() == "SAE top-1 probing accuracy"
    assert plot.seed_mean(plot.baseline_seeds(ws), KEY, "l0") == pytest.approx((20.5, 0.7071), abs=1e-4)
    plt.close(fig)


def test_a_synthetic_world_is_plotted_against_its_f1(tmp_path, monkeypatch):
    plot = load_plot()
    def synth(l0, ev, f1):
        data = info(l0, ev, 0.6)
        data[KEY]["eval_config"]["headline_metrics"] = ["f1", "mcc", "explained_variance"]
        data[KEY]["eval_result_metrics"]["ground_truth"] = {"f1": f1, "mcc": 0.8}
        return data
    write(tmp_path, "run_0", synth(20, 0.80, 0.50))
    write(tmp_path, "run_0/seed_1", synth(22, 0.82, 0.54))
    write(tmp_path, "run_1", synth(30, 0.86, 0.70))
    runs = plot.load_runs(tmp_path)
    assert plot.primary_metric(runs) == "f1"
    fig = drawn_figure(plot, monkeypatch, runs, tmp_path)
    ax_acc = fig.axes[1]
    assert ax_acc.get_ylabel().startswith("F1")
    assert points(ax_acc)["run_0 (mean ± sd of 2 seeds)"] == [[21.0, pytest.approx(0.52)]]
    assert points(ax_acc)["run_1"] == [[30.0, 0.70]]
    plt.close(fig)
