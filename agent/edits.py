"""Parse and apply aider-style SEARCH/REPLACE blocks: pure functions on strings.

The loop reads the workspace files into a dict, calls `apply_reply`, writes back what changed
(through `safe_path`) and sends `feedback(outcomes)` to the LLM when something did not apply.
Behaviour follows aider's editblock coder: file name on the line(s) before the block, exact match
first, then a uniform leading-whitespace offset, then `...` elision; a block that matches nowhere is
reported with the closest real lines instead of being applied somewhere approximate.

Beside that, aider's "whole" format (`find_whole_files`): a fenced block right after a line holding
only an editable file's name replaces that file. Small local models answer that way whatever they
are asked for; it is read only from a reply with no SEARCH/REPLACE marker in it, so a diff's own
fences are never mistaken for a file.
"""

from __future__ import annotations

import difflib
import heapq
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

DEFAULT_EDITABLE = ("experiment.py", "plot.py", "notes.txt")
# --edit-format: which replies are applied. "diff" SEARCH/REPLACE blocks only; "whole" and "auto"
# also whole files (they differ in what the prompts ask for, not in what is applied).
EDIT_FORMATS = ("diff", "whole", "auto")

HEAD_RE = re.compile(r"^\s*<{5,9} SEARCH>?\s*$")
DIVIDER_RE = re.compile(r"^\s*={5,9}\s*$")
UPDATED_RE = re.compile(r"^\s*>{5,9} REPLACE\s*$")
FENCE = "```"
# A line that stands for elided code inside a SEARCH/REPLACE pair, with the blank lines before it
# (aider's try_dotdotdots splits on exactly this).
DOTS_RE = re.compile(r"^\s*\.\.\.\n", re.MULTILINE)


class EditRefused(Exception):
    """A block names a file the loop must not write."""


@dataclass(frozen=True)
class EditBlock:
    path: str
    search: str
    replace: str
    line: int  # 1-based line of the `<<<<<<< SEARCH` marker in the reply


@dataclass(frozen=True)
class WholeFile:
    path: str
    content: str
    line: int  # 1-based line of the opening fence in the reply


class EditStatus(StrEnum):
    """What became of one edit block (`EditOutcome.status`); the values are the words the import's
    `Edits:` trailer and commit body are written with."""
    APPLIED = "applied"      # the file was changed (possibly another file than the block named)
    FAILED = "failed"        # its SEARCH lines match nowhere (or it would empty the file), or no such file
    REFUSED = "refused"      # its file is protected, not editable, or outside the workspace
    MALFORMED = "malformed"  # it could not be parsed


@dataclass(frozen=True)
class EditOutcome:
    path: str
    status: EditStatus
    message: str
    block: EditBlock | WholeFile | None

    def __post_init__(self) -> None:   # a bare string of the vocabulary becomes its member
        object.__setattr__(self, "status", EditStatus(self.status))


@dataclass
class ParsedReply:
    blocks: list[EditBlock] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # malformed blocks, one sentence each


# ---------------------------------------------------------------- finding the blocks


def _strip_filename(line: str) -> str | None:
    """The file name a line before a block names, or None when it names none."""
    name = line.strip()
    if not name or name == "...":
        return None
    if name.startswith(FENCE):
        # "```python" names nothing; "```experiment.py" or "```python experiment.py" does.
        tokens = name.lstrip("`").split()
        name = tokens[-1] if tokens else ""
        if "." not in name and "/" not in name:
            return None
    name = name.rstrip(":").lstrip("#").strip().strip("`").strip("*").strip()
    name = name.replace("\\_", "_")
    if not name:
        return None
    if any(c.isspace() for c in name):
        return _path_token(name)
    return name


def _path_token(text: str) -> str | None:
    """The one path-looking word in a prose line such as `Update experiment.py:`."""
    words = [w.strip("`*:,;()'\"") for w in text.split()]
    paths = [w for w in words if re.fullmatch(r"[\w./-]*[\w-]\.[\w]+|[\w.-]+/[\w./-]+", w)]
    return paths[0] if len(paths) == 1 else None


