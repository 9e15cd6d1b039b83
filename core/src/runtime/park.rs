//! Records of parked waiters: the one place tasks block.
//!
//! A waiter sits in the intrusive list of the cancel scope it parked in, so
//! cancelling a scope finds exactly the waiters it must nudge. Nudging sets
//! `CancelPending` and wakes the waiter; the waiter's own future then runs its
//! abort callback (it owns it) and either leaves with `Cancelled` or, if the
//! abort fails because a wakeup is already committed, keeps waiting.

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
        self.parks.remove(key)
    }

    /// Reschedules a parked waiter. False if it is not waiting (already woken,
    /// gone, or aborted).
    pub(crate) fn unpark_key(&mut self, key: usize) -> bool {
        let Some(p) = self.parks.get_mut(key) else { return false };
        match p.state {
            ParkState::Waiting | ParkState::CancelPending => {
                p.state = ParkState::Woken;
                let w = p.waker.clone();
                self.wake_waker(&w);
                true
            }
            ParkState::Woken | ParkState::Aborted => false,
        }
    }
}
