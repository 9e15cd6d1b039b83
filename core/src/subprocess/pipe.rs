//! Byte streams over non-blocking pipe descriptors (Trio's `FdStream`,
//! split by direction): the parent's ends of a child's stdin, stdout and
//! stderr, or any pipe, FIFO or TTY the user hands over.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::io::{BusyGuard, IoHandle, check_send, note_broken, to_broken};
use crate::lowlevel;
use crate::runtime::io::Dir;

/// A registered non-blocking descriptor. Field order matters: the
/// registration is dropped (deregistered) before the descriptor is closed.
#[derive(Debug)]
struct FdCore {
    io: IoHandle,
    fd: RefCell<Option<OwnedFd>>,
    /// The descriptor was blocking when it was handed to us: put it back
    /// that way when closing (it may be shared with another process).
    restore_blocking: bool,
}

impl FdCore {
    /// Makes `fd` non-blocking and registers it with the current run.
    fn new(fd: OwnedFd) -> Result<FdCore> {
        let was_nonblocking = get_nonblocking(&fd)?;
        if !was_nonblocking {
            set_nonblocking(&fd, true)?;
        }
        let io = match IoHandle::new(fd.as_raw_fd()) {
            Ok(io) => io,
            Err(e) => {
                if !was_nonblocking {
                    let _ = set_nonblocking(&fd, false);
                }
                return Err(e);
            }
        };
        Ok(FdCore { io, fd: RefCell::new(Some(fd)), restore_blocking: !was_nonblocking })
    }

    /// The descriptor, or `Closed`.
    fn raw(&self) -> Result<RawFd> {
        self.fd.borrow().as_ref().map(AsRawFd::as_raw_fd).ok_or(Error::Closed)
    }

    fn is_closed(&self) -> bool {
        self.fd.borrow().is_none()
    }

    /// Runs a non-blocking system call on the descriptor until it does not
    /// block (see `IoHandle::io`); `Closed` if the stream is closed meanwhile.
    async fn io<T>(&self, dir: Dir, mut op: impl FnMut(RawFd) -> io::Result<(T, bool)>) -> Result<T> {
        self.io
            .io(dir, || match self.raw() {
                Ok(fd) => op(fd),
                Err(_) => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
            })
            .await
            .map_err(|e| if self.is_closed() { Error::Closed } else { e })
    }

    /// Closes now: waiters wake with `Closed`, the descriptor is freed.
    fn close(&self) {
        self.io.release();
        if let Some(fd) = self.fd.borrow_mut().take()
            && self.restore_blocking
        {
            let _ = set_nonblocking(&fd, false);
        }
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
        mut op: impl FnMut(RawFd) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        self.io.poll_io(cx, dir, || match self.raw() {
            Ok(fd) => op(fd),
            Err(_) => Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")),
        })
    }
}

impl Drop for FdCore {
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
/// ([`Process::stdin`](super::Process::stdin)), or any writable pipe, FIFO
/// or TTY wrapped with [`from_fd`](PipeSendStream::from_fd).
///
/// Implements [`SendStream`](crate::abc::SendStream) (and `futures-io`'s
/// `AsyncWrite`, with the `futures-io` feature). Closing it
/// ([`aclose`](crate::abc::AsyncResource::aclose), or dropping it) closes the
/// descriptor, so the reader sees end of stream.
///
/// Writing to a pipe whose reading end is closed fails with
/// [`Error::Broken`]. This relies on `SIGPIPE` being ignored, which is what
/// a Rust program's `main` sets up by default; a program that restored the
/// default action of `SIGPIPE` is killed by such a write instead.
#[derive(Debug)]
pub struct PipeSendStream {
    core: FdCore,
    sending: Cell<bool>,
    /// A `send_all` was cancelled midway, or the reader is gone.
    broken: Cell<bool>,
}

/// The receiving end of a pipe: what the parent reads of a child's stdout or
/// stderr ([`Process::stdout`](super::Process::stdout)), or any readable
/// pipe, FIFO or TTY wrapped with [`from_fd`](PipeReceiveStream::from_fd).
///
/// Implements [`ReceiveStream`](crate::abc::ReceiveStream) (and
/// `futures-io`'s `AsyncRead`, with the `futures-io` feature).
/// `receive_some` returns `Ok(0)` once every writer has closed its end (for a
/// child's output: the child and everything it passed the pipe on to have
/// exited or closed it).
#[derive(Debug)]
pub struct PipeReceiveStream {
    core: FdCore,
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
    pub fn from_fd(fd: OwnedFd) -> Result<PipeSendStream> {
        Ok(PipeSendStream { core: FdCore::new(fd)?, sending: Cell::new(false), broken: Cell::new(false) })
    }

    /// The descriptor, or `None` once the stream is closed. It stays owned
    /// by the stream: do not close it, and do not read or write it behind
    /// the stream's back.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.core.raw().ok()
    }

    /// Closes the descriptor now (for `Process::aclose`).
    pub(super) fn close_now(&self) {
        self.core.close();
    }

    async fn send_all_impl(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.raw()?;
        send_all_loop(data, &self.broken, async |rest: &[u8]| {
            self.core.io(Dir::Write, |fd| write(fd, rest).map(|n| (n, n < rest.len()))).await
        })
        .await
    }

    async fn wait_send_all_might_not_block_impl(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.core.raw()?;
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
    pub fn from_fd(fd: OwnedFd) -> Result<PipeReceiveStream> {
        Ok(PipeReceiveStream { core: FdCore::new(fd)?, receiving: Cell::new(false) })
    }

    /// The descriptor, or `None` once the stream is closed (see
    /// [`PipeSendStream::raw_fd`]).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.core.raw().ok()
    }

    /// Closes the descriptor now (for `Process::aclose`).
    pub(super) fn close_now(&self) {
        self.core.close();
    }

    async fn receive_some_impl(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        self.core.raw()?;
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

/// Opens an anonymous pipe for use inside this run: what is sent into the
/// first stream comes out of the second. Both ends are non-blocking and
/// close-on-exec. Not a checkpoint.
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
    let (r, w) = pipe_cloexec()?;
    let rx = PipeReceiveStream::from_fd(r)?;
    let tx = PipeSendStream::from_fd(w)?;
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

/// `read(2)` into `buf`.
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `write(2)` of `buf`.
fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

fn get_nonblocking(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK` on `fd`'s open file description.
pub(super) fn set_nonblocking(fd: &OwnedFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        if new != flags && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe whose two ends are close-on-exec (and blocking): `(read, write)`.
pub(super) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    #[cfg(not(any(target_vendor = "apple", target_os = "aix", target_os = "haiku")))]
    {
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }
    #[cfg(any(target_vendor = "apple", target_os = "aix", target_os = "haiku"))]
    {
        // No pipe2: a `fork` on another thread between `pipe` and `fcntl`
        // could inherit the descriptors (std's own pipes have the same race
        // on these systems).
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&r, &w] {
            // SAFETY: F_SETFD on a descriptor we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((r, w))
    }
}
