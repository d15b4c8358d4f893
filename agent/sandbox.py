"""The box around code the LLM wrote: a staged copy of the workspace, run under bubblewrap.

Every run (smoke, full, evaluation, replay) starts from a *stage*: a fresh folder outside the
workspace's repository holding the editable files, a pristine copy of the protected files (from the
workspace's first commit, never from the work tree a run could have changed) and an empty run
folder. No `.git`, no `template.json`, no `profile.json`: what the run could use to rewrite history
or its own settings is not there. Only the run folder comes back, and only its regular files.
Each stage names its owner (host, pid); a stage whose agent was killed is removed by the next one.
After a run, bytecode anywhere in the workspace is removed (`remove_bytecode`): git ignores it,
yet a person's `import harness` there would run it.

Two boxes:

- **bwrap** (bubblewrap, Debian package `bubblewrap`): new user, pid, ipc, uts, cgroup and network
  namespaces (the network only where the profile needs the hub), `--die-with-parent`, the system,
  the Python installation and the venv read-only, the stage read-only except the run folder, a
  private `/tmp` and `$HOME`, and read-only views of exactly the cache folders the step needs. The
  agent's `/proc` is invisible, and when the run's main process exits the kernel kills everything
  it started (pid namespace).
- **staged** (where bwrap cannot run: no user namespaces on an HPC node, macOS): the same stage, but
  the run sees the whole filesystem with the user's rights. The agent becomes a child subreaper, so
  daemons a run double-forks are re-parented to it and killed after the run. Said loudly.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

BOXES = ("bwrap", "staged")
BOX_HOME = "/tmp/home"
# What a Python process needs from /etc; the rest of /etc stays out of the box.
ETC_FILES = ("passwd", "group", "hosts", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
             "localtime", "ssl", "ca-certificates", "alternatives", "resolv.conf", "mime.types")
SYSTEM_DIRS = ("/usr", "/opt/conda")
MAX_COPY_BACK_BYTES = 4 << 30
# In every stage: who made it (host, pid, start time), so a stage whose agent was killed can be told
# from one in use; a Slurm job's stage names the job instead (it outlives the agent, resume follows it).
OWNER_FILE = ".sae-agent-owner.json"
BYTECODE_DIR = "__pycache__"
BYTECODE_SUFFIXES = (".pyc", ".pyo")


class SandboxError(Exception):
    """The box cannot be built (a missing tool, a staged file that is not a regular file)."""


@dataclass
class Box:
    """How one step runs: which box, what it may read, where it may write."""
    kind: str                                             # "bwrap" | "staged"
    stage: Path                                           # the child's working directory
    writable: list[Path] = field(default_factory=list)    # inside the stage
    readable: list[Path] = field(default_factory=list)    # cache folders, model weights
    hidden: list[Path] = field(default_factory=list)      # masked by an empty folder (labelled data)
    network: bool = False

    def wrap(self, argv: list[str]) -> list[str]:
        return bwrap_argv(self, argv) if self.kind == "bwrap" else list(argv)


@lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """bwrap is installed and can make the namespaces we ask for here."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = [exe, "--unshare-all", "--die-with-parent", *_system_binds(), "--proc", "/proc", "--dev", "/dev",
             "--", sys.executable, "-c", "pass"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def choose(requested: str | None = None) -> str:
    """The strongest box that works here, or the one asked for (refused if it cannot run)."""
    requested = requested or os.environ.get("AGENT_SANDBOX") or None
    if requested is None:
        return "bwrap" if bwrap_works() else "staged"
    if requested not in BOXES:
        raise SandboxError(f"unknown sandbox {requested!r}; choose one of: {', '.join(BOXES)}")
    if requested == "bwrap" and not bwrap_works():
        raise SandboxError("--sandbox bwrap: bubblewrap is not installed or cannot create namespaces here "
                           "(apt-get install bubblewrap; on a cluster node without user namespaces use "
                           "--sandbox staged)")
    return requested


