//! What every socket stream and listener shares, whatever backs it (socket2
//! natively, descriptors on WASI preview 1, `wasi:sockets` on preview 2):
//! Trio's `SocketStream` rules written once.
//!
//! - [`Stream`]: the conflict detectors (`Busy` for a second concurrent
//!   sender or receiver), the send state (a cancelled or failed partial
//!   `send_all` breaks the stream; `send_all` after `send_eof` is `Closed`)
//!   and the operations, each a checkpoint, over a backend's
//!   [`StreamCore`];
//! - [`SocketIo`]: a registered socket and its non-blocking calls;
//!   [`SocketCalls`]: one that is a socket handle with
//!   `send`/`recv`/`shutdown` calls (natively and on WASI preview 1) has
//!   its `StreamCore` written once, from these;
//! - [`accept`] (and `SocketIo::accept_on`): a
//!   listener's `accept` (`Busy` for a second acceptor, `Cancelled` before
//!   `Closed`);
//! - [`stream_traits!`]: the stream traits (and `futures-io`'s) for a type
//!   with a `sock: Stream<_>` field.

use std::cell::{Cell, RefCell};
use std::io;

use crate::error::{Error, Result};
use crate::io::{BusyGuard, IoHandle, check_send, note_broken, to_broken};
use crate::lowlevel;
use crate::runtime::io::Dir;

/// A backend's connected byte-stream socket: the system calls, tried first
/// and waited for on "would block", with `Closed` once it is closed.
///
/// The calls on the echo hot path return the inner future itself rather
/// than being `async fn`s: each `async` layer would copy the future below
/// it into its own state (callgrind counted some 200 instructions per echo
/// round trip more).
pub(crate) trait StreamCore {
    /// `Closed` once closed.
    fn check_open(&self) -> Result<()>;

    /// Sends all of `data[*sent..]`, adding to `*sent` what went out (so
    /// that a failure or a cancellation midway can tell).
    async fn write_all(&self, data: &[u8], sent: &mut usize) -> Result<()>;

    /// One receive into `buf` (not empty); `Ok(0)` at the end of stream.
    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>>;

    /// Waits until the socket is ready in `dir` (level-triggered); `Closed`
    /// once closed.
    fn ready(&self, dir: Dir) -> impl Future<Output = Result<()>>;

    /// Shuts the sending side down (a connection that is gone already
    /// needs none); `Closed` once closed.
    fn shutdown_write(&self) -> Result<()>;

    /// Closes now: waiters wake with `Closed`, the resources are freed.
    fn close(&self);

    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<io::Result<usize>>;

    /// One write of part of `buf` (the stream is neither broken nor shut).
    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>>;

