#!/usr/bin/env bash
# Client-compatibility suite: the real openstacksdk and openstack CLI against
# target/debug/imagemeta (override with IMAGEMETA_BIN). Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CLIENTS_VENV:-$HOME/.cache/imagemeta/clients-venv}"
export CLIENTS_VENV="$venv"

bash "$here/setup.sh"

# Glance's own metadata definition files, as its package on PyPI installs them: the server of
# these tests loads them, and a test checks imagemeta's built-in copies against them.
glance_release="33.0.0"
glance_metadefs="$venv/glance-$glance_release-metadefs"
if [[ ! -f "$glance_metadefs/.complete" ]]; then
    rm -rf "$glance_metadefs"
    download="$(mktemp -d)"
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --dest "$download" "glance==$glance_release"
    "$venv/bin/python" - "$download"/glance-"$glance_release"-py3-none-any.whl "$glance_metadefs" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/data/etc/glance/metadefs/" in name and name.endswith(".json"):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
open(os.path.join(out, ".complete"), "w").close()
PY
    rm -rf "$download"
fi
export GLANCE_METADEFS="$glance_metadefs"

if [[ -z "${IMAGEMETA_BIN:-}" && ! -x "$here/../target/debug/imagemeta" ]]; then
    echo "run.sh: $here/../target/debug/imagemeta is missing: run 'cargo build' first" >&2
    exit 1
fi

cd "$here"
export PYTHONDONTWRITEBYTECODE=1
rc=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/test_clients.py" "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "run.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
