#!/usr/bin/env bash
# Run tempest's image tests against imagemeta behind a real Keystone.
#
#   ci/tempest/run.sh KEYSTONE_STATE IMAGEMETA_BINARY
#
# KEYSTONE_STATE: a running Keystone from ci/keystone/start.sh (its admin is admin/admin-secret).
# Starts two imagemeta nodes (--auth keystone, the fixtures' service user) on free loopback
# ports, on one fresh PostgreSQL catalogue (ci/postgres) and the same two file stores, registers
# them in the catalog (the second as `image_remote`, tempest's alternate image endpoint) and
# uploads a public image for `image_ref` (prepare.py), writes a tempest workspace and runs:
#
#   tempest.api.image.v2         Glance v2: images, data, members, tags, schemas, versions, admin
#   tempest.api.compute.images   the Compute API's image and image-metadata calls
#   tempest.api.compute.limits, .test_versions   GET /limits and the version documents
#
# with Glance's predefined metadata definitions loaded first (`imagemeta metadefs load`, as
# devstack runs glance-manage db_load_metadefs), minus what cannot run here (tempest's
# web-download test needs the internet) and the tests that boot servers (ImageDependencyTests, ImagesFormatTest, the
# metadata-limit test of AbsoluteLimitsNegativeTestJSON: they need Nova's compute service); tempest itself skips what needs servers,
# Neutron, locations or store weights. glance-download is offered: its tests import from imagemeta itself, found in the
# catalog under RegionOne as prepare.py registers it. Two file stores (`file`, the default, and `remote`, in
# alphabetical order as tempest's waiters compare them) make its multi-store import, copy-image and delete-from-store
# tests run. One worker: Keystone on SQLite answers 500 ("database is
# locked") when tempest creates credentials in parallel. TEMPEST_REGEX narrows the run (e.g. 'metadefs').
# Exit status: tempest's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
[ $# -eq 2 ] || { echo "usage: $0 KEYSTONE_STATE IMAGEMETA_BINARY" >&2; exit 2; }
STATE="$(cd "$1" && pwd -P)"
BIN="$(cd "$(dirname "$2")" && pwd -P)/$(basename "$2")"
TEMPEST_VENV="${TEMPEST_VENV:-${HOME:-/root}/.cache/imagemeta/tempest-venv}"
PY="$TEMPEST_VENV/bin/python"
log() { printf '[tempest-harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

KEYSTONE_URL="$(sed -n 's/^KEYSTONE_URL=//p' "$STATE/keystone.env")"
SERVICE="$("$PY" -c 'import json, sys; u = json.load(open(sys.argv[1]))["service_user"]; print(u["name"], u["password"], u["project"])' "$STATE/fixtures.json")"
read -r SVC_USER SVC_PASSWORD SVC_PROJECT <<<"$SERVICE"
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
COMPUTE_PORT="$(free_port)"
IMAGE_PORT="$(free_port)"
REMOTE_COMPUTE_PORT="$(free_port)"
REMOTE_IMAGE_PORT="$(free_port)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/imagemeta-tempest.XXXXXX")"
# The catalogue both nodes share: a throwaway PostgreSQL cluster (its state directory apart:
# the postgres user must reach it).
PG_STATE="$(mktemp -d "${TMPDIR:-/tmp}/imagemeta-tempest-pg.XXXXXX")"
PIDS=()
# tempest registers each workspace by name in ~/.tempest/workspace.yaml: a unique one, removed
# again at the end.
WORKSPACE="imagemeta-$(basename "$WORK")"
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  "$TEMPEST_VENV/bin/tempest" workspace remove --name "$WORKSPACE" >/dev/null 2>&1 || true
  "$HERE/../postgres/stop.sh" "$PG_STATE" >/dev/null 2>&1 || true
  rm -rf "$WORK" "$PG_STATE"
}
trap cleanup EXIT

DATABASE="$("$HERE/../postgres/start.sh" "$PG_STATE" | tail -n 1)"
"$BIN" metadefs load --database "$DATABASE" >/dev/null

