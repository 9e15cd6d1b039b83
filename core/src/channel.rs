//! Memory channels (Trio's `open_memory_channel`), built on two
//! [`ParkingLot`]s: one for blocked senders, one for blocked receivers.
//!
//! Values go straight from a sender to a waiting receiver (or from a waiting
//! sender to a receiver), so waiters are served in FIFO order and nobody can
//! barge in between a wakeup and the task it was for. Each waiter has a slot
//! (its tag in the lot) where the value or the reason it was woken is left.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use slab::Slab;

use crate::error::{Error, Result};
use crate::runtime;
use crate::sync::{ParkingLot, Unparked};

/// Why a waiter was woken without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Closed,
    Broken,
    EndOfChannel,
}

impl Outcome {
    fn error(self) -> Error {
        match self {
            Outcome::Closed => Error::Closed,
            Outcome::Broken => Error::Broken,
            Outcome::EndOfChannel => Error::EndOfChannel,
        }
    }
}

/// Why a non-blocking operation did not complete (internal, cheap to drop;
/// turned into an [`Error`] at the public surface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    WouldBlock,
    Closed,
    Broken,
    End,
}

impl Miss {
    fn error(self) -> Error {
        match self {
            Miss::WouldBlock => Error::WouldBlock,
            Miss::Closed => Error::Closed,
            Miss::Broken => Error::Broken,
            Miss::End => Error::EndOfChannel,
        }
    }
}

struct Slot<T> {
    value: Option<T>,
    handle: u64,
    outcome: Option<Outcome>,
}

struct State<T> {
    capacity: usize,
    buffer: RefCell<VecDeque<T>>,
    senders: Cell<usize>,
    receivers: Cell<usize>,
    send_lot: ParkingLot,
    recv_lot: ParkingLot,
    slots: RefCell<Slab<Slot<T>>>,
    next_handle: Cell<u64>,
    /// The most values the buffer has held at once (never goes down).
    peak_buffer_used: Cell<usize>,
}

impl<T> State<T> {
    fn new_handle(&self) -> u64 {
        let h = self.next_handle.get();
        self.next_handle.set(h + 1);
        h
    }

    /// Raises the buffer's high-water mark to `len` if that is higher.
    fn note_buffer_len(&self, len: usize) {
        if len > self.peak_buffer_used.get() {
            self.peak_buffer_used.set(len);
        }
    }
}

/// A snapshot of a channel, from `statistics()` on either end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStatistics {
    /// Values in the buffer.
    pub current_buffer_used: usize,
    /// The capacity (`usize::MAX` for unbounded).
    pub max_buffer_size: usize,
    /// Open sender handles.
    pub open_send_channels: usize,
    /// Open receiver handles.
    pub open_receive_channels: usize,
    /// Tasks blocked in `send`.
    pub tasks_waiting_send: usize,
    /// Tasks blocked in `receive`.
    pub tasks_waiting_receive: usize,
    /// The most values the buffer has held at once since the channel was
    /// opened (Trio's `peak_buffer_used`): a high-water mark that draining
    /// the buffer does not lower. A value handed straight to a waiting
    /// receiver never enters the buffer, so an unbuffered channel
    /// (capacity 0) always reports 0.
    pub peak_buffer_used: usize,
}

/// Opens a channel that buffers up to `capacity` values; 0 makes every send
/// wait for a receiver (a rendezvous).
pub fn open_memory_channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let state = Rc::new(State {
        capacity,
        buffer: RefCell::new(VecDeque::new()),
        senders: Cell::new(1),
        receivers: Cell::new(1),
        send_lot: ParkingLot::new(),
        recv_lot: ParkingLot::new(),
        slots: RefCell::new(Slab::new()),
        next_handle: Cell::new(0),
        peak_buffer_used: Cell::new(0),
    });
    let s =
        Sender { handle: Rc::new(Handle { id: state.new_handle(), closed: Cell::new(false) }), state: state.clone() };
    let r =
        Receiver { handle: Rc::new(Handle { id: state.new_handle(), closed: Cell::new(false) }), state, pending: None };
    (s, r)
}

