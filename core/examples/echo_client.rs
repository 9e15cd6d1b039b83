//! A TCP echo client: connects, sends `N_MESSAGES` messages one at a time
//! (32 B, 512 B and 4 KiB in turn), checks that each comes back unchanged,
//! prints round-trip statistics, then half-closes and waits for the server
//! to close too. Every step has a 5 s deadline (`fail_after`), so a stuck
//! server makes it fail instead of hang.
//!
//! `cargo run -p trio --example echo_client -- [ADDR [N_MESSAGES]]`
//! (defaults `127.0.0.1:9000` and 1000), against
//! `cargo run -p trio --example echo_server`.
//!
//! Exit status: 0 when every echo matched, 1 on any error (connection
//! refused, mismatch, deadline), 2 on bad arguments, 130 on Ctrl-C.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trio::abc::{HalfCloseableStream, ReceiveStream, SendStream};
use trio::net::TcpStream;
use trio::{Error, fail_after};

const SIZES: [usize; 3] = [32, 512, 4096];
const DEADLINE: Duration = Duration::from_secs(5);

/// Message `i`: its own length and byte pattern, so a mix-up shows.
fn message(i: usize) -> Vec<u8> {
    let len = SIZES[i % SIZES.len()];
    (0..len).map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8).collect()
}

fn io_error(kind: io::ErrorKind, msg: String) -> Error {
    Error::Io(io::Error::new(kind, msg))
}

/// Receives exactly `buf.len()` bytes.
async fn receive_exact(stream: &TcpStream, buf: &mut [u8]) -> trio::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match stream.receive_some(&mut buf[got..]).await? {
            0 => return Err(io_error(io::ErrorKind::UnexpectedEof, format!("server closed after {got} bytes"))),
            n => got += n,
        }
    }
    Ok(())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn client(addr: SocketAddr, count: usize) -> trio::Result<()> {
    let stream = match fail_after(DEADLINE, TcpStream::connect(addr)).await {
        Err(Error::TooSlow) => return Err(io_error(io::ErrorKind::TimedOut, format!("connecting to {addr}"))),
        other => other?,
    };
    println!("connected to {addr} from {}; sending {count} messages", stream.local_addr()?);
    let mut reply = vec![0u8; SIZES.iter().copied().max().unwrap_or(0)];
    let mut rtts = Vec::with_capacity(count);
    let mut bytes = 0;
    let started = Instant::now();
    for i in 0..count {
        let msg = message(i);
        let reply = &mut reply[..msg.len()];
        let t = Instant::now();
        // One deadline for the whole round trip.
        fail_after(DEADLINE, async {
            stream.send_all(&msg).await?;
            receive_exact(&stream, reply).await
        })
        .await?;
        rtts.push(t.elapsed());
        if *reply != msg[..] {
            return Err(io_error(io::ErrorKind::InvalidData, format!("message {i}: the echo differs")));
        }
        bytes += msg.len();
    }
    let elapsed = started.elapsed();

    // Half-close: the server sees end-of-stream, closes, and we see it too.
    stream.send_eof().await?;
    let rest = fail_after(DEADLINE, stream.receive_some(&mut reply)).await?;
    if rest != 0 {
        return Err(io_error(io::ErrorKind::InvalidData, format!("{rest} unexpected bytes after the last echo")));
    }

    rtts.sort();
    if let (Some(min), Some(max)) = (rtts.first(), rtts.last()) {
        let pct = |p: f64| rtts[((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1];
        println!(
            "{count} echoes ({bytes} bytes) checked in {:.1} ms: {:.0} round trips/s",
            elapsed.as_secs_f64() * 1e3,
            count as f64 / elapsed.as_secs_f64()
        );
        println!(
            "round trip: min {:.1} µs, median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            micros(*min),
            micros(pct(0.5)),
            micros(pct(0.99)),
            micros(*max)
        );
    }
    println!("the server closed its side after ours: done");
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let count = args.next().map_or(Ok(1000), |n| n.parse::<usize>());
    let (addr, count) = match (addr.parse::<SocketAddr>(), count) {
        (Ok(a), Ok(n)) => (a, n),
        _ => {
            eprintln!("usage: echo_client [IP:PORT [N_MESSAGES]]");
            std::process::exit(2);
        }
    };
    match trio::run(client(addr, count)) {
        Ok(()) => {}
        Err(Error::KeyboardInterrupt) => std::process::exit(130),
        Err(e) => {
            eprintln!("echo client: {e}");
            std::process::exit(1);
        }
    }
}
