"""What a template promises the loop: which files the LLM may edit, which it must not, how to run it."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

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
    # The baseline frontier: the unmodified template at other settings of one sparsity knob, so a
    # run is compared with the baseline at its own L0 ({"sparsity_penalty": [0.75, 3.0]}).
    frontier: dict[str, list[float]] = field(default_factory=dict)
    # Per profile, for --executor slurm: {"partition": "gpu", "gpus": 1, "cpus": 8, "mem_gb": 64,
    # "time_min": 90, "account": "..."}; the --slurm-* flags override it.
    slurm: dict[str, dict] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name

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
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise TemplateError(f"{source} must hold a JSON object")
    return Template(
        root=Path(root),
        editable=tuple(spec.get("editable", DEFAULT_EDITABLE)),
        protected=tuple(spec.get("protected", ())),
        command=tuple(spec.get("command", DEFAULT_COMMAND)),
        profiles=tuple(spec.get("profiles", ())),
        default_profile=spec.get("default_profile"),
        gpu_profile=spec.get("gpu_profile"),
        env_allow=dict(spec.get("env_allow", {})),
        smoke_profiles=tuple(spec["smoke_profiles"]) if "smoke_profiles" in spec else None,
        limits=dict(spec.get("limits", {})),
        network_profiles=tuple(spec.get("network", ())),
        baseline_seeds=tuple(int(s) for s in spec.get("baseline_seeds", (0,))),
        frontier={k: list(v) for k, v in spec.get("frontier", {}).items()},
        slurm=dict(spec.get("slurm", {})),
    )
