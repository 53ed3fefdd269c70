#!/usr/bin/env bash
# A second Swift proxy, behind a real Keystone, in front of the Swift that ci/swift/start.sh
# runs for STATE_DIR: the `authtoken` and `keystoneauth` middlewares (keystonemiddleware), as
# a Swift with Keystone is deployed. Registers it in Keystone's catalog as `object-store`.
#
#   ci/swift/start_keystone_proxy.sh SWIFT_STATE KEYSTONE_STATE
#
# KEYSTONE_STATE: a running Keystone from ci/keystone/start.sh with the fixtures of
# ci/keystone/bootstrap_fixtures.py (its service user validates tokens; the project members
# are Swift operators). Prints, as its last line, JSON: the proxy's URL, the Keystone v3 URL,
# and a user, password and project to store image data as. ci/swift/stop.sh stops it with
# the rest.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 2 ] || die "usage: $0 SWIFT_STATE KEYSTONE_STATE"
STATE="$(cd "$1" && pwd -P)"
KS_STATE="$(cd "$2" && pwd -P)"
ETC="$STATE/etc"
RUN="$STATE/run"
LOGD="$STATE/log"
PY="$SWIFT_VENV/bin/python"
[ -f "$STATE/ports" ] || die "no Swift at $STATE: run ci/swift/start.sh first"
is_ours "$(cat "$RUN/proxy-server.pid" 2>/dev/null)" "$STATE" || die "the Swift of $STATE is not running"
KEYSTONE_URL="$(sed -n 's/^KEYSTONE_URL=//p' "$KS_STATE/keystone.env")"
[ -n "$KEYSTONE_URL" ] || die "no KEYSTONE_URL in $KS_STATE/keystone.env"
read -r SVC_USER SVC_PASSWORD SVC_PROJECT < <("$PY" -c \
  'import json, sys; u = json.load(open(sys.argv[1]))["service_user"]; print(u["name"], u["password"], u["project"])' \
  "$KS_STATE/fixtures.json")

if is_ours "$(cat "$RUN/proxy-server-keystone.pid" 2>/dev/null)" "$STATE"; then
  PORT="$(cat "$STATE/keystone-proxy-port")"
  log "the Keystone proxy already runs on :$PORT"
else
  PORT="$(free_ports 1)"
  echo "$PORT" >"$STATE/keystone-proxy-port"
  sed -e "s/^bind_port = .*/bind_port = $PORT/" \
      -e "s/^log_name = proxy-server/log_name = proxy-server-keystone/" \
      -e "s/^pipeline = .*/pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats authtoken keystoneauth copy slo dlo proxy-logging proxy-server/" \
      "$ETC/proxy-server.conf" >"$ETC/proxy-server-keystone.conf"
  cat >>"$ETC/proxy-server-keystone.conf" <<EOF

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $SVC_USER
password = $SVC_PASSWORD
project_name = $SVC_PROJECT
user_domain_id = default
project_domain_id = default
delay_auth_decision = False
# the harness Keystone has public endpoints only
interface = public

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_prefix = AUTH_
EOF
  echo "=== start_keystone_proxy.sh $(date -u +%FT%TZ) ===" >>"$LOGD/proxy-server-keystone.log"
  ( cd "$STATE"; exec setsid "$PY" "$SWIFT_HARNESS_DIR/launch.py" proxy-server "$ETC/proxy-server-keystone.conf" \
      >>"$LOGD/proxy-server-keystone.log" 2>&1 </dev/null ) &
  echo $! >"$RUN/proxy-server-keystone.pid"
  for _ in $(seq 1 150); do
    port_open "$PORT" && break
    is_ours "$(cat "$RUN/proxy-server-keystone.pid")" "$STATE" \
      || { tail -n 25 "$LOGD/proxy-server-keystone.log" >&2; die "the Keystone proxy exited"; }
    sleep 0.1
  done
  port_open "$PORT" || die "the Keystone proxy did not listen on :$PORT"
fi
URL="http://$SWIFT_HOST:$PORT"

# The catalog entry (replacing an earlier one), then a login through it as a project member:
# a token, the endpoint from the catalog, and an account HEAD through the proxy.
"$PY" - "$KEYSTONE_URL" "$URL" "$KS_STATE" <<'PY'
import json, sys, time, urllib.error, urllib.request
ks, url, state = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]

def call(method, path, body=None, token=None, base=ks):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, status, headers = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, e.headers
    return status, headers, (json.loads(raw) if raw.strip() and raw.lstrip()[:1] in b"{[" else raw)

def login(user, password, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    status, headers, doc = call("POST", "/v3/auth/tokens", body)
    assert status == 201, (status, doc)
    return headers["X-Subject-Token"], doc["token"]

admin, _ = login("admin", "admin-secret", "admin")
_, _, services = call("GET", "/v3/services?type=object-store", token=admin)
for s in services["services"]:
    call("DELETE", f"/v3/services/{s['id']}", token=admin)
_, _, created = call("POST", "/v3/services", {"service": {"type": "object-store", "name": "swift"}}, token=admin)
call("POST", "/v3/endpoints", {"endpoint": {"service_id": created["service"]["id"], "interface": "public",
     "region_id": "RegionOne", "url": url + "/v1/AUTH_$(project_id)s"}}, token=admin)

fixtures = json.load(open(f"{state}/fixtures.json"))
user = fixtures["users"]["alpha-member"]
deadline = time.monotonic() + 30
while True:
    token, doc = login(user["name"], user["password"], user["project"])
    stores = [e["url"] for s in doc.get("catalog", []) if s["type"] == "object-store"
              for e in s["endpoints"] if e["interface"] == "public"]
    status = 0
    if stores:
        status, _, _ = call("HEAD", "", token=token, base=stores[0])
    if status in (200, 204):
        break
    if time.monotonic() > deadline:
        sys.exit(f"no account HEAD through the Keystone proxy: {stores} -> {status}")
    time.sleep(0.2)
print(json.dumps({"proxy": url, "auth_url": ks + "/v3", "user": user["name"],
                  "password": user["password"], "project": user["project"],
                  "storage_url": stores[0]}))
PY