def _find_filename(before: list[str], known: tuple[str, ...]) -> str | None:
    """Look back up to 3 lines: the file name, possibly behind fences (```python)."""
    names = []
    for line in reversed(before[-3:]):
        name = _strip_filename(line)
        if name:
            names.append(name)
        if not line.strip().startswith(FENCE):
            break
    for name in names:  # prefer a file the caller knows, then its basename, then anything
        if name in known:
            return name
    for name in names:
        for k in known:
            if PurePosixPath(k).name == name:
                return k
    return names[0] if names else None


def find_blocks(reply: str, known: Iterable[str] = (), *, aider_compat: bool = False) -> ParsedReply:
    """Every SEARCH/REPLACE block in an LLM reply; malformed ones go to `problems`, not exceptions.

    `known` (file names the caller expects) only breaks ties when several names precede a block.
    `aider_compat`: end a REPLACE part at a second `=======` line, as aider (0.57 and later) does,
    ignoring the rest up to `>>>>>>> REPLACE`; for replaying old logs. Otherwise such a line is
    kept as text (notes.txt may hold one), so nothing the model wrote is lost.
    """
    known = tuple(known)
    lines = reply.replace("\r\n", "\n").splitlines(keepends=True)  # CRLF replies match LF files
    parsed = ParsedReply()
    current: str | None = None
    i = 0
    while i < len(lines):
        if UPDATED_RE.match(lines[i]):
            parsed.problems.append(
                f"line {i + 1}: `>>>>>>> REPLACE` without a `<<<<<<< SEARCH` and `=======` before it.")
            i += 1
            continue
        if not HEAD_RE.match(lines[i]):
            i += 1
            continue
        start = i
        name = _find_filename(lines[max(0, i - 3):i], known) or current
        current = name  # a later block without a name means this file, even if this one is broken
        search, i, stop = _collect(lines, i + 1, DIVIDER_RE)
        if stop != "marker":
            parsed.problems.append(_unfinished(start, name, "=======", stop, i))
            i += 1 if stop == "updated" else 0
            continue
        replace, i, stop = _collect(lines, i + 1, UPDATED_RE, aider_compat)
        if stop == "divider":  # aider's block ended here; what follows up to REPLACE is plain text
            while i + 1 < len(lines) and not HEAD_RE.match(lines[i + 1]):
                i += 1
                if UPDATED_RE.match(lines[i]):
                    break
        elif stop != "marker":
            parsed.problems.append(_unfinished(start, name, ">>>>>>> REPLACE", stop, i))
            continue
        i += 1
        if name is None:
            parsed.problems.append(
                f"line {start + 1}: the SEARCH/REPLACE block has no file name; put the file's path "
                f"alone on the line before the opening fence.")
            continue
        parsed.blocks.append(EditBlock(name, "".join(search), "".join(replace), start + 1))
    return parsed


def _collect(lines: list[str], i: int, marker: re.Pattern,
             divider_ends: bool = False) -> tuple[list[str], int, str]:
    """Lines up to `marker`; stops early at a marker that cannot belong to this block."""
    body = []
    while i < len(lines):
        line = lines[i]
        if marker.match(line):
            return body, i, "marker"
        if divider_ends and DIVIDER_RE.match(line):
            return body, i, "divider"
        if HEAD_RE.match(line):
            return body, i, "head"
        if marker is DIVIDER_RE and UPDATED_RE.match(line):
            return body, i, "updated"
        body.append(line)
        i += 1
    return body, i, "end"


def _unfinished(start: int, name: str | None, wanted: str, stop: str, at: int) -> str:
    where = {"end": "the reply ended",
             "head": f"a new `<<<<<<< SEARCH` began at line {at + 1}",
             "updated": f"`>>>>>>> REPLACE` came at line {at + 1}"}[stop]
    of = f" for {name}" if name else ""
    return (f"line {start + 1}: the SEARCH/REPLACE block{of} is missing its `{wanted}` line "
            f"({where}); nothing of it was applied.")


# ---------------------------------------------------------------- finding whole files

_OPEN_FENCE = re.compile(r"^(`{3,})[^`]*$")
# A name alone on its line: a path with an extension (`notes.txt`, `harness/evaluate.py`), not a
# number (`0.75`) or a version (`v2.0`), so a result shown in a fence is never taken for a file.
_LONE_PATH = re.compile(r"(?:[\w.-]+/)*[\w.-]*\w\.[A-Za-z]\w*")


