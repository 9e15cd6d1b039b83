//! `ParkingLot`: the one place tasks wait (Trio's `_parking_lot.py`).
//!
//! A lot is a FIFO queue of parked tasks. Every synchronization primitive
//! (events, locks, semaphores, conditions, limiters, channels) parks its
//! waiters in a lot, so introspection sees who waits on what. Waiters can be
//! moved between lots without waking them (`repark`), which is how a
//! condition variable hands its waiters to its lock.
//!
//! # Design
//!
//! A lot is a list threaded through the runtime's records of parked waiters
//! (the same records cancellation uses), so parking, unparking and leaving
//! are one record and one runtime borrow each, with no allocation once warm.
//! A record outlives its place in the queue: `unpark` takes it out of the
//! queue and marks it woken, and the parked future removes it when it ends.
//! That is how a future dropped after being woken, but before it ran, learns
//! that it was handed something (a lock, a permit) and gives it back instead
//! of losing it (see [`ParkingLot::park_handoff`]).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{Error, Result};
use crate::lowlevel::Task;
use crate::runtime::{self, LotCore, NONE, Runtime};

/// Who was unparked: the task (as seen when it parked) and the tag it parked
/// with (see [`ParkingLot::park_tagged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unparked {
    /// The task that parked, if it parked inside a run.
    pub task: Option<Task>,
    /// The tag given to `park_tagged`/`park_handoff` (0 for `park`).
    pub tag: usize,
}

/// A snapshot of a lot, from [`ParkingLot::statistics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkingLotStatistics {
    /// How many tasks are parked in the lot.
    pub tasks_waiting: usize,
}

/// A fair (FIFO) queue of parked tasks. See the module docs.
///
/// Not `Send`: a lot belongs to one run's thread.
#[derive(Debug)]
pub struct ParkingLot {
    core: Rc<LotCore>,
}

impl Default for ParkingLot {
    fn default() -> ParkingLot {
        ParkingLot::new()
    }
}

fn unparked(rt: &Runtime, key: usize) -> Unparked {
    let (task, tag) = rt.lot_waiter(key);
    Unparked { task: task.map(|(k, g)| Task::from_parts(k, g)), tag }
}

impl ParkingLot {
    /// An empty lot.
    pub fn new() -> ParkingLot {
        ParkingLot { core: Rc::new(LotCore::new()) }
    }

    /// How many tasks are parked here.
    pub fn len(&self) -> usize {
        self.core.len.get()
    }

