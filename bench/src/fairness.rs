//! The fairness benchmark: how long a round trip on an idle connection, and
//! a new connection's first echo, take while other connections stream at
//! full speed through the same server, on trio and on tokio's
//! current-thread runtime.
//!
//! The server runs in this process, on a thread of its own (one runtime,
//! single-threaded): an echo server with one task per connection, each
//! receiving into a 64 KiB buffer and sending back all it got (trio:
//! `serve_tcp`, `receive_some` + `send_all`; tokio: a `TcpListener` accept
//! loop, `tokio::spawn`, `read` + `write_all`; `TCP_NODELAY` on both).
//!
//! Per runtime and round, on a fresh server (trio, tokio, trio, ...):
//!
//! - the load: [`Plan::busy`] connections, driven by one client thread (one
//!   mio epoll loop) that writes 16 KiB chunks whenever a socket takes them
//!   and reads back whatever arrives, both ways at full speed, until told
//!   to stop;
//! - after a warm-up (and once every busy connection has had an echo), the
//!   probe (the calling thread): [`Plan::round_trips`] sequential 64 B
//!   round trips on one more connection, opened before the load started,
//!   so that every message lands on an idle connection that the server has
//!   to notice becoming readable; and, spread evenly among them,
//!   [`Plan::accepts`] times: connect a new connection, send 1 byte, time
//!   until it comes back (the server has to accept, start a task and
//!   echo), close (with a reset, see `connect.rs`); each after a 1 ms
//!   pause;
//! - over the probe's window: the busy connections' echoed bytes per second
//!   (so that a short latency is not bought by starving the busy ones);
//! - with `--syscalls`, a further window of the same load and idle round
//!   trips under perf stat (or strace) on the server thread alone: its read
//!   calls per `epoll_wait`, that is how much it reads between two looks at
//!   the OS.
//!
//! Pinning (with two CPUs or more): the server thread on one CPU; the load
//! thread and the probe on another, both at the same priority. (A load
//! thread at nice 19 was tried and dropped: it made the load depend on
//! whatever else ran on its CPU, and tokio's idle round trip p50 moved from
//! about 30 ms to 0.2 ms with it; trio's did not move.)
//!
//! Reported: p50 and p99 of both latencies
//! (every sample of every round pooled; lower is better), the busy streams'
//! MiB/s (median of the rounds; higher is better) and reads per
//! `epoll_wait` (first round; lower is better here: the server looks at
//! the OS more often, which is what lets an idle connection through; what
//! that costs shows in the throughput). Every wait is bounded: 5 s socket
//! timeouts, 10 s to start or stop a server, a hard cap of [`Plan::cap`]
//! on each runtime's round up to the end of the measured probe, after which
//! the probe stops and the figures are what it has, and the traced window's
//! own length.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trio::abc::{ReceiveStream, SendStream};

use crate::affinity::{PinnedThread, allowed_cpus};
use crate::connect::set_linger_zero;
use crate::echo::server::Kind;
use crate::echo::syscalls::{Counts, Target, Tracer, count_target};
use crate::results::{Record, Size};

/// The records' group.
const GROUP: &str = "fairness";

/// The server's receive buffer per connection.
const SERVER_BUF: usize = 64 * 1024;

/// The load's writes.
const CHUNK: usize = 16 * 1024;

/// The idle connection's message.
const PROBE_MSG: usize = 64;

/// The pause before each probe.
const PAUSE: Duration = Duration::from_millis(1);

/// A connect, read or write of the probe that takes longer fails the run.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may take to start listening, and to stop.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the load may run past the cap (for the traced windows, which
/// come after it) if nothing stops it.
const LOAD_GRACE: Duration = Duration::from_secs(60);

/// The system calls that read from a socket, and those that poll the OS.
const READS: &[&str] = &["read", "recvfrom", "recvmsg", "readv"];
const POLLS: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How much to run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Busy (streaming) connections.
    busy: usize,
    /// Round trips on the idle connection, per round.
    round_trips: usize,
    /// New connections timed to their first echo, per round.
    accepts: usize,
    /// Load before the probe starts.
    warmup: Duration,
    /// The traced window (`--syscalls`).
    syscall_window: Duration,
    /// Rounds per runtime.
    rounds: usize,
    /// The hard cap per runtime and round.
    cap: Duration,
}

