"""What a template promises the loop: which files the LLM may edit, which it must not, how to run it."""

from __future__ import annotations

from typing import Annotated

import difflib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_EDITABLE = ("experiment.py", "plot.py", "notes.txt")
DEFAULT_COMMAND = ("{python}", "experiment.py", "--out_dir={out_dir}")
IGNORED = {"__pycache__", ".pytest_cache", ".git"}


class TemplateError(Exception):
    pass


@dataclass
class Template:
    root: Path
    editable: tuple[str, ...] = DEFAULT_EDITABLE
    protected: tuple[str, ...] = ()
    command: tuple[str, ...] = DEFAULT_COMMAND
    profiles: tuple[str, ...] = ()
    default_profile: str | None = None
    gpu_profile: str | None = None
    env_allow: dict[str, list[str]] = field(default_factory=dict)
    smoke_profiles: tuple[str, ...] | None = None  # None: smoke-run under every profile
    # Per profile: {"address_space_gb": N, "cpu_seconds": N}. RLIMIT_AS breaks CUDA, which reserves
    # huge virtual ranges: set it for CPU profiles only.
    limits: dict[str, dict[str, float]] = field(default_factory=dict)
    network_profiles: tuple[str, ...] = ()   # profiles whose runs may reach the network (the hub)
    # The baseline: the unmodified template trained with these seeds (their spread is the noise
    # floor every comparison carries).
    baseline_seeds: tuple[int, ...] = (0,)
    # Per profile, other seeds than `baseline_seeds`: more where a run is cheap and the seed spread
    # is what limits the minimum detectable difference (the cpu profile), fewer where it is costly.
    profile_baseline_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # The baseline frontier: the unmodified template at other settings of one sparsity knob, so a
    # run is compared with the baseline at its own L0 ({"sparsity_penalty": [0.75, 3.0]}).
    frontier: dict[str, list[float]] = field(default_factory=dict)
    # Per profile, another frontier: where the knob's scale differs (an L1 coefficient on a synthetic
    # world is not one on a language model's residual stream).
    profile_frontier: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Reference SAEs trained by the template's protected code at the baseline's own L0 (`{k}` in the
    # command), shown beside every comparison: {"topk": ["{python}", "-m", "harness.reference", ...]}.
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per profile, for --executor slurm: {"partition": "gpu", "gpus": 1, "cpus": 8, "mem_gb": 64,
    # "time_min": 90, "account": "..."}; the --slurm-* flags override it.
    slurm: dict[str, dict] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

    def seeds_for(self, profile: str | None) -> tuple[int, ...]:
        """The baseline's training seeds under `profile` (the first is run_0 itself)."""
        return self.profile_baseline_seeds.get(profile or "", self.baseline_seeds)

    def frontier_for(self, profile: str | None) -> dict[str, list[float]]:
        """The baseline frontier's knob settings under `profile`."""
        return self.profile_frontier.get(profile or "", self.frontier)

    def argv(self, out_dir: str, python: str = sys.executable) -> list[str]:
        return [part.format(python=python, out_dir=out_dir) for part in self.command]

    def display_command(self, out_dir: str = "run_i") -> str:
        return " ".join(self.argv(out_dir, python="python"))

    def choose_profile(self, requested: str | None) -> str | None:
        if requested is None:
            requested = self.gpu_profile if (self.gpu_profile and _cuda_available()) else self.default_profile
        if self.profiles and requested not in self.profiles:
            raise TemplateError(f"template {self.name!r} has no profile {requested!r}; "
                                f"choose one of: {', '.join(self.profiles)}")
        return requested

    def allowed_env(self, profile: str | None) -> list[str]:
        return list(self.env_allow.get(profile or "", []))

    def resource_limits(self, profile: str | None) -> dict[str, int | None]:
        """Keyword arguments for runner.run_experiment."""
        spec = self.limits.get(profile or "", {})
        gb, cpu = spec.get("address_space_gb"), spec.get("cpu_seconds")
        return {"max_memory_bytes": int(gb * 2**30) if gb else None,
                "max_cpu_seconds": int(cpu) if cpu else None}

    def files(self) -> list[Path]:
        """Every file the template ships, relative to its root, in a stable order."""
        return sorted(p.relative_to(self.root) for p in self.root.rglob("*")
                      if p.is_file() and not (IGNORED & set(p.relative_to(self.root).parts))
                      and p.suffix != ".pyc")

    def fingerprint(self) -> str:
        """A hash of the template's content: the baseline cache is keyed by it."""
        digest = hashlib.sha256()
        for rel in self.files():
            digest.update(str(rel).encode() + b"\0" + (self.root / rel).read_bytes() + b"\0")
        return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- template.json schema
# Every key is declared: an unknown one is refused (a misspelt "protected" would otherwise leave
# the harness unprotected), and every value is checked strictly (no "3" for 3).


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LimitsSpec(_Strict):
    address_space_gb: float | None = Field(default=None, gt=0)
    cpu_seconds: float | None = Field(default=None, gt=0)


class SlurmSpec(_Strict):
    partition: str | None = None
    gpus: int | None = Field(default=None, ge=0)
    cpus: int | None = Field(default=None, ge=1)
    mem_gb: float | None = Field(default=None, gt=0)
    time_min: int | None = Field(default=None, ge=1)
    account: str | None = None


class TemplateSpec(_Strict):
    editable: list[str] = Field(default_factory=lambda: list(DEFAULT_EDITABLE))
    protected: list[str] = Field(default_factory=list)
    command: list[str] = Field(default_factory=lambda: list(DEFAULT_COMMAND), min_length=1)
    profiles: list[str] = Field(default_factory=list)
    default_profile: str | None = None
    gpu_profile: str | None = None
    env_allow: dict[str, list[str]] = Field(default_factory=dict)
    smoke_profiles: list[str] | None = None
    limits: dict[str, LimitsSpec] = Field(default_factory=dict)
    network: list[str] = Field(default_factory=list)
    baseline_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    profile_baseline_seeds: dict[str, Annotated[list[int], Field(min_length=1)]] = Field(default_factory=dict)
    frontier: dict[str, list[float]] = Field(default_factory=dict)
    profile_frontier: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    # each command non-empty: an empty one would silently run the template's own command instead
    references: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(default_factory=dict)
    slurm: dict[str, SlurmSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _profiles_are_declared(self) -> "TemplateSpec":
        """Every profile a setting names is one of `profiles`: a typo would silently drop it."""
        declared = set(self.profiles)
        named = [("default_profile", self.default_profile), ("gpu_profile", self.gpu_profile)]
        named += [(f"{key}.{p}", p) for key in ("env_allow", "limits", "slurm", "profile_baseline_seeds",
                                                                   "profile_frontier")
                  for p in getattr(self, key)]
        named += [(f"{key}[{i}]", p) for key in ("smoke_profiles", "network")
                  for i, p in enumerate(getattr(self, key) or ())]
        for where, profile in named:
            if profile is not None and profile not in declared:
                hint = difflib.get_close_matches(profile, self.profiles, n=1)
                raise ValueError(f"{where} names the profile {profile!r}, which is not in 'profiles' "
                                 f"({', '.join(self.profiles) or 'none declared'})"
                                 + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return self


_KEYS_AT = {"limits": LimitsSpec, "slurm": SlurmSpec}  # a mapping of profile -> one of these


def _describe(error: dict, source: str) -> str:
    """One pydantic error as a sentence naming the file, the field and, for a typo, the close match."""
    loc = [str(part) for part in error["loc"]]
    field_name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    if error["type"] == "extra_forbidden":
        model = _KEYS_AT.get(loc[0], TemplateSpec) if len(loc) == 3 else TemplateSpec
        key = loc[-1]
        hint = difflib.get_close_matches(key, list(model.model_fields), n=1)
        where = f" under {'.'.join(loc[:-1])}" if len(loc) > 1 else ""
        return (f"unknown key {key!r}{where} in {source}"
                + (f"; did you mean {hint[0]!r}?" if hint else
                   f"; known keys: {', '.join(model.model_fields)}"))
    if error["type"] == "value_error":  # from _profiles_are_declared: its message says it all
        return f"{source}: {error['msg'].removeprefix('Value error, ')}"
    msg = error["msg"].removeprefix("Input ")
    return f"{source}: {field_name or 'the top level'!r} {msg[0].lower() + msg[1:]} (got {error['input']!r})"


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # no torch, or a broken CUDA install: the CPU profile is the safe choice
        return False


def load_template(root: Path) -> Template:
    root = Path(root)
    spec_file = root / "template.json"
    try:
        text = spec_file.read_text()
    except FileNotFoundError:
        raise TemplateError(f"{root} is not a template: it has no template.json") from None
    return parse_template(root, text, source=str(spec_file))


def parse_template(root: Path, text: str, source: str = "template.json") -> Template:
    """A Template from the text of a template.json (a file, or a workspace's baseline commit)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{source} must hold a JSON object")
    try:
        spec = TemplateSpec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, source) for e in exc.errors()]
        raise TemplateError("\n".join(problems)) from None
    return Template(
        root=Path(root),
        editable=tuple(spec.editable),
        protected=tuple(spec.protected),
        command=tuple(spec.command),
        profiles=tuple(spec.profiles),
        default_profile=spec.default_profile,
        gpu_profile=spec.gpu_profile,
        env_allow={p: list(names) for p, names in spec.env_allow.items()},
        smoke_profiles=tuple(spec.smoke_profiles) if spec.smoke_profiles is not None else None,
        limits={p: l.model_dump(exclude_none=True) for p, l in spec.limits.items()},
        network_profiles=tuple(spec.network),
        baseline_seeds=tuple(spec.baseline_seeds),
        profile_baseline_seeds={p: tuple(seeds) for p, seeds in spec.profile_baseline_seeds.items()},
        # as written (validated as numbers): 1 stays 1, so frontier_dir names the same folder as before
        frontier={k: list(data["frontier"][k]) for k in spec.frontier},
        profile_frontier={p: {k: list(data["profile_frontier"][p][k]) for k in knobs}
                          for p, knobs in spec.profile_frontier.items()},
        references={name: tuple(command) for name, command in spec.references.items()},
        slurm={p: s.model_dump(exclude_none=True) for p, s in spec.slurm.items()},
    )
