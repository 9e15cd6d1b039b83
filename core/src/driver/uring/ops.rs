//! A stream socket's operations as io_uring completions: the futures the
//! native socket uses for `receive_some`, `send_all`, `wait_readable` and
//! `wait_send_all_might_not_block`, and `AsyncRead::poll_read`, when its
//! run's driver is the ring (see the module docs of `uring/mod.rs`).
//!
//! Each is a checkpoint as on epoll: a cancellation check first
//! ([`Runtime::op_enter`]), then a park until the kernel completes the op,
//! or one yield when a stashed receive answers at once. A cancelled wait
//! cancels its op in the ring and waits for the kernel's answer, shielded
//! (one trip through the ring), then reports `Cancelled`, as on epoll
//! (Trio's rule: an operation either happened or raised `Cancelled`): a
//! receive that got something after all leaves it stashed for the next
//! receive (so it did not happen); a send counts what went out (a partial
//! `send_all` breaks the stream, as on epoll), and one that went out whole
//! happened and returns `Ok`. A future dropped while waiting leaves its op
//! to the driver, which cancels it and keeps what a receive got for the
//! next receiver.

use std::cell::Cell;
use std::io;
use std::task::{Context, Poll};

use super::UringDriver;
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::runtime::io::Dir;
use crate::runtime::{self, ParkState, Runtime};

const FOREIGN_RUN: &str = "an I/O object was used outside the trio run that created it";
const NO_RING: &str = "an io_uring socket was used in a run without io_uring";
const TWICE: &str = "I/O operation polled after completion";

/// The run's ring.
fn ring(rt: &mut Runtime) -> Result<&mut UringDriver> {
    rt.driver.uring().ok_or(Error::Runtime(NO_RING))
}

/// Where a ring operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Cancelled on entry: yielded once, reports `Cancelled` next.
    CancelYield,
    /// Answered at once: yielded once, returns the result next.
    Yielded,
    /// Waiting in park record `park` for op `op` (`ours`: submitted by
    /// this future, else one left by an earlier, abandoned one).
    Wait {
        op: usize,
        park: usize,
        ours: bool,
    },
    /// Cancelled while waiting: the op is being cancelled in the ring and
    /// this waits (shielded) for the kernel's answer.
    Cancelling {
        op: usize,
        park: usize,
        ours: bool,
    },
    Done,
}

/// Parks the current task on op `op`: linked to the current cancel scope,
/// or `shielded` from it. `Busy` if another task waits on the op.
fn park_on_op(rt: &mut Runtime, cx: &Context<'_>, op: usize, shielded: bool) -> Result<usize> {
    let (park, generation) = rt.insert_park(cx.waker().clone());
    if shielded {
        rt.unlink_park(park);
    }
    let u = ring(rt)?;
    if u.wait_on(op, (park, generation)) {
        if u.completed(op) {
            // Completed already (its completion found nobody waiting):
            // nothing else will wake this record.
            rt.unpark_key(park);
        }
        Ok(park)
    } else {
        rt.remove_park(park);
        Err(Error::Busy)
    }
}

/// Forgets park record `park` if it is still there.
fn drop_park(rt: &mut Runtime, park: usize) {
    if rt.parks.contains(park) {
        rt.remove_park(park);
    }
}

/// The end of one poll of a ring operation: when it is ready, anything it
/// still had in the ring is left to the driver, and it is done.
fn finish<T>(state: &mut State, out: Result<Poll<Result<T>>>) -> Poll<Result<T>> {
    let out = out.unwrap_or_else(|e| Poll::Ready(Err(e)));
    if out.is_ready() {
        abandon(std::mem::replace(state, State::Done));
    }
    out
}

/// Moves the current task's wait on op `op` from park record `old` to a
/// new one (`shielded`: outside any cancel scope).
fn repark(rt: &mut Runtime, cx: &Context<'_>, op: usize, old: usize, shielded: bool) -> Result<usize> {
    drop_park(rt, old);
    ring(rt)?.unwait(op, old);
    park_on_op(rt, cx, op, shielded)
}

