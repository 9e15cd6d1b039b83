//! The connection benchmark: how many short connections per second each
//! echo server handles, each one connect, a 64-byte echo and close.
//!
//! The servers are the echo benchmark's (see `echo/server.rs`: one task per
//! connection, in a child process of their own, started with
//! `ServerProcess`). The client is [`CLIENTS`] threads of this process, each
//! in a loop until the window ends: connect (blocking, with a timeout), write
//! 64 bytes, read the 64 bytes back and check them, close. Reported: the
//! connections completed per second over the window (the window runs until
//! the last connection begun in it has finished), median over interleaved
//! rounds (trio, tokio, trio, ...), a fresh server process per round; higher
//! is better.
//!
//! Closing: the client sets `SO_LINGER` to 0 before it closes, so the close
//! sends a reset instead of a FIN handshake and neither side keeps the
//! connection in TIME_WAIT. Without that, every connection would leave a
//! TIME_WAIT entry on the client's side, tens of thousands per second, and
//! the ephemeral ports (about 28k) would run out within a round. The server
//! then sees the reset (or end of stream) on its next receive and ends the
//! connection's task, as it would on an orderly close.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::echo::server::Kind;
#[cfg(not(test))]
use crate::echo::server::ServerProcess;
use crate::results::{Record, Size};

/// The record's name.
const NAME: &str = "connect + 64 B echo + close";

/// The message size.
const MSG: usize = 64;

/// Client threads.
const CLIENTS: usize = 4;

/// A connect, a write or a read that takes longer than this fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How much to run.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    /// Connections before the measured window, to warm up the server.
    warmup: Duration,
    /// The measured window.
    window: Duration,
    /// Rounds per server.
    rounds: usize,
}

impl Plan {
    /// Full: 2 s windows, 3 rounds; Quick: 1 s, 1 round; Tiny: 0.2 s, 1
    /// round, no warm-up.
    fn new(size: Size) -> Plan {
        match size {
            Size::Full => Plan { warmup: Duration::from_millis(200), window: Duration::from_secs(2), rounds: 3 },
            Size::Quick => Plan { warmup: Duration::from_millis(100), window: Duration::from_secs(1), rounds: 1 },
            Size::Tiny => Plan { warmup: Duration::ZERO, window: Duration::from_millis(200), rounds: 1 },
        }
    }
}

/// Runs the connection benchmark at `size`, prints the comparison and
/// returns it (group `"connect"`, unit `"connections/s"`, higher is
/// better).
///
/// # Panics
/// If a server fails to start, or a connection fails or stalls (the server
/// processes are killed first).
pub(crate) fn run(size: Size) -> Vec<Record> {
    let plan = Plan::new(size);
    println!();
    println!(
        "connect: {CLIENTS} client threads, each: connect, {MSG} B echo, close (SO_LINGER 0: reset, no TIME_WAIT); \
         echo server in its own process; {:.1} s windows, median of {} round(s); ratio = tokio/trio (below 1: \
         trio is faster)",
        plan.window.as_secs_f64(),
        plan.rounds
    );
    // Where io_uring is here (and not under test), trio on it and monoio
    // too, in the same rounds.
    let kinds: Vec<Kind> = if !cfg!(test) && crate::echo::server::uring_here() {
        vec![Kind::Trio, Kind::Tokio, Kind::TrioUring, Kind::Monoio]
    } else {
        vec![Kind::Trio, Kind::Tokio]
    };
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for _ in 0..plan.rounds {
        for (i, &kind) in kinds.iter().enumerate() {
            let rate = measure(kind, &plan).unwrap_or_else(|e| panic!("connect, {} server: {e}", kind.name()));
            got[i].push(rate);
        }
    }
    let rates: Vec<f64> = got.into_iter().map(median).collect();
    let mut records = vec![Record::higher("connect", NAME, rates[0], rates[1], "connections/s")];
    if let [_, tokio, trio_uring, monoio] = rates[..] {
        let mut r = Record::higher("connect", format!("{NAME} (trio on io_uring)"), trio_uring, tokio, "connections/s");
        r.monoio = Some(monoio);
        records.push(r);
    }
    println!("{:<44} {:>12} {:>12} {:>8}", "workload", "trio", "tokio", "ratio");
    for r in &records {
        println!("{:<44} {:>12.0} {:>12.0} {:>8.2}", r.name, r.trio, r.tokio, r.ratio());
        if let Some(m) = r.monoio {
            println!("{:<44} {:>12} {:>12.0}", "  monoio", "", m);
        }
    }
    records
}

/// The median (the upper one of an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Starts `kind`'s echo server in a child process.
#[cfg(not(test))]
fn spawn_server(kind: Kind) -> io::Result<ServerProcess> {
    ServerProcess::spawn_on(kind, None)
}

#[cfg(test)]
use tests::spawn_server;