def _lone_filename(line: str) -> str | None:
    """The file name a line holds and nothing else (`experiment.py`, **experiment.py**,
    `experiment.py`, ### experiment.py:), or None: prose that mentions a file names none."""
    name = line.strip()
    for _ in range(2):  # decorations nest: **`experiment.py`**:
        name = name.strip("*`").rstrip(":").lstrip("#").strip()
    name = name.replace("\\_", "_")
    return name if _LONE_PATH.fullmatch(name) else None


def _closing_fence(lines: list[str], start: int, fence: str) -> int | None:
    """The line that closes a fence opened before `start`. A fence with a language inside it
    (```python in a markdown notes.txt) opens a nested block whose bare ``` is not the end."""
    depth = 0
    for j in range(start, len(lines)):
        line = lines[j].strip()
        if line == fence:
            if depth == 0:
                return j
            depth -= 1
        elif line.startswith(fence) and _OPEN_FENCE.match(line) and line[len(fence):].strip():
            depth += 1
    return None


def has_markers(reply: str) -> bool:
    """Whether the reply holds any SEARCH/REPLACE marker line (then it is read as a diff only)."""
    return any(r.match(line) for line in reply.splitlines() for r in (HEAD_RE, DIVIDER_RE, UPDATED_RE))


def find_whole_files(reply: str, known: Iterable[str] = ()) -> tuple[list[WholeFile], list[str]]:
    """aider's whole format: every fenced block whose line before holds only a file name.

    Returns the files, with the name resolved against `known` (a basename such as `evaluate.py`
    for `harness/evaluate.py`), and problems: a named fence the reply never closes. A reply with
    SEARCH/REPLACE markers holds no whole file: its fences wrap the blocks.
    """
    if has_markers(reply):
        return [], []
    known = tuple(known)
    lines = reply.replace("\r\n", "\n").splitlines(keepends=True)
    found, problems = [], []
    i = 0
    while i < len(lines):
        opening = _OPEN_FENCE.match(lines[i].rstrip("\n"))
        if not opening:
            i += 1
            continue
        fence = opening.group(1)
        end = _closing_fence(lines, i + 1, fence)
        name = _lone_filename(lines[i - 1]) if i > 0 else None
        if name is not None:
            name = _find_filename([name], known) or name
            if end is None:
                problems.append(f"line {i + 1}: the whole file {name} has no closing {fence} (the reply "
                                "ended first); nothing of it was applied.")
            else:
                found.append(WholeFile(name, "".join(lines[i + 1:end]), i + 1))
        i = len(lines) if end is None else end + 1  # a fence's own lines are never names or fences
    return found, problems


# ---------------------------------------------------------------- replacing text


def replace_once(content: str, search: str, replace: str) -> str | None:
    """`content` with `search` replaced by `replace` once, or None when it matches nowhere."""
    found = _replace(content, search, replace)
    return found[0] if found else None


def unwrap(text: str, path: str | None = None) -> str:
    """A SEARCH or REPLACE text as aider's editblock coder uses it (`strip_quoted_wrapping`).

    aider drops a first line that ends with the file's name and a fence wrapped around the
    whole text, then rejoins the lines, which drops the text's last newline before restoring one:
    a text ending in blank lines loses one of them. So `foo\n\n` searches for `foo\n`, and a
    deletion written that way leaves the blank line where it was, as it did in aider.
    """
    if not text:
        return text
    lines = text.splitlines()
    if path and lines and lines[0].strip().endswith(PurePosixPath(path).name):
        lines = lines[1:]
    if len(lines) >= 2 and lines[0].startswith(FENCE) and lines[-1].startswith(FENCE):
        lines = lines[1:-1]
    out = "\n".join(lines)
    return out + "\n" if out and not out.endswith("\n") else out


