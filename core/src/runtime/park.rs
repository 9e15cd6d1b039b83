//! Records of parked waiters: the one place tasks block.
//!
//! A waiter sits in the intrusive list of the cancel scope it parked in, so
//! cancelling a scope finds exactly the waiters it must abort. As in Trio,
//! the abort happens inside the cancellation (`cancel()`, a deadline firing,
//! Ctrl-C), not when the waiter next runs:
//!
//! - a waiter queued in a `ParkingLot` leaves the queue at once and is marked
//!   `Aborted` (nothing can be handed to it any more);
//! - a waiter with an abort callback (`lowlevel::park`) is marked
//!   `CancelPending` and queued in `pending_aborts`; [`run_pending_aborts`]
//!   runs the callbacks as soon as the runtime is no longer borrowed (every
//!   cancelling entry point calls it, and the run loop too), and either marks
//!   the waiter `Aborted` or, if a wakeup is already committed, puts it back
//!   to `Waiting`;
//! - other waiters (I/O operations) are marked `CancelPending` and clean up
//!   when they next run.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{NONE, Runtime, with};
use crate::error::{Error, Result};
use crate::lowlevel::Abort;

/// A parked waiter's abort callback, owned by its record so that the run
/// can call it when the waiter's scope is cancelled. It is given the key of
/// the waiter's record.
pub(crate) type AbortFn = Box<dyn FnMut(usize) -> Abort>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParkState {
    /// Waiting for `unpark` or cancellation.
    Waiting,
    /// Its scope was cancelled; the waiter must run its abort callback.
    CancelPending,
    /// Unparked: the waiter returns `Ok` when next polled.
    Woken,
    /// Cancelled on entry: the waiter returns `Cancelled` after one yield.
    Aborted,
    /// Its lot was broken (`ParkingLot::break_lot`): the waiter returns
    /// `Broken`.
    Broken,
}

pub(crate) struct ParkRec {
    pub(crate) generation: u32,
    pub(crate) waker: Waker,
    pub(crate) state: ParkState,
    pub(crate) scope: usize,
    pub(crate) prev: usize,
    pub(crate) next: usize,
    /// The `ParkingLot` queue this waiter is in, if any (see `LotCore`).
    pub(crate) lot: Option<Rc<LotCore>>,
    pub(crate) lot_prev: usize,
    pub(crate) lot_next: usize,
    /// The lot tag and the parking task (identity key), for `unpark_one`.
    pub(crate) tag: usize,
    pub(crate) task: usize,
    /// The abort callback of a `lowlevel::park` waiter.
    pub(crate) abort: Option<AbortFn>,
}

/// The queue of one `ParkingLot`: a FIFO list threaded through the parked
/// waiters' records, so parking in a lot is one record, one borrow.
#[derive(Debug)]
pub(crate) struct LotCore {
    pub(crate) head: Cell<usize>,
    pub(crate) tail: Cell<usize>,
    pub(crate) len: Cell<usize>,
    /// The tasks that broke the lot, in order (Trio's `broken_by`); parking
    /// in a broken lot fails with `Broken`.
    pub(crate) broken_by: std::cell::RefCell<Vec<crate::lowlevel::Task>>,
}

impl LotCore {
    pub(crate) fn new() -> LotCore {
        LotCore {
            head: Cell::new(NONE),
            tail: Cell::new(NONE),
            len: Cell::new(0),
            broken_by: std::cell::RefCell::new(Vec::new()),
        }
    }
}

