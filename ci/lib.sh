# Process and port helpers shared by the harnesses (ci/keystone, ci/swift). Sourced, not
# executed; the sourcing lib.sh sets HARNESS_NAME first (the prefix of its log lines).
# shellcheck shell=bash

log() { printf '[%s %s] %s\n' "${HARNESS_NAME:-harness}" "$(date +%H:%M:%S)" "$*" >&2; }
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

# Does anything accept TCP connections on 127.0.0.1:$1? (no curl/ss/nc needed; the harnesses
# listen on loopback only)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
