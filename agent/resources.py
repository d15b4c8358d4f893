"""Where the shipped templates and ideas are: inside the installed package (the wheel ships them as
`agent/templates`, `agent/ideas`), else in the checkout beside `agent/` (a clone, an editable install)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    installed = PACKAGE / name
    return installed if installed.is_dir() else PACKAGE.parent / name


def templates_dir() -> Path:
    return _shipped("templates")


def ideas_dir() -> Path:
    return _shipped("ideas")
