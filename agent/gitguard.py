"""Git the run cannot steer: safe options for every git command, and a backup of the history.

Generated code may reach the workspace (the fallback box, or a bug). Two defences follow.

1. Every git command the agent runs (through `repo_at`/`safe_git`) reads no configuration that
   could run code: hooks point at `/dev/null` (nothing can be planted under it, unlike a folder),
   the user's global and system files are not read, code-running keys are overridden on the
   command line, replace refs are ignored, and only the `file` protocol is allowed. What command
   line overrides cannot reach (a `filter.<name>.clean` or an `include.path` in `.git/config`)
   is handled by `Guard`, which holds `.git/config` to what the agent last saw.
2. `Guard` remembers, in memory and in a bare backup repository outside the workspace
   (`$SAE_HISTORY_DIR`, default `<cache dir>/history`), where the agent left its branch. Before
   each commit it checks `.git` and puts back whatever a run changed: a moved or rewritten
   branch, a removed or replaced `.git`, planted hooks, changed config, stale lock files. The
   caller records what was found as the attempt's failure; no attempt is ever lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import git

from agent.sandbox import shown_name

log = logging.getLogger(__name__)

# Command-line config wins over every file. These keys run programs or change what git reads.
SAFE_CONFIG = {
    "core.hooksPath": os.devnull,
    "core.fsmonitor": "false",
    "core.untrackedCache": "false",
    "core.sshCommand": "false",
    "core.pager": "cat",
    "core.editor": "false",
    "core.askPass": "false",
    "core.attributesFile": os.devnull,
    "credential.helper": "",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "gpg.program": "false",
    "log.showSignature": "false",
    "protocol.allow": "never",
    "protocol.file.allow": "always",
    "gc.auto": "0",
    "maintenance.auto": "false",
}
SAFE_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,  # a run in the fallback box can write ~/.gitconfig
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",   # refs/replace could show a fake commit in place of a real one
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_EDITOR": "false",
}
# What `.git/config` may hold when a session opens; anything else is dropped (and reported).
_ALLOWED_CONFIG = re.compile(
    r"^(core\.(repositoryformatversion|filemode|logallrefupdates|ignorecase|precomposeunicode|symlinks)"
    r"|extensions\.objectformat|user\.(name|email)"
    r"|remote\..+\.(url|fetch|pushurl)|branch\..+\.(remote|merge))$")
# Files under .git that steer what git reads, held to what the agent last saw.
WATCHED = ("config", "info/exclude", "info/attributes", "info/grafts", "objects/info/alternates")
LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock")


class GuardError(Exception):
    """The history is gone and no backup can bring it back."""


def _args() -> list[str]:
    return [item for key, value in SAFE_CONFIG.items() for item in ("-c", f"{key}={value}")]


def safe_git(g: git.Git) -> git.Git:
    """Give a gitpython Git object the safe options and environment, for all later commands."""
    g.set_persistent_git_options(c=[f"{k}={v}" for k, v in SAFE_CONFIG.items()])
    g.update_environment(**SAFE_ENV)
    return g


def status(repo: git.Repo, *args, **kwargs) -> list[tuple[str, str]]:
    """(XY code, path) per entry of `git status --porcelain=v1 -z --no-renames`: NUL-separated, so
    no name is quoted, and gitpython decodes with surrogateescape, so a name that is not UTF-8 (a
    run can make one) reads as os.fsdecode gives it. No renames: one path per entry, never two."""
    out = repo.git.status(*args, porcelain="v1", z=True, no_renames=True, **kwargs)
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


class _Repo(git.Repo):
    """gitpython's Repo, its untracked files read through `status`: gitpython's own parser decodes
    git's quoted names strictly and crashes on a name that is not UTF-8."""

    def _get_untracked_files(self, *args, **kwargs) -> list[str]:
        paths = [a for a in args if a is not None]
        return [rel for code, rel in status(self, *paths, untracked_files=True, **kwargs) if code == "??"]


def repo_at(path) -> git.Repo:
    """`git.Repo(path)` whose every command runs with the safe options (no search upwards)."""
    repo = _Repo(Path(path))
    safe_git(repo.git)
    return repo


def run_git(args: list[str], cwd: Path | None = None, stdin: bytes | None = None
            ) -> subprocess.CompletedProcess:
    """A git command outside gitpython (guard and backup side), with the same protections."""
    env = {**os.environ, **SAFE_ENV, "LC_ALL": "C"}
    out = subprocess.run(["git", *_args(), *args], cwd=cwd or tempfile.gettempdir(), env=env,
                         input=stdin if stdin is not None else b"", capture_output=True)
    return subprocess.CompletedProcess(out.args, out.returncode,
                                       out.stdout.decode("utf-8", "replace"),
                                       out.stderr.decode("utf-8", "replace"))


