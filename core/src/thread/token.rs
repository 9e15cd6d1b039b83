//! `TrioToken`: the thread-safe handle to a run (Trio's entry queue).

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::runtime::{
    self,
    waker::{EntryKey, Shared},
};

/// A handle to a run that any thread may hold: it queues callbacks to run on
/// the run's thread ([`run_sync_soon`](TrioToken::run_sync_soon)) and is what
/// `from_thread` uses to reach the run. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct TrioToken {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for TrioToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrioToken").field("finished", &self.is_finished()).finish()
    }
}

impl PartialEq for TrioToken {
    fn eq(&self, other: &TrioToken) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for TrioToken {}

/// The token of the run on this thread. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_trio_token() -> Result<TrioToken> {
    runtime::with(|rt| TrioToken { shared: rt.shared.clone() })
}

impl TrioToken {
    /// Runs `f` on the run's thread soon, from any thread (including the
    /// run's own). Calls run in the order they were made, between scheduling
    /// passes, as part of the run loop: `f` must not block. A panic in `f` is
    /// a bug and ends the run with that panic. A call that was accepted
    /// (`Ok`) runs, even if the main task returns first: the run runs the
    /// accepted calls after it, then refuses new ones.
    ///
    /// # Errors
    /// [`Error::RunFinished`] if the run has finished (the call is not
    /// queued, and `f` is dropped).
    pub fn run_sync_soon(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.shared.push_entry(None, Box::new(f)) { Ok(()) } else { Err(Error::RunFinished) }
    }

    /// Like [`run_sync_soon`](TrioToken::run_sync_soon), but if a call with
    /// the same `key` is already queued (and has not started), this one is
    /// dropped: for "make sure this happens once soon" wakeups.
    ///
    /// # Errors
    /// [`Error::RunFinished`] if the run has finished.
    pub fn run_sync_soon_idempotent(&self, key: u64, f: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.shared.push_entry(Some(EntryKey::User(key)), Box::new(f)) { Ok(()) } else { Err(Error::RunFinished) }
    }

    /// [`run_sync_soon_idempotent`](TrioToken::run_sync_soon_idempotent)
    /// with a key of the runtime's own (never merged with a user's call).
    pub(crate) fn run_sync_soon_runtime(&self, key: u64, f: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.shared.push_entry(Some(EntryKey::Runtime(key)), Box::new(f)) { Ok(()) } else { Err(Error::RunFinished) }
    }

    /// Has the run finished?
    pub fn is_finished(&self) -> bool {
        self.shared.is_finished()
    }
}
