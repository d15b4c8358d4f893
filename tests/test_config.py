"""Configuration files are checked: template.json against its schema, idea front matter as YAML.

A typo must never change behaviour silently (a misspelt "protected" would leave the harness
unprotected): every message names the file, the key or field, and the close match.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.template import TemplateError, load_template

REPO = Path(__file__).resolve().parent.parent
SHIPPED_TEMPLATES = sorted(REPO.glob("templates/*/template.json")) + sorted(REPO.glob("tests/**/template.json"))


def template_dir(tmp_path: Path, spec: dict) -> Path:
    folder = tmp_path / "tpl"
    folder.mkdir(exist_ok=True)
    (folder / "template.json").write_text(json.dumps(spec))
    return folder


@pytest.mark.parametrize("path", SHIPPED_TEMPLATES, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_templates_validate(path):
    template = load_template(path.parent)
    assert template.editable and template.command


def test_a_valid_file_keeps_every_setting(tmp_path):
    folder = template_dir(tmp_path, {
        "editable": ["experiment.py"], "protected": ["harness/"], "profiles": ["cpu", "gpu"],
        "default_profile": "cpu", "env_allow": {"gpu": ["HF_TOKEN"]}, "smoke_profiles": ["gpu"],
        "limits": {"cpu": {"address_space_gb": 2, "cpu_seconds": 60}}, "network": ["gpu"],
        "baseline_seeds": [0, 1], "profile_baseline_seeds": {"cpu": [0, 1, 2, 3]},
        "frontier": {"sparsity_penalty": [1, 2.5]}, "slurm": {"gpu": {"gpus": 1, "mem_gb": 8}}})
    t = load_template(folder)
    assert t.protected == ("harness/",) and t.allowed_env("gpu") == ["HF_TOKEN"] and t.allowed_env("cpu") == []
    assert t.resource_limits("cpu") == {"max_memory_bytes": 2 * 2**30, "max_cpu_seconds": 60}
    assert t.resource_limits("gpu") == {"max_memory_bytes": None, "max_cpu_seconds": None}
    assert t.network_profiles == ("gpu",) and t.smoke_profiles == ("gpu",) and t.baseline_seeds == (0, 1)
    assert t.seeds_for("cpu") == (0, 1, 2, 3) and t.seeds_for("gpu") == (0, 1) and t.seeds_for(None) == (0, 1)
    assert t.frontier == {"sparsity_penalty": [1, 2.5]} and t.slurm == {"gpu": {"gpus": 1, "mem_gb": 8}}
    assert load_template(template_dir(tmp_path, {})).smoke_profiles is None  # default: smoke every profile


@pytest.mark.parametrize("spec, message", [
    ({"protect": ["harness/"]}, "unknown key 'protect' in {file}; did you mean 'protected'?"),
    ({"Protected": ["harness/"]}, "unknown key 'Protected' in {file}; did you mean 'protected'?"),
    ({"profiles": ["cpu"], "limits": {"cpu": {"address_space": 4}}},
     "unknown key 'address_space' under limits.cpu in {file}; did you mean 'address_space_gb'?"),
    ({"profiles": ["cpu"], "slurm": {"cpu": {"gpu": 1}}},
     "unknown key 'gpu' under slurm.cpu in {file}; did you mean 'gpus'?"),
])
def test_a_misspelt_key_is_refused_with_the_close_match(tmp_path, spec, message):
    folder = template_dir(tmp_path, spec)
    with pytest.raises(TemplateError) as err:
        load_template(folder)
    assert message.format(file=folder / "template.json") in str(err.value)


@pytest.mark.parametrize("spec, field", [
    ({"protected": "harness/"}, "'protected' should be a valid list"),
    ({"editable": ["experiment.py", 3]}, "'editable[1]' should be a valid string"),
    ({"frontier": {"sparsity_penalty": 0.5}}, "'frontier.sparsity_penalty' should be a valid list"),
    ({"frontier": {"sparsity_penalty": [0.5, "high"]}}, "'frontier.sparsity_penalty[1]' should be a valid number"),
    ({"baseline_seeds": ["0"]}, "'baseline_seeds[0]' should be a valid integer"),
    ({"references": {"topk": []}}, "'references.topk' list should have at least 1 item"),
    ({"profiles": ["cpu"], "limits": {"cpu": {"cpu_seconds": -5}}}, "'limits.cpu.cpu_seconds' should be greater than 0"),
    ({"command": []}, "'command' list should have at least 1 item"),
    ({"profiles": ["tiny", "cpu"], "limits": {"gpu": {"address_space_gb": 4}}},
     "limits.gpu names the profile 'gpu', which is not in 'profiles' (tiny, cpu)"),
    ({"profiles": ["tiny", "cpu"], "default_profile": "cpus"}, "default_profile names the profile 'cpus'"),
    ({"profiles": ["tiny"], "network": ["tiny", "gemma"]}, "network[1] names the profile 'gemma'"),
    ({"profiles": ["tiny"], "profile_baseline_seeds": {"cpu": [0, 1]}},
     "profile_baseline_seeds.cpu names the profile 'cpu'"),
    ({"profiles": ["cpu"], "profile_baseline_seeds": {"cpu": []}},
     "'profile_baseline_seeds.cpu' list should have at least 1 item"),
])
def test_a_wrong_type_is_refused_naming_the_field(tmp_path, spec, field):
    folder = template_dir(tmp_path, spec)
    with pytest.raises(TemplateError) as err:
        load_template(folder)
    assert str(folder / "template.json") in str(err.value) and field in str(err.value)


def test_the_cli_shows_the_message_and_exits_2_without_a_traceback(tmp_path):
    folder = template_dir(tmp_path, {"protect": ["harness/"], "profiles": ["tiny"]})
    idea = tmp_path / "idea.md"
    idea.write_text("---\ntemplate: ./tpl\n---\n# T\n\n## Experiment\n1. a\n2. b\n")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", str(idea), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"unknown key 'protect' in {folder / 'template.json'}; did you mean 'protected'?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir()), "no workspace was made"
