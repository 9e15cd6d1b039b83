//! Nurseries: the only way to spawn, and `start()`.
//!
//! A nursery's children are owned by the nursery's future and polled from it,
//! each with its own waker, so children can borrow from the enclosing frame
//! and dropping the nursery future drops them all. The body of the nursery
//! counts as one more child. The nursery has its own cancel scope (around body
//! and children): a failing or panicking child cancels it, the nursery waits
//! for every child, then reports all errors together.
//!
//! The lifetime shape is that of `std::thread::scope`: `'env` is what the
//! children may borrow, `'scope` is the nursery's own borrow; both invariant.

use std::any::Any;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use slab::Slab;

use crate::cancel::CancelScope;
use crate::error::{CancelReason, CancelSource, Error, Result};
use crate::lowlevel::type_name_of;
use crate::runtime::{self, Here, NONE, NodeKind};

type Child<'scope> = Pin<Box<dyn Future<Output = Result<()>> + 'scope>>;
type Panic = Box<dyn Any + Send + 'static>;

/// How many batches one poll of a nursery may run (see `poll_run`).
const ROUNDS: usize = 16;

struct Slot<'scope> {
    task: usize,
    fut: Option<Child<'scope>>,
}

/// A handle to an open nursery: spawn children into it, cancel it.
///
/// Obtained inside [`open_nursery`]; it can be handed to children (it is a
/// shared reference) so that they spawn siblings.
pub struct Nursery<'scope, 'env: 'scope> {
    key: usize,
    scope_key: usize,
    body_key: usize,
    scope: CancelScope,
    /// # Invariant
    /// Dropped only by [`ChildrenGuard`], never by the nursery's own drop
    /// glue: the nursery is borrowed for `'scope`, so it must not have drop
    /// glue that could touch `'scope` data (dropck).
    slots: ManuallyDrop<RefCell<Slab<Slot<'scope>>>>,
    errors: RefCell<Vec<Error>>,
    panic: RefCell<Option<Panic>>,
    finished: Cell<bool>,
    yielded: Cell<bool>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Nursery<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nursery")
            .field("children", &self.slots.borrow().len())
            .field("cancel_called", &self.scope.cancel_called())
            .finish_non_exhaustive()
    }
}

/// Opens a nursery, runs `body` with it, and waits until the body and every
/// child have finished.
///
/// Returns `Ok(Some(v))` with the body's value, or `Ok(None)` if the body was
/// ended by a cancellation of the nursery's own scope (for example a child
/// called `nursery.cancel_scope().cancel()`). If the body or any child failed,
/// the other children were cancelled and the result is the error (several
/// errors come as one [`Error::Group`]).
///
/// ```
/// # use trio::{open_nursery, run, checkpoint};
/// let mut log = Vec::new();
/// run(async {
///     let log = std::cell::RefCell::new(&mut log);
///     open_nursery(async |n| {
///         for i in 0..3 {
///             let log = &log;
///             n.spawn(async move { checkpoint().await?; log.borrow_mut().push(i); Ok(()) });
///         }
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// .unwrap();
/// assert_eq!(log.len(), 3);
/// ```
///
/// # Checkpoint
/// Always a checkpoint: it yields at least once, and on exit checks
/// cancellation like any checkpoint.
/// # Cancellation
/// Cancellation reaches every child; the nursery waits for all of them, so
/// nothing outlives it. An outer cancellation comes out as `Err(Cancelled)`.
/// # Panics
/// A panic in the body or a child cancels the others, waits for them, then
/// continues unwinding here (the first panic; later ones are dropped).
/// # Errors
/// [`Error::Runtime`] outside `trio::run`; otherwise the children's and the
/// body's errors.
pub async fn open_nursery<'env, T, F>(body: F) -> Result<Option<T>>
where
    F: for<'scope> AsyncFnOnce(&'scope Nursery<'scope, 'env>) -> Result<T>,
{
    let nursery = Nursery::new()?;
    let _guard = ChildrenGuard(&nursery);
    let mut body_fut = pin!(body(&nursery));
    let mut body_out: BodyOut<T> = BodyOut { done: false, value: None };
    poll_fn(|cx| nursery.poll_run(body_fut.as_mut(), &mut body_out, cx)).await
}

