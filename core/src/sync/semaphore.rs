//! `Semaphore`: a counter of permits.

use std::cell::Cell;

use super::ParkingLot;
use crate::error::{Error, Result};
use std::ops::ControlFlow;

use crate::lowlevel::checkpointed;

/// A counting semaphore: `acquire` takes a permit (waiting while there is
/// none), `release` returns one. Permits are not tied to tasks. With a
/// maximum, releasing beyond it is an error (it catches double releases).
/// Fair: waiters get permits in FIFO order, handed over directly.
#[derive(Debug)]
pub struct Semaphore {
    value: Cell<usize>,
    max: Option<usize>,
    lot: ParkingLot,
}

/// A snapshot of a [`Semaphore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreStatistics {
    /// Permits available now.
    pub value: usize,
    /// The maximum, if one was set.
    pub max_value: Option<usize>,
    /// Tasks blocked in `acquire`.
    pub tasks_waiting: usize,
}

impl Semaphore {
    /// A semaphore with `initial` permits and no maximum.
    pub fn new(initial: usize) -> Semaphore {
        Semaphore { value: Cell::new(initial), max: None, lot: ParkingLot::new() }
    }

    /// A semaphore with `initial` permits that can never hold more than
    /// `max`.
    ///
    /// # Errors
    /// [`Error::Runtime`] if `initial > max`.
    pub fn with_max(initial: usize, max: usize) -> Result<Semaphore> {
        if initial > max {
            return Err(Error::Runtime("a Semaphore's initial value cannot exceed its maximum"));
        }
        Ok(Semaphore { value: Cell::new(initial), max: Some(max), lot: ParkingLot::new() })
    }

    /// Permits available now. Not a checkpoint.
    pub fn value(&self) -> usize {
        self.value.get()
    }

    /// The maximum, if any.
    pub fn max_value(&self) -> Option<usize> {
        self.max
    }

    /// Takes a permit if one is available. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::WouldBlock`] if none is.
    pub fn try_acquire(&self) -> Result<()> {
        match self.value.get() {
            0 => Err(Error::WouldBlock),
            v => {
                self.value.set(v - 1);
                Ok(())
            }
        }
    }

    /// Waits for a permit and takes it.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)` without a permit. A permit handed over
    /// at the moment of cancellation is kept (`Ok`), or given back if this
    /// future is dropped before it returns.
    /// # Errors
    /// [`Error::Runtime`] outside `trio::run`.
    pub async fn acquire(&self) -> Result<()> {
        let now = checkpointed(|| match self.try_acquire() {
            Ok(()) => ControlFlow::Break(()),
            Err(_) => ControlFlow::Continue(()),
        })
        .await?;
        if now.is_break() {
            return Ok(());
        }
        self.lot.park_handoff(0, || self.give_back()).await
    }

    /// Returns a permit: to the first waiter if there is one, else to the
    /// pool. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] if that would exceed the maximum, or, without a
    /// maximum, if the value is already `usize::MAX` (the value never wraps
    /// around to 0); nothing changes then.
    pub fn release(&self) -> Result<()> {
        if self.lot.is_empty() {
            if self.max.is_some_and(|m| self.value.get() >= m) {
                return Err(Error::Runtime("Semaphore released too many times"));
            }
            if self.value.get() == usize::MAX {
                return Err(Error::Runtime("Semaphore released too many times: its value is already usize::MAX"));
            }
        }
        self.give_back();
        Ok(())
    }

    fn give_back(&self) {
        if self.lot.unpark_one().is_none() {
            // Saturating: `release` refuses to pass `usize::MAX`; only a
            // handed-over permit given back by a cancelled waiter could meet
            // a full value, and a count that high cannot be told apart.
            self.value.set(self.value.get().saturating_add(1));
        }
    }

    /// A snapshot.
    pub fn statistics(&self) -> SemaphoreStatistics {
        SemaphoreStatistics { value: self.value.get(), max_value: self.max, tasks_waiting: self.lot.len() }
    }
}
