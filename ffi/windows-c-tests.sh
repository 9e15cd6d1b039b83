#!/usr/bin/env bash
# The C ABI on Windows: builds libtrio.a for x86_64-pc-windows-gnu, links
# the portable C test programs of tests/c/ against it with mingw-w64's gcc
# (statically, so no mingw DLL has to be found), and runs each under Wine
# (.ci/wine-runner, in the prefix .ci/wine-setup made). Every program
# prints "ok N" / "not ok N" lines and exits 0 only if all passed.
#
# Not built here, with the reason: the C++ programs (the Unix lane covers
# the header in C++). test_net and test_bad_input leave out their
# Unix-socket parts on Windows; test_stacks runs its crashing cases as
# child processes of itself instead of forking.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
cargo build -p trio-ffi --target "$target" --locked
lib="${CARGO_TARGET_DIR:-target}/$target/debug/libtrio.a"
# The import library of the windows crate family (raw-dylib stand-in):
# the workspace may hold several versions of windows_x86_64_gnu (the bench's
# monoio brings 0.48); take the one that has the library linked below.
winlib=""
for manifest in $(cargo metadata --format-version 1 --locked 2>/dev/null \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print("\n".join(p["manifest_path"] for p in m["packages"] if p["name"]=="windows_x86_64_gnu"))'); do
    if [ -f "$(dirname "$manifest")/lib/libwindows.0.52.0.a" ]; then
        winlib="$(dirname "$manifest")/lib"
        break
    fi
done
[ -n "$winlib" ] || { echo "windows C: no windows_x86_64_gnu with libwindows.0.52.0.a" >&2; exit 1; }
libs=(-L"$winlib" -lwindows.0.52.0 -lkernel32 -lntdll -luserenv -lws2_32 -ldbghelp -static -lpthread)
out="${CARGO_TARGET_DIR:-target}/windows-c-tests"
mkdir -p "$out"
failed=0
for t in test_tasks test_sync test_sync_more test_details test_errors test_threads test_abuse test_bad_input test_net \
    test_stacks; do
    x86_64-w64-mingw32-gcc -std=c99 -Wall -Wextra -Werror -pedantic -g -D_POSIX_C_SOURCE=200809L \
        -Iinclude -Itests/c "tests/c/$t.c" "$lib" "${libs[@]}" -o "$out/$t.exe"
    if (cd "$out" && timeout 600 "$OLDPWD/.ci/wine-runner" "./$t.exe" >"$t.log" 2>&1); then
        status=0
    else
        status=$?
    fi
    oks=$(grep -c '^ok' "$out/$t.log" || true)
    bad=$(grep -c '^not ok' "$out/$t.log" || true)
    echo "windows C: $t: status $status, $oks ok, $bad not ok"
    if [ "$status" -ne 0 ] || [ "$bad" -ne 0 ] || [ "$oks" -eq 0 ]; then
        grep -m 20 '^not ok\|panicked\|wine-runner' "$out/$t.log" || tail -20 "$out/$t.log"
        failed=$((failed + 1))
    fi
done
echo "windows C: $failed program(s) failed"
[ "$failed" -eq 0 ]
