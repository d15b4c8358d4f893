"""agent/results.py: reading final_info.json, headline metrics, comparison with run 0, untrained SAEs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import results

KEY = "google/gemma-3-270m/blocks.6.hook_resid_post"


def entry(top1=0.74, all_latents=0.88, llm_top1=0.69, l0=31.2, ev=0.81, dead=0.02, steps=937):
    return {
        "eval_type_id": "sparse_probing",
        "eval_config": {"k_values": [1, 2, 5, 10, 20, 50], "model_name": "google/gemma-3-270m"},
        "eval_result_metrics": {
            "llm": {"llm_test_accuracy": 0.93, "llm_top_1_test_accuracy": llm_top1},
            "sae": {"sae_test_accuracy": all_latents, "sae_top_1_test_accuracy": top1},
        },
        "eval_result_details": [],
        "sae_cfg_dict": {"model_name": "google/gemma-3-270m", "hook_layer": 6, "hook_name": "blocks.6.hook_resid_post"},
        "core_metrics": {"l0": l0, "explained_variance": ev, "mse": 0.1, "frac_dead": dead, "ce_loss_score": 0.9},
        "training": {"training_steps": steps, "final_loss": 120.0, "layer": 6, "dict_size": 2560},
    }


def write(run_dir, info):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "final_info.json").write_text(json.dumps(info) if not isinstance(info, str) else info)
    return run_dir


def test_load_results_reads_a_valid_file(tmp_path):
    info = results.load_results(write(tmp_path / "run_1", {KEY: entry()}))
    assert info[KEY]["core_metrics"]["l0"] == 31.2


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"notes": "hello"}), "no SAE entry"),
])
def test_load_results_refuses_unusable_files_with_a_clear_message(tmp_path, content, message):
    run_dir = tmp_path / "run_1"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "final_info.json").write_text(content)
    with pytest.raises(results.ResultsError, match=message):
        results.load_results(run_dir)


def test_load_results_refuses_nan_or_missing_headline_metric(tmp_path):
    # json.dumps writes NaN as the bare token NaN, which Python's json reads back as float('nan')
    with pytest.raises(results.ResultsError, match="explained_variance = nan"):
        results.load_results(write(tmp_path / "a", {KEY: entry(ev=float("nan"))}))
    broken = entry()
    del broken["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"]
    with pytest.raises(results.ResultsError, match="no sae_top_1_test_accuracy"):
        results.load_results(write(tmp_path / "b", {KEY: broken}))


# ---------------------------------------------------------------- the schema at the trust boundary
TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "sae_variants"


def test_a_missing_or_mistyped_field_is_refused_naming_it(tmp_path, synthetic):
    missing = entry()
    del missing["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"]
    with pytest.raises(results.ResultsError) as exc:
        results.load_results(write(tmp_path / "a", {KEY: missing}))
    assert str(exc.value) == (f"{tmp_path / 'a' / 'final_info.json'}: eval_result_metrics.sae.sae_top_1_test_accuracy: "
                              f"field required (SAE {KEY!r} has no sae_top_1_test_accuracy)")
    with pytest.raises(results.ResultsError, match=r"final_info.json: core_metrics.l0: input should be a valid number "
                                                   r"\(SAE .*, got '31.2'\)$"):
        results.load_results(write(tmp_path / "b", {KEY: entry(l0="31.2")}))   # a number as text is not one
    other_k = entry()
    other_k["eval_result_metrics"]["sae"]["sae_top_20_test_accuracy"] = "high"   # a metric the models do not name
    with pytest.raises(results.ResultsError, match=r"eval_result_metrics.sae.sae_top_20_test_accuracy: input should"):
        results.load_results(write(tmp_path / "c", {KEY: other_k}))
    # a synthetic world's parts: its ground-truth metrics and its per-block evidence
    info = synthetic()
    (key,) = info
    del info[key]["eval_result_metrics"]["ground_truth"]["mcc"]
    info[key]["per_example"]["ground_truth_blocks"]["tp"][2][1] = 1.5
    with pytest.raises(results.ResultsError, match=r"ground_truth.mcc: field required .*; and 1 more problem$"):
        results.load_results(write(tmp_path / "d", info))
    del info[key]["eval_result_metrics"]["ground_truth"]
    with pytest.raises(results.ResultsError, match=r"per_example.ground_truth_blocks.tp\[2\]\[1\]: input should be "
                                                   r"a valid integer"):
        results.load_results(write(tmp_path / "e", info))


def test_an_entry_that_is_not_an_sae_is_refused(tmp_path):
    with pytest.raises(results.ResultsError, match=r"final_info.json: 'notes' is not an SAE entry \(got 'hello'\): every "
                                                   r"key holds one SAE's results, an object with eval_result_metrics"):
        results.load_results(write(tmp_path / "a", {KEY: entry(), "notes": "hello"}))


def test_results_written_before_the_schema_still_read(tmp_path):
    """The first harness wrote no per_example, diagnostics, headline_metrics or synthetic fields, and
    sae_cfg_dict keys that are gone now: optional or kept, so old workspaces resume."""
    old = entry()
    old["sae_cfg_dict"].update({"apply_b_dec_to_input": True, "activation_fn_str": "relu"})
    old["eval_result_unstructured"], old["loss_curve"] = None, [3.0, 1.0]
    assert results.load_results(write(tmp_path / "run_0", {KEY: old}))[KEY] == old


def test_the_shipped_json_schema_is_current():
    shipped = (TEMPLATE / "harness" / "final_info.schema.json").read_text()
    assert shipped == results.schema().json_schema_text(), (
        "harness/schema.py changed: python templates/sae_variants/harness/schema.py "
        "> templates/sae_variants/harness/final_info.schema.json")


def test_the_json_schema_accepts_what_the_models_accept(synthetic):
    """Readers outside Python get the same contract from the shipped file."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads((TEMPLATE / "harness" / "final_info.schema.json").read_text()))
    for info in ({KEY: entry()}, synthetic()):
        validator.validate(info)
    broken = entry()
    del broken["core_metrics"]["explained_variance"]
    assert [e.message for e in validator.iter_errors({KEY: broken})] == ["'explained_variance' is a required property"]


