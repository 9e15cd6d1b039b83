//! A TCP echo server: every connection gets its own task in a nursery and
//! has what it sends echoed back (16 KiB buffer). Serves until Ctrl-C, then
//! cancels every connection task, prints a summary and exits with status
//! 130 (the shell's code for "ended by SIGINT"; 1 on any other error).
//!
//! `cargo run -p trio --example echo_server [-- ADDR]` (default
//! `127.0.0.1:9000`; port 0 lets the OS choose). Try it with
//! `cargo run -p trio --example echo_client -- ADDR`, or `nc ADDR PORT`.
//!
//! A failing connection only ends its own task (its error is printed); the
//! accept loop keeps going, also when the process runs out of descriptors.
//!
//! Its lines never stop it: they go through `common::say` (a writer thread
//! behind a queue of 1,024 lines), so a closed stdout (`echo_server | head
//! -1`) or a full pipe nobody reads only loses lines (the summary says how
//! many), never a connection.

mod common;

use common::{say, warn};

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use trio::abc::{Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::{Error, open_nursery, sleep};

/// Totals, shared by the accept loop and the connection tasks.
#[derive(Default)]
struct Stats {
    accepted: Cell<u64>,
    open: Cell<u64>,
    bytes: Cell<u64>,
}

/// Echoes until the peer closes its sending side; returns the byte count.
async fn echo(stream: &TcpStream, stats: &Stats) -> trio::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = stream.receive_some(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        stream.send_all(&buf[..n]).await?;
        total += n as u64;
        stats.bytes.set(stats.bytes.get() + n as u64);
    }
}

/// Errors of `accept` that mean "try again later", not "the listener is
/// broken" (as Trio's `serve_listeners`): out of descriptors or memory.
fn is_resource_shortage(e: &Error) -> bool {
    let Error::Io(io) = e else { return false };
    #[cfg(unix)]
    if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)) {
        return true;
    }
    matches!(io.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::OutOfMemory)
}

async fn serve(addr: SocketAddr, stats: &Stats) -> trio::Result<()> {
    let listener = TcpListener::bind(addr)?;
    say(format!("echo server listening on {} (Ctrl-C to stop)", listener.local_addr()?));
    open_nursery(async |n| -> trio::Result<()> {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) if is_resource_shortage(&e) => {
                    warn(format!("accept: {e}; retrying in 100 ms"));
                    sleep(Duration::from_millis(100)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            stats.accepted.set(stats.accepted.get() + 1);
            stats.open.set(stats.open.get() + 1);
            let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
            say(format!("{peer}: connected"));
            n.spawn(async move {
                match echo(&stream, stats).await {
                    Ok(bytes) => say(format!("{peer}: closed after echoing {bytes} bytes")),
                    // Ctrl-C: the run is shutting down (this one stays
                    // counted as open at the shutdown).
                    Err(e @ Error::Cancelled(_)) => return Err(e),
                    // Only this connection failed: report it, keep serving.
                    Err(e) => warn(format!("{peer}: {e}")),
                }
                stats.open.set(stats.open.get() - 1);
                Ok(())
            });
        }
    })
    .await?;
    Ok(())
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let addr: SocketAddr = match arg.parse() {
        Ok(a) => a,
        Err(e) => {
            warn(format!("usage: echo_server [IP:PORT]  ({arg:?}: {e})"));
            common::finish(Duration::from_millis(500));
            std::process::exit(2);
        }
    };
    let stats = Stats::default();
    let result = trio::run(serve(addr, &stats));
    let summary = format!(
        "connections: {} served, {} still open at the end; {} bytes echoed; {} output lines dropped",
        stats.accepted.get(),
        stats.open.get(),
        stats.bytes.get(),
        common::dropped()
    );
    let limit = Duration::from_millis(500);
    match result {
        Err(Error::KeyboardInterrupt) => {
            say(format!("\ninterrupted: every connection task was cancelled; {summary}"));
            common::finish(limit);
            std::process::exit(130);
        }
        Err(e) => {
            warn(format!("echo server failed: {e}; {summary}"));
            common::finish(limit);
            std::process::exit(1);
        }
        Ok(()) => {}
    }
}
