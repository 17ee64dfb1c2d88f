#!/usr/bin/env bash
# Install Debian's Chromium for the dashboard's browser test (tests/test_dashboard_browser.py).
# Playwright drives /usr/bin/chromium; it never downloads a browser of its own.
# Idempotent: does nothing when /usr/bin/chromium exists. Fails (exit 1) when it cannot install.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "[install_browser] /usr/bin/chromium is missing and this user cannot run apt-get" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[install_browser] /usr/bin/chromium is missing and there is no apt-get here" >&2
  exit 1
fi
echo "[install_browser] installing Debian's chromium (about 1 minute)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium
