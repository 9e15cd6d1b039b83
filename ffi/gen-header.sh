#!/usr/bin/env bash
# Generates include/libtrio.h from ffi/src with cbindgen 0.29.4 (installed
# under ~/.cache/trio-ci/tools if missing, about 3 minutes).
#   ffi/gen-header.sh          rewrite include/libtrio.h
#   ffi/gen-header.sh --check  fail if the committed header is stale
set -euo pipefail
cd "$(dirname "$0")/.."
root="$HOME/.cache/trio-ci/tools/cbindgen"
cbindgen="$root/bin/cbindgen"
if [ ! -x "$cbindgen" ]; then
    cargo install --locked cbindgen --version 0.29.4 --root "$root"
fi
out=include/libtrio.h
if [ "${1:-}" = "--check" ]; then
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    "$cbindgen" -q --config ffi/cbindgen.toml --crate trio-ffi --output "$tmp" ffi
    if ! diff -u "$out" "$tmp"; then
        echo "include/libtrio.h is stale: run ffi/gen-header.sh and commit it" >&2
        exit 1
    fi
    echo "include/libtrio.h is up to date"
else
    mkdir -p include
    "$cbindgen" -q --config ffi/cbindgen.toml --crate trio-ffi --output "$out" ffi
    echo "wrote $out"
fi