/// A ring operation's state machine, polled by [`poll_ring`].
trait RingOp {
    type Out;
    fn handle(&self) -> &IoHandle;
    fn state(&mut self) -> &mut State;
    /// One step, inside the runtime borrow.
    fn step(&mut self, rt: &mut Runtime, cx: &Context<'_>) -> Poll<Result<Self::Out>>;
}

/// Polls a ring operation: the run check, one step in one runtime borrow,
/// and [`finish`].
fn poll_ring<O: RingOp>(op: &mut O, cx: &Context<'_>) -> Poll<Result<O::Out>> {
    let serial = op.handle().serial();
    let out = runtime::with(|rt| {
        if rt.serial != serial { Poll::Ready(Err(Error::Runtime(FOREIGN_RUN))) } else { op.step(rt, cx) }
    });
    finish(op.state(), out)
}

/// The way into every operation: `Start` is a cancel point (cancelled, it
/// yields and reports `Cancelled` on the next poll, from `CancelYield`).
/// `Ok(waited)`: begin the operation now (`waited`: a schedule point was
/// passed already); `Err`: return that.
fn entry<T>(state: &mut State, rt: &mut Runtime, cx: &Context<'_>) -> std::result::Result<bool, Poll<Result<T>>> {
    match *state {
        State::Start if rt.op_enter(cx.waker()) => {
            *state = State::CancelYield;
            Err(Poll::Pending)
        }
        State::Start => Ok(false),
        State::CancelYield if rt.current_cancelled() => Err(Poll::Ready(Err(rt.cancelled_error()))),
        State::CancelYield => Ok(true),
        _ => Err(Poll::Ready(Err(Error::Runtime(TWICE)))),
    }
}

/// The waiter of op `op` in park record `park` was cancelled: cancels the
/// op in the ring and waits, shielded, for the kernel's answer.
fn start_cancelling<T>(
    state: &mut State,
    rt: &mut Runtime,
    cx: &Context<'_>,
    op: usize,
    park: usize,
    ours: bool,
) -> Poll<Result<T>> {
    if let Err(e) = ring(rt).map(|u| u.cancel_op(op)) {
        return Poll::Ready(Err(e));
    }
    match repark(rt, cx, op, park, true) {
        Ok(park) => {
            *state = State::Cancelling { op, park, ours };
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(e)),
    }
}

/// What a future left in the ring when it is dropped midway.
fn abandon(state: State) {
    if let State::Wait { op, park, .. } | State::Cancelling { op, park, .. } = state {
        let _ = runtime::with(|rt| {
            drop_park(rt, park);
            if let Some(u) = rt.driver.uring() {
                u.abandon(op);
            }
        });
    }
}

/// `receive_some` on a ring socket.
pub(crate) struct Read<'a, 'b> {
    io: &'a IoHandle,
    buf: &'b mut [u8],
    state: State,
    out: Option<Result<usize>>,
}

impl<'a, 'b> Read<'a, 'b> {
    pub(crate) fn new(io: &'a IoHandle, buf: &'b mut [u8]) -> Read<'a, 'b> {
        Read { io, buf, state: State::Start, out: None }
    }

    /// Answers from the stash, or waits for the receive in the ring
    /// (submitting one if there is none).
    fn begin(&mut self, rt: &mut Runtime, cx: &Context<'_>, waited: bool) -> Poll<Result<usize>> {
        let (key, generation) = self.io.key();
        // Bounded: a completed op found here is settled (its outcome
        // stashed), and the next turn answers from the stash or submits.
        for _ in 0..4 {
            if rt.io_rec(key, generation).is_none() {
                return Poll::Ready(Err(Error::Closed));
            }
            let u = ring(rt)?;
            if let Some(r) = u.take_stash(key, self.buf) {
                let r = r.map_err(Error::Io);
                if waited {
                    return Poll::Ready(r);
                }
                rt.op_yield(cx.waker());
                self.out = Some(r);
                self.state = State::Yielded;
                return Poll::Pending;
            }
            let (op, ours) = match u.recv_op(key) {
                Some(op) if u.completed(op) => {
                    u.settle(op);
                    continue;
                }
                Some(op) => (op, false),
                None => (u.start_recv(key, self.buf.len())?, true),
            };
            let park = park_on_op(rt, cx, op, false)?;
            if !waited {
                rt.count_schedule_point();
            }
            self.state = State::Wait { op, park, ours };
            return Poll::Pending;
        }
        Poll::Ready(Err(Error::Runtime("io_uring receive made no progress")))
    }

