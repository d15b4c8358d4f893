"""One attempt as a typed record: its `Status`, and the commit trailers it is written as.

`Attempt.to_trailers()` is the one place an attempt's trailers are formatted (`Duration: 12.3s`,
`Cost: $0.0123`, ...) and `Attempt.from_trailers()` the one place they are parsed back, so the
loop, the baseline, `resume` and `import` write what `log`, `show` and `export` read. Trailers
the record has no field for (a user's own, `Edits:` from an import) are kept in `extra`, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    """Every status an attempt's `Status:` trailer holds; the values are what old workspaces say."""
    BASELINE = "baseline"            # run 0: the unmodified template
    SUCCESS = "success"              # ran and left usable results
    FAILED = "failed"                # ran and failed, or left no usable results, or tampered
    UNTRAINED = "untrained"          # the baseline ran but its SAE looks untrained
    GATE_FAILED = "gate-failed"      # refused before running: a gate finding, a file that already failed
    EDIT_FAILED = "edit-failed"      # edit blocks did not apply
    NO_EDITS = "no-edits"            # the reply changed nothing that runs
    INTERRUPTED = "interrupted"      # stopped by the user or lost by the cluster
    NOTES = "notes"                  # the write-up after the last run
    NOTES_MISSING = "notes-missing"  # the write-up was asked for and not written
    UNKNOWN = "unknown"              # no or an unrecognised `Status:` trailer (the text is kept)


# Attempts whose code was executed, and those among them that left results to compare.
RAN = frozenset({Status.SUCCESS, Status.BASELINE, Status.UNTRAINED, Status.FAILED, Status.INTERRUPTED})
WITH_RESULTS = frozenset({Status.SUCCESS, Status.BASELINE, Status.UNTRAINED})
NOTES = frozenset({Status.NOTES, Status.NOTES_MISSING})

# The order trailers are written in; any others follow in the order given.
TRAILER_ORDER = ("Run", "Attempt", "Status", "Duration", "Model", "Cost", "Tokens", "Error",
                 "Profile", "Signature", "Tampered", "Sandbox", "Executor", "Slurm-Job", "Results-SHA256")
# The commit that puts back the files of a refused edit is no attempt (no `Run:`); it names the
# attempt it undoes.
RESTORES = "Restores"

# Field name → trailer key, for the plain text fields.
_TEXT = {"model": "Model", "error": "Error", "profile": "Profile", "signature": "Signature",
         "tampered": "Tampered", "sandbox": "Sandbox", "executor": "Executor", "slurm_job": "Slurm-Job",
         "results_sha256": "Results-SHA256"}
_KNOWN = set(TRAILER_ORDER)


@dataclass
class Attempt:
    run: int
    attempt: int
    status: Status
    # Where it was committed: set when read back from the history, empty when about to be written.
    sha: str = ""
    subject: str = ""
    date: datetime | None = None
    duration: float | None = None    # seconds
    model: str | None = None
    cost: float | None = None        # dollars of the reply behind it; None: no reply, or unpriced
    tokens: int | None = None        # prompt + completion tokens of that reply
    error: str | None = None
    profile: str | None = None
    signature: str | None = None     # the failure's comparison key ("the same error twice")
    tampered: str | None = None      # what the run changed outside its output folder (put back)
    sandbox: str | None = None       # the box it ran in
    executor: str | None = None      # where it ran (local, slurm)
    slurm_job: str | None = None
    results_sha256: str | None = None
    # Other trailers, kept as they were (a user's own; a known one whose value did not parse).
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`2.1`: how a user names this attempt on the command line."""
        return f"{self.run}.{self.attempt}"

    @property
    def short_sha(self) -> str:
        return self.sha[:8]

    @property
    def trailers(self) -> dict[str, str]:
        return self.to_trailers()

    def to_trailers(self) -> dict[str, str]:
        """`Key: value` pairs for the commit message; empty fields are left out."""
        out = {"Run": str(self.run), "Attempt": str(self.attempt), "Status": str(self.status)}
        if self.duration is not None:
            out["Duration"] = f"{self.duration:.1f}s"
        if self.cost is not None:
            out["Cost"] = f"${self.cost:.4f}"
        if self.tokens is not None:
            out["Tokens"] = str(self.tokens)
        for name, key in _TEXT.items():
            value = getattr(self, name)
            if value is not None and str(value) != "":
                out[key] = str(value)
        out.update(self.extra)  # an unparsed known value is written back as it was read
        return out

    @classmethod
    def from_trailers(cls, trailers: dict[str, str], *, sha: str = "", subject: str = "",
                      date: datetime | None = None) -> Attempt:
        """The record a commit's trailers describe; what does not parse is kept in `extra`."""
        t = {k: str(v).strip() for k, v in trailers.items() if v is not None}
        extra = {k: v for k, v in t.items() if k not in _KNOWN}
        # A value that does not parse is kept as written, so writing the record back loses nothing.
        parsed = {"Run": _int(t.get("Run")), "Attempt": _int(t.get("Attempt")),
                  "Duration": _number(t.get("Duration"), suffix="s"),
                  "Cost": _number(t.get("Cost"), prefix="$"), "Tokens": _int(t.get("Tokens"))}
        for key, value in parsed.items():
            if value is None and t.get(key):
                extra[key] = t[key]
        status = _status(t.get("Status"))
        if status is Status.UNKNOWN and t.get("Status"):
            extra["Status"] = t["Status"]
        return cls(run=parsed["Run"] if parsed["Run"] is not None else 0,
                   attempt=parsed["Attempt"] or 0, status=status, sha=sha, subject=subject, date=date,
                   duration=parsed["Duration"], cost=parsed["Cost"], tokens=parsed["Tokens"],
                   extra=extra, **{name: t.get(key) or None for name, key in _TEXT.items()})


def restores_trailers(run: int, attempt: int) -> dict[str, str]:
    """The trailers of the commit that puts back a refused edit's files."""
    return {RESTORES: f"{run}.{attempt}"}


def _status(text: str | None) -> Status:
    try:
        return Status(text)
    except ValueError:
        return Status.UNKNOWN


def _int(text) -> int | None:
    try:
        return int(str(text).strip().replace(",", ""))
    except (TypeError, ValueError):
        return None


def _number(text: str | None, prefix: str = "", suffix: str = "") -> float | None:
    if text is None:
        return None
    text = text.strip()
    if prefix and text.startswith(prefix):
        text = text[len(prefix):]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    try:
        return float(text)
    except ValueError:
        return None
