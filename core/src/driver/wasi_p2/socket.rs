//! The preview 2 backend's sockets (`wasm32-wasip2`): TCP and name
//! resolution through `wasi:sockets`.
//!
//! A preview 2 socket is a `tcp-socket` resource; a connected one comes with
//! an `input-stream` and an `output-stream`. There are no descriptors:
//! readiness comes as `pollable`s, which each type creates and hands to the
//! run's driver (`driver/wasi_p2/mod.rs`), registering the number it gets back
//! with the run's I/O table as natively:
//!
//! - a listener: the socket's pollable, for reading (ready when `accept`
//!   can proceed);
//! - a connecting stream: the socket's pollable, for writing, until
//!   `finish-connect` gives the streams; then the input stream's pollable
//!   for reading and the output stream's for writing.
//!
//! Operations are the readiness way, as natively: try the call, wait for
//! the driver's report on "would block" (`readiness.rs`).
//!
//! # Resource order
//!
//! The component model forbids dropping a resource before its children: a
//! pollable before the stream or socket it came from, the streams before
//! their socket. Each type therefore holds its registration first (dropping
//! it deregisters, and the driver drops the pollables), then the streams,
//! then the socket, and `aclose` releases them in that order.
//!
//! # Host behaviour (wasmtime 46 and 48, `wasi:sockets@0.2.12`)
//!
//! - `start-bind`/`start-listen` (and the `finish-*` calls) complete at once;
//!   [`TcpListener::bind`] stays synchronous as natively, and would block
//!   the thread on the socket's pollable if a host made them wait.
//! - The host's policy is checked in `start-bind` and `start-connect` (and
//!   by some hosts in `start-listen`): a denied address is
//!   `access-denied`, reported as `io::ErrorKind::PermissionDenied`
//!   ("access denied: the host's network policy does not allow binding to
//!   ADDR").
//! - `SO_REUSEADDR` is implicit (the host sets it for every listener);
//!   IPv6 sockets are IPv6-only. There is no `TCP_NODELAY` control:
//!   [`TcpStream::set_nodelay`] is a no-op.
//! - `check-write` permits 1 GiB (wasmtime 46) or 64 KiB (48) at a time; a
//!   `write` the socket cannot take at once continues in the host's
//!   background, and `check-write` says 0 until it is done. wasmtime 46
//!   discards the rest of such a write when the stream is dropped; 48 waits
//!   for it. So `send_all` returns only after a `flush` and once the stream
//!   permits more data: everything is in the host's socket by then, and
//!   closing cannot lose it. This is up to one socket buffer later than
//!   natively (the socket must have room again).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use wasip2::io::poll::Pollable;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::resolve_addresses;
use wasip2::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
};
use wasip2::sockets::tcp::{ShutdownType, TcpSocket};
use wasip2::sockets::tcp_create_socket::create_tcp_socket;

use crate::driver::readiness::{Registered, SocketIo};
use crate::driver::socket::{ListenerOps, SocketOps, StreamOps, TcpListenerOps, TcpStreamOps};
use crate::driver::{Backend, RawSource};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel;
use crate::net::ListenOptions;
use crate::runtime::{self, io::Dir};

/// The most `send_all` hands to one `write` (the host copies it).
const MAX_WRITE: u64 = 1 << 20;

/// A source registered with the run: the driver holds its pollables, the
/// I/O table its readiness. Dropping it deregisters, which drops the
/// pollables (so it must go before the resources they came from).
#[derive(Debug)]
struct Reg {
    io: IoHandle,
    src: RawSource,
}

impl Reg {
    /// Registers the pollables `read()` and `write()` (made inside the
    /// runtime borrow, so nothing is created outside a run).
    fn new(read: impl FnOnce() -> Option<Pollable>, write: impl FnOnce() -> Option<Pollable>) -> Result<Reg> {
        let src = runtime::with(|rt| rt.driver.backend.add_source(read(), write()))?;
        match IoHandle::new(src) {
            Ok(io) => Ok(Reg { io, src }),
            Err(e) => {
                let _ = runtime::with(|rt| rt.driver.deregister(src));
                Err(e)
            }
        }
    }

    /// Replaces the pollables (the old ones are dropped first).
    fn set_pollables(
        &self,
        read: impl FnOnce() -> Option<Pollable>,
        write: impl FnOnce() -> Option<Pollable>,
    ) -> Result<()> {
        runtime::with(|rt| rt.driver.backend.set_pollables(self.src, read(), write()))
    }
}

