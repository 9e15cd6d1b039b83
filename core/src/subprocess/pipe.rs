//! Byte streams over pipes (Trio's `FdStream` on Unix and its Windows pipe
//! streams, split by direction): the parent's ends of a child's stdin,
//! stdout and stderr, the ends of an [`open_pipe`], or (Unix) any pipe, FIFO
//! or TTY the user hands over.

use std::cell::{Cell, RefCell};
use std::io;
#[cfg(unix)]
use std::os::fd::{OwnedFd, RawFd};

use super::sys::{PipeHandle, read, write};

use crate::error::{Error, Result};
use crate::io::{BusyGuard, IoHandle, check_send, note_broken, to_broken};
use crate::lowlevel;
use crate::runtime::io::Dir;

/// The parent's end of a pipe registered with the run. Field order
/// matters: the registration is dropped (deregistered) before the handle is
/// closed.
#[derive(Debug)]
struct PipeCore {
    io: IoHandle,
    h: RefCell<Option<PipeHandle>>,
}

impl PipeCore {
    /// Registers `h` with the current run.
    fn new(h: PipeHandle) -> Result<PipeCore> {
        let io = h.register()?;
        Ok(PipeCore { io, h: RefCell::new(Some(h)) })
    }

    /// `Closed` once closed.
    fn check_open(&self) -> Result<()> {
        if self.is_closed() { Err(Error::Closed) } else { Ok(()) }
    }

    fn is_closed(&self) -> bool {
        self.h.borrow().is_none()
    }

    /// Runs a non-blocking operation on the pipe until it does not block
    /// (see `IoHandle::io`); `Closed` if the stream is closed meanwhile.
    async fn io<T>(&self, dir: Dir, mut op: impl FnMut(&PipeHandle) -> io::Result<(T, bool)>) -> Result<T> {
        self.io
            .io(dir, || match self.h.borrow().as_ref() {
                Some(h) => op(h),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
            })
            .await
            .map_err(|e| if self.is_closed() { Error::Closed } else { e })
    }

    /// Closes now: waiters wake with `Closed`, the handle is freed.
    fn close(&self) {
        self.io.release();
        let h = self.h.borrow_mut().take();
        drop(h);
    }

    async fn aclose(&self) -> Result<()> {
        self.close();
        lowlevel::checkpoint().await
    }

    #[cfg(feature = "futures-io")]
    fn poll_io<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        mut op: impl FnMut(&PipeHandle) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        self.io.poll_io(cx, dir, || match self.h.borrow().as_ref() {
            Some(h) => op(h),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
        })
    }
}

impl Drop for PipeCore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Trio's `send_all` over a non-blocking write (as the sockets' inline
/// loop):
/// `write_some` until all of `data` is out. A failure after part of it went
/// out (a cancellation included) or a vanished peer marks the stream
/// `broken`; a broken stream fails with `Broken` at once.
async fn send_all_loop(
    data: &[u8],
    broken: &std::cell::Cell<bool>,
    mut write_some: impl AsyncFnMut(&[u8]) -> Result<usize>,
) -> Result<()> {
    check_send(false, broken)?;
    if data.is_empty() {
        return lowlevel::checkpoint().await;
    }
    let mut sent = 0;
    while sent < data.len() {
        match write_some(&data[sent..]).await {
            Ok(n) => sent += n,
            Err(e) => return Err(note_broken(e, sent, broken)),
        }
    }
    Ok(())
}

/// The sending end of a pipe: what the parent writes to a child's stdin
/// ([`Process::stdin`](super::Process::stdin)), the sending end of an
/// [`open_pipe`], or (Unix) any writable pipe, FIFO or TTY wrapped with
/// `from_fd`.
///
/// Implements [`SendStream`](crate::abc::SendStream) (and `futures-io`'s
/// `AsyncWrite`, with the `futures-io` feature). Closing it
/// ([`aclose`](crate::abc::AsyncResource::aclose), or dropping it) closes the
/// pipe, so the reader sees end of stream.
///
/// Writing to a pipe whose reading end is closed fails with
/// [`Error::Broken`]. On Unix this relies on `SIGPIPE` being ignored, which
/// is what a Rust program's `main` sets up by default; a program that
/// restored the default action of `SIGPIPE` is killed by such a write
/// instead.
///
/// # Windows
/// The parent's end is a named pipe opened for overlapped I/O and watched
/// by the run's I/O completion port (through mio). A write hands up to
/// 64 KiB to the OS at a time and completes in the background, so
/// `send_all` returns once the last piece is handed over (not once the
/// reader took it; the next write waits for it), and a reader that went
/// away is reported by the write after the one it failed. Closing the
/// stream while a write is in flight closes the handle when that write
/// completes.
#[derive(Debug)]
pub struct PipeSendStream {
    core: PipeCore,
    sending: Cell<bool>,
    /// A `send_all` was cancelled midway, or the reader is gone.
    broken: Cell<bool>,
}

