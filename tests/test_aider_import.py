"""Importing AI-Scientist/aider chat logs: one commit per assistant turn, block outcomes as aider's."""

import io
import json
from pathlib import Path

import git
import pytest

from rich.console import Console

from agent import cli, edits, history, review
from agent.aider_import import import_log, parse_chat_log
from agent.edits import EditStatus
from mini import MINI

SEEDS = Path(__file__).parent / "data" / "seeds"


def said(text: str) -> str:
    """What the user read, with rich's line wrapping undone."""
    return " ".join(text.split())


def seed(name: str) -> Path:
    return next(SEEDS.glob(f"{name}_*.txt"))


def onto_from_searches(log: Path, tmp_path: Path, *, drop: int | None = None,
                       indent_containing: str | None = None) -> Path:
    """An experiment.py made of the log's SEARCH texts, so its blocks can match.

    We do not have the file the seed runs edited. `drop` leaves one SEARCH text out (that block
    must then fail); `indent_containing` indents the chunk containing that text by 4 more spaces,
    as the real template indents `self.ae = CustomSAE(...)` deeper than seed 003's block does.
    """
    replies = [m.text for m in parse_chat_log(log.read_text()) if m.role == "assistant"]
    chunks = [b.search for r in replies for b in edits.find_blocks(r).blocks]
    if drop is not None:
        chunks.pop(drop)
    if indent_containing:
        chunks = ["".join("    " + ln if ln.strip() else ln for ln in c.splitlines(True))
                  if indent_containing in c else c for c in chunks]
    onto = tmp_path / "experiment.py"
    onto.write_text("# fixture built from the log's SEARCH texts\n" + "\n# ----\n".join(chunks))
    return onto


def attempts_of(ws: Path):
    return [(a.run, a.attempt, a.status) for a in history.read_history(ws)]


def message_of(ws: Path, spec: str) -> str:
    return git.Repo(ws).commit(history.find_attempt(ws, spec).sha).message


def test_parse_separates_user_notes_and_assistant():
    messages = parse_chat_log(seed("001").read_text())
    assert [m.role for m in messages] == ["user", "assistant"] + ["user"] * 9
    assert messages[0].text.startswith("Your goal is to implement the following idea: Exponentially")
    assert not messages[0].text.splitlines()[0].endswith(" ")  # aider's trailing "  " is gone
    reply = messages[1]
    assert reply.text.startswith("Let me plan the experiments")
    assert "Applied edit to experiment.py" in reply.notes
    assert all(m.notes[0].startswith("litellm.BadRequestError") for m in messages[2:])


@pytest.mark.parametrize("name, applied, status, error", [
    ("000", 3, "failed", "no traceback in the quoted output; last line: Loading checkpoint shards"),
    ("001", 1, "failed", "AttributeError: 'CustomTrainer' object has no attribute 'ae'"),
    ("003", 7, "interrupted", "the log ends before this turn's code was run"),
])
def test_each_seed_gives_a_baseline_and_a_commit_per_turn(tmp_path, name, applied, status, error):
    log = seed(name)
    ws = tmp_path / "ws"
    summary = import_log(log, onto_from_searches(log, tmp_path, indent_containing="self.ae = CustomSAE("),
                         ws)
    assert summary.commits == 2
    assert attempts_of(ws) == [(0, 1, "baseline"), (1, 1, status)]
    turn = summary.turns[0]
    assert [o.status for o in turn.outcomes] == [EditStatus.APPLIED] * applied
    a = history.find_attempt(ws, "1.1")
    assert a.error.startswith(error)
    assert a.trailers["Edits"] == f"{applied} applied"
    assert a.model == "aider-import"
    assert a.cost is not None and a.tokens is not None
    # The transcript at the commit holds the reply, so `show` can say what the LLM said.
    repo = git.Repo(ws)
    transcript = json.loads(history.file_at(repo, a.sha, "transcript.json"))
    assert transcript["messages"][2]["content"] == turn.reply.text
    assert not repo.is_dirty(untracked_files=True)