/// The park core: the steps every blocking operation of the run takes
/// (a checkpoint, an attempt, a park, a wake-up, an abandon), each done
/// inside one borrow of the runtime, in the manner of Trio's
/// `checkpoint_if_cancelled` / `cancel_shielded_checkpoint` /
/// `wait_task_rescheduled`. The futures of the parking lot, the lock, the
/// channels and the other primitives are thin state machines over these.
///
/// The protocol, for an operation's first poll:
/// 1. [`op_enter`](Runtime::op_enter): a cancel point. When it says
///    cancelled, the task has yielded; the next poll reports `Cancelled`.
/// 2. The operation's own attempt (inside the same borrow).
/// 3. Done at once: [`op_yield`](Runtime::op_yield) (a schedule point; the
///    next poll returns the result). Must wait:
///    [`op_park`](Runtime::op_park), and later polls go through
///    [`op_poll_parked`](Runtime::op_poll_parked) until it is ready; a
///    future dropped while parked calls
///    [`op_abandon`](Runtime::op_abandon).
impl Runtime {
    /// Step 1: counts a cancel point; if the current scope is cancelled,
    /// yields (the caller returns `Pending` and reports `Cancelled` next)
    /// and returns true.
    #[inline(always)]
    pub(crate) fn op_enter(&mut self, waker: &Waker) -> bool {
        self.count_cancel_point();
        if self.current_cancelled() {
            self.op_yield(waker);
            return true;
        }
        false
    }

    /// The operation completed without waiting: a schedule point all the
    /// same. The caller returns `Pending` and its result on the next poll.
    #[inline(always)]
    pub(crate) fn op_yield(&mut self, waker: &Waker) {
        self.count_schedule_point();
        self.wake_waker(waker);
    }

    /// The operation must wait: parks the current task (a schedule point),
    /// queued at the back of `queue`'s lot with its tag if one is given.
    /// Returns the waiter's key for `op_poll_parked` and `op_abandon`.
    pub(crate) fn op_park(&mut self, waker: &Waker, queue: Option<(&Rc<LotCore>, usize)>) -> usize {
        self.count_schedule_point();
        let (key, _) = self.insert_park(waker.clone());
        let task = self.current_task().0;
        let p = &mut self.parks[key];
        p.task = task;
        if let Some((lot, tag)) = queue {
            p.tag = tag;
            self.lot_link_tail(key, lot);
        }
        key
    }

    /// A later poll of waiter `key`: `Ok` once it was unparked, `Broken` if
    /// its lot was broken, `Cancelled` if its scope was (the waiter left
    /// its lot then, and nothing was handed to it). The record is gone
    /// once this is ready.
    pub(crate) fn op_poll_parked(&mut self, key: usize, waker: &Waker) -> Poll<Result<()>> {
        match self.repoll_park(key, waker) {
            Some(ParkState::Waiting) => Poll::Pending,
            Some(ParkState::Woken) => Poll::Ready(Ok(())),
            Some(ParkState::Broken) => Poll::Ready(Err(Error::Broken)),
            Some(ParkState::Aborted) => Poll::Ready(Err(self.cancelled_error())),
            Some(ParkState::CancelPending) => {
                // Still queued and still cancelled (an unpark would have made
                // it Woken): leave; nothing was handed to it.
                self.remove_park(key);
                Poll::Ready(Err(self.cancelled_error()))
            }
            None => Poll::Ready(Err(Error::Runtime("parked waiter vanished"))),
        }
    }

    /// The future of waiter `key` was dropped before it was ready: forgets
    /// the waiter. True if it had been unparked (handed something it will
    /// now never take: the caller gives it back).
    pub(crate) fn op_abandon(&mut self, key: usize) -> bool {
        self.parks.contains(key) && self.remove_park(key).state == ParkState::Woken
    }
}

impl Runtime {
    pub(crate) fn insert_park(&mut self, waker: Waker) -> (usize, u32) {
        let generation = self.next_generation();
        let scope = self.current_scope;
        let key = self.parks.insert(ParkRec {
            generation,
            waker,
            state: ParkState::Waiting,
            scope: NONE,
            prev: NONE,
            next: NONE,
            lot: None,
            lot_prev: NONE,
            lot_next: NONE,
            tag: 0,
            task: NONE,
            abort: None,
        });
        if scope != NONE {
            self.link_park(key, scope);
        }
        (key, generation)
    }

    pub(crate) fn link_park(&mut self, key: usize, scope: usize) {
        let head = self.scopes[scope].parked_head;
        let p = &mut self.parks[key];
        p.scope = scope;
        p.prev = NONE;
        p.next = head;
        if head != NONE {
            self.parks[head].prev = key;
        }
        self.scopes[scope].parked_head = key;
    }

