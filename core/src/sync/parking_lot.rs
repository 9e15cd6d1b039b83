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
//! Entries of all lots on a thread live in one thread-local slab, linked into
//! their lot's list, so parking allocates nothing once the slab is warm. An
//! entry outlives its place in the list: `unpark` unlinks it and marks it
//! *unparked*, and the parked future removes it when it finishes. That is how
//! a future dropped after being woken, but before it ran, learns that it was
//! handed something (a lock, a permit, a value) and gives it back instead of
//! losing it (see [`ParkingLot::park_handoff`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use slab::Slab;

use crate::error::Result;
use crate::lowlevel::{self, Abort, Task, WakeToken};

const NONE: usize = usize::MAX;

struct Entry {
    generation: u64,
    token: WakeToken,
    task: Option<Task>,
    tag: usize,
    /// The lot this entry is queued in; `None` once unparked.
    lot: Option<Rc<LotCore>>,
    prev: usize,
    next: usize,
}

#[derive(Debug)]
struct LotCore {
    head: Cell<usize>,
    tail: Cell<usize>,
    len: Cell<usize>,
}

struct Entries {
    slab: Slab<Entry>,
    next_gen: u64,
}

thread_local! {
    static ENTRIES: RefCell<Entries> = const { RefCell::new(Entries { slab: Slab::new(), next_gen: 0 }) };
}

impl Entries {
    fn link_tail(&mut self, key: usize, lot: &Rc<LotCore>) {
        let tail = lot.tail.get();
        {
            let e = &mut self.slab[key];
            e.prev = tail;
            e.next = NONE;
            e.lot = Some(lot.clone());
        }
        if tail == NONE {
            lot.head.set(key);
        } else {
            self.slab[tail].next = key;
        }
        lot.tail.set(key);
        lot.len.set(lot.len.get() + 1);
    }

    fn unlink(&mut self, key: usize) -> Option<Rc<LotCore>> {
        let (prev, next, lot) = {
            let e = &mut self.slab[key];
            (e.prev, e.next, e.lot.take()?)
        };
        if prev == NONE {
            lot.head.set(next);
        } else {
            self.slab[prev].next = next;
        }
        if next == NONE {
            lot.tail.set(prev);
        } else {
            self.slab[next].prev = prev;
        }
        lot.len.set(lot.len.get() - 1);
        let e = &mut self.slab[key];
        e.prev = NONE;
        e.next = NONE;
        Some(lot)
    }

    fn get(&self, (key, generation): (usize, u64)) -> Option<&Entry> {
        self.slab.get(key).filter(|e| e.generation == generation)
    }
}

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

