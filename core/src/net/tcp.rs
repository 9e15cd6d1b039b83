//! TCP streams and listeners.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::socket::{SocketCore, StreamSocket, stream, stream_traits};
use super::stream::SocketIo;
use crate::error::{Error, Result};
use crate::runtime::io::Dir;

/// A connected TCP stream: a [`HalfCloseableStream`](crate::abc::HalfCloseableStream)
/// over a non-blocking socket (Trio's `SocketStream`). `TCP_NODELAY` is on.
///
/// Also `futures-io`'s `AsyncRead`/`AsyncWrite` (feature `futures-io`, on by
/// default), on `TcpStream` and on `&TcpStream`.
#[derive(Debug)]
pub struct TcpStream {
    pub(crate) sock: StreamSocket,
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
    /// `Io` with the OS error (`ConnectionRefused`, ...).
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let s = TcpStream::wrap(sock)?;
        s.finish_connect(&SockAddr::from(addr)).await?;
        Ok(s)
    }

    /// Wraps a socket (made non-blocking and registered; `TCP_NODELAY` set).
    fn wrap(sock: Socket) -> Result<TcpStream> {
        sock.set_tcp_nodelay(true)?;
        Ok(TcpStream { sock: stream(sock)? })
    }

    async fn finish_connect(&self, addr: &SockAddr) -> Result<()> {
        crate::lowlevel::checkpoint_if_cancelled().await?;
        let started = self.sock.core.sock()?.connect(addr);
        match started {
            Ok(()) => return crate::lowlevel::cancel_shielded_checkpoint().await,
            Err(e) if in_progress(&e) => {}
            Err(e) => return Err(Error::Io(e)),
        }
        self.sock.core.wait_ready(Dir::Write).await?;
        let s = self.sock.core.sock()?;
        match s.take_error()? {
            Some(e) => Err(Error::Io(e)),
            None => Ok(()),
        }
    }

    /// Takes over a connected std stream (made non-blocking, registered with
    /// the current run, `TCP_NODELAY` set).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` if the socket cannot be set up.
    pub fn from_std(stream: std::net::TcpStream) -> Result<TcpStream> {
        TcpStream::wrap(Socket::from(stream))
    }

    /// The local address.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        sockaddr(self.sock.core.sock()?.local_addr()?)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As [`local_addr`](Self::local_addr).
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        sockaddr(self.sock.core.sock()?.peer_addr()?)
    }

    /// Sets `TCP_NODELAY` (on by default).
    ///
    /// # Errors
    /// As [`local_addr`](Self::local_addr).
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        Ok(self.sock.core.sock()?.set_tcp_nodelay(on)?)
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<R>) -> Result<R> {
        let s = self.sock.core.sock()?;
        Ok(f(SockRef::from(&*s))?)
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for TcpStream {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.core.sock().map(|s| super::socket::raw(&s)).unwrap_or(-1)
    }
}

pub(crate) use crate::driver::os::connect_in_progress as in_progress;

pub(crate) fn sockaddr(a: SockAddr) -> Result<SocketAddr> {
    a.as_socket().ok_or_else(|| Error::Io(io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address")))
}

/// How [`TcpListener::bind_with`] sets up a listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// The listen backlog (default: the system's maximum, `SOMAXCONN`).
    pub backlog: i32,
    /// `SO_REUSEADDR` (default on, except on Windows where it would let
    /// another socket take the port over: there the default is off, and off
    /// sets `SO_EXCLUSIVEADDRUSE` instead, as Trio does).
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (default off; Unix only, ignored elsewhere).
    pub reuse_port: bool,
    /// For IPv6 addresses, `IPV6_V6ONLY` (default on, as Trio).
    pub v6_only: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions { backlog: 65535, reuse_address: cfg!(not(windows)), reuse_port: false, v6_only: true }
    }
}

/// A TCP listener: a [`Listener`](crate::abc::Listener) of [`TcpStream`]s.
#[derive(Debug)]
pub struct TcpListener {
    core: SocketCore,
    accepting: Cell<bool>,
}

impl TcpListener {
    /// Binds and listens on `addr` with the default [`ListenOptions`].
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse`, ...).
    pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
        TcpListener::bind_with(addr, ListenOptions::default())
    }

    /// Binds and listens on `addr` with `options`.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_with(addr: SocketAddr, options: ListenOptions) -> Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if options.reuse_address {
            sock.set_reuse_address(true)?;
        }
        #[cfg(windows)]
        if !options.reuse_address {
            crate::driver::exclusive_address_use(super::socket::raw(&sock))?;
        }
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
        if options.reuse_port {
            sock.set_reuse_port(true)?;
        }
        if addr.is_ipv6() {
            sock.set_only_v6(options.v6_only)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(options.backlog)?;
        Ok(TcpListener { core: SocketCore::new(sock)?, accepting: Cell::new(false) })
    }

    /// Takes over a listening std socket (made non-blocking and registered).
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std(listener: std::net::TcpListener) -> Result<TcpListener> {
        Ok(TcpListener { core: SocketCore::new(Socket::from(listener))?, accepting: Cell::new(false) })
    }

    /// The bound address (with the port the OS chose for port 0).
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        sockaddr(self.core.sock()?.local_addr()?)
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<R>) -> Result<R> {
        let s = self.core.sock()?;
        Ok(f(SockRef::from(&*s))?)
    }
}

impl crate::abc::AsyncResource for TcpListener {
    async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}

impl crate::abc::Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept(&self) -> Result<TcpStream> {
        let sock = self.core.accept_on(&self.accepting, super::socket::accept).await?;
        TcpStream::wrap(sock)
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for TcpListener {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.core.sock().map(|s| super::socket::raw(&s)).unwrap_or(-1)
    }
}