def backup_root() -> Path:
    cache = os.environ.get("SAE_CACHE_DIR") or str(Path.home() / ".cache" / "sae-agent")
    return Path(os.environ.get("SAE_HISTORY_DIR") or Path(cache) / "history")


def backup_path(workspace: Path) -> Path:
    """The backup of one workspace: a bare repository named after its resolved path."""
    resolved = Path(workspace).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return backup_root() / f"{resolved.name}-{digest}.git"


def default_branch() -> str:
    """The user's `init.defaultBranch` (read as a file, never run), else git's own default."""
    try:
        reader = git.GitConfigParser([str(Path.home() / ".gitconfig")], read_only=True)
        return str(reader.get_value("init", "defaultBranch", default="master")) or "master"
    except Exception:
        return "master"


# -- reading .git without trusting it -----------------------------------------------------

def git_dir_ok(workspace: Path) -> bool:
    """`.git` is a real folder (no link, no `gitdir:` file elsewhere) holding a repository."""
    d = Path(workspace) / ".git"
    return d.is_dir() and not d.is_symlink() and (d / "HEAD").is_file() and (d / "objects").is_dir()


def _read(path: Path) -> bytes | None:
    try:
        return None if path.is_symlink() else path.read_bytes()
    except OSError:
        return None


def _config_keys(text: bytes | None) -> dict[str, list[str]]:
    """key → values of a config file's text, parsed by git alone (includes not followed)."""
    if not text:
        return {}
    out = run_git(["config", "--file", "-", "--no-includes", "--null", "--list"], stdin=text)
    if out.returncode != 0:
        return {"(unparsable config)": [out.stderr.strip()[:200]]}
    keys: dict[str, list[str]] = {}
    for entry in out.stdout.split("\0"):
        if entry:
            key, _, value = entry.partition("\n")
            keys.setdefault(key, []).append(value)
    return keys


def _write_config(path: Path, keys: dict[str, list[str]]) -> None:
    tmp = path.with_name("config.sae-agent-new")
    tmp.write_text("")
    for key, values in keys.items():
        for value in values:
            run_git(["config", "--file", str(tmp), "--add", key, value])
    tmp.replace(path)


def _branch_of(git_dir: Path) -> str | None:
    head = _read(git_dir / "HEAD") or b""
    m = re.match(rb"ref: refs/heads/(\S+)\s*$", head)
    return m.group(1).decode("utf-8", "surrogateescape") if m else None   # a run may write any bytes


@dataclass
class Seen:
    """Where the agent left the repository: branch, tip and the files that steer git."""
    branch: str | None = None
    tip: str | None = None
    files: dict[str, bytes | None] = field(default_factory=dict)
    hooks: dict[str, bytes | None] = field(default_factory=dict)  # a person's own (they never run)


