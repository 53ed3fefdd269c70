#!/usr/bin/env bash
# End-to-end smoke test of the harness with plain curl; exits non-zero on any surprise.
#
#   ci/keystone/demo.sh [STATE_DIR]
#
# setup -> start -> fixtures -> alpha-member token -> validate with the service
# token -> stop/start (same STATE) -> still valid -> revoke -> 404 -> stop.
# Leaves no Keystone running (trap), keeps STATE_DIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
if ! command -v curl >/dev/null; then
  log "curl missing: apt-get install -y curl"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
fi
PY="$KEYSTONE_VENV/bin/python"

step() { printf '\n=== %s\n' "$*"; }
timed() {
  local t0 t1; t0=$(date +%s%N); "$@"; t1=$(date +%s%N)
  printf -- '--- %d.%02ds: %s\n' $(( (t1 - t0) / 1000000000 )) $(( (t1 - t0) / 10000000 % 100 )) "${*//$HERE\//}"
}

step "setup.sh"
timed "$HERE/setup.sh"

STATE="${1:-$(mktemp -d "${TMPDIR:-/tmp}/imagemeta-keystone.XXXXXX")}"
trap '"$HERE/stop.sh" "$STATE" >/dev/null 2>&1 || true' EXIT

step "start.sh $STATE"
timed "$HERE/start.sh" "$STATE"
step "bootstrap_fixtures.py"
timed "$PY" "$HERE/bootstrap_fixtures.py" "$STATE"

fx() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$STATE/fixtures.json" "$1"; }
KS="$(fx 'd["keystone_url"]')"
ALPHA_ID="$(fx 'd["projects"]["alpha"]["id"]')"

# password auth scoped to a project; prints the X-Subject-Token header
get_token() { # user password project_name
  curl -sS -D - -o /dev/null -X POST "$KS/v3/auth/tokens?nocatalog" \
    -H 'Content-Type: application/json' \
    -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"id\":\"default\"},\"password\":\"$2\"}}},\"scope\":{\"project\":{\"name\":\"$3\",\"domain\":{\"id\":\"default\"}}}}}" \
    | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r'
}
validate() { # prints "HTTP <code> <seconds>" and leaves the body in $STATE/validate.json
  curl -sS -o "$STATE/validate.json" -w 'HTTP %{http_code} %{time_total}s\n' \
    "$KS/v3/auth/tokens?nocatalog" -H "X-Auth-Token: $SVC_TOKEN" -H "X-Subject-Token: $USER_TOKEN"
}

step "tokens"
SVC_TOKEN="$(get_token imagemeta imagemeta-secret service)"
USER_TOKEN="$(get_token alpha-member secret alpha)"
[ -n "$SVC_TOKEN" ] && [ -n "$USER_TOKEN" ] || die "no token"
echo "service token: ${SVC_TOKEN:0:24}... (${#SVC_TOKEN} chars)"
echo "user token:    ${USER_TOKEN:0:24}... (${#USER_TOKEN} chars)"

step "validate alpha-member token with the service token"
r="$(validate)"; echo "$r"; case "$r" in "HTTP 200 "*) ;; *) die "validation: $r";; esac
"$PY" - "$STATE/validate.json" "$ALPHA_ID" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["token"]
assert t["project"]["id"] == sys.argv[2], t["project"]
assert {r["name"] for r in t["roles"]} == {"member", "reader"}, t["roles"]
print(json.dumps({k: t.get(k, "<absent>") for k in
                  ("project", "roles", "expires_at", "issued_at", "is_admin_project", "user", "methods", "audit_ids")},
                 indent=2))
PY

step "stop.sh; validation while Keystone is down"
timed "$HERE/stop.sh" "$STATE"
code="$(curl -s -o /dev/null -w '%{http_code}' "$KS/v3" || true)"
echo "GET /v3 while stopped -> '$code' (000 = connection refused)"
[ "$code" = 000 ] || die "keystone still answering"

step "start.sh again on the same STATE (restart path)"
timed "$HERE/start.sh" "$STATE"
r="$(validate)"; echo "same user token after restart: $r"; case "$r" in "HTTP 200 "*) ;; *) die "after restart: $r";; esac

step "revoke (DELETE /v3/auth/tokens) and validate again"
curl -sS -o /dev/null -w 'DELETE -> HTTP %{http_code}\n' -X DELETE "$KS/v3/auth/tokens" \
  -H "X-Auth-Token: $SVC_TOKEN" -H "X-Subject-Token: $USER_TOKEN"
r="$(validate)"; echo "validate revoked token: $r"; head -c 300 "$STATE/validate.json"; echo
case "$r" in "HTTP 404 "*) ;; *) die "revoked token: $r";; esac

step "stop.sh"
timed "$HERE/stop.sh" "$STATE"
trap - EXIT
echo "demo OK (state kept in $STATE)"
