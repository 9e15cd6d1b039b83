//! Running blocking code on worker threads.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::from_thread::{self, WorkerCtx};
use super::{TrioToken, current_trio_token, pool};
use crate::driver::thread_name as os_name;
use crate::error::Result;
use crate::lowlevel::{Abort, WakeToken, park, unpark};
use crate::runtime::{self, CancelFlag};
use crate::sync::{Borrower, CapacityLimiter, ParkingLot};

/// The number of tokens of each run's default thread limiter.
pub const DEFAULT_THREAD_LIMIT: usize = 40;

/// A request from a worker thread, run by the host task.
pub(crate) enum Request {
    /// Run a closure on the run's thread.
    Sync(Box<dyn FnOnce() + Send>),
    /// Make a future on the run's thread and await it in the host task.
    Async(Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>),
}

/// What the host task and its worker thread share.
pub(crate) struct CallShared {
    pub(crate) call_id: u64,
    pub(crate) token: TrioToken,
    pub(crate) requests: Mutex<VecDeque<Request>>,
    /// Mirrors whether the host's scope is cancelled (for `check_cancelled`).
    pub(crate) cancelled: Arc<CancelFlag>,
    /// Set when the host gave up waiting (`abandon_on_cancel`, or dropped).
    pub(crate) abandoned: AtomicBool,
    /// Set by the worker once the result is stored.
    pub(crate) done: AtomicBool,
    /// The call's [`Options::thread_name`], if it set one.
    pub(crate) thread_name: Option<String>,
}

/// Marks the runtime key of a call's completion notice (apart from its
/// request nudges, signal delivery and Ctrl-C).
const DONE_KEY: u64 = 1 << 60;

impl CallShared {
    /// Asks the host to look at its request queue.
    pub(crate) fn nudge_host(&self) -> Result<()> {
        let id = self.call_id;
        self.token.run_sync_soon_runtime(id, move || wake_host(id, false))
    }

    /// Tells the host that the result is stored. Queued under a key of
    /// its own (never merged with a request nudge that is still pending),
    /// so it runs after every `run_sync_soon` callback the worker (or a
    /// thread it joined) queued before it finished, and the host returns
    /// only after those ran, as in Trio.
    fn notify_done(&self) -> Result<()> {
        let id = self.call_id;
        self.token.run_sync_soon_runtime(DONE_KEY | id, move || wake_host(id, true))
    }
}

/// Per-run-thread bookkeeping of calls in flight, keyed by call id.
struct CallLocal {
    /// The parked host, if it is parked.
    wake: Option<WakeToken>,
    /// With `abandon_on_cancel`: the host's cancellation flag (set inside
    /// `cancel()`), so that a wake-up arriving after a cancel does not
    /// unpark a host that Trio would already have aborted.
    abandon_when: Option<Arc<CancelFlag>>,
    /// The completion notice ran: the host may take the result.
    done_seen: bool,
    /// For an abandoned call: the token to give back when the thread ends.
    abandoned: Option<(Rc<CapacityLimiter>, Borrower)>,
}

thread_local! {
    static CALLS: RefCell<HashMap<u64, CallLocal>> = RefCell::new(HashMap::new());
    static DEFAULT_LIMITER: RefCell<Option<(u64, Rc<CapacityLimiter>)>> = const { RefCell::new(None) };
    static ACTIVE: RefCell<Option<(u64, Rc<ActiveThreads>)>> = const { RefCell::new(None) };
}

/// A run's `to_thread` calls whose thread has not finished (for
/// `trio::testing::active_thread_count`), abandoned ones included: a call
/// is counted from the moment its job is handed to a thread until its
/// completion notice runs on the run's thread.
#[derive(Default)]
struct ActiveThreads {
    /// The call ids counted.
    calls: RefCell<HashSet<u64>>,
    /// Tasks in `wait_all_threads_completed`, woken when `calls` empties.
    idle_waiters: ParkingLot,
}

/// The current run's [`ActiveThreads`], created on first use.
fn active_threads() -> Result<Rc<ActiveThreads>> {
    let run = runtime::with(|rt| rt.serial)?;
    Ok(ACTIVE.with_borrow_mut(|slot| match slot {
        Some((r, a)) if *r == run => a.clone(),
        _ => {
            let a = Rc::new(ActiveThreads::default());
            *slot = Some((run, a.clone()));
            a
        }
    }))
}

