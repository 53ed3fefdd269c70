#!/usr/bin/env bash
# Stop everything ci/swift/start.sh started for STATE_DIR.
#
#   ci/swift/stop.sh STATE_DIR
#
# SIGTERM to each process (newest first), up to 10 s grace in all, then SIGKILL to the
# process groups still alive. Keeps STATE_DIR (data, rings, logs), so `start.sh STATE_DIR`
# brings the same Swift back. Exits 0 when nothing was running. Only ever signals pids
# recorded in STATE_DIR/run/*.pid that still belong to this state dir (each was started under
# setsid: pid == process-group id, so a forked updater child goes with its parent).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE_DIR"
[ -d "$1" ] || die "no such state dir: $1"
STATE="$(cd "$1" && pwd -P)"
RUN="$STATE/run"

order=""
for svc in $SWIFT_SERVICES; do order="$svc $order"; done

targets=()        # pids (== pgids) we signalled
for svc in $order; do
  pidfile="$RUN/$svc.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  case "$pid" in ''|*[!0-9]*) log "garbage in $pidfile; removing it"; rm -f "$pidfile"; continue;; esac
  if is_ours "$pid" "$STATE"; then
    log "stopping $svc (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    targets+=("$pid")
  elif ! pid_alive "$pid" && group_alive "$pid"; then
    log "$svc (pid $pid) gone but its process group lingers; terminating it"
    kill -TERM -- "-$pid" 2>/dev/null || true
    targets+=("$pid")
  else
    # dead, or the pid now belongs to some unrelated process: touch nothing
    rm -f "$pidfile"
  fi
done

if [ "${#targets[@]}" -eq 0 ]; then
  log "nothing running for $STATE"
  rm -f "$RUN"/*.pid
  exit 0
fi

left=("${targets[@]}")
for _ in $(seq 1 100); do                      # up to ~10 s
  still=()
  for pid in "${left[@]}"; do
    if pid_alive "$pid" || group_alive "$pid"; then still+=("$pid"); fi
  done
  [ "${#still[@]}" -eq 0 ] && break
  left=("${still[@]}")
  sleep 0.1
done
for pid in "${still[@]}"; do
  log "pid $pid still alive after 10 s: SIGKILL to its process group"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
done
[ "${#still[@]}" -gt 0 ] && sleep 0.5
rm -f "$RUN"/*.pid

if [ -f "$STATE/ports" ]; then
  for p in $(cat "$STATE/ports"); do
    port_open "$p" && log "warning: 127.0.0.1:$p still accepts connections (some other process?)"
  done
fi
log "swift stopped ($STATE kept)"
