//! The preview 1 backend's sockets (`wasm32-wasip1`).
//!
//! Preview 1 cannot open sockets: a guest has only the listening sockets the
//! host preopened for it (`wasmtime run -Spreview2=n -Stcplisten=ADDR`, fd 3
//! onwards) and the connections it accepts on them, through `sock_accept`,
//! `sock_recv`, `sock_send` and `sock_shutdown`. There is no `getsockname`,
//! `getpeername` or `setsockopt` either. So [`preopened`] finds the
//! preopened listeners, and `listen`, `connect`, the address getters and
//! `TCP_NODELAY` fail with `Io(Unsupported)`.
//!
//! Every descriptor is non-blocking and registered with the run's
//! `poll_oneoff` driver when it is wrapped; operations are the readiness
//! backends' (`readiness.rs`).
//!
//! # Host behaviour (wasmtime 46)
//!
//! Only the legacy preview 1 implementation (`-Spreview2=n`, `wasi-common`)
//! has preopened sockets. Its `poll_oneoff` is a `poll(2)` on the host
//! descriptors, so readiness is exact (no busy loop on idle connections)
//! and hang-ups come as `HANGUP` flags; `sock_accept` honours
//! `FDFLAGS_NONBLOCK`; the preopened listener is non-blocking already. A
//! `-Stcplisten` address the host cannot bind makes wasmtime fail before
//! the guest starts.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::errno;
use crate::driver::readiness::{ReadinessStream, Registered, SocketCalls, SocketIo, io_while_open};
use crate::driver::socket::{ListenerOps, SocketOps, TcpListenerOps, TcpStreamOps};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel;
use crate::net::ListenOptions;
use crate::runtime::{self, io::Dir};

thread_local! {
    /// The descriptors a [`Socket`] owns now: [`preopened`] skips them (an
    /// accepted connection is a stream socket too, and a listener must not
    /// be wrapped twice). `wasm32-wasip1` has one thread.
    static OWNED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn owned(fd: u32) -> bool {
    OWNED.with(|o| o.borrow().contains(&fd))
}

fn unsupported(what: &str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::Unsupported, what.to_owned()))
}

const NO_SOCKETS: &str =
    "WASI preview 1 cannot open sockets; the host must preopen listeners (wasmtime -Stcplisten=ADDR)";

const NO_ADDRESS: &str = "WASI preview 1 cannot tell a socket's address (no getsockname)";

/// A registered non-blocking socket descriptor (listener or stream).
/// Closing deregisters before the descriptor is closed.
#[derive(Debug)]
pub(crate) struct Socket {
    reg: Registered<OwnedFd>,
}

impl Socket {
    /// Registers the non-blocking descriptor `fd` with the current run and
    /// takes ownership of it. On failure `fd` is left open (the caller
    /// decides).
    fn new(fd: u32) -> Result<Socket> {
        let io = IoHandle::new(fd)?;
        let raw = RawFd::try_from(fd).map_err(|_| Error::Io(io::Error::other("descriptor out of range")))?;
        // SAFETY: `fd` is an open descriptor nobody else owns: a preopened
        // socket that no `Socket` holds (see `OWNED`), or one `sock_accept`
        // just returned.
        let owned_fd = unsafe { OwnedFd::from_raw_fd(raw) };
        OWNED.with(|o| o.borrow_mut().push(fd));
        Ok(Socket { reg: Registered { io, slot: RefCell::new(Some(owned_fd)) } })
    }

    /// The descriptor, or `Closed`.
    fn fd(&self) -> Result<u32> {
        self.reg.with(|fd| Ok(fd.as_raw_fd() as u32))
    }

    /// The descriptor, or -1 once closed.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.reg.slot.borrow().as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Deregisters and gives the descriptor up without closing it.
    fn disown(&self) {
        self.reg.io.release();
        if let Some(fd) = self.reg.slot.borrow_mut().take() {
            let raw = std::os::fd::IntoRawFd::into_raw_fd(fd) as u32;
            OWNED.with(|o| o.borrow_mut().retain(|&f| f != raw));
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        SocketOps::close(self);
    }
}

impl SocketIo for Socket {
    type Handle<'a> = u32;

    fn with_handle<R>(&self, f: impl FnOnce(u32) -> R) -> Result<R> {
        Ok(f(self.fd()?))
    }

    fn io_on<T>(&self, dir: Dir, mut op: impl FnMut(u32) -> io::Result<(T, bool)>) -> impl Future<Output = Result<T>> {
        io_while_open(&self.reg.io, &self.reg.slot, dir, move |fd| op(fd.as_raw_fd() as u32))
    }

    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        mut op: impl FnMut(u32) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        crate::driver::readiness::poll_io_while_open(&self.reg.io, &self.reg.slot, cx, dir, |fd| {
            op(fd.as_raw_fd() as u32)
        })
    }
}

impl ReadinessStream for Socket {}

impl SocketCalls for Socket {
    fn wait_ready_on(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.reg.wait_ready(dir)
    }

    fn send(fd: u32, buf: &[u8]) -> io::Result<usize> {
        let iov = wasi::Ciovec { buf: buf.as_ptr(), buf_len: buf.len() };
        // SAFETY: one iovec over a live buffer.
        unsafe { wasi::sock_send(fd, &[iov], 0) }.map_err(errno)
    }

    fn recv(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
        let iov = wasi::Iovec { buf: buf.as_mut_ptr(), buf_len: buf.len() };
        // SAFETY: one iovec over a live, writable buffer.
        unsafe { wasi::sock_recv(fd, &[iov], 0) }.map(|(n, _)| n).map_err(errno)
    }

