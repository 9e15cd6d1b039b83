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
/// As in Trio, `abort` runs inside the cancellation itself: when
/// [`CancelScope::cancel`](crate::CancelScope::cancel) returns (or a
/// deadline fires, or Ctrl-C arrives), the abort callback of every waiter
/// in the scope has already run. That is why it must be `'static`: the run
/// keeps it while the task waits and calls it from wherever the cancel
/// came. Share state with it through `Rc`/`Cell` (or call [`unpark`] with
/// the token, which is `Copy`). A callback that captures nothing is
/// zero-sized and costs no allocation; one that captures state is boxed
/// once per park.
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
    A: FnMut() -> Abort + 'static,
{
    let mut abort = abort;
    park_keyed(register, move |_| abort())
}

/// [`park`] whose abort callback is given the key of the waiter's record
/// (what `register` saw in its token), for the crate's own registries.
pub(crate) fn park_keyed<R, A>(register: R, abort: impl FnMut(usize) -> Abort + 'static) -> Park<R, A>
where
    R: FnOnce(WakeToken),
{
    Park {
        register: Some(register),
        abort: Some(Box::new(abort)),
        key: NONE,
        generation: 0,
        finished: false,
        _abort: PhantomData,
    }
}

pin_project! {
    /// The future returned by [`park`]. Dropping it while it waits runs the
    /// abort callback and forgets the waiter.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Park<R, A> {
        register: Option<R>,
        // Moved into the waiter's record on the first poll.
        abort: Option<runtime::AbortFn>,
        key: usize,
        generation: u32,
        finished: bool,
        _abort: PhantomData<fn() -> A>,
    }

    impl<R, A> PinnedDrop for Park<R, A> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.key == NONE || *this.finished {
                return;
            }
            let key = *this.key;
            let rec = runtime::with(|rt| rt.parks.contains(key).then(|| rt.remove_park(key)));
            if let Ok(Some(rec)) = rec
                && matches!(rec.state, ParkState::Waiting | ParkState::CancelPending)
                && let Some(mut abort) = rec.abort
            {
                abort(key);
            }
        }
    }
}

