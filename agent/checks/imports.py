"""Rule: every import resolves for the run's interpreter (asked once, nothing imported)."""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import subprocess
import sys

from agent.checks.core import Finding, Rule, Source, statements


def _unresolved(names: list[str], search_path: str | None) -> list[str]:
    """The module names among `names` that the running interpreter cannot find.

    Self-contained (imports inside): it is also sent as source to the run's interpreter. Nothing is
    imported (importing torch takes seconds): a top-level name goes through the import system's
    finders, a submodule is looked for as a file or folder in its parent package's folders.
    """
    import importlib.machinery
    import importlib.util
    import os
    import sys

    suffixes = importlib.machinery.all_suffixes()

    def top_level(name):
        """The folders of the package `name`, [] for a plain module, None when absent."""
        spec = importlib.machinery.PathFinder.find_spec(name, [search_path]) if search_path else None
        try:
            spec = spec or importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return []  # imported already without a spec (e.g. __main__): it exists
        if spec is None:
            return None
        folders = spec.submodule_search_locations
        # A namespace package's path recomputes itself from sys.modules; read its folder list.
        return list(getattr(folders, "_path", folders) or [])

    def inside(folders, name):
        """Like top_level, for a submodule of a package with those folders."""
        found = [os.path.join(f, name) for f in folders if os.path.isdir(os.path.join(f, name))]
        if found:
            return found
        if any(os.path.isfile(os.path.join(f, name) + s) for f in folders for s in suffixes):
            return []
        return None

    missing = []
    for name in names:
        parts = name.split(".")
        folders = top_level(parts[0])
        for depth in range(1, len(parts)):
            if folders is None or ".".join(parts[:depth + 1]) in sys.modules:
                break
            if not folders:
                folders = []  # a plain module's "submodule" (os.path, six.moves): set at run time
                break
            folders = inside(folders, parts[depth])
        if folders is None:
            missing.append(name)
    return missing


def imported_modules(tree: ast.Module) -> list[tuple[str, ast.stmt, bool, bool]]:
    """(module, statement, always runs, guarded by try/except ImportError) per import.

    "Always runs" means directly in the module body: the run fails there for sure.
    """
    top = {id(stmt) for stmt in tree.body}
    found = []
    for stmt, in_function, guarded in statements(tree.body):
        if isinstance(stmt, ast.Import):
            modules = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            modules = [stmt.module]
        else:
            continue
        found += [(m, stmt, id(stmt) in top, guarded) for m in modules if m != "__future__"]
    return found


def _same_interpreter(python: str | None) -> bool:
    if python is None:
        return True
    found = shutil.which(python) or python
    return os.path.abspath(found) == os.path.abspath(sys.executable)


def _missing_modules(names: list[str], python: str | None, search_path: str | None) -> list[str]:
    """Ask the run's interpreter once for all names; raises OSError/ValueError when it cannot."""
    if _same_interpreter(python):
        return _unresolved(names, search_path)
    code = (inspect.getsource(_unresolved)
            + "\nimport json, sys\nprint(json.dumps(_unresolved(json.loads(sys.argv[1]), sys.argv[2] "
              "or None)))\n")
    done = subprocess.run([python, "-c", code, json.dumps(names), search_path or ""],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else
                         f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def unresolved_imports(src: Source) -> list[Finding]:
    imports = [i for i in imported_modules(src.tree) if not i[3]]
    names = sorted({module for module, *_ in imports})
    if not names:
        return []
    try:
        missing = set(_missing_modules(names, src.python, src.search_path))
    except (OSError, ValueError, subprocess.SubprocessError, json.JSONDecodeError) as err:
        return [src.finding(1, "import-check-failed", f"could not check imports with {src.python}: {err}",
                            "imports are unverified; a missing module will only show when the run "
                            "starts", blocking=False)]
    interpreter = src.python or sys.executable
    findings = []
    for module, node, always, _ in imports:
        added = src.is_added(node.lineno, node.end_lineno)
        if module not in missing or not (always or added or src.added is None):
            continue  # an old import under an `if` or in a function may sit on a path never taken
        blocking = always or (added and src.added is not None)
        findings.append(src.finding(
            node.lineno, "unresolved-import", f"module '{module}' is not installed for {interpreter}",
            "the run would stop with ModuleNotFoundError; use an installed package or write the code",
            blocking))
    return findings


RULE = Rule("imports", ("unresolved-import", "import-check-failed"), unresolved_imports,
            "every import resolves for the run's interpreter")
