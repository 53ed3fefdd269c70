#!/usr/bin/env bash
# Stops the cluster ci/postgres/start.sh started in STATE_DIR (its files stay for the caller
# to remove).
set -euo pipefail
STATE="${1:?usage: stop.sh STATE_DIR}"
[ -f "$STATE/bin" ] || exit 0
BIN="$(cat "$STATE/bin")"
runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null 2>&1 || true
