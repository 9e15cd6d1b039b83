#!/usr/bin/env bash
# The C echo server (examples/c/echo_server.c on libtrio.a) against the Rust
# one (core/examples/echo_server.rs) and tokio's current-thread one
# (trio-bench --serve tokio), each in its own process, driven by the same
# load client (trio-bench --load) in the same run. Prints, per server, round
# trips per second and the server's CPU time (user+sys, from /proc/PID/stat)
# per round trip, then the ratios. See bench/c/README.md.
#   bench/c/echo_compare.sh [CONNS SIZE SECONDS [ROUNDS]]   (default 100 64 3 1)
# With several rounds the three servers take turns (each round starts with
# the next one), and the ratios are computed from the per-server medians.
#
# Every wait is bounded: builds (BUILD_TIMEOUT, default 1800 s), the server
# start (10 s), the load client (SECONDS + 60 s), each server's whole life
# (`timeout`, SECONDS + 120 s) and its exit after SIGTERM (`timeout -k`).
# No helper process outlives the script: the servers' stdin is a FIFO held
# by the script itself (the tokio server exits at the end of its stdin), not
# a `< <(sleep ...)` process substitution, whose sleep would be orphaned by
# the kill and keep the caller's stderr pipe open for its whole duration.
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-100}; size=${2:-64}; secs=${3:-3}; rounds=${4:-1}
target="${CARGO_TARGET_DIR:-$PWD/target}"
build_timeout=${BUILD_TIMEOUT:-1800}

echo "building (release) into $target ..." >&2
timeout "$build_timeout" cargo build -q --release -p trio-ffi -p trio-bench --locked
timeout "$build_timeout" cargo build -q --release -p trio --example echo_server --locked
timeout 300 cc -O2 -std=c99 -Wall -Wextra -Werror -pedantic -D_POSIX_C_SOURCE=200809L -Iinclude \
    -o "$target/release/c_echo_server" examples/c/echo_server.c "$target/release/libtrio.a" \
    -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

tmp=$(mktemp -d)
mkfifo "$tmp/stdin"
# Read-write: opening it never blocks, and the servers never see its end.
exec {ctl}<>"$tmp/stdin"
tpids=()
cleanup() {
    local p
    for p in "${tpids[@]}"; do kill "$p" 2>/dev/null || true; done
    exec {ctl}>&-
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tck=$(getconf CLK_TCK)
# User+sys CPU time of a process, in clock ticks (fields 14 and 15 of
# /proc/PID/stat; the command name in field 2 may contain spaces).
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || return 1
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

declare -A rates cpus
run_one() { # name, command... (the address is appended)
    local name=$1; shift
    local out="$tmp/$name.out"
    # Port 0: the server picks a free port and says which on its first line
    # ("... listening on 127.0.0.1:PORT ..." or, tokio, "listening
    # 127.0.0.1:PORT"); no probe connection, no port collisions.
    timeout -k 5 $((secs + 120)) "$@" 127.0.0.1:0 <&"$ctl" >"$out" 2>&1 &
    local tpid=$!
    tpids+=("$tpid")
    local addr="" pid=""
    for _ in $(seq 1 200); do # up to 10 s
        [[ -z $pid ]] && pid=$(pgrep -P "$tpid" || true)
        addr=$(sed -n '/listening/{s/.*listening \(on \)\{0,1\}\([0-9.]*:[0-9]*\).*/\2/p;q}' "$out")
        [[ -n $pid && -n $addr ]] && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -z $pid || -z $addr ]]; then
        echo "$name server did not start:" >&2; cat "$out" >&2
        return 1
    fi
    local before after load
    before=$(cpu_ticks "$pid")
    if ! load=$(timeout $((secs + 60)) "$target/release/trio-bench" --load "$addr" "$conns" "$size" "$secs"); then
        echo "$name: the load client failed; server output:" >&2; tail -5 "$out" >&2
        return 1
    fi
    after=$(cpu_ticks "$pid")
    kill "$tpid" 2>/dev/null || true # timeout passes SIGTERM on (and SIGKILLs 5 s later)
    wait "$tpid" 2>/dev/null || true  # bounded by timeout -k
    # "N round trips in T s: R/s, p50 X µs, p99 Y µs"
    local rts rate
    rts=$(sed -n 's/^\([0-9]*\) round trips.*/\1/p' <<<"$load")
    rate=$(sed -n 's/.*: \([0-9]*\)\/s.*/\1/p' <<<"$load")
    if [[ -z $rts || -z $rate ]]; then
        echo "$name: unexpected load client output: $load" >&2
        return 1
    fi
    local cpu
    cpu=$(awk -v t=$((after - before)) -v hz="$tck" -v n="$rts" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    rates[$name]+="$rate "; cpus[$name]+="$cpu "
    printf '%-6s %8s rt/s  %6s µs CPU/rt  (%s; server CPU %.2f s)\n' "$name" "$rate" "$cpu" \
        "${load#*: }" "$(awk -v t=$((after - before)) -v hz="$tck" 'BEGIN { print t / hz }')"
}

echo "echo, $conns conn x $size B, $secs s, $rounds round(s); CPU = server user+sys over the load run"
start_server() { # name
    case $1 in
        rust) run_one rust "$target/release/examples/echo_server" ;;
        c) run_one c "$target/release/c_echo_server" ;;
        tokio) run_one tokio "$target/release/trio-bench" --serve tokio ;;
    esac
}
order=(rust c tokio)
for r in $(seq 1 "$rounds"); do
    [[ $rounds -gt 1 ]] && echo "round $r"
    # Each round starts with the next server, so no server always runs
    # first or right after another one.
    for i in 0 1 2; do start_server "${order[(i + r - 1) % 3]}"; done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
r=$(median <<<"${rates[rust]}"); c=$(median <<<"${rates[c]}"); t=$(median <<<"${rates[tokio]}")
rc=$(median <<<"${cpus[rust]}"); cc=$(median <<<"${cpus[c]}"); tc=$(median <<<"${cpus[tokio]}")
awk -v r="$r" -v c="$c" -v t="$t" -v rc="$rc" -v cc="$cc" -v tc="$tc" -v n="$rounds" 'BEGIN {
    printf "median of %d: rt/s rust %d, c %d, tokio %d; CPU µs/rt rust %.2f, c %.2f, tokio %.2f\n", n, r, c, t, rc, cc, tc
    printf "rt/s ratio:   C/Rust %.2f   C/tokio %.2f   Rust/tokio %.2f   (higher: C faster)\n", c / r, c / t, r / t
    printf "CPU/rt ratio: C/Rust %.2f   C/tokio %.2f   Rust/tokio %.2f   (lower: C cheaper)\n", cc / rc, cc / tc, rc / tc
}'
