//! A TCP echo client guest, the same source for every platform:
//!
//! - `wasm32-wasip2` (a component, run by `trio-wasi-host run
//!   echo_client.wasm --connect 127.0.0.1:7000 -- 127.0.0.1:7000`): connects
//!   through `wasi:sockets`, as far as the host's `--connect` policy allows
//!   (a refused address fails with "access denied: ...");
//! - `wasm32-wasip1` (a module): builds, but preview 1 cannot open sockets,
//!   so it always fails at run time with the error;
//! - natively: connects.
//!
//! Arguments: `ADDR [N_MESSAGES] [SIZE]` (ADDR is `HOST:PORT`, resolved with
//! `trio::net::open_tcp_stream`; 10 messages of 1000 bytes by default). One
//! task sends N messages of SIZE bytes (message i is byte pattern i) and
//! then the end of stream; another reads the echo back and checks each
//! message, then expects the end of stream. It prints `echoed N messages
//! (B bytes)` and exits with 0; on an error it prints `echo_client: ERROR:
//! ...` to standard error and exits with 1 (2 for bad arguments).

use trio::abc::{HalfCloseableStream, ReceiveStream, SendStream};
use trio::net::TcpStream;
use trio::{Error, open_nursery};

/// Message `i` of `size` bytes: a pattern that differs between messages.
fn message(i: u64, size: usize) -> Vec<u8> {
    (0..size as u64).map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8).collect()
}

fn failed(what: String) -> Error {
    Error::User(what.into())
}

/// Reads exactly `buf.len()` bytes; an early end of stream is an error.
async fn receive_exact(stream: &TcpStream, buf: &mut [u8]) -> trio::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = stream.receive_some(&mut buf[got..]).await?;
        if n == 0 {
            return Err(failed(format!("end of stream after {got} of {} bytes of a message", buf.len())));
        }
        got += n;
    }
    Ok(())
}

async fn client(host: &str, port: u16, count: u64, size: usize) -> trio::Result<u64> {
    let stream = trio::net::open_tcp_stream(host, port).await?;
    let stream = &stream;
    // Sending and receiving at once: a message larger than the socket
    // buffers would otherwise block both sides.
    open_nursery(async |n| {
        n.spawn(async move {
            for i in 0..count {
                stream.send_all(&message(i, size)).await?;
            }
            stream.send_eof().await
        });
        let mut back = vec![0u8; size];
        for i in 0..count {
            receive_exact(stream, &mut back).await?;
            if back != message(i, size) {
                return Err(failed(format!("the echo of message {i} differs")));
            }
        }
        let mut extra = [0u8; 1];
        if stream.receive_some(&mut extra).await? != 0 {
            return Err(failed("more bytes than were sent came back".to_owned()));
        }
        Ok(())
    })
    .await?;
    Ok(count * size as u64)
}

fn usage() -> ! {
    eprintln!("usage: echo_client HOST:PORT [N_MESSAGES] [SIZE]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 3 {
        usage();
    }
    let Some((host, port)) = args[0].rsplit_once(':') else { usage() };
    let Ok(port) = port.parse::<u16>() else { usage() };
    let number = |i: usize, default: u64| args.get(i).map_or(Some(default), |a| a.parse().ok());
    let (Some(count), Some(size)) = (number(1, 10), number(2, 1000)) else { usage() };
    let Ok(size) = usize::try_from(size) else { usage() };
    match trio::run(client(host, port, count, size)) {
        Ok(bytes) => println!("echoed {count} messages ({bytes} bytes)"),
        Err(e) => {
            eprintln!("echo_client: ERROR: {e}");
            std::process::exit(1);
        }
    }
}