/// Opens a channel whose buffer has no limit (sends never wait).
pub fn open_unbounded_memory_channel<T>() -> (Sender<T>, Receiver<T>) {
    open_memory_channel(usize::MAX)
}

#[derive(Debug)]
struct Handle {
    id: u64,
    closed: Cell<bool>,
}

/// The sending end of a memory channel. Clone it for more senders; each
/// clone closes on its own (on `close` or drop). When every sender is
/// closed, receivers get [`Error::EndOfChannel`] once the buffer is empty.
pub struct Sender<T> {
    state: Rc<State<T>>,
    handle: Rc<Handle>,
}

/// The receiving end of a memory channel. Clone it for more receivers (each
/// value goes to one of them); each clone closes on its own. When every
/// receiver is closed, senders get [`Error::Broken`].
pub struct Receiver<T> {
    state: Rc<State<T>>,
    handle: Rc<Handle>,
    /// The receive in flight for the `Stream` impl.
    pending: Option<Pin<Box<dyn Future<Output = Result<T>>>>>,
}

/// A value that `try_send` could not send, with the reason.
pub struct TrySendError<T> {
    /// Why: `WouldBlock`, `Closed` or `Broken`.
    pub error: Error,
    /// The value, handed back.
    pub value: T,
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySendError").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not send: {}", self.error)
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> From<TrySendError<T>> for Error {
    /// Keeps the reason, drops the value.
    fn from(e: TrySendError<T>) -> Error {
        e.error
    }
}

fn statistics<T>(state: &State<T>) -> ChannelStatistics {
    ChannelStatistics {
        current_buffer_used: state.buffer.borrow().len(),
        max_buffer_size: state.capacity,
        open_send_channels: state.senders.get(),
        open_receive_channels: state.receivers.get(),
        tasks_waiting_send: state.send_lot.len(),
        tasks_waiting_receive: state.recv_lot.len(),
        peak_buffer_used: state.peak_buffer_used.get(),
    }
}

impl<T> Sender<T> {
    /// Sends `value` without waiting: to a waiting receiver, or into the
    /// buffer if there is room. Not a checkpoint.
    ///
    /// # Errors
    /// `WouldBlock` if it would have to wait, `Closed` if this handle is
    /// closed, `Broken` if every receiver is; the value comes back in the
    /// error.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.try_send_inner(value).map_err(|(miss, value)| TrySendError { error: miss.error(), value })
    }

    fn try_send_inner(&self, value: T) -> Result<(), (Miss, T)> {
        self.try_send_with(value, ParkingLot::unpark_one)
    }

    /// The attempt of `try_send` and `send`; `unpark` takes the first
    /// waiting receiver out of its lot (inside or outside a run borrow).
    fn try_send_with(&self, value: T, unpark: impl FnOnce(&ParkingLot) -> Option<Unparked>) -> Result<(), (Miss, T)> {
        let st = &*self.state;
        if self.handle.closed.get() {
            return Err((Miss::Closed, value));
        }
        if st.receivers.get() == 0 {
            return Err((Miss::Broken, value));
        }
        if let Some(u) = unpark(&st.recv_lot) {
            if let Some(slot) = st.slots.borrow_mut().get_mut(u.tag) {
                slot.value = Some(value);
            }
            return Ok(());
        }
        let mut buf = st.buffer.borrow_mut();
        if buf.len() < st.capacity {
            buf.push_back(value);
            st.note_buffer_len(buf.len());
            Ok(())
        } else {
            Err((Miss::WouldBlock, value))
        }
    }

    /// Sends `value`, waiting for buffer room or a receiver.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` and the value was **not** sent (it is
    /// dropped with the future).
    /// # Errors
    /// `Closed` if this handle is (or gets) closed, `Broken` if every
    /// receiver is (or gets) closed; the value is dropped.
    pub fn send(&self, value: T) -> ChannelSend<'_, T> {
        ChannelSend { tx: self, value: Some(value), state: OpState::Start }
    }

    /// Closes this handle: its blocked senders get `Closed`; if it was the
    /// last sender, blocked receivers get `EndOfChannel`. Idempotent. Not a
    /// checkpoint.
    pub fn close(&self) {
        close_sender(&self.state, &self.handle);
    }

    /// Is this handle closed?
    pub fn is_closed(&self) -> bool {
        self.handle.closed.get()
    }

    /// A snapshot of the channel.
    pub fn statistics(&self) -> ChannelStatistics {
        statistics(&self.state)
    }
}