impl Plan {
    /// Full: 8 busy connections, 2000 round trips and 200 accepts, 3
    /// rounds; Quick: 500 and 50, 1 round; Tiny: 2 busy connections, 20 and
    /// 5, 1 round.
    pub(crate) fn new(size: Size) -> Plan {
        let cap = Duration::from_secs(30);
        match size {
            Size::Full => Plan {
                busy: 8,
                round_trips: 2000,
                accepts: 200,
                warmup: Duration::from_millis(300),
                syscall_window: Duration::from_secs(1),
                rounds: 3,
                cap,
            },
            Size::Quick => Plan {
                busy: 8,
                round_trips: 500,
                accepts: 50,
                warmup: Duration::from_millis(200),
                syscall_window: Duration::from_millis(500),
                rounds: 1,
                cap,
            },
            Size::Tiny => Plan {
                busy: 2,
                round_trips: 20,
                accepts: 5,
                warmup: Duration::from_millis(50),
                syscall_window: Duration::from_millis(100),
                rounds: 1,
                cap,
            },
        }
    }
}

/// This thread's kernel id (what perf's `-t` and strace's `-p` take).
fn thread_id() -> u32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::gettid() as u32 }
}

// --- the servers ----------------------------------------------------------

/// Tells a server to stop.
type StopFn = Box<dyn FnOnce() + Send>;

