//! Socket operations the readiness way, shared by the readiness backends:
//! try the non-blocking call, and when it would block, wait for the
//! engine's readiness report of the registered source and try again.
//!
//! - [`SocketIo`]: a registered resource (a socket, a descriptor, a
//!   `wasi:sockets` resource) and its non-blocking calls, with `Closed`
//!   once it is closed; its [`accept_on`](SocketIo::accept_on) is a
//!   listener's accept;
//! - [`SocketCalls`]: one whose socket is a handle with
//!   `send`/`recv`/`shutdown` calls (natively and on WASI preview 1) gets
//!   its [`StreamOps`] written once, here.

use std::cell::{Cell, RefCell};
use std::io;

use super::socket::{SocketOps, StreamOps};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::runtime::io::Dir;

/// A registered resource and the non-blocking calls on it.
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

    /// A listener's accept: `call` (the `accept` call, skipping connections
    /// that died in the queue) once the socket is readable.
    fn accept_on<T>(&self, mut call: impl FnMut(Self::Handle<'_>) -> io::Result<T>) -> impl Future<Output = Result<T>> {
        self.io_on(Dir::Read, move |h| call(h).map(|c| (c, false)))
    }
}

/// A [`SocketIo`] whose socket is one handle with `send`/`recv`/`shutdown`
/// calls: its [`StreamOps`] is written once, below, from these.
pub(crate) trait SocketCalls: SocketIo {
    /// Waits until the socket is ready in `dir`; `Closed` once closed.
    fn wait_ready_on(&self, dir: Dir) -> impl Future<Output = Result<()>>;

