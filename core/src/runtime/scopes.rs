//! The cancel tree (Trio's `CancelStatus`): one record per entered scope,
//! linked to the scope it was entered in.
//!
//! Each record caches whether it is *effectively* cancelled, so a checkpoint
//! answers in O(1). Cancelling a scope recomputes its subtree once, stopping at
//! shields, and nudges every parked waiter in the newly cancelled records.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{NONE, ParkState, Runtime};
use crate::cancel::ScopeState;
use crate::error::{CancelReason, CancelSource, Error};
use crate::time::Instant;

pub(crate) struct ScopeRec {
    pub(crate) parent: usize,
    pub(crate) first_child: usize,
    pub(crate) prev_sibling: usize,
    pub(crate) next_sibling: usize,
    /// Head of the intrusive list of parked waiters inside this scope.
    pub(crate) parked_head: usize,
    /// `cancel_called || (!shield && parent.effectively_cancelled)`.
    pub(crate) effectively_cancelled: bool,
    /// The deadline registered in the timer map; `Instant::MAX` for none
    /// (see [`timer`](ScopeRec::timer)).
    timer_at: Instant,
    /// A future deadline not yet in the timer map (a lazily entered scope
    /// whose body has not waited yet; see `arm_timer`).
    pub(crate) unarmed: bool,
    pub(crate) state: ScopeStateRef,
    /// Flags that mirror `effectively_cancelled` for other threads (a
    /// `to_thread` worker's `from_thread::check_cancelled`).
    /// Boxed: rarely used, and a smaller record is cheaper to enter.
    #[allow(clippy::box_collection, reason = "8 bytes in every record instead of 24")]
    pub(crate) observers: Option<Box<Vec<Arc<CancelFlag>>>>,
}

impl ScopeRec {
    /// A record for `state`, not linked, not cancelled, with no deadline
    /// registered.
    #[inline(always)]
    fn new(state: ScopeStateRef) -> ScopeRec {
        ScopeRec {
            parent: NONE,
            first_child: NONE,
            prev_sibling: NONE,
            next_sibling: NONE,
            parked_head: NONE,
            effectively_cancelled: false,
            timer_at: Instant::MAX,
            unarmed: false,
            state,
            observers: None,
        }
    }

    /// The deadline registered in the timer map, if any.
    pub(crate) fn timer(&self) -> Option<Instant> {
        (self.timer_at != Instant::MAX).then_some(self.timer_at)
    }

    /// Forgets the registered deadline (the caller takes it out of the
    /// timer map) and returns it.
    pub(crate) fn take_timer(&mut self) -> Option<Instant> {
        let t = self.timer();
        self.timer_at = Instant::MAX;
        t
    }
}

/// A scope record's state: shared with a [`CancelScope`] handle, or, for a
/// scope no handle can reach (`move_on_after`, `fail_after` and the other
/// deadline helpers), kept in the record itself, so entering and leaving
/// such a scope allocates nothing.
///
/// [`CancelScope`]: crate::CancelScope
pub(crate) enum ScopeStateRef {
    Shared(Rc<ScopeState>),
    Inline(ScopeState),
}

impl std::ops::Deref for ScopeStateRef {
    type Target = ScopeState;

    #[inline]
    fn deref(&self) -> &ScopeState {
        match self {
            ScopeStateRef::Shared(s) => s,
            ScopeStateRef::Inline(s) => s,
        }
    }
}

/// A scope's cancellation as another thread sees it: whether it is
/// cancelled, and why (for the `Cancelled` that thread reports).
#[derive(Debug, Default)]
pub(crate) struct CancelFlag {
    pub(crate) set: AtomicBool,
    pub(crate) reason: std::sync::Mutex<Option<CancelReason>>,
}

impl CancelFlag {
    /// Is the scope cancelled?
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// The `Cancelled` to report for it.
    pub(crate) fn error(&self) -> Error {
        let reason = self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Error::Cancelled(reason.unwrap_or_else(CancelReason::unknown))
    }

    fn store(&self, cancelled: bool, reason: Option<CancelReason>) {
        if cancelled {
            *self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
        }
        self.set.store(cancelled, Ordering::Release);
    }
}

