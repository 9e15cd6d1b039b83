//! TCP on WASI preview 1 (`wasm32-wasip1`).
//!
//! Preview 1 cannot open sockets: a guest has only the listening sockets the
//! host preopened for it (`wasmtime run -Spreview2=n -Stcplisten=ADDR`, fd 3
//! onwards) and the connections it accepts on them, through `sock_accept`,
//! `sock_recv`, `sock_send` and `sock_shutdown`. There is no `getsockname`,
//! `getpeername` or `setsockopt` either. So:
//!
//! - [`preopened_listeners`] finds the preopened listeners;
//! - [`TcpListener::bind`] and [`TcpStream::connect`] exist with the native
//!   signatures (so portable code compiles) but fail with
//!   `Io(Unsupported)`; so do the address getters and
//!   [`TcpStream::set_nodelay`].
//!
//! Every descriptor is non-blocking and registered with the run's
//! `poll_oneoff` driver when it is wrapped; operations follow the native
//! sockets' rules (try the call, wait for readiness on `EAGAIN`, every
//! operation a checkpoint, `Busy` for a second concurrent sender or
//! receiver, a cancelled partial `send_all` breaks the stream).
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

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[cfg(feature = "futures-io")]
use super::stream::poll_io_while_open;
use super::stream::{SocketCalls, SocketIo, Stream, io_while_open};
use crate::driver::wasi_p1::errno;
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel;
use crate::runtime::{self, io::Dir};