impl<R, A> std::fmt::Debug for Park<R, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Park").field("key", &self.key).field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl<R, A> Future for Park<R, A>
where
    R: FnOnce(WakeToken),
{
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.project();
        if *this.finished {
            return Poll::Ready(Err(Error::Runtime("park polled after completion")));
        }
        if *this.key == NONE {
            let entered = runtime::with(|rt| {
                // The park core's park (see `runtime/park.rs`); the
                // cancellation check comes after `register`, which must
                // see the token either way.
                let key = rt.op_park(cx.waker(), None);
                rt.count_cancel_point();
                let generation = rt.parks[key].generation;
                let (id, id_generation) = rt.current_task();
                let task = Task { key: id, generation: id_generation };
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
            let mut abort = this.abort.take();
            let aborted = cancelled && abort.as_mut().is_some_and(|f| f(key) == Abort::Succeeded);
            let _ = runtime::with(|rt| {
                if let Some(p) = rt.parks.get_mut(key) {
                    p.abort = abort;
                    if aborted {
                        // Cancelled on entry: still yield once, then report it.
                        p.state = ParkState::Aborted;
                    }
                }
            });
            if aborted {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
        let key = *this.key;
        let mut state = match runtime::with(|rt| rt.repoll_park(key, cx.waker())) {
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
        if state == ParkState::CancelPending {
            // The cancellation's own abort pass has not reached this waiter
            // yet: run its callback now.
            let generation = *this.generation;
            if let Ok(Some(mut f)) = runtime::with(|rt| rt.parks.get_mut(key).and_then(|p| p.abort.take())) {
                let outcome = f(key);
                let _ = runtime::with(|rt| rt.finish_abort(key, generation, f, outcome));
            }
            state = match runtime::with(|rt| rt.repoll_park(key, cx.waker())) {
                Ok(Some(s)) => s,
                Ok(None) => ParkState::Aborted,
                Err(e) => {
                    *this.finished = true;
                    return Poll::Ready(Err(e));
                }
            };
        }
        match state {
            ParkState::Waiting | ParkState::CancelPending => Poll::Pending,
            ParkState::Woken => {
                *this.finished = true;
                Poll::Ready(Ok(()))
            }
            ParkState::Aborted => {
                *this.finished = true;
                Poll::Ready(Err(runtime::cancelled_error()))
            }
            // Only waiters in a lot are broken; a bare park never is.
            ParkState::Broken => {
                *this.finished = true;
                Poll::Ready(Err(Error::Broken))
            }
        }
    }
}

/// Registers `task` as a breaker of `lot` (Trio's
/// `trio.lowlevel.add_parking_lot_breaker`): when the task exits, however
/// it exits, it breaks the lot ([`ParkingLot::break_lot`]), so the tasks
/// parked there fail with [`Error::Broken`] instead of waiting forever for
/// something the exited task would have done. A task can be registered for
/// the same lot several times; each registration needs its own
/// [`remove_parking_lot_breaker`]. [`Lock`](crate::sync::Lock) uses this for
/// its owner. Not a checkpoint.
///
/// # Errors
/// [`Error::Broken`] if `task` has exited already; [`Error::Runtime`]
/// outside `trio::run`.
pub fn add_parking_lot_breaker(task: Task, lot: &ParkingLot) -> Result<()> {
    runtime::with(|rt| {
        if rt.tasks.get(task.key).is_none_or(|t| t.generation != task.generation) {
            return Err(Error::Broken);
        }
        let entry = rt.lot_breakers.entry(task.key).or_insert_with(|| (task.generation, Vec::new()));
        if entry.0 != task.generation {
            // A stale record of an earlier task with the same key.
            *entry = (task.generation, Vec::new());
        }
        entry.1.push(lot.core().clone());
        Ok(())
    })?
}

/// Undoes one [`add_parking_lot_breaker`] of `task` for `lot` (Trio's
/// `remove_parking_lot_breaker`). Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] if `task` is not registered as a breaker of `lot`,
/// or outside `trio::run`.
pub fn remove_parking_lot_breaker(task: Task, lot: &ParkingLot) -> Result<()> {
    const NOT_REGISTERED: &str = "attempted to remove a task as breaker for a lot it is not registered for";
    runtime::with(|rt| {
        let Some((generation, lots)) = rt.lot_breakers.get_mut(&task.key) else {
            return Err(Error::Runtime(NOT_REGISTERED));
        };
        if *generation != task.generation {
            return Err(Error::Runtime(NOT_REGISTERED));
        }
        let Some(i) = lots.iter().position(|l| std::rc::Rc::ptr_eq(l, lot.core())) else {
            return Err(Error::Runtime(NOT_REGISTERED));
        };
        // The (possibly empty) entry stays until the task exits, so that a
        // lock taken and released in a loop does not allocate each time.
        lots.swap_remove(i);
        Ok(())
    })?
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
            if let Err(e) = runtime::with(|rt| rt.op_yield(cx.waker())) {
                return Poll::Ready(Err(e));
            }
            return Poll::Pending;
        }
        if !self.check_cancel {
            return Poll::Ready(Ok(()));
        }
        match runtime::with(|rt| {
            rt.count_cancel_point();
            rt.current_cancelled().then(|| rt.cancelled_error())
        }) {
            Ok(Some(e)) => Poll::Ready(Err(e)),
            Ok(None) => Poll::Ready(Ok(())),
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

pub use crate::driver::DriverInfo;

/// The I/O driver this run got (see [`Driver`](crate::Driver)): epoll or
/// io_uring, and after [`Driver::Auto`](crate::Driver::Auto) fell back to
/// epoll, why.
///
/// # Errors
/// [`Error::Runtime`] outside a run.
pub fn current_driver() -> Result<DriverInfo> {
    runtime::with(|rt| rt.driver_info.clone())
}

/// How many I/O buffers the io_uring driver holds in this process: in the
/// ring, stashed for a stream's next receive, or pooled by a run that is
/// still going. 0 once every run on io_uring has ended and the kernel gave
/// every buffer back (a run's end waits for that, cancelling what is still
/// in the ring); a leak check for tests. Always 0 off Linux. Not a
/// checkpoint; callable outside a run.
pub fn driver_buffers() -> usize {
    #[cfg(target_os = "linux")]
    return crate::driver::uring::BUFFERS.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(target_os = "linux"))]
    0
}

/// The task running now. A nursery body runs as part of the task that opened
/// the nursery, so inside a body this is that task. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_task() -> Result<Task> {
    match runtime::current_task() {
        Some((key, generation)) => Ok(Task { key, generation }),
        None => Err(Error::Runtime("called outside trio::run")),
    }
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
        // The park core's protocol (see `runtime/park.rs`), with the
        // attempt outside the borrow: `op` may use the runtime.
        let cancelled = match runtime::with(|rt| rt.op_enter(cx.waker()).then(|| rt.cancelled_error())) {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Some(e) = cancelled {
            // Yielded already: report it next.
            *this.done = Some(Err(e));
            return Poll::Pending;
        }
        match op() {
            ControlFlow::Continue(w) => Poll::Ready(Ok(ControlFlow::Continue(w))),
            ControlFlow::Break(v) => {
                // Completed: yield once before reporting it.
                *this.done = Some(Ok(v));
                let _ = runtime::with(|rt| rt.op_yield(cx.waker()));
                Poll::Pending
            }
        }
    }
}
