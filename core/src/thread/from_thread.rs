//! Calling into the run from other threads.
//!
//! From a worker thread started by `to_thread`, requests go to the task that
//! started the worker and run there, in its cancel scopes. From any other
//! thread, pass the run's [`TrioToken`] explicitly (`*_with_token`).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};

use super::TrioToken;
use super::to_thread::{CallShared, Request};
use crate::error::{Error, Result};

/// What a worker thread knows about the call it serves.
pub(crate) struct WorkerCtx {
    pub(crate) shared: Arc<CallShared>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerCtx>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctx` installed as this thread's worker context.
pub(crate) fn with_worker_ctx<R>(ctx: WorkerCtx, f: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = WORKER.try_with(|w| w.borrow_mut().take());
        }
    }
    WORKER.with_borrow_mut(|w| *w = Some(ctx));
    let _clear = Clear;
    f()
}

fn worker_shared() -> Option<Arc<CallShared>> {
    WORKER.with_borrow(|w| w.as_ref().map(|c| c.shared.clone()))
}

fn not_on_run_thread() -> Result<()> {
    if crate::runtime::in_run() {
        return Err(Error::Runtime("from_thread called on the run's own thread (it would deadlock)"));
    }
    Ok(())
}

/// Sends `req` to the host of this worker and waits for the reply on `rx`.
fn via_host<T>(shared: &CallShared, req: Request, rx: mpsc::Receiver<Result<T>>) -> Result<T> {
    {
        // Checked under the lock: the host marks the call abandoned before
        // it takes the queue under the same lock, so a request is either
        // refused here or taken (and dropped) by the host, never left
        // waiting for a host that is gone.
        let mut queue = shared.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.abandoned.load(Ordering::Acquire) {
            return Err(Error::cancelled());
        }
        queue.push_back(req);
    }
    shared.nudge_host()?;
    // A dropped request (the host abandoned the call) closes the channel.
    rx.recv().unwrap_or(Err(Error::cancelled()))
}

/// Runs `f` on the run's thread and returns its result. From a `to_thread`
/// worker it runs in the task that started the worker.
///
/// # Errors
/// [`Error::Runtime`] on the run's own thread or on a thread that is not a
/// `to_thread` worker (use [`run_sync_with_token`]); [`Error::RunFinished`]
/// if the run is over; [`Error::Cancelled`] if the host abandoned the call.
/// # Panics
/// A panic in `f` continues on the calling thread.
pub fn run_sync<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    not_on_run_thread()?;
    let shared = worker_shared().ok_or(Error::Runtime("not a trio worker thread: pass a TrioToken"))?;
    let (tx, rx) = mpsc::sync_channel(1);
    let req = Request::Sync(Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(Ok(out));
    }));
    match via_host(&shared, req, rx)? {
        Ok(v) => Ok(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Makes a future on the run's thread with `make`, awaits it there, and
/// returns its result. From a `to_thread` worker it runs in the task that
/// started the worker, so that task's cancellation reaches it.
///
/// # Errors
/// As [`run_sync`], plus whatever the future returns (`Cancelled` if the
/// host task was cancelled).
pub fn run<T, F, Fut>(make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
    T: Send + 'static,
{
    not_on_run_thread()?;
    let shared = worker_shared().ok_or(Error::Runtime("not a trio worker thread: pass a TrioToken"))?;
    let (tx, rx) = mpsc::sync_channel(1);
    let req = Request::Async(Box::new(move || {
        Box::pin(async move {
            let out = make().await;
            let _ = tx.send(out);
        })
    }));
    via_host(&shared, req, rx)
}

/// Fails with `Cancelled` if the task that started this worker thread has
/// been cancelled (so a long computation can stop early). Not a checkpoint.
///
/// # Errors
/// [`Error::Cancelled`] if cancelled; [`Error::Runtime`] on a thread that is
/// not a `to_thread` worker.
pub fn check_cancelled() -> Result<()> {
    let shared = worker_shared().ok_or(Error::Runtime("not a trio worker thread"))?;
    if shared.cancelled.is_set() {
        // With the reason of the host scope's cancellation, as Trio's.
        Err(shared.cancelled.error())
    } else if shared.abandoned.load(Ordering::Acquire) {
        Err(Error::cancelled())
    } else {
        Ok(())
    }
}

/// The name of this worker thread for the `to_thread` call it is running:
/// the call's [`Options::thread_name`](crate::to_thread::Options::thread_name)
/// if it set one, else the worker's own name (`trio-worker-N`). `None` on a
/// thread that is not running a `to_thread` call. (Trio's equivalent is
/// `threading.current_thread().name`; std's
/// [`Thread::name`](std::thread::Thread::name) cannot change after the
/// thread started, so it always gives the worker's own name.)
pub fn thread_name() -> Option<String> {
    let shared = worker_shared()?;
    match &shared.thread_name {
        Some(name) => Some(name.clone()),
        None => std::thread::current().name().map(str::to_owned),
    }
}

/// The token of the run whose worker this thread is, if it is one.
pub fn worker_token() -> Option<TrioToken> {
    worker_shared().map(|s| s.token.clone())
}

/// Runs `f` on the run of `token` (from any thread but the run's own) and
/// returns its result. It runs between scheduling passes, as part of the run
/// loop, so it must not block.
///
/// # Errors
/// [`Error::Runtime`] on the run's own thread; [`Error::RunFinished`] if the
/// run is over (or ends before `f` ran).
/// # Panics
/// A panic in `f` continues on the calling thread.
pub fn run_sync_with_token<T, F>(token: &TrioToken, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    not_on_run_thread()?;
    let (tx, rx) = mpsc::sync_channel(1);
    token.run_sync_soon(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    })?;
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => Err(Error::RunFinished),
    }
}

/// Makes a future with `make` on the run of `token` and awaits it there, as
/// a system task (part of the root task, cancelled with it, and dropped if
/// the main future finishes first); returns its result. For threads that
/// are not `to_thread` workers.
///
/// # Errors
/// [`Error::Runtime`] on the run's own thread; [`Error::RunFinished`] if the
/// run is over or ends before the future finished; whatever the future
/// returns.
pub fn run_with_token<T, F, Fut>(token: &TrioToken, make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
    T: Send + 'static,
{
    not_on_run_thread()?;
    let (tx, rx) = mpsc::sync_channel(1);
    token.run_sync_soon(move || {
        let task = Box::pin(async move {
            let out = make().await;
            let _ = tx.send(out);
        });
        // The run is alive (this runs inside it); a failure would only
        // drop the task, which the caller sees as `RunFinished`.
        let _ = crate::runtime::spawn_system_task(task);
    })?;
    rx.recv().unwrap_or(Err(Error::RunFinished))
}
