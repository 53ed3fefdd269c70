#!/usr/bin/env bash
# Builds the Debian package: target/debian/imagemeta_VERSION-1_ARCH.deb (its path is the last
# line printed). The release binary generates its own completions, man pages and config file
# first, so that they always match it.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    echo "build.sh: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi

cargo build --release --locked --bin imagemeta >&2
bin=target/release/imagemeta
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man"
"$bin" completions bash >"$assets/imagemeta.bash"
"$bin" completions zsh >"$assets/_imagemeta"
"$bin" completions fish >"$assets/imagemeta.fish"
"$bin" manpages "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1
{ cat packaging/deb/imagemeta.toml.head; "$bin" sample-config; } >"$assets/imagemeta.toml"

# cargo deb prints the package's path.
deb="$(cargo deb --no-build --locked --strip | tail -n 1)"
test -s "$deb"
echo "$deb"
