"""Stage 2 — the workspace: `results/<timestamp>_<name>/`, a copy of the template that is its own git repo.

Its first commit holds the template, the idea and the baseline results (`run_0/`, made by
agent/baseline.py). This module reads and guards the files: what a run may change, what it put back,
and reopening a workspace from its git history.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import edits, environment, execution, gitguard, history, results, sandbox
from agent.idea import Idea
from agent.template import Template, TemplateError, load_template, parse_template
from agent.ui import prog

BASELINE_RUN = "run_0"
# The agent rewrites these before every commit; a run's changes to them are overwritten anyway.
TRANSCRIPTS = ("transcript.json", "transcript.md")
# Files the agent itself writes in the work tree while a run is going on or after it: never a
# run's tampering (a run cannot reach the work tree from its box anyway).
AGENT_FILES = TRANSCRIPTS + ("agent.log", "packages.json", "final_split.json")
# At most this many findings are named one by one; the rest are counted.
MAX_NAMED = 12
# Bytecode is not part of an attempt; model checkpoints are too big for git history.
WORKSPACE_GITIGNORE = "__pycache__/\n*.pyc\n*.pt\n*.pt2\n*.safetensors\n"


class WorkspaceError(Exception):
    """A workspace cannot be made or used; the message says why and what to do."""


@dataclass
class TreeSnapshot:
    """The workspace just before a run: what the run may not change, to compare with after."""
    editable: dict[str, bytes | None]  # each editable file's bytes as run (None: absent)
    untracked: set[str]                # untracked files that were already there
    bytecode: dict[str, str] = field(default_factory=dict)   # bytecode already there: path -> SHA-256


@dataclass
class Workspace:
    path: Path
    idea: Idea
    template: Template
    profile: str | None
    warnings: list[str] = field(default_factory=list)   # what reopening had to fix
    tampering: list[str] = field(default_factory=list)  # the part of it a run must have done

    @property
    def name(self) -> str:
        return self.path.name

    def regular_file(self, rel: str) -> Path | None:
        """`rel` when it is a regular file inside the workspace: never a link, never outside."""
        file = self.path / rel
        try:
            if file.is_symlink() or not file.is_file():
                return None
            if not file.resolve().is_relative_to(self.path.resolve()):  # under a linked folder
                return None
        except OSError:
            return None
        return file

    def read(self, rel: str) -> str:
        """The file's text; "" for a link or anything not a regular file (a run may leave one);
        bytes that are not UTF-8 come back as U+FFFD instead of crashing the loop."""
        file = self.regular_file(rel)
        if file is None:
            return ""
        return file.read_bytes().decode("utf-8", errors="replace")

    def editable_files(self) -> dict[str, str]:
        return {rel: self.read(rel) for rel in self.template.editable if self.regular_file(rel)}

    # -- what a run may change: only its output folder ------------------------------------

    def snapshot(self) -> TreeSnapshot:
        editable = {}
        for rel in self.template.editable:
            if rel.endswith("/"):  # a folder entry: its files are compared through git status
                continue
            file = self.regular_file(rel)
            editable[rel] = file.read_bytes() if file else None
        untracked = {rel for code, rel in self._status() if code == "??"}
        return TreeSnapshot(editable, untracked, sandbox.bytecode_in(self.path))

    def restore_after_run(self, before: TreeSnapshot | None, out_dir: str) -> list[str]:
        """Put back everything a run changed outside `out_dir`; one line per thing put back.

        The git history first (gitguard: branch, `.git`, hooks, config, locks), then tracked
        files (the harness, settings, earlier runs), the editable files as they were run, files
        the run created, and links or special files inside `out_dir`. Without `before` only the
        history and the tracked files are checked.
        """
        editable = set(self.template.editable)
        # Put back by the guard only if it had to restore the history: never the run's output,
        # the files as run (compared below) or the transcript (saved again before the commit).
        try:
            found = gitguard.guard(self.path).check(keep=[out_dir, *sorted(editable), *AGENT_FILES])
        except gitguard.GuardError as exc:
            raise history.HistoryError(f"the history of {self.path} cannot be restored: {exc}") from None
        repo = history.repo_at(self.path)
        repo.git.reset("--quiet")  # the index as committed: a run may have staged things
        for _ in range(2):  # twice: a restored .gitignore can reveal files it hid
            removed, restored = [], []
            for code, rel in self._status():
                if rel == out_dir or rel.startswith(out_dir + "/") or rel in AGENT_FILES \
                        or rel in editable or edits.allowed(rel, self.template.editable):
                    continue
                if code == "??":
                    if before is not None and rel not in before.untracked:
                        removed.append(rel)
                else:
                    restored.append(rel)
            for rel in removed:
                _remove(self.path / rel)
            if restored:
                repo.git.checkout("HEAD", "--", *restored)
            found += [f"{sandbox.shown_name(rel)} (created by the run; removed)" for rel in removed]
            found += [f"{sandbox.shown_name(rel)} (changed by the run; restored)" for rel in restored]
        if before is not None:
            found += self._restore_editable(before)
        found += self._clear_links(out_dir)
        # Ignored by git, so not in the status above, yet run by the next `import harness` here.
        found += [f"{rel} (bytecode the run left; removed)"
                  for rel in sandbox.remove_bytecode(self.path, before.bytecode if before else None)]
        return _bounded(found)

    def _restore_editable(self, before: TreeSnapshot) -> list[str]:
        found = []
        for rel, want in before.editable.items():
            file = self.path / rel
            regular = self.regular_file(rel)
            have = regular.read_bytes() if regular else None
            if regular is None and (file.exists() or file.is_symlink()):
                how = "replaced by a link" if file.is_symlink() else "replaced by something not a file"
            elif have == want:
                continue
            else:
                how = "removed" if have is None else "created" if want is None else "changed"
            _remove(file)
            if want is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(want)
            found.append(f"{rel} ({how} by the run; restored as it was run)")
        return found

    def _clear_links(self, out_dir: str) -> list[str]:
        """A run's output folder holds plain files and folders only: links could point a later
        reader (results, replay, report) at a file outside the workspace."""
        root = self.path / out_dir
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            _remove(root)
            return [f"{out_dir} (not a folder; removed)"]
        found = []
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder) / name
                if p.is_symlink() or not (p.is_file() or p.is_dir()):
                    _remove(p)
                    found.append(f"{sandbox.shown_name(p.relative_to(self.path))} (a link or special file; removed)")
        return found

    def _status(self) -> list[tuple[str, str]]:
        """(code, path) per changed or untracked file, from `git status` (ignored files aside)."""
        return gitguard.status(history.repo_at(self.path), untracked_files="all")

    def is_dirty(self) -> bool:
        """Whether anything is changed or untracked (ignored files aside): `git status`, read safely."""
        return bool(self._status())

    def repair_leftovers(self) -> list[str]:
        """On reopening: editable files that a run left as links, special files or bytes that
        are not UTF-8 are put back as last committed; one line per file."""
        repo = history.repo_at(self.path)
        found = []
        for rel in self.template.editable:
            file = self.path / rel
            regular = self.regular_file(rel)
            if regular is not None:
                try:
                    regular.read_bytes().decode("utf-8")
                    continue
                except UnicodeDecodeError:
                    how = "not UTF-8"
            elif file.exists() or file.is_symlink():
                how = "a link" if file.is_symlink() else "not a file"
            else:
                continue
            committed = history.file_at(repo, "HEAD", rel)
            if committed is None:  # a link was committed before: the baseline's version
                committed = history.file_at(repo, history.root_commit(repo), rel)
            _remove(file)
            if committed is not None:
                file.write_text(committed, encoding="utf-8")
            found.append(f"{rel} ({how}; put back as last committed)")
        return found

    def baseline(self) -> dict:
        return results.load_results(self.path / BASELINE_RUN)

    def seed_dirs(self) -> list[str]:
        """run_0 and its other seeds' folders, in the template's seed order."""
        return [BASELINE_RUN] + [f"{BASELINE_RUN}/seed_{s}" for s in self.template.seeds_for(self.profile)[1:]]

    def baseline_seeds(self) -> list[dict]:
        """Every seed of the baseline (run_0 itself first): their spread is the noise floor."""
        out = [self.baseline()]
        for rel in self.seed_dirs()[1:]:
            try:
                out.append(results.load_results(self.path / rel))
            except results.ResultsError:
                pass   # a workspace made before seeds were recorded: one seed only
        return out

    def baseline_frontier(self) -> list[dict]:
        """The baseline at other sparsity settings (seed 0 each), where they were run."""
        out = []
        for knob, values in self.template.frontier_for(self.profile).items():
            for value in values:
                try:
                    out.append(results.load_results(self.path / frontier_dir(knob, value)))
                except results.ResultsError:
                    pass
        return out

    def baseline_references(self) -> dict[str, dict]:
        """The template's reference SAEs at the baseline's L0 (a TopK SAE), where they were run."""
        out = {}
        for name in self.template.references:
            try:
                out[name] = results.load_results(self.path / reference_dir(name))
            except results.ResultsError:
                pass
        return out

    def protected_files(self) -> dict[str, bytes]:
        """The pristine harness: from the workspace's first commit, which no run can change."""
        repo = history.open_workspace(self.path)
        try:
            root = history.root_commit(repo)
        except Exception:   # no commit yet: the workspace is being made from the agent's template
            return execution.protected_from_template(self.template)
        return execution.protected_from_commit(repo, root, self.template.protected)