    #[cfg(feature = "futures-io")]
    fn poll_flush(&self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// `AsyncWrite::poll_close`; `eof_sent` is the stream's `send_eof` flag.
    #[cfg(feature = "futures-io")]
    fn poll_close(&self, cx: &mut std::task::Context<'_>, eof_sent: &Cell<bool>) -> std::task::Poll<io::Result<()>>;
}

/// A registered socket (or another registered resource) and the
/// non-blocking calls on it: what a listener's `accept` needs.
pub(crate) trait SocketIo {
    /// What the calls take: the socket, its descriptor, or the resource.
    type Handle<'a>
    where
        Self: 'a;

    /// `f` on the handle, or `Closed`.
    fn with_handle<R>(&self, f: impl FnOnce(Self::Handle<'_>) -> R) -> Result<R>;

    /// Runs a non-blocking call on the handle until it does not block
    /// (see `IoHandle::io`); `Closed` if the socket is closed meanwhile.
    fn io_on<T>(
        &self,
        dir: Dir,
        op: impl FnMut(Self::Handle<'_>) -> io::Result<(T, bool)>,
    ) -> impl Future<Output = Result<T>>;

    /// As [`io_on`](Self::io_on), for a `poll_*` method.
    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        op: impl FnMut(Self::Handle<'_>) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>>;

    /// A listener's [`accept`] on this socket: `call` (the `accept` call,
    /// skipping connections that died in the queue) once it is readable.
    async fn accept_on<T>(
        &self,
        accepting: &Cell<bool>,
        mut call: impl FnMut(Self::Handle<'_>) -> io::Result<T>,
    ) -> Result<T> {
        accept(accepting, || self.with_handle(|_| ()), self.io_on(Dir::Read, |h| call(h).map(|c| (c, false)))).await
    }
}

/// A [`SocketIo`] whose socket is one handle with `send`/`recv`/`shutdown`
/// calls (socket2 natively, a descriptor on WASI preview 1): its
/// [`StreamCore`] is written once, below, from these.
pub(crate) trait SocketCalls: SocketIo {
    /// Waits until the socket is ready in `dir`; `Closed` once closed.
    fn wait_ready_on(&self, dir: Dir) -> impl Future<Output = Result<()>>;

    /// Closes now: waiters wake with `Closed`, the socket is freed.
    fn close_now(&self);

    /// `send` (never raising SIGPIPE).
    fn send(h: Self::Handle<'_>, buf: &[u8]) -> io::Result<usize>;

    /// `recv` into `buf`.
    fn recv(h: Self::Handle<'_>, buf: &mut [u8]) -> io::Result<usize>;

    /// Shuts the sending side down; a connection that is gone already
    /// needs none (`Ok`).
    fn shutdown_write(h: Self::Handle<'_>) -> io::Result<()>;
}

impl<D: SocketCalls> StreamCore for D {
    fn check_open(&self) -> Result<()> {
        self.with_handle(|_| ())
    }

    async fn write_all(&self, data: &[u8], sent: &mut usize) -> Result<()> {
        while *sent < data.len() {
            let rest = &data[*sent..];
            *sent += self.io_on(Dir::Write, |h| D::send(h, rest).map(|n| (n, n < rest.len()))).await?;
        }
        Ok(())
    }

    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
        let len = buf.len();
        // A short read drained the socket: the next one waits for an event
        // instead of trying (and failing) first. End of stream (0) stays
        // "ready": no further event would come.
        self.io_on(Dir::Read, move |h| D::recv(h, buf).map(|n| (n, n > 0 && n < len)))
    }

    fn ready(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.wait_ready_on(dir)
    }

    fn shutdown_write(&self) -> Result<()> {
        Ok(self.with_handle(|h| D::shutdown_write(h))??)
    }

    fn close(&self) {
        self.close_now();
    }

    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<io::Result<usize>> {
        let len = buf.len();
        self.poll_io_on(cx, Dir::Read, |h| D::recv(h, buf).map(|n| (n, n > 0 && n < len)))
    }

    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        self.poll_io_on(cx, Dir::Write, |h| D::send(h, buf).map(|n| (n, n < buf.len())))
    }

    /// Shuts the sending side down (a closed stream has nothing to shut).
    #[cfg(feature = "futures-io")]
    fn poll_close(&self, _cx: &mut std::task::Context<'_>, _eof_sent: &Cell<bool>) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(self.with_handle(|h| D::shutdown_write(h)).unwrap_or(Ok(())))
    }
}

/// A connected byte-stream socket: Trio's `SocketStream` over a backend's
/// [`StreamCore`].
#[derive(Debug)]
pub(crate) struct Stream<C> {
    pub(crate) core: C,
    sending: Cell<bool>,
    receiving: Cell<bool>,
    /// A `send_all` was cancelled midway, or the peer is gone.
    broken: Cell<bool>,
    /// `send_eof` was called: sending is over (`Closed`, as Trio).
    eof_sent: Cell<bool>,
}

impl<C: StreamCore> Stream<C> {
    pub(crate) fn new(core: C) -> Stream<C> {
        Stream {
            core,
            sending: Cell::new(false),
            receiving: Cell::new(false),
            broken: Cell::new(false),
            eof_sent: Cell::new(false),
        }
    }

    pub(crate) async fn send_all(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.check_open()?;
        check_send(self.eof_sent.get(), &self.broken)?;
        if data.is_empty() {
            return lowlevel::checkpoint().await;
        }
        let mut sent = 0;
        self.core.write_all(data, &mut sent).await.map_err(|e| note_broken(e, sent, &self.broken))
    }

    pub(crate) async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.ready(Dir::Write).await
    }

    /// Waits until a `receive_some` would not block (data, end of stream
    /// or an error is pending; level-triggered); reads nothing. Claims the
    /// receive side meanwhile (`Busy` if a receive is running).
    pub(crate) async fn wait_readable(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.ready(Dir::Read).await
    }

    pub(crate) async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.check_open()?;
        if buf.is_empty() {
            return Err(crate::abc::empty_buffer_error());
        }
        self.core.read(buf).await.map_err(to_broken)
    }

    pub(crate) async fn send_eof(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.shutdown_write()?;
        self.eof_sent.set(true);
        lowlevel::checkpoint().await
    }

    /// `aclose`: close, then a checkpoint (it reports `Cancelled` but the
    /// stream is closed either way).
    pub(crate) async fn aclose(&self) -> Result<()> {
        self.core.close();
        lowlevel::checkpoint().await
    }
}

#[cfg(feature = "futures-io")]
impl<C: StreamCore> Stream<C> {
    pub(crate) fn poll_read(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.core.poll_read(cx, buf)
    }

    pub(crate) fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        if self.eof_sent.get() {
            return std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "sent EOF already")));
        }
        if self.broken.get() {
            return std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the stream is broken")));
        }
        self.core.poll_write(cx, buf)
    }

    /// Nothing to flush once the sending side is shut.
    pub(crate) fn poll_flush(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        if self.eof_sent.get() {
            return std::task::Poll::Ready(Ok(()));
        }
        self.core.poll_flush(cx)
    }

    pub(crate) fn poll_close(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.core.poll_close(cx, &self.eof_sent)
    }
}

/// A listener's `accept`: `Busy` if another task is accepting; a cancelled
/// caller sees `Cancelled` before `Closed` (as Trio's accept, which checks
/// cancellation before the system call); then `check_open`, then `accept`
/// (the backend's wait for a connection).
pub(crate) async fn accept<T>(
    accepting: &Cell<bool>,
    check_open: impl FnOnce() -> Result<()>,
    accept: impl Future<Output = Result<T>>,
) -> Result<T> {
    let _busy = BusyGuard::claim(accepting)?;
    lowlevel::checkpoint_if_cancelled().await?;
    check_open()?;
    accept.await
}

/// Runs a non-blocking call on the resource in `slot` (a socket, a
/// descriptor; empty once closed) until it does not block (see
/// `IoHandle::io`); `Closed` if it is closed, also meanwhile.
pub(crate) async fn io_while_open<S, T>(
    io: &IoHandle,
    slot: &RefCell<Option<S>>,
    dir: Dir,
    mut op: impl FnMut(&S) -> io::Result<(T, bool)>,
) -> Result<T> {
    io.io(dir, || match slot.borrow().as_ref() {
        Some(s) => op(s),
        None => Err(closed_io()),
    })
    .await
    .map_err(|e| if slot.borrow().is_none() { Error::Closed } else { e })
}

/// As [`io_while_open`], for a `poll_*` method (an `io::Error`
/// `NotConnected` once closed).
#[cfg(feature = "futures-io")]
pub(crate) fn poll_io_while_open<S, T>(
    io: &IoHandle,
    slot: &RefCell<Option<S>>,
    cx: &mut std::task::Context<'_>,
    dir: Dir,
    mut op: impl FnMut(&S) -> io::Result<(T, bool)>,
) -> std::task::Poll<io::Result<T>> {
    io.poll_io(cx, dir, || match slot.borrow().as_ref() {
        Some(s) => op(s),
        None => Err(closed_io()),
    })
}

fn closed_io() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")
}

/// Implements the stream traits (and `ServeHandshake`, and `futures-io`'s
/// `AsyncRead`/`AsyncWrite` on the type and on references to it) for a type
/// with a `sock: Stream<_>` field.
macro_rules! stream_traits {
    ($ty:ty) => {
        impl $crate::abc::AsyncResource for $ty {
            async fn aclose(&self) -> $crate::Result<()> {
                self.sock.aclose().await
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
        impl $crate::net::ServeHandshake for $ty {
            /// Waits until the first byte (or the end of stream, or an error) is
            /// there to receive, with a readiness wait: nothing is read.
            async fn serve_handshake(&self) -> $crate::Result<()> {
                self.sock.wait_readable().await
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
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                futures_io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut &*self), cx)
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                futures_io::AsyncWrite::poll_close(std::pin::Pin::new(&mut &*self), cx)
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
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.sock.poll_flush(cx)
            }
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.sock.poll_close(cx)
            }
        }
    };
}
pub(crate) use stream_traits;