/// One round on a fresh server: connections per second.
fn measure(kind: Kind, plan: &Plan) -> io::Result<f64> {
    let server = spawn_server(kind)?;
    if !plan.warmup.is_zero() {
        clients(server.addr, plan.warmup)?;
    }
    let (count, elapsed) = clients(server.addr, plan.window)?;
    drop(server);
    Ok(rate(count, elapsed))
}

/// Connections per second.
fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { f64::NAN }
}

/// Runs [`CLIENTS`] client threads against `addr` until `window` has
/// passed; returns the connections they completed and the time they took
/// (until the last one finished its last connection).
fn clients(addr: SocketAddr, window: Duration) -> io::Result<(u64, Duration)> {
    let start = Instant::now();
    let stop = start + window;
    let results: Vec<io::Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS).map(|i| s.spawn(move || client(addr, stop, i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a client thread panicked"))))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok((total, elapsed))
}

/// One client thread: connections until `stop`; how many it completed.
fn client(addr: SocketAddr, stop: Instant, seed: usize) -> io::Result<u64> {
    let msg = message(seed);
    let mut back = [0u8; MSG];
    let mut done = 0;
    while Instant::now() < stop {
        one_connection(addr, &msg, &mut back)?;
        done += 1;
    }
    Ok(done)
}

/// The message of client `seed` (distinct per client, so a crossed echo
/// shows).
fn message(seed: usize) -> [u8; MSG] {
    std::array::from_fn(|j| (seed.wrapping_mul(131).wrapping_add(j) % 251) as u8)
}

/// Connect, write `msg`, read it back into `back` and check it, close with
/// a reset.
fn one_connection(addr: SocketAddr, msg: &[u8; MSG], back: &mut [u8; MSG]) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    // The write of 64 bytes to a fresh socket never blocks; the read can.
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(msg)?;
    stream.read_exact(back)?;
    if back != msg {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the echo differs from the message"));
    }
    set_linger_zero(&stream)?;
    Ok(())
}

/// `SO_LINGER` with a zero timeout: closing the socket resets the
/// connection (no FIN handshake, no TIME_WAIT).
pub(crate) fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor, and a pointer to a `linger` of the
    // size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::memory::ChildProcess;

    /// Under `cargo test`, an echo server started through the test harness
    /// (see `memory::ChildProcess`); `ServerProcess` would run the harness
    /// with `--serve`, which it does not know.
    pub(crate) struct TestServer {
        /// Where it listens.
        pub(crate) addr: SocketAddr,
        /// The process; dropping it kills it.
        _child: ChildProcess,
    }

    /// The test build's [`spawn_server`](super).
    pub(crate) fn spawn_server(kind: Kind) -> io::Result<TestServer> {
        let child = ChildProcess::spawn(&["--serve", kind.name(), "127.0.0.1:0"])?;
        let line = child.wait_for("listening ", Duration::from_secs(30))?;
        let addr = line.parse().map_err(|e| io::Error::other(format!("bad address {line:?}: {e}")))?;
        Ok(TestServer { addr, _child: child })
    }

    #[test]
    fn tiny_run_gives_the_record() {
        let records = run(Size::Tiny);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.name.as_str(), r.group, r.unit, r.higher_is_better), (NAME, "connect", "connections/s", true));
        assert!(r.trio.is_finite() && r.trio > 0.0, "{r:?}");
        assert!(r.tokio.is_finite() && r.tokio > 0.0, "{r:?}");
    }

    /// `BENCH_PRINT=1 cargo test --release -p trio-bench --bin trio-bench
    /// connect::tests::quick -- --nocapture` prints the `--quick` figures.
    #[test]
    fn quick_figures_on_request() {
        if std::env::var_os("BENCH_PRINT").is_some_and(|v| v == "1") {
            assert_eq!(run(Size::Quick).len(), 1);
        }
    }

    #[test]
    fn plans_and_rates() {
        assert_eq!(Plan::new(Size::Full).rounds, 3);
        assert_eq!(Plan::new(Size::Tiny).warmup, Duration::ZERO);
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert!(rate(1, Duration::ZERO).is_nan());
        assert_ne!(message(0), message(1));
    }

    /// A connection closed with `SO_LINGER` 0 reaches the peer as a reset
    /// (or end of stream), and leaves no TIME_WAIT behind to count here, but
    /// the echo before it works.
    #[test]
    fn one_connection_against_a_thread_echo() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || -> io::Result<usize> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut buf = [0u8; MSG];
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
            // Then the reset: an error, or 0 bytes.
            Ok(s.read(&mut buf).unwrap_or(0))
        });
        let mut back = [0u8; MSG];
        one_connection(addr, &message(3), &mut back).expect("one connection");
        assert_eq!(back, message(3));
        assert_eq!(server.join().expect("the server thread").expect("the server side"), 0);
    }
}