// ---------------------------------------------------------------------------
// Addresses and errors
// ---------------------------------------------------------------------------

fn family(addr: &SocketAddr) -> IpAddressFamily {
    if addr.is_ipv4() { IpAddressFamily::Ipv4 } else { IpAddressFamily::Ipv6 }
}

fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
    match addr {
        SocketAddr::V4(a) => {
            let [a0, a1, a2, a3] = a.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress { port: a.port(), address: (a0, a1, a2, a3) })
        }
        SocketAddr::V6(a) => {
            let [s0, s1, s2, s3, s4, s5, s6, s7] = a.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: a.port(),
                flow_info: a.flowinfo(),
                address: (s0, s1, s2, s3, s4, s5, s6, s7),
                scope_id: a.scope_id(),
            })
        }
    }
}

fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
    match addr {
        IpSocketAddress::Ipv4(a) => {
            let (a0, a1, a2, a3) = a.address;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a0, a1, a2, a3), a.port))
        }
        IpSocketAddress::Ipv6(a) => {
            let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7),
                a.port,
                a.flow_info,
                a.scope_id,
            ))
        }
    }
}

fn ip_from_wasi(addr: IpAddress) -> IpAddr {
    match addr {
        IpAddress::Ipv4((a0, a1, a2, a3)) => IpAddr::V4(Ipv4Addr::new(a0, a1, a2, a3)),
        IpAddress::Ipv6((s0, s1, s2, s3, s4, s5, s6, s7)) => IpAddr::V6(Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7)),
    }
}

/// A `wasi:sockets` error code as an `io::Error` whose message says what
/// was being done (`what`: "binding to 127.0.0.1:80", ...).
fn code_error(code: ErrorCode, what: &dyn fmt::Display) -> io::Error {
    match describe(code, what) {
        Ok((kind, text)) => io::Error::new(kind, format!("{what}: {text}")),
        Err(e) => e,
    }
}

/// A `connect` error: as natively, the message does not repeat the address
/// (`open_tcp_stream` adds it), except for a denial.
fn connect_error(code: ErrorCode, addr: SocketAddr) -> io::Error {
    match describe(code, &format_args!("connecting to {addr}")) {
        Ok((kind, text)) => io::Error::new(kind, text),
        Err(e) => e,
    }
}

/// The kind and text of `code`, or the whole error where it has its own
/// form (a denial, `EMFILE`).
fn describe(code: ErrorCode, what: &dyn fmt::Display) -> std::result::Result<(io::ErrorKind, &'static str), io::Error> {
    use io::ErrorKind as K;
    let (kind, text) = match code {
        ErrorCode::AccessDenied => {
            return Err(io::Error::new(
                K::PermissionDenied,
                format!("access denied: the host's network policy does not allow {what}"),
            ));
        }
        ErrorCode::Unknown => (K::Other, "unknown error"),
        ErrorCode::NotSupported => (K::Unsupported, "not supported by the host"),
        ErrorCode::InvalidArgument => (K::InvalidInput, "invalid argument"),
        ErrorCode::OutOfMemory => (K::OutOfMemory, "out of memory"),
        ErrorCode::Timeout => (K::TimedOut, "timed out"),
        ErrorCode::ConcurrencyConflict => (K::ResourceBusy, "another operation is in progress on this socket"),
        ErrorCode::NotInProgress => (K::Other, "no such operation in progress"),
        ErrorCode::WouldBlock => (K::WouldBlock, "would block"),
        ErrorCode::InvalidState => (K::Other, "not valid in the socket's current state"),
        // `EMFILE`, so that `serve_listeners` can treat it as natively.
        ErrorCode::NewSocketLimit => return Err(crate::driver::os::too_many_open_files()),
        ErrorCode::AddressNotBindable => (K::AddrNotAvailable, "not an address the host's network can bind"),
        ErrorCode::AddressInUse => (K::AddrInUse, "address in use"),
        ErrorCode::RemoteUnreachable => (K::HostUnreachable, "remote address unreachable"),
        ErrorCode::ConnectionRefused => (K::ConnectionRefused, "connection refused"),
        ErrorCode::ConnectionReset => (K::ConnectionReset, "connection reset"),
        ErrorCode::ConnectionAborted => (K::ConnectionAborted, "connection aborted"),
        ErrorCode::DatagramTooLarge => (K::InvalidInput, "datagram too large"),
        ErrorCode::NameUnresolvable => (K::NotFound, "name does not exist or has no suitable addresses"),
        ErrorCode::TemporaryResolverFailure => (K::Other, "temporary failure in name resolution"),
        ErrorCode::PermanentResolverFailure => {
            (K::Other, "name resolution failed (the host may not allow name lookups)")
        }
    };
    Ok((kind, text))
}