impl Runtime {
    /// Enters a scope record under `parent` (or as a root when `NONE`).
    /// With `lazy`, a deadline still in the future is only noted, and
    /// [`arm_timer`](Runtime::arm_timer) puts it in the timer map; `now` is
    /// the clock if the caller just read it.
    pub(crate) fn insert_scope(
        &mut self,
        state: ScopeStateRef,
        parent: usize,
        lazy: bool,
        now: Option<Instant>,
    ) -> usize {
        let key = self.scopes.insert(ScopeRec::new(state));
        self.link_scope(key, parent);
        // A new leaf: no children, waiters or observers to tell, so its
        // flag is set directly (what `recompute` would find).
        let parent_cancelled = parent != NONE && self.scopes[parent].effectively_cancelled;
        let s = &mut self.scopes[key];
        s.effectively_cancelled = s.state.cancel_called.get() || (!s.state.shield.get() && parent_cancelled);
        if s.effectively_cancelled && !s.state.cancel_called.get() {
            self.inherit_reason(key);
        }
        let s = &self.scopes[key];
        let deadline = s.state.deadline.get();
        if lazy && deadline != Instant::MAX && !s.state.cancel_called.get() {
            if deadline <= now.unwrap_or_else(|| self.now()) {
                self.cancel_scope(key, CancelReason::new(CancelSource::Deadline));
            } else {
                self.scopes[key].unarmed = true;
            }
        } else {
            self.sync_deadline(key);
        }
        key
    }

    /// Enters a fresh scope no handle can reach (`ScopeStateRef::Inline`:
    /// not cancelled, no shield) with `deadline`, lazily as
    /// [`insert_scope`](Runtime::insert_scope) does; `now` is the clock
    /// (any value when `deadline` is `Instant::MAX`).
    pub(crate) fn insert_private_scope(&mut self, deadline: Instant, parent: usize, now: Instant) -> usize {
        let state = ScopeState::new();
        state.deadline.set(deadline);
        let parent_cancelled = parent != NONE && self.scopes[parent].effectively_cancelled;
        let key = self.scopes.insert(ScopeRec {
            effectively_cancelled: parent_cancelled,
            unarmed: deadline != Instant::MAX,
            ..ScopeRec::new(ScopeStateRef::Inline(state))
        });
        self.link_scope(key, parent);
        if parent_cancelled {
            self.inherit_reason(key);
        }
        if deadline != Instant::MAX && deadline <= now {
            self.scopes[key].unarmed = false;
            self.cancel_scope(key, CancelReason::new(CancelSource::Deadline));
        }
        key
    }

    /// Puts a lazily entered scope's deadline in the timer map (see
    /// [`insert_scope`](Runtime::insert_scope)); nothing if it is there.
    pub(crate) fn arm_timer(&mut self, key: usize) {
        if self.scopes.get(key).is_some_and(|s| s.unarmed) {
            self.sync_deadline(key);
        }
    }

    fn link_scope(&mut self, key: usize, parent: usize) {
        self.scopes[key].parent = parent;
        if parent == NONE {
            return;
        }
        let head = self.scopes[parent].first_child;
        self.scopes[key].next_sibling = head;
        self.scopes[key].prev_sibling = NONE;
        if head != NONE {
            self.scopes[head].prev_sibling = key;
        }
        self.scopes[parent].first_child = key;
    }

    fn unlink_scope(&mut self, key: usize) {
        let (parent, prev, next) = {
            let s = &self.scopes[key];
            (s.parent, s.prev_sibling, s.next_sibling)
        };
        if prev != NONE {
            self.scopes[prev].next_sibling = next;
        } else if parent != NONE {
            self.scopes[parent].first_child = next;
        }
        if next != NONE {
            self.scopes[next].prev_sibling = prev;
        }
        let s = &mut self.scopes[key];
        s.parent = NONE;
        s.prev_sibling = NONE;
        s.next_sibling = NONE;
    }

