"""The loop on replies real models send (issues 24 and 25): whole files, reasoning in the text, cut
replies, text UTF-8 cannot hold, a 2 MB essay, a block for the harness. A strict loopback provider,
real git, real runs of the mini template, as tests/test_loop.py."""

import json
from pathlib import Path

import git

from agent import history
from agent.cli import main
from mini import block, MINI, MODEL, notes
from fake_llm import reply, truncated



NOTES = notes("Run 1 raised top-1 accuracy by 0.05.")


def run_agent(idea, results, *extra, fake):
    return main(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake.url, *extra])


def workspace_of(results: Path) -> Path:
    (ws,) = [p for p in results.iterdir() if p.is_dir()]
    return ws


def subjects(ws: Path) -> list[str]:
    return [a.subject for a in history.read_history(ws)]


def last_user(request) -> str:
    return [m for m in request.messages if m["role"] == "user"][-1]["content"]

ORIGINAL = (MINI / "experiment.py").read_text()
RAISED = ORIGINAL.replace("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")


def whole(name: str, content: str) -> str:
    """As Qwen2.5-Coder-1.5B answered every request for SEARCH/REPLACE: the file name, the whole file."""
    return f"Here is the updated code.\n\n{name}\n```python\n{content}```\n\nThis raises the accuracy.\n"


def attempts(ws):
    return [(a.run, a.attempt, a.status) for a in history.read_history(ws)]


def clean(ws) -> bool:
    return not git.Repo(ws).is_dirty(untracked_files=True) and not list(ws.glob("*.tmp"))


def test_a_whole_file_reply_is_applied_checked_run_and_committed(fake_llm, idea, tmp_path):
    fake_llm.script([whole("experiment.py", RAISED), "Done.\nALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    assert attempts(ws) == [(0, 1, "baseline"), (1, 1, "success"), (1, 2, "notes")]
    assert subjects(ws)[1].startswith("run 1: sae_top_1 0.800 (+0.050")
    assert (ws / "experiment.py").read_text() == RAISED and clean(ws)
    assert fake_llm.violations == []


def test_a_whole_file_that_drops_main_is_refused_by_the_gate_and_put_back(fake_llm, idea, tmp_path):
    inline = "from harness import write_results\n\nwrite_results('run_1', 0.9, 100)\n"
    fake_llm.script([whole("experiment.py", inline), whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    gated = history.read_history(ws)[1]
    assert gated.status == "gate-failed" and 'the `if __name__ == "__main__":` block is gone' in gated.error
    told = last_user(fake_llm.requests[1])
    assert "NOT run and NOT kept" in told and "main() is gone" in told and "__main__" in told
    assert (ws / "experiment.py").read_text() == RAISED and clean(ws)


def test_all_completed_after_a_refused_file_is_refused_while_no_code_has_run(fake_llm, idea, tmp_path):
    # What Qwen2.5-Coder-1.5B did: ALL_COMPLETED at once (refused), a whole file the gate refused,
    # then ALL_COMPLETED again, which ended the idea with no run. No code of its had run.
    inline = "from harness import write_results\n\nwrite_results('run_1', 0.9, 100)\n"
    fake_llm.script(["ALL_COMPLETED", whole("experiment.py", inline), "ALL_COMPLETED",
                     whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    assert [s for _, _, s in attempts(ws)] == ["baseline", "no-edits", "gate-failed", "no-edits", "success", "notes"]
    assert "No code of yours has run in this idea yet" in last_user(fake_llm.requests[3])
    assert (ws / "experiment.py").read_text() == RAISED and clean(ws)


def test_all_completed_twice_running_ends_the_idea_as_the_coder_wishes(fake_llm, idea, tmp_path):
    fake_llm.script(["ALL_COMPLETED", NOTES])   # the notes say ALL_COMPLETED too, with no run to write about
    results = tmp_path / "results"
    run_agent(idea, results, fake=fake_llm)
    ws = workspace_of(results)
    assert [s for _, _, s in attempts(ws)] == ["baseline", "no-edits", "no-edits"]
    assert "Run 1 raised" in (ws / "notes.txt").read_text() and clean(ws)   # kept, committed
    assert fake_llm.remaining == 0


def test_a_whole_protected_file_is_refused_and_the_harness_stays(fake_llm, idea, tmp_path):
    harness = (MINI / "harness" / "__init__.py").read_text()
    fake_llm.script([whole("harness/__init__.py", "def write_results(*a):\n    pass\n"),
                     whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    assert history.read_history(ws)[1].status == "edit-failed"
    assert "harness/__init__.py is protected" in last_user(fake_llm.requests[1])
    assert (ws / "harness" / "__init__.py").read_text() == harness and clean(ws)


def test_diff_mode_does_not_apply_a_whole_file_and_says_why(fake_llm, idea, tmp_path):
    fake_llm.script([whole("experiment.py", RAISED), "ALL_COMPLETED"])
    results = tmp_path / "results"
    run_agent(idea, results, "--edit-format", "diff", fake=fake_llm)
    ws = workspace_of(results)
    assert history.read_history(ws)[1].status == "no-edits"
    told = last_user(fake_llm.requests[1])
    assert "gave experiment.py whole; this session applies only SEARCH/REPLACE blocks" in told
    assert "The two ways to edit" not in told  # diff mode restates only its own format
    assert (ws / "experiment.py").read_text() == ORIGINAL


def test_whole_mode_asks_for_whole_files(fake_llm, idea, tmp_path):
    fake_llm.script(["I would raise it.", whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--edit-format", "whole", fake=fake_llm) == 0
    system = fake_llm.requests[0].messages[0]["content"]
    assert "sending it WHOLE" in system and "<<<<<<< SEARCH" not in system
    told = last_user(fake_llm.requests[1])
    assert "in the whole-file format" in told and "<<<<<<< SEARCH" not in told
    assert "Update notes.txt with the whole new notes.txt" in last_user(fake_llm.requests[3])


def test_auto_restates_both_formats_once_after_a_reply_with_no_usable_edit(fake_llm, idea, tmp_path):
    fake_llm.script(["I would raise it.", "Raise ACCURACY, I think.", whole("experiment.py", RAISED),
                     "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    first, second = last_user(fake_llm.requests[1]), last_user(fake_llm.requests[2])
    assert "The two ways to edit a file" in first and ">>>>>>> REPLACE" in first and "(the complete new file)" in first
    assert "changed nothing in experiment.py" in second and "The two ways to edit" not in second
    assert [s for _, _, s in attempts(workspace_of(results))] == ["baseline", "no-edits", "no-edits", "success", "notes"]


def test_auto_asks_for_the_whole_file_after_blocks_that_cannot_be_parsed_twice(fake_llm, idea, tmp_path):
    # What Qwen2.5-Coder-1.5B sent three replies running: a SEARCH/REPLACE block without its `=======`.
    no_divider = ("experiment.py\n```python\n<<<<<<< SEARCH\n    accuracy = ACCURACY\n"
                  "    accuracy = ACCURACY + 0.05\n>>>>>>> REPLACE\n```\n")
    fake_llm.script([no_divider, no_divider, whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    first, second = last_user(fake_llm.requests[1]), last_user(fake_llm.requests[2])
    assert "missing its `=======` line" in first and "Send the file whole instead" not in first
    assert "could not be parsed in 2 replies. Send the file whole instead" in second
    ws = workspace_of(results)
    assert [s for _, _, s in attempts(ws)] == ["baseline", "edit-failed", "edit-failed", "success", "notes"]
    assert (ws / "experiment.py").read_text() == RAISED and clean(ws)


def test_a_cut_off_reply_is_never_applied_half_way_and_the_record_says_so(fake_llm, idea, tmp_path):
    # Cut inside the file: applying it would leave experiment.py without its main().
    cut = whole("experiment.py", RAISED)[:120]
    fake_llm.script([truncated(cut), truncated(block("    accuracy = ACCURACY\n", "    accuracy = 0\n")),
                     whole("experiment.py", RAISED), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    cut_attempts = history.read_history(ws)[1:3]
    assert [a.status for a in cut_attempts] == ["edit-failed", "edit-failed"]
    assert all("cut off at the model's output limit (finish_reason: length)" in a.error for a in cut_attempts)
    assert "cut off" in cut_attempts[0].subject
    assert "Your reply was cut off" in last_user(fake_llm.requests[1])
    # Even a complete-looking block in a cut reply is not applied.
    assert "accuracy = 0\n" not in git.Repo(ws).git.show(f"{cut_attempts[1].sha}:experiment.py")
    assert (ws / "experiment.py").read_text() == RAISED and clean(ws)
    usage = json.loads((ws / "transcript.json").read_text())["usage"]
    assert [u.get("truncated", False) for u in usage][:3] == [True, True, False]


def test_edits_are_read_after_the_reasoning_which_stays_in_the_transcript_only(fake_llm, idea, tmp_path):
    # A block inside the reasoning (a draft the model rejected) must not be applied.
    draft = block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY / 0\n")
    text = (f"<think>\nA first idea:\n{draft}\nNo: that divides by zero.\n</think>\n\n"
            + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n"))
    fake_llm.script([reply(text, reasoning=None), reply("ALL_COMPLETED", reasoning=None),
                     reply("Qwen3 thinks.\n</think>\n\n" + NOTES, reasoning=None)])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    assert attempts(ws) == [(0, 1, "baseline"), (1, 1, "success"), (1, 2, "notes")]
    assert (ws / "experiment.py").read_text() == RAISED
    assert fake_llm.violations == []  # the strict server never saw the reasoning come back
    assert all("divides by zero" not in json.dumps(r.messages) for r in fake_llm.requests)
    messages = json.loads((ws / "transcript.json").read_text())["messages"]
    assert "No: that divides by zero." in messages[2]["reasoning"]
    assert "divides by zero" not in messages[2]["content"]
    assert "No: that divides by zero." in (ws / "transcript.md").read_text()


def test_a_lone_surrogate_in_a_reply_is_stored_and_the_attempt_committed(fake_llm, idea, tmp_path):
    text = "Raise it \ud800 now.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")
    fake_llm.script([text, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    assert attempts(ws) == [(0, 1, "baseline"), (1, 1, "success"), (1, 2, "notes")]
    assert clean(ws) and not (ws / "transcript.json.tmp").exists()
    messages = json.loads((ws / "transcript.json").read_text())["messages"]
    assert messages[2]["content"].startswith("Raise it \ufffd now.")


def test_a_2_mb_reply_is_kept_whole_in_the_transcript_and_sent_back_cut(fake_llm, idea, tmp_path):
    essay = "Sparse autoencoders are interesting. " * 55_000  # ~2 MB of prose, no edit
    fake_llm.script([essay, block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n"),
                     "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    sent = [len(json.dumps(r.body)) for r in fake_llm.requests[1:]]
    assert max(sent) < 100_000, sent  # was ~2 MB (525k tokens) in every later call
    ws = workspace_of(results)
    assert json.loads((ws / "transcript.json").read_text())["messages"][2]["content"] == essay


def test_a_block_for_the_harness_is_refused_never_applied_to_plot_py(fake_llm, idea, tmp_path):
    # Issue 24: its SEARCH text matches plot.py only, and aider's fallback applied it there.
    to_harness = block('print("no plots in the mini template")\n', 'print("hijacked")\n', "harness/__init__.py")
    good = block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")
    fake_llm.script([to_harness + good, "ALL_COMPLETED", NOTES])   # ALL_COMPLETED refused: no code ran
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    refused = history.read_history(ws)[1]
    assert refused.status == "edit-failed" and "refused" in refused.subject
    assert "plot.py" not in git.Repo(ws).git.show("--name-only", "--format=", refused.sha).split()
    told = last_user(fake_llm.requests[1])
    assert "harness/__init__.py is protected" in told
    assert "exact match in experiment.py\nDon't re-send them." in told  # where the other block went
    assert "hijacked" not in (ws / "plot.py").read_text() and clean(ws)


def test_a_cut_off_write_up_is_not_applied_and_the_record_says_so(fake_llm, idea, tmp_path):
    fake_llm.script([block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n"), "ALL_COMPLETED",
                     truncated("notes.txt\n```text\n# Notes\nRun 1 raised")])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    notes = history.read_history(ws)[-1]
    assert notes.status == "notes-missing" and "cut off" in notes.error
    assert (ws / "notes.txt").read_text() == (MINI / "notes.txt").read_text() and clean(ws)