fn sock_err(code: ErrorCode, what: &dyn fmt::Display) -> Error {
    Error::Io(code_error(code, what))
}

/// A failed stream operation (`last-operation-failed`): the host's message
/// decides the kind, so that a reset or a broken pipe becomes `Broken`.
fn stream_failed(e: &wasip2::io::error::Error, what: &str) -> io::Error {
    let msg = e.to_debug_string();
    let lower = msg.to_ascii_lowercase();
    let kind = if lower.contains("reset") {
        io::ErrorKind::ConnectionReset
    } else if lower.contains("broken pipe") {
        io::ErrorKind::BrokenPipe
    } else if lower.contains("abort") {
        io::ErrorKind::ConnectionAborted
    } else if lower.contains("not connected") {
        io::ErrorKind::NotConnected
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("{what}: {msg}"))
}

/// A write-side stream error: `closed` means the connection cannot take
/// data any more (the peer is gone).
fn write_error(e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed for sending"),
        StreamError::LastOperationFailed(e) => stream_failed(&e, "sending"),
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

/// Runs `finish` until it does not report `would-block`, blocking the
/// thread on the socket's pollable in between (bind and listen; wasmtime
/// completes them at once).
fn finish_blocking(
    sock: &TcpSocket,
    finish: impl Fn(&TcpSocket) -> std::result::Result<(), ErrorCode>,
) -> std::result::Result<(), ErrorCode> {
    loop {
        match finish(sock) {
            Err(ErrorCode::WouldBlock) => sock.subscribe().block(),
            r => return r,
        }
    }
}

// ---------------------------------------------------------------------------
// Name resolution
// ---------------------------------------------------------------------------

/// Resolves `host` (not an IP literal) through
/// `wasi:sockets/ip-name-lookup`, waiting on the lookup's pollable.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    lowlevel::checkpoint_if_cancelled().await?;
    let what = format_args!("resolving {host:?}");
    let stream = {
        let network = instance_network();
        resolve_addresses(&network, host).map_err(|e| sock_err(e, &what))?
    };
    let mut addrs = Vec::new();
    {
        // Dropped (with its pollable) before the lookup stream.
        let reg = Reg::new(|| Some(stream.subscribe()), || None)?;
        reg.io
            .io(Dir::Read, || {
                loop {
                    match stream.resolve_next_address() {
                        Ok(Some(ip)) => addrs.push(SocketAddr::new(ip_from_wasi(ip), port)),
                        Ok(None) => return Ok(((), false)),
                        Err(ErrorCode::WouldBlock) => return Err(would_block()),
                        Err(e) => return Err(code_error(e, &format_args!("resolving {host:?}"))),
                    }
                }
            })
            .await?;
    }
    drop(stream);
    if addrs.is_empty() {
        return Err(Error::Io(io::Error::new(io::ErrorKind::NotFound, format!("no addresses found for {host:?}"))));
    }
    Ok(addrs)
}

