"""SEARCH/REPLACE parsing and application, on the real AI-Scientist replies in tests/data/seeds."""

import os
from pathlib import Path

import pytest

from agent.edits import (EditOutcome, EditRefused, EditStatus, apply_reply, closest_lines, feedback,
                         find_blocks, find_whole_files, replace_once, safe_path)

SEEDS = Path(__file__).parent / "data" / "seeds"


def seed(prefix: str) -> str:
    return next(SEEDS.glob(f"{prefix}_*.txt")).read_text()


def block(path: str, search: str, replace: str, name_line: str | None = None) -> str:
    head = f"{name_line if name_line is not None else path}\n```python\n"
    return f"{head}<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n"


TRAINER = """\
class CustomTrainer(SAETrainer):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.lr = lr
        self.l1_penalty = 0.04

    def loss(self, x):
        x_hat, f = self.ae(x, output_features=True)
        l2_loss = torch.linalg.norm(x - x_hat, dim=-1).mean()
        l1_loss = f.norm(p=1, dim=-1).mean()
        return l2_loss + self.l1_penalty * l1_loss
"""


# ---------------------------------------------------------------- parsing the seed replies


@pytest.mark.parametrize("prefix, count", [("000", 3), ("001", 1), ("003", 7)])
def test_seed_replies_parse_into_every_block(prefix, count):
    reply = seed(prefix)
    parsed = find_blocks(reply)
    assert parsed.problems == []
    assert len(parsed.blocks) == count
    assert {b.path for b in parsed.blocks} == {"experiment.py"}
    lines = reply.splitlines(keepends=True)
    for b in parsed.blocks:
        # The bodies are exactly the lines between the markers, starting at the reported line.
        text = f"<<<<<<< SEARCH\n{b.search}=======\n{b.replace}>>>>>>> REPLACE\n"
        assert "".join(lines[b.line - 1:]).startswith(text)
        assert lines[b.line - 3] == "experiment.py\n"


def test_seed_001_block_holds_the_placeholder_init_verbatim():
    (b,) = find_blocks(seed("001")).blocks
    assert b.search.startswith("    def loss(self, x, logging=False, **kwargs):\n")
    assert b.search.endswith("        loss = l2_loss + self.l1_penalty * l1_loss\n")
    assert "        # Existing init code...\n" in b.replace
    assert b.replace.startswith("    def __init__(self, \n")


@pytest.mark.parametrize("prefix", ["000", "001", "003"])
def test_seed_blocks_apply_to_a_file_holding_their_search_lines(prefix):
    blocks = find_blocks(seed(prefix)).blocks
    original = "import math\n\n" + "\n# unrelated code\n\n".join(b.search for b in blocks)
    changed, outcomes = apply_reply(seed(prefix), {"experiment.py": original})
    assert [o.status for o in outcomes] == [EditStatus.APPLIED] * len(blocks)
    new = changed["experiment.py"]
    for b in blocks:
        assert b.replace in new
    assert new.startswith("import math\n")


def test_seed_003_block_indented_less_than_the_file_still_applies_at_file_indentation():
    blocks = find_blocks(seed("003")).blocks
    last = blocks[-1]  # written with 4 spaces; in the template it sits inside __init__ at 8
    assert last.search.startswith("    # Initialize autoencoder\n")
    original = "class T:\n    def __init__(self):\n" + "".join("    " + x for x in last.search.splitlines(True))
    changed, (outcome,) = apply_reply(block("experiment.py", last.search, last.replace),
                                      {"experiment.py": original})
    assert outcome.status == EditStatus.APPLIED and "indentation" in outcome.message
    assert "        self.ae = TopKOrthogonalSAE(" in changed["experiment.py"]
    assert "CustomSAE" not in changed["experiment.py"]


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize("before", [
    "experiment.py\n```python\n",
    "experiment.py\n```\n",
    "```python\nexperiment.py\n```\n```python\n",  # name fenced on its own, then the block's fence
    "**experiment.py**\n```python\n",
    "`experiment.py`:\n```python\n",
    "### experiment.py\n```python\n",
    "```experiment.py\n",
    "./experiment.py\n```python\n",
])
def test_file_name_forms_before_the_block(before):
    reply = f"Here is the change.\n\n{before}<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n```\n"
    changed, outcomes = apply_reply(reply, {"experiment.py": "x = 1\n"})
    assert [o.status for o in outcomes] == [EditStatus.APPLIED], outcomes
    assert changed == {"experiment.py": "x = 2\n"}


