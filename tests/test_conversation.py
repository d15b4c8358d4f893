"""The message list keeps the shape strict providers accept, whatever the loop feeds it."""

import json

import pytest

from agent.conversation import (MAX_REPLY_CHARS, Conversation, ConversationError, check_messages,
                                split_reasoning, valid_text)

TRACEBACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "experiment.py", line {i}, in f{i}\n    x = f{i + 1}()\n' for i in range(40)
) + "AttributeError: 'CustomTrainer' object has no attribute 'ae'\n"
FILE_DUMP = "experiment.py\n```python\n" + "".join(f"line_{i} = {i}\n" for i in range(200)) + "```\n"


def roles(conv):
    return [m["role"] for m in conv.messages()]


def long_conversation(turns=6):
    """An idea, then `turns` rounds of a reply with a file dump and feedback with a traceback."""
    conv = Conversation("You are an SAE researcher.")
    conv.add_user("IDEA: lateral inhibition SAE")
    for i in range(turns):
        conv.add_assistant(f"reply {i}\n{FILE_DUMP}")
        conv.add_user(f"Run {i} failed with the following error\n{TRACEBACK}")
    return conv


def test_feedback_while_a_user_turn_is_pending_is_merged_not_appended():
    # The old tool's death: "Run failed" appended after a user turn still waiting for a reply.
    conv = Conversation("system")
    conv.add_user("idea")
    conv.add_assistant("edit")
    conv.add_user("Run failed with the following error: A")
    conv.add_user("Run failed with the following error: B")
    conv.add_user("Edits did not apply")
    assert roles(conv) == ["system", "user", "assistant", "user"]
    last = conv.messages()[-1]["content"]
    assert last.index("error: A") < last.index("error: B") < last.index("did not apply")


def test_a_reply_needs_a_pending_user_turn():
    conv = Conversation("system")
    with pytest.raises(ConversationError):
        conv.add_assistant("reply to nobody")
    conv.add_user("idea")
    conv.add_assistant("reply")
    with pytest.raises(ConversationError):
        conv.add_assistant("a second reply in a row")
    assert [m["role"] for m in conv.transcript()] == ["system", "user", "assistant"]
    assert not conv.pending_user


def test_messages_refuses_to_send_a_list_without_a_user_turn_to_answer():
    conv = Conversation("system")
    with pytest.raises(ConversationError):
        conv.messages()
    conv.add_user("idea")
    conv.add_assistant("reply")
    with pytest.raises(ConversationError, match="last message"):
        conv.messages()


def test_check_messages_names_the_offending_message():
    bad = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
           {"role": "user", "content": "b"}]
    with pytest.raises(ConversationError, match=r"messages\[2\]"):
        check_messages(bad)
    with pytest.raises(ConversationError, match="plain"):
        check_messages([{"role": "system", "content": "s"},
                        {"role": "user", "content": "a", "reasoning_content": "x"}])


def test_messages_are_fresh_copies_with_role_and_content_only():
    conv = Conversation("system")
    conv.add_user("idea")
    sent = conv.messages()
    sent[1]["content"] = "tampered"
    sent.append({"role": "user", "content": "extra"})
    assert conv.messages() == [{"role": "system", "content": "system"},
                               {"role": "user", "content": "idea"}]


def test_non_text_content_is_refused():
    conv = Conversation("system")
    with pytest.raises(ConversationError):
        conv.add_user(None)


def test_save_then_load_resumes_the_same_conversation(tmp_path):
    conv = long_conversation(2)
    conv.record_usage(model="openai/deepseek-reasoner", prompt_tokens=10, completion_tokens=5,
                      cost=None, seconds=1.5)
    conv.save(tmp_path)
    data = json.loads((tmp_path / "transcript.json").read_text())
    assert data["messages"][0] == {"role": "system", "content": "You are an SAE researcher."}

    again = Conversation.load(tmp_path / "transcript.json")
    assert again.messages() == conv.messages()
    assert again.usage == conv.usage
    assert again.pending_user  # the loop goes on by asking the coder
    again.add_assistant("next reply")

    md = (tmp_path / "transcript.md").read_text()
    assert "IDEA: lateral inhibition SAE" in md and "AttributeError" in md
    assert "cost unknown" in md  # the one call of unknown price says so


