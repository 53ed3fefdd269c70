#!/usr/bin/env bash
# Client-compatibility suite: the real openstacksdk and openstack CLI against
# target/debug/imagemeta (override with IMAGEMETA_BIN). Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CLIENTS_VENV:-$HOME/.cache/imagemeta/clients-venv}"
export CLIENTS_VENV="$venv"

bash "$here/setup.sh"

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