/// A resource (a connection, a listening socket) and its registration.
/// Fields drop in order: the registration (and with it the pollables)
/// before the resource they came from.
fn registered<T>(reg: Reg, res: T) -> Registered<T> {
    Registered { io: reg.io, slot: RefCell::new(Some(res)) }
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// A connection's resources; fields drop in order, the streams before the
/// socket they belong to.
#[derive(Debug)]
pub(crate) struct Conn {
    input: InputStream,
    output: OutputStream,
    socket: TcpSocket,
}

/// A connected TCP stream over `wasi:sockets`, registered with the input
/// stream's pollable for reading and the output stream's for writing.
pub(crate) type Stream = Registered<Conn>;

impl Stream {
    /// Wraps a connection.
    fn wrap(conn: Conn) -> Result<Stream> {
        let reg = Reg::new(|| Some(conn.input.subscribe()), || Some(conn.output.subscribe()))?;
        Ok(registered(reg, conn))
    }
}

impl TcpStreamOps for Stream {
    /// `start-connect`, then waits on the socket's pollable for
    /// `finish-connect`. A denied address is `PermissionDenied`.
    async fn connect(addr: SocketAddr) -> Result<Stream> {
        lowlevel::checkpoint_if_cancelled().await?;
        let socket = create_tcp_socket(family(&addr)).map_err(|e| Error::Io(connect_error(e, addr)))?;
        {
            let network = instance_network();
            socket.start_connect(&network, to_wasi(addr)).map_err(|e| Error::Io(connect_error(e, addr)))?;
        }
        // Declared after `socket`, so dropped (on an error or a
        // cancellation) before it.
        let reg = Reg::new(|| None, || Some(socket.subscribe()))?;
        let (input, output) = reg
            .io
            .io(Dir::Write, || match socket.finish_connect() {
                Ok(streams) => Ok((streams, false)),
                Err(ErrorCode::WouldBlock) => Err(would_block()),
                Err(e) => Err(connect_error(e, addr)),
            })
            .await?;
        let conn = Conn { input, output, socket };
        if let Err(e) = reg.set_pollables(|| Some(conn.input.subscribe()), || Some(conn.output.subscribe())) {
            // The registration (the socket's pollable) goes first.
            drop(reg);
            drop(conn);
            return Err(e);
        }
        Ok(registered(reg, conn))
    }

    /// Not available: a guest's sockets bind and connect only as the
    /// host's policy allows.
    async fn connect_from(local: IpAddr, addr: SocketAddr) -> Result<Stream> {
        lowlevel::checkpoint_if_cancelled().await?;
        Err(Error::Io(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("connecting to {addr} from local address {local} is not supported on WASI"),
        )))
    }

    fn peer_addr(&self) -> Result<SocketAddr> {
        self.with(|c| c.socket.remote_address().map(from_wasi).map_err(|e| sock_err(e, &"getting the peer address")))
    }

    /// `wasi:sockets` has no such option, so this does nothing (the host
    /// decides; wasmtime leaves the OS default).
    fn set_nodelay(&self, on: bool) -> Result<()> {
        let _ = on;
        self.check_open()
    }
}

/// The `tcp-socket` of a registered resource (a connection's, or a
/// listener itself): what [`SocketOps`] needs of either.
trait HasTcpSocket {
    fn tcp(&self) -> &TcpSocket;
}

impl HasTcpSocket for Conn {
    fn tcp(&self) -> &TcpSocket {
        &self.socket
    }
}

impl HasTcpSocket for TcpSocket {
    fn tcp(&self) -> &TcpSocket {
        self
    }
}

impl<T: HasTcpSocket> SocketOps for Registered<T> {
    fn check_open(&self) -> Result<()> {
        self.with(|_| Ok(()))
    }

    fn close(&self) {
        Registered::close(self);
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        self.with(|s| s.tcp().local_address().map(from_wasi).map_err(|e| sock_err(e, &"getting the local address")))
    }
}

impl StreamOps for Stream {
    fn write_all(&self, data: &[u8], sent: &Cell<usize>) -> impl Future<Output = Result<()>> {
        let mut flushed = false;
        self.io_on(Dir::Write, move |c| {
            // Write what the stream permits, then flush and wait until it
            // permits more: the host has taken everything by then.
            loop {
                if sent.get() == data.len() && !flushed {
                    c.output.flush().map_err(write_error)?;
                    flushed = true;
                }
                let permit = c.output.check_write().map_err(write_error)?;
                if permit == 0 {
                    return Err(would_block());
                }
                if sent.get() == data.len() {
                    return Ok(((), false));
                }
                let at = sent.get();
                let rest = (data.len() - at) as u64;
                let n = permit.min(MAX_WRITE).min(rest) as usize;
                c.output.write(&data[at..at + n]).map_err(write_error)?;
                sent.set(at + n);
            }
        })
    }

    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
        self.io_on(Dir::Read, move |c| read(c, buf))
    }

    fn ready(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.wait_ready(dir)
    }

    fn shutdown_write(&self) -> Result<()> {
        self.with(|c| shutdown_send(c).map_err(Error::Io))
    }

    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<io::Result<usize>> {
        if buf.is_empty() {
            return std::task::Poll::Ready(Ok(0));
        }
        self.poll_io_on(cx, Dir::Read, |c| read(c, buf))
    }

    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        if buf.is_empty() {
            return std::task::Poll::Ready(Ok(0));
        }
        self.poll_io_on(cx, Dir::Write, |c| {
            let permit = c.output.check_write().map_err(write_error)?;
            if permit == 0 {
                return Err(would_block());
            }
            let n = permit.min(MAX_WRITE).min(buf.len() as u64) as usize;
            c.output.write(&buf[..n]).map_err(write_error)?;
            Ok((n, false))
        })
    }

    /// Flushes and waits until the stream takes data again (every write
    /// handed over).
    #[cfg(feature = "futures-io")]
    fn poll_flush(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.poll_io_on(cx, Dir::Write, |c| {
            c.output.flush().map_err(write_error)?;
            match c.output.check_write().map_err(write_error)? {
                0 => Err(would_block()),
                _ => Ok(((), false)),
            }
        })
    }

    /// Flushes, then shuts the sending side down (as `send_eof`).
    #[cfg(feature = "futures-io")]
    fn poll_close(
        &self,
        cx: &mut std::task::Context<'_>,
        eof_sent: &std::cell::Cell<bool>,
    ) -> std::task::Poll<io::Result<()>> {
        if eof_sent.get() || self.check_open().is_err() {
            return std::task::Poll::Ready(Ok(()));
        }
        std::task::ready!(self.poll_flush(cx))?;
        if let Some(c) = self.slot.borrow().as_ref() {
            shutdown_send(c)?;
        }
        eof_sent.set(true);
        std::task::Poll::Ready(Ok(()))
    }
}