/// Stops counting `call_id` (its thread finished, or never started); wakes
/// the waiters of `wait_all_threads_completed` when none is left. Runs on
/// the run's thread; a call that was not counted is ignored.
fn thread_finished(call_id: u64) {
    let active = ACTIVE.with_borrow(|slot| slot.as_ref().map(|(_, a)| a.clone()));
    let Some(active) = active else { return };
    let now_idle = {
        let mut calls = active.calls.borrow_mut();
        calls.remove(&call_id) && calls.is_empty()
    };
    if now_idle {
        active.idle_waiters.unpark_all();
    }
}

/// How many of this run's `to_thread` calls have a thread that has not
/// finished running the call's function (see
/// `trio::testing::active_thread_count`).
pub(crate) fn active_thread_count() -> Result<usize> {
    let run = runtime::with(|rt| rt.serial)?;
    Ok(ACTIVE.with_borrow(|slot| match slot {
        Some((r, a)) if *r == run => a.calls.borrow().len(),
        _ => 0,
    }))
}

/// Waits until [`active_thread_count`] is 0 (see
/// `trio::testing::wait_all_threads_completed`).
pub(crate) async fn wait_all_threads_completed() -> Result<()> {
    crate::lowlevel::checkpoint().await?;
    let active = active_threads()?;
    // Bounded by the calls of the run: each wake-up comes from the count
    // reaching 0; a new call may have started meanwhile, then wait again.
    while !active.calls.borrow().is_empty() {
        active.idle_waiters.park().await?;
    }
    Ok(())
}

static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// Runs on the run's thread (through `run_sync_soon`): wakes the host of
/// `call_id` (`done`: the completion notice). For a call its host
/// abandoned, the completion notice gives the limiter token back (the
/// thread is finished then; a request nudge is not enough).
///
/// A host that may abandon its call and whose scope is already cancelled
/// is not unparked: the cancel came first, so its park aborts and the call
/// ends with `Cancelled` (Trio runs the abort inside `cancel()`, so there a
/// result or request arriving after the cancel finds the host gone). Without
/// this, the lazily delivered cancel lost to the wake-up, and the host
/// served the request or returned the thread's result instead.
fn wake_host(call_id: u64, done: bool) {
    if done {
        thread_finished(call_id);
    }
    let (wake, abandoned) = CALLS.with_borrow_mut(|calls| match calls.get_mut(&call_id) {
        Some(c) if c.abandoned.is_some() => {
            if done {
                (None, calls.remove(&call_id).and_then(|c| c.abandoned))
            } else {
                (None, None)
            }
        }
        Some(c) => {
            c.done_seen |= done;
            if c.abandon_when.as_ref().is_some_and(|f| f.is_set()) { (None, None) } else { (c.wake.take(), None) }
        }
        None => (None, None),
    });
    if let Some(w) = wake {
        unpark(w);
    }
    if let Some((limiter, borrower)) = abandoned {
        let _ = limiter.release_on_behalf_of(borrower);
    }
}

/// This run's default limiter for `to_thread` ([`DEFAULT_THREAD_LIMIT`]
/// tokens), created on first use. Change its `total_tokens` to allow more or
/// fewer threads at once. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`.
pub fn current_default_thread_limiter() -> Result<Rc<CapacityLimiter>> {
    let run = runtime::with(|rt| rt.serial)?;
    Ok(DEFAULT_LIMITER.with_borrow_mut(|slot| match slot {
        Some((r, l)) if *r == run => l.clone(),
        _ => {
            let l = Rc::new(CapacityLimiter::new(DEFAULT_THREAD_LIMIT));
            *slot = Some((run, l.clone()));
            l
        }
    }))
}

/// How to run a blocking call: which limiter, whether cancellation may
/// abandon the thread, and what to call the thread meanwhile.
#[derive(Debug, Default, Clone)]
pub struct Options {
    limiter: Option<Rc<CapacityLimiter>>,
    abandon_on_cancel: bool,
    thread_name: Option<String>,
}