    /// `sock_shutdown(WR)`; a connection that is gone already needs none.
    fn shutdown_write(fd: u32) -> io::Result<()> {
        // SAFETY: a plain call on a descriptor number.
        match unsafe { wasi::sock_shutdown(fd, wasi::SDFLAGS_WR) } {
            Ok(()) | Err(wasi::ERRNO_NOTCONN) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }
}

impl SocketOps for Socket {
    fn check_open(&self) -> Result<()> {
        self.fd().map(drop)
    }

    /// Closes now: waiters wake with `Closed`, the descriptor is freed.
    fn close(&self) {
        if let Ok(fd) = self.fd() {
            OWNED.with(|o| o.borrow_mut().retain(|&f| f != fd));
        }
        self.reg.close();
    }

    /// Preview 1 has no `getsockname`.
    fn local_addr(&self) -> Result<SocketAddr> {
        self.check_open()?;
        Err(unsupported(NO_ADDRESS))
    }
}

impl TcpStreamOps for Socket {
    /// Preview 1 cannot open sockets: always fails (after a cancellation
    /// check).
    async fn connect(addr: SocketAddr) -> Result<Socket> {
        lowlevel::checkpoint_if_cancelled().await?;
        Err(unsupported(&format!("cannot connect to {addr}: {NO_SOCKETS}")))
    }

    /// As [`connect`](Self::connect).
    async fn connect_from(local: IpAddr, addr: SocketAddr) -> Result<Socket> {
        let _ = local;
        Self::connect(addr).await
    }

    /// Preview 1 has no `getpeername`.
    fn peer_addr(&self) -> Result<SocketAddr> {
        self.check_open()?;
        Err(unsupported("WASI preview 1 cannot tell a peer's address (no getpeername)"))
    }

    /// Preview 1 has no socket options (the host's socket keeps whatever
    /// the host set).
    fn set_nodelay(&self, on: bool) -> Result<()> {
        let _ = on;
        self.check_open()?;
        Err(unsupported("WASI preview 1 has no socket options (TCP_NODELAY)"))
    }
}

impl ListenerOps for Socket {
    type Conn = Socket;

    async fn accept(&self) -> Result<Socket> {
        let fd = self.accept_on(accept).await?;
        Socket::new(fd).inspect_err(|_| {
            // SAFETY: `fd` was just accepted and nobody else owns it.
            let _ = unsafe { wasi::fd_close(fd) };
        })
    }
}

impl TcpListenerOps for Socket {
    /// Preview 1 cannot open sockets: always fails.
    fn listen(addr: SocketAddr, options: &ListenOptions) -> Result<Socket> {
        let _ = (addr, options);
        Err(unsupported(NO_SOCKETS))
    }
}

/// `sock_accept` of a non-blocking connection, skipping connections that
/// died in the queue (as natively: `ECONNABORTED`, `EPROTO`, `EPERM`);
/// each retry consumes one, so the loop is finite.
fn accept(fd: u32) -> io::Result<u32> {
    loop {
        // SAFETY: a plain call on a descriptor number.
        match unsafe { wasi::sock_accept(fd, wasi::FDFLAGS_NONBLOCK) } {
            Ok(c) => return Ok(c),
            Err(wasi::ERRNO_CONNABORTED | wasi::ERRNO_PROTO | wasi::ERRNO_PERM) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// The listening sockets the host preopened (see
/// `net::preopened_listeners`), registered, in descriptor order. On an
/// error the sockets taken before it are given up again (deregistered,
/// left open).
pub(crate) fn preopened() -> Result<Vec<Socket>> {
    runtime::with(|_| ())?;
    let mut found = Vec::new();
    let r = scan_preopened(&mut found);
    if r.is_err() {
        for s in &found {
            s.disown();
        }
    }
    r.map(|()| found)
}

fn scan_preopened(found: &mut Vec<Socket>) -> Result<()> {
    let mut bad_in_a_row = 0;
    for fd in 3u32..1024 {
        // SAFETY: a plain query of a descriptor number.
        let stat = match unsafe { wasi::fd_fdstat_get(fd) } {
            Ok(stat) => stat,
            Err(_) => {
                bad_in_a_row += 1;
                if bad_in_a_row == 3 {
                    break;
                }
                continue;
            }
        };
        bad_in_a_row = 0;
        if stat.fs_filetype != wasi::FILETYPE_SOCKET_STREAM || owned(fd) {
            continue;
        }
        if stat.fs_flags & wasi::FDFLAGS_NONBLOCK == 0 {
            // SAFETY: as above. (wasi-common accepts exactly NONBLOCK.)
            unsafe { wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_NONBLOCK) }.map_err(|e| {
                let e = errno(e);
                Error::Io(io::Error::new(e.kind(), format!("making preopened socket {fd} non-blocking: {e}")))
            })?;
        }
        let sock = Socket::new(fd).map_err(|e| match e {
            Error::Io(io) => Error::Io(io::Error::new(io.kind(), format!("preopened socket {fd}: {io}"))),
            other => other,
        })?;
        found.push(sock);
    }
    Ok(())
}

/// Name resolution: preview 1 has none.
pub(crate) async fn resolve(host: &str, _port: u16) -> Result<Vec<SocketAddr>> {
    lowlevel::checkpoint().await?;
    Err(Error::Io(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("cannot resolve {host:?}: WASI preview 1 has no name resolution (use an IP address)"),
    )))
}