def _replace(content: str, search: str, replace: str, path: str | None = None) -> tuple[str, str] | None:
    """(new content, how it matched): exact, then leading whitespace, then `...` elision."""
    search, replace = unwrap(search, path), unwrap(replace, path)
    if not search.strip():
        return _append(content, replace), "appended"
    whole = _lines(content)
    part, repl = _lines(search), _lines(replace)
    for candidate in (part, part[1:] if len(part) > 2 and not part[0].strip() else None):
        if not candidate:
            continue  # the second try drops a spurious leading blank line, as aider does
        done = _exact(whole, candidate, repl)
        if done is not None:
            return done, "exact match"
        done = _shifted(whole, candidate, repl)
        if done is not None:
            return done, "matched with different indentation"
    done = _elided(_ensure_newline(content), _ensure_newline(search), _ensure_newline(replace))
    if done is not None:
        return done, "matched around `...` elisions"
    return None


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _lines(text: str) -> list[str]:
    return _ensure_newline(text).splitlines(keepends=True)


def _append(content: str, addition: str) -> str:
    return _ensure_newline(content) + addition


def _exact(whole: list[str], part: list[str], repl: list[str]) -> str | None:
    n = len(part)
    for i in range(len(whole) - n + 1):
        if whole[i:i + n] == part:
            return "".join(whole[:i] + repl + whole[i + n:])
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _shifted(whole: list[str], part: list[str], repl: list[str]) -> str | None:
    """Match when every SEARCH line is off by the same indentation; shift REPLACE alike."""
    widths = [_indent(x) for x in part + repl if x.strip()]
    cut = min(widths, default=0)
    part = [x[cut:] if x.strip() else x for x in part]
    repl = [x[cut:] if x.strip() else x for x in repl]
    n = len(part)
    for i in range(len(whole) - n + 1):
        prefix = _common_prefix(whole[i:i + n], part)
        if prefix is not None:
            moved = [prefix + x if x.strip() else x for x in repl]
            return "".join(whole[:i] + moved + whole[i + n:])
    return None


def _common_prefix(window: list[str], part: list[str]) -> str | None:
    """The one indentation that turns `part` into `window`, or None."""
    if any(w.lstrip() != p.lstrip() for w, p in zip(window, part)):
        return None
    prefixes = {w[:len(w) - len(p)] for w, p in zip(window, part) if w.strip()}
    if len(prefixes) != 1:
        return None
    prefix = prefixes.pop()
    return prefix if not prefix.strip() else None


def _elided(content: str, search: str, replace: str) -> str | None:
    """Apply a pair whose both sides elide code with matching `...` lines, piece by piece.

    Each SEARCH piece must occur exactly once; otherwise the whole block fails (a guess would
    silently edit the wrong place).
    """
    s_pieces, r_pieces = DOTS_RE.split(search), DOTS_RE.split(replace)
    if len(s_pieces) == 1 or len(s_pieces) != len(r_pieces):
        return None
    if DOTS_RE.findall(search) != DOTS_RE.findall(replace):
        return None
    for s, r in zip(s_pieces, r_pieces):
        if not s and not r:
            continue
        if not s:
            content = _append(content, r)
            continue
        if content.count(s) != 1:
            return None
        content = content.replace(s, r, 1)
    return content


# ---------------------------------------------------------------- which files may be written


def normalize_path(rel: str) -> str | None:
    """A reply's path as a clean relative POSIX path, or None when it escapes (absolute, `..`)."""
    rel = rel.strip().replace("\\", "/")
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or rel.startswith("~"):
        return None
    if ".." in PurePosixPath(rel).parts:
        return None
    norm = posixpath.normpath(rel)
    return None if norm == "." else norm


def allowed(rel: str, editable: Iterable[str]) -> str | None:
    """The normalized path when the template lets the LLM edit it; entries ending in / are folders."""
    norm = normalize_path(rel)
    if norm is None:
        return None
    for entry in editable:
        entry = entry.strip().replace("\\", "/")
        if entry.endswith("/") and norm.startswith(entry):
            return norm
        if norm == posixpath.normpath(entry):
            return norm
    return None


def safe_path(workspace: Path, rel: str, editable: Iterable[str] = DEFAULT_EDITABLE) -> Path:
    """The absolute path to write for `rel`; raises EditRefused for anything the loop must not touch.

    The only function here that looks at the disk: a symlink (or a symlinked folder) could point
    a permitted name at a file outside the workspace.
    """
    norm = allowed(rel, editable)
    if norm is None:
        raise EditRefused(_refusal(rel, editable))
    root = Path(workspace).resolve()
    target = root / norm
    if target.is_symlink():
        raise EditRefused(f"{rel} is a symlink; the loop writes only regular files in the workspace.")
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise EditRefused(f"{rel} resolves to {resolved}, outside the workspace {root}.")
    return target


