"""The box around generated code: planted hostile experiments, run through the real executor.

Each case is an experiment.py that tries one thing generated code must not be able to do. The
bwrap cases need bubblewrap (CI installs it); the staged fallback's cases run everywhere.
"""

import json
import os
import socket
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agent import execution, sandbox
from agent.template import load_template

HARNESS = "def write(out_dir, value):\n    import json, os\n    os.makedirs(out_dir, exist_ok=True)\n" \
          "    json.dump({'value': value}, open(os.path.join(out_dir, 'final_info.json'), 'w'))\n"
BOXES = [pytest.param("bwrap", marks=pytest.mark.skipif(not sandbox.bwrap_works(),
                                                         reason="bubblewrap is not installed here")),
         "staged"]


@pytest.fixture
def make(tmp_path, monkeypatch):
    """A workspace holding `code` as experiment.py, and an executor for it in the given box."""
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AGENT_PLANTED_SECRET", "s3cr3t-value-from-the-agent")

    def build(code: str, box: str):
        ws = tmp_path / "ws"
        (ws / "harness").mkdir(parents=True)
        (ws / "harness" / "__init__.py").write_text(HARNESS)
        (ws / "template.json").write_text(json.dumps({"protected": ["harness/"], "profiles": ["tiny"]}))
        (ws / "profile.json").write_text('{"profile": "tiny"}')
        (ws / ".git").mkdir()
        (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (ws / "experiment.py").write_text(textwrap.dedent(code))
        template = load_template(ws)
        ex = execution.Pipeline(ws, template, "tiny", protected=execution.protected_from_template(template),
                                box=box, timeout=60)
        return ws, ex
    return build


def run(make, code, box):
    ws, ex = make(code, box)
    step = ex.run("run_1")
    return ws, step, (ws / "run_1" / "log.txt").read_text()


@pytest.mark.parametrize("box", BOXES)
def test_the_run_sees_no_git_no_settings_and_only_an_allowlisted_environment(make, box):
    ws, step, log = run(make, """
        import os, sys
        print("CWD", sorted(os.listdir(".")))
        print("ENV", sorted(os.environ))
        print("SECRET" , os.environ.get("AGENT_PLANTED_SECRET"))
        from harness import write; write(sys.argv[1].split("=")[1], 1)
    """, box)
    assert step.ok, log
    assert "'.git'" not in log and "template.json" not in log and "profile.json" not in log
    assert "SECRET None" in log and "s3cr3t" not in log
    assert step.box == box


@pytest.mark.parametrize("box", BOXES)
def test_the_agents_environment_cannot_be_read_through_proc(make, box):
    ws, step, log = run(make, """
        import glob, sys
        found = []
        for path in glob.glob("/proc/*/environ"):
            try:
                found.append(open(path, "rb").read())
            except OSError:
                pass
        print("LEAK" if any(b"s3cr3t" in blob for blob in found) else "CLEAN")
    """, box)
    if box == "bwrap":
        assert "CLEAN" in log and "s3cr3t" not in log
    else:   # the staged fallback cannot hide /proc: the reason bwrap is the default
        assert "LEAK" in log or "CLEAN" in log


@pytest.mark.parametrize("box", BOXES)
def test_a_daemon_does_not_outlive_the_run(make, box, tmp_path):
    marker = tmp_path / "daemon-alive"
    ws, step, log = run(make, f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                print("DAEMON", flush=True)
                code = "import time; time.sleep(30); open({str(marker)!r}, 'w').write('still here')"
                os.execv(sys.executable, [sys.executable, "-c", code, "planted-daemon-token"])
            os._exit(0)
        time.sleep(0.5)
        print("parent exits")
    """, box)
    assert "DAEMON" in log and "parent exits" in log
    daemons = [p for p in psutil.process_iter(["cmdline"])
               if "planted-daemon-token" in (p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE]
    assert daemons == []
    assert not marker.exists()


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed here")
def test_bwrap_run_writes_nowhere_but_its_run_folder(make, tmp_path):
    outside = tmp_path / "outside.txt"
    ws, step, log = run(make, f"""
        import os, sys
        for target in ({str(outside)!r}, "/tmp/planted.txt", os.path.expanduser("~/planted.txt"),
                       "harness/__init__.py", "../escape.txt"):
            try:
                open(target, "a").write("x")
                print("WROTE", target)
            except OSError as exc:
                print("REFUSED", target, type(exc).__name__)
        from harness import write; write(sys.argv[1].split("=")[1], 1)
    """, "bwrap")
    assert step.ok, log
    # /tmp and ~ are the box's own, thrown away with it; the harness is read-only
    assert not outside.exists() and not Path("/tmp/planted.txt").exists()
    assert not (ws.parent / "escape.txt").exists() and not list(Path(os.environ["SAE_CACHE_DIR"]).rglob("escape.txt"))
    assert "REFUSED harness/__init__.py" in log
    assert (ws / "harness" / "__init__.py").read_text() == HARNESS


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed here")
def test_bwrap_run_has_no_network(make):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        ws, step, log = run(make, f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2)
                print("CONNECTED")
            except OSError as exc:
                print("NO NETWORK", type(exc).__name__)
        """, "bwrap")
    finally:
        server.close()
    assert "NO NETWORK" in log and "CONNECTED" not in log


@pytest.mark.parametrize("box", BOXES)
def test_a_symlinked_experiment_is_refused_not_followed(make, box, tmp_path):
    secret = tmp_path / "outside.py"
    secret.write_text("print('outside code ran')\n")
    ws, ex = make("print('hi')\n", box)
    (ws / "experiment.py").unlink()
    (ws / "experiment.py").symlink_to(secret)
    step = ex.run("run_1")
    assert not step.ok and "symbolic link" in step.problem
    assert "outside code ran" not in (ws / "run_1" / "log.txt").read_text()


@pytest.mark.parametrize("box", BOXES)
def test_only_regular_files_come_back_from_the_run_folder(make, box):
    ws, step, log = run(make, """
        import os, sys
        out = sys.argv[1].split("=")[1]
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "plot.png"), "wb").write(b"png")
        os.symlink("/etc/passwd", os.path.join(out, "passwd"))
        from harness import write; write(out, 1)
    """, box)
    assert step.ok, log
    assert (ws / "run_1" / "plot.png").read_bytes() == b"png"
    assert not os.path.lexists(ws / "run_1" / "passwd") and "passwd" in step.skipped


def test_an_unknown_or_unavailable_box_is_refused(monkeypatch):
    with pytest.raises(sandbox.SandboxError, match="unknown sandbox"):
        sandbox.choose("docker")
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
        sandbox.choose("bwrap")
    assert sandbox.choose(None) == "staged"


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed here")
def test_a_python_installed_under_tmp_is_still_visible_in_the_box(tmp_path):
    # CI checks out (and makes its venv) under /tmp: the box's private /tmp must not hide it.
    fake_root = tmp_path / "venv" / "bin"
    fake_root.mkdir(parents=True)
    (fake_root / "marker").write_text("here")
    stage = tmp_path / "stage"
    stage.mkdir()
    box = sandbox.Box("bwrap", stage, readable=[fake_root])
    import subprocess
    out = subprocess.run(box.wrap(["/bin/cat", str(fake_root / "marker")]), capture_output=True, text=True)
    assert out.stdout == "here", out.stderr