def test_a_run_whose_result_does_not_validate_is_recorded_as_failed(fake_llm, tmp_path, monkeypatch):
    """Through the loop (the mini template: its experiment writes its own result file): the attempt
    fails with the field's name, and the coder hears it."""
    from agent import history
    from agent.cli import main
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    idea = tmp_path / "mini_idea.md"
    idea.write_text(f"---\ntemplate: {Path(__file__).parent / 'data' / 'mini_template'}\nmax_runs: 1\n---\n"
                    "# Report the accuracy in words\n\n## Experiment\n1. Do it.\n")
    edit = ("experiment.py\n```python\n<<<<<<< SEARCH\n    write_results(args.out_dir, train(), STEPS)\n=======\n"
            "    write_results(args.out_dir, \"high\", STEPS)\n>>>>>>> REPLACE\n```\n")
    fake_llm.script([edit, "ALL_COMPLETED"])
    out = tmp_path / "results"
    assert main(["run", str(idea), "--results", str(out), "--model", "openai/deepseek-reasoner",
                 "--api-base", fake_llm.url]) == 0
    (ws,) = [p for p in out.iterdir() if p.is_dir()]
    attempt = history.read_history(ws)[1]
    problem = ("final_info.json: eval_result_metrics.sae.sae_top_1_test_accuracy: input should be a valid number "
               "(SAE 'mini-model/blocks.0.hook_resid_post', got 'high')")
    assert attempt.status == "failed" and problem in attempt.error
    assert problem in [m for m in fake_llm.requests[1].messages if m["role"] == "user"][-1]["content"]


