#!/usr/bin/env bash
# Install tempest (from PyPI, pinned) into a venv.
#
#   ci/tempest/setup.sh
#
# Env: TEMPEST_VENV (default ~/.cache/imagemeta/tempest-venv), TEMPEST_PYTHON (default python3).
# Idempotent: a stamp in the venv records the hash of requirements.txt + constraints.txt. Wheels
# only. Needs python3 with venv/ensurepip (ci/keystone/setup.sh installs python3-venv if missing,
# and runs first in .ci/run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
TEMPEST_VENV="${TEMPEST_VENV:-${HOME:-/root}/.cache/imagemeta/tempest-venv}"
TEMPEST_PYTHON="${TEMPEST_PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log() { printf '[tempest-harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

want="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)"
STAMP="$TEMPEST_VENV/.imagemeta-tempest-stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$TEMPEST_VENV/bin/tempest" ]; then
  log "venv $TEMPEST_VENV up to date ($(grep -E '^tempest==' "$HERE/requirements.txt"))"
  exit 0
fi
if [ ! -x "$TEMPEST_VENV/bin/python" ]; then
  log "creating venv $TEMPEST_VENV"
  mkdir -p "$(dirname "$TEMPEST_VENV")"
  "$TEMPEST_PYTHON" -m venv "$TEMPEST_VENV"
fi
log "pip install $(grep -vE '^\s*(#|$)' "$HERE/requirements.txt" | tr '\n' ' ')(wheels only)"
"$TEMPEST_VENV/bin/pip" install --quiet --only-binary :all: -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"
echo "$want" >"$STAMP"
log "tempest $("$TEMPEST_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("tempest"))') ready"
