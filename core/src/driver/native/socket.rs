//! The native backend's sockets: a non-blocking socket2 socket registered
//! once with the run's driver, its operations the readiness way (try the
//! system call, wait for readiness on "would block"; see `readiness.rs`),
//! except, when the run's driver is io_uring, a stream socket's receives
//! and sends, which are completions in the ring (`uring/ops.rs`).
//! One type backs TCP, UDP and Unix-domain sockets; the datagram and path
//! operations are its own.

use std::cell::Ref;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, SockRef, Type};

use crate::driver::os::{accept_error_is_transient, bind_address_no_port, connect_in_progress, set_nonblocking};
use crate::driver::readiness::{self, Registered, SocketCalls, SocketIo};
#[cfg(target_os = "linux")]
use crate::driver::socket::Either;
use crate::driver::socket::{ListenerOps, SocketOps, StreamOps, TcpListenerOps, TcpStreamOps};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel;
use crate::net::ListenOptions;
use crate::runtime::io::Dir;

/// A registered non-blocking socket (stream, listener or datagram).
#[derive(Debug)]
pub(crate) struct Socket {
    reg: Registered<socket2::Socket>,
    /// A TCP socket: what it accepts gets `TCP_NODELAY`.
    tcp: bool,
    /// A stream socket in a run on io_uring: receives and sends are ring
    /// ops.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    ring: bool,
}

impl Socket {
    /// Makes `sock` non-blocking and registers it with the current run
    /// (`tcp`: a TCP socket, whose accepted connections get `TCP_NODELAY`).
    pub(crate) fn wrap(sock: socket2::Socket, tcp: bool) -> Result<Socket> {
        set_nonblocking(&sock)?;
        let io = IoHandle::new(raw(&sock))?;
        let ring = io.on_ring() && sock.r#type().is_ok_and(|t| t == Type::STREAM);
        Ok(Socket { reg: Registered { io, slot: std::cell::RefCell::new(Some(sock)) }, tcp, ring })
    }

    /// A new socket of `domain` and `ty`, registered.
    pub(crate) fn open(domain: Domain, ty: Type) -> Result<Socket> {
        let ip = domain != Domain::UNIX;
        let tcp = ip && ty == Type::STREAM;
        let protocol = if tcp {
            Some(Protocol::TCP)
        } else if ip && ty == Type::DGRAM {
            Some(Protocol::UDP)
        } else {
            None
        };
        Socket::wrap(socket2::Socket::new(domain, ty, protocol)?, tcp)
    }

    /// A connected pair (`socketpair`), registered.
    #[cfg(unix)]
    pub(crate) fn pair(domain: Domain, ty: Type) -> Result<(Socket, Socket)> {
        let (a, b) = socket2::Socket::pair(domain, ty, None)?;
        Ok((Socket::wrap(a, false)?, Socket::wrap(b, false)?))
    }

    /// A socket of `domain` and `ty` bound to `addr`; listening with
    /// `backlog` if given. `configure` sets options before the bind.
    pub(crate) fn bound(
        domain: Domain,
        ty: Type,
        addr: &SockAddr,
        backlog: Option<i32>,
        configure: impl FnOnce(&socket2::Socket) -> io::Result<()>,
    ) -> Result<Socket> {
        let s = Socket::open(domain, ty)?;
        {
            let sock = s.sock()?;
            configure(&sock)?;
            sock.bind(addr)?;
            if let Some(backlog) = backlog {
                sock.listen(backlog)?;
            }
        }
        Ok(s)
    }