/// One non-blocking read into `buf`: nothing available is "would block";
/// the end of the stream is `Ok(0)` (and stays ready). A short read drained
/// the stream: the next one waits for the driver's report first.
fn read(c: &Conn, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    match c.input.read(buf.len() as u64) {
        Ok(v) if v.is_empty() => Err(would_block()),
        Ok(v) => {
            let n = v.len().min(buf.len());
            buf[..n].copy_from_slice(&v[..n]);
            Ok((n, n < buf.len()))
        }
        Err(StreamError::Closed) => Ok((0, false)),
        Err(StreamError::LastOperationFailed(e)) => Err(stream_failed(&e, "receiving")),
    }
}

/// `shutdown(send)`; a socket that is no longer connected has nothing to
/// send anyway. The host sends a write still in progress first.
fn shutdown_send(c: &Conn) -> io::Result<()> {
    match c.socket.shutdown(ShutdownType::Send) {
        Ok(()) | Err(ErrorCode::InvalidState) => Ok(()),
        Err(e) => Err(code_error(e, &"shutting down the sending side")),
    }
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/// A TCP listener over `wasi:sockets`, registered with the socket's
/// pollable for reading.
pub(crate) type Listener = Registered<TcpSocket>;

impl TcpListenerOps for Listener {
    /// A new `tcp-socket`, `start-bind`/`finish-bind`, `start-listen`/
    /// `finish-listen`. Synchronous as natively: should a host not finish
    /// binding or listening at once (wasmtime does), this blocks the thread
    /// on the socket's pollable until it has. Of `options` only the backlog
    /// counts (a hint); the host sets `SO_REUSEADDR` itself and IPv6
    /// sockets are IPv6-only.
    fn listen(addr: SocketAddr, options: &ListenOptions) -> Result<Listener> {
        // Outside a run, fail before making anything.
        runtime::with(|_| ())?;
        let what = format_args!("binding to {addr}");
        let socket = create_tcp_socket(family(&addr)).map_err(|e| sock_err(e, &what))?;
        {
            let network = instance_network();
            socket.start_bind(&network, to_wasi(addr)).map_err(|e| sock_err(e, &what))?;
        }
        finish_blocking(&socket, TcpSocket::finish_bind).map_err(|e| sock_err(e, &what))?;
        // A hint; hosts may refuse to change it.
        let _ = socket.set_listen_backlog_size(u64::try_from(options.backlog.max(1)).unwrap_or(1));
        let what = format_args!("listening on {addr}");
        socket.start_listen().map_err(|e| sock_err(e, &what))?;
        finish_blocking(&socket, TcpSocket::finish_listen).map_err(|e| sock_err(e, &what))?;
        let reg = Reg::new(|| Some(socket.subscribe()), || None)?;
        Ok(registered(reg, socket))
    }
}

impl ListenerOps for Listener {
    type Conn = Stream;

    async fn accept(&self) -> Result<Stream> {
        // A connection that died in the queue is skipped (as natively);
        // each retry consumes one.
        let conn = self
            .accept_on(|socket| {
                loop {
                    match socket.accept() {
                        Ok((socket, input, output)) => return Ok(Conn { input, output, socket }),
                        Err(ErrorCode::ConnectionAborted) => continue,
                        Err(ErrorCode::WouldBlock) => return Err(would_block()),
                        Err(e) => return Err(code_error(e, &"accepting a connection")),
                    }
                }
            })
            .await?;
        Stream::wrap(conn)
    }
}
