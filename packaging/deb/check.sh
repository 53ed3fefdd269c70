#!/usr/bin/env bash
# Checks a built package (packaging/deb/build.sh): its control fields, its files and their
# modes, its conffiles and maintainer scripts, its systemd unit (`systemd-analyze verify` where
# systemd-analyze is installed), its completions and man pages, and that the packaged binary
# starts on the packaged config file and answers.
#   packaging/deb/check.sh target/debian/imagemeta_VERSION_ARCH.deb
set -euo pipefail
deb="$1"
work="$(mktemp -d "${TMPDIR:-/tmp}/imagemeta-deb-check.XXXXXX")"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "check.sh: $*" >&2; exit 1; }

dpkg-deb -x "$deb" "$work/fs"
dpkg-deb -e "$deb" "$work/control"
fs="$work/fs"

# Control fields.
[ "$(dpkg-deb -f "$deb" Package)" = imagemeta ] || fail "Package is not imagemeta"
[ "$(dpkg-deb -f "$deb" Section)" = net ] || fail "Section is not net"
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "Depends lacks libc6"

# Files, and their modes (secrets readable by root only).
expect() {
    [ -f "$fs/$1" ] || fail "missing /$1"
    [ "$(stat -c %a "$fs/$1")" = "$2" ] || fail "/$1 has mode $(stat -c %a "$fs/$1"), not $2"
}
expect usr/bin/imagemeta 755
expect usr/lib/systemd/system/imagemeta.service 644
expect etc/imagemeta/imagemeta.toml 644
expect etc/imagemeta/tokens.json 600
expect etc/imagemeta/imagemeta.env 600
expect usr/share/bash-completion/completions/imagemeta 644
expect usr/share/zsh/vendor-completions/_imagemeta 644
expect usr/share/fish/vendor_completions.d/imagemeta.fish 644
expect usr/share/doc/imagemeta/README.md 644
expect usr/share/doc/imagemeta/copyright 644
"$fs/usr/bin/imagemeta" --version | grep -q '^imagemeta ' || fail "the binary does not run"
if command -v readelf >/dev/null; then
    ! readelf -S "$fs/usr/bin/imagemeta" | grep -Eq '\.debug_(info|line)' || fail "the binary is not stripped"
fi

# A man page for every command, each one that man renders without a warning.
for page in imagemeta imagemeta-serve imagemeta-image imagemeta-image-create imagemeta-image-list \
    imagemeta-catalogue imagemeta-catalogue-copy imagemeta-data imagemeta-data-move imagemeta-backup \
    imagemeta-completions imagemeta-manpages imagemeta-sample-config; do
    expect "usr/share/man/man1/$page.1.gz" 644
    zcat "$fs/usr/share/man/man1/$page.1.gz" | grep -q '^\.TH' || fail "$page.1 is not a man page"
    if command -v man >/dev/null; then
        warnings="$(MANWIDTH=80 man --warnings -l "$fs/usr/share/man/man1/$page.1.gz" 2>&1 >/dev/null)"
        [ -z "$warnings" ] || fail "$page.1: $warnings"
    fi
done
zcat "$fs/usr/share/man/man1/imagemeta-serve.1.gz" | grep -q 'admin\\-listen' || fail "imagemeta-serve.1 lacks --admin-listen"

# Completions load and complete.
bash -c "source '$fs/usr/share/bash-completion/completions/imagemeta' && complete -p imagemeta" >/dev/null \
    || fail "the bash completion does not load"
grep -q 'sample-config' "$fs/usr/share/zsh/vendor-completions/_imagemeta" || fail "zsh completion lacks commands"
grep -q 'sample-config' "$fs/usr/share/fish/vendor_completions.d/imagemeta.fish" || fail "fish completion lacks commands"

# Conffiles: everything under /etc, kept across upgrades.
diff <(sort "$work/control/conffiles") \
    <(printf '%s\n' /etc/imagemeta/imagemeta.env /etc/imagemeta/imagemeta.toml /etc/imagemeta/tokens.json) \
    || fail "conffiles differ"

# Maintainer scripts: valid shell, enabling, starting and stopping the unit.
for script in postinst prerm postrm; do
    sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q 'deb-systemd-helper enable imagemeta.service' "$work/control/postinst" || fail "postinst does not enable"
grep -q 'deb-systemd-invoke $_dh_action imagemeta.service' "$work/control/postinst" || fail "postinst does not start"
grep -q 'deb-systemd-invoke stop imagemeta.service' "$work/control/prerm" || fail "prerm does not stop"
grep -q 'deb-systemd-helper purge imagemeta.service' "$work/control/postrm" || fail "postrm does not purge"

# The unit: its sandbox, and systemd's own verification.
unit="$fs/usr/lib/systemd/system/imagemeta.service"
for line in 'ExecStart=/usr/bin/imagemeta serve --config /etc/imagemeta/imagemeta.toml' DynamicUser=yes \
    StateDirectory=imagemeta ProtectSystem=strict NoNewPrivileges=yes Restart=on-failure \
    'LoadCredential=tokens.json:/etc/imagemeta/tokens.json' 'EnvironmentFile=-/etc/imagemeta/imagemeta.env'; do
    grep -qxF "$line" "$unit" || fail "the unit lacks $line"
done
if ! command -v systemd-analyze >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "check.sh: installing systemd (for systemd-analyze)" >&2
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; } >/dev/null 2>&1 \
        || echo "check.sh: cannot install systemd" >&2
fi
if command -v systemd-analyze >/dev/null; then
    out="$(systemd-analyze verify --man=no --recursive-errors=no --root="$fs" "$unit" 2>&1)" \
        || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    exposure="$(systemd-analyze security --offline=yes --root="$fs" "$unit" 2>/dev/null | grep 'Overall exposure')"
    echo "check.sh: systemd-analyze verify passed; $exposure" >&2
else
    echo "check.sh: systemd-analyze is not installed: the unit's verification is skipped" >&2
fi

# The packaged binary starts on the packaged config file (every key of it known, every value
# valid), with the state and listeners moved into this check's own directory and ports.
state="$work/state"
mkdir -p "$state"
printf '%s\n' '{"tok": {"user_id": "u1", "project_id": "p1", "roles": ["member", "reader"]}}' >"$state/tokens.json"
"$fs/usr/bin/imagemeta" serve --config "$fs/etc/imagemeta/imagemeta.toml" \
    --database "sqlite:$state/imagemeta.db" --image-data-dir "$state/images" --tokens "$state/tokens.json" \
    --compute-listen 127.0.0.1:0 --image-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    >"$work/stdout" 2>"$work/stderr" &
pid=$!
for _ in $(seq 300); do
    [ "$(grep -c 'listening on' "$work/stdout" || true)" = 3 ] && break
    kill -0 "$pid" 2>/dev/null || fail "the packaged config does not start: $(cat "$work/stderr")"
    sleep 0.1
done
url() { grep "$1 listening on" "$work/stdout" | sed 's/.*listening on //'; }
compute="$(url 'compute API')" admin="$(url admin)"
[ -n "$compute" ] && [ -n "$admin" ] || fail "no listen addresses: $(cat "$work/stdout" "$work/stderr")"
[ "$(curl -s "$admin/healthz")" = ok ] || fail "/healthz"
[ "$(curl -s -H 'X-Auth-Token: tok' "$compute/v2.1/images")" = '{"images": []}' ] || fail "GET /v2.1/images"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$compute/v2.1/images")" = 401 ] || fail "no token is not 401"
kill -TERM "$pid"
wait "$pid" || fail "the server did not stop cleanly"
pid=""
echo "check.sh: $deb is good" >&2