    /// The socket, or `Closed`.
    pub(crate) fn sock(&self) -> Result<Ref<'_, socket2::Socket>> {
        self.reg.get()
    }

    /// Runs `f` with the socket, for options the types have no method for.
    pub(crate) fn with_socket<R>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<R>) -> Result<R> {
        let s = self.sock()?;
        Ok(f(SockRef::from(&*s))?)
    }

    /// The descriptor, or -1 once closed.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock().map_or(-1, |s| raw(&s))
    }

    /// Connects to `addr`: a cancellation check, then `connect`; one that
    /// completes at once ends with a shielded checkpoint, one in progress
    /// waits for writability (cancellable) and reports the socket's error.
    pub(crate) async fn connect_to(&self, addr: &SockAddr) -> Result<()> {
        lowlevel::checkpoint_if_cancelled().await?;
        let started = self.sock()?.connect(addr);
        match started {
            Ok(()) => return lowlevel::cancel_shielded_checkpoint().await,
            Err(e) if connect_in_progress(&e) => {}
            Err(e) => return Err(Error::Io(e)),
        }
        self.reg.wait_ready(Dir::Write).await?;
        match self.sock()?.take_error()? {
            Some(e) => Err(Error::Io(e)),
            None => Ok(()),
        }
    }

    /// Sets the default peer of a datagram socket (no waiting).
    pub(crate) fn connect_now(&self, addr: &SockAddr) -> Result<()> {
        Ok(self.sock()?.connect(addr)?)
    }

    /// Sends one datagram to `addr`.
    pub(crate) fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        addr: &'a SockAddr,
    ) -> impl Future<Output = Result<usize>> + 'a {
        self.io_on(Dir::Write, move |s| s.send_to(data, addr).map(|n| (n, false)))
    }

    /// Sends one datagram to the connected peer.
    pub(crate) fn send_datagram<'a>(&'a self, data: &'a [u8]) -> impl Future<Output = Result<usize>> + 'a {
        self.io_on(Dir::Write, move |s| send(s, data).map(|n| (n, false)))
    }

    /// Receives one datagram (truncated to `buf`'s length).
    pub(crate) fn recv_datagram<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = Result<usize>> + 'a {
        self.io_on(Dir::Read, move |s| recv(s, buf).map(|n| (n, false)))
    }

    /// Receives one datagram and its sender.
    pub(crate) fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = Result<(usize, SockAddr)>> + 'a {
        self.io_on(Dir::Read, move |s| recv_from(s, buf).map(|r| (r, false)))
    }

    /// `aclose`: close, then a checkpoint (it reports `Cancelled` but the
    /// socket is closed either way).
    pub(crate) async fn aclose(&self) -> Result<()> {
        self.reg.close();
        lowlevel::checkpoint().await
    }

    /// Accepts one connection (registered), skipping those that died in
    /// the queue.
    async fn accept_socket(&self) -> Result<Socket> {
        let sock = self.accept_on(accept).await?;
        if self.tcp {
            sock.set_tcp_nodelay(true)?;
        }
        Socket::wrap(sock, self.tcp)
    }

    /// A new TCP socket for `addr`'s family, `TCP_NODELAY` on.
    fn tcp_for(addr: SocketAddr) -> Result<Socket> {
        let s = Socket::open(Domain::for_address(addr), Type::STREAM)?;
        s.sock()?.set_tcp_nodelay(true)?;
        Ok(s)
    }
}

#[cfg(unix)]
fn raw(sock: &socket2::Socket) -> crate::driver::RawSource {
    std::os::fd::AsRawFd::as_raw_fd(sock)
}

#[cfg(windows)]
fn raw(sock: &socket2::Socket) -> crate::driver::RawSource {
    std::os::windows::io::AsRawSocket::as_raw_socket(sock)
}

/// An IP socket address, or an error for another kind.
pub(crate) fn ip_addr(a: SockAddr) -> Result<SocketAddr> {
    a.as_socket().ok_or_else(|| Error::Io(io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address")))
}

impl SocketIo for Socket {
    type Handle<'a> = &'a socket2::Socket;

    fn with_handle<R>(&self, f: impl FnOnce(&socket2::Socket) -> R) -> Result<R> {
        self.reg.with_handle(f)
    }

    fn io_on<T>(
        &self,
        dir: Dir,
        op: impl FnMut(&socket2::Socket) -> io::Result<(T, bool)>,
    ) -> impl Future<Output = Result<T>> {
        self.reg.io_on(dir, op)
    }

    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        op: impl FnMut(&socket2::Socket) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        self.reg.poll_io_on(cx, dir, op)
    }
}

impl SocketCalls for Socket {
    fn wait_ready_on(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.reg.wait_ready(dir)
    }

    fn send(s: &socket2::Socket, buf: &[u8]) -> io::Result<usize> {
        send(s, buf)
    }

    fn recv(s: &socket2::Socket, buf: &mut [u8]) -> io::Result<usize> {
        recv(s, buf)
    }

    fn shutdown_write(s: &socket2::Socket) -> io::Result<()> {
        match s.shutdown(std::net::Shutdown::Write) {
            // Already shut down, or the peer is gone: nothing to send anyway.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl StreamOps for Socket {
    fn write_all(&self, data: &[u8], sent: &std::cell::Cell<usize>) -> impl Future<Output = Result<()>> {
        #[cfg(target_os = "linux")]
        if self.ring {
            return Either::Right { f: crate::driver::uring::ops::WriteAll::new(&self.reg.io, data, sent) };
        }
        #[cfg(target_os = "linux")]
        return Either::Left { f: readiness::write_all(self, data, sent) };
        #[cfg(not(target_os = "linux"))]
        readiness::write_all(self, data, sent)
    }

    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
        #[cfg(target_os = "linux")]
        if self.ring {
            return Either::Right { f: crate::driver::uring::ops::Read::new(&self.reg.io, buf) };
        }
        #[cfg(target_os = "linux")]
        return Either::Left { f: readiness::read(self, buf) };
        #[cfg(not(target_os = "linux"))]
        readiness::read(self, buf)
    }

    async fn ready(&self, dir: Dir) -> Result<()> {
        #[cfg(target_os = "linux")]
        if self.ring {
            return crate::driver::uring::ops::ready(&self.reg.io, dir, || self.reg.wait_ready(dir)).await;
        }
        self.reg.wait_ready(dir).await
    }

    fn shutdown_write(&self) -> Result<()> {
        readiness::shutdown_write(self)
    }

    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        if self.ring {
            return crate::driver::uring::ops::poll_read(&self.reg.io, cx, buf);
        }
        readiness::poll_read(self, cx, buf)
    }

    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        if self.ring {
            std::task::ready!(crate::driver::uring::ops::poll_send_clear(&self.reg.io, cx))?;
        }
        readiness::poll_write(self, cx, buf)
    }

    #[cfg(feature = "futures-io")]
    fn poll_close(
        &self,
        _cx: &mut std::task::Context<'_>,
        _eof_sent: &std::cell::Cell<bool>,
    ) -> std::task::Poll<io::Result<()>> {
        readiness::poll_close(self)
    }
}

