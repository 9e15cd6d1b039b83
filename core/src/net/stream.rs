//! Trio's `SocketStream` rules, written once over whatever backs a socket
//! (`driver/socket.rs`: socket2 natively, descriptors on WASI preview 1,
//! `wasi:sockets` on preview 2):
//!
//! - [`Stream`]: the conflict detectors (`Busy` for a second concurrent
//!   sender or receiver), the send state (a cancelled or failed partial
//!   `send_all` breaks the stream; `send_all` after `send_eof` is `Closed`)
//!   and the operations, each a checkpoint, over a backend's
//!   [`StreamOps`];
//! - [`accept`]: a listener's `accept` (`Busy` for a second acceptor,
//!   `Cancelled` before `Closed`);
//! - [`stream_traits!`]: the stream traits (and `futures-io`'s) for a type
//!   with a `sock: Stream<_>` field.

use std::cell::Cell;
#[cfg(feature = "futures-io")]
use std::io;

use crate::driver::socket::StreamOps;
use crate::error::Result;
use crate::io::{BusyGuard, check_send, note_broken, to_broken};
use crate::lowlevel;
use crate::runtime::io::Dir;

/// A connected byte-stream socket: Trio's `SocketStream` over a backend's
/// [`StreamOps`].
#[derive(Debug)]
pub(crate) struct Stream<C> {
    pub(crate) core: C,
    sending: Cell<bool>,
    receiving: Cell<bool>,
    /// A `send_all` was cancelled midway, or the peer is gone.
    broken: Cell<bool>,
    /// `send_eof` was called: sending is over (`Closed`, as Trio).
    eof_sent: Cell<bool>,
    /// What the running `send_all` has sent so far.
    sent: Cell<usize>,
}

impl<C: StreamOps> Stream<C> {
    pub(crate) fn new(core: C) -> Stream<C> {
        Stream {
            core,
            sending: Cell::new(false),
            receiving: Cell::new(false),
            broken: Cell::new(false),
            eof_sent: Cell::new(false),
            sent: Cell::new(0),
        }
    }

    pub(crate) fn send_all(&self, data: &[u8]) -> impl Future<Output = Result<()>> {
        let checked = BusyGuard::claim(&self.sending).and_then(|busy| {
            self.core.check_open()?;
            check_send(self.eof_sent.get(), &self.broken)?;
            Ok(busy)
        });
        let (busy, step) = match checked {
            Err(e) => (None, Step::Failed { error: Some(e) }),
            Ok(busy) if data.is_empty() => {
                (Some(busy), Step::Checkpoint { c: lowlevel::checkpoint(), value: Some(()) })
            }
            Ok(busy) => {
                self.sent.set(0);
                (Some(busy), Step::Run { op: self.core.write_all(data, &self.sent) })
            }
        };
        StreamOp { busy, step, errors: OnError::Send { sent: &self.sent, broken: &self.broken } }
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

    pub(crate) fn receive_some(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
        let checked = BusyGuard::claim(&self.receiving).and_then(|busy| {
            self.core.check_open()?;
            if buf.is_empty() {
                return Err(crate::abc::empty_buffer_error());
            }
            Ok(busy)
        });
        let (busy, step) = match checked {
            Err(e) => (None, Step::Failed { error: Some(e) }),
            Ok(busy) => (Some(busy), Step::Run { op: self.core.read(buf) }),
        };
        StreamOp { busy, step, errors: OnError::Receive }
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

pin_project_lite::pin_project! {
    /// A stream operation (`send_all`, `receive_some`) as one hand-written
    /// future: the side's busy claim and the checks made when it was
    /// called, then the backend's operation, whose errors become Trio's
    /// (`Broken` for a vanished peer; a partial send breaks the stream).
    /// The checks' error, if any, is reported on the first poll, as an
    /// `async fn` would.
    struct StreamOp<'a, F, T> {
        // Dropped before the claim is let go.
        #[pin]
        step: Step<F, T>,
        busy: Option<BusyGuard<'a>>,
        errors: OnError<'a>,
    }
}

pin_project_lite::pin_project! {
    #[project = StepProj]
    enum Step<F, T> {
        Failed { error: Option<crate::Error> },
        // A checkpoint, then `value` (a `send_all` of nothing).
        Checkpoint { #[pin] c: lowlevel::Checkpoint, value: Option<T> },
        Run { #[pin] op: F },
    }
}

/// How a [`StreamOp`]'s errors are reported.
enum OnError<'a> {
    Receive,
    Send { sent: &'a Cell<usize>, broken: &'a Cell<bool> },
}

impl<T, F: Future<Output = Result<T>>> Future for StreamOp<'_, F, T> {
    type Output = Result<T>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<T>> {
        let this = self.project();
        let out = match this.step.project() {
            StepProj::Failed { error } => {
                Err(error.take().unwrap_or(crate::Error::Runtime("stream operation polled after completion")))
            }
            StepProj::Checkpoint { c, value } => std::task::ready!(c.poll(cx))
                .and_then(|()| value.take().ok_or(crate::Error::Runtime("stream operation polled after completion"))),
            StepProj::Run { op } => std::task::ready!(op.poll(cx)).map_err(|e| match this.errors {
                OnError::Receive => to_broken(e),
                OnError::Send { sent, broken } => note_broken(e, sent.get(), broken),
            }),
        };
        this.busy.take();
        std::task::Poll::Ready(out)
    }
}

#[cfg(feature = "futures-io")]
impl<C: StreamOps> Stream<C> {
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
            fn send_all(&self, data: &[u8]) -> impl ::std::future::Future<Output = $crate::Result<()>> {
                self.sock.send_all(data)
            }
            async fn wait_send_all_might_not_block(&self) -> $crate::Result<()> {
                self.sock.wait_send_all_might_not_block().await
            }
            async fn send_eof_if_supported(&self) -> Option<$crate::Result<()>> {
                Some(self.sock.send_eof().await)
            }
        }
        impl $crate::abc::ReceiveStream for $ty {
            fn receive_some(&self, buf: &mut [u8]) -> impl ::std::future::Future<Output = $crate::Result<usize>> {
                self.sock.receive_some(buf)
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
