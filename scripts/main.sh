#!/usr/bin/env bash
# Set everything up, then run the main job. Arguments go to 'medfoundry run' (e.g. --data ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/medfoundry run "$@"
