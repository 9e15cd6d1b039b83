//! The `demo` guest (nurseries, cancel scopes, timers, `to_thread`) on every
//! platform it builds for:
//!
//! - `demo_preview1_module`: built for `wasm32-wasip1`, run as a core module
//!   under the project's host (its timers are `poll_oneoff` clock
//!   subscriptions);
//! - `demo_preview2_component`: built for `wasm32-wasip2`, run as a
//!   component under the host (timers through `wasi:io/poll`);
//! - `demo_native`: the binary cargo built for this test.
//!
//! Each must exit with 0 after `demo: all checks passed` as its last line;
//! on WASI the `to_thread` line must be an error (no threads there).
//! The runtime is found as in `p2_echo.rs` (the host, `TRIO_WASI_HOST`,
//! `TRIO_P2_WASMTIME`, `TRIO_ALLOW_SKIP=1`).

mod common;

use std::process::Command;

use common::{Guest, Runner, build_guest};

/// Runs `cmd` and checks the demo's verdict; its stdout.
fn run_demo(cmd: &mut Command) -> String {
    let (guest, status) = Guest::run(cmd);
    let (stdout, out) = (guest.stdout(), guest.output());
    assert!(status.success(), "the demo failed: {status}\n{out}");
    assert_eq!(stdout.lines().last(), Some("demo: all checks passed"), "not the last line\n{out}");
    stdout
}

fn demo_under_the_host(target: &str) {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("demo", target);
    let stdout = run_demo(&mut runner.command(&wasm, &[], &[]));
    assert!(stdout.contains("demo on WASI"), "not on WASI?\n{stdout}");
    assert!(stdout.contains("to_thread -> error:"), "no to_thread error line\n{stdout}");
}

#[test]
fn demo_preview1_module() {
    demo_under_the_host("wasm32-wasip1");
}

#[test]
fn demo_preview2_component() {
    demo_under_the_host("wasm32-wasip2");
}

#[test]
fn demo_native() {
    let stdout = run_demo(&mut Command::new(env!("CARGO_BIN_EXE_demo")));
    assert!(stdout.contains("to_thread -> 42"), "to_thread did not run the closure\n{stdout}");
}