/// Runs `f` on a worker thread and returns its result, with the default
/// options: the run's default limiter, and not cancellable.
///
/// # Checkpoint
/// Always a checkpoint.
/// # Cancellation
/// A cancellation before the thread started returns `Err(Cancelled)` and
/// `f` never runs. Once it runs, the task waits for it to finish and returns
/// its result (the cancellation is seen at the next checkpoint); use
/// [`Options::abandon_on_cancel`] to return at once instead.
/// # Panics
/// A panic in `f` continues in the caller.
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`; [`Error::Io`](crate::Error::Io) if no thread could
/// be started.
pub async fn run_sync<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Options::new().run_sync(f).await
}

impl Options {
    /// The defaults.
    pub fn new() -> Options {
        Options::default()
    }

    /// Limits concurrency with `limiter` instead of the run's default.
    pub fn limiter(mut self, limiter: Rc<CapacityLimiter>) -> Options {
        self.limiter = Some(limiter);
        self
    }

    /// If cancelled while `f` runs, return `Err(Cancelled)` at once and let
    /// the thread finish on its own; its result is dropped, and its limiter
    /// token is given back when it ends (not before: abandoned threads count
    /// against the limit while they run). A cancel that reaches the call
    /// before the thread's result (or before one of its `from_thread`
    /// requests) wins: the call returns `Err(Cancelled)`, and the request
    /// fails with `Cancelled` in the thread instead of being served.
    pub fn abandon_on_cancel(mut self, abandon: bool) -> Options {
        self.abandon_on_cancel = abandon;
        self
    }

    /// Names the worker thread `name` while it runs this call (Trio's
    /// `thread_name=`). Worker threads are reused, so the name lasts only
    /// for the call:
    ///
    /// - [`from_thread::thread_name`] in the worker returns `name`;
    /// - on Linux the OS thread name (seen by `ps`, `top`, debuggers and
    ///   `/proc/<pid>/task/<tid>/comm`) is set with `pthread_setname_np` as
    ///   Trio does: each non-ASCII character becomes `?` and only the first
    ///   15 bytes are kept; the previous OS name is put back before the
    ///   call's result is reported. Other platforms keep the OS name;
    /// - [`std::thread::current().name()`](std::thread::Thread::name) does
    ///   not change: std fixes it when the thread starts (`trio-worker-N`).
    ///
    /// Without this option the thread keeps its worker name (`trio-worker-N`);
    /// Trio's default, "`<function name> from <task name>`", has no
    /// counterpart (a Rust closure has no name).
    pub fn thread_name(mut self, name: impl Into<String>) -> Options {
        self.thread_name = Some(name.into());
        self
    }

    /// Runs `f` on a worker thread with these options (see [`run_sync`]).
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// See [`run_sync`] and [`Options::abandon_on_cancel`].
    /// # Panics
    /// A panic in `f` continues in the caller.
    /// # Errors
    /// See [`run_sync`].
    pub async fn run_sync<T, F>(self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let limiter = match self.limiter {
            Some(l) => l,
            None => current_default_thread_limiter()?,
        };
        let token = current_trio_token()?;
        let active = active_threads()?;
        let call_id = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        let borrower = Borrower::thread_call(call_id);
        limiter.acquire_on_behalf_of(borrower).await?;

        let shared = Arc::new(CallShared {
            call_id,
            token,
            requests: Mutex::new(VecDeque::new()),
            cancelled: Arc::new(CancelFlag::default()),
            abandoned: AtomicBool::new(false),
            done: AtomicBool::new(false),
            thread_name: self.thread_name,
        });
        let observed = runtime::with(|rt| rt.observe_cancel(shared.cancelled.clone()))?;
        let _unobserve = Unobserve { scope: observed, flag: shared.cancelled.clone() };
        let abandon_when = self.abandon_on_cancel.then(|| shared.cancelled.clone());
        CALLS.with_borrow_mut(|c| {
            c.insert(call_id, CallLocal { wake: None, abandon_when, done_seen: false, abandoned: None })
        });
        // From here on the limiter token goes back exactly once: now if the
        // thread is done, or when it ends if the call is abandoned.
        let _guard = CallGuard { shared: shared.clone(), limiter: Some((limiter, borrower)) };
        let result: Arc<Mutex<Option<std::thread::Result<T>>>> = Arc::new(Mutex::new(None));

        let job = {
            let (shared, result) = (shared.clone(), result.clone());
            Box::new(move || {
                let ctx = WorkerCtx { shared: shared.clone() };
                let out = from_thread::with_worker_ctx(ctx, || {
                    // Renamed for the call only: the old OS name is back
                    // before the result is reported.
                    let _name = shared.thread_name.as_deref().map(os_name::Rename::new);
                    catch_unwind(AssertUnwindSafe(f))
                });
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(out);
                shared.done.store(true, Ordering::Release);
                // Back on the idle list before the host hears of it, so its
                // next call finds this thread awake (no user code runs from
                // here on: the end of the last run may join it).
                pool::idle_now();
                // Tell the host (or, if abandoned, free the token). If the
                // run is over there is nobody left to tell.
                let _ = shared.notify_done();
            })
        };
        if let Err(e) = pool::spawn_job(job) {
            // No thread will ever run or report: the call is over, and the
            // guard gives the token back now (as for a finished thread).
            shared.done.store(true, Ordering::Release);
            return Err(e.into());
        }
        // Counted until its completion notice runs (which cannot happen
        // before this: it runs on this thread, after this task yields).
        active.calls.borrow_mut().insert(call_id);

        let abandon = self.abandon_on_cancel;
        loop {
            // Serve the worker's requests in this task. A host that may
            // abandon the call stops serving once its scope is cancelled
            // (a request it served may have cancelled it): it parks below,
            // the park aborts, and the requests left are refused, as in
            // Trio, where the host goes back to waiting after each request
            // and the pending cancel abandons the call there.
            loop {
                if abandon && shared.cancelled.is_set() {
                    break;
                }
                let req = shared.requests.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                match req {
                    Some(Request::Sync(f)) => f(),
                    Some(Request::Async(make)) => make().await,
                    None => break,
                }
            }
            // The result counts once the completion notice ran (not as soon
            // as it is stored), so callbacks queued before it ran first.
            let done_seen = CALLS.with_borrow(|c| c.get(&call_id).is_some_and(|c| c.done_seen));
            if let Some(out) = done_seen.then(|| result.lock().unwrap_or_else(PoisonError::into_inner).take()).flatten()
            {
                return match out {
                    Ok(v) => Ok(v),
                    Err(p) => resume_unwind(p),
                };
            }
            park(
                |w| {
                    CALLS.with_borrow_mut(|c| {
                        if let Some(c) = c.get_mut(&call_id) {
                            c.wake = Some(w);
                        }
                    })
                },
                move || {
                    if abandon {
                        CALLS.with_borrow_mut(|c| {
                            if let Some(c) = c.get_mut(&call_id) {
                                c.wake = None;
                            }
                        });
                        Abort::Succeeded
                    } else {
                        Abort::Failed
                    }
                },
            )
            .await?;
        }
    }
}

/// Stops mirroring the host's cancellation when the call ends.
struct Unobserve {
    scope: usize,
    flag: Arc<CancelFlag>,
}

impl Drop for Unobserve {
    fn drop(&mut self) {
        let _ = runtime::with(|rt| rt.unobserve_cancel(self.scope, &self.flag));
    }
}

/// Ends a call from the host's side: gives the limiter token back if the
/// thread is done, otherwise marks the call abandoned (its `from_thread`
/// requests fail, and the token goes back when the thread ends).
struct CallGuard {
    shared: Arc<CallShared>,
    limiter: Option<(Rc<CapacityLimiter>, Borrower)>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let id = self.shared.call_id;
        let Some((limiter, borrower)) = self.limiter.take() else { return };
        if self.shared.done.load(Ordering::Acquire) {
            let _ = CALLS.try_with(|c| c.borrow_mut().remove(&id));
            let _ = limiter.release_on_behalf_of(borrower);
            return;
        }
        self.shared.abandoned.store(true, Ordering::Release);
        let pending = std::mem::take(&mut *self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner));
        // Dropping a request drops its reply channel: the worker's
        // `from_thread` call fails instead of waiting forever.
        drop(pending);
        let _ = CALLS.try_with(|c| {
            c.borrow_mut().insert(
                id,
                CallLocal { wake: None, abandon_when: None, done_seen: false, abandoned: Some((limiter, borrower)) },
            );
        });
    }
}

/// How many idle worker threads the pool keeps right now.
pub fn idle_worker_threads() -> usize {
    pool::idle_workers()
}
