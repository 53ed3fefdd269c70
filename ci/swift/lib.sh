# Shared settings for the ci/swift scripts. Sourced, not executed.
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this file
SWIFT_HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
SWIFT_VENV="${SWIFT_VENV:-${HOME:-/root}/.cache/imagemeta/swift-venv}"
SWIFT_PYTHON="${SWIFT_PYTHON:-python3}"
# Only loopback, ever. Not configurable on purpose.
SWIFT_HOST=127.0.0.1
# Everything start.sh runs, in start order (stop.sh stops them in reverse).
SWIFT_SERVICES="memcached account-server container-server object-server proxy-server container-updater object-updater"

log() { printf '[swift-harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Is $1 a live process? (a zombie, e.g. under a PID 1 that does not reap, is not)
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  line="${line##*) }"
  [ "${line:0:1}" != Z ]
}

# Is any non-zombie process left in process group $1? (kill -0 -PGID counts zombies)
group_alive() {
  local f line st pgid _
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    read -r st _ pgid _ <<<"${line##*) }"
    [ "$pgid" = "$1" ] && [ "$st" != Z ] && return 0
  done
  return 1
}

# Does anything accept TCP connections on 127.0.0.1:$1? (no curl/ss/nc needed)
port_open() { (exec 3<>"/dev/tcp/${SWIFT_HOST}/$1") 2>/dev/null; }

# Is pid $1 a live process that start.sh started for state dir $2 (guards against a
# recycled pid)? Every command line start.sh runs names a file inside the state dir.
is_ours() {
  pid_alive "${1:-}" || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/" || return 1
}

# $n free TCP ports on 127.0.0.1, space separated, all different (the sockets are held
# open together while the kernel picks them).
free_ports() {
  "$SWIFT_VENV/bin/python" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