    fn step(&mut self, rt: &mut Runtime, cx: &Context<'_>) -> Poll<Result<usize>> {
        match self.state {
            State::Start | State::CancelYield => match entry(&mut self.state, rt, cx) {
                Ok(waited) => self.begin(rt, cx, waited),
                Err(poll) => poll,
            },
            State::Yielded => Poll::Ready(self.out.take().unwrap_or(Err(Error::Runtime(TWICE)))),
            State::Wait { op, park, ours } => match rt.repoll_park(park, cx.waker()) {
                Some(ParkState::Waiting) => Poll::Pending,
                Some(ParkState::Woken) => {
                    ring(rt)?.settle(op);
                    self.state = State::Done;
                    self.begin(rt, cx, true)
                }
                Some(_) => start_cancelling(&mut self.state, rt, cx, op, park, ours),
                None => Poll::Ready(Err(Error::Runtime("parked I/O waiter vanished"))),
            },
            State::Cancelling { op, park, .. } => match rt.repoll_park(park, cx.waker()) {
                Some(ParkState::Waiting | ParkState::CancelPending) => Poll::Pending,
                _ => {
                    // What the receive got after all stays stashed for the
                    // next one: as on epoll, a cancelled receive takes
                    // nothing.
                    ring(rt)?.settle(op);
                    self.state = State::Done;
                    if rt.current_cancelled() {
                        Poll::Ready(Err(rt.cancelled_error()))
                    } else {
                        self.begin(rt, cx, true)
                    }
                }
            },
            State::Done => Poll::Ready(Err(Error::Runtime(TWICE))),
        }
    }
}

/// `send_all` on a ring socket: one send op per chunk of at most
/// [`CHUNK`](super::CHUNK) bytes until all of `data` went out; `sent`
/// counts what did.
pub(crate) struct WriteAll<'a, 'd, 's> {
    io: &'a IoHandle,
    data: &'d [u8],
    sent: &'s Cell<usize>,
    state: State,
}

impl<'a, 'd, 's> WriteAll<'a, 'd, 's> {
    pub(crate) fn new(io: &'a IoHandle, data: &'d [u8], sent: &'s Cell<usize>) -> WriteAll<'a, 'd, 's> {
        WriteAll { io, data, sent, state: State::Start }
    }

    /// Submits the send of the rest (after an abandoned one still in the
    /// ring, if any), or is done.
    fn begin(&mut self, rt: &mut Runtime, cx: &Context<'_>, waited: bool) -> Poll<Result<()>> {
        let (key, generation) = self.io.key();
        // Bounded: a completed op found here is settled first.
        for _ in 0..4 {
            if rt.io_rec(key, generation).is_none() {
                return Poll::Ready(Err(Error::Closed));
            }
            let u = ring(rt)?;
            let (op, ours) = match u.send_op(key) {
                Some(op) if u.completed(op) => {
                    u.settle(op);
                    continue;
                }
                Some(op) => (op, false),
                None => {
                    let sent = self.sent.get();
                    if sent >= self.data.len() {
                        if waited {
                            return Poll::Ready(Ok(()));
                        }
                        rt.op_yield(cx.waker());
                        self.state = State::Yielded;
                        return Poll::Pending;
                    }
                    (u.start_send(key, &self.data[sent..])?, true)
                }
            };
            let park = park_on_op(rt, cx, op, false)?;
            if !waited {
                rt.count_schedule_point();
            }
            self.state = State::Wait { op, park, ours };
            return Poll::Pending;
        }
        Poll::Ready(Err(Error::Runtime("io_uring send made no progress")))
    }

    /// Takes the result of completed op `op`: bytes sent are counted (if
    /// it was this future's), an error is returned.
    fn account(&mut self, rt: &mut Runtime, op: usize, ours: bool) -> Result<()> {
        let res = ring(rt)?.settle(op).unwrap_or(-libc::ECANCELED);
        self.state = State::Done;
        if !ours {
            return Ok(());
        }
        let (key, generation) = self.io.key();
        match res {
            n if n > 0 => {
                self.sent.set(self.sent.get() + n as usize);
                Ok(())
            }
            0 => Err(Error::Io(io::Error::from(io::ErrorKind::WriteZero))),
            _ if rt.io_rec(key, generation).is_none() => Err(Error::Closed),
            e => Err(Error::Io(io::Error::from_raw_os_error(-e))),
        }
    }

    fn step(&mut self, rt: &mut Runtime, cx: &Context<'_>) -> Poll<Result<()>> {
        match self.state {
            State::Start | State::CancelYield => match entry(&mut self.state, rt, cx) {
                Ok(waited) => self.begin(rt, cx, waited),
                Err(poll) => poll,
            },
            State::Yielded => Poll::Ready(Ok(())),
            State::Wait { op, park, ours } => match rt.repoll_park(park, cx.waker()) {
                Some(ParkState::Waiting) => Poll::Pending,
                Some(ParkState::Woken) => match self.account(rt, op, ours) {
                    Ok(()) => self.begin(rt, cx, true),
                    Err(e) => Poll::Ready(Err(e)),
                },
                Some(_) => start_cancelling(&mut self.state, rt, cx, op, park, ours),
                None => Poll::Ready(Err(Error::Runtime("parked I/O waiter vanished"))),
            },
            State::Cancelling { op, park, ours } => match rt.repoll_park(park, cx.waker()) {
                Some(ParkState::Waiting | ParkState::CancelPending) => Poll::Pending,
                _ => {
                    // What went out before the cancellation counts (a
                    // partial `send_all` breaks the stream); all of it
                    // going out means the operation happened.
                    let _ = self.account(rt, op, ours);
                    if ours && self.sent.get() >= self.data.len() {
                        return Poll::Ready(Ok(()));
                    }
                    if rt.current_cancelled() {
                        Poll::Ready(Err(rt.cancelled_error()))
                    } else {
                        self.begin(rt, cx, true)
                    }
                }
            },
            State::Done => Poll::Ready(Err(Error::Runtime(TWICE))),
        }
    }
}

/// Waits until op `op` (one an abandoned future left in the ring)
/// completes, and settles it. Cancellable; not a checkpoint by itself.
struct Settle<'a> {
    io: &'a IoHandle,
    op: usize,
    state: State,
}

