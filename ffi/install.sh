#!/usr/bin/env bash
# Builds libtrio and installs it for C and C++ projects:
#   ffi/install.sh PREFIX [--debug]
# installs PREFIX/lib/libtrio.so, PREFIX/lib/libtrio.a,
# PREFIX/include/libtrio.h, PREFIX/include/trio.hpp (if present) and
# PREFIX/lib/pkgconfig/trio.pc; then
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs trio)
# (add --static to pkg-config to link libtrio.a).
set -euo pipefail
prefix="${1:?usage: ffi/install.sh PREFIX [--debug]}"
# trio.pc records the prefix: make it absolute (relative to the caller's
# directory) before moving to the workspace.
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
cd "$(dirname "$0")/.."
profile=release
[ "${2:-}" = "--debug" ] && profile=debug
if [ "$profile" = release ]; then
    cargo build -p trio-ffi --release --locked
else
    cargo build -p trio-ffi --locked
fi
target="${CARGO_TARGET_DIR:-$PWD/target}/$profile"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$target/libtrio.so" "$prefix/lib/libtrio.so"
install -m 0644 "$target/libtrio.a" "$prefix/lib/libtrio.a"
install -m 0644 include/libtrio.h "$prefix/include/libtrio.h"
[ -f bindings/cpp/trio.hpp ] && install -m 0644 bindings/cpp/trio.hpp "$prefix/include/trio.hpp"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" ffi/trio.pc.in > "$prefix/lib/pkgconfig/trio.pc"
echo "installed libtrio $version ($profile) into $prefix"