struct BodyOut<T> {
    done: bool,
    value: Option<T>,
}

/// Drops the children when the nursery future ends or is dropped.
struct ChildrenGuard<'a, 'scope, 'env>(&'a Nursery<'scope, 'env>);

impl Drop for ChildrenGuard<'_, '_, '_> {
    fn drop(&mut self) {
        let n = self.0;
        let slots = std::mem::take(&mut *n.slots.borrow_mut());
        if n.finished.replace(true) {
            drop(slots);
            return;
        }
        // Dropped before finishing: drop every child inside the nursery's
        // scope, then forget the nursery, and put the context back.
        let saved = runtime::with(|rt| rt.here());
        for (_, slot) in slots {
            let _ = runtime::with(|rt| rt.enter_scope(n.scope_key));
            drop(slot.fut);
            let _ = runtime::with(|rt| {
                if slot.task != NONE && rt.tasks.contains(slot.task) {
                    rt.remove_child(slot.task);
                }
            });
        }
        let _ = runtime::with(|rt| {
            rt.remove_scope(n.scope_key);
            rt.close_nursery(n.key);
            if let Ok(here) = saved {
                rt.go_back(here);
            }
        });
    }
}

impl<'scope, 'env> Nursery<'scope, 'env> {
    fn new() -> Result<Nursery<'scope, 'env>> {
        let scope = CancelScope::new();
        let (key, scope_key, body_key) = runtime::with(|rt| -> Result<_> {
            let parent = rt.current_scope();
            let scope_key = scope.enter_raw(rt, parent)?;
            let (key, _) = rt.open_nursery();
            Ok((key, scope_key, rt.nurseries[key].body))
        })??;
        Ok(Nursery {
            key,
            scope_key,
            body_key,
            scope,
            slots: ManuallyDrop::new(RefCell::new(Slab::new())),
            errors: RefCell::new(Vec::new()),
            panic: RefCell::new(None),
            finished: Cell::new(false),
            yielded: Cell::new(false),
            _scope: PhantomData,
            _env: PhantomData,
        })
    }

    /// The nursery's cancel scope, which covers the body and every child.
    /// Cancelling it cancels them all; the nursery catches that cancellation.
    pub fn cancel_scope(&self) -> &CancelScope {
        &self.scope
    }

