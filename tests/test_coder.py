"""The coder against a real HTTP server as strict as deepseek-reasoner, reached through litellm."""

import json
import subprocess
import sys

import litellm
import pytest

from agent.coder import (ALL_COMPLETED, CUT_IN_REASONING, BudgetExceeded, LiteLLMCoder, LLMError, ReplayCoder,
                         make_coder, preflight)
from agent.conversation import Conversation, ConversationError
from fake_llm import context_exceeded, delay, error, reply

MODEL = "openai/deepseek-reasoner"
TRACEBACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "experiment.py", line {i}, in f\n    g()\n' for i in range(300)) + "KeyError: 'l0'\n"


@pytest.fixture
def coder(fake_llm):
    """A LiteLLMCoder aimed at the fake server, with backoff short enough for tests."""
    retries = []

    def make(model=MODEL, **kw):
        kw = {"timeout": 10, "base_delay": 0.01, "max_delay": 0.05, **kw}
        c = LiteLLMCoder(model, api_base=fake_llm.url, on_retry=retries.append, **kw)
        c.retries = retries
        return c
    return make


def idea_conv(text="IDEA: percentile-adaptive lateral inhibition"):
    conv = Conversation("You are an SAE researcher.")
    conv.add_user(text)
    return conv


def test_fake_server_rejects_what_deepseek_rejects(fake_llm):
    # Without this the other tests could pass against a server that accepts anything.
    fake_llm.script(["never sent"])
    bad = [{"role": "system", "content": "s"}, {"role": "user", "content": "idea"},
           {"role": "user", "content": "Run failed"}]
    with pytest.raises(litellm.BadRequestError, match="successive user or assistant messages"):
        litellm.completion(model=MODEL, messages=bad, api_base=fake_llm.url, max_retries=0)
    assert len(fake_llm.violations) == 1 and fake_llm.remaining == 1


def test_reply_is_stored_as_text_with_tokens_and_cost(fake_llm, coder):
    fake_llm.script([reply("first edit", prompt_tokens=1000, completion_tokens=200),
                     reply("second edit", prompt_tokens=1500, completion_tokens=300)])
    c, conv = coder("openai/gpt-4o-mini"), idea_conv()
    first = c.complete(conv)
    assert (first.text, first.prompt_tokens, first.completion_tokens) == ("first edit", 1000, 200)
    assert first.cost > 0 and first.model == "openai/gpt-4o-mini"
    conv.add_user("Run 1 completed")
    second = c.complete(conv)
    assert c.total_tokens == 3000
    assert c.total_cost == pytest.approx(first.cost + second.cost)
    assert [u["prompt_tokens"] for u in conv.usage] == [1000, 1500]
    # deepseek's reasoning_content is kept in the transcript, beside the reply, never sent back
    assert conv.transcript()[-1] == {"role": "assistant", "content": "second edit",
                                     "reasoning": "Let me think about the SAE first."}
    assert fake_llm.requests[0].body["model"] == "gpt-4o-mini"


def test_unknown_price_is_none_not_a_crash(fake_llm, coder):
    fake_llm.script(["edit"])
    c = coder("openai/my-local-sae-coder")
    r = c.complete(idea_conv())
    assert r.cost is None and c.unpriced_calls == 1 and c.total_cost == 0.0 and c.total_tokens == 120


def test_deepseek_behind_an_openai_compatible_base_is_priced(fake_llm, coder):
    fake_llm.script(["edit"])
    assert coder(MODEL).complete(idea_conv()).cost > 0


def test_reasoning_content_is_never_sent_back(fake_llm, coder):
    fake_llm.script([reply("edit 1", reasoning="secret chain of thought"), "edit 2"])
    c, conv = coder(), idea_conv()
    c.complete(conv)
    conv.add_user("Run 1 completed")
    c.complete(conv)
    sent = fake_llm.requests[1].messages
    assert sent[2] == {"role": "assistant", "content": "edit 1"}
    assert "secret chain of thought" not in json.dumps(sent)
    assert fake_llm.violations == []