def staged_warning() -> str:
    """What to say when runs go in the staged box, truthfully: bwrap is missing, or staged was asked
    for (by --sandbox or $AGENT_SANDBOX; --sandbox bwrap overrides either)."""
    risk = "generated code runs in a staged copy with your user's rights (it can read your files and use the network)"
    if not bwrap_works():
        return (f"sandbox: bubblewrap is not available, so {risk}. Install bubblewrap "
                "(apt-get install bubblewrap) for a real box.")
    return (f"sandbox: staged was asked for (--sandbox staged or AGENT_SANDBOX=staged): {risk}; "
            "bubblewrap works here and is the real box (--sandbox bwrap).")


# --------------------------------------------------------------------------- bwrap command line

def _python_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(r for r in roots if r and os.path.isdir(r))


def _system_binds() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for root in _python_roots():
        args += ["--ro-bind", root, root]
    return args


def bwrap_argv(box: Box, argv: list[str]) -> list[str]:
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    if box.network:
        args += ["--share-net"]
    # The private /tmp first: binds made after it stay visible, so a venv, cache or stage that
    # lives under /tmp (a CI checkout, a test's cache) is not hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", BOX_HOME]
    args += _system_binds()
    for dev in sorted(glob.glob("/dev/nvidia*")):   # GPU profiles: the devices, nothing else
        args += ["--dev-bind", dev, dev]
    for path in box.readable:
        args += ["--ro-bind-try", str(path), str(path)]
    for path in box.hidden:
        if os.path.isdir(path):
            args += ["--tmpfs", str(path)]
    args += ["--ro-bind", str(box.stage), str(box.stage)]
    for path in box.writable:
        args += ["--bind", str(path), str(path)]
    args += ["--chdir", str(box.stage), "--setenv", "HOME", BOX_HOME, "--setenv", "TMPDIR", "/tmp", "--"]
    return args + list(argv)


# --------------------------------------------------------------------------- staging

def new_stage(parent: Path, name: str) -> Path:
    """A fresh folder for one step, beside (never inside) the workspace's repository, marked as ours."""
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    _write_owner(stage, {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())})
    return stage


def mark_job(stage: Path, job_id: str) -> None:
    """`stage` now belongs to a Slurm job: it may outlive this process (a resumed agent follows it).
    A folder that is no stage (no owner file: a run in the workspace itself) is left alone."""
    if (stage / OWNER_FILE).is_file():
        _write_owner(stage, {"host": socket.gethostname(), "slurm_job": str(job_id)})


def remove_stale_stages(parent: Path) -> list[Path]:
    """Remove the stages under `parent` whose agent is gone (killed before it could clean up).
    Spared: a live process's, another host's, a Slurm job's, and one without an owner (being made)."""
    removed = []
    for stage in sorted(parent.iterdir()) if parent.is_dir() else []:
        if stage.is_dir() and not stage.is_symlink() and _is_stale(_read_owner(stage)):
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    if removed:
        log.info("removed %d stage(s) left by an agent that was killed: %s", len(removed),
                 ", ".join(shown_name(p.name) for p in removed))
    return removed


def _is_stale(owner: dict | None) -> bool:
    if not owner or "slurm_job" in owner or owner.get("host") != socket.gethostname():
        return False
    pid, started = owner.get("pid"), owner.get("started")
    if not isinstance(pid, int) or not isinstance(started, (int, float)):
        return False
    now = _started(pid)   # another start time: the pid was reused by another process
    return now is None or abs(now - started) > 1.0


def _started(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _write_owner(stage: Path, owner: dict) -> None:
    tmp = stage / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(owner))
    tmp.replace(stage / OWNER_FILE)   # whole or absent, never half-written