def test_block_without_a_name_reuses_the_previous_blocks_file():
    reply = (block("notes.txt", "", "# Run 1\n")
             + "And a second note:\n```\n<<<<<<< SEARCH\n# Run 1\n=======\n# Run 1: lr 3e-4\n>>>>>>> REPLACE\n```\n")
    changed, outcomes = apply_reply(reply, {"experiment.py": "x = 1\n", "notes.txt": "# Notes\n"})
    assert [o.path for o in outcomes] == ["notes.txt", "notes.txt"]
    assert changed == {"notes.txt": "# Notes\n# Run 1: lr 3e-4\n"}


def test_several_files_in_one_reply():
    reply = (block("experiment.py", "lr = 1e-3\n", "lr = 3e-4\n")
             + block("plot.py", "title = 'a'\n", "title = 'b'\n")
             + block("experiment.py", "steps = 10\n", "steps = 20\n"))
    files = {"experiment.py": "lr = 1e-3\nsteps = 10\n", "plot.py": "title = 'a'\n", "notes.txt": "n\n"}
    changed, outcomes = apply_reply(reply, files)
    assert changed == {"experiment.py": "lr = 3e-4\nsteps = 20\n", "plot.py": "title = 'b'\n"}
    assert all(o.status == EditStatus.APPLIED for o in outcomes)
    assert files["experiment.py"] == "lr = 1e-3\nsteps = 10\n"  # the input is not mutated


# ---------------------------------------------------------------- matching


def test_exact_match_replaces_only_the_first_occurrence():
    assert replace_once("a\nb\na\n", "a\n", "c\n") == "c\nb\na\n"


def test_no_match_returns_none():
    assert replace_once(TRAINER, "self.lr = 0.1\n", "self.lr = 0.2\n") is None


def test_uniformly_unindented_search_matches_and_replace_is_reindented():
    search = "def loss(self, x):\n    x_hat, f = self.ae(x, output_features=True)\n"
    replace = ("def loss(self, x):\n    x = x / x.norm(dim=-1, keepdim=True)\n"
               "    x_hat, f = self.ae(x, output_features=True)\n")
    new = replace_once(TRAINER, search, replace)
    assert "    def loss(self, x):\n        x = x / x.norm(dim=-1, keepdim=True)\n" \
           "        x_hat, f = self.ae(x, output_features=True)\n" in new


def test_inconsistent_indentation_is_not_guessed():
    search = "def loss(self, x):\nx_hat, f = self.ae(x, output_features=True)\n"
    assert replace_once(TRAINER, search, "pass\n") is None


def test_spurious_leading_blank_line_in_search_is_ignored():
    new = replace_once(TRAINER, "\n        self.lr = lr\n        self.l1_penalty = 0.04\n",
                       "        self.lr = lr\n        self.l1_penalty = 0.1\n")
    assert "self.l1_penalty = 0.1\n" in new


def test_elided_search_replace_pair_edits_both_ends_and_keeps_the_middle():
    search = "    def loss(self, x):\n...\n        return l2_loss + self.l1_penalty * l1_loss\n"
    replace = "    def loss(self, x, step=0):\n...\n        return l2_loss + self.l1_penalty * l1_loss * 2\n"
    new = replace_once(TRAINER, search, replace)
    assert "    def loss(self, x, step=0):\n        x_hat, f = self.ae(" in new
    assert "l1_loss = f.norm(p=1, dim=-1).mean()\n        return l2_loss + self.l1_penalty * l1_loss * 2\n" in new


def test_elision_with_unpaired_dots_fails_rather_than_guessing():
    search = "    def loss(self, x):\n...\n        return l2_loss + self.l1_penalty * l1_loss\n"
    assert replace_once(TRAINER, search, "    def loss(self, x):\n        return 0\n") is None


def test_empty_search_appends_to_an_existing_file():
    changed, _ = apply_reply(block("notes.txt", "", "## Run 1\nworse\n"), {"notes.txt": "# Notes"})
    assert changed == {"notes.txt": "# Notes\n## Run 1\nworse\n"}


def test_empty_search_creates_a_new_editable_file():
    changed, (o,) = apply_reply(block("plot.py", "", "import matplotlib\n"), {"experiment.py": "x\n"})
    assert changed == {"plot.py": "import matplotlib\n"}
    assert o.status == EditStatus.APPLIED and "created" in o.message