impl SocketOps for Socket {
    fn check_open(&self) -> Result<()> {
        self.sock().map(drop)
    }

    fn close(&self) {
        self.reg.close();
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        self.reg.with(|s| ip_addr(s.local_addr()?))
    }
}

impl TcpStreamOps for Socket {
    async fn connect(addr: SocketAddr) -> Result<Socket> {
        let s = Socket::tcp_for(addr)?;
        s.connect_to(&SockAddr::from(addr)).await?;
        Ok(s)
    }

    async fn connect_from(local: IpAddr, addr: SocketAddr) -> Result<Socket> {
        lowlevel::checkpoint_if_cancelled().await?;
        let s = Socket::tcp_for(addr)?;
        {
            let sock = s.sock()?;
            bind_address_no_port(&sock);
            sock.bind(&SocketAddr::new(local, 0).into()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("local address {local} is incompatible with remote address {addr}: {e}"),
                )
            })?;
        }
        s.connect_to(&SockAddr::from(addr)).await?;
        Ok(s)
    }

    fn peer_addr(&self) -> Result<SocketAddr> {
        self.reg.with(|s| ip_addr(s.peer_addr()?))
    }

    fn set_nodelay(&self, on: bool) -> Result<()> {
        Ok(self.sock()?.set_tcp_nodelay(on)?)
    }
}

impl ListenerOps for Socket {
    type Conn = Socket;

    fn accept(&self) -> impl Future<Output = Result<Socket>> {
        self.accept_socket()
    }
}

impl TcpListenerOps for Socket {
    fn listen(addr: SocketAddr, options: &ListenOptions) -> Result<Socket> {
        Socket::bound(Domain::for_address(addr), Type::STREAM, &addr.into(), Some(options.backlog), |sock| {
            if options.reuse_address {
                sock.set_reuse_address(true)?;
            }
            #[cfg(windows)]
            if !options.reuse_address {
                super::exclusive_address_use(raw(sock))?;
            }
            #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
            if options.reuse_port {
                sock.set_reuse_port(true)?;
            }
            if addr.is_ipv6() {
                sock.set_only_v6(options.v6_only)?;
            }
            Ok(())
        })
    }
}

/// `send` that never raises SIGPIPE (the error comes back as `EPIPE`).
fn send(s: &socket2::Socket, buf: &[u8]) -> io::Result<usize> {
    s.send_with_flags(buf, crate::driver::os::SEND_FLAGS)
}

/// `accept`, skipping connections that died in the queue: each retry
/// consumes one queued connection, so the loop is finite.
fn accept(s: &socket2::Socket) -> io::Result<socket2::Socket> {
    loop {
        match s.accept() {
            Ok((c, _)) => return Ok(c),
            Err(e) if accept_error_is_transient(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `recv` into an initialized buffer.
fn recv(s: &socket2::Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `recv` only writes initialized bytes into the buffer, and a
    // `&mut [u8]` is a valid `&mut [MaybeUninit<u8>]` of the same length.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    s.recv(uninit)
}

/// `recv_from` into an initialized buffer.
fn recv_from(s: &socket2::Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: as in `recv`.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    s.recv_from(uninit)
}

/// Resolves `host` (not an IP literal) to socket addresses with `port`,
/// through the system's `getaddrinfo` on a worker thread (the default
/// thread limiter bounds how many run at once); a cancelled caller returns
/// at once and the lookup's result is dropped.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let name = host.to_owned();
    let addrs = crate::to_thread::Options::new()
        .abandon_on_cancel(true)
        .run_sync(move || {
            use std::net::ToSocketAddrs;
            (name.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>).map_err(|e| (e, name))
        })
        .await?;
    match addrs {
        Ok(v) if v.is_empty() => {
            Err(Error::Io(io::Error::new(io::ErrorKind::NotFound, format!("no addresses found for {host:?}"))))
        }
        Ok(v) => Ok(v),
        Err((e, name)) => Err(Error::Io(io::Error::new(e.kind(), format!("resolving {name:?}: {e}")))),
    }
}