def frontier_dir(knob: str, value) -> str:
    return f"{BASELINE_RUN}/frontier_{knob}_{value}"


def reference_dir(name: str) -> str:
    return f"{BASELINE_RUN}/reference_{name}"


def _remove(path: Path) -> None:
    """Remove a file, link or folder without following a link."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _bounded(found: list[str]) -> list[str]:
    if len(found) <= MAX_NAMED:
        return found
    return found[:MAX_NAMED] + [f"and {len(found) - MAX_NAMED} more"]


def _copy_template(template: Template, target: Path) -> None:
    for rel in template.files():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template.root / rel, target / rel)


def _new_path(parent: Path, name: str) -> Path:
    """A new, empty folder `<timestamp>_<name>[_N]`, made here. mkdir is atomic: two ideas (or two
    processes) started in the same second get different folders, and none is ever overwritten."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in itertools.count(1):
        path = parent / (f"{stamp}_{name}" if n == 1 else f"{stamp}_{name}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def create(idea: Idea, results_dir: Path, profile: str | None = None) -> Workspace:
    """Make the workspace: the template's files, the idea, the profile, a git repo with nothing
    committed yet (agent/baseline.py runs or reuses the baseline and makes the first commit)."""
    template = load_template(idea.template_dir)
    profile = template.choose_profile(profile or idea.profile)
    path = _new_path(Path(results_dir), idea.name)
    _copy_template(template, path)
    shutil.copy2(idea.path, path / "idea.md")
    (path / "idea.json").write_text(json.dumps(idea.to_json(), indent=2) + "\n")
    (path / "profile.json").write_text(json.dumps({"profile": profile}) + "\n")
    (path / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    history.init_repo(path)
    environment.write_packages(path)   # the exact versions the runs use; replay compares with them
    return Workspace(path=path, idea=idea, template=template, profile=profile)


def open_workspace(path: Path) -> Workspace:
    """Reopen an existing workspace (resume): its `.git` restored from the backup if a run
    removed it, and its settings (idea, template, profile) read from the baseline commit, never
    from files a run could have rewritten."""
    path = Path(path)
    if not path.is_dir():
        raise WorkspaceError(f"{path} is not a workspace (no such folder); give a folder made by "
                             f"`{prog()} run`.")
    try:
        _, warnings = gitguard.open_guard(path)
        repo = history.open_workspace(path)
    except (history.HistoryError, gitguard.GuardError) as exc:
        raise WorkspaceError(f"{exc}; give a folder made by `{prog()} run`.") from None
    guard = gitguard.guard(path)
    root = history.root_commit(repo)
    where = f"the baseline commit {root[:8]} of {path}"
    try:
        data = json.loads(history.file_at(repo, root, "idea.json") or "")
        data["path"] = Path(data["path"])
        idea = Idea(**data)
    except (ValueError, TypeError, KeyError) as exc:
        raise WorkspaceError(f"idea.json in {where} is missing or unreadable ({exc}); "
                             f"is this a workspace made by `{prog()} run`?") from None
    spec = history.file_at(repo, root, "template.json")
    try:
        template = parse_template(path, spec, source=f"template.json in {where}") if spec \
            else load_template(idea.template_dir)  # the agent's own copy of the template
    except TemplateError as exc:
        raise WorkspaceError(str(exc)) from None
    try:
        profile = json.loads(history.file_at(repo, root, "profile.json") or "{}").get("profile")
    except (ValueError, AttributeError):
        profile = None
    return Workspace(path=path, idea=idea, template=template, profile=profile,
                     warnings=warnings, tampering=list(guard.tampering))
