#!/usr/bin/env bash
# Install a real OpenStack Keystone (from PyPI) + gunicorn into a venv.
#
#   ci/keystone/setup.sh
#
# Env:
#   KEYSTONE_VENV    venv path (default ~/.cache/imagemeta/keystone-venv)
#   KEYSTONE_PYTHON  interpreter used to create the venv (default python3, must be >= 3.11)
#
# Idempotent: a stamp file in the venv records the hash of requirements.txt +
# constraints.txt; when it matches and keystone imports, nothing is done.
# Only wheels are installed (--only-binary), so no compiler or -dev packages
# are needed. The only Debian package it may install is python3-venv, when the
# interpreter lacks ensurepip (Debian's own python3 without python3-venv).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive

REQS="$KEYSTONE_HARNESS_DIR/requirements.txt"
CONS="$KEYSTONE_HARNESS_DIR/constraints.txt"
STAMP="$KEYSTONE_VENV/.imagemeta-keystone-stamp"
t0=$(date +%s)

command -v "$KEYSTONE_PYTHON" >/dev/null || die "$KEYSTONE_PYTHON not found"
"$KEYSTONE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "keystone 30 needs Python >= 3.11; $KEYSTONE_PYTHON is $("$KEYSTONE_PYTHON" -V 2>&1)"

want="$(cat "$REQS" "$CONS" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$KEYSTONE_VENV/bin/python" -c 'import keystone, gunicorn' 2>/dev/null \
   && [ -x "$KEYSTONE_VENV/bin/keystone-manage" ] && [ -x "$KEYSTONE_VENV/bin/gunicorn" ]; then
  log "venv $KEYSTONE_VENV already up to date ($(grep -E '^keystone==' "$REQS")); nothing to do"
  exit 0
fi

# Debian's python3 ships without ensurepip unless python3-venv is installed.
if ! "$KEYSTONE_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  command -v apt-get >/dev/null || die "$KEYSTONE_PYTHON lacks venv/ensurepip and apt-get is unavailable"
  pyver="$("$KEYSTONE_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  log "interpreter lacks ensurepip: apt-get install python3-venv python${pyver}-venv"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv "python${pyver}-venv" \
    || apt-get install -y -qq --no-install-recommends python3-venv
fi

if [ ! -x "$KEYSTONE_VENV/bin/python" ] || ! "$KEYSTONE_VENV/bin/python" -c 'import pip' 2>/dev/null; then
  log "creating venv $KEYSTONE_VENV with $("$KEYSTONE_PYTHON" -V 2>&1)"
  rm -rf "$KEYSTONE_VENV"
  mkdir -p "$(dirname "$KEYSTONE_VENV")"
  "$KEYSTONE_PYTHON" -m venv "$KEYSTONE_VENV"
else
  log "reusing venv $KEYSTONE_VENV"
fi

log "pip install $(grep -vE '^\s*(#|$)' "$REQS" | tr '\n' ' ')(constraints: $(grep -cvE '^\s*(#|$)' "$CONS") pins, wheels only)"
# One pip process; it is network/IO bound, so it stays polite next to a parallel cargo build.
"$KEYSTONE_VENV/bin/pip" install --quiet --only-binary :all: -r "$REQS" -c "$CONS"

"$KEYSTONE_VENV/bin/python" - <<'PY'
import importlib.metadata as md
for d in ("keystone", "gunicorn", "keystonemiddleware", "keystoneauth1", "oslo.policy", "SQLAlchemy"):
    print(f"  {d}=={md.version(d)}")
import keystone.wsgi  # noqa: F401  (the app itself is imported by gunicorn later)
PY
echo "$want" > "$STAMP"
log "setup done in $(( $(date +%s) - t0 ))s; venv: $KEYSTONE_VENV"
