#!/usr/bin/env bash
# Developer setup, idempotent: OS packages, then the venv (made with the interpreter PL/Python
# embeds, so one venv serves the server, the CLI and the tests) and the extension files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
PY=$(PYTHONPATH=. python3 -m sqlml.devcluster python)
VENV=$(PYTHONPATH=. "$PY" -m sqlml.devcluster setup | tail -n 1)
SQLML_SERVER_PYTHON="$PY" bash scripts/integrations.sh   # dbt's venv, Triton's config schema
echo "setup: ok: server Python $PY, venv $VENV, extension files in $("$VENV/bin/python" -c 'from sqlml.install import extension_dir; print(extension_dir())')"
