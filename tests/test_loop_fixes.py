"""The loop bugs of issue 9, each through the strict loopback server as a user would meet it."""

import json
import os
import signal
import threading
import time

import git
import pytest

from agent import history
from agent.cli import main
from agent.conversation import Conversation, ConversationError
from agent.loop import says_done
from fake_llm import delay, error, reply
from mini import NOTES, block, last_user, run_agent, workspace_of

GOOD = "Run 1.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")


def statuses(ws):
    return [(a.run, a.attempt, a.status) for a in history.read_history(ws)]


def assistant_turns(fake):
    return [m for r in fake.requests for m in r.messages if m["role"] == "assistant"]


@pytest.mark.parametrize("empty", ["", None, "  \n"])
def test_an_empty_reply_is_never_stored_nor_sent_back(fake_llm, idea, tmp_path, empty):
    fake_llm.script([reply(empty), GOOD, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    assert fake_llm.violations == []
    assert all((m["content"] or "").strip() for m in assistant_turns(fake_llm)), "an empty turn was re-sent"
    transcript = json.loads((ws / "transcript.json").read_text())
    assert all(m["content"].strip() for m in transcript["messages"] if m["role"] == "assistant")
    assert [s for _, _, s in statuses(ws)] == ["baseline", "success", "notes"]


def test_a_provider_that_only_sends_empty_replies_stops_the_idea_clearly(fake_llm, idea, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAE_AGENT_RETRY_DELAY", "0.01")   # the real backoff's 5 waits would take 31-62 s
    fake_llm.script([reply("")] * 6)
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 1
    assert "empty reply" in capsys.readouterr().out
    ws = workspace_of(results)
    transcript = json.loads((ws / "transcript.json").read_text())
    assert transcript["messages"][-1]["role"] == "user"


def test_a_transcript_with_an_empty_reply_from_before_resumes_without_a_400(tmp_path):
    conv = Conversation("system")
    conv.add_user("idea")
    conv.add_assistant("first")
    conv.add_user("run 1 failed")
    conv.save(tmp_path)
    data = json.loads((tmp_path / "transcript.json").read_text())
    for key in ("messages", "context"):  # as an older version stored it
        data[key] += [{"role": "assistant", "content": None}, {"role": "user", "content": "resumed"}]
    (tmp_path / "transcript.json").write_text(json.dumps(data))
    loaded = Conversation.load(tmp_path)
    sent = loaded.messages()
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert "run 1 failed" in sent[-1]["content"] and "resumed" in sent[-1]["content"]
    with pytest.raises(ConversationError, match="empty reply"):
        loaded.add_assistant("   ")


@pytest.mark.parametrize("text, done", [
    ("ALL_COMPLETED", True), ("Done.\n\n**ALL_COMPLETED**\n", True), ("ALL_COMPLETED.", True),
    ("I will reply ALL_COMPLETED when every run is done.", False),
    ("Not yet: `ALL_COMPLETED` comes after run 3", False),
])
def test_all_completed_counts_only_on_a_line_of_its_own(text, done):
    assert says_done(text) is done


def test_a_reply_that_mentions_all_completed_in_prose_is_run(fake_llm, idea, tmp_path):
    prose = "I will say ALL_COMPLETED once both runs are in.\n\n" + GOOD.split("\n\n", 1)[1]
    fake_llm.script([prose, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    assert [s for _, _, s in statuses(workspace_of(results))] == ["baseline", "success", "notes"]


def test_a_refused_edit_leaves_a_clean_tree_and_resume_adds_no_phantom_attempt(fake_llm, idea, tmp_path):
    placeholder = block("def train():\n    accuracy = ACCURACY\n    return accuracy\n",
                        "def train():\n    # Existing train code...\n    pass\n")
    # No code ran: the first ALL_COMPLETED is refused, the second, at once, ends the idea.
    fake_llm.script([placeholder, "ALL_COMPLETED", "ALL_COMPLETED"])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    repo = git.Repo(ws)
    assert not repo.is_dirty(untracked_files=True), repo.git.status()
    assert "Existing train code" not in (ws / "experiment.py").read_text()
    before = statuses(ws)
    assert before == [(0, 1, "baseline"), (1, 1, "gate-failed"), (1, 2, "no-edits")]

    fake_llm.script(["ALL_COMPLETED", "ALL_COMPLETED"])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    assert statuses(ws) == before + [(1, 3, "no-edits")], "no phantom interrupted attempt"


def test_a_refused_block_and_the_gate_findings_on_the_applied_ones_come_in_one_turn(fake_llm, idea, tmp_path):
    mixed = ("Two changes.\n\n"
             + block('KEY = "mini-model/blocks.0.hook_resid_post"\n', 'KEY = "x"\n', path="harness/__init__.py")
             + "\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + bonus_from_nowhere\n"))
    fake_llm.script([mixed, "ALL_COMPLETED", "ALL_COMPLETED"])   # no code ran: the first is refused
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    turn = last_user(fake_llm.requests[1])
    assert "not editable" in turn, "the refusal"
    assert "bonus_from_nowhere" in turn and "undefined" in turn.lower(), "the gate on the applied block"
    ws = workspace_of(results)
    assert "bonus_from_nowhere" not in (ws / "experiment.py").read_text(), "not kept"
    assert not git.Repo(ws).is_dirty(untracked_files=True)
    assert [s for _, _, s in statuses(ws)] == ["baseline", "edit-failed", "no-edits"]


BREAK = "Break it.\n\n" + block("    accuracy = ACCURACY + 0.05\n", "    accuracy = ACCURACY / 0\n")
BREAK_AGAIN = "Other change, same error.\n\n" + block("STEPS = 100\n", "STEPS = 101\n")


def test_the_same_error_twice_is_noticed_across_a_resume(fake_llm, idea, tmp_path):
    fake_llm.script([GOOD, BREAK, error(400, "stop here")])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 1
    ws = workspace_of(results)
    failed = history.read_history(ws)[-1]
    assert failed.status == "failed" and failed.trailers["Signature"].startswith("ZeroDivisionError")

    fake_llm.script([BREAK_AGAIN, "ALL_COMPLETED", NOTES])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    assert "restored" in last_user(fake_llm.requests[-2]), "the second identical error restores run 1's code"
    assert "ACCURACY + 0.05" in (ws / "experiment.py").read_text()


def test_a_ctrl_c_while_waiting_for_the_llm_commits_no_tokens_again(fake_llm, idea, tmp_path):
    fake_llm.script([GOOD, delay(30, "too late")])
    results = tmp_path / "results"

    def interrupt_when_waiting():
        deadline = time.monotonic() + 60
        while len(fake_llm.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_waiting, daemon=True).start()
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 130
    attempts = history.read_history(workspace_of(results))
    assert [a.status for a in attempts] == ["baseline", "success", "interrupted"]
    assert attempts[1].tokens == 120
    assert attempts[2].tokens == 0, "the previous reply's tokens were committed again"


def test_an_attempt_carries_the_tokens_and_cost_of_its_own_reply(fake_llm, idea, tmp_path):
    fake_llm.script([reply(GOOD, prompt_tokens=1234, completion_tokens=56), "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    success = history.find_attempt(ws, "1.1")
    usage = json.loads((ws / "transcript.json").read_text())["usage"][0]
    assert success.tokens == 1290 == usage["prompt_tokens"] + usage["completion_tokens"]
    assert success.cost is not None and success.cost == pytest.approx(usage["cost"], abs=5e-5) and usage["cost"] > 0


def test_an_unpriced_model_records_no_made_up_cost(fake_llm, idea, tmp_path):
    fake_llm.script([GOOD, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    args = ["run", str(idea), "--results", str(results), "--no-smoke",
            "--model", "openai/sae-agent-unpriced-test-model", "--api-base", fake_llm.url]
    assert main(args) == 0
    success = history.find_attempt(workspace_of(results), "1.1")
    assert success.tokens == 120 and success.cost is None and "Cost" not in success.trailers