/// The receiving end of a pipe: what the parent reads of a child's stdout or
/// stderr ([`Process::stdout`](super::Process::stdout)), the receiving end
/// of an [`open_pipe`], or (Unix) any readable pipe, FIFO or TTY wrapped
/// with `from_fd`. On Windows it is a named pipe read through the run's
/// I/O completion port (see [`PipeSendStream`]).
///
/// Implements [`ReceiveStream`](crate::abc::ReceiveStream) (and
/// `futures-io`'s `AsyncRead`, with the `futures-io` feature).
/// `receive_some` returns `Ok(0)` once every writer has closed its end (for a
/// child's output: the child and everything it passed the pipe on to have
/// exited or closed it).
#[derive(Debug)]
pub struct PipeReceiveStream {
    core: PipeCore,
    receiving: Cell<bool>,
}

impl PipeSendStream {
    /// Wraps the writable descriptor `fd` (a pipe, FIFO or TTY; regular
    /// files cannot be waited for). The stream owns it from now on and closes
    /// it when closed or dropped.
    ///
    /// The descriptor is put in non-blocking mode, which affects its whole
    /// open file description, so every process sharing it sees the change
    /// while the stream is open (Trio's `FdStream` has the same caveat). If
    /// it was blocking, it is made blocking again when the stream closes.
    /// Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] outside `trio::run`; [`Error::Io`] if `fd` is not a
    /// descriptor the OS can watch (for example a regular file, `EPERM`).
    #[cfg(unix)]
    pub fn from_fd(fd: OwnedFd) -> Result<PipeSendStream> {
        PipeSendStream::from_handle(PipeHandle::new(fd)?)
    }

    pub(super) fn from_handle(h: PipeHandle) -> Result<PipeSendStream> {
        Ok(PipeSendStream { core: PipeCore::new(h)?, sending: Cell::new(false), broken: Cell::new(false) })
    }

    /// The descriptor, or `None` once the stream is closed. It stays owned
    /// by the stream: do not close it, and do not read or write it behind
    /// the stream's back.
    #[cfg(unix)]
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.core.h.borrow().as_ref().map(PipeHandle::raw)
    }

    /// The pipe's handle, or `None` once the stream is closed. It stays
    /// owned by the stream (and by the run's I/O completion port): do not
    /// close it, and do not read or write it behind the stream's back.
    #[cfg(windows)]
    pub fn raw_handle(&self) -> Option<std::os::windows::io::RawHandle> {
        self.core.h.borrow().as_ref().map(PipeHandle::raw)
    }

    /// Closes the descriptor now (for `Process::aclose`).
    pub(super) fn close_now(&self) {
        self.core.close();
    }

    async fn send_all_impl(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.check_open()?;
        send_all_loop(data, &self.broken, async |rest: &[u8]| {
            self.core.io(Dir::Write, |fd| write(fd, rest).map(|n| (n, n < rest.len()))).await
        })
        .await
    }

    async fn wait_send_all_might_not_block_impl(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.check_open()?;
        self.core.io.wait_ready(Dir::Write).await.map_err(|e| if self.core.is_closed() { Error::Closed } else { e })
    }
}

impl PipeReceiveStream {
    /// Wraps the readable descriptor `fd` (a pipe, FIFO or TTY). As
    /// [`PipeSendStream::from_fd`], including the caveat about non-blocking
    /// mode. Not a checkpoint.
    ///
    /// # Errors
    /// As [`PipeSendStream::from_fd`].
    #[cfg(unix)]
    pub fn from_fd(fd: OwnedFd) -> Result<PipeReceiveStream> {
        PipeReceiveStream::from_handle(PipeHandle::new(fd)?)
    }

    pub(super) fn from_handle(h: PipeHandle) -> Result<PipeReceiveStream> {
        Ok(PipeReceiveStream { core: PipeCore::new(h)?, receiving: Cell::new(false) })
    }

