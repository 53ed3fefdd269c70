#!/usr/bin/env bash
# Creates (or reuses) the virtualenv holding the real OpenStack clients used by
# clients/test_clients.py, and installs clients/requirements.txt into it.
#
#   CLIENTS_VENV   where the venv lives (default: $HOME/.cache/imagemeta/clients-venv)
#   PYTHON         interpreter to build it from (default: python3.11, else python3 >= 3.10)
#
# Idempotent: a stamp file in the venv records the hash of requirements.txt and of the
# interpreter version; when both match, nothing is installed. Non-interactive.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
venv="${CLIENTS_VENV:-$HOME/.cache/imagemeta/clients-venv}"

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
        return
    fi
    local c
    for c in python3.11 python3 python; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            echo "$c"
            return
        fi
    done
    echo "setup.sh: no python >= 3.10 found (set PYTHON)" >&2
    exit 1
}

py="$(pick_python)"
py_version="$("$py" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
want="$( { cat "$req"; echo "python=$py_version"; } | sha256sum | cut -d' ' -f1)"
stamp="$venv/.imagemeta-requirements.sha256"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
    "$venv/bin/python" -c 'import openstack, openstackclient, glanceclient, pytest, requests' 2>/dev/null; then
    echo "setup.sh: clients venv up to date at $venv"
    exit 0
fi

# A venv built by another interpreter version cannot be reused.
if [[ -x "$venv/bin/python" ]] &&
    [[ "$("$venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))' 2>/dev/null || true)" != "$py_version" ]]; then
    rm -rf "$venv"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    echo "setup.sh: creating venv at $venv with $py ($py_version)"
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        # Debian without python3-venv has no ensurepip: build the venv bare and let the
        # interpreter's own pip (>= 22.3 knows --python) install pip into it.
        rm -rf "$venv"
        "$py" -m venv --without-pip "$venv"
        "$py" -m pip --python "$venv/bin/python" install --disable-pip-version-check \
            --no-input --quiet pip
    fi
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
echo "setup.sh: installing $req into $venv"
"$venv/bin/python" -m pip install --quiet -r "$req"
"$venv/bin/python" -c 'import openstack, openstackclient, glanceclient, pytest, requests'
test -x "$venv/bin/openstack"
echo "$want" >"$stamp"
echo "setup.sh: clients venv ready at $venv"
