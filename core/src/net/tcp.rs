//! TCP streams and listeners, written once over the backend's sockets
//! (`driver/socket.rs`): natively, on WASI preview 1 (preopened listeners
//! only) and on preview 2 (`wasi:sockets`).

use std::cell::Cell;
use std::net::SocketAddr;

use super::stream::{Stream, stream_traits};
use crate::driver::socket::{ListenerOps, SocketOps, TcpListenerOps, TcpListenerSocket, TcpStreamOps, TcpStreamSocket};
use crate::error::Result;
use crate::lowlevel;

/// A connected TCP stream: a [`HalfCloseableStream`](crate::abc::HalfCloseableStream)
/// over a non-blocking socket (Trio's `SocketStream`). `TCP_NODELAY` is on
/// where the platform has it.
///
/// Also `futures-io`'s `AsyncRead`/`AsyncWrite` (feature `futures-io`, on by
/// default), on `TcpStream` and on `&TcpStream`.
///
/// On WASI preview 1 the only streams are those a preopened
/// [`TcpListener`] accepts (see `net::preopened_listeners`, preview 1
/// only); on preview 2 they connect and accept through `wasi:sockets`, as
/// the host's policy allows.
#[derive(Debug)]
pub struct TcpStream {
    pub(crate) sock: Stream<TcpStreamSocket>,
}

stream_traits!(TcpStream);

impl TcpStream {
    /// Connects to `addr`.
    ///
    /// # Checkpoint
    /// Always.
    /// # Cancellation
    /// The half-made socket is closed; returns `Err(Cancelled)`.
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` with the OS error
    /// (`ConnectionRefused`, ...); on WASI preview 2 `PermissionDenied` if
    /// the host's policy does not allow connecting to `addr`; on preview 1
    /// always `Io(Unsupported)` (it cannot open sockets).
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
        Ok(TcpStream::new(TcpStreamSocket::connect(addr).await?))
    }

    fn new(sock: TcpStreamSocket) -> TcpStream {
        TcpStream { sock: Stream::new(sock) }
    }

    /// Connects to `addr` from the local IP address `local` (happy
    /// eyeballs' `local_address`).
    pub(crate) async fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> Result<TcpStream> {
        Ok(TcpStream::new(TcpStreamSocket::connect_from(local, addr).await?))
    }

    /// The local address.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS; on WASI preview 1 always
    /// `Io(Unsupported)` (no `getsockname`).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock.core.local_addr()
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As [`local_addr`](Self::local_addr).
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.sock.core.peer_addr()
    }

    /// Sets `TCP_NODELAY` (on by default).
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS. `wasi:sockets` (preview
    /// 2) has no such option: there it does nothing. Preview 1 has no
    /// socket options: always `Io(Unsupported)`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.sock.core.set_nodelay(on)
    }
}

#[cfg(not(target_os = "wasi"))]
impl TcpStream {
    /// Takes over a connected std stream (made non-blocking, registered with
    /// the current run, `TCP_NODELAY` set).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` if the socket cannot be set up.
    pub fn from_std(stream: std::net::TcpStream) -> Result<TcpStream> {
        stream.set_nodelay(true)?;
        Ok(TcpStream::new(TcpStreamSocket::wrap(stream.into(), true)?))
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> std::io::Result<R>) -> Result<R> {
        self.sock.core.with_socket(f)
    }
}

#[cfg(any(unix, all(target_os = "wasi", target_env = "p1")))]
impl std::os::fd::AsRawFd for TcpStream {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.core.raw_fd()
    }
}

/// How [`TcpListener::bind_with`] sets up a listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// The listen backlog (default: the system's maximum, `SOMAXCONN`).
    pub backlog: i32,
    /// `SO_REUSEADDR` (default on, except on Windows where it would let
    /// another socket take the port over: there the default is off, and off
    /// sets `SO_EXCLUSIVEADDRUSE` instead, as Trio does). On WASI preview 2
    /// the host sets it itself.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (default off; Unix only, ignored elsewhere).
    pub reuse_port: bool,
    /// For IPv6 addresses, `IPV6_V6ONLY` (default on, as Trio; always on
    /// WASI preview 2).
    pub v6_only: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions { backlog: 65535, reuse_address: cfg!(not(windows)), reuse_port: false, v6_only: true }
    }
}

