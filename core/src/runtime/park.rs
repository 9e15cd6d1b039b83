//! Records of parked waiters: the one place tasks block.
//!
//! A waiter sits in the intrusive list of the cancel scope it parked in, so
//! cancelling a scope finds exactly the waiters it must nudge. Nudging sets
//! `CancelPending` and wakes the waiter; the waiter's own future then runs its
//! abort callback (it owns it) and either leaves with `Cancelled` or, if the
//! abort fails because a wakeup is already committed, keeps waiting.

use std::cell::Cell;
use std::rc::Rc;
use std::task::Waker;

use super::{NONE, Runtime};

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
}

/// The queue of one `ParkingLot`: a FIFO list threaded through the parked
/// waiters' records, so parking in a lot is one record, one borrow.
#[derive(Debug)]
pub(crate) struct LotCore {
    pub(crate) head: Cell<usize>,
    pub(crate) tail: Cell<usize>,
    pub(crate) len: Cell<usize>,
}

impl LotCore {
    pub(crate) fn new() -> LotCore {
        LotCore { head: Cell::new(NONE), tail: Cell::new(NONE), len: Cell::new(0) }
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
        if matches!(state, ParkState::Woken | ParkState::Aborted) {
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
            ParkState::Woken | ParkState::Aborted => false,
        }
    }
}
