"""Idea files: the shipped ones parse, malformed ones are refused with file, problem and fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.idea import IdeaError, import_ideas, load_idea

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "ideas").glob("*.md"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_ideas_parse_with_steps_and_a_replay(path):
    idea = load_idea(path)
    assert idea.title and idea.name == path.stem
    assert "1." in idea.experiment and "2." in idea.experiment
    assert idea.plan
    assert idea.replay_file().exists(), "each shipped idea has recorded reference replies"


def test_three_seed_ideas_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"lateral_inhibition", "exponential_orthogonal", "topk_orthogonality"}


def write(tmp_path, text, name="idea.md"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, problem", [
    ("## Experiment\n1. x\n", "has no title"),
    ("# Title\n\nSome words.\n## Implementation plan\n1. y\n", "has no experiment section"),
    ("---\ntemplate: nope\n---\n# T\n## Experiment\n1. x\n", "unknown template 'nope'"),
    ("---\nmax_runs: zero\n---\n# T\n## Experiment\n1. x\n", "not a positive whole number"),
    ("---\ncolour: red\n---\n# T\n## Experiment\n1. x\n", "line 2: 'colour: red' is not a front-matter setting"),
    ("---\nname: x\n# T\n## Experiment\n1. x\n", "never ends"),
])
def test_malformed_ideas_name_file_problem_and_fix(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(IdeaError) as err:
        load_idea(path)
    message = str(err.value)
    assert str(path) in message and problem in message and "fix:" in message


def test_unreadable_and_missing_files(tmp_path):
    binary = tmp_path / "b.md"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(IdeaError, match="cannot be read"):
        load_idea(binary)
    with pytest.raises(IdeaError, match="no such file"):
        load_idea(tmp_path / "missing.md")


def test_front_matter_and_sections(tmp_path):
    path = write(tmp_path, "---\nname: My Idea\nmax_runs: 2\n---\n# A title\n\nWhy it matters.\n\n"
                 "## Experiment\n1. a\n2. b\n\n## Implementation Plan\n- do it\n")
    idea = load_idea(path)
    assert (idea.name, idea.max_runs, idea.title) == ("my_idea", 2, "A title")
    assert idea.motivation == "Why it matters." and idea.plan == "- do it"


def test_cli_refuses_malformed_idea_before_any_work(tmp_path):
    # A path longer than any terminal, and no COLUMNS: off a terminal the message stays one line.
    deep = tmp_path.joinpath(*[f"folder_{i:02d}_with_a_long_name" for i in range(8)])
    deep.mkdir(parents=True)
    bad = write(deep, "no title here\n")
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", str(bad), "--results", str(results)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert len(str(bad)) > 200
    assert any(str(bad) in line and "has no title" in line for line in proc.stderr.splitlines()), proc.stderr
    assert not results.exists(), "nothing is created for a refused idea"


def test_import_ai_scientist_ideas_tolerates_missing_keys(tmp_path):
    ideas = [
        {"Name": "lateral_inhibition", "Title": "Lateral Inhibition", "Experiment": "1. one 2. two",
         "Technical_Details": "details", "Implementation_Plan": "1. a 2. b", "Interestingness": 8},
        {"Name": "bare", "Title": "Only a title"},
    ]
    src = write(tmp_path, json.dumps(ideas), "ideas.json")
    out = tmp_path / "out"
    written = import_ideas(src, out)
    assert [p.name for p in written] == ["lateral_inhibition.md", "bare.md"]
    first = load_idea(written[0])
    assert first.title == "Lateral Inhibition" and first.experiment == "1. one\n2. two"
    assert "Interestingness: 8" in written[0].read_text()
    assert load_idea(written[1]).experiment  # a placeholder step keeps it runnable
    again = import_ideas(src, out)  # never overwrites
    assert again[0].name == "lateral_inhibition_2.md"


def test_import_rejects_non_json(tmp_path):
    src = write(tmp_path, "{not json", "ideas.json")
    proc = subprocess.run([sys.executable, "-m", "agent", "ideas", "import", str(src), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


@pytest.mark.parametrize("front, problem", [
    ("name: [unclosed", "line 2: front matter is not valid YAML"),
    ("name: a\nmax_runs: 2\n  bad: indent", "line 4: front matter is not valid YAML"),
    ("- name\n- max_runs", "line 2: front matter is not a set of 'key: value' lines (it is a YAML list)"),
    ("just words", "front matter is not a set of 'key: value' lines (it is a YAML str)"),
    ("name: x\nmax_runs: \"three\"", "line 3: front matter 'max_runs: three' is not a positive whole number"),
    ("max_attempts: 2.5", "line 2: front matter 'max_attempts: 2.5' is not a positive whole number"),
    ("max_runs: true", "line 2: front matter 'max_runs: True' is not a positive whole number"),
    ("max_runs: 1\nmax_runs: 100", "line 3: 'max_runs' is set twice (first on line 2)"),
    ("profile: [cpu, tiny]", "line 2: front matter 'profile' must be a word or a path"),
    ("template: {a: 1}", "line 2: front matter 'template' must be a word or a path"),
    ("name: x\nmax_run: 3", "line 3: 'max_run: 3' is not a front-matter setting"),
    ("extra: 5", "line 2: 'extra' must be a mapping"),
])
def test_malformed_yaml_front_matter_names_the_file_and_line(tmp_path, front, problem):
    path = write(tmp_path, f"---\n{front}\n---\n# T\n## Experiment\n1. x\n")
    with pytest.raises(IdeaError) as err:
        load_idea(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "fix:" in message, message


def test_a_misspelt_key_suggests_the_close_match(tmp_path):
    path = write(tmp_path, "---\nmax_run: 3\n---\n# T\n## Experiment\n1. x\n")
    with pytest.raises(IdeaError, match="did you mean 'max_runs'"):
        load_idea(path)


def test_yaml_front_matter_quotes_comments_and_extras(tmp_path):
    path = write(tmp_path, "---\nname: 'Idea: two #1'   # a comment\nmax_attempts: 4\nprofile: ~\n"
                 "extra:\n  owner: ada\n  tags: [sae, topk]\n---\n# T\n## Experiment\n1. x\n")
    idea = load_idea(path)
    assert (idea.name, idea.max_attempts, idea.profile) == ("idea_two_1", 4, None)
    assert idea.extra == {"owner": "ada", "tags": ["sae", "topk"]}
    assert load_idea(write(tmp_path, "---\n---\n# T\n## Experiment\n1. x\n", "empty.md")).max_runs is None


def test_cli_refuses_bad_front_matter_without_a_traceback(tmp_path):
    bad = write(tmp_path, "---\nmax_runs: \"three\"\n---\n# T\n## Experiment\n1. x\n")
    proc = subprocess.run([sys.executable, "-m", "agent", "run", str(bad), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "line 2: front matter 'max_runs: three' is not a positive whole number" in proc.stderr