    /// `send` (never raising SIGPIPE).
    fn send(h: Self::Handle<'_>, buf: &[u8]) -> io::Result<usize>;

    /// `recv` into `buf`.
    fn recv(h: Self::Handle<'_>, buf: &mut [u8]) -> io::Result<usize>;

    /// Shuts the sending side down; a connection that is gone already
    /// needs none (`Ok`).
    fn shutdown_write(h: Self::Handle<'_>) -> io::Result<()>;
}

/// A [`SocketCalls`] socket whose [`StreamOps`] are the readiness ones
/// below, all of them (a socket that does some of its operations another
/// way, as the native one on io_uring, writes its own from the functions
/// here).
pub(crate) trait ReadinessStream: SocketCalls + SocketOps {}

/// `write_all` the readiness way: `send` until all went out.
pub(crate) fn write_all<'d, D: SocketCalls>(
    d: &D,
    data: &'d [u8],
    sent: &Cell<usize>,
) -> impl Future<Output = Result<()>> {
    WriteAll {
        data,
        sent,
        next: move |rest: &'d [u8]| d.io_on(Dir::Write, move |h| D::send(h, rest).map(|n| (n, n < rest.len()))),
        op: None,
    }
}

/// `read` the readiness way: one `recv`.
pub(crate) fn read<D: SocketCalls>(d: &D, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
    let len = buf.len();
    // A short read drained the socket: the next one waits for an event
    // instead of trying (and failing) first. End of stream (0) stays
    // "ready": no further event would come.
    d.io_on(Dir::Read, move |h| D::recv(h, buf).map(|n| (n, n > 0 && n < len)))
}

/// `shutdown_write` on the handle.
pub(crate) fn shutdown_write<D: SocketCalls>(d: &D) -> Result<()> {
    Ok(d.with_handle(|h| D::shutdown_write(h))??)
}

/// `poll_read` the readiness way.
#[cfg(feature = "futures-io")]
pub(crate) fn poll_read<D: SocketCalls>(
    d: &D,
    cx: &mut std::task::Context<'_>,
    buf: &mut [u8],
) -> std::task::Poll<io::Result<usize>> {
    let len = buf.len();
    d.poll_io_on(cx, Dir::Read, |h| D::recv(h, buf).map(|n| (n, n > 0 && n < len)))
}

/// `poll_write` the readiness way.
#[cfg(feature = "futures-io")]
pub(crate) fn poll_write<D: SocketCalls>(
    d: &D,
    cx: &mut std::task::Context<'_>,
    buf: &[u8],
) -> std::task::Poll<io::Result<usize>> {
    d.poll_io_on(cx, Dir::Write, |h| D::send(h, buf).map(|n| (n, n < buf.len())))
}

/// `poll_close`: shuts the sending side down (a closed stream has
/// nothing to shut).
#[cfg(feature = "futures-io")]
pub(crate) fn poll_close<D: SocketCalls>(d: &D) -> std::task::Poll<io::Result<()>> {
    std::task::Poll::Ready(d.with_handle(|h| D::shutdown_write(h)).unwrap_or(Ok(())))
}

impl<D: ReadinessStream> StreamOps for D {
    fn write_all(&self, data: &[u8], sent: &Cell<usize>) -> impl Future<Output = Result<()>> {
        write_all(self, data, sent)
    }

    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>> {
        read(self, buf)
    }

    fn ready(&self, dir: Dir) -> impl Future<Output = Result<()>> {
        self.wait_ready_on(dir)
    }

    fn shutdown_write(&self) -> Result<()> {
        shutdown_write(self)
    }

    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<io::Result<usize>> {
        poll_read(self, cx, buf)
    }

    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<io::Result<usize>> {
        poll_write(self, cx, buf)
    }

    #[cfg(feature = "futures-io")]
    fn poll_close(
        &self,
        _cx: &mut std::task::Context<'_>,
        _eof_sent: &std::cell::Cell<bool>,
    ) -> std::task::Poll<io::Result<()>> {
        poll_close(self)
    }
}

pin_project_lite::pin_project! {
    /// The future of the readiness backends' `write_all`: one send
    /// operation per chunk the socket takes, until all of the data went
    /// out. Hand-written (rather than an `async fn` loop) so that a
    /// `send_all` is one state machine over the current send's.
    struct WriteAll<'d, 'c, N, F> {
        data: &'d [u8],
        sent: &'c Cell<usize>,
        // Starts the send of the rest.
        next: N,
        #[pin]
        op: Option<F>,
    }
}

impl<'d, N, F> Future for WriteAll<'d, '_, N, F>
where
    N: FnMut(&'d [u8]) -> F,
    F: Future<Output = Result<usize>>,
{
    type Output = Result<()>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        let mut this = self.project();
        // Bounded: every turn sends at least one byte or returns.
        loop {
            if this.op.is_none() {
                let sent = this.sent.get();
                if sent >= this.data.len() {
                    return std::task::Poll::Ready(Ok(()));
                }
                let data: &'d [u8] = this.data;
                this.op.set(Some((this.next)(&data[sent..])));
            }
            let Some(op) = this.op.as_mut().as_pin_mut() else { continue };
            let out = std::task::ready!(op.poll(cx));
            this.op.set(None);
            match out {
                Ok(n) => this.sent.set(this.sent.get() + n),
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

/// Runs a non-blocking call on the resource in `slot` (a socket, a
/// descriptor; empty once closed) until it does not block (see
/// `IoHandle::io`); `Closed` if it is closed, also meanwhile.
pub(crate) fn io_while_open<'a, S, T>(
    io: &'a IoHandle,
    slot: &'a RefCell<Option<S>>,
    dir: Dir,
    mut op: impl FnMut(&S) -> io::Result<(T, bool)>,
) -> impl Future<Output = Result<T>> {
    WhileOpen {
        op: io.io(dir, move || match slot.borrow().as_ref() {
            Some(s) => op(s),
            None => Err(closed_io()),
        }),
        slot,
    }
}

/// The future of [`io_while_open`]: the I/O operation, whose error is
/// `Closed` if the resource was closed meanwhile. Hand-written, so that a
/// socket operation is one state machine (the operation's) and not a
/// stack of `async fn`s.
struct WhileOpen<'a, F, S> {
    op: F,
    slot: &'a RefCell<Option<S>>,
}

impl<T, F: Future<Output = Result<T>> + Unpin, S> Future for WhileOpen<'_, F, S> {
    type Output = Result<T>;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<T>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.op).poll(cx) {
            std::task::Poll::Ready(Err(e)) if this.slot.borrow().is_none() => {
                drop(e);
                std::task::Poll::Ready(Err(Error::Closed))
            }
            other => other,
        }
    }
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

/// A registered resource in `slot` (a socket, a descriptor, a
/// `wasi:sockets` resource; empty once closed) and its registration: the
/// [`SocketIo`] of every readiness backend. Field order matters: the
/// registration is dropped (deregistered) before the resource is closed.
#[derive(Debug)]
pub(crate) struct Registered<S> {
    pub(crate) io: IoHandle,
    pub(crate) slot: RefCell<Option<S>>,
}

impl<S> Registered<S> {
    /// Runs `f` on the resource, or `Closed`.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&S) -> Result<R>) -> Result<R> {
        f(&*self.get()?)
    }

    /// The resource, or `Closed`.
    pub(crate) fn get(&self) -> Result<std::cell::Ref<'_, S>> {
        std::cell::Ref::filter_map(self.slot.borrow(), Option::as_ref).map_err(|_| Error::Closed)
    }

    /// Waits until the resource is ready in `dir` (level-triggered);
    /// `Closed` once closed.
    pub(crate) async fn wait_ready(&self, dir: Dir) -> Result<()> {
        self.get()?;
        self.io.wait_ready(dir).await
    }

    /// Closes now: waiters wake with `Closed`, then the resource goes.
    pub(crate) fn close(&self) {
        self.io.release();
        drop(self.slot.borrow_mut().take());
    }
}

impl<S: 'static> SocketIo for Registered<S> {
    type Handle<'a> = &'a S;

    fn with_handle<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R> {
        Ok(f(&*self.get()?))
    }

    fn io_on<T>(&self, dir: Dir, op: impl FnMut(&S) -> io::Result<(T, bool)>) -> impl Future<Output = Result<T>> {
        io_while_open(&self.io, &self.slot, dir, op)
    }

    #[cfg(feature = "futures-io")]
    fn poll_io_on<T>(
        &self,
        cx: &mut std::task::Context<'_>,
        dir: Dir,
        op: impl FnMut(&S) -> io::Result<(T, bool)>,
    ) -> std::task::Poll<io::Result<T>> {
        poll_io_while_open(&self.io, &self.slot, cx, dir, op)
    }
}