    /// True if nobody is parked here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks the current task at the back of the lot until unparked.
    ///
    /// # Checkpoint
    /// Always a checkpoint: it yields, and checks cancellation (except on a
    /// broken lot, where it fails at once, as Trio's).
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the task was removed from the lot and
    /// nothing was handed to it.
    /// # Errors
    /// [`Error::Broken`] if the lot is or becomes broken
    /// ([`break_lot`](ParkingLot::break_lot)); [`Error::Runtime`] outside
    /// `trio::run`.
    pub fn park(&self) -> LotPark<'_, fn()> {
        self.park_handoff(0, || {})
    }

    /// Like [`park`](ParkingLot::park), remembering `tag` with the waiter so
    /// that whoever unparks it learns it (a slot number, a request id).
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the task was removed from the lot.
    /// # Errors
    /// [`Error::Runtime`] outside `trio::run`.
    pub fn park_tagged(&self, tag: usize) -> LotPark<'_, fn()> {
        self.park_handoff(tag, || {})
    }

    /// Like [`park_tagged`](ParkingLot::park_tagged), for primitives that
    /// hand something to the task they unpark: if this future is dropped
    /// after it was unparked but before it returned, `on_lost` runs so the
    /// primitive can take back what it handed over.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the task was removed from the lot and
    /// nothing was handed to it (`on_lost` does not run).
    /// # Errors
    /// [`Error::Runtime`] outside `trio::run`.
    pub fn park_handoff<F: FnOnce()>(&self, tag: usize, on_lost: F) -> LotPark<'_, F> {
        LotPark { lot: self, tag, key: NONE, cancelled: false, finished: false, on_lost: Some(on_lost) }
    }

    /// Wakes the first parked task, if any, and says who it was. Not a
    /// checkpoint.
    pub fn unpark_one(&self) -> Option<Unparked> {
        if self.is_empty() {
            return None;
        }
        runtime::with(|rt| self.unpark_one_in(rt)).ok().flatten()
    }

    /// [`unpark_one`](ParkingLot::unpark_one) inside a borrow of the run
    /// (for the primitives' own futures, which attempt their operation in
    /// the borrow that checks cancellation).
    pub(crate) fn unpark_one_in(&self, rt: &mut Runtime) -> Option<Unparked> {
        let head = self.core.head.get();
        if head == NONE {
            return None;
        }
        rt.lot_unlink(head);
        let u = unparked(rt, head);
        rt.unpark_key(head);
        Some(u)
    }

    /// Wakes up to `n` parked tasks, oldest first; returns how many. Not a
    /// checkpoint.
    pub fn unpark(&self, n: usize) -> usize {
        runtime::with(|rt| {
            let mut woken = 0;
            while woken < n {
                let head = self.core.head.get();
                if head == NONE {
                    break;
                }
                rt.lot_unlink(head);
                rt.unpark_key(head);
                woken += 1;
            }
            woken
        })
        .unwrap_or(0)
    }

    /// Wakes every parked task; returns how many. Not a checkpoint.
    pub fn unpark_all(&self) -> usize {
        self.unpark(usize::MAX)
    }

    /// Wakes every parked task for which `pick` says yes (in FIFO order);
    /// returns how many. `pick` must not use the runtime (it runs while the
    /// runtime is borrowed). Not a checkpoint.
    pub fn unpark_where(&self, mut pick: impl FnMut(&Unparked) -> bool) -> usize {
        runtime::with(|rt| {
            let mut woken = 0;
            let mut k = self.core.head.get();
            while k != NONE {
                let next = rt.lot_next(k);
                if pick(&unparked(rt, k)) {
                    rt.lot_unlink(k);
                    rt.unpark_key(k);
                    woken += 1;
                }
                k = next;
            }
            woken
        })
        .unwrap_or(0)
    }

    /// Moves up to `n` parked tasks, oldest first, to the back of `new_lot`
    /// without waking them; returns how many. Not a checkpoint.
    pub fn repark(&self, new_lot: &ParkingLot, n: usize) -> usize {
        if Rc::ptr_eq(&self.core, &new_lot.core) {
            return 0;
        }
        runtime::with(|rt| {
            let mut moved = 0;
            while moved < n {
                let head = self.core.head.get();
                if head == NONE {
                    break;
                }
                rt.lot_unlink(head);
                rt.lot_link_tail(head, &new_lot.core);
                moved += 1;
            }
            moved
        })
        .unwrap_or(0)
    }

    /// Moves every parked task to `new_lot`; returns how many. Not a
    /// checkpoint.
    pub fn repark_all(&self, new_lot: &ParkingLot) -> usize {
        self.repark(new_lot, usize::MAX)
    }

    /// The parked tasks, oldest first.
    pub fn tasks(&self) -> Vec<Task> {
        runtime::with(|rt| {
            let mut v = Vec::with_capacity(self.len());
            let mut k = self.core.head.get();
            while k != NONE {
                v.extend(unparked(rt, k).task);
                k = rt.lot_next(k);
            }
            v
        })
        .unwrap_or_default()
    }

    /// A snapshot: how many tasks wait here.
    pub fn statistics(&self) -> ParkingLotStatistics {
        ParkingLotStatistics { tasks_waiting: self.len() }
    }

    /// Breaks the lot (Trio's `ParkingLot.break_lot`), on behalf of `task`
    /// (the current task when `None`): every task parked here is woken
    /// with [`Error::Broken`], and every later park fails with it at once.
    /// Breaking a broken lot again only records one more breaker. This is
    /// what happens when a task registered with
    /// [`add_parking_lot_breaker`](crate::lowlevel::add_parking_lot_breaker)
    /// exits; a [`Lock`](crate::sync::Lock) registers its owner, so a task
    /// that ends while holding a lock breaks it for its waiters instead of
    /// leaving them blocked forever. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] outside `trio::run` (when `task` is `None`).
    pub fn break_lot(&self, task: Option<Task>) -> Result<()> {
        let task = match task {
            Some(t) => t,
            None => crate::lowlevel::current_task()?,
        };
        match runtime::with(|rt| rt.break_lot(&self.core, task)) {
            Ok(()) => Ok(()),
            // Outside a run nobody can be parked: just record it.
            Err(_) => {
                self.core.broken_by.borrow_mut().push(task);
                Ok(())
            }
        }
    }

    /// The tasks that broke the lot, in order (empty while it is whole).
    pub fn broken_by(&self) -> Vec<Task> {
        self.core.broken_by.borrow().clone()
    }

    pub(crate) fn core(&self) -> &Rc<LotCore> {
        &self.core
    }
}