def protected_path(rel: str, protected: Iterable[str]) -> bool:
    """Whether `rel` is one of the template's protected files (entries ending in / are folders)."""
    norm = normalize_path(rel)
    if norm is None:
        return False
    for entry in protected:
        entry = posixpath.normpath(entry.strip().replace("\\", "/"))
        if norm == entry or norm.startswith(entry + "/"):
            return True
    return False


def _refusal(rel: str, editable: Iterable[str], protected: Iterable[str] = ()) -> str:
    names = ", ".join(editable)
    if normalize_path(rel) is None:
        return f"{rel} is outside the workspace; only these files may be edited: {names}."
    if protected_path(rel, protected):
        return (f"{rel} is protected, not editable (the harness is read-only): nothing was written to "
                f"it or to any other file in its place; only these files may be edited: {names}.")
    return f"{rel} is not editable in this template; only these files may be edited: {names}."


# ---------------------------------------------------------------- applying a whole reply


def apply_reply(reply: str, files: dict[str, str], editable: Iterable[str] = DEFAULT_EDITABLE, *,
                aider_compat: bool = False, edit_format: str = "diff",
                protected: Iterable[str] = ()) -> tuple[dict[str, str], list[EditOutcome]]:
    """Apply every block of `reply` to `files` (path -> text) in order.

    Returns the texts of the files that changed or were created, and one outcome per block
    (plus one per malformed block). A failed block leaves its file as the earlier blocks left it.
    With `edit_format` "whole" or "auto", a reply without SEARCH/REPLACE blocks may instead give
    files whole. A block or file addressed to a `protected` path is refused, never redirected.
    """
    editable, protected = tuple(editable), tuple(protected)
    known = tuple(files) + editable
    parsed = find_blocks(reply, known=known, aider_compat=aider_compat)
    current = dict(files)
    outcomes = [EditOutcome("", EditStatus.MALFORMED, p, None) for p in parsed.problems]
    for block in parsed.blocks:
        outcomes.append(_apply_block(block, current, editable, protected))
    if edit_format != "diff":
        whole, problems = find_whole_files(reply, known)
        outcomes += [EditOutcome("", EditStatus.MALFORMED, p, None) for p in problems]
        outcomes += [_apply_whole(w, current, editable, protected) for w in whole]
    changed = {p: t for p, t in current.items() if files.get(p) != t}
    outcomes.sort(key=lambda o: _reply_line(o))
    return changed, outcomes


def _apply_whole(whole: WholeFile, current: dict[str, str], editable: tuple[str, ...],
                 protected: tuple[str, ...]) -> EditOutcome:
    path = allowed(whole.path, editable)
    if path is None:
        return EditOutcome(whole.path, EditStatus.REFUSED, _refusal(whole.path, editable, protected), whole)
    if not whole.content.strip():  # as aider: an edit that empties a file is a mistake, not a wish
        return EditOutcome(path, EditStatus.MALFORMED, f"line {whole.line}: the whole file {path} is empty; "
                           "nothing was applied.", whole)
    content = _ensure_newline(whole.content)
    how = "created" if path not in current else (
        "unchanged" if current[path] == content else "replaced")
    current[path] = content
    return EditOutcome(path, EditStatus.APPLIED, f"{path}: {how} by the whole file in the reply", whole)


def _reply_line(outcome: EditOutcome) -> int:
    if outcome.block is not None:
        return outcome.block.line
    match = re.match(r"line (\d+)", outcome.message)
    return int(match.group(1)) if match else 0