def test_failed_runs_merge_into_one_turn_and_the_provider_accepts_it(fake_llm, coder):
    # The seed transcript's death, replayed: two "Run failed" messages with no reply between.
    fake_llm.script(["edit", "fixed edit"])
    c, conv = coder(), idea_conv()
    c.complete(conv)
    conv.add_user("Run failed with the following error\n" + TRACEBACK)
    conv.add_user("Run failed with the following error\nKeyError: 'l0'")
    assert c.complete(conv).text == "fixed edit"
    assert fake_llm.violations == []
    assert [m["role"] for m in fake_llm.requests[1].messages] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("failures", [
    [error(429, "Rate limit reached for requests")],
    [error(500, "Internal server error"), error(503, "Service is too busy")],
])
def test_transient_errors_are_retried(fake_llm, coder, failures):
    fake_llm.script(failures + ["edit"])
    c = coder()
    assert c.complete(idea_conv()).text == "edit"
    assert len(fake_llm.requests) == len(failures) + 1
    assert len(c.retries) == len(failures) and "HTTP" in c.retries[0]


def test_a_timeout_is_retried(fake_llm, coder):
    fake_llm.script([delay(3, "too late"), "in time"])
    c = coder(timeout=0.5)
    assert c.complete(idea_conv()).text == "in time"
    assert len(fake_llm.requests) == 2


@pytest.mark.parametrize("status,words", [
    (400, "Invalid max_tokens value, the valid range of max_tokens is [1, 8192]"),
    (401, "Authentication Fails, Your api key: ****abcd is invalid"),
    (404, "Model Not Exist"),
])
def test_refusals_stop_at_once_with_the_providers_words(fake_llm, coder, status, words):
    fake_llm.script([error(status, words), "never reached"])
    c, conv = coder(), idea_conv()
    before = conv.messages()
    with pytest.raises(LLMError) as caught:
        c.complete(conv)
    assert caught.value.status_code == status
    assert caught.value.provider_message == words
    assert words in str(caught.value) and f"HTTP {status}" in str(caught.value)
    assert len(fake_llm.requests) == 1 and fake_llm.remaining == 1
    assert conv.messages() == before and conv.pending_user  # no dangling turn, nothing lost


def test_after_a_failed_call_feedback_merges_and_the_next_call_succeeds(fake_llm, coder):
    fake_llm.script([error(429, "slow down")] * 2 + ["edit"])
    c, conv = coder(max_attempts=2), idea_conv()
    with pytest.raises(LLMError, match="after 2 attempts"):
        c.complete(conv)
    conv.add_user("(the loop adds a note while the turn is pending)")
    assert c.complete(conv).text == "edit"
    assert fake_llm.violations == []


@pytest.mark.parametrize("overflow", [
    context_exceeded(),  # OpenAI's code: litellm raises ContextWindowExceededError
    error(400, "prompt is too long: 210000 tokens > 200000 maximum"),  # only the words say so
])
def test_context_window_exceeded_cuts_the_prompt_further_and_retries(fake_llm, coder, overflow):
    c, conv = coder(), idea_conv()
    for i in range(6):
        fake_llm.script([f"edit {i}"])
        c.complete(conv)
        conv.add_user(f"Run {i} failed\n{TRACEBACK}")
    fake_llm.script([overflow, "short enough now"])
    assert c.complete(conv).text == "short enough now"
    too_long, accepted = fake_llm.requests[-2].messages, fake_llm.requests[-1].messages
    assert len(json.dumps(accepted)) < len(json.dumps(too_long)) / 2
    assert accepted[1]["content"].startswith("IDEA") and fake_llm.violations == []
    assert accepted[:2] == too_long[:2]  # the system message and the task go out byte-identical
    assert c.budget.limit < c.budget.window.limit and "in f" in conv.transcript()[3]["content"]  # the log keeps all
    conv.add_user("next")
    assert conv.messages()[3]["content"] == conv.transcript()[3]["content"]  # the conversation itself is not edited


