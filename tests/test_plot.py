"""plot.py draws each run against the baseline at its own sparsity: the frontier and the TopK reference."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

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