thread_local! {
    /// The descriptors a [`Core`] owns now: [`preopened_listeners`] skips
    /// them (an accepted connection is a stream socket too, and a listener
    /// must not be wrapped twice). `wasm32-wasip1` has one thread.
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

/// A registered non-blocking descriptor. Closing deregisters before the
/// descriptor is closed.
#[derive(Debug)]
struct Core {
    io: IoHandle,
    fd: RefCell<Option<OwnedFd>>,
}

impl Core {
    /// Registers the non-blocking descriptor `fd` with the current run and
    /// takes ownership of it. On failure `fd` is left open (the caller
    /// decides).
    fn new(fd: u32) -> Result<Core> {
        let io = IoHandle::new(fd)?;
        let raw = RawFd::try_from(fd).map_err(|_| Error::Io(io::Error::other("descriptor out of range")))?;
        // SAFETY: `fd` is an open descriptor nobody else owns: a preopened
        // socket that no `Core` holds (see `OWNED`), or one `sock_accept`
        // just returned.
        let owned_fd = unsafe { OwnedFd::from_raw_fd(raw) };
        OWNED.with(|o| o.borrow_mut().push(fd));
        Ok(Core { io, fd: RefCell::new(Some(owned_fd)) })
    }

    /// The descriptor, or `Closed`.
    fn raw(&self) -> Result<u32> {
        match self.fd.borrow().as_ref() {
            Some(fd) => Ok(fd.as_raw_fd() as u32),
            None => Err(Error::Closed),
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.borrow().as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Runs a non-blocking call on the descriptor until it does not block
    /// (see `IoHandle::io`).
    fn io<T>(&self, dir: Dir, mut op: impl FnMut(u32) -> io::Result<(T, bool)>) -> impl Future<Output = Result<T>> {
        io_while_open(&self.io, &self.fd, dir, move |fd| op(fd.as_raw_fd() as u32))
    }

    /// Closes now: waiters wake with `Closed`, the descriptor is freed.
    fn close(&self) {
        self.io.release();
        if let Some(fd) = self.fd.borrow_mut().take() {
            let raw = fd.as_raw_fd() as u32;
            OWNED.with(|o| o.borrow_mut().retain(|&f| f != raw));
            drop(fd);
        }
    }

    async fn aclose(&self) -> Result<()> {
        self.close();
        lowlevel::checkpoint().await
    }

    /// Deregisters and gives the descriptor up without closing it.
    fn disown(&self) {
        self.io.release();
        if let Some(fd) = self.fd.borrow_mut().take() {
            let raw = std::os::fd::IntoRawFd::into_raw_fd(fd) as u32;
            OWNED.with(|o| o.borrow_mut().retain(|&f| f != raw));
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.close();
    }
}

impl SocketIo for Core {
    type Handle<'a> = u32;

    fn with_handle<R>(&self, f: impl FnOnce(u32) -> R) -> Result<R> {
        Ok(f(self.raw()?))
    }

    fn io_on<T>(&self, dir: Dir, op: impl FnMut(u32) -> io::Result<(T, bool)>) -> impl Future<Output = Result<T>> {
        self.io(dir, op)
    }

    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        mut op: impl FnMut(u32) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        poll_io_while_open(&self.io, &self.fd, cx, dir, |fd| op(fd.as_raw_fd() as u32))
    }
}

impl SocketCalls for Core {
    async fn wait_ready_on(&self, dir: Dir) -> Result<()> {
        self.raw()?;
        self.io.wait_ready(dir).await
    }

    fn close_now(&self) {
        self.close();
    }

    fn send(fd: u32, buf: &[u8]) -> io::Result<usize> {
        send(fd, buf)
    }

    fn recv(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
        recv(fd, buf)
    }

    fn shutdown_write(fd: u32) -> io::Result<()> {
        shutdown_write(fd)
    }
}

/// The listening sockets the host preopened for this guest
/// (`wasmtime run -Spreview2=n -Stcplisten=ADDR ...`; each `-Stcplisten`
/// adds one, from descriptor 3 up), made non-blocking and registered with
/// the current run, in descriptor order. Empty if there are none.
///
/// It looks at descriptors from 3 up (at most 1024 of them, stopping after
/// three in a row that do not exist) and takes the stream sockets among
/// them. Preview 1 cannot tell a listening socket from a connected one, so
/// call it once, at start-up: sockets that a `trio` object of this module
/// owns already (listeners from an earlier call, accepted connections) are
/// skipped, so a second call returns only sockets nobody took (usually
/// none), never a second owner of a descriptor.
///
/// # Errors
/// `Runtime` outside `trio::run`; `Io` if a socket cannot be made
/// non-blocking, or `Io(AlreadyExists)` if one is registered with the run
/// already (by a `wait_readable` on its number, for example). The sockets
/// taken before the error are given up again (deregistered, left open).
pub fn preopened_listeners() -> Result<Vec<TcpListener>> {
    runtime::with(|_| ())?;
    let mut listeners = Vec::new();
    let r = scan_preopened(&mut listeners);
    if r.is_err() {
        for l in &listeners {
            l.core.disown();
        }
    }
    r.map(|()| listeners)
}

fn scan_preopened(listeners: &mut Vec<TcpListener>) -> Result<()> {
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
        let core = Core::new(fd).map_err(|e| match e {
            Error::Io(io) => Error::Io(io::Error::new(io.kind(), format!("preopened socket {fd}: {io}"))),
            other => other,
        })?;
        listeners.push(TcpListener { core, accepting: Cell::new(false) });
    }
    Ok(())
}

/// A TCP listener: a [`Listener`](crate::abc::Listener) of [`TcpStream`]s.
/// On WASI preview 1 only the host can make one: see
/// [`preopened_listeners`].
#[derive(Debug)]
pub struct TcpListener {
    core: Core,
    accepting: Cell<bool>,
}

impl TcpListener {
    /// Native code binds here; WASI preview 1 cannot open sockets, so this
    /// always fails (and so does [`open_tcp_listeners`](super::open_tcp_listeners)).
    /// Use [`preopened_listeners`].
    ///
    /// # Errors
    /// Always `Io(Unsupported)`.
    pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
        let _ = addr;
        Err(unsupported(NO_SOCKETS))
    }

    /// The bound address: preview 1 has no `getsockname`.
    ///
    /// # Errors
    /// `Closed` after `aclose`; otherwise always `Io(Unsupported)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.raw()?;
        Err(unsupported("WASI preview 1 cannot tell a socket's address (no getsockname)"))
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
        let fd = self.core.accept_on(&self.accepting, accept).await?;
        match Core::new(fd) {
            Ok(core) => Ok(TcpStream::new(core)),
            Err(e) => {
                // SAFETY: `fd` was just accepted and nobody else owns it.
                let _ = unsafe { wasi::fd_close(fd) };
                Err(e)
            }
        }
    }
}

