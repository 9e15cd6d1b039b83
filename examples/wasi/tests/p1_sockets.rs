//! The WASI preview 1 guests under the wasmtime 46 CLI, driven from here
//! over loopback and pipes (this test itself runs natively).
//!
//! - `echo_server` with a preopened listener (`-Spreview2=n
//!   -Stcplisten=127.0.0.1:PORT --connections 3`): small and 1 MiB echoes,
//!   two connections open at once, clients that half-close, and a clean exit
//!   with `served 3 connections`.
//! - `p1_stdio_echo`: stdin copied to stdout through `trio::stdio` while a
//!   timer ticks; the ticks prove that waiting for stdin does not stop the
//!   guest's loop. Run under both preview 1 implementations of wasmtime 46
//!   (the legacy `-Spreview2=n` one and the default one).
//!
//! The guests are built for `wasm32-wasip1` by this test (`cargo build`,
//! into `CARGO_TARGET_DIR`, else the workspace's `target/`). wasmtime 46 is
//! `~/.cache/trio-ci/tools/wasmtime-46.0.3/bin/wasmtime` (`.ci/run`
//! installs it) or `TRIO_WASMTIME46`; without it the tests fail, unless
//! `TRIO_ALLOW_SKIP=1`, when they print `SKIPPED` and pass.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Guest, START_TIMEOUT, build_guest, connect, echo, echo_1mib, expect_eof, free_port, timeouts, wasmtime46,
};

/// Starts `echo_server` on a free port and returns it with a first
/// connection (retrying with another port if wasmtime could not bind).
fn start_echo_server(wasmtime: &Path) -> (Guest, u16, TcpStream) {
    let wasm = build_guest("echo_server", "wasm32-wasip1");
    for _attempt in 0..5 {
        let port = free_port();
        let mut guest = Guest::spawn(
            Command::new(wasmtime)
                .args(["run", "-Spreview2=n", &format!("-Stcplisten=127.0.0.1:{port}")])
                .arg(&wasm)
                .args(["--connections", "3"]),
            Stdio::null(),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = guest.exited() {
                let _ = guest.wait();
                let out = guest.output();
                if out.contains("failed to bind") {
                    break; // the port was taken meanwhile: another one
                }
                panic!("the guest exited ({status}) before accepting\n{out}");
            }
            let addr = ([127, 0, 0, 1], port).into();
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                timeouts(&s);
                return (guest, port, s);
            }
            if Instant::now() >= deadline {
                panic!("the guest did not listen within {START_TIMEOUT:?}\n{}", guest.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start the guest on a free port in 5 attempts");
}

#[test]
fn echo_server_serves_preopened_listener() {
    let Some(wasmtime) = wasmtime46() else { return };
    let (mut guest, port, mut c1) = start_echo_server(&wasmtime);

    // 1: small, then 1 MiB written by a thread while this one reads, then
    // a half-close: the server sees end of stream, finishes its echo and
    // closes.
    echo(&mut c1, b"hello, trio on wasip1");
    echo_1mib(&mut c1);
    c1.shutdown(Shutdown::Write).expect("half-close");
    expect_eof(&mut c1);
    drop(c1);

    // 2 and 3 at once: 3 is served while 2 waits in the guest, then both.
    let mut c2 = connect(port);
    let mut c3 = connect(port);
    echo(&mut c3, b"third first");
    echo(&mut c2, b"second");
    echo(&mut c3, b"third again");
    echo(&mut c2, b"second again");
    c2.shutdown(Shutdown::Write).expect("half-close");
    expect_eof(&mut c2);
    drop(c3); // a full close ends the server's side too
    drop(c2);

    let status = guest.wait();
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    assert!(out.contains("served 3 connections"), "no `served 3 connections`\n{out}");
    assert!(out.contains("connection closed after 1048597 bytes"), "connection 1's count\n{out}");
}

/// Runs `p1_stdio_echo` with `flags`: a line, then stdin idle for half a
/// second (the guest's timer must tick meanwhile), then 300 KB and end of
/// input; stdout must be exactly the input.
fn stdio_echo(flags: &[&str]) {
    let Some(wasmtime) = wasmtime46() else { return };
    let wasm = build_guest("p1_stdio_echo", "wasm32-wasip1");
    let mut guest = Guest::spawn(Command::new(&wasmtime).arg("run").args(flags).arg(&wasm), Stdio::piped());
    let mut stdin = guest.take_stdin();
    stdin.write_all(b"hello\n").expect("write stdin");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + START_TIMEOUT;
    while guest.stdout_bytes() != b"hello\n" {
        assert!(Instant::now() < deadline, "no echo of the first line\n{}", guest.output());
        assert!(guest.exited().is_none(), "the guest exited early\n{}", guest.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let to_send = big.clone();
    let w = std::thread::spawn(move || {
        let r = stdin.write_all(&to_send);
        drop(stdin); // end of input
        r
    });
    let status = guest.wait();
    w.join().expect("writer").expect("write stdin");
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    let mut expected = b"hello\n".to_vec();
    expected.extend_from_slice(&big);
    let stdout = guest.stdout_bytes();
    assert!(stdout == expected, "stdout differs from stdin ({} bytes)\n", stdout.len());
    let line = out.lines().find(|l| l.starts_with("p1_stdio_echo: copied")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!("copied {} bytes", expected.len())), "{line}");
    let ticks: u64 =
        line.rsplit(' ').nth(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no tick count in {line:?}"));
    // About 50 in the idle half second; none if stdin blocked the loop.
    assert!(ticks >= 10, "the timer hardly ticked while stdin was idle: {line}");
}

#[test]
fn stdio_under_legacy_preview1() {
    stdio_echo(&["-Spreview2=n"]);
}

#[test]
fn stdio_under_default_preview1() {
    stdio_echo(&[]);
}