impl Settle<'_> {
    fn step(&mut self, rt: &mut Runtime, cx: &Context<'_>) -> Poll<Result<()>> {
        let op = self.op;
        match self.state {
            State::Start => {
                let u = ring(rt)?;
                if u.completed(op) || !u.exists(op) {
                    u.settle(op);
                    return Poll::Ready(Ok(()));
                }
                let park = park_on_op(rt, cx, op, false)?;
                self.state = State::Wait { op, park, ours: false };
                Poll::Pending
            }
            State::Wait { park, .. } => match rt.repoll_park(park, cx.waker()) {
                Some(ParkState::Waiting) => Poll::Pending,
                Some(ParkState::Woken) => {
                    ring(rt)?.settle(op);
                    self.state = State::Done;
                    Poll::Ready(Ok(()))
                }
                // Cancelled: the op stays the driver's (see `finish`).
                _ => Poll::Ready(Err(rt.cancelled_error())),
            },
            _ => Poll::Ready(Err(Error::Runtime(TWICE))),
        }
    }
}

/// The trait impls every ring operation has the same: [`RingOp`] over its
/// inherent `step`, `Future` through [`poll_ring`], and `Drop` leaving
/// what it still has in the ring to the driver.
macro_rules! ring_op {
    ($ty:ty, $out:ty) => {
        impl RingOp for $ty {
            type Out = $out;
            fn handle(&self) -> &IoHandle {
                self.io
            }
            fn state(&mut self) -> &mut State {
                &mut self.state
            }
            fn step(&mut self, rt: &mut Runtime, cx: &Context<'_>) -> Poll<Result<$out>> {
                <$ty>::step(self, rt, cx)
            }
        }

        impl Future for $ty {
            type Output = Result<$out>;

            fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<$out>> {
                poll_ring(self.get_mut(), cx)
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                abandon(self.state);
            }
        }
    };
}

