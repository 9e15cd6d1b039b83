//! What every socket type shares: a non-blocking socket2 socket registered
//! once with the run's driver, the conflict detectors of Trio's
//! `SocketStream`, and the mapping of OS errors to `Broken`.

use std::cell::{Cell, Ref, RefCell};
use std::io;

use socket2::Socket;

use crate::error::{Error, Result};
pub(crate) use crate::io::BusyGuard;
use crate::io::{IoHandle, check_send, note_broken, to_broken};
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

    pub(crate) fn is_closed(&self) -> bool {
        self.sock.borrow().is_none()
    }

    /// Runs a non-blocking operation on the socket until it does not block
    /// (see `IoHandle::io`).
    pub(crate) async fn io<T>(&self, dir: Dir, mut op: impl FnMut(&Socket) -> io::Result<(T, bool)>) -> Result<T> {
        self.io
            .io(dir, || match self.sock.borrow().as_ref() {
                Some(s) => op(s),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "closed")),
            })
            .await
            .map_err(|e| if self.is_closed() { Error::Closed } else { e })
    }

    /// Waits until the socket is ready in `dir` (level-triggered).
    pub(crate) async fn wait_ready(&self, dir: Dir) -> Result<()> {
        self.sock()?;
        self.io.wait_ready(dir).await
    }

    #[cfg(feature = "futures-io")]
    pub(crate) fn io_handle(&self) -> &IoHandle {
        &self.io
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
#[derive(Debug)]
pub(crate) struct StreamSocket {
    pub(crate) core: SocketCore,
    sending: Cell<bool>,
    receiving: Cell<bool>,
    /// A `send_all` was cancelled midway, or the peer is gone.
    broken: Cell<bool>,
    /// `send_eof` was called: sending is over (`Closed`, as Trio).
    eof_sent: Cell<bool>,
}

impl StreamSocket {
    pub(crate) fn new(sock: Socket) -> Result<StreamSocket> {
        Ok(StreamSocket {
            core: SocketCore::new(sock)?,
            sending: Cell::new(false),
            receiving: Cell::new(false),
            broken: Cell::new(false),
            eof_sent: Cell::new(false),
        })
    }

    pub(crate) async fn send_all(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.sock()?;
        check_send(self.eof_sent.get(), &self.broken)?;
        // The pipes' `send_all_loop` written out: the echo hot path, where
        // the async closure cost ~60 instructions per message (callgrind).
        if data.is_empty() {
            return lowlevel::checkpoint().await;
        }
        let mut sent = 0;
        while sent < data.len() {
            let rest = &data[sent..];
            match self.core.io(Dir::Write, |s| send(s, rest).map(|n| (n, n < rest.len()))).await {
                Ok(n) => sent += n,
                Err(e) => return Err(note_broken(e, sent, &self.broken)),
            }
        }
        Ok(())
    }

    pub(crate) async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.wait_ready(Dir::Write).await
    }

    /// Waits until a `receive_some` would not block (data, end of stream
    /// or an error is pending; level-triggered); reads nothing. Claims the
    /// receive side meanwhile (`Busy` if a receive is running).
    pub(crate) async fn wait_readable(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.wait_ready(Dir::Read).await
    }

    pub(crate) async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.sock()?;
        if buf.is_empty() {
            return Err(crate::abc::empty_buffer_error());
        }
        let len = buf.len();
        // A short read drained the socket: the next one waits for an event
        // instead of trying (and failing) first. End of stream (0) stays
        // "ready": no further event would come.
        self.core.io(Dir::Read, |s| recv(s, buf).map(|n| (n, n > 0 && n < len))).await.map_err(to_broken)
    }

    pub(crate) async fn send_eof(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        {
            let s = self.core.sock()?;
            match s.shutdown(std::net::Shutdown::Write) {
                // Already shut down, or the peer is gone: nothing to send anyway.
                Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(Error::Io(e)),
                _ => {}
            }
        }
        self.eof_sent.set(true);
        lowlevel::checkpoint().await
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

/// Implements the stream traits for a type with a `sock: StreamSocket` field.
macro_rules! stream_traits {
    ($ty:ty) => {
        impl $crate::abc::AsyncResource for $ty {
            async fn aclose(&self) -> $crate::Result<()> {
                self.sock.core.aclose().await
            }
        }
        impl $crate::abc::SendStream for $ty {
            async fn send_all(&self, data: &[u8]) -> $crate::Result<()> {
                self.sock.send_all(data).await
            }
            async fn wait_send_all_might_not_block(&self) -> $crate::Result<()> {
                self.sock.wait_send_all_might_not_block().await
            }
            async fn send_eof_if_supported(&self) -> Option<$crate::Result<()>> {
                Some(self.sock.send_eof().await)
            }
        }
        impl $crate::abc::ReceiveStream for $ty {
            async fn receive_some(&self, buf: &mut [u8]) -> $crate::Result<usize> {
                self.sock.receive_some(buf).await
            }
        }
        impl $crate::abc::HalfCloseableStream for $ty {
            async fn send_eof(&self) -> $crate::Result<()> {
                self.sock.send_eof().await
            }
        }
        /// Cancellation: a poll parked here wakes when its cancel scope is cancelled
        /// and fails with an `io::Error` wrapping
        /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
        /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncRead::poll_read(std::pin::Pin::new(&mut &*self), cx, buf)
            }
        }
        /// Cancellation: a poll parked here wakes when its cancel scope is cancelled
        /// and fails with an `io::Error` wrapping
        /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
        /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncRead for &$ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.sock.poll_read(cx, buf)
            }
        }
        /// Cancellation: a poll parked here wakes when its cancel scope is cancelled
        /// and fails with an `io::Error` wrapping
        /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
        /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                futures_io::AsyncWrite::poll_write(std::pin::Pin::new(&mut &*self), cx, buf)
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(self.sock.shutdown_write())
            }
        }
        /// Cancellation: a poll parked here wakes when its cancel scope is cancelled
        /// and fails with an `io::Error` wrapping
        /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
        /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
        #[cfg(feature = "futures-io")]
        impl futures_io::AsyncWrite for &$ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.sock.poll_write(cx, buf)
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(self.sock.shutdown_write())
            }
        }
    };
}
pub(crate) use stream_traits;

#[cfg(feature = "futures-io")]
impl StreamSocket {
    pub(crate) fn poll_read(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let len = buf.len();
        self.core.io_handle().poll_io(cx, Dir::Read, || match self.core.sock() {
            Ok(s) => recv(&s, buf).map(|n| (n, n > 0 && n < len)),
            Err(_) => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
        })
    }

    pub(crate) fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        if self.eof_sent.get() {
            return std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "sent EOF already")));
        }
        if self.broken.get() {
            return std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the stream is broken")));
        }
        self.core.io_handle().poll_io(cx, Dir::Write, || match self.core.sock() {
            Ok(s) => send(&s, buf).map(|n| (n, n < buf.len())),
            Err(_) => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
        })
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self.core.sock() {
            Ok(s) => match s.shutdown(std::net::Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                r => r,
            },
            Err(_) => Ok(()),
        }
    }
}
