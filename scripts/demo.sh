#!/usr/bin/env bash
# Run the main job: the online decision-transformer loop on the embedded default model, on a
# local Ray instance (builds the embedded model first if it is not cached). Each call starts a
# new run directory under runs/. Extra arguments go to `online-dt run`, e.g. --set online.iterations=10
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${ONLINE_DT_VENV:-.venv}"
exec "$VENV/bin/online-dt" run --config configs/default.yaml \
  --set "online.run_dir=runs/default-$(date +%Y%m%d-%H%M%S)" "$@"
