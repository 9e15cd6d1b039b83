//! A TCP echo server guest, the same source for every platform:
//!
//! - `wasm32-wasip2` (a component, run by `trio-wasi-host run
//!   echo_server.wasm --listen 127.0.0.1:0 -- 127.0.0.1:0`): binds ADDR
//!   through `wasi:sockets`, as far as the host's `--listen` policy allows;
//! - `wasm32-wasip1` (a module): serves the listeners the host preopened
//!   (`wasmtime run -Stcplisten=ADDR`); ADDR is ignored;
//! - natively: binds ADDR.
//!
//! Arguments: `[ADDR] [--connections N]` (ADDR defaults to `127.0.0.1:0`).
//! It prints `listening on ADDR` for each listener (and flushes), echoes
//! every connection in its own task, and with `--connections N` exits with
//! status 0 after N connections have been served and closed. A connection
//! that fails only ends its own task.
//!
//! Its lines go through `say`, which ignores write errors: a closed stdout
//! (`... | head -1`) loses lines, never the server (`println!` would panic).
//! Without threads on WASI a full pipe nobody reads still blocks the guest
//! on its next line (natively as well: the native examples in `core/`
//! queue their lines to a writer thread instead).

use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;

use trio::abc::{Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::{CancelScope, Nursery, open_nursery};

/// Writes one line to stdout and flushes it; a failed write (closed pipe,
/// full disk) is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Echoes until the peer closes its sending side; returns the byte count.
async fn echo(stream: &TcpStream) -> trio::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = stream.receive_some(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        stream.send_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// The listeners to serve on this platform.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
async fn listeners(_addr: SocketAddr) -> trio::Result<Vec<TcpListener>> {
    let listeners = trio::net::preopened_listeners()?;
    if listeners.is_empty() {
        return Err(trio::Error::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no preopened listening socket (run with wasmtime's -Stcplisten=ADDR)",
        )));
    }
    Ok(listeners)
}

/// The listeners to serve on this platform.
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
async fn listeners(addr: SocketAddr) -> trio::Result<Vec<TcpListener>> {
    Ok(vec![TcpListener::bind(addr)?])
}

/// Accepts on `listener` forever, one task per connection in `conns`.
async fn accept_loop<'s>(
    listener: &'s TcpListener,
    conns: &'s Nursery<'s, '_>,
    done: &'s Cell<u64>,
    limit: Option<u64>,
    all: &'s CancelScope,
) -> trio::Result<()> {
    loop {
        let stream = listener.accept().await?;
        conns.spawn(async move {
            match echo(&stream).await {
                Ok(n) => say(format_args!("connection closed after {n} bytes")),
                Err(e) => say(format_args!("connection failed: {e}")),
            }
            drop(stream);
            done.set(done.get() + 1);
            if limit.is_some_and(|l| done.get() >= l) {
                all.cancel();
            }
            Ok(())
        });
    }
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
    let mut limit = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--connections" {
            limit = args.next().and_then(|n| n.parse::<u64>().ok());
            if limit.is_none() {
                eprintln!("usage: echo_server [ADDR] [--connections N]");
                std::process::exit(2);
            }
        } else if let Ok(a) = arg.parse() {
            addr = a;
        } else {
            eprintln!("echo_server: not an address: {arg}");
            std::process::exit(2);
        }
    }
    let result = trio::run(async {
        let listeners = listeners(addr).await?;
        for l in &listeners {
            match l.local_addr() {
                Ok(a) => say(format_args!("listening on {a}")),
                Err(e) => say(format_args!("listening (address unknown: {e})")),
            }
        }
        let _ = std::io::stdout().flush();
        let done = Cell::new(0);
        let all = CancelScope::new();
        all.run(open_nursery(async |conns| {
            open_nursery(async |accepts| {
                for l in &listeners {
                    accepts.spawn(accept_loop(l, conns, &done, limit, &all));
                }
                Ok(())
            })
            .await
        }))
        .await?;
        say(format_args!("served {} connections", done.get()));
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}
