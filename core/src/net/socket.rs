//! What every native socket type shares: a non-blocking socket2 socket
//! registered once with the run's driver, and its system calls
//! ([`SocketCalls`]) under the shared [`Stream`] (Trio's `SocketStream`; see
//! `stream.rs` for its conflict detectors and send state).

use std::cell::{Ref, RefCell};
use std::io;

use socket2::Socket;

#[cfg(feature = "futures-io")]
use super::stream::poll_io_while_open;
pub(crate) use super::stream::stream_traits;
use super::stream::{SocketCalls, SocketIo, Stream, io_while_open};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel;
use crate::runtime::io::Dir;

/// A registered non-blocking socket. Field order matters: the registration
/// is dropped (deregistered) before the socket is closed.
#[derive(Debug)]
pub(crate) struct SocketCore {
    io: IoHandle,
    sock: RefCell<Option<Socket>>,
}

impl SocketCore {
    /// Makes `sock` non-blocking and registers it with the current run.
    pub(crate) fn new(sock: Socket) -> Result<SocketCore> {
        set_nonblocking(&sock)?;
        let io = IoHandle::new(raw(&sock))?;
        Ok(SocketCore { io, sock: RefCell::new(Some(sock)) })
    }

    /// The socket, or `Closed`.
    pub(crate) fn sock(&self) -> Result<Ref<'_, Socket>> {
        Ref::filter_map(self.sock.borrow(), Option::as_ref).map_err(|_| Error::Closed)
    }

    /// Runs a non-blocking operation on the socket until it does not block
    /// (see `IoHandle::io`).
    pub(crate) fn io<T>(
        &self,
        dir: Dir,
        op: impl FnMut(&Socket) -> io::Result<(T, bool)>,
    ) -> impl Future<Output = Result<T>> {
        io_while_open(&self.io, &self.sock, dir, op)
    }

    /// Waits until the socket is ready in `dir` (level-triggered).
    pub(crate) async fn wait_ready(&self, dir: Dir) -> Result<()> {
        self.sock()?;
        self.io.wait_ready(dir).await
    }

    /// Closes now: waiters wake with `Closed`, the descriptor is freed.
    pub(crate) fn close(&self) {
        self.io.release();
        drop(self.sock.borrow_mut().take());
    }

    /// `aclose`: close, then a checkpoint (it reports `Cancelled` but the
    /// socket is closed either way).
    pub(crate) async fn aclose(&self) -> Result<()> {
        self.close();
        lowlevel::checkpoint().await
    }
}

use crate::driver::os::set_nonblocking;

#[cfg(unix)]
pub(crate) fn raw(sock: &Socket) -> crate::driver::RawSource {
    std::os::fd::AsRawFd::as_raw_fd(sock)
}

#[cfg(windows)]
pub(crate) fn raw(sock: &Socket) -> crate::driver::RawSource {
    std::os::windows::io::AsRawSocket::as_raw_socket(sock)
}

/// A connected byte-stream socket (TCP or Unix): Trio's `SocketStream`.
pub(crate) type StreamSocket = Stream<SocketCore>;

/// Makes `sock` (connected or about to connect) a [`StreamSocket`].
pub(crate) fn stream(sock: Socket) -> Result<StreamSocket> {
    Ok(Stream::new(SocketCore::new(sock)?))
}

impl SocketIo for SocketCore {
    type Handle<'a> = &'a Socket;

    fn with_handle<R>(&self, f: impl FnOnce(&Socket) -> R) -> Result<R> {
        Ok(f(&*self.sock()?))
    }

    fn io_on<T>(&self, dir: Dir, op: impl FnMut(&Socket) -> io::Result<(T, bool)>) -> impl Future<Output = Result<T>> {
        self.io(dir, op)
    }

    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        op: impl FnMut(&Socket) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        poll_io_while_open(&self.io, &self.sock, cx, dir, op)
    }
}

impl SocketCalls for SocketCore {
    fn wait_ready_on(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.wait_ready(dir)
    }

    fn close_now(&self) {
        self.close();
    }

    fn send(s: &Socket, buf: &[u8]) -> io::Result<usize> {
        send(s, buf)
    }

    fn recv(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
        recv(s, buf)
    }

    fn shutdown_write(s: &Socket) -> io::Result<()> {
        match s.shutdown(std::net::Shutdown::Write) {
            // Already shut down, or the peer is gone: nothing to send anyway.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

/// `send` that never raises SIGPIPE (the error comes back as `EPIPE`).
pub(crate) fn send(s: &Socket, buf: &[u8]) -> io::Result<usize> {
    s.send_with_flags(buf, crate::driver::os::SEND_FLAGS)
}

/// `accept`, skipping connections that died in the queue (Trio ignores
/// `ECONNABORTED`, `EPROTO` and, for Linux firewalls, `EPERM` the same way):
/// each retry consumes one queued connection, so the loop is finite.
pub(crate) fn accept(s: &Socket) -> io::Result<Socket> {
    loop {
        match s.accept() {
            Ok((c, _)) => return Ok(c),
            Err(e) if accept_error_is_transient(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

use crate::driver::os::accept_error_is_transient;

/// `recv` into an initialized buffer.
pub(crate) fn recv(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `recv` only writes initialized bytes into the buffer, and a
    // `&mut [u8]` is a valid `&mut [MaybeUninit<u8>]` of the same length.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    s.recv(uninit)
}

/// `recv_from` into an initialized buffer.
pub(crate) fn recv_from(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: as in `recv`.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    s.recv_from(uninit)
}