def test_non_empty_search_on_a_missing_file_fails_with_a_hint():
    _, (o,) = apply_reply(block("plot.py", "x = 1\n", "x = 2\n"), {"experiment.py": "y = 1\n"})
    assert o.status == EditStatus.FAILED and "empty SEARCH" in o.message


# ---------------------------------------------------------------- failures and feedback


def test_unmatched_block_is_reported_with_the_closest_lines_and_the_others_applied():
    wrong = block("experiment.py", "        self.lr = lr\n        self.l1_penalty = 0.4\n",
                  "        self.lr = lr * 2\n")
    good = block("experiment.py", "        return l2_loss + self.l1_penalty * l1_loss\n",
                 "        return l2_loss + 2 * self.l1_penalty * l1_loss\n")
    changed, outcomes = apply_reply(wrong + good, {"experiment.py": TRAINER})
    assert [o.status for o in outcomes] == [EditStatus.FAILED, EditStatus.APPLIED]
    assert "2 * self.l1_penalty" in changed["experiment.py"]
    assert "self.lr = lr * 2" not in changed["experiment.py"]
    text = feedback(outcomes)
    assert text.startswith("# 1 SEARCH/REPLACE block failed to match!")
    assert "Did you mean to match some of these actual lines from experiment.py?" in text
    assert "        self.l1_penalty = 0.04\n" in text  # the real line, with its indentation
    # The applied block is named with the file it went to, before aider's "Don't re-send them."
    assert ("The other 1 SEARCH/REPLACE block was applied successfully.\n- line 12: exact match in "
            "experiment.py\nDon't re-send them.\nJust reply with fixed versions of the block above.") in text


def test_failed_block_whose_replace_is_already_there_says_so():
    _, (o,) = apply_reply(block("experiment.py", "        self.lr = 1\n", "        self.lr = lr\n"),
                          {"experiment.py": TRAINER})
    assert o.status == EditStatus.FAILED and "The REPLACE lines are already in experiment.py!" in o.message


def test_closest_lines_is_empty_when_nothing_is_alike():
    assert closest_lines("completely\nunrelated\ntext here\n", TRAINER) == ""


def test_feedback_is_empty_when_everything_applied():
    _, outcomes = apply_reply(block("experiment.py", "        self.lr = lr\n", "        self.lr = 2\n"),
                              {"experiment.py": TRAINER})
    assert feedback(outcomes) == ""


# ---------------------------------------------------------------- malformed blocks


def test_missing_divider_is_reported_and_the_next_block_still_applies():
    broken = "experiment.py\n```python\n<<<<<<< SEARCH\nx = 1\n>>>>>>> REPLACE\n```\n"
    good = block("experiment.py", "y = 1\n", "y = 2\n")
    changed, outcomes = apply_reply(broken + good, {"experiment.py": "x = 1\ny = 1\n"})
    assert [o.status for o in outcomes] == [EditStatus.MALFORMED, EditStatus.APPLIED]
    assert "line 3" in outcomes[0].message and "=======" in outcomes[0].message
    assert changed == {"experiment.py": "x = 1\ny = 2\n"}
    assert "could not be parsed" in feedback(outcomes)


def test_reply_cut_off_before_replace_marker_applies_nothing_of_that_block():
    reply = "experiment.py\n```python\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n"
    changed, (o,) = apply_reply(reply, {"experiment.py": "x = 1\n"})
    assert changed == {}
    assert o.status == EditStatus.MALFORMED and ">>>>>>> REPLACE" in o.message and "ended" in o.message


def test_new_search_before_replace_marker_is_reported_and_the_new_block_parsed():
    reply = ("experiment.py\n```python\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n"
             "<<<<<<< SEARCH\ny = 1\n=======\ny = 2\n>>>>>>> REPLACE\n```\n")
    parsed = find_blocks(reply)
    assert len(parsed.problems) == 1 and "line 3" in parsed.problems[0]
    assert [(b.path, b.search) for b in parsed.blocks] == [("experiment.py", "y = 1\n")]


def test_block_without_any_file_name_is_malformed():
    reply = "Change this:\n\n```python\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n```\n"
    changed, (o,) = apply_reply(reply, {"experiment.py": "x = 1\n"})
    assert changed == {}
    assert o.status == EditStatus.MALFORMED and "file name" in o.message


