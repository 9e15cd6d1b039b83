//! Synchronization primitives, all built on [`ParkingLot`] and the public
//! low-level API (Trio's `_sync.py`).
//!
//! Signalling is synchronous (`Event::set`, `Lock::release`, ...), waiting is
//! async and always a checkpoint. Non-blocking variants (`try_*`) fail with
//! [`Error::WouldBlock`](crate::Error::WouldBlock). Every primitive hands
//! ownership directly to the task it wakes (a woken waiter never has to race
//! for what it waited for), which makes them fair (FIFO) and means a waiter
//! cancelled at the moment it is woken either gets it or does not, never
//! loses it.

mod condition;
mod event;
mod limiter;
mod lock;
mod parking_lot;
mod semaphore;

pub use condition::{Condition, ConditionStatistics};
pub use event::{Event, EventStatistics};
pub use limiter::{Borrower, CapacityLimiter, CapacityLimiterStatistics};
pub use lock::{Lock, LockAcquire, LockGuard, LockStatistics, StrictFifoLock};
pub use parking_lot::{LotPark, ParkingLot, ParkingLotStatistics, Unparked};
pub use semaphore::{Semaphore, SemaphoreStatistics};
