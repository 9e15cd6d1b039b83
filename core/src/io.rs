//! Waiting for I/O: the registered-source handle the socket types are built
//! on, and the public `wait_readable`/`wait_writable`/`notify_closing`.
//!
//! See `runtime/io.rs` for the readiness contract.

use std::io;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use crate::driver::{Interest, RawSource};
use crate::error::{Error, Result};
use crate::lowlevel::{self, Abort};
use crate::runtime::{
    self, ParkState,
    io::{Dir, IoWaiter},
};

const FOREIGN_RUN: &str = "an I/O object was used outside the trio run that created it";

/// A source registered with the current run's driver, for both directions,
/// for as long as the handle lives. Not `Send`: it belongs to its run.
#[derive(Debug)]
pub(crate) struct IoHandle {
    key: usize,
    generation: u32,
    serial: u64,
    fd: RawSource,
    _not_send: PhantomData<*const ()>,
}

impl IoHandle {
    /// Registers `fd` with the current run.
    pub(crate) fn new(fd: RawSource) -> Result<IoHandle> {
        let (key, generation, serial) = runtime::with(|rt| {
            let (k, g) = rt.io_register(fd, false)?;
            Ok::<_, io::Error>((k, g, rt.serial))
        })??;
        Ok(IoHandle { key, generation, serial, fd, _not_send: PhantomData })
    }

    /// Runs `f` on this handle's record; `Closed` if it was released,
    /// `Runtime` if used from another run.
    fn with_rec<R>(&self, f: impl FnOnce(&mut crate::runtime::io::IoRec) -> R) -> Result<R> {
        runtime::with(|rt| {
            if rt.serial != self.serial {
                return Err(Error::Runtime(FOREIGN_RUN));
            }
            match rt.io_rec(self.key, self.generation) {
                Some(rec) => Ok(f(rec)),
                None => Err(Error::Closed),
            }
        })?
    }