ring_op!(Read<'_, '_>, usize);
ring_op!(WriteAll<'_, '_, '_>, ());
ring_op!(Settle<'_>, ());

/// What a ring socket's readiness wait must do first.
enum Before {
    /// A receive's outcome is stashed: readable now.
    Ready,
    /// An abandoned op is still in the ring: wait for it.
    Op(usize),
    /// Nothing: wait for readiness as on epoll.
    Poll,
}

/// `wait_readable`/`wait_send_all_might_not_block` on a ring socket: a
/// stashed receive is readable at once; an op an abandoned future left in
/// the ring is waited for first (it may stash something, or free the
/// send side); else `wait` (the readiness wait, through a ring poll).
pub(crate) async fn ready<F: Future<Output = Result<()>>>(
    io: &IoHandle,
    dir: Dir,
    wait: impl FnOnce() -> F,
) -> Result<()> {
    // Bounded: each turn settles one op, and each direction has at most
    // one in the ring (nothing submits meanwhile: this task claims it).
    for _ in 0..4 {
        let (key, generation) = io.key();
        let before = runtime::with(|rt| {
            if rt.serial != io.serial() {
                return Err(Error::Runtime(FOREIGN_RUN));
            }
            if rt.io_rec(key, generation).is_none() {
                return Err(Error::Closed);
            }
            let u = ring(rt)?;
            Ok(match dir {
                Dir::Read if u.has_stash(key) => Before::Ready,
                Dir::Read => u.recv_op(key).map_or(Before::Poll, Before::Op),
                Dir::Write => u.send_op(key).map_or(Before::Poll, Before::Op),
            })
        })??;
        match before {
            Before::Ready => return crate::lowlevel::checkpoint().await,
            Before::Poll => return wait().await,
            Before::Op(op) => Settle { io, op, state: State::Start }.await?,
        }
    }
    wait().await
}

/// `AsyncRead::poll_read` on a ring socket: the stash, else the receive
/// in the ring (submitted if there is none), its waker kept in the
/// source's poll-style waiter slot so that cancelling its scope wakes it.
/// A cancelled poller leaves the receive in the ring; whatever it gets is
/// stashed for the next read.
#[cfg(feature = "futures-io")]
pub(crate) fn poll_read(io: &IoHandle, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    let (key, generation) = io.key();
    let out = runtime::with(|rt| -> Result<Poll<usize>> {
        if rt.serial != io.serial() {
            return Err(Error::Runtime(FOREIGN_RUN));
        }
        if rt.io_rec(key, generation).is_none() {
            return Err(Error::Closed);
        }
        if rt.current_cancelled() {
            let park = rt.io_poll_waiter(key, generation, Dir::Read);
            rt.io_drop_poll_waiter(key, generation, Dir::Read);
            if let (Some(park), Some(op)) = (park, ring(rt)?.recv_op(key)) {
                ring(rt)?.unwait(op, park);
            }
            return Err(rt.cancelled_error());
        }
        for _ in 0..4 {
            let u = ring(rt)?;
            if let Some(r) = u.take_stash(key, buf) {
                rt.io_drop_poll_waiter(key, generation, Dir::Read);
                return Ok(Poll::Ready(r?));
            }
            let op = match u.recv_op(key) {
                Some(op) if u.completed(op) => {
                    u.settle(op);
                    continue;
                }
                Some(op) => op,
                None => u.start_recv(key, buf.len())?,
            };
            let park = rt.io_poll_park_unarmed(key, generation, Dir::Read, cx.waker()).map_err(|_| Error::Busy)?;
            let park_generation = rt.parks[park].generation;
            if !ring(rt)?.wait_on(op, (park, park_generation)) {
                return Err(Error::Busy);
            }
            return Ok(Poll::Pending);
        }
        Err(Error::Runtime("io_uring receive made no progress"))
    });
    match out {
        Ok(Ok(p)) => p.map(Ok),
        Ok(Err(Error::Closed)) | Err(Error::Closed) => {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")))
        }
        Ok(Err(e)) | Err(e) => Poll::Ready(Err(e.into_io())),
    }
}

/// For `AsyncWrite::poll_write` on a ring socket: waits (poll-style) until
/// no send an abandoned future left is in the ring, so that the caller's
/// plain `send` cannot overtake it.
#[cfg(feature = "futures-io")]
pub(crate) fn poll_send_clear(io: &IoHandle, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let (key, generation) = io.key();
    let out = runtime::with(|rt| -> Result<Poll<()>> {
        if rt.serial != io.serial() {
            return Err(Error::Runtime(FOREIGN_RUN));
        }
        if rt.io_rec(key, generation).is_none() {
            return Err(Error::Closed);
        }
        let Some(op) = ring(rt)?.send_op(key) else { return Ok(Poll::Ready(())) };
        if ring(rt)?.completed(op) {
            ring(rt)?.settle(op);
            rt.io_drop_poll_waiter(key, generation, Dir::Write);
            return Ok(Poll::Ready(()));
        }
        if rt.current_cancelled() {
            rt.io_drop_poll_waiter(key, generation, Dir::Write);
            return Err(rt.cancelled_error());
        }
        let park = rt.io_poll_park_unarmed(key, generation, Dir::Write, cx.waker()).map_err(|_| Error::Busy)?;
        let park_generation = rt.parks[park].generation;
        if !ring(rt)?.wait_on(op, (park, park_generation)) {
            return Err(Error::Busy);
        }
        Ok(Poll::Pending)
    });
    match out {
        Ok(Ok(p)) => p.map(Ok),
        Ok(Err(Error::Closed)) | Err(Error::Closed) => {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "the stream is closed")))
        }
        Ok(Err(e)) | Err(e) => Poll::Ready(Err(e.into_io())),
    }
}