    pub(crate) fn unlink_park(&mut self, key: usize) {
        let (scope, prev, next) = {
            let p = &self.parks[key];
            (p.scope, p.prev, p.next)
        };
        if scope == NONE {
            return;
        }
        if prev != NONE {
            self.parks[prev].next = next;
        } else {
            self.scopes[scope].parked_head = next;
        }
        if next != NONE {
            self.parks[next].prev = prev;
        }
        let p = &mut self.parks[key];
        p.scope = NONE;
        p.prev = NONE;
        p.next = NONE;
    }

    pub(crate) fn remove_park(&mut self, key: usize) -> ParkRec {
        self.unlink_park(key);
        self.lot_unlink(key);
        self.parks.remove(key)
    }

    /// Appends waiter `key` to `lot`'s queue.
    pub(crate) fn lot_link_tail(&mut self, key: usize, lot: &Rc<LotCore>) {
        let tail = lot.tail.get();
        {
            let p = &mut self.parks[key];
            p.lot = Some(lot.clone());
            p.lot_prev = tail;
            p.lot_next = NONE;
        }
        if tail == NONE {
            lot.head.set(key);
        } else {
            self.parks[tail].lot_next = key;
        }
        lot.tail.set(key);
        lot.len.set(lot.len.get() + 1);
    }

    /// Who waiter `key` is, for a lot's `unpark`: the task that parked (key
    /// and generation, if it still exists) and the tag it parked with.
    pub(crate) fn lot_waiter(&self, key: usize) -> (Option<(usize, u32)>, usize) {
        let p = &self.parks[key];
        (self.tasks.get(p.task).map(|t| (p.task, t.generation)), p.tag)
    }

    /// The waiter after `key` in its lot's queue (`NONE` at the end).
    pub(crate) fn lot_next(&self, key: usize) -> usize {
        self.parks[key].lot_next
    }

    /// Takes waiter `key` out of its lot's queue (if it is in one).
    pub(crate) fn lot_unlink(&mut self, key: usize) -> bool {
        let (prev, next, lot) = {
            let p = &mut self.parks[key];
            let Some(lot) = p.lot.take() else { return false };
            (p.lot_prev, p.lot_next, lot)
        };
        if prev == NONE {
            lot.head.set(next);
        } else {
            self.parks[prev].lot_next = next;
        }
        if next == NONE {
            lot.tail.set(prev);
        } else {
            self.parks[next].lot_prev = prev;
        }
        lot.len.set(lot.len.get() - 1);
        let p = &mut self.parks[key];
        p.lot_prev = NONE;
        p.lot_next = NONE;
        true
    }

    /// The common part of polling a parked waiter again: refresh its waker,
    /// put it back to `Waiting` if its scope was un-cancelled (a shield went
    /// up) since it was nudged, and forget the record if it is done (`Woken`
    /// or `Aborted`). Returns the state, or `None` if there is no record.
    pub(crate) fn repoll_park(&mut self, key: usize, waker: &Waker) -> Option<ParkState> {
        let p = self.parks.get(key)?;
        let cancelled = p.scope != NONE && self.scopes[p.scope].effectively_cancelled;
        let p = &mut self.parks[key];
        if !p.waker.will_wake(waker) {
            p.waker = waker.clone();
        }
        if p.state == ParkState::CancelPending && !cancelled {
            p.state = ParkState::Waiting;
        }
        let state = p.state;
        if matches!(state, ParkState::Woken | ParkState::Aborted | ParkState::Broken) {
            self.remove_park(key);
        }
        Some(state)
    }

    /// Reschedules a parked waiter. False if it is not waiting (already woken,
    /// gone, or aborted).
    pub(crate) fn unpark_key(&mut self, key: usize) -> bool {
        let Some(p) = self.parks.get_mut(key) else { return false };
        match p.state {
            ParkState::Waiting | ParkState::CancelPending => {
                p.state = ParkState::Woken;
                match super::waker::word_of(&p.waker) {
                    Some(word) => self.wake_word(word),
                    None => {
                        let w = p.waker.clone();
                        self.deferred.push(w);
                    }
                }
                true
            }
            ParkState::Woken | ParkState::Aborted | ParkState::Broken => false,
        }
    }

