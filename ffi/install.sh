#!/usr/bin/env bash
# Builds libtrio and installs it for C and C++ projects:
#   ffi/install.sh PREFIX [--debug] [--strip | --keep-debug-info]
# installs under PREFIX:
#   lib/libtrio.so.VERSION            the shared library (SONAME libtrio.so.MAJOR)
#   lib/libtrio.so.MAJOR, lib/libtrio.so   symlinks to it
#   lib/libtrio.a                     the static library
#   lib/.debug/libtrio.so.VERSION.debug   its debug info (stripped builds; gdb
#                                     finds it through the .gnu_debuglink)
#   include/libtrio.h, include/trio.hpp (if present)
#   lib/pkgconfig/trio.pc
#   lib/cmake/trio/trioConfig.cmake, trioConfigVersion.cmake
# then
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs trio) -Wl,-rpath,PREFIX/lib
# (add --static to pkg-config to link libtrio.a), or in CMake
#   find_package(trio 0.1 REQUIRED)   # with -DCMAKE_PREFIX_PATH=PREFIX
#   target_link_libraries(app PRIVATE trio::trio)   # or trio::trio_static
# ffi/README.md ("Installing and finding libtrio") says how the loader finds
# libtrio.so.MAJOR at run time.
#
# The default is the release build with its debug info split off (the
# libraries stripped of it: on x86_64 the .so 1.2 MB instead of 6.8 MB, the
# .a 4.6 MB instead of 17 MB);
# --debug installs the debug build as it is (for tests); --strip strips a
# debug build too and --keep-debug-info keeps a release build's.
set -euo pipefail
usage="usage: ffi/install.sh PREFIX [--debug] [--strip | --keep-debug-info]"
prefix="${1:?$usage}"
shift
profile=release
strip=
for arg in "$@"; do
    case "$arg" in
        --debug) profile=debug ;;
        --strip) strip=1 ;;
        --keep-debug-info) strip=0 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
[ -z "$strip" ] && { [ "$profile" = release ] && strip=1 || strip=0; }
# trio.pc records the prefix: make it absolute (relative to the caller's
# directory) before moving to the workspace.
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
cd "$(dirname "$0")/.."
if [ "$strip" = 1 ]; then
    for tool in objcopy strip; do
        command -v "$tool" >/dev/null || { echo "install.sh: $tool (binutils) is needed to strip; or pass --keep-debug-info" >&2; exit 1; }
    done
fi
if [ "$profile" = release ]; then
    cargo build -p trio-ffi --release --locked
else
    cargo build -p trio-ffi --locked
fi
target="${CARGO_TARGET_DIR:-$PWD/target}/$profile"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
major=${version%%.*}
lib="$prefix/lib"
mkdir -p "$lib/pkgconfig" "$lib/cmake/trio" "$prefix/include"

# The shared library under its full version, and the links the loader
# (SONAME libtrio.so.MAJOR, set by ffi/build.rs) and the linker (-ltrio) use.
so="libtrio.so.$version"
install -m 0755 "$target/libtrio.so" "$lib/$so"
ln -sfn "$so" "$lib/libtrio.so.$major"
ln -sfn "libtrio.so.$major" "$lib/libtrio.so"
install -m 0644 "$target/libtrio.a" "$lib/libtrio.a"
if [ "$strip" = 1 ]; then
    # The debug info of the .so goes to lib/.debug/, where gdb looks for the
    # file its .gnu_debuglink names; the archive is only stripped.
    mkdir -p "$lib/.debug"
    objcopy --only-keep-debug "$lib/$so" "$lib/.debug/$so.debug"
    chmod 0644 "$lib/.debug/$so.debug"
    objcopy --strip-debug --add-gnu-debuglink="$lib/.debug/$so.debug" "$lib/$so"
    strip --strip-debug "$lib/libtrio.a"
else
    rm -f "$lib/.debug/$so.debug"
fi

install -m 0644 include/libtrio.h "$prefix/include/libtrio.h"
[ -f bindings/cpp/trio.hpp ] && install -m 0644 bindings/cpp/trio.hpp "$prefix/include/trio.hpp"
# The libraries a static link needs: one list, in trio.pc.in's Libs.private.
private_libs=$(sed -n 's/^Libs\.private: *//p' ffi/trio.pc.in)
cmake_private_libs=$(echo "$private_libs" | sed -e 's/-l//g' -e 's/  */;/g')
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" ffi/trio.pc.in > "$lib/pkgconfig/trio.pc"
sed -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@PRIVATE_LIBS@|$cmake_private_libs|g" \
    ffi/cmake/trioConfig.cmake.in > "$lib/cmake/trio/trioConfig.cmake"
sizeof_void_p=$(( $(getconf LONG_BIT) / 8 ))
sed -e "s|@VERSION@|$version|g" -e "s|@SIZEOF_VOID_P@|$sizeof_void_p|g" ffi/cmake/trioConfigVersion.cmake.in > "$lib/cmake/trio/trioConfigVersion.cmake"
stripped=$([ "$strip" = 1 ] && echo ", debug info in lib/.debug" || echo ", with debug info")
echo "installed libtrio $version ($profile$stripped) into $prefix"
ls -lL "$lib/$so" "$lib/libtrio.a"