fn close_sender<T>(st: &State<T>, handle: &Handle) {
    if handle.closed.replace(true) {
        return;
    }
    let id = handle.id;
    mark_and_wake(st, &st.send_lot, |s| s.handle == id, Outcome::Closed);
    st.senders.set(st.senders.get() - 1);
    if st.senders.get() == 0 {
        mark_and_wake(st, &st.recv_lot, |_| true, Outcome::EndOfChannel);
    }
}

fn close_receiver<T>(st: &State<T>, handle: &Handle) {
    if handle.closed.replace(true) {
        return;
    }
    let id = handle.id;
    mark_and_wake(st, &st.recv_lot, |s| s.handle == id, Outcome::Closed);
    st.receivers.set(st.receivers.get() - 1);
    if st.receivers.get() == 0 {
        mark_and_wake(st, &st.send_lot, |_| true, Outcome::Broken);
        let dropped = std::mem::take(&mut *st.buffer.borrow_mut());
        drop(dropped);
    }
}

/// Wakes the waiters of `lot` whose slot matches, leaving `outcome` for them.
fn mark_and_wake<T>(st: &State<T>, lot: &ParkingLot, matches: impl Fn(&Slot<T>) -> bool, outcome: Outcome) {
    lot.unpark_where(|u| {
        let mut slots = st.slots.borrow_mut();
        match slots.get_mut(u.tag) {
            Some(s) if matches(s) => {
                s.outcome = Some(outcome);
                true
            }
            _ => false,
        }
    });
}

impl<T> Receiver<T> {
    /// Takes a value without waiting. Not a checkpoint.
    ///
    /// # Errors
    /// `WouldBlock` if none is ready, `EndOfChannel` if every sender is
    /// closed and the buffer is empty, `Closed` if this handle is closed.
    pub fn try_receive(&self) -> Result<T> {
        try_receive(&self.state, &self.handle).map_err(Miss::error)
    }

    /// Receives the next value, waiting for one.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` and **no** value was taken from the
    /// channel.
    /// # Errors
    /// `EndOfChannel` once every sender is closed and the buffer drained;
    /// `Closed` if this handle is (or gets) closed.
    pub fn receive(&self) -> ChannelReceive<'_, T> {
        receive(&self.state, &self.handle)
    }

    /// Like [`receive`](Receiver::receive), but the end of the channel is
    /// `Ok(None)`: `while let Some(v) = rx.recv().await? { ... }`.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; no value was taken.
    /// # Errors
    /// As `receive`, except `EndOfChannel`.
    pub fn recv(&self) -> ChannelRecv<'_, T> {
        ChannelRecv(self.receive())
    }

    /// Closes this handle: its blocked receivers get `Closed`; if it was the
    /// last receiver, blocked senders get `Broken` and buffered values are
    /// dropped. Idempotent. Not a checkpoint.
    pub fn close(&self) {
        close_receiver(&self.state, &self.handle);
    }

    /// Is this handle closed?
    pub fn is_closed(&self) -> bool {
        self.handle.closed.get()
    }

    /// A snapshot of the channel.
    pub fn statistics(&self) -> ChannelStatistics {
        statistics(&self.state)
    }
}

fn try_receive<T>(st: &State<T>, handle: &Handle) -> Result<T, Miss> {
    try_receive_with(st, handle, ParkingLot::unpark_one)
}

/// The attempt of `try_receive` and `receive`; `unpark` takes the first
/// waiting sender out of its lot (inside or outside a run borrow).
fn try_receive_with<T>(
    st: &State<T>,
    handle: &Handle,
    unpark: impl FnOnce(&ParkingLot) -> Option<Unparked>,
) -> Result<T, Miss> {
    if handle.closed.get() {
        return Err(Miss::Closed);
    }
    if let Some(u) = unpark(&st.send_lot) {
        // A blocked sender's value joins the buffer behind what is there
        // as the front value leaves (not counted in the high-water mark:
        // the buffer never holds more than its capacity for the receiver).
        let v = st.slots.borrow_mut().get_mut(u.tag).and_then(|s| s.value.take());
        if let Some(v) = v {
            st.buffer.borrow_mut().push_back(v);
        }
    }
    if let Some(v) = st.buffer.borrow_mut().pop_front() {
        return Ok(v);
    }
    if st.senders.get() == 0 {
        return Err(Miss::End);
    }
    Err(Miss::WouldBlock)
}

