//! `Lock` and `StrictFifoLock`: mutual exclusion with fair hand-off.

use std::cell::Cell;

use super::ParkingLot;
use crate::error::{Error, Result};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::parking_lot::LotPark;
use crate::lowlevel::{Task, add_parking_lot_breaker, current_task, remove_parking_lot_breaker};
use crate::runtime;

/// A snapshot of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatistics {
    /// Is it held?
    pub locked: bool,
    /// The task holding it.
    pub owner: Option<Task>,
    /// Tasks blocked in `acquire`.
    pub tasks_waiting: usize,
}

#[derive(Debug, Default)]
pub(crate) struct LockImpl {
    owner: Cell<Option<Task>>,
    /// Is the owner registered as a breaker of `lot` (see `set_owner`)?
    registered: Cell<bool>,
    lot: ParkingLot,
}

impl LockImpl {
    fn try_acquire(&self, me: Task) -> Result<()> {
        match self.owner.get() {
            Some(o) if o == me => Err(Error::Runtime("attempt to re-acquire a lock this task already holds")),
            None if self.lot.is_empty() => {
                // Nobody waits: nothing to register (see `set_owner`).
                self.owner.set(Some(me));
                Ok(())
            }
            _ => Err(Error::WouldBlock),
        }
    }

    pub(crate) fn acquire(&self) -> LockAcquire<'_> {
        LockAcquire { lock: self, me: None, state: AcquireState::Start }
    }

    fn release(&self) -> Result<()> {
        let me = current_task()?;
        if self.owner.get() != Some(me) {
            return Err(Error::Runtime("release of a lock this task does not hold"));
        }
        self.hand_off();
        Ok(())
    }

    pub(crate) fn release_from(&self, owner: Task) {
        if self.owner.get() == Some(owner) {
            self.hand_off();
        }
    }

    #[inline]
    fn hand_off(&self) {
        if self.lot.is_empty() && !self.registered.get() {
            // The uncontended release: nobody to wake, nothing to unregister.
            self.owner.set(None);
            return;
        }
        self.hand_off_to_waiter();
    }

    fn hand_off_to_waiter(&self) {
        let next = self.lot.unpark_one().and_then(|u| u.task);
        if next.is_none() && !self.registered.get() {
            // The uncontended release.
            self.owner.set(None);
            return;
        }
        self.set_owner(next);
    }

    /// Changes the owner.
    ///
    /// As in Trio, a task that exits while holding the lock breaks it: its
    /// waiters, and every later `acquire`, get `Broken` instead of
    /// blocking forever. The owner is registered as a breaker of the lot
    /// only while someone waits (`register_owner`, called before a waiter
    /// parks, and here when the lock is handed to a waiter and others still
    /// wait), so the uncontended path pays nothing; an owner that exited
    /// unregistered is found out by the next `acquire` that would wait.
    fn set_owner(&self, owner: Option<Task>) {
        let old = self.owner.replace(owner);
        if self.registered.replace(false)
            && let Some(old) = old
        {
            let _ = remove_parking_lot_breaker(old, &self.lot);
        }
        if let Some(new) = owner
            && !self.lot.is_empty()
        {
            self.register_owner(new);
        }
    }

    /// Registers `owner` as a breaker of the lot, once; breaks the lot now
    /// if `owner` has exited already (nobody can release the lock).
    pub(crate) fn register_owner(&self, owner: Task) {
        if self.registered.get() {
            return;
        }
        if add_parking_lot_breaker(owner, &self.lot).is_ok() {
            self.registered.set(true);
        } else {
            let _ = self.lot.break_lot(Some(owner));
        }
    }

    fn statistics(&self) -> LockStatistics {
        LockStatistics { locked: self.owner.get().is_some(), owner: self.owner.get(), tasks_waiting: self.lot.len() }
    }
}

