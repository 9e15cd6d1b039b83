//! `Event`: a flag that tasks can wait for.

use std::cell::Cell;

use super::ParkingLot;
use crate::error::Result;
use crate::lowlevel::checkpoint;

/// A one-shot flag: [`set`](Event::set) wakes every waiter, and once set it
/// stays set (there is no `clear`, as in Trio: make a new event instead).
#[derive(Debug, Default)]
pub struct Event {
    flag: Cell<bool>,
    lot: ParkingLot,
}

/// A snapshot of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStatistics {
    /// Tasks blocked in [`Event::wait`].
    pub tasks_waiting: usize,
}

impl Event {
    /// An event that is not set.
    pub fn new() -> Event {
        Event::default()
    }

    /// Is it set? Not a checkpoint.
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }

    /// Sets the flag and wakes every waiter. Idempotent. Not a checkpoint.
    pub fn set(&self) {
        if !self.flag.replace(true) {
            self.lot.unpark_all();
        }
    }

    /// Waits until the event is set (returns at once, after a checkpoint, if
    /// it already is).
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; the event is unaffected.
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
    pub async fn wait(&self) -> Result<()> {
        if self.is_set() { checkpoint().await } else { self.lot.park().await }
    }

    /// A snapshot of the waiters.
    pub fn statistics(&self) -> EventStatistics {
        EventStatistics { tasks_waiting: self.lot.len() }
    }
}
