//! The load client: one thread, one epoll loop (mio) over every connection,
//! exactly one message in flight per connection. The same client drives
//! both servers.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// A phase with no reply for this long means the server is stuck: the bench
/// panics (and its guards kill the server) instead of hanging.
const STALL: Duration = Duration::from_secs(10);

struct Conn {
    stream: TcpStream,
    /// The message; its first 8 bytes are a sequence number, so a stale or
    /// repeated echo does not match.
    msg: Vec<u8>,
    seq: u64,
    written: usize,
    read: usize,
    sent_at: Instant,
    in_flight: bool,
    /// Round trips completed in the current phase.
    done: u64,
}

impl Conn {
    /// Starts the next message.
    fn send_next(&mut self) -> io::Result<()> {
        self.seq += 1;
        self.msg[..8].copy_from_slice(&self.seq.to_le_bytes());
        self.written = 0;
        self.read = 0;
        self.in_flight = true;
        self.sent_at = Instant::now();
        self.flush()
    }

    /// Writes what is left of the message, until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.msg.len() {
            match self.stream.write(&self.msg[self.written..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the server stopped reading")),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what has arrived of the echo, checking it; true once the
    /// whole message is back. It asks for at most the missing bytes, and
    /// stops there: the server sends nothing unasked, so the socket is then
    /// empty and the next echo brings a new edge (no read that ends in
    /// `WouldBlock` per message).
    fn receive(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        while self.read < self.msg.len() {
            let want = (self.msg.len() - self.read).min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed a connection")),
                Ok(n) => {
                    if scratch[..n] != self.msg[self.read..self.read + n] || self.read + n > self.written {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "the echo differs from the message"));
                    }
                    self.read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.in_flight = false;
        Ok(true)
    }
}

/// What one phase measured.
pub(crate) struct Phase {
    pub(crate) round_trips: u64,
    pub(crate) elapsed: Duration,
    /// Every round trip's latency, in ns.
    pub(crate) latencies: Vec<u64>,
}

impl Phase {
    /// The `q` quantile (0..=1) of the round-trip latency, in ns.
    pub(crate) fn quantile(&mut self, q: f64) -> u64 {
        if self.latencies.is_empty() {
            return 0;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i]
    }
}

/// Open connections to one server.
pub(crate) struct Load {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
}

impl Load {
    /// Opens `conns` connections to `addr` (`TCP_NODELAY`), for messages of
    /// `size` bytes (at least 8).
    pub(crate) fn connect(addr: SocketAddr, conns: usize, size: usize) -> io::Result<Load> {
        assert!(size >= 8, "messages carry an 8-byte sequence number");
        let poll = Poll::new()?;
        let mut list = Vec::with_capacity(conns);
        for i in 0..conns {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(s);
            poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            let msg = (0..size).map(|j| (i.wrapping_mul(131).wrapping_add(j) % 251) as u8).collect();
            list.push(Conn {
                stream,
                msg,
                seq: 0,
                written: 0,
                read: 0,
                sent_at: Instant::now(),
                in_flight: false,
                done: 0,
            });
        }
        Ok(Load { poll, events: Events::with_capacity(1024), conns: list, scratch: vec![0u8; 64 * 1024] })
    }

    /// Keeps one message in flight on every connection for `duration` (and,
    /// with `every_conn`, until each connection has done at least one round
    /// trip), then stops sending and waits for the messages in flight, so
    /// that the server is idle when this returns.
    pub(crate) fn run(&mut self, duration: Duration, every_conn: bool) -> io::Result<Phase> {
        let start = Instant::now();
        let stop_at = start + duration;
        let mut latencies = Vec::with_capacity(1 << 16);
        let mut in_flight = 0usize;
        let mut idle_conns = self.conns.len(); // connections without a round trip in this phase
        for c in &mut self.conns {
            c.done = 0;
            c.send_next()?;
            in_flight += 1;
        }
        let mut sending = true;
        let mut last_progress = Instant::now();
        while in_flight > 0 {
            match self.poll.poll(&mut self.events, Some(Duration::from_millis(100))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if sending && now >= stop_at && (!every_conn || idle_conns == 0) {
                sending = false;
            }
            if self.events.is_empty() && now.duration_since(last_progress) > STALL {
                panic!("echo load: no reply for {STALL:?} with {in_flight} messages in flight");
            }
            for ev in self.events.iter() {
                let c = &mut self.conns[ev.token().0];
                if !c.in_flight {
                    continue;
                }
                if ev.is_writable() && c.written < c.msg.len() {
                    c.flush()?;
                }
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error()) && c.receive(&mut self.scratch)? {
                    let t = Instant::now();
                    latencies.push(t.duration_since(c.sent_at).as_nanos() as u64);
                    last_progress = t;
                    in_flight -= 1;
                    if c.done == 0 {
                        idle_conns -= 1;
                    }
                    c.done += 1;
                    if sending {
                        c.send_next()?;
                        in_flight += 1;
                    }
                }
            }
        }
        Ok(Phase { round_trips: latencies.len() as u64, elapsed: start.elapsed(), latencies })
    }
}
