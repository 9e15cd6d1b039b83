//! The WASI preview 2 `echo_server` guest under the project's host
//! (`trio-wasi-host`), driven from here over loopback (this test itself
//! runs natively).
//!
//! - `echo_server_over_wasi_sockets`: the guest binds `127.0.0.1:0` through
//!   `wasi:sockets` (the host allows `--listen 127.0.0.1:0`, any port on
//!   that IP) with `--connections 3`: small and 1 MiB echoes, two
//!   connections open at once, clients that half-close (their last bytes
//!   still come back), and a clean exit with `served 3 connections`.
//! - `bind_outside_the_policy_is_denied`: the guest asks for addresses the
//!   host's `--listen` does not allow; it fails (non-zero status) with
//!   "access denied: the host's network policy does not allow binding to
//!   ADDR" (for `0.0.0.0:0`, which any guest may bind, "listening on
//!   ADDR"), and the host reports the denial on its stderr too.
//! - `closed_stdout_loses_lines_not_the_server`: with its stdout a closed
//!   pipe after the first line (`| head -1`), the guest still serves its
//!   connections and exits 0.
//!
//! The guest is built for `wasm32-wasip2` by this test (`cargo build`, into
//! `CARGO_TARGET_DIR`, else the workspace's `target/`). The host is
//! `$CARGO_TARGET_DIR/wasi-host/trio-wasi-host` (`.ci/run` builds it with
//! `cargo build -p trio-wasi-host --profile wasi-host`) or `TRIO_WASI_HOST`;
//! without it the tests fail, unless `TRIO_ALLOW_SKIP=1`, when they print
//! `SKIPPED` and pass. For development, `TRIO_P2_WASMTIME=PATH` runs the
//! guest under a wasmtime CLI instead (`-Sinherit-network` for the echo,
//! no network for the denial; the host-side message is then not checked).

mod common;

use std::process::Stdio;

use common::{Guest, Runner, assert_denied, build_guest, connect, echo, echo_1mib, half_close_with};

#[test]
fn echo_server_over_wasi_sockets() {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_server", "wasm32-wasip2");
    let mut cmd = runner.command(&wasm, &[("--listen", "127.0.0.1:0")], &["127.0.0.1:0", "--connections", "3"]);
    let mut guest = Guest::spawn(&mut cmd, Stdio::null());
    let port = guest.listening_port();

    // 1: small, then 1 MiB written by a thread while this one reads, then
    // a half-close.
    let mut c1 = connect(port);
    let hello = b"hello, trio on wasip2";
    echo(&mut c1, hello);
    let big_len = echo_1mib(&mut c1);
    let tail = b"the last words";
    half_close_with(&mut c1, tail);
    drop(c1);

    // 2 and 3 at once, interleaved: each is served in its own guest task.
    let mut c2 = connect(port);
    let mut c3 = connect(port);
    echo(&mut c3, b"third first");
    echo(&mut c2, b"second");
    echo(&mut c3, b"third again");
    half_close_with(&mut c2, b"second, closing");
    // 3 still works after 2 ended.
    echo(&mut c3, b"third, alone");
    drop(c3); // a full close ends the guest's side too
    drop(c2);

    let status = guest.wait();
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    assert!(out.contains("served 3 connections"), "no `served 3 connections`\n{out}");
    let first = hello.len() + big_len + tail.len();
    assert!(out.contains(&format!("connection closed after {first} bytes")), "connection 1's count\n{out}");
}

#[test]
fn bind_outside_the_policy_is_denied() {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_server", "wasm32-wasip2");
    // wasmtime's policy is all or nothing: there, run without network.
    let allow: &[_] = if runner.is_host() { &[("--listen", "127.0.0.1:0")] } else { &[] };
    // The host lets any guest bind the unspecified address with port 0 (what
    // wasmtime-wasi checks for the implicit bind before a connect or a
    // listen), so that one is refused when it listens; without network,
    // binding fails.
    for (addr, at_host) in [("0.0.0.0:0", "listening on"), ("127.0.0.2:0", "binding to")] {
        let what = if runner.is_host() { at_host } else { "binding to" };
        let (guest, status) = Guest::run(&mut runner.command(&wasm, allow, &[addr, "--connections", "1"]));
        assert!(!guest.stdout().contains("listening on"), "the guest listened on {addr}\n{}", guest.output());
        let guest_line = format!("access denied: the host's network policy does not allow {what} {addr}");
        assert_denied(&runner, &guest, status, &guest_line);
    }
}

/// `echo_server.wasm ... | head -1`: once the guest's stdout is a closed
/// pipe, its lines are lost but every connection is still served (a
/// `println!` there used to panic the guest, a trap that dropped every
/// client), and it exits 0 after `--connections`.
#[test]
fn closed_stdout_loses_lines_not_the_server() {
    use std::io::{BufRead, BufReader};

    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_server", "wasm32-wasip2");
    let mut cmd = runner.command(&wasm, &[("--listen", "127.0.0.1:0")], &["127.0.0.1:0", "--connections", "3"]);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the first line");
    // The reader was dropped with its pipe end: stdout is now closed.
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not `listening on ADDR`: {line:?}"));
    for i in 0..3 {
        let mut c = connect(port);
        echo(&mut c, format!("connection {i}, after stdout closed").as_bytes());
    }
    let status = common::wait_timeout(&mut child, common::IO_TIMEOUT);
    let Some(status) = status else {
        let _ = child.kill();
        panic!("the guest did not exit after 3 connections");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(status.success(), "the guest failed: {status}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
