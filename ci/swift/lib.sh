# Shared settings for the ci/swift scripts. Sourced, not executed.
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this file
SWIFT_HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
SWIFT_VENV="${SWIFT_VENV:-${HOME:-/root}/.cache/imagemeta/swift-venv}"
SWIFT_PYTHON="${SWIFT_PYTHON:-python3}"
# Only loopback, ever. Not configurable on purpose.
SWIFT_HOST=127.0.0.1
# Everything start.sh runs, in start order (stop.sh stops them in reverse).
SWIFT_SERVICES="memcached account-server container-server object-server proxy-server proxy-server-keystone container-updater object-updater"

HARNESS_NAME=swift-harness
# log, die, pid_alive, group_alive, port_open
# shellcheck source=ci/lib.sh
. "$SWIFT_HARNESS_DIR/../lib.sh"

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
