#!/usr/bin/env bash
# Run tempest's image tests against imagemeta behind a real Keystone.
#
#   ci/tempest/run.sh KEYSTONE_STATE IMAGEMETA_BINARY
#
# KEYSTONE_STATE: a running Keystone from ci/keystone/start.sh (its admin is admin/admin-secret).
# Starts imagemeta (--auth keystone, the fixtures' service user, a fresh database) on free
# loopback ports, registers it in the catalog and uploads a public image for `image_ref`
# (prepare.py), writes a tempest workspace and runs:
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

WORK="$(mktemp -d "${TMPDIR:-/tmp}/imagemeta-tempest.XXXXXX")"
IMAGEMETA_PID=""
# tempest registers each workspace by name in ~/.tempest/workspace.yaml: a unique one, removed
# again at the end.
WORKSPACE="imagemeta-$(basename "$WORK")"
cleanup() {
  [ -n "$IMAGEMETA_PID" ] && kill "$IMAGEMETA_PID" 2>/dev/null && wait "$IMAGEMETA_PID" 2>/dev/null
  "$TEMPEST_VENV/bin/tempest" workspace remove --name "$WORKSPACE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" metadefs load --database "sqlite:$WORK/imagemeta.db" >/dev/null
log "imagemeta on 127.0.0.1:$COMPUTE_PORT (compute) and :$IMAGE_PORT (image), Keystone $KEYSTONE_URL"
"$BIN" serve --compute-listen "127.0.0.1:$COMPUTE_PORT" --image-listen "127.0.0.1:$IMAGE_PORT" --admin-listen 127.0.0.1:0 \
  --database "sqlite:$WORK/imagemeta.db" --image-cache-dir "$WORK/cache" \
  --image-store "file=file://$WORK/images" --image-store "remote=file://$WORK/remote" --default-image-store file \
  --import-methods glance-direct,web-download,copy-image,glance-download \
  --auth keystone --keystone-url "$KEYSTONE_URL" --www-authenticate-uri "$KEYSTONE_URL" \
  --keystone-username "$SVC_USER" --keystone-password "$SVC_PASSWORD" --keystone-project "$SVC_PROJECT" \
  >"$WORK/imagemeta.out" 2>"$WORK/imagemeta.log" &
IMAGEMETA_PID=$!
for _ in $(seq 1 100); do
  grep -q "image API listening" "$WORK/imagemeta.out" 2>/dev/null && break
  kill -0 "$IMAGEMETA_PID" 2>/dev/null || { cat "$WORK/imagemeta.log" >&2; exit 1; }
  sleep 0.1
done

IMAGE_REF="$("$PY" "$HERE/prepare.py" "$KEYSTONE_URL" admin-secret \
  "http://127.0.0.1:$COMPUTE_PORT/v2.1" "http://127.0.0.1:$IMAGE_PORT" | tail -n 1)"

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
  log "tempest failed; imagemeta's log:"
  tail -n 50 "$WORK/imagemeta.log" >&2
fi
exit "$status"
