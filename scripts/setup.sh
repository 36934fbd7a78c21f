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
# The web app's viewer: NiiVue's prebuilt browser bundle from the npm registry, pinned, into
# src/medfoundry/serve/static/vendor (git-ignored); the page never loads anything from a CDN.
NIIVUE_VERSION=0.69.0
SWAGGER_UI_VERSION=5.35.0  # the API page (/docs), served from the same folder
VENDOR=src/medfoundry/serve/static/vendor
if [ "$(cat "$VENDOR/VERSIONS" 2>/dev/null)" != "niivue $NIIVUE_VERSION swagger-ui $SWAGGER_UI_VERSION" ]; then
  if command -v npm >/dev/null; then
    tmp=$(mktemp -d)
    if (cd "$tmp" && npm pack --silent "@niivue/niivue@$NIIVUE_VERSION" "swagger-ui-dist@$SWAGGER_UI_VERSION" >/dev/null 2>&1) \
        && tar -xzf "$tmp"/niivue-niivue-"$NIIVUE_VERSION".tgz -C "$tmp" package/dist/niivue.umd.js \
        && tar -xzf "$tmp"/swagger-ui-dist-"$SWAGGER_UI_VERSION".tgz -C "$tmp" package/swagger-ui-bundle.js package/swagger-ui.css; then
      mkdir -p "$VENDOR"
      cp "$tmp/package/dist/niivue.umd.js" "$tmp/package/swagger-ui-bundle.js" "$tmp/package/swagger-ui.css" "$VENDOR/"
      echo "niivue $NIIVUE_VERSION swagger-ui $SWAGGER_UI_VERSION" > "$VENDOR/VERSIONS"
      echo "setup: NiiVue $NIIVUE_VERSION and Swagger UI $SWAGGER_UI_VERSION vendored into $VENDOR" >&2
    else
      echo "setup: warning: could not fetch @niivue/niivue@$NIIVUE_VERSION and swagger-ui-dist with npm; medfoundry serve will have no viewer" >&2
    fi
    rm -rf "$tmp"
  else
    echo "setup: warning: npm not found; medfoundry serve will have no viewer (install Node.js, rerun)" >&2
  fi
fi
# The web app's browser test drives Debian's headless Chromium (a browser cannot be downloaded here).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium and chromium-driver (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >/dev/null 2>&1 || echo "setup: warning: apt-get could not install chromium" >&2
  fi
fi
.venv/bin/python - <<'PY'
import sys, torch
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"setup: expected torch 2.13.0, found {torch.__version__}")
print(f"setup: ok (torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})", file=sys.stderr)
PY