def test_load_refuses_a_transcript_that_breaks_alternation(tmp_path):
    (tmp_path / "transcript.json").write_text(json.dumps({"system": "s", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "a"},
        {"role": "user", "content": "b"}]}))
    with pytest.raises(ConversationError):
        Conversation.load(tmp_path)
    (tmp_path / "transcript.json").write_text("{not json")
    with pytest.raises(ConversationError, match="cannot load"):
        Conversation.load(tmp_path / "transcript.json")


# ---------------------------------------------------------------- issue 25: what providers really send


@pytest.mark.parametrize("text,reasoning,answer", [
    ("<think>\nPlan the SAE.\n</think>\n\nexperiment.py\n```python\nx = 1\n```", "Plan the SAE.",
     "experiment.py\n```python\nx = 1\n```"),
    ("Plan the SAE.\n</think>\n\nALL_COMPLETED", "Plan the SAE.", "ALL_COMPLETED"),  # R1's template opened it
    ("  <think>cut off while thinking", "cut off while thinking", ""),
    ("No reasoning here.", "", "No reasoning here."),
    # A tag in the middle of an answer is the answer's own text.
    ("Parse `<think>x</think>` tags out.", "", "Parse `<think>x</think>` tags out."),
])
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)


def test_reasoning_is_kept_in_the_transcript_and_never_sent(tmp_path):
    conv = Conversation("system")
    conv.add_user("idea")
    conv.add_assistant("the edit", reasoning="secret plan")
    conv.add_user("Run 1 completed")
    assert conv.messages()[2] == {"role": "assistant", "content": "the edit"}
    assert "secret plan" not in json.dumps(conv.messages())
    assert conv.transcript()[2] == {"role": "assistant", "content": "the edit", "reasoning": "secret plan"}
    conv.save(tmp_path)
    assert "secret plan" in (tmp_path / "transcript.md").read_text()
    again = Conversation.load(tmp_path)
    assert again.transcript() == conv.transcript() and again.messages() == conv.messages()


def test_a_lone_surrogate_from_a_provider_is_saved_and_loads_back_exactly(tmp_path):
    # Valid JSON from a provider; UTF-8 has no encoding for it: saving used to crash and leave a .tmp.
    conv = Conversation("system")
    conv.add_user("idea")
    conv.add_assistant("prose \ud800 then an edit")
    conv.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transcript.json", "transcript.md"]
    assert Conversation.load(tmp_path).transcript() == conv.transcript()
    assert "prose \\ud800 then" in (tmp_path / "transcript.md").read_text()
    assert valid_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc" and valid_text("é ± 😀") == "é ± 😀"


def test_a_failed_write_leaves_no_tmp_file(tmp_path):
    from agent import conversation
    with pytest.raises(UnicodeEncodeError):  # errors="strict": the write fails half-way
        conversation._write_atomic(tmp_path / "x.md", "\ud800")
    assert list(tmp_path.iterdir()) == []


def test_a_huge_reply_is_sent_back_cut_and_kept_whole_in_the_transcript():
    essay = "word " * 400_000  # ~2 MB: was carried whole in every later request
    conv = Conversation("system")
    conv.add_user("idea")
    conv.add_assistant("BEGIN " + essay + " END")
    conv.add_user("Your reply changed nothing")
    sent = conv.messages()[2]["content"]
    assert len(sent) < MAX_REPLY_CHARS + 200
    assert sent.startswith("BEGIN ") and sent.endswith(" END") and "characters of this reply are left out" in sent
    assert conv.transcript()[2]["content"] == "BEGIN " + essay + " END"
    assert conv.assistant_replies() == ["BEGIN " + essay + " END"]
