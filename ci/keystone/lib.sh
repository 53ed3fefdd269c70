# Shared settings for the ci/keystone scripts. Sourced, not executed.
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this file
KEYSTONE_HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
KEYSTONE_VENV="${KEYSTONE_VENV:-${HOME:-/root}/.cache/imagemeta/keystone-venv}"
KEYSTONE_PYTHON="${KEYSTONE_PYTHON:-python3}"
# Only loopback, ever. Not configurable on purpose.
KEYSTONE_HOST=127.0.0.1

HARNESS_NAME=keystone-harness
# log, die, pid_alive, group_alive, port_open
# shellcheck source=ci/lib.sh
. "$KEYSTONE_HARNESS_DIR/../lib.sh"

# Is $1 a live gunicorn started by start.sh for state dir $2 (guards against a
# recycled pid)? start.sh runs gunicorn with its cwd in the state dir.
is_keystone_gunicorn() {
  pid_alive "${1:-}" || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'bin/gunicorn' || return 1
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$(cd "$2" && pwd -P)" ]
}

# gunicorn settings for Keystone on 127.0.0.1:$1, to stdout; with $2 and $3 (certificate and key
# files) it serves HTTPS. gunicorn reads them from gunicorn.conf.py in its cwd and runs with NO
# command-line arguments. That matters: keystone's WSGI init hands sys.argv to oslo.config,
# which rejects gunicorn's options ("gunicorn: error: unrecognized arguments: --bind ...") and
# kills every worker at boot.
gunicorn_conf() {
  printf '%s\n' \
    'wsgi_app = "keystone.wsgi.api:application"' \
    "bind = [\"${KEYSTONE_HOST}:$1\"]" \
    'workers = 1' \
    'worker_class = "gthread"' \
    "threads = ${KEYSTONE_THREADS:-4}" \
    'timeout = 120' \
    'graceful_timeout = 5' \
    'accesslog = "-"' \
    'errorlog = "-"' \
    '# gunicorn >= 26 otherwise opens a control socket in $HOME/.gunicorn/' \
    'control_socket_disable = True'
  if [ -n "${2:-}" ]; then
    printf 'certfile = "%s"\nkeyfile = "%s"\n' "$2" "$3"
  fi
}

# Starts gunicorn in the background from directory $1 (which holds its gunicorn.conf.py), with
# the keystone.conf of state dir $2, logging to $1/keystone.log; sets KEYSTONE_PID and writes
# it to $1/keystone.pid. setsid: its own session and process group (pgid == pid), so stop.sh
# can take the master and its worker down together without ps/pkill. The subshell is not a
# group leader, so setsid execs in place and the pid is the gunicorn master itself.
launch_gunicorn() {
  (
    cd "$1"
    export OS_KEYSTONE_CONFIG_DIR="$2" OS_KEYSTONE_CONFIG_FILES=keystone.conf
    exec setsid "$KEYSTONE_VENV/bin/gunicorn" >>"$1/keystone.log" 2>&1 </dev/null
  ) &
  KEYSTONE_PID=$!
  echo "$KEYSTONE_PID" >"$1/keystone.pid"
}