macro_rules! lock_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            inner: LockImpl,
        }

        impl $name {
            /// An unlocked lock.
            pub fn new() -> $name {
                $name::default()
            }

            /// Is it held by some task? Not a checkpoint.
            pub fn locked(&self) -> bool {
                self.inner.owner.get().is_some()
            }

            /// Takes the lock if it is free and nobody is queued for it.
            /// Not a checkpoint.
            ///
            /// # Errors
            /// [`Error::WouldBlock`] if it is held or others wait for it;
            /// [`Error::Runtime`] if this task already holds it or outside
            /// `trio::run`.
            pub fn try_acquire(&self) -> Result<()> {
                self.inner.try_acquire(current_task()?)
            }

            /// Waits for the lock and takes it. Waiters are served in FIFO
            /// order; a release hands the lock straight to the next waiter.
            ///
            /// # Checkpoint
            /// Always a checkpoint.
            /// # Cancellation
            /// Returns `Err(Error::Cancelled)` without the lock. If the lock
            /// was handed over at the moment of cancellation, `acquire`
            /// returns `Ok` (it holds the lock) and the cancellation is seen
            /// at the next checkpoint.
            /// # Errors
            /// [`Error::Runtime`] if this task already holds it.
            pub fn acquire(&self) -> LockAcquire<'_> {
                self.inner.acquire()
            }

            /// Releases the lock, handing it to the first waiter if any.
            /// Not a checkpoint.
            ///
            /// # Errors
            /// [`Error::Runtime`] if this task does not hold it.
            pub fn release(&self) -> Result<()> {
                self.inner.release()
            }

            /// Acquires the lock and returns a guard that releases it when
            /// dropped.
            ///
            /// # Checkpoint
            /// Always a checkpoint.
            /// # Cancellation
            /// As [`acquire`](Self::acquire).
            /// # Errors
            /// As [`acquire`](Self::acquire).
            pub async fn lock(&self) -> Result<LockGuard<'_>> {
                self.inner.acquire().await?;
                Ok(LockGuard { lock: &self.inner })
            }

            /// Takes the lock if it is free and nobody is queued for it, as
            /// [`try_acquire`](Self::try_acquire), and returns a guard that
            /// releases it when dropped. Not a checkpoint.
            ///
            /// # Errors
            /// As [`try_acquire`](Self::try_acquire).
            pub fn try_lock(&self) -> Result<LockGuard<'_>> {
                self.try_acquire()?;
                Ok(LockGuard { lock: &self.inner })
            }

            /// A snapshot: held, by whom, how many wait.
            pub fn statistics(&self) -> LockStatistics {
                self.inner.statistics()
            }
        }
    };
}

lock_type!(
    /// A mutual-exclusion lock owned by the task that acquired it. Fair:
    /// waiters get it in FIFO order, handed over directly on release.
    /// Releasing a lock the task does not hold is an error, not silence.
    Lock
);

lock_type!(
    /// A lock that guarantees strict FIFO hand-off (Trio's
    /// `StrictFifoLock`), for protocols whose correctness depends on it. In
    /// this runtime [`Lock`] is strictly FIFO too; the separate type states
    /// the requirement in the code that relies on it.
    StrictFifoLock
);

/// Holds a lock until dropped (see `Lock::lock`).
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a LockImpl,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Ok(me) = current_task() {
            self.lock.release_from(me);
        }
    }
}

impl LockImpl {
    /// The owner, for `Condition`.
    pub(crate) fn owner(&self) -> Option<Task> {
        self.owner.get()
    }

    /// The waiters' lot, for `Condition` (it reparks its waiters here).
    pub(crate) fn lot(&self) -> &ParkingLot {
        &self.lot
    }
}

impl Lock {
    pub(crate) fn inner(&self) -> &LockImpl {
        &self.inner
    }
}

/// The future of [`Lock::acquire`] and [`StrictFifoLock::acquire`].
///
/// One hand-written state machine: a lock that is free is taken in the same
/// runtime borrow that checks cancellation and reschedules the task (the
/// checkpoint every acquire is), and the second poll returns without
/// touching the runtime. Dropped after it took the lock but before it
/// returned, it releases the lock again; dropped while queued, it leaves
/// the queue (and passes on a lock handed to it meanwhile).
#[must_use = "futures do nothing unless awaited"]
pub struct LockAcquire<'a> {
    lock: &'a LockImpl,
    /// The acquiring task, known from the first poll on.
    me: Option<Task>,
    state: AcquireState<'a>,
}