def test_headline_flattens_each_sae_entry():
    other = "google/gemma-3-270m/blocks.3.hook_resid_post"
    h = results.headline({KEY: entry(), other: entry(top1=0.6, steps=10), "note": "ignored"})
    assert set(h) == {KEY, other}
    assert h[KEY] == {"sae_top_1_test_accuracy": 0.74, "sae_test_accuracy": 0.88, "llm_top_1_test_accuracy": 0.69,
                      "f1": None, "mcc": None, "uniqueness": None,  # a synthetic world's, absent here
                      "l0": 31.2, "explained_variance": 0.81, "frac_dead": 0.02, "training_steps": 937.0}
    assert h[other]["training_steps"] == 10.0


def test_compare_shows_both_runs_and_signed_deltas():
    table = results.compare({KEY: entry()}, {KEY: entry(top1=0.771, l0=25.0)})
    assert KEY in table
    row = next(line for line in table.splitlines() if "sae_top_1_test_accuracy" in line)
    assert "0.740" in row and "0.771" in row and "+0.031" in row
    l0_row = next(line for line in table.splitlines() if line.strip().startswith("l0"))
    assert "-6.2" in l0_row


def test_compare_says_when_an_sae_is_missing_from_run_0():
    other = "google/gemma-3-270m/blocks.3.hook_resid_post"
    table = results.compare({KEY: entry()}, {other: entry()})
    assert "no such SAE in run 0" in table and "missing from this run" in table


def test_subject_summary():
    assert results.subject_summary({KEY: entry()}, {KEY: entry(top1=0.771)}) == "sae_top_1 0.771 (+0.031 vs run 0, no interval)"
    assert results.subject_summary({KEY: entry()}, {KEY: entry(top1=0.70)}) == "sae_top_1 0.700 (-0.040 vs run 0, no interval)"


def test_a_result_without_its_profiles_headline_metric_is_summed_up_by_one_it_has(synthetic):
    # A synthetic world's final split: sparse probing only, no ground truth, no core metrics.
    def probing_only(result):
        (entry,) = result.values()
        entry["eval_result_metrics"].pop("ground_truth")
        entry.pop("core_metrics")
        return result
    seeds = [probing_only(synthetic(0.7, seed=s, top1=0.70 + 0.002 * s)) for s in range(3)]
    summary = results.subject_summary(seeds[0], probing_only(synthetic(0.7, top1=0.75)), seeds)
    assert summary.startswith("sae_top_1 0.750 (+0.048 ± ") and "—" not in summary
    assert results.subject_summary(seeds[0], synthetic(0.7), seeds).startswith("f1 ")   # the headline where it is


def test_a_trained_result_has_no_untrained_problems():
    assert results.untrained_problems({KEY: entry()}) == []


def test_untrained_problems_name_each_symptom():
    # What the seeds' broken baseline looked like: 0 steps, every accuracy exactly chance, nothing explained.
    problems = results.untrained_problems({KEY: entry(top1=0.5, ev=0.0, steps=0)})
    assert len(problems) == 3
    text = " ".join(problems)
    assert "0 steps" in text and "chance" in text and "explained variance" in text
    assert results.untrained_problems({KEY: entry(top1=0.51)})          # within noise of chance
    assert results.untrained_problems({KEY: entry(top1=0.55)}) == []    # above it


def test_results_module_does_not_import_torch():
    code = "import sys, agent.results; agent.results.schema(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_coders_task_explains_a_synthetic_worlds_metrics_and_leaves_the_lm_text_alone(synthetic):
    from agent import loop, prompts
    fields = dict(title="t", motivation="m", experiment="e", plan="p", max_runs=3, baseline="TABLE",
                  command="c", files="F")
    assert loop.headline_note({KEY: entry()}) == ""
    lm = prompts.TASK.format(headline_note=loop.headline_note({KEY: entry()}), **fields)
    assert "TABLE\n\nHow to read results:" in lm and "SynthSAEBench" not in lm
    note = loop.headline_note(synthetic())
    assert "SynthSAEBench" in note and "(64 true features in 16 dimensions" in note and "matched L0" in note
    assert prompts.TASK.format(headline_note=note, **fields).replace(note, "") == lm
