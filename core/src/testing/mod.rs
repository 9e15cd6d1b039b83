//! Helpers for testing code that uses `trio`: a virtual clock, a way to wait
//! until everything is blocked, and checkpoint assertions.

mod check_streams;
mod memory_streams;
mod mock_clock;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

pub use check_streams::*;
pub use memory_streams::*;
pub use mock_clock::MockClock;

use crate::error::Result;
use crate::lowlevel::{Abort, park};
use crate::runtime;

/// Waits until every other task is blocked and has been for `cushion` of real
/// time (no task ready to run, no I/O or wakeup arrived meanwhile).
/// Waiters with smaller cushions wake first; with a [`MockClock`] that
/// autojumps, these waiters are woken before the clock jumps.
///
/// # Checkpoint
/// Always a checkpoint (it parks).
/// # Cancellation
/// Returns `Err(Error::Cancelled)`; the waiter is removed.
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
pub async fn wait_all_tasks_blocked(cushion: Duration) -> Result<()> {
    let seq = runtime::with(|rt| {
        rt.seq += 1;
        rt.seq
    })?;
    park(
        |token| {
            let key = token_key(token);
            let _ = runtime::with(|rt| rt.idle_waiters.insert((cushion, seq), key));
        },
        move || {
            let _ = runtime::with(|rt| rt.idle_waiters.remove(&(cushion, seq)));
            Abort::Succeeded
        },
    )
    .await
}

/// How many of this run's [`to_thread`](crate::to_thread) calls have a
/// worker thread still running the call's function (Trio's
/// `trio.testing.active_thread_count`). A call counts from the moment its
/// thread is handed the function (a call still waiting for its limiter
/// does not) until the function has returned and the run has been told.
/// Abandoned calls (`abandon_on_cancel`, or a dropped call) count until
/// their thread finishes, although their task has moved on; this differs
/// from Trio, whose count drops as soon as the call returns. Not a
/// checkpoint.
///
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
pub fn active_thread_count() -> Result<usize> {
    crate::thread::to_thread::active_thread_count()
}

/// Waits until [`active_thread_count`] is 0: every thread this run's
/// [`to_thread`](crate::to_thread) calls started, abandoned ones included,
/// has finished (Trio's `trio.testing.wait_all_threads_completed`). Returns
/// at once (after the checkpoint) if there are none. To wait until
/// everything has settled, alternate it with [`wait_all_tasks_blocked`]
/// until the count stays 0.
///
/// # Checkpoint
/// Always a checkpoint.
/// # Cancellation
/// Returns `Err(Error::Cancelled)`; nothing else to undo.
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
pub async fn wait_all_threads_completed() -> Result<()> {
    crate::thread::to_thread::wait_all_threads_completed().await
}

fn token_key(token: crate::lowlevel::WakeToken) -> usize {
    crate::lowlevel::token_key(token)
}

/// Which kinds of yield a future performed, for [`assert_checkpoints`].
#[derive(Debug, Clone, Copy)]
struct Points {
    schedule: u32,
    cancel: u32,
}

fn points() -> Option<Points> {
    runtime::with(|rt| {
        let t = &rt.tasks[rt.current_node()];
        Points { schedule: t.schedule_points, cancel: t.cancel_points }
    })
    .ok()
}

pin_project! {
    /// The future of [`assert_checkpoints`] and [`assert_no_checkpoints`].
    #[must_use = "futures do nothing unless awaited"]
    #[derive(Debug)]
    pub struct AssertCheckpoints<F> {
        #[pin]
        inner: F,
        expect: bool,
        schedule: u32,
        cancel: u32,
        started: bool,
    }
}

impl<F: Future> Future for AssertCheckpoints<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let before = points();
        if let Some(p) = before
            && !*this.started
        {
            *this.started = true;
            *this.schedule = p.schedule;
            *this.cancel = p.cancel;
        }
        // Count what happens inside across polls: points accrued by this
        // poll of the inner future are added to the running totals.
        let out = this.inner.poll(cx);
        if let Poll::Ready(out) = out {
            let after = points().unwrap_or(Points { schedule: 0, cancel: 0 });
            let yielded = after.schedule != *this.schedule;
            let checked = after.cancel != *this.cancel;
            let did = yielded && checked;
            let did_any = yielded || checked;
            if *this.expect {
                assert!(did, "assert_checkpoints: the block did not execute a checkpoint");
            } else {
                assert!(!did_any, "assert_no_checkpoints: the block executed a checkpoint");
            }
            return Poll::Ready(out);
        }
        Poll::Pending
    }
}

/// Runs `fut` and panics (it is a test assertion) unless it executed at least
/// one full checkpoint (a yield and a cancellation check) in this task.
pub fn assert_checkpoints<F: Future>(fut: F) -> AssertCheckpoints<F> {
    AssertCheckpoints { inner: fut, expect: true, schedule: 0, cancel: 0, started: false }
}

/// Runs `fut` and panics unless it executed no checkpoint at all in this task.
pub fn assert_no_checkpoints<F: Future>(fut: F) -> AssertCheckpoints<F> {
    AssertCheckpoints { inner: fut, expect: false, schedule: 0, cancel: 0, started: false }
}