    /// The descriptor, or `None` once the stream is closed (see
    /// [`PipeSendStream::raw_fd`]).
    #[cfg(unix)]
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.core.h.borrow().as_ref().map(PipeHandle::raw)
    }

    /// The pipe's handle, or `None` once the stream is closed (see
    /// [`PipeSendStream::raw_handle`]).
    #[cfg(windows)]
    pub fn raw_handle(&self) -> Option<std::os::windows::io::RawHandle> {
        self.core.h.borrow().as_ref().map(PipeHandle::raw)
    }

    /// Closes the descriptor now (for `Process::aclose`).
    pub(super) fn close_now(&self) {
        self.core.close();
    }

    async fn receive_some_impl(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.check_open()?;
        if buf.is_empty() {
            return Err(crate::abc::empty_buffer_error());
        }
        let len = buf.len();
        // A short read drained the pipe: the next one waits for an event
        // instead of trying (and failing) first. End of stream (0) stays
        // "ready": no further event would come.
        self.core.io(Dir::Read, |fd| read(fd, buf).map(|n| (n, n > 0 && n < len))).await.map_err(to_broken)
    }
}

/// Opens a pipe for use inside this run: what is sent into the first
/// stream comes out of the second. Not a checkpoint.
///
/// On Unix an anonymous pipe, both ends non-blocking and close-on-exec; on
/// Windows a named pipe with a unique name (`\\.\pipe\trio-...`, refusing
/// remote clients), both ends opened for overlapped I/O, not inheritable,
/// and watched by the run's I/O completion port.
///
/// ```
/// use trio::abc::{AsyncResource, ReceiveStream, SendStream};
/// trio::run(async {
///     let (tx, rx) = trio::subprocess::open_pipe()?;
///     tx.send_all(b"hi").await?;
///     tx.aclose().await?;
///     let mut buf = [0u8; 8];
///     assert_eq!(rx.receive_some(&mut buf).await?, 2);
///     assert_eq!(rx.receive_some(&mut buf).await?, 0);
///     Ok(())
/// })
/// .unwrap();
/// ```
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`; [`Error::Io`] if the OS refuses
/// (for example `EMFILE`, out of descriptors).
pub fn open_pipe() -> Result<(PipeSendStream, PipeReceiveStream)> {
    let (r, w) = super::sys::anonymous_pipe()?;
    let rx = PipeReceiveStream::from_handle(r)?;
    let tx = PipeSendStream::from_handle(w)?;
    Ok((tx, rx))
}

impl crate::abc::AsyncResource for PipeSendStream {
    async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}

impl crate::abc::SendStream for PipeSendStream {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.send_all_impl(data).await
    }

    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.wait_send_all_might_not_block_impl().await
    }
}

impl crate::abc::AsyncResource for PipeReceiveStream {
    async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}

impl crate::abc::ReceiveStream for PipeReceiveStream {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.receive_some_impl(buf).await
    }
}

#[cfg(feature = "futures-io")]
mod futures_impls {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{Dir, PipeReceiveStream, PipeSendStream, read, write};

    impl PipeReceiveStream {
        fn poll_read_impl(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let len = buf.len();
            self.core.poll_io(cx, Dir::Read, |fd| read(fd, buf).map(|n| (n, n > 0 && n < len)))
        }
    }

    impl PipeSendStream {
        fn poll_write_impl(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            if self.broken.get() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the stream is broken")));
            }
            self.core.poll_io(cx, Dir::Write, |fd| write(fd, buf).map(|n| (n, n < buf.len())))
        }
    }

    /// Cancellation: a poll parked here wakes when its cancel scope is cancelled and
    /// fails with an `io::Error` wrapping
    /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
    /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
    impl futures_io::AsyncRead for PipeReceiveStream {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.poll_read_impl(cx, buf)
        }
    }

    /// Cancellation: a poll parked here wakes when its cancel scope is cancelled and
    /// fails with an `io::Error` wrapping
    /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
    /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
    impl futures_io::AsyncRead for &PipeReceiveStream {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            self.poll_read_impl(cx, buf)
        }
    }

    /// `poll_close` closes the descriptor (the reader sees end of stream).
    ///
    /// Cancellation: a poll parked here wakes when its cancel scope is cancelled and
    /// fails with an `io::Error` wrapping
    /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
    /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
    impl futures_io::AsyncWrite for PipeSendStream {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_impl(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.core.close();
            Poll::Ready(Ok(()))
        }
    }

    /// `poll_close` closes the descriptor (the reader sees end of stream).
    ///
    /// Cancellation: a poll parked here wakes when its cancel scope is cancelled and
    /// fails with an `io::Error` wrapping
    /// [`Error::Cancelled`](crate::Error::Cancelled), which the scope catches (see
    /// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)).
    impl futures_io::AsyncWrite for &PipeSendStream {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_impl(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.core.close();
            Poll::Ready(Ok(()))
        }
    }
}