    /// How many children are running.
    pub fn child_count(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Starts `fut` as a child task; it runs from the nursery's next pass.
    /// Its name (for introspection) is the future's type name. Not a
    /// checkpoint.
    ///
    /// An `Err` from the child cancels the nursery and is reported by it; so
    /// is a panic.
    pub fn spawn<F>(&'scope self, fut: F)
    where
        F: Future<Output = Result<()>> + 'scope,
    {
        self.spawn_named(type_name_of::<F>(), fut);
    }

    /// Like [`spawn`](Nursery::spawn), with a name for the task. Not a
    /// checkpoint.
    pub fn spawn_named<F>(&'scope self, name: impl Into<Cow<'static, str>>, fut: F)
    where
        F: Future<Output = Result<()>> + 'scope,
    {
        if self.finished.get() {
            // Only reachable from drop code running after the nursery closed.
            return;
        }
        let slot = self.slots.borrow_mut().insert(Slot { task: NONE, fut: Some(Box::pin(fut)) });
        match runtime::with(|rt| rt.spawn_child(self.key, slot, name.into())) {
            Ok(task) => self.slots.borrow_mut()[slot].task = task,
            Err(e) => {
                let dead = self.slots.borrow_mut().remove(slot);
                drop(dead);
                self.errors.borrow_mut().push(e);
            }
        }
    }

    /// Starts a task and waits until it reports that it is ready by calling
    /// [`TaskStatus::started`]; returns the value it passed. From then on the
    /// task runs on as a child of this nursery.
    ///
    /// Until it calls `started`, the task runs under the caller's cancel
    /// scopes: cancelling the caller cancels it, and its error (or panic)
    /// comes back from `start` instead of going to the nursery.
    ///
    /// # Checkpoint
    /// Always a checkpoint (it waits at least one pass for the task).
    /// # Cancellation
    /// If the caller is cancelled before `started`, the task is cancelled
    /// too and `start` returns `Err(Cancelled)`. A `started` called while
    /// the caller is cancelled (for example a `start` made inside an
    /// already cancelled scope) does not move the task, as in Trio: `start`
    /// waits for the task to end and returns `Err(Cancelled)` if it was
    /// cancelled, its error if it failed, or the value if it ended
    /// without reaching a checkpoint. If the `start` future is
    /// dropped before `started`, the task is cancelled and left to finish in
    /// the nursery.
    /// # Errors
    /// The task's error if it failed before `started`; [`Error::Runtime`] if
    /// it returned, or dropped its `TaskStatus`, without calling `started`.
    pub async fn start<V, F>(&'scope self, f: F) -> Result<V>
    where
        F: AsyncFnOnce(TaskStatus<V>) -> Result<()> + 'scope,
        V: 'scope,
    {
        let child_scope = CancelScope::new();
        let child_key = runtime::with(|rt| {
            let parent = rt.current_scope();
            child_scope.enter_raw(rt, parent)
        })??;
        let shared = Rc::new(StartShared {
            value: RefCell::new(None),
            started: Cell::new(false),
            result: RefCell::new(None),
            panic: RefCell::new(None),
            status_dropped: Cell::new(false),
            waiter: RefCell::new(None),
            child_scope,
            child_key,
            nursery_scope_key: self.scope_key,
        });
        let status = TaskStatus { shared: Some(shared.clone()) };
        let inner = async move { f(status).await };
        self.spawn_named(type_name_of::<F>(), StartChild { shared: shared.clone(), done: false, inner });
        StartWaiter { shared, resolved: false }.await
    }

    /// Runs one pass: the batch of nodes that were ready when it began.
    fn poll_run<B, T>(
        &self,
        mut body: Pin<&mut B>,
        out: &mut BodyOut<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<T>>>
    where
        B: Future<Output = Result<T>>,
    {
        let Ok(host) = runtime::with(|rt| {
            let host = rt.here();
            let n = &mut rt.nurseries[self.key];
            if !n.host_waker.will_wake(cx.waker()) {
                n.host_waker = cx.waker().clone();
            }
            n.running = true;
            rt.enter_scope(self.scope_key);
            host
        }) else {
            return Poll::Ready(Err(Error::Runtime("nursery polled outside trio::run")));
        };
        // Up to `ROUNDS` batches per poll: a node woken by a sibling runs in
        // the next round without a trip through the run loop; a node that
        // woke itself still waits for the next batch. Deadlines that passed
        // are fired before each batch (so a runnable task sees them at its
        // next checkpoint), and the run's poll budget ends the loop, even in
        // the middle of a batch, so that I/O is looked at after a bounded
        // number of task polls however deep the nurseries nest. The first
        // node of the first batch always runs, so that nested nurseries make
        // progress even when the budget is spent on the way down.
        for round in 0..ROUNDS {
            let Ok(Some((batch, aborts))) = runtime::with(|rt| {
                if round > 0 && rt.budget_spent() {
                    return None;
                }
                rt.fire_timers();
                rt.enter_scope(self.scope_key);
                Some((rt.take_batch(self.key), !rt.pending_aborts.is_empty()))
            }) else {
                break;
            };
            let (batch, start) = batch;
            if aborts {
                runtime::run_pending_aborts();
            }
            if batch.len() <= start {
                let _ = runtime::with(|rt| rt.give_back_batch(batch));
                break;
            }
            let stopped = self.run_batch(&batch[start..], host, body.as_mut(), out);
            let _ = runtime::with(|rt| match stopped {
                Some(i) => rt.carry_over(self.key, batch, start + i),
                None => rt.give_back_batch(batch),
            });
            if stopped.is_some() || (out.done && self.slots.borrow().is_empty()) {
                break;
            }
        }
        let more = runtime::with(|rt| {
            rt.go_back(host);
            let n = &mut rt.nurseries[self.key];
            n.running = false;
            !n.ready.is_empty() || !n.carry.is_empty()
        });
        if matches!(more, Ok(true)) {
            cx.waker().wake_by_ref();
        }
        if !out.done || !self.slots.borrow().is_empty() {
            self.yielded.set(true);
            return Poll::Pending;
        }
        if !self.yielded.replace(true) {
            // Every nursery is a checkpoint: yield at least once.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.finish(out.value.take()))
    }

    /// Polls each node of one batch once. Returns where it stopped if the
    /// run's poll budget ran out first (the nodes from there on were not
    /// polled and are still scheduled).
    fn run_batch<B, T>(&self, batch: &[usize], host: Here, mut body: Pin<&mut B>, out: &mut BodyOut<T>) -> Option<usize>
    where
        B: Future<Output = Result<T>>,
    {
        for (i, &node) in batch.iter().enumerate() {
            if node == self.body_key {
                let waker = runtime::with(|rt| {
                    if i > 0 && rt.budget_spent() {
                        return None;
                    }
                    rt.count_poll();
                    rt.tasks[node].scheduled = false;
                    rt.enter_node(node, self.scope_key);
                    Some(rt.node_waker(node))
                });
                if matches!(waker, Ok(None)) {
                    return Some(i);
                }
                if out.done {
                    continue;
                }
                let Ok(Some(waker)) = waker else { continue };
                let mut bcx = Context::from_waker(&waker);
                let r = catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(&mut bcx)));
                self.restore(host);
                match r {
                    Ok(Poll::Pending) => {}
                    Ok(Poll::Ready(Ok(v))) => {
                        out.done = true;
                        out.value = Some(v);
                    }
                    Ok(Poll::Ready(Err(e))) => {
                        out.done = true;
                        self.fail(e);
                    }
                    Err(p) => {
                        out.done = true;
                        self.fail_panic(p);
                    }
                }
            } else if !self.poll_child(node, host, i > 0) {
                return Some(i);
            }
        }
        None
    }

    fn restore(&self, host: Here) {
        let _ = runtime::with(|rt| {
            rt.go_back(host);
            rt.enter_scope(self.scope_key);
        });
    }

    /// Polls child `node` once. False (and nothing done) if `check_budget`
    /// and the run's poll budget is spent.
    fn poll_child(&self, node: usize, host: Here, check_budget: bool) -> bool {
        let found = runtime::with(|rt| {
            if check_budget && rt.budget_spent() {
                return Err(false);
            }
            let t = rt.tasks.get_mut(node).ok_or(true)?;
            t.scheduled = false;
            let NodeKind::Child { slot, .. } = t.kind else { return Err(true) };
            rt.count_poll();
            rt.enter_node(node, self.scope_key);
            Ok((slot as usize, rt.node_waker(node)))
        });
        // `Err(false)`: the budget is spent; `Err(true)`: nothing to poll.
        let (slot, waker) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(go_on)) => return go_on,
            Err(_) => return true,
        };
        let fut = self.slots.borrow_mut().get_mut(slot).and_then(|s| s.fut.take());
        let Some(mut fut) = fut else {
            self.restore(host);
            return true;
        };
        let mut ccx = Context::from_waker(&waker);
        let r = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut ccx)));
        match r {
            Ok(Poll::Pending) => {
                // The context is reset by the next node or at the end of
                // the pass; no need to restore it here.
                if let Some(s) = self.slots.borrow_mut().get_mut(slot) {
                    s.fut = Some(fut);
                }
            }
            Ok(Poll::Ready(result)) => {
                drop(fut);
                self.slots.borrow_mut().remove(slot);
                let _ = runtime::with(|rt| {
                    rt.remove_child(node);
                    rt.go_back(host);
                    rt.enter_scope(self.scope_key);
                });
                if let Err(e) = result {
                    self.fail(e);
                }
            }
            Err(p) => {
                // Drop the panicked future inside its task's context.
                let _ = catch_unwind(AssertUnwindSafe(|| drop(fut)));
                self.slots.borrow_mut().remove(slot);
                let _ = runtime::with(|rt| rt.remove_child(node));
                self.restore(host);
                self.fail_panic(p);
            }
        }
        true
    }

    fn fail(&self, e: Error) {
        let reason = format!("a child task failed: {e}");
        self.errors.borrow_mut().push(e);
        self.scope.cancel_for(CancelReason::with_detail(CancelSource::Nursery, Some(reason), None));
    }

    fn fail_panic(&self, p: Panic) {
        let mut slot = self.panic.borrow_mut();
        if slot.is_none() {
            *slot = Some(p);
        }
        drop(slot);
        self.scope.cancel_for(CancelReason::with_detail(
            CancelSource::Nursery,
            Some("a child task panicked".to_owned()),
            None,
        ));
    }

    fn finish<T>(&self, value: Option<T>) -> Result<Option<T>> {
        let errors = std::mem::take(&mut *self.errors.borrow_mut());
        let panic = self.panic.borrow_mut().take();
        let result = runtime::with(|rt| {
            let mut errors = errors;
            if rt.scopes[self.scope_key].effectively_cancelled && !errors.iter().any(Error::is_cancelled) {
                // The exit is a cancel point, as in Trio.
                errors.push(rt.cancelled_error_in(self.scope_key));
            }
            // By now the nursery has yielded at least once (see `poll_run`).
            rt.count_schedule_point();
            rt.count_cancel_point();
            let r = match Error::combine(errors) {
                None => Ok(value),
                Some(e) => match rt.filter_exit_error(self.scope_key, e) {
                    None => Ok(value),
                    Some(e) => Err(e),
                },
            };
            rt.remove_scope(self.scope_key);
            rt.close_nursery(self.key);
            r
        });
        self.finished.set(true);
        if let Some(p) = panic {
            resume_unwind(p);
        }
        result.unwrap_or_else(Err)
    }
}

