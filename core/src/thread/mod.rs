//! Threads: running blocking code on worker threads (`to_thread`), calling
//! back into the run from them (`from_thread`), and the run's thread-safe
//! token (`TrioToken`).
//!
//! A `to_thread::run_sync` call is a host task waiting on a worker thread.
//! While it waits, the host also serves the worker's `from_thread` requests,
//! in its own task and cancel scopes (as Trio does since 0.23), so a
//! `from_thread::run` from a worker is cancelled with the task that started
//! the worker. Completion and requests reach the host through
//! `TrioToken::run_sync_soon`, which unparks it on the run's thread.

pub mod from_thread;
pub(crate) mod pool;
pub mod to_thread;
mod token;

pub use token::{TrioToken, current_trio_token};