/// A TCP listener: a [`Listener`](crate::abc::Listener) of [`TcpStream`]s.
/// On WASI preview 1 only the host can make one: see
/// `net::preopened_listeners` (preview 1 only).
#[derive(Debug)]
pub struct TcpListener {
    core: TcpListenerSocket,
    accepting: Cell<bool>,
}

impl TcpListener {
    fn new(core: TcpListenerSocket) -> TcpListener {
        TcpListener { core, accepting: Cell::new(false) }
    }

    /// Binds and listens on `addr` (port 0: the OS picks) with the default
    /// [`ListenOptions`].
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse`, ...); on WASI
    /// preview 2 `PermissionDenied` if the host's policy does not allow
    /// binding to `addr`; on preview 1 always `Io(Unsupported)` (use
    /// `net::preopened_listeners`).
    pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
        TcpListener::bind_with(addr, ListenOptions::default())
    }

    /// Binds and listens on `addr` with `options` (as far as the platform
    /// has them).
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_with(addr: SocketAddr, options: ListenOptions) -> Result<TcpListener> {
        Ok(TcpListener::new(TcpListenerSocket::listen(addr, &options)?))
    }

    /// The bound address (with the port the OS chose for port 0).
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS; on WASI preview 1 always
    /// `Io(Unsupported)` (no `getsockname`).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr()
    }
}

#[cfg(not(target_os = "wasi"))]
impl TcpListener {
    /// Takes over a listening std socket (made non-blocking and registered).
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std(listener: std::net::TcpListener) -> Result<TcpListener> {
        Ok(TcpListener::new(TcpListenerSocket::wrap(listener.into(), true)?))
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> std::io::Result<R>) -> Result<R> {
        self.core.with_socket(f)
    }
}

impl crate::abc::AsyncResource for TcpListener {
    async fn aclose(&self) -> Result<()> {
        self.core.close();
        lowlevel::checkpoint().await
    }
}

impl crate::abc::Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> Result<TcpStream> {
        let conn = super::stream::accept(&self.accepting, || self.core.check_open(), self.core.accept()).await?;
        Ok(TcpStream::new(conn))
    }
}

#[cfg(any(unix, all(target_os = "wasi", target_env = "p1")))]
impl std::os::fd::AsRawFd for TcpListener {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.core.raw_fd()
    }
}

/// The listening sockets the host preopened for this guest
/// (`wasmtime run -Spreview2=n -Stcplisten=ADDR ...`; each `-Stcplisten`
/// adds one, from descriptor 3 up), made non-blocking and registered with
/// the current run, in descriptor order. Empty if there are none. WASI
/// preview 1 only: it cannot open sockets itself.
///
/// It looks at descriptors from 3 up (at most 1024 of them, stopping after
/// three in a row that do not exist) and takes the stream sockets among
/// them. Preview 1 cannot tell a listening socket from a connected one, so
/// call it once, at start-up: sockets that a `trio` object owns already
/// (listeners from an earlier call, accepted connections) are skipped, so
/// a second call returns only sockets nobody took (usually none), never a
/// second owner of a descriptor.
///
/// # Errors
/// `Runtime` outside `trio::run`; `Io` if a socket cannot be made
/// non-blocking, or `Io(AlreadyExists)` if one is registered with the run
/// already (by a `wait_readable` on its number, for example). The sockets
/// taken before the error are given up again (deregistered, left open).
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub fn preopened_listeners() -> Result<Vec<TcpListener>> {
    Ok(crate::driver::wasi_p1::socket::preopened()?.into_iter().map(TcpListener::new).collect())
}
