#!/usr/bin/env bash
# Set up a CPU-only virtual environment in .venv with everything the agent and the
# template need. Idempotent: a second run only checks. Works offline from PyPI alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap boxes the generated code (agent/sandbox.py). Installed where apt can (root); elsewhere
# runs fall back to the staged box, loudly.
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }) \
    || echo "setup: could not install bubblewrap; generated code will run in the staged fallback box"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python

# Pins (constraints.txt) keep torch at 2.13.0 and numpy/datasets where sae-bench needs them. The
# CPU build of torch comes from a local wheel folder where the machine has one (PIP_FIND_LINKS or
# /opt/wheels); PyPI alone serves the (much larger) CUDA build, which also runs on a CPU.
FIND_LINKS=()
[ -z "${PIP_FIND_LINKS:-}" ] && [ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
"$VPY" -m pip install -q "${FIND_LINKS[@]}" -c constraints.txt torch==2.13.0
"$VPY" -m pip install -q -c constraints.txt -e ".[test,track]"
# Without their dependencies (what the code uses of those is listed in pyproject.toml):
# sae-bench requires torchvision, whose PyPI wheel breaks `import transformer_lens` beside the
# CPU torch; sae-probes pulls xgboost and NCCL (~700 MB) though only its bundled data is read.
"$VPY" -m pip install -q -c constraints.txt --no-deps "sae-bench==0.6.0" "sae-probes==0.4.2"
"$VPY" -m pip uninstall -q -y torchvision 2>/dev/null || true

LITELLM_LOCAL_MODEL_COST_MAP=True "$VPY" -c "import agent, torch, transformer_lens, sae_bench, litellm, git, rich, sae_bench.evals.sparse_probing.main" \
  && echo "setup: .venv ready (torch $("$VPY" -c 'import torch; print(torch.__version__)'))"