enum AcquireState<'a> {
    Start,
    /// Took the lock and yielded: returns `Ok` next.
    Held,
    /// Cancelled on entry and yielded: reports it next.
    Cancelled,
    /// Waiting in the lock's queue for a hand-off.
    Parked(LotPark<'a, fn()>),
    Done,
}

/// What the first poll found.
enum Entry {
    /// Yield, then return: `true` when cancelled on entry.
    Yield(bool),
    Wait,
    Fail(Error),
}

impl std::fmt::Debug for LockAcquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            AcquireState::Start => "start",
            AcquireState::Held => "held",
            AcquireState::Cancelled => "cancelled",
            AcquireState::Parked(_) => "parked",
            AcquireState::Done => "done",
        };
        f.debug_struct("LockAcquire").field("state", &state).finish_non_exhaustive()
    }
}

impl Future for LockAcquire<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        match this.state {
            AcquireState::Start => {
                let lock = this.lock;
                // As Trio's: a cancel point first, then the attempt, and a
                // yield when it succeeded (or was cancelled on entry).
                let entry = runtime::with(|rt| {
                    let (key, generation) = rt.current_task();
                    let me = Task::from_parts(key, generation);
                    if rt.op_enter(cx.waker()) {
                        return (me, Entry::Yield(true));
                    }
                    let entry = match lock.try_acquire(me) {
                        Ok(()) => Entry::Yield(false),
                        Err(Error::WouldBlock) => Entry::Wait,
                        Err(e) => Entry::Fail(e),
                    };
                    if let Entry::Yield(_) = entry {
                        rt.op_yield(cx.waker());
                    }
                    (me, entry)
                });
                let (me, entry) = match entry {
                    Ok(x) => x,
                    Err(e) => {
                        this.state = AcquireState::Done;
                        return Poll::Ready(Err(e));
                    }
                };
                this.me = Some(me);
                match entry {
                    Entry::Yield(false) => {
                        this.state = AcquireState::Held;
                        Poll::Pending
                    }
                    Entry::Yield(true) => {
                        this.state = AcquireState::Cancelled;
                        Poll::Pending
                    }
                    Entry::Fail(e) => {
                        this.state = AcquireState::Done;
                        Poll::Ready(Err(e))
                    }
                    Entry::Wait => {
                        // We will wait for the owner: make sure its exit
                        // would break the lot (or break it now if it has
                        // exited already).
                        if let Some(owner) = lock.owner.get() {
                            lock.register_owner(owner);
                        }
                        this.state = AcquireState::Parked(lock.lot.park());
                        this.poll_parked(cx)
                    }
                }
            }
            AcquireState::Held => {
                this.state = AcquireState::Done;
                Poll::Ready(Ok(()))
            }
            AcquireState::Cancelled => {
                this.state = AcquireState::Done;
                Poll::Ready(Err(crate::runtime::cancelled_error()))
            }
            AcquireState::Parked(_) => this.poll_parked(cx),
            AcquireState::Done => Poll::Ready(Err(Error::Runtime("lock acquire polled after completion"))),
        }
    }
}

impl LockAcquire<'_> {
    fn poll_parked(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let AcquireState::Parked(park) = &mut self.state else {
            return Poll::Ready(Err(Error::Runtime("lock acquire polled after completion")));
        };
        let r = Pin::new(park).poll(cx);
        if r.is_ready() {
            // `release` handed the lock to us when it unparked us (`Ok`).
            self.state = AcquireState::Done;
        }
        r
    }
}

impl Drop for LockAcquire<'_> {
    fn drop(&mut self) {
        let Some(me) = self.me else { return };
        let lost = match &mut self.state {
            // Took it, but nobody will know: give it back.
            AcquireState::Held => true,
            // Handed the lock after we were woken but before we ran: pass
            // it on.
            AcquireState::Parked(park) => Pin::new(park).abandon(),
            _ => false,
        };
        if lost {
            self.lock.release_from(me);
        }
    }
}