def test_stray_replace_marker_is_reported():
    parsed = find_blocks("experiment.py\n```\nx = 2\n>>>>>>> REPLACE\n```\n")
    assert parsed.blocks == [] and "line 4" in parsed.problems[0]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("path", ["harness/data.py", "../experiment.py", "/etc/passwd",
                                  "sub/../../experiment.py", "run.sh", "template.json"])
def test_files_outside_the_editable_list_are_refused(path):
    files = {"experiment.py": "x = 1\n"}
    changed, (o,) = apply_reply(block(path, "", "import os\nos.system('rm -rf ~')\n"), files)
    assert changed == {}
    assert o.status == EditStatus.REFUSED and "experiment.py" in o.message
    assert "1 SEARCH/REPLACE block refused" in feedback([o])


def test_editable_list_is_the_callers():
    changed, (o,) = apply_reply(block("notes.txt", "", "hi\n"), {}, editable=["experiment.py"])
    assert changed == {} and o.status == EditStatus.REFUSED


def test_safe_path_allows_editable_files_in_the_workspace(tmp_path):
    assert safe_path(tmp_path, "experiment.py") == tmp_path.resolve() / "experiment.py"
    assert safe_path(tmp_path, "./notes.txt") == tmp_path.resolve() / "notes.txt"


@pytest.mark.parametrize("rel", ["../x/experiment.py", "/tmp/experiment.py", "harness/eval.py"])
def test_safe_path_refuses_paths_outside_or_unlisted(tmp_path, rel):
    with pytest.raises(EditRefused):
        safe_path(tmp_path, rel)


