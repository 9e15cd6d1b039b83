#!/usr/bin/env bash
# The C echo server (examples/c/echo_server.c on libtrio.a) against the Rust
# one (core/examples/echo_server.rs) and tokio's current-thread one
# (trio-bench --serve tokio), each in its own process, driven by the same
# load client (trio-bench --load) in the same run. Prints round trips per
# second per server and the ratios to the Rust server.
#   bench/c/echo_compare.sh [CONNS SIZE SECONDS]   (default 100 64 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-100}; size=${2:-64}; secs=${3:-3}
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p trio-ffi -p trio-bench --locked
cargo build -q --release -p trio --example echo_server --locked
cc -O2 -std=c99 -D_POSIX_C_SOURCE=200809L -Iinclude -o "$target/release/c_echo_server" \
    examples/c/echo_server.c "$target/release/libtrio.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
port=$((20000 + RANDOM % 20000))
declare -A rate
run_one() { # name, command...
    local name=$1; shift
    local addr="127.0.0.1:$port"; port=$((port + 1))
    # stdin stays open: the tokio server exits at the end of its stdin.
    "$@" "$addr" < <(sleep 3600) >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/${addr##*:}") 2>/dev/null && break; sleep 0.05; done
    local out
    out=$("$target/release/trio-bench" --load "$addr" "$conns" "$size" "$secs")
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rate[$name]=$(echo "$out" | sed -n 's/.*: \([0-9]*\)\/s.*/\1/p')
    printf '%-8s %s\n' "$name" "$out"
}
run_one rust "$target/release/examples/echo_server"
run_one c "$target/release/c_echo_server"
run_one tokio "$target/release/trio-bench" --serve tokio
awk -v r="${rate[rust]}" -v c="${rate[c]}" -v t="${rate[tokio]}" \
    'BEGIN { printf "C/Rust %.2f   C/tokio %.2f   Rust/tokio %.2f\n", c / r, c / t, r / t }'