def _apply_block(block: EditBlock, current: dict[str, str], editable: tuple[str, ...],
                 protected: tuple[str, ...] = ()) -> EditOutcome:
    path = allowed(block.path, editable)
    if path is None and (protected_path(block.path, protected) or normalize_path(block.path) is None):
        # Never redirected: a harness edit that lands in plot.py is a change nobody asked for.
        return EditOutcome(block.path, EditStatus.REFUSED, _refusal(block.path, editable, protected), block)
    if path is not None and path not in current and not block.search.strip():
        current[path] = unwrap(block.replace, path)
        return EditOutcome(path, EditStatus.APPLIED, f"created {path}", block)
    done = _replace(current[path], block.search, block.replace, path) if path in current else None
    if done is not None and done[0]:  # aider counts an edit that empties the file as failed
        current[path] = done[0]
        return EditOutcome(path, EditStatus.APPLIED, f"{done[1]} in {path}", block)
    moved = _elsewhere(block, path, current, editable)
    if moved is not None:
        return moved
    if path is None:
        return EditOutcome(block.path, EditStatus.REFUSED, _refusal(block.path, editable), block)
    if path not in current:
        return EditOutcome(path, EditStatus.FAILED, f"{path} does not exist; to create it, use an "
                           "empty SEARCH section.", block)
    return EditOutcome(path, EditStatus.FAILED, _no_match(block, path, current[path]), block)


def _elsewhere(block: EditBlock, path: str | None, current: dict[str, str],
               editable: tuple[str, ...]) -> EditOutcome | None:
    """aider's fallback: a block whose SEARCH matches nowhere in the file it names (a name carried
    over from the previous block, a file that is not editable or does not exist) is applied to
    the one other editable file where it does match. Matching in several is not guessed at."""
    if not block.search.strip():
        return None
    found = []
    for other, text in current.items():
        if other == path or allowed(other, editable) is None:
            continue
        done = _replace(text, block.search, block.replace, other)
        if done is not None and done[0]:
            found.append((other, done))
    if len(found) != 1:
        return None
    other, (text, how) = found[0]
    current[other] = text
    return EditOutcome(other, EditStatus.APPLIED, f"{how} in {other}, not in {block.path} as the block "
                       f"says: its SEARCH text matches only in {other} (aider's fallback)", block)


def _no_match(block: EditBlock, path: str, content: str) -> str:
    text = f"This SEARCH block failed to exactly match lines in {path}"
    similar = closest_lines(block.search, content)
    if similar:
        text += (f"\nDid you mean to match some of these actual lines from {path}?\n\n"
                 f"{FENCE}\n{similar}\n{FENCE}")
    if block.replace.strip() and block.replace in content:
        text += f"\nAre you sure you need this SEARCH/REPLACE block?\nThe REPLACE lines are already in {path}!"
    return text


# closest_lines does O(file) cheap work, then compares at most this many windows in full, each on at
# most CHAR_LIMIT characters a side exactly (beyond, with difflib's junk heuristic: on long texts of
# repeated characters such as indentation, exact matching is quadratic): bounded, whatever the sizes.
CANDIDATE_WINDOWS = 8
CHAR_LIMIT = 600
_WORD = re.compile(r"\w+")


def closest_lines(search: str, content: str, threshold: float = 0.6, context: int = 3) -> str:
    """The run of real lines most like `search`, with a few lines of context; "" if none is close.

    Every window of the file is scored in one pass by the SEARCH lines and words it shares
    (a rolling sum, so a 4,000-line file costs 4,000 steps, not 4,000 diffs); only the best few
    are then compared properly, by characters, so `l1_penalty = 0.4` still finds
    `l1_penalty = 0.04`. Indentation is ignored when comparing.
    """
    want = [x.strip() for x in search.splitlines()]
    have_raw = content.splitlines()
    have = [x.strip() for x in have_raw]
    n = len(want)
    if not n or not have:
        return ""
    best, best_i = 0.0, 0
    for i in _candidate_windows(want, have, CANDIDATE_WINDOWS):
        ratio = _similarity(want, have[i:i + n], best)
        if ratio > best:
            best, best_i = ratio, i
    if best < threshold:
        return ""
    lo, hi = max(0, best_i - context), min(len(have_raw), best_i + n + context)
    return "\n".join(have_raw[lo:hi])


