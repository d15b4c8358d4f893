"""Rule: fatal pyflakes messages (undefined names, ...) that the edit added."""

from __future__ import annotations

import functools
import re
from collections import Counter

import pyflakes.messages as flake_messages
from pyflakes.checker import Checker

from agent.checks.core import Finding, Rule, Source, parse

# pyflakes messages that mean the code fails when the line runs; style findings (unused imports,
# redefinitions) are left to linters, so the gate never blocks on taste.
_FATAL = tuple(getattr(flake_messages, name) for name in (
    "UndefinedName", "UndefinedLocal", "UndefinedExport", "DuplicateArgument",
    "ReturnOutsideFunction", "YieldOutsideFunction", "ContinueOutsideLoop", "BreakOutsideLoop",
    "DefaultExceptNotLast", "TwoStarredExpressions", "TooManyExpressionsInStarredAssignment",
    "ForwardAnnotationSyntaxError", "FutureFeatureNotDefined", "LateFutureImport",
    "PercentFormatInvalidFormat", "PercentFormatMixedPositionalAndNamed",
    "PercentFormatUnsupportedFormatCharacter", "PercentFormatPositionalCountMismatch",
    "PercentFormatMissingArgument", "PercentFormatExpectedMapping", "PercentFormatExpectedSequence",
    "PercentFormatStarRequiresSequence", "StringDotFormatInvalidFormat",
    "StringDotFormatMissingArgument", "StringDotFormatMixingAutomatic",
) if hasattr(flake_messages, name))

_WHY = {
    "UndefinedName": "the run would stop with NameError when this line executes; import or define it",
    "UndefinedLocal": "the run would stop with UnboundLocalError: the name is read before this "
                      "function assigns it",
}


@functools.lru_cache(maxsize=16)
def fatal_flakes(source: str) -> tuple:
    checker = Checker(parse(source), withDoctest=False)
    return tuple(m for m in checker.messages if isinstance(m, _FATAL))


def _code(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", kind).lower()  # UndefinedName -> undefined-name


def _key(message) -> tuple:
    return type(message).__name__, tuple(map(str, message.message_args))


def undefined_names(src: Source) -> list[Finding]:
    """Fatal pyflakes messages the edit added; compared by kind and name, not by line."""
    new = fatal_flakes(src.text)
    budget = Counter(_key(m) for m in fatal_flakes(src.old)) if src.old else Counter()
    findings = []
    # Messages on lines the edit wrote are the likelier culprits, so they use up the budget last.
    for m in sorted(new, key=lambda m: (src.is_added(m.lineno), m.lineno)):
        key = _key(m)
        if budget[key] > 0:
            budget[key] -= 1
            continue
        code = _code(key[0])
        why = _WHY.get(key[0], "Python raises an error when this line runs")
        findings.append(src.finding(m.lineno, code, m.message % m.message_args, why))
    return findings


RULE = Rule("pyflakes", tuple(_code(m.__name__) for m in _FATAL), undefined_names,
            "fatal pyflakes messages (undefined names, return outside a function, ...) the edit added")
