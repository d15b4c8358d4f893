"""The package as a user installs it: the wheel holds the template and the ideas, and the console
script and `python -m agent` work from any directory after a plain (non-editable) install."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from agent import __version__

ROOT = Path(__file__).resolve().parent.parent
QUIET_PIP = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def pip_env() -> dict:
    """No PYTHONPATH: pip must judge what is installed in the target alone."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | QUIET_PIP


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so the checkout gets no build/ or egg-info."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("agent", "templates", "ideas"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(src), "-w", str(tmp / "dist")], check=True, env=pip_env())
    (built,) = (tmp / "dist").glob("sae_agent-*.whl")
    return built


def test_the_wheel_ships_the_template_and_the_ideas(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_template = {f"agent/templates/{p.relative_to(ROOT / 'templates').as_posix()}"
                        for p in (ROOT / "templates").rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert "agent/templates/sae_variants/template.json" in shipped_template
    assert shipped_template <= names, sorted(shipped_template - names)
    for idea in (ROOT / "ideas").iterdir():
        assert f"agent/ideas/{idea.name}" in names
    assert "agent/review/report.html" in names, "the report's page template"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "sae-agent = agent.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; the heavy dependencies come from this interpreter's
    site-packages through a .pth line (a path only: that directory's own .pth files, among them
    an editable install of the checkout, are not run)."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, env=pip_env())
    # Only after the install: pip must not see (let alone replace) this interpreter's packages.
    Path(purelib, "_outer_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def in_elsewhere(installed: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run a command of the venv from an empty folder, without the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    env["SAE_CACHE_DIR"] = str(tmp_path / "cache")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    exe = argv[0] if argv[0].startswith("/") else str(installed / "bin" / argv[0])
    return subprocess.run([exe, *argv[1:]], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.slow
def test_the_installed_package_is_not_the_checkout(installed, tmp_path):
    done = in_elsewhere(installed, tmp_path, "python", "-c", "import agent; print(agent.__file__)")
    assert done.returncode == 0, done.stderr
    assert str(installed) in done.stdout and str(ROOT) not in done.stdout
    page = in_elsewhere(installed, tmp_path, "python", "-c",
                        "from agent.review.report_cmd import _page_template; print('${runs}' in _page_template())")
    assert page.stdout.strip() == "True", page.stderr  # the report's page template is package data


@pytest.mark.slow  # a venv and an install: ~20 s with the wheel build
@pytest.mark.parametrize("command, prog", [(["sae-agent"], "sae-agent"),
                                           (["python", "-m", "agent"], "python -m agent")])
def test_console_script_and_module_work_from_any_directory(installed, tmp_path, command, prog):
    version = in_elsewhere(installed, tmp_path, *command, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"{prog} {__version__}"
    usage = in_elsewhere(installed, tmp_path, *command, "run", "--help")
    assert usage.stdout.startswith(f"usage: {prog} run")

    # The shipped idea and template are found in the package: the profile check reads template.json.
    refused = in_elsewhere(installed, tmp_path, *command, "run", "ideas/lateral_inhibition.md", "--profile", "nope")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "has no profile 'nope'; choose one of: tiny, cpu, gemma-2-2b" in refused.stderr
    assert not (tmp_path / "elsewhere" / "results").exists(), "a refused run makes nothing"

    ideas = tmp_path / "ideas.json"
    ideas.write_text(json.dumps([{"Name": "x", "Title": "X", "Experiment": "1. a 2. b"}]))
    imported = in_elsewhere(installed, tmp_path, *command, "ideas", "import", str(ideas))
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "elsewhere" / "x.md").is_file(), "ideas import writes into the current directory"

    bad = in_elsewhere(installed, tmp_path, *command, "resume", str(tmp_path))
    assert bad.returncode == 2 and f"made by `{prog} run`" in bad.stderr, bad.stderr
