#!/usr/bin/env bash
# Install a real OpenStack Swift (from PyPI) into a venv, and Debian's memcached.
#
#   ci/swift/setup.sh
#
# Env:
#   SWIFT_VENV    venv path (default ~/.cache/imagemeta/swift-venv)
#   SWIFT_PYTHON  interpreter used to create the venv (default python3, must be >= 3.10: eventlet 0.41)
#
# Idempotent: a stamp file in the venv records the hash of requirements.txt +
# constraints.txt; when it matches, swift imports and memcached is on PATH, nothing is done.
# Only wheels are installed (--only-binary): lxml, pyeclib (liberasurecode) and xattr
# bring their C libraries inside their wheels, so no compiler, -dev package, liberasurecode
# or xfsprogs is needed. Debian packages it may install: memcached (tempauth keeps its tokens
# there), and python3-venv when the interpreter lacks ensurepip.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive

REQS="$SWIFT_HARNESS_DIR/requirements.txt"
CONS="$SWIFT_HARNESS_DIR/constraints.txt"
STAMP="$SWIFT_VENV/.imagemeta-swift-stamp"
t0=$(date +%s)

command -v "$SWIFT_PYTHON" >/dev/null || die "$SWIFT_PYTHON not found"
"$SWIFT_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "the pinned eventlet 0.41 needs Python >= 3.10; $SWIFT_PYTHON is $("$SWIFT_PYTHON" -V 2>&1)"

want="$(cat "$REQS" "$CONS" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && command -v memcached >/dev/null \
   && "$SWIFT_VENV/bin/python" -c 'import swift.proxy.server' 2>/dev/null; then
  log "venv $SWIFT_VENV already up to date ($(grep -E '^swift==' "$REQS")), memcached present; nothing to do"
  exit 0
fi

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "need Debian packages ($*) but apt-get is unavailable"
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  log "apt-get install $*"
  # policy-rc.d may refuse to start the packaged service; start.sh runs its own memcached anyway
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v memcached >/dev/null; then
  apt_install memcached
  command -v memcached >/dev/null || die "memcached still not on PATH after apt-get install"
fi

# Debian's python3 ships without ensurepip unless python3-venv is installed.
if ! "$SWIFT_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  pyver="$("$SWIFT_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv
fi

if [ ! -x "$SWIFT_VENV/bin/python" ] || ! "$SWIFT_VENV/bin/python" -c 'import pip' 2>/dev/null; then
  log "creating venv $SWIFT_VENV with $("$SWIFT_PYTHON" -V 2>&1)"
  rm -rf "$SWIFT_VENV"
  mkdir -p "$(dirname "$SWIFT_VENV")"
  "$SWIFT_PYTHON" -m venv "$SWIFT_VENV"
else
  log "reusing venv $SWIFT_VENV"
fi

log "pip install $(grep -vE '^\s*(#|$)' "$REQS" | tr '\n' ' ')(constraints: $(grep -cvE '^\s*(#|$)' "$CONS") pins, wheels only)"
"$SWIFT_VENV/bin/pip" install --quiet --only-binary :all: -r "$REQS" -c "$CONS"

"$SWIFT_VENV/bin/python" - <<'PY'
import importlib.metadata as md
for d in ("swift", "eventlet", "PasteDeploy", "lxml", "pyeclib", "xattr"):
    print(f"  {d}=={md.version(d)}")
# the modules the harness runs, s3api included
import swift.account.server, swift.container.server, swift.obj.server, swift.proxy.server  # noqa
import swift.common.middleware.s3api.s3api, swift.common.middleware.slo  # noqa
PY
log "  $(memcached -V)"
echo "$want" > "$STAMP"
log "setup done in $(( $(date +%s) - t0 ))s; venv: $SWIFT_VENV"
