#!/usr/bin/env bash
# Create .venv and install medfoundry with the CPU build of PyTorch 2.13.0. Idempotent.
# torch is installed first and pinned exactly: an unpinned torch would pull gigabytes of CUDA wheels.
# GPU users: install your CUDA build of torch==2.13.0 into .venv first; it is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_q() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
if ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.13.0'))" 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU build)" >&2
  pip_q "torch==2.13.0"
fi
pip_q -c scripts/constraints.txt -e ".[all,dev]"
.venv/bin/python - <<'PY'
import sys, torch
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"setup: expected torch 2.13.0, found {torch.__version__}")
print(f"setup: ok (torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})", file=sys.stderr)
PY