def _candidate_windows(want: list[str], have: list[str], keep: int) -> list[int]:
    """Start lines of the `keep` windows of len(want) lines sharing most lines, then words, with want."""
    lines = set(x for x in want if x)
    words = set(_WORD.findall(" ".join(want)))
    # Per file line: a shared whole line outweighs any number of shared words.
    weight = [(1000 if x in lines else 0) + len(words.intersection(_WORD.findall(x))) for x in have]
    n = min(len(want), len(have))
    total = sum(weight[:n])
    scores = [(total, 0)]
    for i in range(1, len(have) - n + 1):
        total += weight[i + n - 1] - weight[i - 1]
        scores.append((total, -i))
    return [-i for _, i in heapq.nlargest(keep, scores)]


def _similarity(want: list[str], window: list[str], beat: float) -> float:
    """difflib's ratio of the two texts by characters; on long texts with its junk heuristic, which
    ignores very frequent characters (indentation) and so stays fast."""
    a, b = "\n".join(want), "\n".join(window)
    matcher = difflib.SequenceMatcher(None, b, a, autojunk=len(a) + len(b) > 2 * CHAR_LIMIT)
    if matcher.real_quick_ratio() <= beat or matcher.quick_ratio() <= beat:
        return 0.0
    return matcher.ratio()


# ---------------------------------------------------------------- telling the LLM


def feedback(outcomes: Iterable[EditOutcome]) -> str:
    """The next user turn about edits that did not apply; "" when every edit applied.

    Those that did apply are listed with the file each really went to: aider's fallback may have
    applied a block to another file than the one it named, and the coder must hear which.
    """
    outcomes = list(outcomes)
    failed = [o for o in outcomes if o.status == EditStatus.FAILED]
    refused = [o for o in outcomes if o.status == EditStatus.REFUSED]
    malformed = [o for o in outcomes if o.status == EditStatus.MALFORMED]
    applied = [o for o in outcomes if o.status == EditStatus.APPLIED]
    if not (failed or refused or malformed):
        return ""
    parts = []
    if failed:
        parts.append(_failed_text(failed))
    if refused:
        parts.append(f"# {_n(refused)} refused!\n\n" + "\n".join(
            f"- {o.message}" for o in refused))
    if malformed:
        how = ("Each block is: the file path alone on a line, a fence, `<<<<<<< SEARCH`, the existing "
               "lines, `=======`, the new lines, `>>>>>>> REPLACE`, the closing fence.")
        if any(isinstance(o.block, WholeFile) for o in malformed):
            how = ("A whole file is: the file path alone on a line, a fence, every line of the new "
                   "file, the closing fence.")
        parts.append(f"# {_n(malformed)} could not be parsed!\n\n" + "\n".join(
            f"- {o.message}" for o in malformed) + f"\n\n{how}")
    bad = failed + refused + malformed
    if applied:
        were = "was" if len(applied) == 1 else "were"
        where = "\n".join(f"- line {o.block.line}: {o.message}" if o.block else f"- {o.message}"
                          for o in applied)
        parts.append(f"# The other {_n(applied)} {were} applied successfully.\n{where}\n"
                     f"Don't re-send them.\nJust reply with fixed versions of the "
                     f"{_noun(bad, len(bad), short=True)} above.")
    return "\n\n".join(parts) + "\n"


def _noun(outcomes: list[EditOutcome], count: int, short: bool = False) -> str:
    """`SEARCH/REPLACE block(s)` (`block(s)` when short), or `edit(s)` once a whole file is among them."""
    whole = any(isinstance(o.block, WholeFile) for o in outcomes)
    noun = "edit" if whole else "block" if short else "SEARCH/REPLACE block"
    return noun + ("" if count == 1 else "s")


def _n(outcomes: list[EditOutcome]) -> str:
    return f"{len(outcomes)} {_noun(outcomes, len(outcomes))}"


def _failed_text(failed: list[EditOutcome]) -> str:
    text = f"# {_n(failed)} failed to match!\n"
    for o in failed:
        b = o.block
        text += (f"\n## SearchReplaceNoExactMatch: {o.message.splitlines()[0]}\n"
                 f"<<<<<<< SEARCH\n{_ensure_newline(b.search)}=======\n"
                 f"{_ensure_newline(b.replace)}>>>>>>> REPLACE\n")
        rest = "\n".join(o.message.splitlines()[1:])
        if rest:
            text += f"\n{rest}\n"
    return text + ("\nThe SEARCH section must exactly match an existing block of lines including all "
                   "white space, comments, indentation, docstrings, etc")