def test_context_window_exceeded_with_nothing_to_condense_stops(fake_llm, coder):
    fake_llm.script([context_exceeded()] * 6)
    c, conv = coder(), idea_conv()
    with pytest.raises(LLMError, match="context window") as caught:
        c.complete(conv)
    assert "maximum context length" in caught.value.provider_message
    assert "larger window" in str(caught.value)  # what to do
    assert len(fake_llm.requests) == 1 and conv.pending_user


def test_cost_cap_stops_before_the_call_that_would_start_over_it(fake_llm, coder):
    fake_llm.script(["edit 1", "edit 2"])
    c, conv = coder("openai/gpt-4o-mini", max_cost=1e-6), idea_conv()
    c.complete(conv)  # starts under the cap, ends over it
    conv.add_user("Run 1 completed")
    with pytest.raises(BudgetExceeded, match="--max-cost"):
        c.complete(conv)
    assert len(fake_llm.requests) == 1 and conv.pending_user


def test_token_cap_stops_before_the_next_call(fake_llm, coder):
    fake_llm.script(["edit 1", "edit 2"])
    c, conv = coder(max_tokens=100), idea_conv()
    c.complete(conv)  # 120 tokens
    conv.add_user("Run 1 completed")
    with pytest.raises(BudgetExceeded, match="--max-tokens"):
        c.complete(conv)
    assert len(fake_llm.requests) == 1


def test_resumed_usage_counts_against_the_caps(fake_llm, coder):
    c = coder(max_tokens=1000)
    c.count_usage([{"prompt_tokens": 900, "completion_tokens": 200, "cost": None}])
    with pytest.raises(BudgetExceeded):
        c.complete(idea_conv())
    assert fake_llm.requests == []


def test_replay_file_plays_replies_in_order_then_all_completed(tmp_path):
    path = tmp_path / "idea.replay.json"
    path.write_text(json.dumps({"model": "openai/deepseek-reasoner", "replies": ["one", "two"]}))
    c, conv = ReplayCoder(path), idea_conv()
    assert c.name == f"replay:{path}"
    texts = []
    for _ in range(3):
        texts.append(c.complete(conv).text)
        conv.add_user("Run completed")
    assert texts[:2] == ["one", "two"]
    assert texts[2].startswith(ALL_COMPLETED) and "used up" in texts[2]


def test_replay_from_a_saved_transcript(tmp_path):
    recorded = idea_conv()
    for text in ("edit 1", "edit 2"):
        recorded.add_assistant(text)
        recorded.add_user("Run completed")
    recorded.save(tmp_path)
    c, conv = ReplayCoder(tmp_path / "transcript.json"), idea_conv()
    assert c.complete(conv).text == "edit 1"
    conv.add_user("Run completed")
    assert c.complete(conv).text == "edit 2"


def test_replay_checks_alternation_like_a_real_provider(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"replies": ["one", "two"]}))
    c, conv = ReplayCoder(path), idea_conv()
    c.complete(conv)
    with pytest.raises(ConversationError):
        c.complete(conv)  # the loop forgot to add feedback: a strict provider would refuse


def test_a_file_that_is_no_replay_is_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(LLMError, match="neither a replay file"):
        ReplayCoder(path)


def test_make_coder_picks_the_coder(tmp_path, fake_llm):
    path = tmp_path / "x.replay.json"
    path.write_text(json.dumps({"replies": []}))
    assert make_coder(None, replay_default=path).name == f"replay:{path}"
    assert make_coder(f"replay:{path}").name == f"replay:{path}"
    live = make_coder(MODEL, fake_llm.url, timeout=30, max_cost=1.0, max_tokens=5000)
    assert (live.name, live.timeout, live.max_cost, live.max_tokens) == (MODEL, 30, 1.0, 5000)
    with pytest.raises(LLMError, match="no model"):
        make_coder(None)