impl AsRawFd for TcpListener {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> RawFd {
        self.core.raw_fd()
    }
}

/// `sock_accept` of a non-blocking connection, skipping connections that
/// died in the queue (as the native listener: `ECONNABORTED`, `EPROTO`,
/// `EPERM`); each retry consumes one, so the loop is finite.
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

fn recv(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
    let iov = wasi::Iovec { buf: buf.as_mut_ptr(), buf_len: buf.len() };
    // SAFETY: one iovec over a live, writable buffer.
    unsafe { wasi::sock_recv(fd, &[iov], 0) }.map(|(n, _)| n).map_err(errno)
}

fn send(fd: u32, buf: &[u8]) -> io::Result<usize> {
    let iov = wasi::Ciovec { buf: buf.as_ptr(), buf_len: buf.len() };
    // SAFETY: one iovec over a live buffer.
    unsafe { wasi::sock_send(fd, &[iov], 0) }.map_err(errno)
}

/// `sock_shutdown(WR)`; a connection that is gone already needs none.
fn shutdown_write(fd: u32) -> io::Result<()> {
    // SAFETY: a plain call on a descriptor number.
    match unsafe { wasi::sock_shutdown(fd, wasi::SDFLAGS_WR) } {
        Ok(()) | Err(wasi::ERRNO_NOTCONN) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// A connected TCP stream: a [`HalfCloseableStream`](crate::abc::HalfCloseableStream)
/// over a non-blocking socket, as the native one. On WASI preview 1 the
/// only streams are those a [`TcpListener`] accepts.
///
/// Also `futures-io`'s `AsyncRead`/`AsyncWrite` (feature `futures-io`), on
/// `TcpStream` and on `&TcpStream`.
#[derive(Debug)]
pub struct TcpStream {
    sock: Stream<Core>,
}

super::stream::stream_traits!(TcpStream);

impl TcpStream {
    fn new(core: Core) -> TcpStream {
        TcpStream { sock: Stream::new(core) }
    }

    /// Native code connects here; WASI preview 1 cannot open sockets, so
    /// this always fails (after a cancellation check).
    ///
    /// # Errors
    /// `Cancelled`; otherwise always `Io(Unsupported)`.
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
        lowlevel::checkpoint_if_cancelled().await?;
        Err(unsupported(&format!("cannot connect to {addr}: {NO_SOCKETS}")))
    }

    /// The local address: preview 1 has no `getsockname`.
    ///
    /// # Errors
    /// `Closed` after `aclose`; otherwise always `Io(Unsupported)`.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.sock.core.raw()?;
        Err(unsupported("WASI preview 1 cannot tell a socket's address (no getsockname)"))
    }

    /// The peer's address: preview 1 has no `getpeername`.
    ///
    /// # Errors
    /// `Closed` after `aclose`; otherwise always `Io(Unsupported)`.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.sock.core.raw()?;
        Err(unsupported("WASI preview 1 cannot tell a peer's address (no getpeername)"))
    }

    /// `TCP_NODELAY`: preview 1 has no socket options (the host's socket
    /// keeps whatever the host set).
    ///
    /// # Errors
    /// `Closed` after `aclose`; otherwise always `Io(Unsupported)`.
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        let _ = on;
        self.sock.core.raw()?;
        Err(unsupported("WASI preview 1 has no socket options (TCP_NODELAY)"))
    }
}

impl AsRawFd for TcpStream {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> RawFd {
        self.sock.core.raw_fd()
    }
}
