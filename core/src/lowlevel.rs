//! The low-level API: the one park primitive, checkpoints, and introspection.
//!
//! Everything that blocks in `trio` goes through [`park`]: a future that
//! registers itself somewhere (a lot, a timer, an I/O waiter table), sleeps
//! until [`unpark`] or cancellation, and on cancellation runs an abort
//! callback that either removes it (so no later wakeup can arrive) or reports
//! that a wakeup is already committed, in which case the waiter stays parked
//! for it. Higher layers (`sync`, channels, networking) use only this module.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::{Error, Result};
use crate::runtime::{self, NONE, NodeKind, ParkState};

pub use crate::driver::RawSource;
pub use crate::io::{notify_closing, wait_readable, wait_writable};
pub use crate::sync::{LotPark, ParkingLot, ParkingLotStatistics, Unparked};
pub use crate::thread::{TrioToken, current_trio_token};

/// What an abort callback reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// The waiter was removed from wherever it was registered: no wakeup will
    /// come, and the park returns `Err(Cancelled)`.
    Succeeded,
    /// A wakeup is already on its way (for example a lock was handed over):
    /// the park keeps waiting for it and returns `Ok(())`.
    Failed,
}

/// Names one parked waiter, for [`unpark`]. Cheap to copy; stale tokens are
/// detected (the waiter's record carries a generation). Only meaningful on
/// the thread of the run that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WakeToken {
    key: usize,
    generation: u32,
    task: Task,
    _not_send: PhantomData<*const ()>,
}

impl WakeToken {
    /// The task that parked (the same as `current_task()` inside the park).
    pub fn task(&self) -> Task {
        self.task
    }
}

/// Reschedules the waiter named by `token`: its [`park`] returns `Ok(())`.
/// Returns false if that waiter is no longer waiting (already unparked,
/// cancelled, dropped) or if called outside its run. Not a checkpoint.
pub fn unpark(token: WakeToken) -> bool {
    runtime::with(|rt| match rt.parks.get(token.key) {
        Some(p) if p.generation == token.generation => rt.unpark_key(token.key),
        _ => false,
    })
    .unwrap_or(false)
}

/// Parks the current task until [`unpark`] or cancellation.
///
/// On its first poll the future registers a waiter and passes its
/// [`WakeToken`] to `register` (store it where the waker-upper will find it).
/// If the enclosing scope is (or becomes) cancelled, `abort` is called: on
/// [`Abort::Succeeded`] the park returns `Err(Cancelled)`, on
/// [`Abort::Failed`] it keeps waiting for the committed wakeup. `abort` is
/// also called if the future is dropped while still waiting.
///
/// # Checkpoint
/// Always a checkpoint: it checks cancellation and always yields, even when
/// cancelled on entry.
/// # Cancellation
/// Returns `Err(Error::Cancelled)` after `abort` succeeded: the waiter was
/// removed and no wakeup was consumed.
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn park<R, A>(register: R, abort: A) -> Park<R, A>
where
    R: FnOnce(WakeToken),
    A: FnMut() -> Abort,
{
    Park { register: Some(register), abort, key: NONE, generation: 0, finished: false }
}

pin_project! {
    /// The future returned by [`park`]. Dropping it while it waits runs the
    /// abort callback and forgets the waiter.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Park<R, A> where A: FnMut() -> Abort {
        register: Option<R>,
        abort: A,
        key: usize,
        generation: u32,
        finished: bool,
    }

    impl<R, A> PinnedDrop for Park<R, A> where A: FnMut() -> Abort {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.key == NONE || *this.finished {
                return;
            }
            let key = *this.key;
            let state = runtime::with(|rt| rt.remove_park(key).state);
            if let Ok(ParkState::Waiting | ParkState::CancelPending) = state {
                (this.abort)();
            }
        }
    }
}

impl<R, A> std::fmt::Debug for Park<R, A>
where
    A: FnMut() -> Abort,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Park").field("key", &self.key).field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl<R, A> Future for Park<R, A>