pin_project! {
    /// The future of [`ParkingLot::park`] and its variants. Dropping it while
    /// it waits takes it out of the lot; dropping it after it was unparked
    /// but before it returned runs the `on_lost` hook.
    #[must_use = "futures do nothing unless awaited"]
    pub struct LotPark<'a, F: FnOnce()> {
        lot: &'a ParkingLot,
        tag: usize,
        // The waiter's record while parked.
        key: usize,
        // Cancelled on entry: yielded, reports it on the next poll.
        cancelled: bool,
        finished: bool,
        on_lost: Option<F>,
    }

    impl<'a, F: FnOnce()> PinnedDrop for LotPark<'a, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.key == NONE || *this.finished {
                return;
            }
            let key = *this.key;
            if runtime::with(|rt| rt.op_abandon(key)).unwrap_or(false)
                && let Some(f) = this.on_lost.take()
            {
                f();
            }
        }
    }
}

impl<F: FnOnce()> LotPark<'_, F> {
    /// Gives up waiting, as dropping does, but tells the caller instead of
    /// running `on_lost`: true if the waiter had been unparked (handed
    /// something) but had not returned yet.
    pub(crate) fn abandon(self: Pin<&mut Self>) -> bool {
        let this = self.project();
        if *this.key == NONE || *this.finished {
            return false;
        }
        *this.finished = true;
        let key = *this.key;
        runtime::with(|rt| rt.op_abandon(key)).unwrap_or(false)
    }
}

impl<F: FnOnce()> std::fmt::Debug for LotPark<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LotPark").field("tag", &self.tag).field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl<F: FnOnce()> Future for LotPark<'_, F> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.project();
        if *this.finished {
            return Poll::Ready(Err(Error::Runtime("park polled after completion")));
        }
        let (lot, tag, key) = (&this.lot.core, *this.tag, *this.key);
        let out = if *this.cancelled {
            Ok(Poll::Ready(Err(runtime::cancelled_error())))
        } else if key == NONE {
            runtime::with(|rt| {
                if !lot.broken_by.borrow().is_empty() {
                    // Trio raises at once, without a checkpoint.
                    rt.count_schedule_point();
                    rt.count_cancel_point();
                    return Poll::Ready(Err(Error::Broken));
                }
                if rt.op_enter(cx.waker()) {
                    *this.cancelled = true;
                } else {
                    *this.key = rt.op_park(cx.waker(), Some((lot, tag)));
                }
                Poll::Pending
            })
        } else {
            runtime::with(|rt| rt.op_poll_parked(key, cx.waker()))
        };
        let out = out.unwrap_or_else(|e| Poll::Ready(Err(e)));
        if out.is_ready() {
            *this.finished = true;
        }
        out
    }
}
