#!/usr/bin/env bash
# Set everything up, lint, then run the test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/lint-imports --no-cache > /tmp/medfoundry-lint-imports.$$ 2>&1 || {  # the layering (pyproject)
  cat /tmp/medfoundry-lint-imports.$$; rm -f /tmp/medfoundry-lint-imports.$$; exit 1; }
rm -f /tmp/medfoundry-lint-imports.$$
echo "lint-imports: import layering kept"
exec .venv/bin/python -m pytest "$@"