impl ParkingLot {
    /// An empty lot.
    pub fn new() -> ParkingLot {
        ParkingLot { core: Rc::new(LotCore { head: Cell::new(NONE), tail: Cell::new(NONE), len: Cell::new(0) }) }
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
    /// Always a checkpoint: it yields, and checks cancellation.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the task was removed from the lot and
    /// nothing was handed to it.
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
    pub async fn park(&self) -> Result<()> {
        self.park_handoff(0, || {}).await
    }

    /// Like [`park`](ParkingLot::park), remembering `tag` with the waiter so
    /// that whoever unparks it learns it (a slot number, a request id).
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the task was removed from the lot.
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
    pub async fn park_tagged(&self, tag: usize) -> Result<()> {
        self.park_handoff(tag, || {}).await
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
    /// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
    pub async fn park_handoff(&self, tag: usize, on_lost: impl FnOnce()) -> Result<()> {
        let key: Cell<Option<(usize, u64)>> = Cell::new(None);
        let mut guard = EntryGuard { key: &key, on_lost: Some(on_lost) };
        let core = &self.core;
        let r = lowlevel::park(
            |token| {
                key.set(Some(ENTRIES.with_borrow_mut(|es| {
                    es.next_gen += 1;
                    let generation = es.next_gen;
                    let k = es.slab.insert(Entry {
                        generation,
                        token,
                        task: Some(token.task()),
                        tag,
                        lot: None,
                        prev: NONE,
                        next: NONE,
                    });
                    es.link_tail(k, core);
                    (k, generation)
                })));
            },
            || {
                let Some(k) = key.get() else { return Abort::Succeeded };
                ENTRIES.with_borrow_mut(|es| {
                    if es.get(k).is_none_or(|e| e.lot.is_none()) {
                        // Already unparked: the wakeup is committed.
                        return Abort::Failed;
                    }
                    es.unlink(k.0);
                    es.slab.remove(k.0);
                    key.set(None);
                    Abort::Succeeded
                })
            },
        )
        .await;
        guard.on_lost = None;
        r
    }

    /// Wakes the first parked task, if any, and says who it was. Not a
    /// checkpoint.
    pub fn unpark_one(&self) -> Option<Unparked> {
        loop {
            let (token, u) = ENTRIES.with_borrow_mut(|es| {
                let head = self.core.head.get();
                if head == NONE {
                    return None;
                }
                es.unlink(head);
                let e = &es.slab[head];
                Some((e.token, Unparked { task: e.task, tag: e.tag }))
            })?;
            if lowlevel::unpark(token) {
                return Some(u);
            }
            // A waiter that is no longer waiting (cannot happen while the
            // abort protocol holds; skipped defensively).
        }
    }

    /// Wakes up to `n` parked tasks, oldest first; returns how many. Not a
    /// checkpoint.
    pub fn unpark(&self, n: usize) -> usize {
        let mut woken = 0;
        while woken < n && self.unpark_one().is_some() {
            woken += 1;
        }
        woken
    }

    /// Wakes every parked task; returns how many. Not a checkpoint.
    pub fn unpark_all(&self) -> usize {
        self.unpark(usize::MAX)
    }

    /// Wakes every parked task for which `pick` says yes (in FIFO order);
    /// returns how many. `pick` must not touch this lot. Not a checkpoint.
    pub fn unpark_where(&self, mut pick: impl FnMut(&Unparked) -> bool) -> usize {
        let mut chosen = Vec::new();
        ENTRIES.with_borrow(|es| {
            let mut k = self.core.head.get();
            while k != NONE {
                let e = &es.slab[k];
                if pick(&Unparked { task: e.task, tag: e.tag }) {
                    chosen.push(k);
                }
                k = e.next;
            }
        });
        let mut woken = 0;
        for k in chosen {
            let token = ENTRIES.with_borrow_mut(|es| {
                es.unlink(k);
                es.slab[k].token
            });
            if lowlevel::unpark(token) {
                woken += 1;
            }
        }
        woken
    }

    /// Moves up to `n` parked tasks, oldest first, to the back of `new_lot`
    /// without waking them; returns how many. Not a checkpoint.
    pub fn repark(&self, new_lot: &ParkingLot, n: usize) -> usize {
        if Rc::ptr_eq(&self.core, &new_lot.core) {
            return 0;
        }
        ENTRIES.with_borrow_mut(|es| {
            let mut moved = 0;
            while moved < n {
                let head = self.core.head.get();
                if head == NONE {
                    break;
                }
                es.unlink(head);
                es.link_tail(head, &new_lot.core);
                moved += 1;
            }
            moved
        })
    }

    /// Moves every parked task to `new_lot`; returns how many. Not a
    /// checkpoint.
    pub fn repark_all(&self, new_lot: &ParkingLot) -> usize {
        self.repark(new_lot, usize::MAX)
    }

    /// The parked tasks, oldest first (tasks that parked outside a run are
    /// left out).
    pub fn tasks(&self) -> Vec<Task> {
        ENTRIES.with_borrow(|es| {
            let mut v = Vec::with_capacity(self.len());
            let mut k = self.core.head.get();
            while k != NONE {
                let e = &es.slab[k];
                v.extend(e.task);
                k = e.next;
            }
            v
        })
    }

    /// A snapshot: how many tasks wait here.
    pub fn statistics(&self) -> ParkingLotStatistics {
        ParkingLotStatistics { tasks_waiting: self.len() }
    }
}

/// Removes the entry when the parking future ends; runs `on_lost` if the
/// entry was unparked but the future never returned.
struct EntryGuard<'a, F: FnOnce()> {
    key: &'a Cell<Option<(usize, u64)>>,
    on_lost: Option<F>,
}

impl<F: FnOnce()> Drop for EntryGuard<'_, F> {
    fn drop(&mut self) {
        let Some(k) = self.key.take() else { return };
        let unparked = ENTRIES.with_borrow_mut(|es| {
            let Some(e) = es.get(k) else { return false };
            let unparked = e.lot.is_none();
            if !unparked {
                es.unlink(k.0);
            }
            es.slab.remove(k.0);
            unparked
        });
        if unparked && let Some(f) = self.on_lost.take() {
            f();
        }
    }
}