def test_preflight_reports_a_missing_key_before_anything_is_made(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
        make_coder("anthropic/claude-3-5-sonnet-20241022")


def test_preflight_reports_an_unknown_provider():
    with pytest.raises(LLMError, match="unknown model 'sonnet-latest'.*openai/<model> with --api-base"):
        preflight("sonnet-latest")


def test_a_local_server_needs_no_key(fake_llm, monkeypatch, coder):
    monkeypatch.delenv("OPENAI_API_KEY")
    notes = preflight("openai/my-local-sae-coder", fake_llm.url)
    assert any("placeholder key" in n for n in notes) and any("no price" in n for n in notes)
    fake_llm.script(["edit"])
    assert coder("openai/my-local-sae-coder").complete(idea_conv()).text == "edit"


def test_importing_the_coder_does_not_import_litellm():
    # litellm takes seconds to import; `agent log` and `agent show` should not pay for it.
    code = "import sys, agent.coder; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- issue 25: local models' replies

def test_the_fake_server_rejects_reasoning_sent_back_in_the_text(fake_llm):
    fake_llm.script(["never sent"])
    bad = [{"role": "system", "content": "s"}, {"role": "user", "content": "idea"},
           {"role": "assistant", "content": "<think>plan</think>edit"}, {"role": "user", "content": "ok"}]
    with pytest.raises(litellm.BadRequestError, match="reasoning"):
        litellm.completion(model=MODEL, messages=bad, api_base=fake_llm.url, max_retries=0)
    assert len(fake_llm.violations) == 1 and fake_llm.remaining == 1


@pytest.mark.parametrize("text", [
    "<think>\nI could divide by zero.\n</think>\n\nthe edit",
    "I could divide by zero.\n</think>\n\nthe edit",   # a DeepSeek-R1 distill: the template opened the tag
])
def test_reasoning_in_the_content_is_kept_in_the_transcript_and_never_sent_back(fake_llm, coder, text):
    fake_llm.script([reply(text, reasoning=None), "edit 2"])
    c, conv = coder("openai/qwen3-8b"), idea_conv()
    first = c.complete(conv)
    assert first.text == "the edit" and first.reasoning == "I could divide by zero."
    conv.add_user("Run 1 completed")
    c.complete(conv)
    assert fake_llm.violations == []  # the strict server saw no <think> come back
    assert fake_llm.requests[1].messages[2] == {"role": "assistant", "content": "the edit"}
    assert conv.transcript()[2] == {"role": "assistant", "content": "the edit",
                                    "reasoning": "I could divide by zero."}


def test_a_reply_of_reasoning_only_is_an_empty_reply_and_retried(fake_llm, coder):
    fake_llm.script([reply("<think>hmm</think>\n", reasoning=None), "the edit"])
    c, conv = coder(), idea_conv()
    assert c.complete(conv).text == "the edit"
    assert len(fake_llm.requests) == 2 and "empty reply" in c.retries[0]


def test_a_reply_cut_at_the_output_limit_is_marked_and_recorded(fake_llm, coder):
    from fake_llm import truncated
    fake_llm.script([truncated("experiment.py\n```python\nimport torch\n"),
                     truncated("<think>still thinking about", reasoning=None)])
    c, conv = coder(), idea_conv()
    r = c.complete(conv)
    assert r.truncated and r.text.startswith("experiment.py")
    assert conv.usage[-1]["truncated"] is True
    conv.add_user("Your reply was cut off")
    r = c.complete(conv)  # cut inside its reasoning: nothing to answer with, still stored
    assert r.truncated and r.text == CUT_IN_REASONING and r.reasoning == "still thinking about"
    assert conv.transcript()[-1]["content"] == CUT_IN_REASONING


def test_a_lone_surrogate_in_a_reply_becomes_storable_text(fake_llm, coder, tmp_path):
    fake_llm.script([reply("prose \ud800 and the edit", reasoning="think \udfff")])
    c, conv = coder(), idea_conv()
    r = c.complete(conv)
    assert r.text == "prose \ufffd and the edit" and r.reasoning == "think \ufffd"
    conv.save(tmp_path)
    assert json.loads((tmp_path / "transcript.json").read_text())["messages"][2]["content"] == r.text
