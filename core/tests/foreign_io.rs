//! Cancellation reaches code that does its I/O through `futures-io` on trio
//! streams: other people's libraries, which know nothing of trio's
//! checkpoints.
//!
//! - A `futures_lite` `lines()` loop on a `TcpStream` (and on a
//!   `trio::abc::Compat` memory stream) whose peer sent one line and went
//!   idle: `move_on_after` ends it at the deadline.
//! - A hyper 1.x HTTP/1.1 server (one task per connection, through
//!   smol-hyper's futures-io adapter) with an idle keep-alive client: the
//!   server stops at its deadline; the hyper error that carries the
//!   cancellation (`.map_err(trio::Error::user)?`) is caught by the scope.
//! - An async-tungstenite server loop (`ws.next().await`) whose client sent
//!   one message and went idle: ends at the deadline, caught.
//! - Ctrl-C: a child process (this binary re-executed) serving HTTP with two
//!   idle keep-alive connections exits with `KeyboardInterrupt` (status 130).
//!
//! Each deadline is on a `MockClock` with autojump, so the tests check that
//! the scope ends exactly at it. A task parked in `poll_read` that the
//! cancellation does not wake hangs the whole run (no deadline is left to
//! wake it), so each run is on its own thread and the test fails after
//! `REAL_TIME_GUARD` of real time instead of hanging (an in-run `fail_after`
//! could not help: the hang is precisely that cancellation does not reach
//! the task).
#![cfg(feature = "futures-io")]
// Native only: sockets, threads and processes.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use futures_lite::io::{AsyncBufReadExt, BufReader};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use smol_hyper::rt::FuturesIo;
use trio::abc::{Compat, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::testing::memory_stream_pair;
use trio::{CancelScope, Error, Result, current_time, move_on_after, open_nursery};
use util::mock_run;

/// How long a test may take in real time before it counts as hung.
const REAL_TIME_GUARD: Duration = Duration::from_secs(10);

/// The deadline of every scope under test (virtual time).
const DEADLINE: Duration = Duration::from_secs(5);

/// Runs `f` on a thread of its own; panics if it is not done within
/// `REAL_TIME_GUARD` (the hung thread is left behind, the test fails).
fn guarded(f: impl FnOnce() -> Result<()> + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(REAL_TIME_GUARD) {
        Ok(r) => r.unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung for {REAL_TIME_GUARD:?} of real time: the cancellation did not reach the task")
        }
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Receives until EOF (the peer closed), ignoring the data.
async fn wait_for_eof(s: &impl ReceiveStream) -> Result<()> {
    let mut buf = [0u8; 1024];
    while s.receive_some(&mut buf).await? > 0 {}
    Ok(())
}

/// Reads lines from `stream` with `futures_lite` until it ends or fails,
/// into `got`.
async fn read_lines(stream: impl futures_lite::AsyncRead + Unpin, got: &mut Vec<String>) -> Result<()> {
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next().await {
        got.push(line?);
    }
    Ok(())
}

#[test]
fn a_lines_loop_on_an_idle_tcp_stream_ends_at_the_deadline() {
    guarded(|| {
        mock_run(async {
            let listener = TcpListener::bind(loopback())?;
            let addr = listener.local_addr()?;
            open_nursery(async |n| {
                n.spawn(async {
                    // One line, then idle with the connection open until
                    // the reader hangs up.
                    let peer = TcpStream::connect(addr).await?;
                    peer.send_all(b"hello\n").await?;
                    wait_for_eof(&peer).await
                });
                let conn = listener.accept().await?;
                let start = current_time()?;
                let mut got = Vec::new();
                let r = move_on_after(DEADLINE, read_lines(conn, &mut got)).await?;
                assert!(r.is_none(), "the deadline ended the loop");
                assert_eq!(current_time()?, start + DEADLINE);
                assert_eq!(got, ["hello"]);
                Ok(())
            })
            .await?;
            Ok(())
        })
    });
}

#[test]
fn a_lines_loop_on_an_idle_compat_memory_stream_ends_at_the_deadline() {
    guarded(|| {
        mock_run(async {
            let (peer, stream) = memory_stream_pair();
            peer.send_all(b"hello\n").await?;
            let start = current_time()?;
            let mut got = Vec::new();
            let r = move_on_after(DEADLINE, read_lines(Compat::new(stream), &mut got)).await?;
            assert!(r.is_none(), "the deadline ended the loop");
            assert_eq!(current_time()?, start + DEADLINE);
            assert_eq!(got, ["hello"]);
            drop(peer);
            Ok(())
        })
    });
}

// ---- hyper ----

async fn hello(_: Request<Incoming>) -> std::result::Result<Response<Full<&'static [u8]>>, Infallible> {
    Ok(Response::new(Full::new(&b"hello"[..])))
}

/// An HTTP/1.1 server (keep-alive on) on `listener`, one task per
/// connection, until cancelled.
async fn serve_http(listener: &TcpListener) -> Result<()> {
    open_nursery(async |n| -> Result<()> {
        loop {
            let conn = listener.accept().await?;
            n.spawn(async move {
                http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(FuturesIo::new(conn), service_fn(hello))
                    .await
                    .map_err(Error::user)?;
                Ok(())
            });
        }
    })
    .await?;
    Ok(())
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads from `s` until what arrived ends with `end`.
async fn receive_until(s: &impl ReceiveStream, end: &[u8]) -> Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(end) {
        let k = s.receive_some(&mut buf).await?;
        if k == 0 {
            return Err(format!("EOF after {:?}", String::from_utf8_lossy(&got)).into());
        }
        got.extend_from_slice(&buf[..k]);
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn a_hyper_server_with_an_idle_keep_alive_client_stops_at_the_deadline() {
    guarded(|| {
        mock_run(async {
            let listener = TcpListener::bind(loopback())?;
            let addr = listener.local_addr()?;
            let answered = std::cell::Cell::new(false);
            open_nursery(async |n| {
                n.spawn(async {
                    let client = TcpStream::connect(addr).await?;
                    client.send_all(GET).await?;
                    let response = receive_until(&client, b"hello").await?;
                    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                    answered.set(true);
                    // Idle, keep-alive: the server hangs up when it stops.
                    wait_for_eof(&client).await
                });
                let start = current_time()?;
                let scope = CancelScope::with_timeout(DEADLINE);
                let r = scope.run(serve_http(&listener)).await?;
                assert!(r.is_none() && scope.cancelled_caught(), "the deadline stopped the server");
                assert_eq!(current_time()?, start + DEADLINE);
                Ok(())
            })
            .await?;
            assert!(answered.get());
            Ok(())
        })
    });
}

// ---- async-tungstenite ----

#[test]
fn a_websocket_server_loop_with_an_idle_client_ends_at_the_deadline() {
    guarded(|| {
        mock_run(async {
            let listener = TcpListener::bind(loopback())?;
            let addr = listener.local_addr()?;
            open_nursery(async |n| {
                n.spawn(async {
                    let stream = TcpStream::connect(addr).await?;
                    let (mut ws, _) = async_tungstenite::client_async("ws://x/", stream).await.map_err(Error::user)?;
                    ws.send(Message::text("hi")).await.map_err(Error::user)?;
                    // Idle until the server goes away (an error or the end).
                    while let Some(Ok(_)) = ws.next().await {}
                    Ok(())
                });
                let start = current_time()?;
                let mut got = Vec::new();
                let r = move_on_after(DEADLINE, async {
                    let conn = listener.accept().await?;
                    let mut ws = async_tungstenite::accept_async(conn).await.map_err(Error::user)?;
                    while let Some(msg) = ws.next().await {
                        got.push(msg.map_err(Error::user)?);
                    }
                    Ok(())
                })
                .await?;
                assert!(r.is_none(), "the deadline ended the loop");
                assert_eq!(current_time()?, start + DEADLINE);
                assert_eq!(got, [Message::text("hi")]);
                Ok(())
            })
            .await?;
            Ok(())
        })
    });
}

// ---- Ctrl-C, in a child process (as in tests/signals.rs) ----

#[cfg(unix)]
mod ctrl_c {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Child, Command, Stdio};

    use super::*;

    const CHILD_ENV: &str = "TRIO_TEST_FOREIGN_IO_CTRL_C_CHILD";

    /// Entry point of the child process (this binary re-executed with
    /// `CHILD_ENV` set): serves HTTP until Ctrl-C; exits 130 on
    /// `KeyboardInterrupt`. Without `CHILD_ENV`, this test does nothing.
    #[test]
    fn ctrl_c_child_process_entry() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let r = trio::run(async {
            let listener = TcpListener::bind(loopback())?;
            println!("ready {}", listener.local_addr()?.port());
            serve_http(&listener).await
        });
        match r {
            Err(Error::KeyboardInterrupt) => std::process::exit(130),
            other => {
                println!("run returned {other:?}");
                std::process::exit(1)
            }
        }
    }

    /// A keep-alive connection that got its answer and stays open, idle.
    fn idle_client(port: u16) -> std::net::TcpStream {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(REAL_TIME_GUARD)).unwrap();
        c.write_all(GET).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello") {
            let k = c.read(&mut buf).unwrap();
            assert!(k > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        c
    }

    /// Kills the child if the test fails before it exited.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn ctrl_c_stops_a_hyper_server_with_idle_keep_alive_connections() {
        let mut child = KillOnDrop(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "ctrl_c::ctrl_c_child_process_entry", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        // The child's output, line by line, read on a thread so that every
        // wait below is bounded.
        let (tx, lines) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines() {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let port = loop {
            let Ok(line) = lines.recv_timeout(REAL_TIME_GUARD) else {
                panic!("the child did not get ready; output: {seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            // libtest may print `test ... ` on the same line first.
            if let Some((_, port)) = line.split_once("ready ") {
                break port.trim().parse::<u16>().unwrap();
            }
        };
        let clients = [idle_client(port), idle_client(port)];
        // SAFETY: sending SIGINT to our child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        // The child's stdout closes when it exits: read it to the end, each
        // wait bounded by the guard.
        for _ in 0..10_000 {
            match lines.recv_timeout(REAL_TIME_GUARD) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the child did not exit within {REAL_TIME_GUARD:?} of Ctrl-C; output: {seen}")
                }
            }
        }
        let status = child.wait().unwrap();
        drop(clients);
        assert_eq!(status.code(), Some(130), "{seen}");
    }
}
