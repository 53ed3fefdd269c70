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
if [ -f "$STATE/port" ]; then
    # Started before and stopped: start the same cluster on the same port again.
    PORT="$(cat "$STATE/port")"
    runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/log" -w -t 60 start >/dev/null
    echo "postgres://postgres@127.0.0.1:$PORT/postgres"
    exit 0
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
runuser -u postgres -- "$BIN/initdb" -D "$STATE/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null

# TLS: a test CA ($STATE/root.crt, for sslrootcert) and a server certificate it signed for
# 127.0.0.1 (openssl is on the machine; python's cryptography is not assumed).
if command -v openssl >/dev/null 2>&1; then
    (
        cd "$STATE"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imagemeta test CA" \
            -keyout root.key -out root.crt
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout data/server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > server.ext
        openssl x509 -req -in server.csr -CA root.crt -CAkey root.key -CAcreateserial -days 2 \
            -extfile server.ext -out data/server.crt
    ) >/dev/null 2>&1
    chown postgres "$STATE/data/server.key" "$STATE/data/server.crt"
    chmod 600 "$STATE/data/server.key"
    SSL=on
else
    SSL=""
fi

# The settings live in the cluster, so that a restart (above) takes them again.
cat >> "$STATE/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$STATE'
max_connections = 300
$( [ -n "$SSL" ] && echo "ssl = on" )
CONF
runuser -u postgres -- "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/log" -w -t 60 start >/dev/null
echo "$PORT" > "$STATE/port"
echo "$BIN" > "$STATE/bin"
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
