#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on a free loopback port: initdb and pg_ctl as the
# `postgres` user (both refuse to run as root), no systemd. Installs Debian's `postgresql`
# first when it is missing. Serves TLS too (a self-signed certificate), for sslmode tests.
#
#   ci/postgres/start.sh STATE_DIR
#
# The last line printed is the server's URL, postgres://postgres@127.0.0.1:PORT/postgres
# (trust authentication: for tests only). Stop it with ci/postgres/stop.sh STATE_DIR.
set -euo pipefail
STATE="${1:?usage: start.sh STATE_DIR}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "[postgres] installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q postgresql >/dev/null
    }
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres

mkdir -p "$STATE"
chown postgres "$STATE"
chmod 700 "$STATE"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
runuser -u postgres -- "$BIN/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null

# A self-signed certificate for TLS (python's cryptography is not assumed: openssl is).
if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
        -keyout "$STATE/data/server.key" -out "$STATE/data/server.crt" >/dev/null 2>&1
    chown postgres "$STATE/data/server.key" "$STATE/data/server.crt"
    chmod 600 "$STATE/data/server.key"
    SSL="-c ssl=on"
else
    SSL=""
fi

runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE -c max_connections=300 $SSL" start >/dev/null
echo "$PORT" > "$STATE/port"
echo "$BIN" > "$STATE/bin"
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