    /// Leaves a scope. Its children must be gone already; parked waiters left
    /// behind (which would be a bug) are moved to the parent.
    pub(crate) fn remove_scope(&mut self, key: usize) {
        if let Some(deadline) = self.scopes[key].take_timer() {
            self.timers.remove(&(deadline, key));
        }
        // Orphaned children (only possible if futures were leaked) go up.
        let parent = self.scopes[key].parent;
        while self.scopes[key].first_child != NONE {
            let child = self.scopes[key].first_child;
            self.unlink_scope(child);
            self.link_scope(child, parent);
        }
        while self.scopes[key].parked_head != NONE {
            let p = self.scopes[key].parked_head;
            self.unlink_park(p);
            if parent != NONE {
                self.link_park(p, parent);
            }
        }
        self.unlink_scope(key);
        let s = self.scopes.remove(key);
        s.state.entered.set(NONE);
    }

    /// Moves scope `key` under `new_parent` (used when a `start()`ed task
    /// reports that it started) and recomputes its cancellation.
    pub(crate) fn reparent_scope(&mut self, key: usize, new_parent: usize) {
        self.unlink_scope(key);
        self.link_scope(key, new_parent);
        self.recompute(key);
    }

    /// Marks the scope cancelled and delivers it to its subtree. `reason`
    /// is kept unless the scope has one already (the first cancel wins).
    pub(crate) fn cancel_scope(&mut self, key: usize, reason: CancelReason) {
        let s = &self.scopes[key];
        s.state.cancel_called.set(true);
        s.state.cancel_reason.borrow_mut().get_or_insert(reason);
        self.scopes[key].unarmed = false;
        if let Some(deadline) = self.scopes[key].take_timer() {
            self.timers.remove(&(deadline, key));
        }
        self.recompute(key);
    }

    /// Recomputes `effectively_cancelled` for `key` and, where it changed, for
    /// its subtree; waiters in scopes that became cancelled are nudged.
    pub(crate) fn recompute(&mut self, key: usize) {
        let mut stack = std::mem::take(&mut self.dfs);
        stack.push(key);
        while let Some(k) = stack.pop() {
            let s = &self.scopes[k];
            let parent_cancelled = s.parent != NONE && self.scopes[s.parent].effectively_cancelled;
            let now = s.state.cancel_called.get() || (!s.state.shield.get() && parent_cancelled);
            if now == s.effectively_cancelled && k != key {
                continue;
            }
            let changed = now != s.effectively_cancelled;
            self.scopes[k].effectively_cancelled = now;
            if now && !self.scopes[k].state.cancel_called.get() {
                self.inherit_reason(k);
            }
            if let Some(observers) = &self.scopes[k].observers {
                let reason = self.scopes[k].state.cancel_reason.borrow().clone();
                for o in observers.iter() {
                    o.store(now, reason.clone());
                }
            }
            if !changed {
                continue;
            }
            if now {
                self.nudge_parked(k);
            }
            let mut c = self.scopes[k].first_child;
            while c != NONE {
                stack.push(c);
                c = self.scopes[c].next_sibling;
            }
        }
        self.dfs = stack;
    }

    /// A scope cancelled through its parent takes the parent's reason (as
    /// Trio's), unless it has one of its own.
    fn inherit_reason(&self, key: usize) {
        let s = &self.scopes[key];
        if s.parent == NONE || s.state.cancel_reason.borrow().is_some() {
            return;
        }
        let parent = self.scopes[s.parent].state.cancel_reason.borrow().clone();
        *s.state.cancel_reason.borrow_mut() = parent;
    }

    /// The `Cancelled` a checkpoint in the current scope reports: it carries
    /// the reason of that scope's cancellation.
    pub(crate) fn cancelled_error(&self) -> Error {
        self.cancelled_error_in(self.current_scope)
    }

    /// The `Cancelled` of a checkpoint in scope `key`.
    pub(crate) fn cancelled_error_in(&self, key: usize) -> Error {
        let reason = self.scopes.get(key).and_then(|s| s.state.cancel_reason.borrow().clone());
        Error::Cancelled(reason.unwrap_or_else(CancelReason::unknown))
    }