fn receive<'a, T>(st: &'a State<T>, handle: &'a Handle) -> ChannelReceive<'a, T> {
    ChannelReceive { st, handle, got: None, state: OpState::Start }
}

/// Where a channel operation's future is (see the park core in
/// `runtime/park.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpState {
    Start,
    /// Cancelled on entry: yielded, reports it next.
    Cancelled,
    /// Completed at once (or failed with this): yielded, returns it next.
    Yielded(Option<Miss>),
    /// Waiting in a lot with its value slot.
    Parked {
        key: usize,
        slot: usize,
    },
    Done,
}

/// What a channel operation's attempt found (see [`State::begin`]).
enum Attempt<'a, T> {
    /// Done at once.
    Done,
    /// Must wait in this lot, with this slot for the value or the outcome.
    Park(&'a ParkingLot, Slot<T>),
    /// Failed at once (reported after the yield, as every outcome).
    Failed(Miss),
}

impl<T> State<T> {
    /// The first poll of a send or a receive, in one borrow of the run (the
    /// park core's protocol, `runtime/park.rs`): a cancel point, then
    /// `attempt`, then the yield, or the park with the attempt's slot.
    /// Leaves the next step in `state`; the caller returns `Pending`. An
    /// error only outside a run.
    fn begin<'a>(
        &'a self,
        cx: &Context<'_>,
        state: &mut OpState,
        attempt: impl FnOnce(&mut runtime::Runtime) -> Attempt<'a, T>,
    ) -> Result<()> {
        runtime::with(|rt| {
            *state = if rt.op_enter(cx.waker()) {
                OpState::Cancelled
            } else {
                match attempt(rt) {
                    Attempt::Park(lot, slot) => {
                        let slot = self.slots.borrow_mut().insert(slot);
                        let key = rt.op_park(cx.waker(), Some((lot.core(), slot)));
                        OpState::Parked { key, slot }
                    }
                    done => {
                        rt.op_yield(cx.waker());
                        OpState::Yielded(if let Attempt::Failed(miss) = done { Some(miss) } else { None })
                    }
                }
            };
        })
    }
}

/// The future of [`Sender::send`]: one state machine whose first poll
/// checks cancellation, hands the value over (to a waiting receiver or the
/// buffer) and yields, or parks, all in one borrow of the run.
#[must_use = "futures do nothing unless awaited"]
pub struct ChannelSend<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
    state: OpState,
}

// Nothing is pinned structurally: the value is only moved, never polled.
impl<T> Unpin for ChannelSend<'_, T> {}

impl<T> fmt::Debug for ChannelSend<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSend").field("state", &self.state).finish_non_exhaustive()
    }
}

impl<T> Future for ChannelSend<'_, T> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let st = &*this.tx.state;
        let out = match this.state {
            OpState::Start => {
                let Some(value) = this.value.take() else {
                    return Poll::Ready(Err(Error::Runtime("send polled after completion")));
                };
                let tx = this.tx;
                st.begin(cx, &mut this.state, |rt| match tx.try_send_with(value, |lot| lot.unpark_one_in(rt)) {
                    Ok(()) => Attempt::Done,
                    Err((Miss::WouldBlock, value)) => {
                        Attempt::Park(&st.send_lot, Slot { value: Some(value), handle: tx.handle.id, outcome: None })
                    }
                    Err((miss, _)) => Attempt::Failed(miss),
                })
                .map(|()| Poll::Pending)
            }
            OpState::Cancelled => Ok(Poll::Ready(Err(runtime::cancelled_error()))),
            OpState::Yielded(miss) => Ok(Poll::Ready(miss.map_or(Ok(()), |m| Err(m.error())))),
            OpState::Parked { key, slot } => runtime::with(|rt| rt.op_poll_parked(key, cx.waker())).map(|p| {
                p.map(|r| {
                    let outcome = st.slots.borrow_mut().try_remove(slot).and_then(|s| s.outcome);
                    r.and(outcome.map_or(Ok(()), |o| Err(o.error())))
                })
            }),
            OpState::Done => Ok(Poll::Ready(Err(Error::Runtime("send polled after completion")))),
        };
        let out = out.unwrap_or_else(|e| Poll::Ready(Err(e)));
        if out.is_ready() {
            this.state = OpState::Done;
        }
        out
    }
}

