"""The software a run used: exact package versions, stored as `packages.json` in the workspace, so
`replay` can say when today's environment differs from the one that produced a result."""

from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES_FILE = "packages.json"
# What a result depends on most: differences here are listed first (and always in full).
KEY_PACKAGES = ("torch", "numpy", "scikit-learn", "scipy", "transformers", "transformer-lens",
                "sae-lens", "sae-bench", "sae-probes", "datasets", "pandas", "gguf", "litellm")
SHOWN_OTHERS = 5  # other differing packages named before "and N more"


def normalize(name: str) -> str:
    """PEP 503 name: `Scikit_Learn` and `scikit-learn` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def package_versions() -> dict:
    """This interpreter and every installed distribution: {"python", "platform", "packages"}."""
    packages: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a broken install can leave a dist-info without metadata
            packages.setdefault(normalize(name), dist.version)
    return {"python": platform.python_version(), "implementation": sys.implementation.name,
            "platform": platform.platform(), "packages": dict(sorted(packages.items()))}


def write_packages(folder: Path, versions: dict | None = None) -> Path:
    """`<folder>/packages.json` with the current (or given) versions."""
    path = Path(folder) / PACKAGES_FILE
    path.write_text(json.dumps(versions or package_versions(), indent=2) + "\n", encoding="utf-8")
    return path


def parse_packages(text: str | None) -> dict | None:
    """A stored packages.json, or None when absent or unreadable."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("packages"), dict) else None


@dataclass(frozen=True)
class Difference:
    name: str
    recorded: str | None  # None: not installed then
    current: str | None   # None: not installed now

    def __str__(self) -> str:
        return f"{self.name} {self.recorded or 'absent'} → {self.current or 'absent'}"


def differences(recorded: dict, current: dict | None = None) -> list[Difference]:
    """What changed between two package_versions() records: Python first, then key packages."""
    current = current or package_versions()
    out = []
    if recorded.get("python") and recorded.get("python") != current.get("python"):
        out.append(Difference("python", recorded.get("python"), current.get("python")))
    then = {normalize(k): v for k, v in (recorded.get("packages") or {}).items()}
    now = {normalize(k): v for k, v in (current.get("packages") or {}).items()}
    changed = [n for n in sorted(set(then) | set(now)) if then.get(n) != now.get(n)]
    key = [n for n in KEY_PACKAGES if n in changed]
    rest = [n for n in changed if n not in KEY_PACKAGES]
    return out + [Difference(n, then.get(n), now.get(n)) for n in key + rest]


def describe(diffs: list[Difference]) -> str:
    """One line for people: the key packages in full, then a few others and a count."""
    key = [d for d in diffs if d.name == "python" or d.name in KEY_PACKAGES]
    others = [d for d in diffs if d not in key]
    parts = [str(d) for d in key] + [str(d) for d in others[:SHOWN_OTHERS]]
    if len(others) > SHOWN_OTHERS:
        parts.append(f"and {len(others) - SHOWN_OTHERS} more")
    return ", ".join(parts)
