#!/usr/bin/env bash
# Fuzzes libtrio's C ABI (the `c_api` target, see fuzz_targets/c_api.rs) for
# SECONDS (default 60) with libFuzzer under ASan, starting from the corpus
# kept in the repo. Exits non-zero if it finds anything: the input is then
# in the artifacts folder it names, with the command that replays it.
#
#   ffi/fuzz/run.sh [SECONDS]
#
# Needs the nightly toolchain. Installs cargo-fuzz (pinned) into
# ~/.cache/trio-ci/tools/cargo-fuzz on first use (about 50 s); the first
# build takes about 90 s more. Builds go to $TRIO_FUZZ_TARGET (default
# ~/.cache/trio-ci/fuzz-target), outside the clone; the corpus that grows
# while fuzzing is kept there too (corpus-work), so the repo's corpus only
# changes when someone copies new inputs in on purpose.
#
# The inputs in artifacts-known/ found the bugs of issue 17 (all fixed;
# they are in the corpus too, so every run replays them);
# TRIO_FUZZ_OFF=tag,... (sem,stack,send,serve,alias) stops driving those
# paths. TRIO_FUZZ_LOG=1 with the binary and one input prints every call and
# its return code.
set -euo pipefail

secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cargo_fuzz_version=0.13.2
tools="${TRIO_FUZZ_TOOLS:-$HOME/.cache/trio-ci/tools/cargo-fuzz}"
export CARGO_TARGET_DIR="${TRIO_FUZZ_TARGET:-$HOME/.cache/trio-ci/fuzz-target}"
work="$CARGO_TARGET_DIR/corpus-work/c_api"
artifacts="$CARGO_TARGET_DIR/artifacts/c_api"
mkdir -p "$work" "$artifacts"

if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
    echo "--- installing cargo-fuzz $cargo_fuzz_version into $tools"
    start=$(date +%s)
    cargo +nightly install cargo-fuzz --locked --version "$cargo_fuzz_version" --root "$tools"
    echo "--- cargo-fuzz installed in $(($(date +%s) - start)) s"
fi
export PATH="$tools/bin:$PATH"

cd "$here/.."
start=$(date +%s)
# -a: debug assertions and overflow checks, as a C caller's bad values
# should never reach an arithmetic overflow in libtrio.
cargo +nightly fuzz build -a c_api
echo "--- fuzz target built in $(($(date +%s) - start)) s"

bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/c_api"
start=$(date +%s)
set +e
# New inputs go to the first folder (the work corpus), never into the repo.
"$bin" "$work" "$here/corpus/c_api" \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=512 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$CARGO_TARGET_DIR/fuzz.log" 2>&1
status=$?
set -e
echo "--- fuzzed for $(($(date +%s) - start)) s; work corpus: $(ls "$work" | wc -l) inputs"
grep -E '^(INFO: (seed|Loaded|-max_len)|#[0-9]+ +(INITED|DONE)|stat::)' "$CARGO_TARGET_DIR/fuzz.log" || true
if [ "$status" -ne 0 ]; then
    echo "FUZZ FAILED (exit $status):"
    grep -E -A3 'FUZZ FINDING|panicked|ERROR: |SUMMARY' "$CARGO_TARGET_DIR/fuzz.log" | head -n 40
    tail -n 30 "$CARGO_TARGET_DIR/fuzz.log"
    echo "The input (full log: $CARGO_TARGET_DIR/fuzz.log):"
    newest=$(ls -t "$artifacts" | head -n 1)
    if [ -n "$newest" ]; then
        echo "  $artifacts/$newest:"
        od -An -tx1 "$artifacts/$newest" | head -n 16
    fi
    echo "Replay one with: TRIO_FUZZ_LOG=1 $bin <input>"
    exit "$status"
fi
echo "fuzz: no finding in ${secs} s"