def _read_owner(stage: Path) -> dict | None:
    try:
        owner = json.loads((stage / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def stage_files(stage: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = stage / rel
        if not target.resolve().is_relative_to(stage.resolve()):
            raise SandboxError(f"refusing to stage {rel!r}: it points outside the stage")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def read_regular(root: Path, rel: str) -> bytes:
    """A workspace file's bytes, refusing symlinks and anything that is not a regular file."""
    path = root / rel
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise SandboxError(f"{rel} is a symbolic link (to {os.readlink(path)}); only regular files are run")
    if not stat.S_ISREG(info.st_mode):
        raise SandboxError(f"{rel} is not a regular file")
    return path.read_bytes()


def copy_back(src: Path, dest: Path) -> list[str]:
    """Regular files and folders of `src` into `dest`; returns what was skipped (links, devices, excess)."""
    skipped, total = [], 0
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel_dir = Path(dirpath).relative_to(src)
        for name in list(dirnames):
            if os.path.islink(Path(dirpath) / name):
                skipped.append(shown_name(rel_dir / name))
                dirnames.remove(name)
        (dest / rel_dir).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or total + info.st_size > MAX_COPY_BACK_BYTES:
                skipped.append(shown_name(rel_dir / name))
                continue
            total += info.st_size
            target = dest / rel_dir / name
            if target.is_symlink() or (target.exists() and not target.is_file()):
                skipped.append(shown_name(rel_dir / name))
                continue
            shutil.copyfile(path, target)
    return skipped


def remove_stage(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- what a run leaves behind

def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a file name that are not UTF-8 (os.fsdecode's surrogate
    escapes, which no UTF-8 file, log or JSON writer accepts) shown as `\\xff`."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:   # a lone surrogate no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown_name(name) -> str:
    """A file name a run chose, fit for a commit message, a log line or JSON: bytes that are not
    UTF-8 and control characters escaped (`bad_\\xff_name.txt`), so no newline can forge a trailer."""
    text = printable(os.fsdecode(name))
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def bytecode_in(root: Path) -> dict[str, str]:
    """Every bytecode file under `root` (in a `__pycache__`, or a `*.pyc`): path -> SHA-256."""
    return {rel: _digest(root / rel) for rel in _bytecode(root)[0]}


def remove_bytecode(root: Path, before: dict[str, str] | None) -> list[str]:
    """Remove all bytecode under `root`: Python runs a `.pyc` whose header matches its source, so a
    planted one would run when a person imports the workspace's code. Returns the names of the
    files that were not in `before` as they are now (the run's); with `before` None (whose they
    are is unknown) they are logged instead."""
    files, entries = _bytecode(root)
    planted = [rel for rel in files if before is None or before.get(rel) != _digest(root / rel)]
    for rel in entries:
        _remove_path(root / rel)
    if before is None:
        if planted:
            log.warning("removed bytecode from %s: %s", shown_name(root), ", ".join(map(shown_name, planted)))
        return []
    return [shown_name(rel) for rel in planted]


def _bytecode(root: Path) -> tuple[list[str], list[Path]]:
    """The bytecode files under `root` and the entries that hold them (`__pycache__` folders or
    links, stray `*.pyc`), as paths relative to `root`; no link is followed, `.git` is skipped."""
    files, entries = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if name == BYTECODE_DIR:
                entries.append(rel / name)
                inside = [path] if path.is_symlink() or not path.is_dir() else _files_under(path)
                files += [str(p.relative_to(root)) for p in inside]
            elif name in filenames and name.endswith(BYTECODE_SUFFIXES):
                entries.append(rel / name)
                files.append(str(rel / name))
        dirnames[:] = [d for d in dirnames if d != BYTECODE_DIR]
    return sorted(files), entries


def _files_under(folder: Path) -> list[Path]:
    """Files and links under `folder`, no link followed (an empty folder counts as itself)."""
    found = [Path(d) / n for d, dirs, names in os.walk(folder, followlinks=False)
             for n in names + [x for x in dirs if os.path.islink(os.path.join(d, x))]]
    return found or [folder]


def _digest(path: Path) -> str:
    try:
        return "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _remove_path(path: Path) -> None:
    """A file, link or folder, never following a link."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the staged box's clean-up

def become_subreaper() -> None:
    """Orphans of a run (a setsid double fork) are re-parented to us, so we can find and kill them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_leftovers(spare: set[int]) -> int:
    """Kill every descendant of this process not in `spare`; the number killed."""
    import psutil
    me = psutil.Process()
    victims = [p for p in me.children(recursive=True) if p.pid not in spare]
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=5)
    return len(victims)


def descendants() -> set[int]:
    import psutil
    return {p.pid for p in psutil.Process().children(recursive=True)}