where
    R: FnOnce(WakeToken),
    A: FnMut() -> Abort,
{
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.project();
        if *this.finished {
            return Poll::Ready(Err(Error::Runtime("park polled after completion")));
        }
        if *this.key == NONE {
            let entered = runtime::with(|rt| {
                rt.count_schedule_point();
                rt.count_cancel_point();
                let (key, generation) = rt.insert_park(cx.waker().clone());
                let id = rt.tasks[rt.current_node].identity as usize;
                let task = Task { key: id, generation: rt.tasks[id].generation };
                (key, generation, task, rt.current_cancelled())
            });
            let (key, generation, task, cancelled) = match entered {
                Ok(x) => x,
                Err(e) => {
                    *this.finished = true;
                    return Poll::Ready(Err(e));
                }
            };
            *this.key = key;
            *this.generation = generation;
            if let Some(register) = this.register.take() {
                register(WakeToken { key, generation, task, _not_send: PhantomData });
            }
            if cancelled && (this.abort)() == Abort::Succeeded {
                // Cancelled on entry: still yield once, then report it.
                let _ = runtime::with(|rt| {
                    if let Some(p) = rt.parks.get_mut(key) {
                        p.state = ParkState::Aborted;
                    }
                });
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let key = *this.key;
        let state = runtime::with(|rt| rt.repoll_park(key, cx.waker()));
        let state = match state {
            Ok(Some(s)) => s,
            Ok(None) => {
                *this.finished = true;
                return Poll::Ready(Err(Error::Runtime("parked waiter vanished")));
            }
            Err(e) => {
                *this.finished = true;
                return Poll::Ready(Err(e));
            }
        };
        match state {
            ParkState::Waiting => Poll::Pending,
            ParkState::Woken | ParkState::Aborted => {
                *this.finished = true;
                Poll::Ready(if state == ParkState::Woken { Ok(()) } else { Err(Error::Cancelled) })
            }
            ParkState::CancelPending => match (this.abort)() {
                Abort::Succeeded => {
                    *this.finished = true;
                    let _ = runtime::with(|rt| rt.remove_park(key));
                    Poll::Ready(Err(Error::Cancelled))
                }
                Abort::Failed => {
                    let _ = runtime::with(|rt| {
                        if let Some(p) = rt.parks.get_mut(key)
                            && p.state == ParkState::CancelPending
                        {
                            p.state = ParkState::Waiting;
                        }
                        // An unpark that raced in during abort still counts.
                        rt.parks.get(key).map(|p| p.state)
                    })
                    .ok()
                    .flatten()
                    .filter(|s| *s == ParkState::Woken)
                    .map(|_| cx.waker().wake_by_ref());
                    Poll::Pending
                }
            },
        }
    }
}

/// A yield to the scheduler followed by a cancellation check.
///
/// # Checkpoint
/// Always a checkpoint: it yields (other tasks, timers and I/O run) and then
/// checks cancellation.
/// # Cancellation
/// Returns `Err(Error::Cancelled)` if the enclosing scope is cancelled; there
/// is nothing else to undo.
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn checkpoint() -> Checkpoint {
    Checkpoint { yielded: false, check_cancel: true }
}

/// A yield that does not check cancellation (Trio's
/// `cancel_shielded_checkpoint`): for code that must yield but cannot fail.
///
/// # Checkpoint
/// A schedule point only: it yields but never returns `Cancelled`.
/// # Cancellation
/// Not affected by cancellation.
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn cancel_shielded_checkpoint() -> Checkpoint {
    Checkpoint { yielded: false, check_cancel: false }
}

/// The future of [`checkpoint`] and [`cancel_shielded_checkpoint`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Checkpoint {
    yielded: bool,
    check_cancel: bool,
}

impl Future for Checkpoint {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !self.yielded {
            self.yielded = true;
            // One borrow for both: count the yield and reschedule ourselves.
            if let Err(e) = runtime::with(|rt| {
                rt.count_schedule_point();
                rt.wake_waker(cx.waker());
            }) {
                return Poll::Ready(Err(e));
            }
            return Poll::Pending;
        }
        if !self.check_cancel {
            return Poll::Ready(Ok(()));
        }
        match runtime::with(|rt| {
            rt.count_cancel_point();
            rt.current_cancelled()
        }) {
            Ok(true) => Poll::Ready(Err(Error::Cancelled)),
            Ok(false) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Fails with `Cancelled` if the enclosing scope is cancelled; otherwise
/// returns at once without yielding.
///
/// # Checkpoint
/// A cancel point, and a schedule point only when it fails (it yields before
/// reporting the cancellation, like Trio).
/// # Cancellation
/// Returns `Err(Error::Cancelled)` when cancelled; nothing else happened.
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub async fn checkpoint_if_cancelled() -> Result<()> {
    let cancelled = runtime::with(|rt| {
        rt.count_cancel_point();
        rt.current_cancelled()
    })?;
    if cancelled {
        checkpoint().await?;
        // Still cancelled (the check after the yield says so), unless a
        // shield went up meanwhile.
    }
    Ok(())
}

/// A task of the current run, for introspection. Cheap to copy; methods on a
/// task that has finished return `None` or empty lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Task {
    key: usize,
    generation: u32,
}

/// A nursery of the current run, for introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NurseryRef {
    key: usize,
    generation: u32,
}

/// The task running now. A nursery body runs as part of the task that opened
/// the nursery, so inside a body this is that task. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_task() -> Result<Task> {
    runtime::with(|rt| {
        let id = rt.tasks[rt.current_node].identity as usize;
        Task { key: id, generation: rt.tasks[id].generation }
    })
}

/// The root task (the future given to `trio::run`). Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_root_task() -> Result<Task> {
    runtime::with(|rt| Task { key: rt.root, generation: rt.tasks[rt.root].generation })
}

impl Task {
    pub(crate) fn from_parts(key: usize, generation: u32) -> Task {
        Task { key, generation }
    }

