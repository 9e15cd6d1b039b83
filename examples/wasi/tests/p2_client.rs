//! The `echo_client` guest connecting out, to an echo server run by this
//! test (a native thread on `127.0.0.1:0`).
//!
//! - `client_connects_where_allowed`: the preview 2 component under the
//!   project's host with `--connect 127.0.0.1:PORT` sends its messages
//!   (some larger than the socket buffers) and exits with 0 after
//!   `echoed N messages`.
//! - `connect_outside_the_policy_is_denied`: the same guest without
//!   `--connect`, then with only another port allowed: it fails (non-zero
//!   status) with "access denied: the host's network policy does not allow
//!   connecting to ADDR", the host reports the denial on its stderr too,
//!   and nothing reaches the server.
//! - `client_on_preview1_fails_cleanly`: built for `wasm32-wasip1`, where
//!   connecting is unsupported: status 1 and `echo_client: ERROR`.
//! - `client_native`: the same source built natively, against the same
//!   server.
//!
//! The guests are built by this test and run as in `p2_echo.rs` (the host,
//! `TRIO_WASI_HOST`, `TRIO_P2_WASMTIME`, `TRIO_ALLOW_SKIP=1`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Guest, Runner, START_TIMEOUT, assert_denied, build_guest, timeouts};

/// A native echo server on `127.0.0.1:0`: serves one connection to its
/// end, then returns how many bytes it echoed.
struct EchoServer {
    listener: TcpListener,
    port: u16,
}

impl EchoServer {
    fn new() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        EchoServer { listener, port }
    }

    /// Checks that no connection is waiting (no guest got through).
    fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("a connection from {peer} reached the server on port {}", self.port),
            Err(e) => panic!("accept: {e}"),
        }
    }

    /// Serves one connection in a thread (waiting at most `START_TIMEOUT`
    /// for it); the thread returns the bytes echoed.
    fn serve_one(self) -> JoinHandle<u64> {
        std::thread::spawn(move || {
            let deadline = Instant::now() + START_TIMEOUT;
            let mut s = loop {
                match self.listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("no connection within {START_TIMEOUT:?}: {e}"),
                }
            };
            s.set_nonblocking(false).expect("blocking");
            timeouts(&s);
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0;
            loop {
                let n = s.read(&mut buf).expect("read from the client");
                if n == 0 {
                    return total; // dropping `s` ends the client's receiving side
                }
                s.write_all(&buf[..n]).expect("echo to the client");
                total += n as u64;
            }
        })
    }
}

/// Runs `cmd` against a fresh server and checks the whole exchange.
fn echo_with(cmd: impl FnOnce(u16) -> Command) {
    let server = EchoServer::new();
    let port = server.port;
    let served = server.serve_one();
    let (guest, status) = Guest::run(&mut cmd(port));
    let out = guest.output();
    assert!(status.success(), "the client failed: {status}\n{out}");
    let bytes = MESSAGES * SIZE;
    let line = format!("echoed {MESSAGES} messages ({bytes} bytes)");
    assert!(guest.stdout().contains(&line), "no `{line}`\n{out}");
    let echoed = served.join().unwrap_or_else(|_| panic!("the server failed\n{out}"));
    assert_eq!(echoed, bytes, "bytes echoed by the server\n{out}");
}

/// What the client sends: more than the socket buffers hold.
const MESSAGES: u64 = 20;
const SIZE: u64 = 100_000;

/// The client's arguments for `addr`.
fn client_args(addr: &str) -> [String; 3] {
    [addr.to_owned(), MESSAGES.to_string(), SIZE.to_string()]
}

#[test]
fn client_connects_where_allowed() {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_client", "wasm32-wasip2");
    echo_with(|port| {
        let addr = format!("127.0.0.1:{port}");
        let args = client_args(&addr);
        runner.command(&wasm, &[("--connect", &addr)], &args.each_ref().map(String::as_str))
    });
}

#[test]
fn connect_outside_the_policy_is_denied() {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_client", "wasm32-wasip2");
    let server = EchoServer::new();
    let addr = format!("127.0.0.1:{}", server.port);
    // Only another port: a second listener's, so it surely differs.
    let other = EchoServer::new();
    let other_addr = format!("127.0.0.1:{}", other.port);
    // wasmtime's policy is all or nothing: there, only without network.
    let allows: &[&[(&str, &str)]] = if runner.is_host() { &[&[], &[("--connect", &other_addr)]] } else { &[&[]] };
    for allow in allows {
        let (guest, status) = Guest::run(&mut runner.command(&wasm, allow, &[&addr]));
        assert!(!guest.stdout().contains("echoed"), "the client got through with {allow:?}\n{}", guest.output());
        assert!(guest.stderr().contains("echo_client: ERROR"), "no `echo_client: ERROR`\n{}", guest.output());
        let guest_line = format!("access denied: the host's network policy does not allow connecting to {addr}");
        assert_denied(&runner, &guest, status, &guest_line);
    }
    server.assert_untouched();
    other.assert_untouched();
}

#[test]
fn client_on_preview1_fails_cleanly() {
    let Some(runner) = Runner::find() else { return };
    let wasm = build_guest("echo_client", "wasm32-wasip1");
    let server = EchoServer::new();
    let addr = format!("127.0.0.1:{}", server.port);
    // No --connect: the host refuses it for preview 1 modules.
    let (guest, status) = Guest::run(&mut runner.command(&wasm, &[], &[&addr]));
    let out = guest.output();
    assert_eq!(status.code(), Some(1), "the client did not fail with 1\n{out}");
    assert!(guest.stderr().contains("echo_client: ERROR"), "no `echo_client: ERROR`\n{out}");
    assert!(guest.stderr().contains(&format!("cannot connect to {addr}")), "not the preview 1 error\n{out}");
    server.assert_untouched();
}

#[test]
fn client_native() {
    echo_with(|port| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo_client"));
        cmd.args(client_args(&format!("127.0.0.1:{port}")));
        cmd
    });
}