struct StartShared<V> {
    value: RefCell<Option<V>>,
    started: Cell<bool>,
    /// The task's result if it finished before `started`.
    result: RefCell<Option<Result<()>>>,
    panic: RefCell<Option<Panic>>,
    status_dropped: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
    child_scope: CancelScope,
    child_key: usize,
    nursery_scope_key: usize,
}

impl<V> StartShared<V> {
    fn wake_waiter(&self) {
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    /// Moves the task's scope from the caller's scope into the nursery's.
    fn move_into_nursery(&self) {
        let (child, nursery) = (self.child_key, self.nursery_scope_key);
        let _ = runtime::with(|rt| {
            if rt.scopes.contains(child) && rt.scopes.contains(nursery) {
                rt.reparent_scope(child, nursery);
            }
        });
    }
}

/// Passed to a task started with [`Nursery::start`]; the task calls
/// [`started`](TaskStatus::started) once it is ready.
pub struct TaskStatus<V> {
    shared: Option<Rc<StartShared<V>>>,
}

impl<V> std::fmt::Debug for TaskStatus<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStatus").finish_non_exhaustive()
    }
}

impl<V> TaskStatus<V> {
    /// Reports that the task is ready: `start` returns `value`, and the task
    /// moves into the nursery (its cancel scope is now the nursery's). Takes
    /// `self`, so it can be called only once. Not a checkpoint.
    ///
    /// As in Trio, if the caller of `start` is cancelled at this moment, the
    /// task does not move: it keeps running under `start`, which returns
    /// when the task ends: `Err(Cancelled)` if the task was cancelled (the
    /// caller's scope catches it), the task's error if it failed, and the
    /// value if it ended normally. (Moving a task that is unwinding from a
    /// cancellation into a scope that is not cancelled would let that
    /// `Cancelled` escape the scopes meant to catch it.)
    pub fn started(mut self, value: V) {
        if let Some(shared) = self.shared.take() {
            *shared.value.borrow_mut() = Some(value);
            let key = shared.child_key;
            let cancelled =
                runtime::with(|rt| rt.scopes.get(key).is_some_and(|s| s.effectively_cancelled)).unwrap_or(false);
            if cancelled {
                return;
            }
            shared.started.set(true);
            shared.move_into_nursery();
            shared.wake_waiter();
        }
    }
}

