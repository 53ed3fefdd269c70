#!/usr/bin/env bash
# Stop the Keystone started by start.sh for STATE_DIR (master + worker).
#
#   ci/keystone/stop.sh STATE_DIR
#
# Keeps STATE_DIR (database, keys, log), so `start.sh STATE_DIR` brings the same
# Keystone back. Exits 0 if it was not running. Only ever signals the pid /
# process group recorded in STATE_DIR/keystone.pid.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 STATE_DIR"
STATE="$1"
[ -d "$STATE" ] || die "no such state dir: $STATE"
PIDFILE="$STATE/keystone.pid"

if [ ! -f "$PIDFILE" ]; then
  log "no $PIDFILE: keystone not running"
  exit 0
fi
pid="$(cat "$PIDFILE")"
case "$pid" in ''|*[!0-9]*) rm -f "$PIDFILE"; die "garbage in $PIDFILE";; esac

# start.sh runs gunicorn under setsid, so pid is also the process-group id and
# the worker is in that group. Signal the group only if pid really leads it.
if is_keystone_gunicorn "$pid" "$STATE"; then
  log "stopping keystone pid $pid and its worker"
  kill -INT "$pid" 2>/dev/null || true           # gunicorn: INT = quick shutdown (TERM waits graceful_timeout)
elif ! pid_alive "$pid" && group_alive "$pid"; then
  log "master $pid gone but its process group lingers; terminating it"
  kill -TERM -- "-$pid" 2>/dev/null || true
else
  # dead, or the pid now belongs to some unrelated process: touch nothing
  log "pid $pid is not a running keystone; removing stale pid file"
  rm -f "$PIDFILE"
  exit 0
fi

for _ in $(seq 1 100); do                        # up to ~10s
  if ! pid_alive "$pid" && ! group_alive "$pid"; then break; fi
  sleep 0.1
done
if pid_alive "$pid" || group_alive "$pid"; then
  log "still alive after 10s: SIGKILL to process group $pid"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
fi
rm -f "$PIDFILE"
if port_open "$(cat "$STATE/port" 2>/dev/null || echo 5000)"; then
  log "warning: port $(cat "$STATE/port" 2>/dev/null || echo 5000) still accepts connections (some other process?)"
fi
log "keystone stopped ($STATE kept)"