impl<T> Drop for ChannelSend<'_, T> {
    fn drop(&mut self) {
        if let OpState::Parked { key, slot } = self.state {
            // Whether or not a receiver took the value, the slot goes (with
            // the value if nobody did).
            let _ = runtime::with(|rt| rt.op_abandon(key));
            let slot = self.tx.state.slots.borrow_mut().try_remove(slot);
            drop(slot);
        }
    }
}

/// The future of [`Receiver::receive`]: one state machine whose first poll
/// checks cancellation, takes a value (from the buffer or a waiting
/// sender) and yields, or parks, all in one borrow of the run.
#[must_use = "futures do nothing unless awaited"]
pub struct ChannelReceive<'a, T> {
    st: &'a State<T>,
    handle: &'a Handle,
    got: Option<T>,
    state: OpState,
}

// Nothing is pinned structurally: the value is only moved, never polled.
impl<T> Unpin for ChannelReceive<'_, T> {}

impl<T> fmt::Debug for ChannelReceive<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReceive").field("state", &self.state).finish_non_exhaustive()
    }
}

impl<T> Future for ChannelReceive<'_, T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        let (st, handle) = (this.st, this.handle);
        let out = match this.state {
            OpState::Start => {
                let got = &mut this.got;
                st.begin(cx, &mut this.state, |rt| match try_receive_with(st, handle, |lot| lot.unpark_one_in(rt)) {
                    Ok(v) => {
                        *got = Some(v);
                        Attempt::Done
                    }
                    Err(Miss::WouldBlock) => {
                        Attempt::Park(&st.recv_lot, Slot { value: None, handle: handle.id, outcome: None })
                    }
                    Err(miss) => Attempt::Failed(miss),
                })
                .map(|()| Poll::Pending)
            }
            OpState::Cancelled => Ok(Poll::Ready(Err(runtime::cancelled_error()))),
            OpState::Yielded(None) => {
                Ok(Poll::Ready(this.got.take().ok_or(Error::Runtime("receive polled after completion"))))
            }
            OpState::Yielded(Some(miss)) => Ok(Poll::Ready(Err(miss.error()))),
            OpState::Parked { key, slot } => runtime::with(|rt| rt.op_poll_parked(key, cx.waker())).map(|p| {
                p.map(|r| {
                    let s = st.slots.borrow_mut().try_remove(slot);
                    match (r, s) {
                        (Ok(()), Some(Slot { value: Some(v), .. })) => Ok(v),
                        (Ok(()), Some(Slot { outcome: Some(o), .. })) => Err(o.error()),
                        (Ok(()), _) => Err(Error::Runtime("woken without a value")),
                        (Err(e), s) => {
                            requeue(st, s);
                            Err(e)
                        }
                    }
                })
            }),
            OpState::Done => Ok(Poll::Ready(Err(Error::Runtime("receive polled after completion")))),
        };
        let out = out.unwrap_or_else(|e| Poll::Ready(Err(e)));
        if out.is_ready() {
            this.state = OpState::Done;
        }
        out
    }
}

impl<T> Drop for ChannelReceive<'_, T> {
    fn drop(&mut self) {
        match self.state {
            OpState::Parked { key, slot } => {
                let _ = runtime::with(|rt| rt.op_abandon(key));
                let s = self.st.slots.borrow_mut().try_remove(slot);
                requeue(self.st, s);
            }
            // Took a value and yielded, but will never return it: put it
            // back.
            OpState::Yielded(None) => {
                if let Some(v) = self.got.take() {
                    let mut buf = self.st.buffer.borrow_mut();
                    buf.push_front(v);
                    self.st.note_buffer_len(buf.len());
                }
            }
            _ => {}
        }
    }
}