impl<V> Drop for TaskStatus<V> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.status_dropped.set(true);
            shared.wake_waiter();
        }
    }
}

pin_project! {
    /// The child side of `start`: runs the task inside its own scope and
    /// routes its outcome to the caller until it has started.
    struct StartChild<V, Fut> {
        shared: Rc<StartShared<V>>,
        done: bool,
        #[pin]
        inner: Fut,
    }

    impl<V, Fut> PinnedDrop for StartChild<V, Fut> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                let key = this.shared.child_key;
                // The inner future is dropped after this, still inside the
                // scope record's subtree; parked waiters left there are moved
                // to the parent by `remove_scope`.
                let _ = runtime::with(|rt| {
                    if rt.scopes.contains(key) {
                        rt.remove_scope(key);
                    }
                });
            }
        }
    }
}

impl<V, Fut> Future for StartChild<V, Fut>
where
    Fut: Future<Output = Result<()>>,
{
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(Ok(()));
        }
        let key = this.shared.child_key;
        let prev = runtime::with(|rt| rt.enter_scope(key))?;
        let inner = this.inner;
        let r = catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        let _ = runtime::with(|rt| rt.enter_scope(prev));
        let out = match r {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(out)) => out,
            Err(p) => {
                *this.done = true;
                let _ = runtime::with(|rt| rt.remove_scope(key));
                if this.shared.started.get() {
                    resume_unwind(p);
                }
                *this.shared.panic.borrow_mut() = Some(p);
                this.shared.wake_waiter();
                return Poll::Ready(Ok(()));
            }
        };
        *this.done = true;
        let out = runtime::with(|rt| {
            let r = match out {
                Ok(()) => Ok(()),
                Err(e) => rt.filter_exit_error(key, e).map_or(Ok(()), Err),
            };
            rt.remove_scope(key);
            r
        })?;
        if this.shared.started.get() {
            return Poll::Ready(out);
        }
        *this.shared.result.borrow_mut() = Some(out);
        this.shared.wake_waiter();
        Poll::Ready(Ok(()))
    }
}

