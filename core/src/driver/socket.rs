//! The socket half of the driver contract: what a backend's socket types
//! provide to `net/`, which writes Trio's socket semantics (conflict
//! detection, the broken-stream rule, checkpoints) once over them.
//!
//! Each backend owns its sockets' whole life: create, bind, listen,
//! accept, connect, read, write, shutdown and close. How it does them is
//! its own business:
//!
//! - a **readiness** backend (`native` on epoll/kqueue/AFD, `wasi_p1` on
//!   `poll_oneoff`, `wasi_p2` on `wasi:io/poll`) tries the non-blocking call
//!   and, when it would block, waits for the engine's readiness report of
//!   the registered source (`readiness.rs` holds that loop, shared);
//! - a **completion** backend (io_uring, IOCP proper) submits the operation
//!   and waits for its completion. The operations borrow the caller's
//!   buffer only for as long as their future lives, and a dropped future
//!   (a cancelled task) cannot take a buffer back from the kernel, so such
//!   a backend submits its own buffers (registered or provided ones) and
//!   copies in and out of the caller's; a cancelled operation is cancelled
//!   in the kernel and its buffer reused only once the kernel lets go.
//!
//! Either way the operations below have the same meaning:
//!
//! - every operation that can wait (read, write, accept, connect, the
//!   datagram calls) is a checkpoint, as Trio's socket methods: a
//!   cancellation check first, then the wait, or one yield when the call
//!   completes at once (`IoHandle::io` does both for the readiness
//!   backends);
//! - a waiting operation returns `Closed` if the socket is closed while it
//!   waits (Trio's `notify_closing`) and `Cancelled` if its task's scope is
//!   cancelled; the engine's park is the only place either comes from;
//! - the conflict detectors (`Busy`) and the broken-stream rule of a
//!   cancelled `send_all` are `net/`'s, not the backend's (`net/stream.rs`);
//! - `close` is immediate and idempotent: waiters wake with `Closed`, the
//!   OS resources go (for a completion backend, once nothing in flight
//!   uses them).
//!
//! The platform's types are named [`TcpStreamSocket`] and
//! [`TcpListenerSocket`]; natively the same type also backs UDP and
//! Unix-domain sockets (its datagram and path operations are its own).

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};

use crate::error::Result;
use crate::net::ListenOptions;
use crate::runtime::io::Dir;

/// What every socket provides.
pub(crate) trait SocketOps {
    /// `Closed` once closed.
    fn check_open(&self) -> Result<()>;

    /// Closes now: waiters wake with `Closed`, the resources are freed.
    /// Idempotent.
    fn close(&self);

    /// The local IP address (with the port the OS chose for port 0).
    fn local_addr(&self) -> Result<SocketAddr>;
}

/// A connected byte-stream socket: the operations `net/stream.rs` builds
/// Trio's `SocketStream` from.
///
/// The calls on the echo hot path return the inner future itself rather
/// than being `async fn`s: each `async` layer would copy the future below
/// it into its own state (callgrind counted some 200 instructions per echo
/// round trip more).
pub(crate) trait StreamOps: SocketOps {
    /// Sends all of `data[sent..]`, adding to `sent` what went out (so
    /// that a failure or a cancellation midway can tell).
    fn write_all(&self, data: &[u8], sent: &Cell<usize>) -> impl Future<Output = Result<()>>;

    /// One receive into `buf` (not empty); `Ok(0)` at the end of stream.
    fn read(&self, buf: &mut [u8]) -> impl Future<Output = Result<usize>>;

    /// Waits until the socket is ready in `dir` (level-triggered: data, the
    /// end of stream or an error pending for reading; room for writing).
    fn ready(&self, dir: Dir) -> impl Future<Output = Result<()>>;

    /// Shuts the sending side down (a connection that is gone already
    /// needs none); `Closed` once closed.
    fn shutdown_write(&self) -> Result<()>;