    fn nudge_parked(&mut self, scope: usize) {
        let mut p = self.scopes[scope].parked_head;
        while p != NONE {
            let next = self.parks[p].next;
            if self.parks[p].state == ParkState::Waiting {
                self.abort_parked(p);
            }
            p = next;
        }
    }

    /// Brings the timer map in line with the scope's deadline.
    pub(crate) fn sync_deadline(&mut self, key: usize) {
        self.scopes[key].unarmed = false;
        let want = self.scopes[key].state.deadline.get();
        let have = self.scopes[key].timer();
        if self.scopes[key].state.cancel_called.get() {
            if let Some(d) = have {
                self.timers.remove(&(d, key));
                self.scopes[key].timer_at = Instant::MAX;
            }
            return;
        }
        if have == Some(want) || (have.is_none() && want == Instant::MAX) {
            return;
        }
        if let Some(d) = have {
            self.timers.remove(&(d, key));
            self.scopes[key].timer_at = Instant::MAX;
        }
        if want == Instant::MAX {
            return;
        }
        if want <= self.now() {
            self.cancel_scope(key, CancelReason::new(CancelSource::Deadline));
        } else {
            self.timers.insert((want, key), ());
            self.scopes[key].timer_at = want;
        }
    }

    /// Mirrors the current scope's cancellation into `flag` until
    /// [`unobserve_cancel`](Runtime::unobserve_cancel); returns the scope.
    pub(crate) fn observe_cancel(&mut self, flag: Arc<CancelFlag>) -> usize {
        let k = self.current_scope;
        if let Some(s) = self.scopes.get_mut(k) {
            flag.store(s.effectively_cancelled, s.state.cancel_reason.borrow().clone());
            s.observers.get_or_insert_default().push(flag);
        }
        k
    }

    pub(crate) fn unobserve_cancel(&mut self, scope: usize, flag: &Arc<CancelFlag>) {
        if let Some(s) = self.scopes.get_mut(scope)
            && let Some(observers) = &mut s.observers
        {
            observers.retain(|o| !Arc::ptr_eq(o, flag));
            if observers.is_empty() {
                s.observers = None;
            }
        }
    }

    /// Is the code running in the current scope cancelled?
    pub(crate) fn current_cancelled(&self) -> bool {
        self.scopes.get(self.current_scope).is_some_and(|s| s.effectively_cancelled)
    }

    /// Trio's rule for which scope catches a `Cancelled`: the scope must be
    /// effectively cancelled and its parent's cancellation must not reach it.
    pub(crate) fn scope_catches(&self, key: usize) -> bool {
        let s = &self.scopes[key];
        let parent_visible = !s.state.shield.get() && s.parent != NONE && self.scopes[s.parent].effectively_cancelled;
        s.effectively_cancelled && !parent_visible
    }

    /// Applies the catch rule to an error leaving scope `key`; returns what is
    /// left to propagate and records `cancelled_caught`.
    pub(crate) fn filter_exit_error(&mut self, key: usize, err: Error) -> Option<Error> {
        if !err.contains_cancelled() || !self.scope_catches(key) {
            return Some(err);
        }
        self.scopes[key].state.cancelled_caught.set(true);
        err.without_cancelled()
    }

    /// The earliest deadline from the current scope up to the first shield;
    /// `Instant::ZERO` if the current scope is already cancelled.
    pub(crate) fn effective_deadline(&self) -> Instant {
        let mut k = self.current_scope;
        let mut best = Instant::MAX;
        while k != NONE {
            let s = &self.scopes[k];
            if s.effectively_cancelled {
                return Instant::ZERO;
            }
            best = best.min(s.state.deadline.get());
            if s.state.shield.get() {
                break;
            }
            k = s.parent;
        }
        best
    }
}
#[cfg(test)]
mod tests {
    /// Entering a scope writes its record into the slab and leaving moves it
    /// out: at 128 bytes or less the compiler does it with a few vector
    /// moves instead of calls to `memcpy` (a deadline scope entered and left
    /// cost 503 instructions with a 160-byte record, 447 now).
    #[test]
    fn scope_records_stay_small() {
        assert!(std::mem::size_of::<super::ScopeRec>() <= 128, "{}", std::mem::size_of::<super::ScopeRec>());
    }
}