# Two nodes on the one catalogue and the same two stores, each with its own image cache: the
# second is tempest's alternate image endpoint (`image_remote` in the catalog).
start_node() { # NAME COMPUTE_PORT IMAGE_PORT
  log "imagemeta node $1 on 127.0.0.1:$2 (compute) and :$3 (image), Keystone $KEYSTONE_URL"
  "$BIN" serve --compute-listen "127.0.0.1:$2" --image-listen "127.0.0.1:$3" --admin-listen 127.0.0.1:0 \
    --database "$DATABASE" --image-cache-dir "$WORK/cache-$1" \
    --image-store "file=file://$WORK/images" --image-store "remote=file://$WORK/remote" --default-image-store file \
    --import-methods glance-direct,web-download,copy-image,glance-download \
    --auth keystone --keystone-url "$KEYSTONE_URL" --www-authenticate-uri "$KEYSTONE_URL" \
    --keystone-username "$SVC_USER" --keystone-password "$SVC_PASSWORD" --keystone-project "$SVC_PROJECT" \
    >"$WORK/imagemeta-$1.out" 2>"$WORK/imagemeta-$1.log" &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 100); do
    grep -q "image API listening" "$WORK/imagemeta-$1.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/imagemeta-$1.log" >&2; exit 1; }
    sleep 0.1
  done
}
start_node a "$COMPUTE_PORT" "$IMAGE_PORT"
start_node b "$REMOTE_COMPUTE_PORT" "$REMOTE_IMAGE_PORT"

IMAGE_REF="$("$PY" "$HERE/prepare.py" "$KEYSTONE_URL" admin-secret \
  "http://127.0.0.1:$COMPUTE_PORT/v2.1" "http://127.0.0.1:$IMAGE_PORT" "http://127.0.0.1:$REMOTE_IMAGE_PORT" | tail -n 1)"

cd "$WORK"
"$TEMPEST_VENV/bin/tempest" init --name "$WORKSPACE" ws >/dev/null 2>&1
cat >ws/etc/tempest.conf <<CONF
[DEFAULT]
log_dir = $WORK/ws/logs
log_file = tempest.log

[auth]
admin_username = admin
admin_password = admin-secret
admin_project_name = admin
admin_domain_name = Default
use_dynamic_credentials = True
create_isolated_networks = False

[identity]
uri_v3 = $KEYSTONE_URL/v3
auth_version = v3
region = RegionOne

[identity-feature-enabled]
api_v2 = False

[service_available]
glance = True
nova = True
cinder = False
neutron = False
swift = False

[image]
region = RegionOne
# The second node: tempest's remote import, remote delete and two-node cache tests.
alternate_image_endpoint = image_remote
alternate_image_endpoint_type = publicURL
# The image cache API (GET/PUT/DELETE /v2/cache): tempest's caching cycle.
image_caching_enabled = True
# imagemeta inspects qcow2 data (415 on a mismatch), as Glance's format inspection does;
# ListUserImagesTest uploads random bytes in each of these formats.
disk_formats = ami,ari,aki,vhd,vmdk,raw,vdi,iso,vhdx

[image-feature-enabled]
# glance-direct (stage + import) and the tasks API; web-download is covered by imagemeta's own
# tests (tests/api/glance_import.rs) and the client tests: tempest's needs qcow2 among the
# disk formats above and its cirros URL on the internet.
import_image = True
image_format_enforcement = False

[compute]
region = RegionOne
image_ref = $IMAGE_REF
image_ref_alt = $IMAGE_REF

[compute-feature-enabled]
snapshot = False
console_output = False
resize = False
pause = False
shelve = False
suspend = False
cold_migration = False
live_migration = False
CONF

cd ws
status=0
"$TEMPEST_VENV/bin/tempest" run --concurrency 1 \
  --regex "${TEMPEST_REGEX:-^tempest\.api\.(image\.v2|compute\.images|compute\.limits|compute\.test_versions)\.}" \
  --exclude-regex 'test_image_web_download_import|test_images_dependency|test_images_formats|test_absolute_limits_negative' \
  || status=$?
if [ "$status" -ne 0 ]; then
  for node in a b; do
    log "tempest failed; imagemeta node $node's log:"
    tail -n 30 "$WORK/imagemeta-$node.log" >&2
  done
fi
exit "$status"