    /// `AsyncRead::poll_read`.
    #[cfg(feature = "futures-io")]
    fn poll_read(&self, cx: &mut std::task::Context<'_>, buf: &mut [u8]) -> std::task::Poll<std::io::Result<usize>>;

    /// One write of part of `buf` (the stream is neither broken nor shut).
    #[cfg(feature = "futures-io")]
    fn poll_write(&self, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>>;

    /// `AsyncWrite::poll_flush`: nothing to do where writes go straight to
    /// the OS.
    #[cfg(feature = "futures-io")]
    fn poll_flush(&self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// `AsyncWrite::poll_close`; `eof_sent` is the stream's `send_eof` flag.
    #[cfg(feature = "futures-io")]
    fn poll_close(
        &self,
        cx: &mut std::task::Context<'_>,
        eof_sent: &std::cell::Cell<bool>,
    ) -> std::task::Poll<std::io::Result<()>>;
}

/// A TCP stream: how one is made, and its TCP-only calls.
pub(crate) trait TcpStreamOps: StreamOps + Sized {
    /// Connects to `addr`. Checks for cancellation first; a connect that
    /// completes at once ends with a shielded checkpoint, one that waits
    /// is cancellable (the half-made socket is closed).
    async fn connect(addr: SocketAddr) -> Result<Self>;

    /// Connects to `addr` from the local IP address `local` (port chosen
    /// by the OS), as [`connect`](Self::connect); an error naming both
    /// addresses if they do not fit together.
    async fn connect_from(local: IpAddr, addr: SocketAddr) -> Result<Self>;

    /// The peer's address.
    fn peer_addr(&self) -> Result<SocketAddr>;

    /// `TCP_NODELAY` (on for every stream this layer makes, where the
    /// platform has the option).
    fn set_nodelay(&self, on: bool) -> Result<()>;
}

/// A listening socket.
pub(crate) trait ListenerOps: SocketOps {
    /// What `accept` gives.
    type Conn;

    /// Waits for a connection and takes it, skipping connections that
    /// died in the queue (Trio ignores `ECONNABORTED`, `EPROTO` and `EPERM`
    /// there); not a checkpoint by itself (`net/stream.rs`'s `accept` adds
    /// the cancellation check and the conflict detector).
    fn accept(&self) -> impl Future<Output = Result<Self::Conn>>;
}

/// A TCP listener: how one is made.
pub(crate) trait TcpListenerOps: ListenerOps<Conn: TcpStreamOps> + Sized {
    /// Binds `addr` and listens, with `options` as far as the platform
    /// has them.
    fn listen(addr: SocketAddr, options: &ListenOptions) -> Result<Self>;
}

#[cfg(not(target_os = "wasi"))]
pub(crate) use super::native::socket::{Socket as TcpListenerSocket, Socket as TcpStreamSocket, resolve};
/// The native socket type, which also backs UDP and Unix-domain sockets.
#[cfg(not(target_os = "wasi"))]
pub(crate) use super::native::socket::{Socket as OsSocket, ip_addr};
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) use super::wasi_p1::socket::{Socket as TcpListenerSocket, Socket as TcpStreamSocket, resolve};
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) use super::wasi_p2::socket::{Listener as TcpListenerSocket, Stream as TcpStreamSocket, resolve};

#[cfg(target_os = "linux")]
pin_project_lite::pin_project! {
    /// One of two futures with the same output: a socket operation that is
    /// done one way or another depending on the run's driver.
    #[project = EitherProj]
    pub(crate) enum Either<A, B> {
        Left { #[pin] f: A },
        Right { #[pin] f: B },
    }
}

#[cfg(target_os = "linux")]
impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
    type Output = A::Output;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<A::Output> {
        match self.project() {
            EitherProj::Left { f } => f.poll(cx),
            EitherProj::Right { f } => f.poll(cx),
        }
    }
}
