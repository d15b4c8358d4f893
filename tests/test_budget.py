"""The context budget (agent/budget.py): the window found, every prompt cut to fit it before the call.

Through the strict fake server and real litellm, as a user meets it: the requests the server
received are counted with the same counter the agent uses.
"""

import git
import litellm
import pytest

from agent import budget, history, prompts
from agent.attempt import Status
from agent.budget import Budget, Counter, PromptTooLarge, Window, find_window
from agent.coder import LiteLLMCoder, LLMError
from agent.conversation import MAX_REPLY_CHARS, Conversation, check_messages
from mini import MODEL, block, mini_idea, run_agent, workspace_of

UNKNOWN = "openai/sae-agent-budget-test-model"  # neither litellm nor the fake server knows its window
PADDING = "This paragraph explains the change at length so that the history grows. " * 20


def first_two_identical(requests) -> bool:
    """The stable prefix: the system message and the task, byte for byte, in every request."""
    return all(r.messages[:2] == requests[0].messages[:2] for r in requests)


# -- the window and where it comes from -----------------------------------------------------

def test_the_flag_wins_and_a_quarter_is_kept_for_the_reply(fake_llm):
    fake_llm.props = {"default_generation_settings": {"n_ctx": 4096}}
    w = find_window(MODEL, fake_llm.url, given=2000)
    assert (w.tokens, w.reserve, w.limit, w.source) == (2000, 500, 1500, "from --context-window")
    assert fake_llm.gets == []  # the user said it: nothing is asked


def test_litellm_knows_a_hosted_model_and_its_output_limit():
    info = litellm.get_model_info("deepseek-reasoner")
    w = find_window("deepseek/deepseek-reasoner")
    assert w.tokens == info["max_input_tokens"] and "litellm" in w.source
    assert w.reserve == min(info["max_output_tokens"], w.tokens // 4)


def test_a_llama_cpp_server_reports_its_slot_context_in_props(fake_llm):
    # /v1/models holds only the model's training context; /props what the server was started with.
    fake_llm.props = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1}
    fake_llm.models = {"object": "list", "data": [{"id": "x", "meta": {"n_ctx_train": 32768}}]}
    w = find_window(UNKNOWN, fake_llm.url)
    assert w.tokens == 4096 and "/props n_ctx 4096" in w.source and fake_llm.gets == ["/props"]


@pytest.mark.parametrize("entry, tokens, words", [
    ({"id": "sae-agent-budget-test-model", "max_model_len": 16384}, 16384, "max_model_len"),  # vLLM
    ({"id": "x", "meta": {"n_ctx_train": 32768}}, 32768, "meta.n_ctx_train"),  # llama.cpp without /props
])
def test_a_server_reports_its_window_in_models(fake_llm, entry, tokens, words):
    fake_llm.models = {"object": "list", "data": [entry]}
    w = find_window(UNKNOWN, fake_llm.url)
    assert w.tokens == tokens and words in w.source and "/v1/models" in fake_llm.gets


def test_vllm_serving_several_models_reports_the_one_asked_for(fake_llm):
    fake_llm.models = {"object": "list", "data": [{"id": "other", "max_model_len": 2048},
                                                  {"id": "sae-agent-budget-test-model", "max_model_len": 16384}]}
    assert find_window(UNKNOWN, fake_llm.url).tokens == 16384


def test_nothing_known_is_a_conservative_default_that_says_how_to_do_better(fake_llm):
    w = find_window(UNKNOWN, fake_llm.url)
    assert w.tokens == budget.DEFAULT_WINDOW and w.reserve == w.tokens // 4
    assert "default" in w.source and "--context-window" in w.source and fake_llm.url in w.source


def test_a_coder_tells_where_its_window_came_from(fake_llm):
    fake_llm.props = {"default_generation_settings": {"n_ctx": 6000}}
    c = LiteLLMCoder(UNKNOWN, api_base=fake_llm.url)
    assert c.budget.window.tokens == 6000
    assert any("context window 6000 tokens" in n and "/props" in n for n in c.notes)
    assert any("estimated" in n for n in c.notes)  # an unknown model's tokens are estimated, said once


# -- counting -------------------------------------------------------------------------------