def test_seed_000_edits_land_in_the_file_and_its_repeated_failures_are_noted(tmp_path):
    log = seed("000")
    ws = tmp_path / "ws"
    import_log(log, onto_from_searches(log, tmp_path), ws)
    code = (ws / "experiment.py").read_text()
    assert "import torch.nn.functional as F" in code
    assert "self.activation_ema = nn.Parameter(torch.zeros(d_sae), requires_grad=False)" in code
    message = message_of(ws, "1.1")
    assert "run 9 times in a row" in message
    assert "does not support successive user or assistant messages" in message
    # The quoted run output is kept as the run's log.
    assert (ws / "run_1" / "log.txt").read_text().startswith("Loading checkpoint shards")


def test_seed_001_keeps_the_traceback_as_the_runs_log(tmp_path):
    log = seed("001")
    ws = tmp_path / "ws"
    import_log(log, onto_from_searches(log, tmp_path), ws)
    text = (ws / "run_1" / "log.txt").read_text()
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("AttributeError: 'CustomTrainer' object has no attribute 'ae'")


def test_seed_003_block_matches_a_deeper_indentation(tmp_path):
    """Block 7 of seed 003 is indented 4 spaces; the file has 8: aider's offset match applies it."""
    log = seed("003")
    ws = tmp_path / "ws"
    summary = import_log(log, onto_from_searches(log, tmp_path, indent_containing="self.ae = CustomSAE("), ws)
    assert "whitespace" in summary.turns[0].outcomes[6].message or \
        "indent" in summary.turns[0].outcomes[6].message
    assert "        self.ae = TopKOrthogonalSAE(" in (ws / "experiment.py").read_text()