class Guard:
    """One workspace's history as the agent left it, with a backup the run cannot reach."""

    def __init__(self, workspace: Path):
        self.workspace = Path(workspace).resolve()
        self.git_dir = self.workspace / ".git"
        self.backup = backup_path(self.workspace)
        self.seen: Seen | None = None
        self.tampering: list[str] = []  # what open() had to restore

    # -- at the start of a session ---------------------------------------------------------

    def open(self, fresh: bool = False) -> list[str]:
        """Adopt the repository as it stands and return warnings about what had to be fixed.

        A `.git` that is gone, or a branch that lost commits the backup holds, is restored from
        the backup; those findings (a run's doing, between sessions) are also kept in
        `self.tampering`. Config keys that could run code and stale locks are dropped with a
        warning only: a person may have set them. `fresh`: a history that starts now (just
        `git init`), whose first commit replaces any stale backup at the same path.
        """
        self.tampering = []
        if fresh:
            self.record()
            return []
        if not git_dir_ok(self.workspace):
            if not self._backup_tip():
                self.seen = None
                return []  # not (yet) a repository and nothing to restore: nothing to guard
            # The work tree stays as it is: it holds the attempt that was under way.
            self._restore_git_dir(self._backup_branch(), self._backup_tip())
            self.tampering.append(f".git (missing or replaced; restored from the backup {self.backup})")
        warnings = self._sanitize_config() + self._remove_locks()
        grafts = self.git_dir / "info" / "grafts"
        if grafts.exists() or grafts.is_symlink():
            grafts.unlink()
            self.tampering.append(".git/info/grafts (it rewrites parents; removed)")
        branch, tip = _branch_of(self.git_dir), self._tip()
        backup_tip = self._backup_tip()
        if backup_tip and (branch is None or not self._contains(tip, backup_tip)):
            self._restore_branch(self._backup_branch(), backup_tip, keep=[])
            kept = ""
            if tip:
                self._git("update-ref", f"refs/sae-agent/displaced/{tip[:12]}", tip)
                kept = f"; its tip {tip[:8]} kept as refs/sae-agent/displaced/{tip[:12]}"
            self.tampering.append(f"the branch (it no longer held {backup_tip[:8]}; restored from "
                                  f"the backup{kept})")
        self.record()
        return warnings + self.tampering

    # -- before each commit ---------------------------------------------------------------

    def check(self, keep: list[str] | None = None) -> list[str]:
        """Put back whatever changed in `.git` since `record()`; return one line per finding.

        When the branch or `.git` itself had to be restored and `keep` is given, the tracked
        files are put back as the agent left them too, except the paths in `keep` (the run's
        output folder); with `keep=None` (a check before a commit, not after a run) only the
        repository is restored and stale locks are removed without counting as findings.
        """
        if self.seen is None:
            return []
        found: list[str] = []
        if not git_dir_ok(self.workspace):
            what = "replaced" if (self.git_dir.exists() or self.git_dir.is_symlink()) else "removed"
            self._restore_git_dir(self.seen.branch, self.seen.tip)
            found.append(f".git ({what}; restored from the backup)")
            self._restore_tree(keep)
        for rel in WATCHED:
            now, then = _read(self.git_dir / rel), self.seen.files.get(rel)
            if now != then:
                found.append(f".git/{rel} ({self._describe_change(rel, then, now)}; restored)")
                self._put_file(rel, then)
        found += self._remove_hooks()
        locks = self._remove_locks()
        if keep is not None:
            found += locks  # right after a run: the run left them
        elif locks:  # before a commit: most likely the agent's own git, killed by a Ctrl-C
            log.warning("removed %s", "; ".join(locks))
        if self.seen.tip:
            branch, tip = _branch_of(self.git_dir), self._tip()
            if branch != self.seen.branch or tip != self.seen.tip:
                where = (f"HEAD moved to {(tip or 'nothing')[:8]}" if branch == self.seen.branch
                         else f"HEAD switched to {shown_name(branch or 'a detached commit')}")
                self._restore_branch(self.seen.branch, self.seen.tip, keep=keep)
                if tip and tip != self.seen.tip:  # nothing is lost: what it pointed at stays reachable
                    self._git("update-ref", f"refs/sae-agent/displaced/{tip[:12]}", tip, check=False)
                found.append(f"the branch {self.seen.branch} ({where}; restored to "
                             f"{self.seen.tip[:8]})")
        return found

    def record(self) -> None:
        """Remember the repository as it is now and copy the branch into the backup."""
        branch, tip = _branch_of(self.git_dir), self._tip()
        self.seen = Seen(branch, tip, {rel: _read(self.git_dir / rel) for rel in WATCHED},
                         self._hooks())
        if tip and branch:
            try:
                self._push_backup(branch)
            except (GuardError, OSError) as exc:  # the attempt is committed; say so, go on
                log.warning("%s", exc)

    # -- pieces ---------------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = run_git(list(args), cwd=self.workspace)
        if check and out.returncode != 0:
            raise GuardError(f"git {' '.join(args)} failed in {self.workspace}: {out.stderr.strip()}")
        return out

    def _tip(self) -> str | None:
        if not git_dir_ok(self.workspace):
            return None
        out = self._git("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        return out.stdout.strip() or None

    def _contains(self, tip: str | None, ancestor: str) -> bool:
        if not tip:
            return False
        return self._git("merge-base", "--is-ancestor", ancestor, tip, check=False).returncode == 0

    def _has_commit(self, sha: str) -> bool:
        return self._git("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0 and \
            self._git("rev-list", "--quiet", "--objects", sha, check=False).returncode == 0

    def _backup_tip(self) -> str | None:
        if not (self.backup / "HEAD").is_file():
            return None
        out = run_git(["--git-dir", str(self.backup), "rev-parse", "--verify", "-q", "HEAD^{commit}"])
        return out.stdout.strip() or None

    def _backup_branch(self) -> str:
        return _branch_of(self.backup) or default_branch()

    def _push_backup(self, branch: str) -> None:
        if not (self.backup / "HEAD").is_file():
            self.backup.parent.mkdir(parents=True, exist_ok=True)
            run_git(["init", "--quiet", "--bare", str(self.backup)])
            run_git(["--git-dir", str(self.backup), "config", "core.hooksPath", os.devnull])
        if _branch_of(self.backup) != branch:
            run_git(["--git-dir", str(self.backup), "symbolic-ref", "HEAD", f"refs/heads/{branch}"])
        out = self._git("push", "--quiet", "--force", "--no-verify", str(self.backup),
                        f"HEAD:refs/heads/{branch}", check=False)
        if out.returncode != 0:
            raise GuardError(f"could not back up the history of {self.workspace} to "
                             f"{self.backup}: {out.stderr.strip()}")

    def _restore_git_dir(self, branch: str | None, tip: str | None) -> None:
        """A fresh `.git` filled from the backup, branch at `tip`, index from it."""
        if not tip:
            raise GuardError(f"{self.workspace}: .git is gone and there is no backup to restore it from")
        branch = branch or self._backup_branch()
        if self.git_dir.is_symlink() or self.git_dir.is_file():
            self.git_dir.unlink()
        elif self.git_dir.exists():
            shutil.rmtree(self.git_dir)
        self._git("init", "--quiet", f"--initial-branch={branch}")
        self._git("fetch", "--quiet", "--no-tags", "--update-head-ok", str(self.backup),
                  f"+refs/heads/{branch}:refs/heads/{branch}")
        self._git("update-ref", f"refs/heads/{branch}", tip)
        self._git("reset", "--quiet")
        if self.seen is not None:  # the identity and settings the agent had seen
            self._put_file("config", self.seen.files.get("config"))

    def _restore_branch(self, branch: str | None, tip: str, keep: list[str] | None) -> None:
        branch = branch or self._backup_branch()
        if not self._has_commit(tip):  # the run deleted objects too: start again from the backup
            self._restore_git_dir(branch, tip)
        else:
            self._git("update-ref", f"refs/heads/{branch}", tip)
            self._git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self._git("reset", "--quiet")
        self._restore_tree(keep)

    def _restore_tree(self, keep: list[str] | None) -> None:
        """Tracked files back as committed, except `keep` (None: leave the work tree alone)."""
        if keep is None:
            return
        excludes = [f":(exclude){p}" for p in keep]
        self._git("checkout", "HEAD", "--", ".", *excludes, check=False)

    def _put_file(self, rel: str, data: bytes | None) -> None:
        path = self.git_dir / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def _describe_change(self, rel: str, then: bytes | None, now: bytes | None) -> str:
        if now is None:
            return "removed"
        if then is None:
            return "created by the run"
        if rel == "config":
            before, after = _config_keys(then), _config_keys(now)
            changed = [k for k in after if after[k] != before.get(k)] + [k for k in before if k not in after]
            if changed:
                return "set " + ", ".join(changed[:5])
        return "changed"

    def _sanitize_config(self) -> list[str]:
        path = self.git_dir / "config"
        keys = _config_keys(_read(path))
        bad = [k for k in keys if not _ALLOWED_CONFIG.match(k)
               and not (k == "core.bare" and keys[k] == ["false"])]
        if not bad:
            return []
        _write_config(path, {k: v for k, v in keys.items() if k not in bad})
        return [f".git/config: dropped {', '.join(bad[:8])}" + (" …" if len(bad) > 8 else "")
                + " (the agent reads no settings that could run code)"]

    def _hooks(self) -> dict[str, bytes | None]:
        hooks = self.git_dir / "hooks"
        if hooks.is_symlink() or not hooks.is_dir():
            return {}
        return {p.name: _read(p) if p.is_file() else None for p in hooks.iterdir()
                if not (p.name.endswith(".sample") and p.is_file() and not p.is_symlink())}

    def _remove_hooks(self) -> list[str]:
        """Hooks that appeared (or changed) since record(): removed. They could not run anyway."""
        hooks = self.git_dir / "hooks"
        found = []
        if hooks.is_symlink():
            hooks.unlink()
            return [".git/hooks (a link; removed)"]
        if not hooks.is_dir():
            return []
        known = self.seen.hooks if self.seen else {}
        for p in sorted(hooks.iterdir()):
            if p.name.endswith(".sample") and p.is_file() and not p.is_symlink():
                continue
            if p.name in known and known[p.name] is not None and _read(p) == known[p.name]:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            found.append(f".git/hooks/{shown_name(p.name)} (a hook; removed, it never ran)")
        return found

    def _remove_locks(self) -> list[str]:
        found = []
        candidates = [self.git_dir / n for n in LOCKS]
        refs = self.git_dir / "refs"
        if refs.is_dir():
            candidates += list(refs.rglob("*.lock"))
        for p in candidates:
            if p.exists() or p.is_symlink():
                p.unlink()
                found.append(f".git/{shown_name(p.relative_to(self.git_dir))} (a stale lock; removed)")
        return found


_GUARDS: dict[Path, Guard] = {}


def guard(workspace: Path) -> Guard:
    """The guard of this workspace for this process, opened on first use."""
    key = Path(workspace).resolve()
    g = _GUARDS.get(key)
    if g is None:
        g = _GUARDS[key] = Guard(key)
        g.open()
    return g


def open_guard(workspace: Path, fresh: bool = False) -> tuple[Guard, list[str]]:
    """Start a session on a workspace: (re)adopt its repository; the warnings say what was fixed."""
    key = Path(workspace).resolve()
    g = _GUARDS[key] = Guard(key)
    return g, g.open(fresh=fresh)