def test_safe_path_refuses_a_symlink_leaving_the_workspace(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("secret\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(outside, ws / "experiment.py")
    with pytest.raises(EditRefused, match="symlink"):
        safe_path(ws, "experiment.py")


def test_safe_path_refuses_a_symlinked_folder_leaving_the_workspace(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(tmp_path / "elsewhere", ws / "plots")
    with pytest.raises(EditRefused, match="outside"):
        safe_path(ws, "plots/plot.py", editable=["plots/"])


def test_crlf_reply_applies_to_a_lf_file():
    reply = block("experiment.py", "x = 1\n", "x = 2\n").replace("\n", "\r\n")
    changed, _ = apply_reply(reply, {"experiment.py": "x = 1\n"})
    assert changed == {"experiment.py": "x = 2\n"}


def test_no_jumble_of_markers_crashes_the_parser():
    import random

    pieces = ["experiment.py\n", "```python\n", "```\n", "<<<<<<< SEARCH\n", "=======\n",
              ">>>>>>> REPLACE\n", "x = 1\n", "x = 2\n", "\n", "...\n", "notes.txt\n", "../a.py\n"]
    rng = random.Random(0)
    for _ in range(2000):
        reply = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        changed, outcomes = apply_reply(reply, {"experiment.py": "x = 1\n", "notes.txt": ""})
        assert set(changed) <= {"experiment.py", "notes.txt"}
        assert all(isinstance(o.status, EditStatus) for o in outcomes)
        feedback(outcomes)


# ---------------------------------------------------------------- issue 10: aider's semantics to the last line


def test_search_ending_in_a_blank_line_is_matched_as_aider_does_so_a_deletion_keeps_it():
    content = "import os\n\nx = 1\n\ny = 2\n"
    # aider rejoins the SEARCH lines, dropping one trailing blank line: it searches for `x = 1\n`.
    assert replace_once(content, "x = 1\n\n", "") == "import os\n\n\ny = 2\n"
    # ... which also matches where the file has no blank line after it.
    assert replace_once("x = 1\ny = 2\n", "x = 1\n\n", "x = 3\n\n") == "x = 3\ny = 2\n"
    # Two trailing blank lines written: one is searched for and deleted, the other stays.
    assert replace_once(content, "x = 1\n\n\n", "") == "import os\n\ny = 2\n"
    assert replace_once("x = 1\n\n\ny = 2\n", "x = 1\n\n\n", "") == "\ny = 2\n"


def test_a_block_carried_over_to_the_wrong_file_is_applied_where_its_search_matches():
    reply = (block("notes.txt", "# Notes\n", "# Notes\nRun 1: tried tau.\n")
             + "Now the trainer:\n\n```python\n<<<<<<< SEARCH\n        self.lr = lr\n=======\n"
               "        self.lr = lr * 2\n>>>>>>> REPLACE\n```\n")
    changed, outcomes = apply_reply(reply, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"})
    assert [(o.path, o.status) for o in outcomes] == [("notes.txt", EditStatus.APPLIED),
                                                      ("experiment.py", EditStatus.APPLIED)]
    assert "self.lr = lr * 2" in changed["experiment.py"]
    assert "not in notes.txt as the block says" in outcomes[1].message
    assert "aider's fallback" in outcomes[1].message


def test_a_block_named_for_a_file_that_is_not_editable_applies_to_the_one_that_matches():
    reply = block("train.py", "        self.l1_penalty = 0.04\n", "        self.l1_penalty = 0.1\n")
    changed, (o,) = apply_reply(reply, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"})
    assert o.status == EditStatus.APPLIED and o.path == "experiment.py" and "train.py" in o.message
    assert "self.l1_penalty = 0.1" in changed["experiment.py"]
    # Matching in two editable files is not guessed at: the block stays refused.
    _, (o,) = apply_reply(reply, {"experiment.py": TRAINER, "plot.py": TRAINER})
    assert o.status == EditStatus.REFUSED
    # And a block that matches nowhere is still refused or failed as before.
    _, (o,) = apply_reply(block("train.py", "nothing like it\n", "x\n"), {"experiment.py": TRAINER})
    assert o.status == EditStatus.REFUSED


def test_closest_lines_on_a_big_file_does_bounded_work_and_still_finds_the_near_miss(monkeypatch):
    import difflib

    made = []  # every comparison difflib does: each costs up to O(len * len)

    class Counting(difflib.SequenceMatcher):
        def ratio(self):
            made.append("ratio")
            return super().ratio()

        def quick_ratio(self):
            made.append("quick")
            return super().quick_ratio()

    monkeypatch.setattr(difflib, "SequenceMatcher", Counting)
    lines = [f"    value_{i} = compute(x, {i}) + offset_{i % 7}" for i in range(4000)]
    near = ["    def loss(self, x):", "        x_hat, f = self.ae(x, output_features=True)",
            "        l2_loss = torch.linalg.norm(x - x_hat, dim=-1).mean()"] * 14
    content = "\n".join(lines[:2500] + near + lines[2500:]) + "\n"
    search = "\n".join(near).replace("l2_loss", "l2").replace("self.ae", "self.sae") + "\n"
    found = closest_lines(search, content)
    assert "x_hat, f = self.ae(x, output_features=True)" in found
    # One pass over the 4,042 windows, then comparisons of at most 8 of them.
    assert made.count("ratio") <= 8 and made.count("quick") <= 8


def test_a_divider_line_inside_replace_is_text_in_the_loop_and_ends_the_block_for_old_aider_logs():
    reply = block("notes.txt", "# Notes\n", "# Notes\nResults\n=======\nrun 1 was better\n")
    changed, (o,) = apply_reply(reply, {"notes.txt": "# Notes\n"})
    assert o.status == EditStatus.APPLIED and changed["notes.txt"] == "# Notes\nResults\n=======\nrun 1 was better\n"
    # aider (0.57 on) ends the REPLACE at the second `=======` and reads the rest as plain text.
    changed, outcomes = apply_reply(reply + block("notes.txt", "run\n", "run\n"),
                                    {"notes.txt": "# Notes\nrun\n"}, aider_compat=True)
    assert [o.status for o in outcomes] == [EditStatus.APPLIED, EditStatus.APPLIED]
    assert changed["notes.txt"] == "# Notes\nResults\nrun\n"


def test_blank_lines_before_an_elision_belong_to_it_as_in_aider():
    content = "def f():\n    a = 1\n\n    b = 2\n    return a + b\n"
    search = "def f():\n\n...\n    return a + b\n"
    replace = "def g():\n\n...\n    return a * b\n"
    assert replace_once(content, search, replace) == "def g():\n    a = 1\n\n    b = 2\n    return a * b\n"


# ---------------------------------------------------------------- issue 25: whole files (aider's "whole" format)

NEW_TRAINER = TRAINER.replace("self.l1_penalty = 0.04", "self.l1_penalty = 0.08")


def whole(name_line: str, content: str, lang: str = "python") -> str:
    return f"{name_line}\n```{lang}\n{content}```\n"


def test_a_whole_file_after_its_name_replaces_the_file_as_a_small_local_model_sends_it():
    # Qwen2.5-Coder-1.5B, asked for SEARCH/REPLACE, answered like this every time.
    reply = "I will double the L1 penalty.\n\n" + whole("experiment.py", NEW_TRAINER) + "\nThis should help.\n"
    changed, (o,) = apply_reply(reply, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"}, edit_format="auto")
    assert changed == {"experiment.py": NEW_TRAINER}
    assert o.status == EditStatus.APPLIED and o.path == "experiment.py" and "whole file" in o.message


@pytest.mark.parametrize("name_line", ["**experiment.py**", "`experiment.py`", "### experiment.py",
                                       "experiment.py:", "**`experiment.py`**:", "  experiment.py  "])
def test_whole_file_name_forms(name_line):
    changed, _ = apply_reply(whole(name_line, NEW_TRAINER), {"experiment.py": TRAINER}, edit_format="whole")
    assert changed == {"experiment.py": NEW_TRAINER}


@pytest.mark.parametrize("before", [
    "Here is the updated experiment.py:",   # prose that mentions the file: maybe only a snippet
    "The accuracy came out as",
    "0.75",                                  # a number is no file name
    "v2.0",
    "",
])
def test_a_fence_without_a_lone_file_name_before_it_replaces_nothing(before):
    reply = f"{before}\n```python\n        self.l1_penalty = 0.08\n```\n"
    changed, outcomes = apply_reply(reply, {"experiment.py": TRAINER}, edit_format="auto")
    assert changed == {} and outcomes == []


def test_diff_mode_never_applies_a_whole_file():
    changed, outcomes = apply_reply(whole("experiment.py", NEW_TRAINER), {"experiment.py": TRAINER},
                                    edit_format="diff")
    assert changed == {} and outcomes == []


def test_the_fences_of_a_diff_are_never_taken_for_whole_files():
    # The name, then a fence: a SEARCH/REPLACE block looks like a whole file holding markers.
    reply = (block("experiment.py", "        self.lr = lr\n", "        self.lr = lr * 2\n")
             + "\nnotes.txt\n```text\nRun 1: doubled the learning rate.\n```\n")
    changed, outcomes = apply_reply(reply, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"},
                                    edit_format="auto")
    assert list(changed) == ["experiment.py"] and "self.lr = lr * 2" in changed["experiment.py"]
    assert [o.status for o in outcomes] == [EditStatus.APPLIED]
    assert find_whole_files(reply) == ([], [])


def test_a_whole_protected_file_is_refused_and_nothing_is_written():
    reply = whole("harness/evaluate.py", "def evaluate():\n    return {'top_1': 1.0}\n")
    changed, (o,) = apply_reply(reply, {"experiment.py": TRAINER}, edit_format="auto", protected=("harness/",))
    assert changed == {}
    assert o.status == EditStatus.REFUSED and "harness/evaluate.py is protected" in o.message
    text = feedback([o])
    assert text.startswith("# 1 edit refused!") and "harness/evaluate.py is protected" in text


def test_a_whole_file_the_reply_never_closes_is_not_applied():
    reply = "experiment.py\n```python\n" + NEW_TRAINER[:120]
    changed, (o,) = apply_reply(reply, {"experiment.py": TRAINER}, edit_format="auto")
    assert changed == {} and o.status == EditStatus.MALFORMED and "no closing ```" in o.message


def test_an_empty_whole_file_is_not_applied():
    changed, (o,) = apply_reply(whole("experiment.py", "\n"), {"experiment.py": TRAINER}, edit_format="auto")
    assert changed == {} and o.status == EditStatus.MALFORMED and "is empty" in o.message
    assert "A whole file is: the file path alone on a line" in feedback([o])


def test_a_whole_file_named_by_its_basename_goes_to_the_editable_path():
    changed, (o,) = apply_reply(whole("train.py", "x = 1\n"), {"src/train.py": "x = 0\n"},
                                ["src/train.py"], edit_format="auto")
    assert changed == {"src/train.py": "x = 1\n"} and o.status == EditStatus.APPLIED


def test_whole_files_and_a_refusal_in_one_reply_are_both_reported_with_their_files():
    reply = (whole("experiment.py", NEW_TRAINER) + "\n" + whole("notes.txt", "# Notes\nRun 1.\n", "text")
             + "\n" + whole("harness/evaluate.py", "x = 1\n"))
    changed, outcomes = apply_reply(reply, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"},
                                    edit_format="auto", protected=("harness/",))
    assert set(changed) == {"experiment.py", "notes.txt"}
    assert [(o.path, o.status) for o in outcomes] == [
        ("experiment.py", EditStatus.APPLIED), ("notes.txt", EditStatus.APPLIED),
        ("harness/evaluate.py", EditStatus.REFUSED)]
    text = feedback(outcomes)
    assert "# The other 2 edits were applied successfully." in text
    assert "experiment.py: replaced by the whole file" in text and "notes.txt: replaced by the whole file" in text


# ---------------------------------------------------------------- issue 24: a protected file's block is never redirected

PLOT = 'import matplotlib\n\nprint("plotting")\n'


def test_a_block_for_a_protected_file_is_refused_not_applied_to_the_file_where_its_search_matches():
    # Its SEARCH text matches plot.py only: aider's fallback used to apply it there.
    harness = block("harness/evaluate.py", 'print("plotting")\n', 'print("tampered")\n')
    good = block("experiment.py", "        self.lr = lr\n", "        self.lr = lr * 2\n")
    changed, outcomes = apply_reply(harness + good, {"experiment.py": TRAINER, "plot.py": PLOT},
                                    protected=("harness/",))
    assert "plot.py" not in changed and "self.lr = lr * 2" in changed["experiment.py"]
    assert [(o.path, o.status) for o in outcomes] == [("harness/evaluate.py", EditStatus.REFUSED),
                                                      ("experiment.py", EditStatus.APPLIED)]
    text = feedback(outcomes)
    assert "# 1 SEARCH/REPLACE block refused!" in text and "harness/evaluate.py is protected" in text
    assert "- line 11: exact match in experiment.py\nDon't re-send them." in text
    # A nameless block after it means the same protected file: refused too, never redirected.
    follow = "```python\n<<<<<<< SEARCH\nimport matplotlib\n=======\nimport os\n>>>>>>> REPLACE\n```\n"
    changed, outcomes = apply_reply(harness + follow, {"plot.py": PLOT}, protected=("harness/",))
    assert changed == {} and [o.status for o in outcomes] == [EditStatus.REFUSED, EditStatus.REFUSED]


def test_a_block_outside_the_workspace_is_refused_not_redirected():
    reply = block("../experiment.py", "        self.lr = lr\n", "        self.lr = 0\n")
    changed, (o,) = apply_reply(reply, {"experiment.py": TRAINER})
    assert changed == {} and o.status == EditStatus.REFUSED and "outside the workspace" in o.message


def test_the_feedback_names_the_file_a_redirected_block_really_went_to():
    moved = block("train.py", "        self.l1_penalty = 0.04\n", "        self.l1_penalty = 0.1\n")
    broken = block("experiment.py", "        self.nope = 1\n", "        self.nope = 2\n")
    changed, outcomes = apply_reply(moved + broken, {"experiment.py": TRAINER, "notes.txt": "# Notes\n"})
    assert [o.status for o in outcomes] == [EditStatus.APPLIED, EditStatus.FAILED]
    text = feedback(outcomes)
    assert "- line 3: exact match in experiment.py, not in train.py as the block says" in text


def test_a_whole_markdown_file_with_fenced_code_inside_is_kept_whole():
    notes = "# Notes\n\nRun 1 used:\n\n```python\nl1_penalty = 0.08\n```\n\nIt helped.\n"
    changed, (o,) = apply_reply(whole("notes.txt", notes, "markdown"), {"notes.txt": "# Notes\n"},
                                edit_format="auto")
    assert o.status == EditStatus.APPLIED and changed == {"notes.txt": notes}  # not cut at the inner fence


def test_an_edits_status_is_one_enum_whose_values_are_the_words_written_before():
    assert [s.value for s in EditStatus] == ["applied", "failed", "refused", "malformed"]
    _, (o,) = apply_reply(block("experiment.py", "x = 1\n", "x = 2\n"), {"experiment.py": "x = 1\n"})
    assert o.status is EditStatus.APPLIED and f"- {o.status}: {o.path}" == "- applied: experiment.py"
    assert EditOutcome("a.py", "refused", "no", None).status is EditStatus.REFUSED   # a bare string
    with pytest.raises(ValueError):
        EditOutcome("a.py", "skipped", "no", None)