def test_baseline_results_quoted_in_the_prompt_become_run_0(tmp_path):
    log = seed("003")
    ws = tmp_path / "ws"
    import_log(log, onto_from_searches(log, tmp_path), ws)
    info = json.loads((ws / "run_0" / "final_info.json").read_text())
    assert list(info) == ["google/gemma-2-2b/blocks.5.hook_resid_post"]
    entry = info["google/gemma-2-2b/blocks.5.hook_resid_post"]
    assert entry["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] == 0.5
    assert entry["training"]["training_steps"] == 0


def test_a_block_that_does_not_match_is_reported_as_aider_would(tmp_path):
    log = seed("000")
    ws = tmp_path / "ws"
    summary = import_log(log, onto_from_searches(log, tmp_path, drop=1), ws)
    assert [o.status for o in summary.turns[0].outcomes] == [EditStatus.APPLIED, EditStatus.FAILED,
                                                             EditStatus.APPLIED]
    a = history.find_attempt(ws, "1.1")
    assert a.trailers["Edits"] == "2 applied, 1 failed"
    message = message_of(ws, "1.1")
    assert "# 1 SEARCH/REPLACE block failed to match!" in message
    assert "The other 2 SEARCH/REPLACE blocks were applied successfully." in message
    assert "activation_ema = nn.Parameter" not in (ws / "experiment.py").read_text()


SYNTHETIC = """
# aider chat started at 2025-01-01 10:00:00


#### Your goal is to implement the following idea: Tiny Test Idea.  
#### Make the SAE better.  

Here is run 1.

experiment.py
```python
<<<<<<< SEARCH
LR = 1
=======
LR = 2
>>>>>>> REPLACE
```

> Tokens: 2k sent, 500 received. Cost: $0.01 message, $0.01 session.  
> Applied edit to experiment.py  

#### Run failed with the following error Traceback (most recent call last):  
####   File "/x/experiment.py", line 3, in <module>  
####     main()  
####   File "/x/experiment.py", line 2, in main  
####     raise ValueError("bad lr 2")  
#### ValueError: bad lr 2  

Fixing it.

experiment.py
```python
<<<<<<< SEARCH
LR = 2
=======
LR = 3
>>>>>>> REPLACE
```

> Tokens: 3k sent, 400 received. Cost: $0.02 message, $0.03 session.  

#### Run 1 completed. Here are the results:  
#### {'eval_type_id': 'sparse_probing', 'eval_config': {'model_name': 'm'}, 'eval_result_metrics': {'sae': {'sae_top_1_test_accuracy': 0.7, 'sae_test_accuracy': 0.9}}, 'sae_cfg_dict': {'model_name': 'm', 'hook_name': 'blocks.3.hook_resid_post'}, 'training_steps': 100}  
####   
#### Decide if you need to re-plan your experiments given the result.  

Next, run 2.

experiment.py
```python
<<<<<<< SEARCH
LR = 3
=======
LR = 4
>>>>>>> REPLACE
```
"""


def test_run_and_attempt_numbers_follow_the_run_results(tmp_path):
    log = tmp_path / "tiny_aider.txt"
    log.write_text(SYNTHETIC)
    onto = tmp_path / "experiment.py"
    onto.write_text("LR = 1\n")
    ws = tmp_path / "ws"
    summary = import_log(log, onto, ws)
    assert summary.commits == 4
    assert attempts_of(ws) == [(0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success"),
                               (2, 1, "interrupted")]
    assert history.find_attempt(ws, "1.1").error == "ValueError: bad lr 2"
    assert history.find_attempt(ws, "1.1").tokens == 2500
    repo = git.Repo(ws)
    success = history.find_attempt(ws, "1")
    info = json.loads(history.file_at(repo, success.sha, "run_1/final_info.json"))
    assert info["m/blocks.3.hook_resid_post"]["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] == 0.7
    assert history.file_at(repo, success.sha, "experiment.py") == "LR = 3\n"
    assert (ws / "experiment.py").read_text() == "LR = 4\n"
    assert (ws / "idea.md").read_text().startswith("# Tiny Test Idea")
    # The transcript alternates, the run results merged into one user turn as the loop would.
    roles = [m["role"] for m in json.loads((ws / "transcript.json").read_text())["messages"]]
    assert roles == ["system"] + ["user", "assistant"] * 3


def run_cli(*argv) -> int:
    return cli.main(["import", *map(str, argv)])


def test_a_log_with_no_edit_blocks_imports_the_start_file_and_the_conversation(tmp_path, capsys):
    log = tmp_path / "chat_aider.txt"
    log.write_text("#### Your goal is to implement the following idea: X.  \n\nFirst I plan: try tau.\n")
    onto = tmp_path / "experiment.py"
    onto.write_text("LR = 1\n")
    out = tmp_path / "ws"
    assert run_cli(log, "--onto", onto, "--out", out) == 0
    assert "No edit was made: the log's 1 assistant reply holds no SEARCH/REPLACE blocks." in \
        said(capsys.readouterr().out)
    assert attempts_of(out) == [(0, 1, "baseline"), (1, 1, "no-edits")]
    assert (out / "experiment.py").read_text() == "LR = 1\n"
    assert "No edit was made" in message_of(out, "0")
    roles = [m["role"] for m in json.loads((out / "transcript.json").read_text())["messages"]]
    assert roles == ["system", "user", "assistant"]


def test_a_log_of_only_provider_errors_imports_as_the_start_file_and_the_prompt(tmp_path, capsys):
    log = tmp_path / "chat_aider.txt"
    log.write_text("# aider chat started at 2025-01-01\n\n#### Implement the idea.  \n"
                   "> litellm.BadRequestError: DeepseekException - Error code: 400  \n\n"
                   "#### Implement the idea.  \n> litellm.BadRequestError: DeepseekException - Error code: 400  \n")
    onto = tmp_path / "experiment.py"
    onto.write_text("LR = 1\n")
    out = tmp_path / "ws"
    assert run_cli(log, "--onto", onto, "--out", out) == 0
    text = said(capsys.readouterr().out)
    assert "No edit was made: the log has no assistant reply; the provider answered: litellm.BadRequestError" in text
    assert attempts_of(out) == [(0, 1, "baseline")]
    messages = json.loads((out / "transcript.json").read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].count("Implement the idea.") == 2


def test_a_file_that_is_not_an_aider_log_exits_2_and_writes_nothing(tmp_path, capsys):
    log = tmp_path / "experiment_copy.py"
    log.write_text("import torch\n\n#### not a heading\nprint(1)\n")
    onto = tmp_path / "experiment.py"
    onto.write_text("LR = 1\n")
    assert run_cli(log, "--onto", onto, "--out", tmp_path / "ws") == 2
    assert "is not an aider chat log" in said(capsys.readouterr().err)
    assert not (tmp_path / "ws").exists()


def test_an_existing_output_folder_is_never_overwritten(tmp_path, capsys):
    log = seed("001")
    out = tmp_path / "ws"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli(log, "--onto", onto_from_searches(log, tmp_path), "--out", out) == 2
    assert "already exists" in said(capsys.readouterr().err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_missing_onto_file_exits_2(tmp_path, capsys):
    assert run_cli(seed("001"), "--onto", tmp_path / "nope.py", "--out", tmp_path / "ws") == 2
    assert "--onto" in said(capsys.readouterr().err)


def test_cli_import_prints_the_outcomes(tmp_path, capsys):
    log = seed("003")
    assert run_cli(log, "--onto", onto_from_searches(log, tmp_path), "--out", tmp_path / "ws") == 0
    out = capsys.readouterr().out
    assert "imported 1 assistant turn(s)" in out and "2 commits" in out



MINI_LOG = """
#### Your goal is to implement the following idea: Divide Boldly.  
#### The baseline is in run_0.  

Let me divide.

experiment.py
```python
<<<<<<< SEARCH
    accuracy = ACCURACY
=======
    accuracy = ACCURACY / 0
>>>>>>> REPLACE
```

> Applied edit to experiment.py  

#### Run failed with the following error Traceback (most recent call last):  
####   File "/old/cluster/path/experiment.py", line 21, in <module>  
####     main()  
####   File "/old/cluster/path/experiment.py", line 17, in main  
####     write_results(args.out_dir, train(), STEPS)  
####                                 ^^^^^^^  
####   File "/old/cluster/path/experiment.py", line 10, in train  
####     accuracy = ACCURACY / 0  
####                ~~~~~~~~~^~~  
#### ZeroDivisionError: float division by zero  
"""


def test_an_import_onto_a_template_file_is_replayable(tmp_path):
    """--onto inside a template folder brings the template along, so the old failure replays."""
    log = tmp_path / "divide_aider.txt"
    log.write_text(MINI_LOG)
    ws = tmp_path / "results" / "imported"
    import_log(log, MINI / "experiment.py", ws)
    assert (ws / "harness" / "__init__.py").exists() and (ws / "template.json").exists()
    assert history.find_attempt(ws, "1.1").error == "ZeroDivisionError: float division by zero"
    out = io.StringIO()
    assert review.replay(ws, "1.1", console=Console(file=out, width=200)) == 0
    assert "reproduced: same exception and frame (ZeroDivisionError @ experiment.py:train" in out.getvalue()


# ---------------------------------------------------------------- issue 10: what aider did, to the last line

# aider's log of a reply whose block failed: its reply to the model is written with `> ` on the
# first line only, so the echoed block looks like assistant text; then the model's next reply.
ECHO_LOG = """
# aider chat started at 2025-01-01 10:00:00


#### Your goal is to implement the following idea: Echo Test.  

Changing the rate.

experiment.py
```python
<<<<<<< SEARCH
LR = 10
=======
LR = 20
>>>>>>> REPLACE
```

> Tokens: 2k sent, 500 received. Cost: $0.01 message, $0.01 session.  
> The LLM did not conform to the edit format.  
> https://aider.chat/docs/troubleshooting/edit-errors.html  
> # 1 SEARCH/REPLACE block failed to match!

## SearchReplaceNoExactMatch: This SEARCH block failed to exactly match lines in experiment.py
<<<<<<< SEARCH
LR = 10
        
=======
LR = 20
>>>>>>> REPLACE

Did you mean to match some of these actual lines from experiment.py?

```
LR = 1
```

The SEARCH section must exactly match an existing block of lines including all white space, comments, indentation, docstrings, etc  

You are right, the rate is 1.

experiment.py
```python
<<<<<<< SEARCH
LR = 1
=======
LR = 2
>>>>>>> REPLACE
```

> Tokens: 3k sent, 400 received. Cost: $0.02 message, $0.03 session.  
> Applied edit to experiment.py  

#### Run 1 completed. Here are the results:  
#### {'eval_type_id': 'sparse_probing', 'eval_result_metrics': {'sae': {'sae_top_1_test_accuracy': 0.7}}}  
"""


def test_aiders_echo_of_a_failed_block_is_its_reply_to_the_model_not_assistant_text(tmp_path):
    messages = parse_chat_log(ECHO_LOG)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    echo = messages[2]
    assert echo.text.startswith("# 1 SEARCH/REPLACE block failed to match!")
    assert echo.text.rstrip().endswith("indentation, docstrings, etc")
    assert messages[3].text.startswith("You are right, the rate is 1.")  # not merged with the echo
    assert "SearchReplaceNoExactMatch" not in messages[3].text
    log = tmp_path / "echo_aider.txt"
    log.write_text(ECHO_LOG)
    onto = tmp_path / "experiment.py"
    onto.write_text("LR = 1\n")
    ws = tmp_path / "ws"
    summary = import_log(log, onto, ws)
    assert attempts_of(ws) == [(0, 1, "baseline"), (1, 1, "edit-failed"), (1, 2, "success")]
    assert history.find_attempt(ws, "1.1").error == "aider: # 1 SEARCH/REPLACE block failed to match!"
    assert [len(t.outcomes) for t in summary.turns] == [1, 1]  # the echoed block is never applied
    assert (ws / "experiment.py").read_text() == "LR = 2\n"
    # In the transcript aider's echo is the user turn it was: the model saw it before replying.
    transcript = json.loads((ws / "transcript.json").read_text())["messages"]
    assert [m["role"] for m in transcript] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert transcript[3]["content"].startswith("# 1 SEARCH/REPLACE block failed to match!")


def test_an_echo_that_lists_the_blocks_that_did_apply_ends_at_its_last_line():
    log = ECHO_LOG.replace(
        "indentation, docstrings, etc  \n",
        "indentation, docstrings, etc\n\n# The other 1 SEARCH/REPLACE block were applied successfully.\n"
        "Don't re-send them.\nJust reply with fixed versions of the block above that failed to match.  \n")
    messages = parse_chat_log(log)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[2].text.rstrip().endswith("above that failed to match.")
    assert messages[3].text.startswith("You are right")


def test_an_echo_of_a_malformed_reply_is_not_assistant_text_either():
    log = ECHO_LOG.replace(ECHO_LOG[ECHO_LOG.index("> # 1 SEARCH"):ECHO_LOG.index("You are right")],
                           "> Changing the rate.\n\nexperiment.py\n```python\n<<<<<<< SEARCH\nLR = 10\n"
                           "\n^^^ Expected `=======`  \n\n")
    messages = parse_chat_log(log)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[2].text.endswith("^^^ Expected `=======`")


CROSS_LOG = """
# aider chat started at 2025-01-01 10:00:00


#### Your goal is to implement the following idea: Cross Test.  

First a note, then the trainer, and a dead helper goes.

notes.txt
```
<<<<<<< SEARCH
# Notes
=======
# Notes
Run 1: doubled LR.
>>>>>>> REPLACE
```

```python
<<<<<<< SEARCH
LR = 1
=======
LR = 2
>>>>>>> REPLACE
```

experiment.py
```python
<<<<<<< SEARCH
def unused():
    return 0

=======
>>>>>>> REPLACE
```

> Applied edit to notes.txt  
> Applied edit to experiment.py  
"""


def test_a_planted_log_with_a_carried_over_name_and_a_blank_line_deletion_ends_as_aider_left_it(tmp_path):
    log = tmp_path / "cross_aider.txt"
    log.write_text(CROSS_LOG)
    folder = tmp_path / "tpl"
    folder.mkdir()
    onto = folder / "experiment.py"
    onto.write_text("import os\n\nLR = 1\n\ndef unused():\n    return 0\n\n\ndef main():\n    pass\n")
    (folder / "notes.txt").write_text("# Notes\n")
    (folder / "template.json").write_text('{"editable": ["experiment.py", "notes.txt"]}')
    ws = tmp_path / "ws"
    summary = import_log(log, onto, ws)
    outcomes = summary.turns[0].outcomes
    assert [(o.path, o.status) for o in outcomes] == [
        ("notes.txt", EditStatus.APPLIED), ("experiment.py", EditStatus.APPLIED),
        ("experiment.py", EditStatus.APPLIED)]
    assert "aider's fallback" in outcomes[1].message
    # The SEARCH of the deletion ends in a blank line, which aider drops: both blank lines before
    # main() stay, as they did in aider's file.
    assert (ws / "experiment.py").read_text() == "import os\n\nLR = 2\n\n\n\ndef main():\n    pass\n"
    assert (ws / "notes.txt").read_text() == "# Notes\nRun 1: doubled LR.\n"
    assert "aider's fallback" in message_of(ws, "1.1")