    /// The record's key and generation in the run's I/O table (the
    /// driver's token for the source).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn key(&self) -> (usize, u32) {
        (self.key, self.generation)
    }

    /// The run the handle belongs to.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether the run's driver is io_uring (whose stream sockets do their
    /// receives and sends as completions).
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn on_ring(&self) -> bool {
        #[cfg(target_os = "linux")]
        return runtime::with(|rt| rt.serial == self.serial && rt.driver.uring().is_some()).unwrap_or(false);
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Marks a direction not ready (the owner saw it drained).
    pub(crate) fn clear_ready(&self, dir: Dir) {
        let _ = runtime::with(|rt| rt.io_clear_ready(self.key, self.generation, dir));
    }

    /// Runs the non-blocking `op` until it does not report `WouldBlock`,
    /// parking for readiness in between; `op` returns its result and
    /// whether the direction is now drained (for example a short read).
    ///
    /// One future with one runtime borrow per poll (the hot path of every
    /// socket operation): `op` is a plain system call and runs inside the
    /// borrow.
    ///
    /// # Checkpoint
    /// Always (Trio's rule for socket operations): a cancellation check
    /// first, then either the wait or, if `op` succeeded at once, a yield.
    pub(crate) fn io<T, F>(&self, dir: Dir, op: F) -> IoOp<'_, T, F>
    where
        F: FnMut() -> io::Result<(T, bool)>,
    {
        IoOp { handle: self, dir, op, state: OpState::Start, out: None }
    }

    /// The poll-style form of [`io`](Self::io), for `futures-io`.
    ///
    /// Not a schedule point (a poll that can complete does), but a cancel
    /// point: inside a cancelled scope it fails with an `io::Error` that
    /// wraps [`Error::Cancelled`] (see `Error::from(io::Error)`), and a
    /// waiting poller is woken when its scope is cancelled, so a foreign
    /// future parked here ends at its deadline.
    #[cfg_attr(not(feature = "futures-io"), allow(dead_code))]
    pub(crate) fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        mut op: impl FnMut() -> io::Result<(T, bool)>,
    ) -> Poll<io::Result<T>> {
        let (key, generation) = (self.key, self.generation);
        // Bounded: each turn either returns or clears the readiness bit.
        for _ in 0..1024 {
            let ready = runtime::with(|rt| {
                if rt.serial != self.serial {
                    return Err(Error::Runtime(FOREIGN_RUN));
                }
                if rt.current_cancelled() {
                    rt.io_drop_poll_waiter(key, generation, dir);
                    return Err(rt.cancelled_error());
                }
                let Some(rec) = rt.io_rec(key, generation) else { return Err(Error::Closed) };
                if rec.ready[dir as usize] {
                    return Ok(true);
                }
                rt.io_poll_park(key, generation, dir, cx.waker()).map_err(|_| Error::Busy)?;
                Ok(false)
            });
            match ready {
                Ok(Ok(true)) => match op() {
                    Ok((v, drained)) => {
                        if drained {
                            self.clear_ready(dir);
                        }
                        return Poll::Ready(Ok(v));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_ready(dir),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Ok(Ok(false)) => return Poll::Pending,
                Ok(Err(e)) | Err(e) => return Poll::Ready(Err(e.into_io())),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Waits until `dir` is ready now (level-triggered, as Trio's
    /// `wait_readable`): returns at once (after a yield) if it is.
    pub(crate) async fn wait_ready(&self, dir: Dir) -> Result<()> {
        self.with_rec(|_| ())?;
        wait_level(self.fd, self.key, self.generation, dir).await
    }

    /// Deregisters now (before the descriptor is closed); waiters wake with
    /// `Closed`. Idempotent.
    pub(crate) fn release(&self) {
        let _ = runtime::with(|rt| {
            if rt.serial == self.serial {
                rt.io_release(self.key, self.generation);
            }
        });
    }
}

impl Drop for IoHandle {
    fn drop(&mut self) {
        self.release();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpState {
    Start,
    /// Cancelled on entry: yielded once, reports `Cancelled` next (unless
    /// a shield went up meanwhile).
    CancelYield,
    /// Completed at once: yielded once, returns `out` next.
    Yielded,
    /// Waiting for readiness in park record `key`.
    Parked(usize),
    Done,
}

/// The future of [`IoHandle::io`].
pub(crate) struct IoOp<'a, T, F> {
    handle: &'a IoHandle,
    dir: Dir,
    op: F,
    state: OpState,
    out: Option<T>,
}

impl<T, F> std::fmt::Debug for IoOp<'_, T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoOp").field("dir", &self.dir).field("state", &self.state).finish_non_exhaustive()
    }
}

impl<T, F> IoOp<'_, T, F>
where
    F: FnMut() -> io::Result<(T, bool)>,
{
    /// Tries the operation (if the direction may be ready) and parks if it
    /// would block. Runs inside the runtime borrow.
    fn attempt(&mut self, rt: &mut runtime::Runtime, cx: &mut Context<'_>, waited: bool) -> Poll<Result<T>> {
        let (key, generation, d) = (self.handle.key, self.handle.generation, self.dir as usize);
        // Bounded: every turn returns, or consumes an EINTR.
        for _ in 0..1024 {
            let Some(rec) = rt.io_rec(key, generation) else { return Poll::Ready(Err(Error::Closed)) };
            if !rec.ready[d] {
                break;
            }
            match (self.op)() {
                Ok((v, drained)) => {
                    if drained && !rec.closed[d] {
                        rec.ready[d] = false;
                    }
                    if waited {
                        return Poll::Ready(Ok(v));
                    }
                    // Completed without waiting: still a schedule point.
                    rt.op_yield(cx.waker());
                    self.out = Some(v);
                    self.state = OpState::Yielded;
                    return Poll::Pending;
                }
                // Not ready after all (also when a hang-up was seen: the
                // call itself is the truth).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    rec.ready[d] = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
        let Some(rec) = rt.io_rec(key, generation) else { return Poll::Ready(Err(Error::Closed)) };
        if matches!(rec.waiters[d], IoWaiter::Park(_)) {
            return Poll::Ready(Err(Error::Busy));
        }
        let (park, _) = rt.insert_park(cx.waker().clone());
        rt.io_set_park(key, generation, self.dir, park);
        if !waited {
            rt.count_schedule_point();
        }
        self.state = OpState::Parked(park);
        Poll::Pending
    }
}

impl<T, F> IoOp<'_, T, F> {
    /// Takes this op's waiter out of its slot and forgets its park record.
    fn unpark_self(&self, rt: &mut runtime::Runtime, park: usize) {
        rt.io_clear_waiter(self.handle.key, self.handle.generation, self.dir, park);
        if rt.parks.contains(park) {
            rt.remove_park(park);
        }
    }
}

// Nothing in an `IoOp` is pinned structurally: `op` and `out` are only
// ever used by `&mut`.
impl<T, F> Unpin for IoOp<'_, T, F> {}

impl<T, F> std::future::Future for IoOp<'_, T, F>
where
    F: FnMut() -> io::Result<(T, bool)>,
{
    type Output = Result<T>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let out = runtime::with(|rt| {
            if rt.serial != this.handle.serial {
                return Poll::Ready(Err(Error::Runtime(FOREIGN_RUN)));
            }
            match this.state {
                OpState::Start => {
                    if rt.op_enter(cx.waker()) {
                        // As `checkpoint_if_cancelled`: yielded; report next.
                        this.state = OpState::CancelYield;
                        return Poll::Pending;
                    }
                    this.attempt(rt, cx, false)
                }
                OpState::CancelYield => {
                    if rt.current_cancelled() {
                        Poll::Ready(Err(rt.cancelled_error()))
                    } else {
                        this.attempt(rt, cx, true)
                    }
                }
                OpState::Yielded => match this.out.take() {
                    Some(v) => Poll::Ready(Ok(v)),
                    None => Poll::Ready(Err(Error::Runtime("I/O operation polled after completion"))),
                },
                OpState::Parked(park) => match rt.repoll_park(park, cx.waker()) {
                    Some(ParkState::Waiting) => Poll::Pending,
                    // Woken by an event (or the source's release): try again.
                    Some(ParkState::Woken) => this.attempt(rt, cx, true),
                    Some(ParkState::CancelPending) | Some(ParkState::Aborted) | Some(ParkState::Broken) => {
                        this.unpark_self(rt, park);
                        Poll::Ready(Err(rt.cancelled_error()))
                    }
                    None => Poll::Ready(Err(Error::Runtime("parked I/O waiter vanished"))),
                },
                OpState::Done => Poll::Ready(Err(Error::Runtime("I/O operation polled after completion"))),
            }
        });
        match out {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => {
                this.state = OpState::Done;
                Poll::Ready(r)
            }
            Err(e) => {
                this.state = OpState::Done;
                Poll::Ready(Err(e))
            }
        }
    }
}

impl<T, F> Drop for IoOp<'_, T, F> {
    fn drop(&mut self) {
        if let OpState::Parked(park) = self.state {
            let _ = runtime::with(|rt| self.unpark_self(rt, park));
        }
    }
}

/// Resets a busy flag when an operation ends, however it ends (Trio's
/// conflict detectors, for every stream type).
pub(crate) struct BusyGuard<'a>(&'a std::cell::Cell<bool>);

impl<'a> BusyGuard<'a> {
    /// Claims `flag`; `Busy` if another task holds it.
    pub(crate) fn claim(flag: &'a std::cell::Cell<bool>) -> Result<BusyGuard<'a>> {
        if flag.replace(true) { Err(Error::Busy) } else { Ok(BusyGuard(flag)) }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Is this OS error "the peer is gone"?
pub(crate) fn is_broken(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

/// `Io` errors that say the peer is gone become `Broken`.
pub(crate) fn to_broken(e: Error) -> Error {
    match e {
        Error::Io(e) if is_broken(&e) => Error::Broken,
        other => other,
    }
}

/// What every stream's `send_all` checks before sending: `Closed` once its
/// sending side is shut (`send_eof`, `aclose`), `Broken` after a failed or
/// cancelled partial send (see [`note_broken`]).
#[inline]
pub(crate) fn check_send(shut: bool, broken: &std::cell::Cell<bool>) -> Result<()> {
    if shut {
        return Err(Error::Closed);
    }
    if broken.get() {
        return Err(Error::Broken);
    }
    Ok(())
}

/// The error of a `send_all` that failed after `sent` bytes: a failure
/// after part of the data went out (a cancellation included) or a vanished
/// peer marks the stream `broken`.
pub(crate) fn note_broken(e: Error, sent: usize, broken: &std::cell::Cell<bool>) -> Error {
    let e = to_broken(e);
    if (sent > 0 && !matches!(e, Error::Closed)) || matches!(e, Error::Broken) {
        broken.set(true);
    }
    e
}

/// Parks in the waiter slot `dir` of record `key`.
async fn park_on(key: usize, generation: u32, dir: Dir) -> Result<()> {
    lowlevel::park_keyed::<_, ()>(
        |token| {
            let k = lowlevel::token_key(token);
            let _ = runtime::with(|rt| rt.io_set_park(key, generation, dir, k));
        },
        move |park| {
            let _ = runtime::with(|rt| rt.io_clear_waiter(key, generation, dir, park));
            Abort::Succeeded
        },
    )
    .await
}

/// Is `fd` ready in `dir` right now? The driver asks the OS without
/// waiting (`poll(2)`, `WSAPoll`); an error or hang-up counts as ready.
fn level_ready(fd: RawSource, dir: Dir) -> bool {
    crate::driver::ready_now(fd, Interest { readable: dir == Dir::Read, writable: dir == Dir::Write })
}

async fn wait_fd(fd: RawSource, dir: Dir) -> Result<()> {
    // Use the source's registration if it has one, else add a temporary one.
    let (key, generation, temporary) = runtime::with(|rt| match rt.io.by_fd.get(&fd) {
        Some(&k) => Ok((k, rt.io.recs[k].generation, rt.io.recs[k].temporary)),
        None => rt.io_register(fd, true).map(|(k, g)| (k, g, true)),
    })??;
    struct TempGuard(usize, u32, bool);
    impl Drop for TempGuard {
        fn drop(&mut self) {
            if self.2 {
                let _ = runtime::with(|rt| rt.io_temp_done(self.0, self.1));
            }
        }
    }
    let _guard = TempGuard(key, generation, temporary);
    wait_level(fd, key, generation, dir).await
}

/// The level-triggered wait on record `key`: `Busy` if another task waits
/// in `dir`; if the readiness bit is set, one `poll(2)` says whether `fd`
/// is ready now (then it returns after a yield); otherwise it parks until
/// the next event. `Closed` if the record is released meanwhile.
async fn wait_level(fd: RawSource, key: usize, generation: u32, dir: Dir) -> Result<()> {
    let ready = runtime::with(|rt| match rt.io_rec(key, generation) {
        Some(rec) => match rec.waiters[dir as usize] {
            IoWaiter::Park(_) => Err(Error::Busy),
            _ => Ok(rec.ready[dir as usize]),
        },
        None => Err(Error::Closed),
    })??;
    if ready {
        if level_ready(fd, dir) {
            return lowlevel::checkpoint().await;
        }
        let _ = runtime::with(|rt| rt.io_clear_ready(key, generation, dir));
    }
    park_on(key, generation, dir).await?;
    // Woken by an event, or by the release of the source.
    runtime::with(|rt| rt.io_rec(key, generation).map(|_| ()).ok_or(Error::Closed))?
}

/// Waits until `fd` is readable (level-triggered: returns soon if it already
/// is). Only one task may wait for each direction of a descriptor.
///
/// A descriptor that no `trio` object owns is registered with the OS poller
/// for the length of the wait; sockets made by `trio` use their own
/// registration.
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// Returns `Err(Cancelled)`; nothing else happened.
/// # Errors
/// `Busy` if another task waits for `fd` to become readable; `Closed` if
/// [`notify_closing`] was called for `fd` meanwhile; `Io` if the OS refuses
/// to watch `fd` (for example a regular file on Linux: `EPERM`).
pub async fn wait_readable(fd: RawSource) -> Result<()> {
    wait_fd(fd, Dir::Read).await
}

/// Waits until `fd` is writable. See [`wait_readable`].
///
/// # Errors
/// As [`wait_readable`].
pub async fn wait_writable(fd: RawSource) -> Result<()> {
    wait_fd(fd, Dir::Write).await
}

/// Tells `trio` that `fd` is about to be closed: tasks waiting on it wake
/// with `Err(Closed)`, and its registration is dropped (so the number can be
/// reused safely). Call it before closing a descriptor you waited on. Not a
/// checkpoint.
///
/// # Errors
/// `Runtime` outside `trio::run`.
pub fn notify_closing(fd: RawSource) -> Result<()> {
    runtime::with(|rt| {
        rt.io_notify_closing(fd);
    })
}
