//! `Condition`: wait for a notification while holding a lock.

use super::{Lock, ParkingLot};
use crate::CancelScope;
use crate::error::{Error, Result};
use crate::lowlevel::{Task, current_task};

/// A condition variable (Trio's `Condition`): a [`Lock`] plus a queue of
/// tasks waiting to be notified. `notify` moves waiters onto the lock's
/// queue without waking them, so each wakes up holding the lock, in order.
#[derive(Debug, Default)]
pub struct Condition {
    lock: Lock,
    lot: ParkingLot,
}

/// A snapshot of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConditionStatistics {
    /// Tasks waiting to be notified.
    pub tasks_waiting: usize,
    /// The state of the underlying lock.
    pub lock_statistics: super::LockStatistics,
}

impl Condition {
    /// A condition with its own lock.
    pub fn new() -> Condition {
        Condition::default()
    }

    /// The underlying lock: acquire it before `wait` or `notify`.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Acquires the underlying lock (see [`Lock::acquire`]).
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` without the lock.
    /// # Errors
    /// As [`Lock::acquire`].
    pub async fn acquire(&self) -> Result<()> {
        self.lock.acquire().await
    }

    /// Releases the underlying lock. Not a checkpoint.
    ///
    /// # Errors
    /// As [`Lock::release`].
    pub fn release(&self) -> Result<()> {
        self.lock.release()
    }

    fn check_owner(&self) -> Result<Task> {
        let me = current_task()?;
        if self.lock.inner().owner() != Some(me) {
            return Err(Error::Runtime("a Condition's lock must be held to wait or notify"));
        }
        Ok(me)
    }

    /// Releases the lock, waits to be notified, and re-acquires the lock
    /// before returning, also when cancelled.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`, holding the lock again (re-acquired
    /// inside a shield).
    /// # Errors
    /// [`Error::Runtime`] if the lock is not held by this task.
    pub async fn wait(&self) -> Result<()> {
        let me = self.check_owner()?;
        self.lock.release()?;
        // Parked on our lot; `notify` moves us onto the lock's lot, whose
        // release hands us the lock as it wakes us.
        let lock = self.lock.inner();
        let r = self.lot.park_handoff(0, || lock.release_from(me)).await;
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                CancelScope::shielded().run(lock.acquire()).await?;
                Err(e)
            }
        }
    }

    /// Wakes up to `n` waiters (each returns holding the lock, in turn).
    /// Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] if the lock is not held by this task.
    pub fn notify(&self, n: usize) -> Result<usize> {
        let me = self.check_owner()?;
        let moved = self.lot.repark(self.lock.inner().lot(), n);
        if moved > 0 {
            // They now wait for the lock: its owner's exit must break it.
            self.lock.inner().register_owner(me);
        }
        Ok(moved)
    }

    /// Wakes every waiter. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] if the lock is not held by this task.
    pub fn notify_all(&self) -> Result<usize> {
        self.notify(usize::MAX)
    }

    /// A snapshot.
    pub fn statistics(&self) -> ConditionStatistics {
        ConditionStatistics { tasks_waiting: self.lot.len(), lock_statistics: self.lock.statistics() }
    }
}