def test_a_known_model_is_counted_with_its_own_tokenizer():
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "def f(x): return x"}]
    count = Counter(MODEL)
    # per message and all, what litellm counts for the whole list (counted here a message at a time, cached)
    assert not count.estimated and count(messages) == litellm.token_counter(model=MODEL, messages=messages)


def test_an_unknown_model_is_estimated_from_its_length_and_said_so():
    count = Counter(UNKNOWN)
    assert count.estimated and "estimated at 4 characters a token" in count.note
    assert count.text("x" * 400) == 115  # 400 / 4, plus the 15% margin


# -- fitting, on its own --------------------------------------------------------------------

def conversation(turns: int, reply: str = "edit\n" + PADDING, feedback: str = "Run failed.\n" + PADDING) -> list[dict]:
    conv = Conversation("You are an SAE researcher.")
    conv.add_user("IDEA: lateral inhibition.")
    for i in range(turns):
        conv.add_assistant(f"reply {i}: {reply}")
        conv.add_user(f"feedback {i}: {feedback}")
    return conv.messages()


def budget_of(tokens: int) -> Budget:
    return Budget(Window(tokens, tokens // 4, "test"), Counter(UNKNOWN))


def test_what_fits_is_sent_as_it_is():
    messages = conversation(3)
    assert budget_of(100_000).fit(messages) == messages


def test_older_pairs_go_first_whole_and_the_latest_turn_stays_whole():
    messages, b = conversation(12), budget_of(3000)
    sent = b.fit(messages)
    check_messages(sent)
    assert sent[:2] == messages[:2] and b.count(sent) <= b.window.limit
    assert sent[-1]["content"].startswith(messages[-1]["content"])  # whole, a note after it
    assert prompts.TURNS_LEFT_OUT.format(count=2 * b.skip) in sent[-1]["content"]
    kept = [m["content"].split(":")[0] for m in sent[2:]]
    assert kept == [f"{kind} {i}" for i in range(b.skip, 12) for kind in ("reply", "feedback")]


def test_older_file_dumps_are_summarised_before_any_turn_is_dropped():
    dump = "Run failed.\n```python\n" + "x = 1\n" * 200 + "```\n"
    messages = conversation(3, reply="edit", feedback=dump)  # 1131 tokens; 798 with the older dump summarised
    b = budget_of(1200)
    sent = b.fit(messages)
    assert b.skip == 0 and len(sent) == len(messages)
    assert "lines omitted to fit the context window" in sent[3]["content"]  # an older turn
    assert sent[-1] == messages[-1]  # the latest files stay whole


def test_the_cut_only_moves_forward_and_leaves_room_to_grow():
    b = budget_of(3000)
    first = b.fit(conversation(12))
    skip = b.skip
    assert skip > 0 and b.count(first) <= b.window.limit * budget.REFILL_SHARE
    second = b.fit(conversation(13))  # one turn more: the cut stays where it was
    assert b.skip == skip and second[2:-2] == first[2:-1] + [conversation(13)[-3]]


def test_a_window_too_small_for_the_task_and_the_latest_exchange_is_an_error():
    b = budget_of(400)
    with pytest.raises(PromptTooLarge, match=r"smallest prompt .* is \d+ tokens .* --context-window"):
        b.fit(conversation(5))
    with pytest.raises(PromptTooLarge, match="the system message and the task"):
        budget_of(20).fit(conversation(0))


# -- the coder, through the strict fake server ----------------------------------------------

def test_a_long_conversation_is_cut_to_the_window_before_each_call(fake_llm):
    c = LiteLLMCoder(MODEL, api_base=fake_llm.url, context_window=2000, base_delay=0.01)
    conv = Conversation("You are an SAE researcher.")
    conv.add_user("IDEA: lateral inhibition.")
    for i in range(10):
        fake_llm.script([f"edit {i}\n" + PADDING])
        c.complete(conv)
        conv.add_user(f"Run {i} failed.\n" + PADDING)
    fresh = Counter(MODEL)  # the same counter, anew: the limit holds for what the server received
    assert all(fresh(r.messages) <= c.budget.window.limit for r in fake_llm.requests)
    assert fake_llm.violations == [] and first_two_identical(fake_llm.requests)
    assert len(fake_llm.requests[-1].messages) < len(conv.messages()) - 1  # older turns left out
    assert len(conv.transcript()) == 22  # the transcript keeps them all


def test_a_prompt_that_cannot_fit_is_never_sent(fake_llm):
    c = LiteLLMCoder(MODEL, api_base=fake_llm.url, context_window=200)
    conv = Conversation("You are an SAE researcher. " * 20)
    conv.add_user("IDEA: lateral inhibition. " * 20)
    with pytest.raises(LLMError, match="Nothing was sent"):
        c.complete(conv)
    assert fake_llm.requests == [] and conv.pending_user


def test_a_reply_over_the_history_cap_is_cut_further_when_the_window_needs_it(fake_llm):
    # MAX_REPLY_CHARS bounds what one reply keeps in the history (40k characters, ~10k tokens);
    # a smaller window cuts the latest reply further in what is sent; the transcript keeps it all.
    fake_llm.script(["x = 1\n" * 20_000, "fixed"])
    c = LiteLLMCoder(MODEL, api_base=fake_llm.url, context_window=4000)
    conv = Conversation("You are an SAE researcher.")
    conv.add_user("IDEA: lateral inhibition.")
    c.complete(conv)
    conv.add_user("Run 1 failed: the file is too long.")
    before = conv.messages()
    assert c.complete(conv).text == "fixed"
    sent = fake_llm.requests[-1].messages
    assert len(before[2]["content"]) > MAX_REPLY_CHARS > 10 * len(sent[2]["content"])  # capped, then cut
    assert Counter(MODEL)(sent) <= c.budget.window.limit and sent[-1] == before[-1]
    assert len(conv.transcript()[2]["content"]) == 120_000 and fake_llm.violations == []


# -- the loop, as a user runs it ------------------------------------------------------------

def edit(before: str, after: str) -> str:
    """A long-winded reply: prose, then one SEARCH/REPLACE block for experiment.py."""
    return PADDING + "\n\n" + block(f"    accuracy = ACCURACY{before}\n", f"    accuracy = ACCURACY{after}\n")


def test_a_small_window_drops_older_turns_and_the_idea_still_completes(fake_llm, idea, tmp_path, capsys):
    fake_llm.script([edit("", " + 0.01"), edit(" + 0.01", " + 0.02"), edit(" + 0.02", " + 0.03"), "ALL_COMPLETED"])
    idea = mini_idea(tmp_path, max_runs=3)  # the fixture's idea (its own cache), with three runs
    assert run_agent(idea, tmp_path / "results", "--no-smoke", "--context-window", "2600", fake=fake_llm) == 0
    out = capsys.readouterr().out
    assert "context window 2600 tokens (from --context-window)" in out
    limit, count = find_window(MODEL, None, 2600).limit, Counter(MODEL)
    assert fake_llm.violations == [] and len(fake_llm.requests) >= 4
    assert all(count(r.messages) <= limit for r in fake_llm.requests)
    assert first_two_identical(fake_llm.requests)
    assert any(prompts.TURNS_LEFT_OUT.split("{")[0] in r.messages[-1]["content"] for r in fake_llm.requests)
    ws = workspace_of(tmp_path / "results")
    assert [a.run for a in history.read_history(ws) if a.status == Status.SUCCESS] == [1, 2, 3]


def test_a_window_too_small_stops_before_the_call_and_loses_nothing(fake_llm, idea, tmp_path, capsys):
    fake_llm.props = {"default_generation_settings": {"n_ctx": 900}}  # a llama.cpp server started with -c 900
    assert run_agent(idea, tmp_path / "results", "--no-smoke", "--model", UNKNOWN, "--api-base", fake_llm.url) == 1
    out = capsys.readouterr().out
    assert "context window 900 tokens (reported by the server: /props n_ctx 900)" in out
    assert "Nothing was sent" in out and fake_llm.requests == []
    repo = git.Repo(workspace_of(tmp_path / "results"))
    assert not repo.is_dirty(untracked_files=True)  # the transcript is committed: `resume` goes on
    assert "Raise the accuracy" in repo.git.show("HEAD:transcript.json")
