#!/usr/bin/env bash
# Run the whole test suite (slow tests included) in the project's virtual environment.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_browser.sh  # Debian chromium for tests/test_dashboard_browser.py
VENV="${ONLINE_DT_VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