/// The caller side of `start`.
struct StartWaiter<V> {
    shared: Rc<StartShared<V>>,
    resolved: bool,
}

impl<V> Future for StartWaiter<V> {
    type Output = Result<V>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<V>> {
        let shared = self.shared.clone();
        if let Some(p) = shared.panic.borrow_mut().take() {
            self.resolved = true;
            resume_unwind(p);
        }
        if shared.started.get() {
            self.resolved = true;
            return match shared.value.borrow_mut().take() {
                Some(v) => Poll::Ready(Ok(v)),
                None => Poll::Ready(Err(Error::Runtime("start() polled after completion"))),
            };
        }
        if let Some(r) = shared.result.borrow_mut().take() {
            self.resolved = true;
            return Poll::Ready(match r {
                Err(e) => Err(e),
                // It called `started` while the caller was cancelled, and
                // then ended normally.
                Ok(()) => shared
                    .value
                    .borrow_mut()
                    .take()
                    .ok_or(Error::Runtime("a start()ed task returned without calling task_status.started()")),
            });
        }
        if shared.status_dropped.get() {
            self.resolved = true;
            // The task runs on without a caller: cancel it, and from now on
            // its outcome (an error other than that cancellation, a panic)
            // goes to the nursery instead of being lost.
            shared.child_scope.cancel_for(start_abandoned());
            shared.move_into_nursery();
            shared.started.set(true);
            return Poll::Ready(Err(Error::Runtime(
                "a start()ed task dropped its TaskStatus without calling started()",
            )));
        }
        *shared.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<V> Drop for StartWaiter<V> {
    fn drop(&mut self) {
        if !self.resolved && !self.shared.started.get() && self.shared.result.borrow().is_none() {
            // The caller went away: cancel the task and let the nursery own
            // whatever it does next.
            self.shared.child_scope.cancel_for(start_abandoned());
            self.shared.move_into_nursery();
            // Mark it started so its outcome goes to the nursery.
            self.shared.started.set(true);
        }
    }
}

/// The reason a `start()`ed task is cancelled when its caller goes away.
fn start_abandoned() -> CancelReason {
    CancelReason::with_detail(
        CancelSource::Nursery,
        Some("the caller of start() went away before the task started".to_owned()),
        None,
    )
}
