#!/bin/sh
# Generates include/libtrio.h from ffi/src with the pinned cbindgen CLI.
#
#   ffi/gen-header.sh           regenerate include/libtrio.h
#   ffi/gen-header.sh --check   fail (exit 1) if the committed header is stale
#
# cbindgen is installed on first use into $CBINDGEN_ROOT (default
# $HOME/.cache/trio-ci/tools/cbindgen; about 3 minutes) unless the pinned
# version is already on PATH or there.
set -eu

CBINDGEN_VERSION=0.29.4
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CBINDGEN_ROOT=${CBINDGEN_ROOT:-$HOME/.cache/trio-ci/tools/cbindgen}
HEADER=$ROOT/include/libtrio.h

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

find_cbindgen() {
    for c in "$CBINDGEN_ROOT/bin/cbindgen" "$(command -v cbindgen 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

if ! CBINDGEN=$(find_cbindgen); then
    echo "gen-header: installing cbindgen $CBINDGEN_VERSION into $CBINDGEN_ROOT (takes a few minutes)" >&2
    cargo install --locked cbindgen --version "$CBINDGEN_VERSION" --root "$CBINDGEN_ROOT" >&2
    CBINDGEN=$(find_cbindgen)
fi

tmp=$(mktemp "${TMPDIR:-/tmp}/libtrio.h.XXXXXX")
trap 'rm -f "$tmp"' EXIT
(cd "$ROOT" && "$CBINDGEN" --quiet --config ffi/cbindgen.toml --crate trio-ffi --output "$tmp" ffi)

# Every name the header declares carries the trio_ / TRIO_ prefix.
bad=$(sed -n \
    -e 's/^#define \([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' \
    -e '/^typedef .*(\*/{s/^typedef .*(\*\([A-Za-z_][A-Za-z0-9_]*\)).*/\1/p;d;}' \
    -e 's/^typedef [^(]*[ *]\([A-Za-z_][A-Za-z0-9_]*\);$/\1/p' \
    -e 's/^typedef \(struct\|enum\|union\) \([A-Za-z_][A-Za-z0-9_]*\) *{*$/\2/p' \
    -e 's/^\(struct\|enum\|union\) \([A-Za-z_][A-Za-z0-9_]*\) *{*$/\2/p' \
    -e 's/^[A-Za-z].*[ *]\([A-Za-z_][A-Za-z0-9_]*\)(.*/\1/p' "$tmp" |
    grep -v -e '^trio_' -e '^TRIO_' -e '^LIBTRIO_H$' || true)
if [ -n "$bad" ]; then
    echo "gen-header: names without the trio_/TRIO_ prefix in the header:" >&2
    echo "$bad" >&2
    echo "(rename them in Rust or in ffi/cbindgen.toml [export.rename])" >&2
    exit 1
fi

if [ "$check" = 1 ]; then
    if ! diff -u "$HEADER" "$tmp"; then
        echo "gen-header: include/libtrio.h is stale: run ffi/gen-header.sh and commit it" >&2
        exit 1
    fi
    echo "gen-header: include/libtrio.h is up to date" >&2
else
    mkdir -p "$(dirname "$HEADER")"
    cp "$tmp" "$HEADER"
    echo "gen-header: wrote include/libtrio.h" >&2
fi