    fn with<R>(&self, f: impl FnOnce(&runtime::Runtime, &runtime::TaskRec) -> R) -> Option<R> {
        runtime::with(|rt| match rt.tasks.get(self.key) {
            Some(t) if t.generation == self.generation => Some(f(rt, t)),
            _ => None,
        })
        .ok()
        .flatten()
    }

    /// The task's name (given to `spawn_named`, or the spawned future's type).
    pub fn name(&self) -> Option<String> {
        self.with(|_, t| t.name.to_string())
    }

    /// The nursery this task is a child of (`None` for the root task).
    pub fn parent_nursery(&self) -> Option<NurseryRef> {
        self.with(|rt, t| match t.kind {
            NodeKind::Child { nursery, .. } => {
                let nursery = nursery as usize;
                Some(NurseryRef { key: nursery, generation: rt.nurseries[nursery].generation })
            }
            _ => None,
        })
        .flatten()
    }

    /// The nurseries this task has open, oldest first.
    pub fn child_nurseries(&self) -> Vec<NurseryRef> {
        let me = self.key;
        self.with(|rt, _| {
            let mut v: Vec<NurseryRef> = rt
                .nurseries
                .iter()
                .filter(|(_, n)| n.parent_task == me)
                .map(|(k, n)| NurseryRef { key: k, generation: n.generation })
                .collect();
            v.sort_by_key(|n| n.generation);
            v
        })
        .unwrap_or_default()
    }

    /// Is the task still alive?
    pub fn is_alive(&self) -> bool {
        self.with(|_, _| ()).is_some()
    }
}

impl NurseryRef {
    fn with<R>(&self, f: impl FnOnce(&runtime::Runtime, &runtime::NurseryRec) -> R) -> Option<R> {
        runtime::with(|rt| match rt.nurseries.get(self.key) {
            Some(n) if n.generation == self.generation => Some(f(rt, n)),
            _ => None,
        })
        .ok()
        .flatten()
    }

    /// The task that opened the nursery.
    pub fn parent_task(&self) -> Option<Task> {
        self.with(|rt, n| Task { key: n.parent_task, generation: rt.tasks[n.parent_task].generation })
    }

    /// The nursery's running children, in spawn order.
    pub fn child_tasks(&self) -> Vec<Task> {
        let me = self.key;
        self.with(|rt, _| {
            let mut v: Vec<Task> = rt
                .tasks
                .iter()
                .filter(|(_, t)| matches!(t.kind, NodeKind::Child { nursery, .. } if nursery as usize == me))
                .map(|(k, t)| Task { key: k, generation: t.generation })
                .collect();
            v.sort_by_key(|t| t.generation);
            v
        })
        .unwrap_or_default()
    }
}

/// Used by `spawn` for a default task name.
pub(crate) fn type_name_of<F>() -> Cow<'static, str> {
    Cow::Borrowed(std::any::type_name::<F>())
}

/// The park record a token names (crate-internal registries store it).
pub(crate) fn token_key(token: WakeToken) -> usize {
    token.key
}

/// The shape of a checkpointed operation (Trio's `checkpoint_if_cancelled`,
/// then the operation, then `cancel_shielded_checkpoint` if it completed),
/// fused into one future for the hot paths of the primitives.
///
/// `op` runs once, after the cancellation check. `Break(v)`: it completed;
/// the task yields once and the future returns `Ok(Break(v))`.
/// `Continue(w)`: it would block; the future returns `Ok(Continue(w))` at
/// once, without yielding, so the caller can park.
pub(crate) fn checkpointed<T, W, F>(op: F) -> Checkpointed<T, F>
where
    F: FnOnce() -> std::ops::ControlFlow<T, W>,
{
    Checkpointed { op: Some(op), done: None }
}

pin_project! {
    /// The future of [`checkpointed`].
    pub(crate) struct Checkpointed<T, F> {
        op: Option<F>,
        done: Option<Result<T>>,
    }
}

impl<T, W, F> Future for Checkpointed<T, F>
where
    F: FnOnce() -> std::ops::ControlFlow<T, W>,
{
    type Output = Result<std::ops::ControlFlow<T, W>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        use std::ops::ControlFlow;
        let this = self.project();
        if let Some(done) = this.done.take() {
            return Poll::Ready(done.map(ControlFlow::Break));
        }
        let Some(op) = this.op.take() else {
            return Poll::Ready(Err(Error::Runtime("checkpointed operation polled after completion")));
        };
        let cancelled = match runtime::with(|rt| {
            rt.count_cancel_point();
            rt.current_cancelled()
        }) {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let out = if cancelled {
            Err(Error::Cancelled)
        } else {
            match op() {
                ControlFlow::Continue(w) => return Poll::Ready(Ok(ControlFlow::Continue(w))),
                ControlFlow::Break(v) => Ok(v),
            }
        };
        // Completed (or cancelled): yield once before reporting it.
        *this.done = Some(out);
        let _ = runtime::with(|rt| {
            rt.count_schedule_point();
            rt.wake_waker(cx.waker());
        });
        Poll::Pending
    }
}