/// A receiver's slot that holds a value nobody took (its future was
/// dropped, or cancelled, after the hand-off) puts the value back at the
/// front of the buffer, so it is not lost.
fn requeue<T>(st: &State<T>, slot: Option<Slot<T>>) {
    if let Some(Slot { value: Some(v), .. }) = slot {
        let mut buf = st.buffer.borrow_mut();
        buf.push_front(v);
        st.note_buffer_len(buf.len());
    }
}

/// The future of [`Receiver::recv`]: [`ChannelReceive`] with the end of
/// the channel as `Ok(None)`.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct ChannelRecv<'a, T>(ChannelReceive<'a, T>);

impl<T> Future for ChannelRecv<'_, T> {
    type Output = Result<Option<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Option<T>>> {
        match Pin::new(&mut self.get_mut().0).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Ok(Some(v))),
            Poll::Ready(Err(Error::EndOfChannel)) => Poll::Ready(Ok(None)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<T> Sender<T> {
    /// Another open sender of the same channel, or `Err(Closed)` if this
    /// handle is closed (Trio's `clone` raises `ClosedResourceError`).
    ///
    /// # Errors
    /// [`Error::Closed`] if this handle is closed.
    pub fn try_clone(&self) -> Result<Sender<T>> {
        if self.handle.closed.get() {
            return Err(Error::Closed);
        }
        Ok(self.clone())
    }
}

impl<T> Clone for Sender<T> {
    /// Another open sender of the same channel. The clone of a closed
    /// handle is closed too (sending on it gives `Closed`): it cannot open
    /// a channel whose receivers already saw the end. Use
    /// [`try_clone`](Sender::try_clone) to be told instead.
    fn clone(&self) -> Sender<T> {
        let st = &self.state;
        let closed = self.handle.closed.get();
        if !closed {
            st.senders.set(st.senders.get() + 1);
        }
        Sender { handle: Rc::new(Handle { id: st.new_handle(), closed: Cell::new(closed) }), state: st.clone() }
    }
}

impl<T> Receiver<T> {
    /// Another open receiver of the same channel, or `Err(Closed)` if this
    /// handle is closed (Trio's `clone` raises `ClosedResourceError`).
    ///
    /// # Errors
    /// [`Error::Closed`] if this handle is closed.
    pub fn try_clone(&self) -> Result<Receiver<T>> {
        if self.handle.closed.get() {
            return Err(Error::Closed);
        }
        Ok(self.clone())
    }
}

impl<T> Clone for Receiver<T> {
    /// Another open receiver of the same channel. The clone of a closed
    /// handle is closed too (receiving on it gives `Closed`): it cannot
    /// reopen a channel whose senders already saw it broken. Use
    /// [`try_clone`](Receiver::try_clone) to be told instead.
    fn clone(&self) -> Receiver<T> {
        let st = &self.state;
        let closed = self.handle.closed.get();
        if !closed {
            st.receivers.set(st.receivers.get() + 1);
        }
        Receiver {
            handle: Rc::new(Handle { id: st.new_handle(), closed: Cell::new(closed) }),
            state: st.clone(),
            pending: None,
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        close_sender(&self.state, &self.handle);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.pending = None;
        close_receiver(&self.state, &self.handle);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("closed", &self.handle.closed.get()).field("stats", &self.statistics()).finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("closed", &self.handle.closed.get())
            .field("stats", &self.statistics())
            .finish()
    }
}

impl<T: 'static> futures_core::Stream for Receiver<T> {
    /// `Ok(value)` per value; the stream ends at the end of the channel.
    /// Other errors (cancellation, a closed handle) are yielded, not hidden.
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        if this.pending.is_none() {
            let (state, handle) = (this.state.clone(), this.handle.clone());
            this.pending = Some(Box::pin(async move { receive(&state, &handle).await }));
        }
        let Some(fut) = this.pending.as_mut() else { return Poll::Ready(None) };
        let out = match fut.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        this.pending = None;
        Poll::Ready(match out {
            Ok(v) => Some(Ok(v)),
            Err(Error::EndOfChannel) => None,
            Err(e) => Some(Err(e)),
        })
    }
}