    /// Breaks `lot` on behalf of `task` (Trio's `ParkingLot.break_lot`):
    /// records the breaker and wakes every waiter with `Broken`. A lot
    /// broken before only records the new breaker.
    pub(crate) fn break_lot(&mut self, lot: &Rc<LotCore>, task: crate::lowlevel::Task) {
        let first = {
            let mut by = lot.broken_by.borrow_mut();
            by.push(task);
            by.len() == 1
        };
        if !first {
            return;
        }
        while lot.head.get() != NONE {
            let key = lot.head.get();
            self.lot_unlink(key);
            let p = &mut self.parks[key];
            p.state = ParkState::Broken;
            let w = p.waker.clone();
            self.wake_waker(&w);
        }
    }

    /// Task `key` ended: it breaks every lot it was registered for (see
    /// `lowlevel::add_parking_lot_breaker`).
    pub(crate) fn task_exited(&mut self, key: usize, generation: u32) {
        if self.lot_breakers.is_empty() {
            return;
        }
        let Some((g, lots)) = self.lot_breakers.remove(&key) else { return };
        if g != generation {
            return;
        }
        let task = crate::lowlevel::Task::from_parts(key, generation);
        for lot in lots {
            self.break_lot(&lot, task);
        }
    }
}

impl Runtime {
    /// Aborts a waiter whose scope just became cancelled (see the module
    /// docs). Called for each `Waiting` waiter of the scope.
    pub(crate) fn abort_parked(&mut self, key: usize) {
        let p = &mut self.parks[key];
        if p.lot.is_some() {
            // Queued in a lot: leave it now, so no unpark can pick it.
            self.lot_unlink(key);
            self.parks[key].state = ParkState::Aborted;
        } else {
            p.state = ParkState::CancelPending;
            if p.abort.is_some() {
                let generation = p.generation;
                self.pending_aborts.push((key, generation));
            }
        }
        let w = self.parks[key].waker.clone();
        self.wake_waker(&w);
    }

    /// The next abort callback to run: its record is still `CancelPending`
    /// and its scope still cancelled (a shield may have gone up since).
    fn next_pending_abort(&mut self) -> Option<(usize, u32, AbortFn)> {
        while let Some((key, generation)) = self.pending_aborts.pop() {
            let Some(p) = self.parks.get(key) else { continue };
            if p.generation != generation || p.state != ParkState::CancelPending {
                continue;
            }
            let cancelled = p.scope != NONE && self.scopes[p.scope].effectively_cancelled;
            let p = &mut self.parks[key];
            if !cancelled {
                p.state = ParkState::Waiting;
                continue;
            }
            if let Some(f) = p.abort.take() {
                return Some((key, generation, f));
            }
        }
        None
    }

    /// Records what an abort callback reported (see [`run_abort`]).
    pub(crate) fn finish_abort(&mut self, key: usize, generation: u32, f: AbortFn, outcome: Abort) {
        let Some(p) = self.parks.get_mut(key) else { return };
        if p.generation != generation {
            return;
        }
        p.abort = Some(f);
        match outcome {
            Abort::Succeeded => {
                p.state = ParkState::Aborted;
                let w = p.waker.clone();
                self.wake_waker(&w);
            }
            Abort::Failed => {
                if p.state == ParkState::CancelPending {
                    p.state = ParkState::Waiting;
                }
            }
        }
    }
}

/// Runs the abort callbacks of waiters whose scopes were cancelled (see the
/// module docs). Must be called with the runtime not borrowed; a no-op
/// outside a run. Callbacks may cancel more scopes: their aborts run here
/// too.
pub(crate) fn run_pending_aborts() {
    while let Some((key, generation, mut f)) = with(|rt| rt.next_pending_abort()).ok().flatten() {
        let outcome = f(key);
        let _ = with(|rt| rt.finish_abort(key, generation, f, outcome));
    }
}