/// A server's thread body.
type ServeFn = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// An echo server on a thread of its own; stopped (and joined) by
/// [`Server::stop`] or on drop.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    /// The server thread's kernel id.
    tid: u32,
    /// Tells the server to stop.
    stop: Option<StopFn>,
    /// The server's result, sent as its thread ends.
    done: mpsc::Receiver<io::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `kind`'s server on a new thread (pinned to `cpu`, if given)
    /// and waits until it listens.
    fn start(kind: Kind, cpu: Option<usize>) -> io::Result<Server> {
        let (ready_tx, ready_rx) = mpsc::channel::<(SocketAddr, u32)>();
        let (done_tx, done_rx) = mpsc::channel::<io::Result<()>>();
        let (stop, body): (StopFn, ServeFn) = match kind {
            Kind::Trio => {
                let (tx, rx) = mpsc::channel::<()>();
                let stop = move || {
                    let _ = tx.send(());
                };
                (Box::new(stop), Box::new(move || serve_trio(&ready_tx, rx)))
            }
            Kind::Tokio => {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let stop = move || {
                    let _ = tx.send(());
                };
                (Box::new(stop), Box::new(move || serve_tokio(&ready_tx, rx)))
            }
            Kind::TrioUring | Kind::Monoio => {
                return Err(io::Error::other(format!("the fairness part has no {} server", kind.name())));
            }
        };
        let thread = std::thread::Builder::new().name(format!("{}-server", kind.name())).spawn(move || {
            let _pinned = cpu.map(PinnedThread::new);
            let _ = done_tx.send(body());
        })?;
        let mut server = Server { kind, addr: LOOPBACK, tid: 0, stop: Some(stop), done: done_rx, thread: Some(thread) };
        match ready_rx.recv_timeout(SERVER_TIMEOUT) {
            Ok((addr, tid)) => {
                server.addr = addr;
                server.tid = tid;
                Ok(server)
            }
            // It failed (the reason is on `done`), or it hangs; the drop
            // stops it.
            Err(_) => Err(match server.shutdown() {
                Err(e) => e,
                Ok(()) => io::Error::other(format!("the {} server did not start listening", kind.name())),
            }),
        }
    }

    /// Stops the server and waits for its thread; its error, if any.
    fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(stop) = self.stop.take() else { return Ok(()) };
        stop();
        let name = self.kind.name();
        match self.done.recv_timeout(SERVER_TIMEOUT) {
            // The thread is left behind (detached): nothing else can be done.
            Err(RecvTimeoutError::Timeout) => {
                Err(io::Error::other(format!("the {name} server did not stop within {SERVER_TIMEOUT:?}")))
            }
            got => {
                let joined = self.thread.take().map(JoinHandle::join);
                match (got, joined) {
                    (_, Some(Err(_))) => Err(io::Error::other(format!("the {name} server thread panicked"))),
                    (Ok(result), _) => result.map_err(|e| io::Error::other(format!("{name} server: {e}"))),
                    (Err(_), _) => Err(io::Error::other(format!("the {name} server thread ended without a result"))),
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// One connection of trio's server.
async fn trio_echo(stream: trio::net::TcpStream) -> trio::Result<()> {
    let mut buf = vec![0u8; SERVER_BUF];
    loop {
        let k = match stream.receive_some(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(k) => k,
        };
        if stream.send_all(&buf[..k]).await.is_err() {
            return Ok(());
        }
    }
}

/// trio's server: `serve_tcp` until `stop` says so (or its sender is gone),
/// then every task is cancelled. Ctrl-C is left to the bench.
fn serve_trio(ready: &mpsc::Sender<(SocketAddr, u32)>, stop: mpsc::Receiver<()>) -> io::Result<()> {
    let tid = thread_id();
    let result = trio::RunOptions::new().handle_ctrl_c(false).run(async {
        trio::open_nursery(async |n| -> trio::Result<()> {
            let addrs = n
                .start(async move |status| {
                    match trio::net::serve_tcp(trio_echo, 0, Some("127.0.0.1"), Some(status)).await? {}
                })
                .await?;
            let addr = *addrs.first().ok_or(trio::Error::Runtime("serve_tcp reported no address"))?;
            let _ = ready.send((addr, tid));
            // A worker thread waits for the word to stop; this one serves.
            let _ = trio::to_thread::Options::new().abandon_on_cancel(true).run_sync(move || stop.recv()).await?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    });
    match result {
        Ok(()) | Err(trio::Error::Cancelled(_)) => Ok(()),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// One connection of tokio's server.
async fn tokio_echo(mut stream: tokio::net::TcpStream) {
    let mut buf = vec![0u8; SERVER_BUF];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => {
                if stream.write_all(&buf[..k]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// tokio's server: an accept loop until `stop` says so (or its sender is
/// gone), then the runtime is dropped with every task.
fn serve_tokio(ready: &mpsc::Sender<(SocketAddr, u32)>, stop: tokio::sync::oneshot::Receiver<()>) -> io::Result<()> {
    let tid = thread_id();
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(LOOPBACK).await?;
        let _ = ready.send((listener.local_addr()?, tid));
        tokio::spawn(async move {
            // An accept error ends the loop; the probe then times out.
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tokio_echo(stream));
            }
        });
        let _ = stop.await;
        Ok::<(), io::Error>(())
    })?;
    drop(rt);
    Ok(())
}

// --- the load -------------------------------------------------------------

/// The busy connections and the thread that drives them; stopped (and
/// joined) by [`Busy::stop`] or on drop.
struct Busy {
    stop: Arc<AtomicBool>,
    /// Echoed bytes received so far, per connection.
    bytes: Arc<[AtomicU64]>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Busy {
    /// Opens `conns` connections to `addr` and starts streaming on them
    /// from a thread pinned to `cpu` (if given), until stopped or `until`.
    fn start(addr: SocketAddr, conns: usize, cpu: Option<usize>, until: Instant) -> io::Result<Busy> {
        let poll = Poll::new()?;
        let mut streams = Vec::with_capacity(conns);
        for i in 0..conns {
            let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let mut s = mio::net::TcpStream::from_std(s);
            poll.registry().register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            streams.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let bytes: Arc<[AtomicU64]> = (0..conns).map(|_| AtomicU64::new(0)).collect();
        let thread = std::thread::Builder::new().name("fairness-load".to_owned()).spawn({
            let (stop, bytes) = (stop.clone(), bytes.clone());
            move || {
                let _pinned = cpu.map(PinnedThread::new);
                stream_loop(poll, streams, &stop, &bytes, until)
            }
        })?;
        Ok(Busy { stop, bytes, thread: Some(thread) })
    }

    /// Echoed bytes so far, per connection.
    fn bytes(&self) -> Vec<u64> {
        self.bytes.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Waits `warmup`, and then until every connection has had an echo
    /// (or `until`, or the load thread ended).
    fn warm_up(&self, warmup: Duration, until: Instant) {
        std::thread::sleep(warmup);
        while self.bytes().contains(&0)
            && Instant::now() < until
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the load (closing its connections); its error, if any.
    fn stop(mut self) -> io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("the load thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The load thread: every socket written whenever it takes more, and
/// drained whenever something arrives (edge-triggered: both until
/// `WouldBlock`), until `stop` or `until`.
fn stream_loop(
    mut poll: Poll,
    mut streams: Vec<mio::net::TcpStream>,
    stop: &AtomicBool,
    bytes: &[AtomicU64],
    until: Instant,
) -> io::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut scratch = vec![0u8; SERVER_BUF];
    let mut got = vec![0u64; streams.len()];
    let mut events = Events::with_capacity(64);
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let s = &mut streams[i];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                loop {
                    match s.read(&mut scratch) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the server closed a busy connection",
                            ));
                        }
                        Ok(n) => got[i] += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                bytes[i].store(got[i], Ordering::Relaxed);
            }
            if ev.is_writable() {
                loop {
                    match s.write(&chunk) {
                        Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the server stopped reading")),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

// --- the probe ------------------------------------------------------------

/// The idle connection.
struct Idle {
    stream: TcpStream,
    seq: u64,
    msg: [u8; PROBE_MSG],
    back: [u8; PROBE_MSG],
}

impl Idle {
    /// Connects and does one round trip (so that its task exists).
    fn open(addr: SocketAddr) -> io::Result<Idle> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let msg = std::array::from_fn(|j| (j * 7 % 251) as u8);
        let mut idle = Idle { stream, seq: 0, msg, back: [0; PROBE_MSG] };
        idle.round_trip()?;
        Ok(idle)
    }

    /// One round trip (the message carries a sequence number, so a stale
    /// echo does not match); its latency in ns.
    fn round_trip(&mut self) -> io::Result<u64> {
        self.seq += 1;
        self.msg[..8].copy_from_slice(&self.seq.to_le_bytes());
        let t = Instant::now();
        self.stream.write_all(&self.msg)?;
        self.stream.read_exact(&mut self.back)?;
        let ns = t.elapsed().as_nanos() as u64;
        if self.back != self.msg {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the idle connection's echo differs"));
        }
        Ok(ns)
    }

    /// Up to `n` round trips, each after a pause, until `until`; their
    /// latencies, and whether `until` cut them short.
    fn round_trips(&mut self, n: usize, until: Instant) -> io::Result<(Vec<u64>, bool)> {
        let mut ns = Vec::with_capacity(n.min(1 << 16));
        while ns.len() < n {
            if Instant::now() >= until {
                return Ok((ns, true));
            }
            std::thread::sleep(PAUSE);
            ns.push(self.round_trip()?);
        }
        Ok((ns, false))
    }
}

/// Connect, 1 byte there and back, close with a reset; the time from
/// before the connect to the echo, in ns.
fn accept_once(addr: SocketAddr, byte: u8) -> io::Result<u64> {
    let mut back = [0u8];
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[byte])?;
    s.read_exact(&mut back)?;
    let ns = t.elapsed().as_nanos() as u64;
    if back != [byte] {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a new connection's echo differs"));
    }
    set_linger_zero(&s)?;
    Ok(ns)
}

/// The measured probe: `plan.round_trips` round trips on `idle` and
/// `plan.accepts` new connections spread evenly among them (one after
/// every `round_trips / accepts` round trips), each after a pause, until
/// `until`. The round trips' and the new connections' times, and whether
/// `until` cut them short.
fn probe(idle: &mut Idle, addr: SocketAddr, plan: &Plan, until: Instant) -> io::Result<(Vec<u64>, Vec<u64>, bool)> {
    let every = (plan.round_trips / plan.accepts.max(1)).max(1);
    let mut round_trips = Vec::with_capacity(plan.round_trips);
    let mut accepts = Vec::with_capacity(plan.accepts);
    while round_trips.len() < plan.round_trips || accepts.len() < plan.accepts {
        if Instant::now() >= until {
            return Ok((round_trips, accepts, true));
        }
        std::thread::sleep(PAUSE);
        let accept_due = round_trips.len() >= plan.round_trips || round_trips.len() >= every * (accepts.len() + 1);
        if accepts.len() < plan.accepts && accept_due {
            accepts.push(accept_once(addr, accepts.len() as u8)?);
        } else {
            round_trips.push(idle.round_trip()?);
        }
    }
    Ok((round_trips, accepts, false))
}

// --- one measurement ------------------------------------------------------

/// One runtime's figures in one round.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// The idle connection's round trips, ns.
    idle_ns: Vec<u64>,
    /// Connect to first echo, ns.
    accept_ns: Vec<u64>,
    /// Echoed bytes per busy connection over the probe's window.
    busy_bytes: Vec<u64>,
    window: Duration,
    /// The server thread's system calls (`--syscalls`).
    traced: Option<Traced>,
    /// The hard cap cut the probe short.
    capped: bool,
}

/// Where the threads run.
#[derive(Clone, Copy, Debug)]
struct Pins {
    server: Option<usize>,
    client: Option<usize>,
}

/// One round of `kind`, on a fresh server.
fn measure(kind: Kind, plan: &Plan, tracer: Option<Tracer>, pins: Pins) -> io::Result<Sample> {
    let until = Instant::now() + plan.cap;
    let server = Server::start(kind, pins.server)?;
    let mut idle = Idle::open(server.addr)?;
    // The load runs on through the traced window, after the cap; its own
    // bound is only a backstop (it is stopped below).
    let busy = Busy::start(server.addr, plan.busy, pins.client, until + LOAD_GRACE)?;
    busy.warm_up(plan.warmup, until);
    let (t0, b0) = (Instant::now(), busy.bytes());
    let (idle_ns, accept_ns, capped) = probe(&mut idle, server.addr, plan, until)?;
    let (window, b1) = (t0.elapsed(), busy.bytes());
    let traced = match tracer {
        Some(t) => count_reads(t, &server, &mut idle, plan.syscall_window)?,
        None => None,
    };
    busy.stop()?;
    drop(idle);
    server.stop()?;
    Ok(Sample {
        idle_ns,
        accept_ns,
        busy_bytes: b1.iter().zip(&b0).map(|(b, a)| b - a).collect(),
        window,
        traced,
        capped,
    })
}

/// What a traced window counted on the server thread.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Traced {
    /// Read calls ([`READS`]).
    reads: u64,
    /// OS polls ([`POLLS`]).
    polls: u64,
    /// The probe's round trips in the window (each needs the server to
    /// learn from the OS that the idle connection is readable).
    round_trips: usize,
}

impl Traced {
    /// The read calls and the OS polls in `counts`.
    fn new(counts: &Counts, round_trips: usize) -> Traced {
        let sum =
            |names: &[&str]| counts.by_call.iter().filter(|(c, _)| names.contains(&c.as_str())).map(|(_, n)| n).sum();
        Traced { reads: sum(READS), polls: sum(POLLS), round_trips }
    }

    /// Reads per poll (a window without a poll counts as one: a lower
    /// bound).
    fn per_poll(&self) -> f64 {
        self.reads as f64 / self.polls.max(1) as f64
    }
}

/// Counts the server thread's system calls over a window of `window` of
/// the same load and idle round trips (after the cap too: it is short). A tracer
/// that fails is tried once more, then the figure is n/a (`None`, with a
/// line saying why); a failing round trip fails the run.
fn count_reads(tracer: Tracer, server: &Server, idle: &mut Idle, window: Duration) -> io::Result<Option<Traced>> {
    let mut why = String::new();
    for _ in 0..2 {
        let end = Instant::now() + window;
        let mut probe = Ok((Vec::new(), false));
        let counted = count_target(tracer, Target::Thread(server.tid), || {
            probe = idle.round_trips(usize::MAX, end);
            Ok(())
        });
        let (ns, _) = probe?;
        match counted {
            Ok((counts, ())) => return Ok(Some(Traced::new(&counts, ns.len()))),
            Err(e) => why = e.to_string().lines().next().unwrap_or_default().to_owned(),
        }
    }
    println!("SKIPPED: fairness reads per epoll_wait, {} server ({}): {why}", server.kind.name(), tracer.name());
    Ok(None)
}

/// The `q` quantile (0..=1), nearest rank, of `ns` in µs; NaN for none.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

/// The median (the upper one of an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One runtime's figures over all rounds.
#[derive(Clone, Debug)]
struct Summary {
    idle_p50: f64,
    idle_p99: f64,
    accept_p50: f64,
    accept_p99: f64,
    idle_count: usize,
    accept_count: usize,
    mib_per_sec: f64,
    /// The slowest busy connection's bytes over the mean, lowest of the
    /// rounds (1: all equal).
    slowest_share: f64,
    traced: Option<Traced>,
    capped: bool,
}

fn summarize(samples: &[Sample]) -> Summary {
    let pooled = |f: fn(&Sample) -> &Vec<u64>| {
        let mut v: Vec<u64> = samples.iter().flat_map(|s| f(s).iter().copied()).collect();
        v.sort_unstable();
        v
    };
    let (idle, accept) = (pooled(|s| &s.idle_ns), pooled(|s| &s.accept_ns));
    let rate = |s: &Sample| {
        let secs = s.window.as_secs_f64();
        if secs > 0.0 { s.busy_bytes.iter().sum::<u64>() as f64 / secs / (1024.0 * 1024.0) } else { f64::NAN }
    };
    let share = |s: &Sample| {
        let mean = s.busy_bytes.iter().sum::<u64>() as f64 / s.busy_bytes.len().max(1) as f64;
        s.busy_bytes.iter().min().map_or(f64::NAN, |&m| if mean > 0.0 { m as f64 / mean } else { f64::NAN })
    };
    Summary {
        idle_p50: quantile_us(&idle, 0.5),
        idle_p99: quantile_us(&idle, 0.99),
        accept_p50: quantile_us(&accept, 0.5),
        accept_p99: quantile_us(&accept, 0.99),
        idle_count: idle.len(),
        accept_count: accept.len(),
        mib_per_sec: median(samples.iter().map(rate).collect()),
        slowest_share: samples.iter().map(share).fold(f64::NAN, f64::min),
        traced: samples.iter().find_map(|s| s.traced),
        capped: samples.iter().any(|s| s.capped),
    }
}

/// The records: both latencies' p50 and p99, the busy streams' rate, and
/// (when counted) reads per poll.
fn records(plan: &Plan, a: &Summary, b: &Summary) -> Vec<Record> {
    let case = format!("fairness {} busy conns", plan.busy);
    let mut v = vec![
        Record::lower(GROUP, format!("{case}: idle conn 64 B round trip p50"), a.idle_p50, b.idle_p50, "µs"),
        Record::lower(GROUP, format!("{case}: idle conn 64 B round trip p99"), a.idle_p99, b.idle_p99, "µs"),
        Record::lower(GROUP, format!("{case}: connect + first 1 B echo p50"), a.accept_p50, b.accept_p50, "µs"),
        Record::lower(GROUP, format!("{case}: connect + first 1 B echo p99"), a.accept_p99, b.accept_p99, "µs"),
        Record::higher(GROUP, format!("{case}: busy streams' echo throughput"), a.mib_per_sec, b.mib_per_sec, "MiB/s"),
    ];
    if let (Some(x), Some(y)) = (a.traced, b.traced) {
        v.push(Record::lower(
            GROUP,
            format!("{case}: server reads per epoll_wait"),
            x.per_poll(),
            y.per_poll(),
            "reads/poll",
        ));
    }
    v
}

/// Runs the fairness benchmark of `plan`, prints the comparison and returns
/// it. `tracer`: `--syscalls` (its `Err` says why no tracer works).
///
/// # Panics
/// If a server fails to start or stop, or a connection fails or stalls.
pub(crate) fn run(plan: &Plan, tracer: Option<Result<Tracer, String>>) -> Vec<Record> {
    let tracer = match tracer {
        Some(Ok(t)) => Some(t),
        Some(Err(why)) => {
            println!("SKIPPED: fairness reads per epoll_wait (--syscalls: {why})");
            None
        }
        None => None,
    };
    println!();
    println!(
        "fairness: echo server on a thread of this process (one task per connection, 64 KiB buffer, TCP_NODELAY); \
         {} busy connections streaming {} KiB writes both ways at full speed (one mio client thread); probe: {} \
         round trips of {PROBE_MSG} B on an idle connection, and among them {} times connect + 1 B echo, each after \
         a {:?} pause; latencies pooled over {} round(s), throughput their median; ratio = trio/tokio (rates: tokio/trio)",
        plan.busy,
        CHUNK / 1024,
        plan.round_trips,
        plan.accepts,
        PAUSE,
        plan.rounds
    );
    match tracer {
        Some(t) => println!(
            "reads per epoll_wait: {} on the server thread only, separate {:.1} s window of the same load",
            if t == Tracer::Perf { "perf stat -t (syscall tracepoints)" } else { "strace -c -p TID" },
            plan.syscall_window.as_secs_f64()
        ),
        None => println!("reads per epoll_wait: n/a (run with --syscalls, needs perf or strace)"),
    }
    let cpus = allowed_cpus();
    let pins = if cpus.len() >= 2 {
        println!("pinned: the server thread on CPU {}, the load thread and the probe on CPU {}", cpus[1], cpus[0]);
        Pins { server: Some(cpus[1]), client: Some(cpus[0]) }
    } else {
        println!("not pinned: one CPU");
        Pins { server: None, client: None }
    };
    // The probe is this thread.
    let _pinned = pins.client.map(PinnedThread::new);
    let mut got: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for round in 0..plan.rounds {
        for (i, kind) in [Kind::Trio, Kind::Tokio].into_iter().enumerate() {
            let t = if round == 0 { tracer } else { None };
            let s = measure(kind, plan, t, pins).unwrap_or_else(|e| panic!("fairness, {} server: {e}", kind.name()));
            got[i].push(s);
        }
    }
    let (a, b) = (summarize(&got[0]), summarize(&got[1]));
    for (name, s) in [("trio", &a), ("tokio", &b)] {
        if s.capped {
            println!(
                "({name}: the {:?} cap cut the probe short: {} round trips, {} connects measured)",
                plan.cap, s.idle_count, s.accept_count
            );
        }
    }
    let records = records(plan, &a, &b);
    print_table(&records, &a, &b);
    records
}

fn print_table(records: &[Record], a: &Summary, b: &Summary) {
    println!("{:<40} {:>12} {:>12} {:>8}", "metric", "trio", "tokio", "ratio");
    for r in records {
        let metric = r.name.split_once(": ").map_or(r.name.as_str(), |(_, m)| m);
        println!("{:<40} {:>12.1} {:>12.1} {:>8.2}", format!("{metric} ({})", r.unit), r.trio, r.tokio, r.ratio());
    }
    println!(
        "{:<40} {:>12.2} {:>12.2} {:>8}",
        "slowest busy conn / mean (bytes)", a.slowest_share, b.slowest_share, "-"
    );
    if let (Some(x), Some(y)) = (a.traced, b.traced) {
        let row = |what: &str, f: fn(&Traced) -> u64| {
            println!("{:<40} {:>12} {:>12} {:>8}", format!("  {what} (traced window)"), f(&x), f(&y), "-");
        };
        row("read calls", |t| t.reads);
        row("epoll_waits", |t| t.polls);
        row("idle round trips", |t| t.round_trips as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run_gives_the_records() {
        let records = run(&Plan::new(Size::Tiny), None);
        let units: Vec<(&str, bool)> = records.iter().map(|r| (r.unit, r.higher_is_better)).collect();
        assert_eq!(units, [("µs", false), ("µs", false), ("µs", false), ("µs", false), ("MiB/s", true)]);
        for r in &records {
            assert_eq!(r.group, GROUP);
            assert!(r.name.starts_with("fairness 2 busy conns: "), "{r:?}");
            assert!(r.trio.is_finite() && r.trio > 0.0, "{r:?}");
            assert!(r.tokio.is_finite() && r.tokio > 0.0, "{r:?}");
        }
        // p99 is never below p50.
        assert!(records[1].trio >= records[0].trio && records[3].tokio >= records[2].tokio, "{records:?}");
    }

    /// `BENCH_PRINT=1 cargo test --release -p trio-bench --bin trio-bench
    /// fairness::tests::quick -- --nocapture` prints the `--quick` figures.
    #[test]
    fn quick_figures_on_request() {
        if std::env::var_os("BENCH_PRINT").is_some_and(|v| v == "1") {
            assert_eq!(run(&Plan::new(Size::Quick), None).len(), 5);
        }
    }

    #[test]
    fn servers_start_echo_and_stop() {
        for kind in [Kind::Trio, Kind::Tokio] {
            let server = Server::start(kind, None).expect("start");
            let addr = server.addr;
            assert_ne!(addr.port(), 0);
            let mut idle = Idle::open(server.addr).expect("open");
            let (ns, capped) = idle.round_trips(3, Instant::now() + Duration::from_secs(30)).expect("round trips");
            assert_eq!((ns.len(), capped), (3, false));
            let plan = Plan { round_trips: 5, accepts: 2, ..Plan::new(Size::Tiny) };
            let (rts, accepts, capped) =
                probe(&mut idle, addr, &plan, Instant::now() + Duration::from_secs(30)).expect("probe");
            assert_eq!((rts.len(), accepts.len(), capped), (5, 2, false));
            assert_eq!(idle.seq, 1 + 3 + 5, "the round trips are the idle connection's");
            server.stop().expect("stop");
            // Stopped: nothing listens there any more.
            assert!(TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn the_cap_stops_the_probe() {
        let server = Server::start(Kind::Tokio, None).expect("start");
        let mut idle = Idle::open(server.addr).expect("open");
        let (rts, accepts, capped) =
            probe(&mut idle, server.addr, &Plan::new(Size::Tiny), Instant::now()).expect("probe");
        assert_eq!((rts.len(), accepts.len(), capped), (0, 0, true));
        let (ns, capped) = idle.round_trips(10, Instant::now()).expect("round trips");
        assert_eq!((ns.len(), capped), (0, true));
    }

    #[test]
    fn figures() {
        let counts = Counts {
            total: 100,
            by_call: vec![
                ("recvfrom".into(), 40),
                ("sendto".into(), 40),
                ("read".into(), 2),
                ("epoll_wait".into(), 10),
                ("other".into(), 8),
            ],
        };
        let traced = Traced::new(&counts, 9);
        assert_eq!(traced, Traced { reads: 42, polls: 10, round_trips: 9 });
        assert_eq!(traced.per_poll(), 4.2);
        assert_eq!(Traced { reads: 5, polls: 0, round_trips: 0 }.per_poll(), 5.0);
        assert_eq!(quantile_us(&[1000, 2000, 3000, 4000], 0.5), 2.0);
        assert_eq!(quantile_us(&[1000, 2000, 3000, 4000], 0.99), 4.0);
        assert!(quantile_us(&[], 0.5).is_nan());
        let s = Sample {
            idle_ns: vec![3000, 1000],
            accept_ns: vec![5000],
            busy_bytes: vec![1 << 20, 3 << 20],
            window: Duration::from_secs(2),
            traced: Some(traced),
            capped: false,
        };
        let sum = summarize(&[s]);
        assert_eq!((sum.idle_p50, sum.idle_p99, sum.accept_p50), (1.0, 3.0, 5.0));
        assert_eq!((sum.mib_per_sec, sum.slowest_share), (2.0, 0.5));
        let rs = records(&Plan::new(Size::Full), &sum, &sum);
        assert_eq!(rs.len(), 6);
        assert_eq!((rs[5].trio, rs[5].unit, rs[5].higher_is_better), (4.2, "reads/poll", false));
        assert_eq!(Plan::new(Size::Tiny).busy, 2);
        assert_eq!(Plan::new(Size::Full).round_trips, 2000);
    }
}
