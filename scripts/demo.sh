#!/usr/bin/env bash
# Run the main job on the embedded default model (builds it first if it is not cached).
# Extra arguments go to `online-dt train-offline`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ONLINE_DT_VENV:-.venv}"
exec "$VENV/bin/online-dt" train-offline --config configs/offline.yaml "$@"
