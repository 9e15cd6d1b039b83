//! Threads: blocking work on worker threads (`trio_to_thread`), and calling
//! into a run from other threads through its token (`trio_token`).

use std::ffi::{c_int, c_void};

use trio::lowlevel::{TrioToken, current_trio_token};
use trio::{Error, Result};
use trio::{from_thread, to_thread};

use crate::error::{self, guard, set_error};
use crate::task::{self, CTask, TaskFailed, TrioTaskFn};

/// A function run soon on a run's thread by `trio_token_run_sync_soon`.
#[allow(non_camel_case_types)]
pub type trio_sync_fn = Option<unsafe extern "C" fn(arg: *mut c_void)>;

/// A run's token: a thread-safe reference to a `trio_run`, the way other
/// threads reach it. Get one with `trio_token_get` inside the run; it may be
/// used from any thread, and outlive the run (it then reports
/// `TRIO_ENORUN`). Free it with `trio_token_free`, once, from any thread.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct trio_token {
    token: TrioToken,
}

/// Runs `fn(arg)` on a worker thread (from a pool) and returns its value:
/// 0 or more, or its negative code as it is.
///
/// Suspends only the calling C task; the run goes on. `fn` runs outside the
/// run: it may block, and it may call `trio_from_thread_run` with the run's
/// token; it must not call the functions that need a C task.
///
/// Cancellation: a cancellation before the thread starts returns
/// `TRIO_ECANCELED` and `fn` never runs. Once `fn` runs, if
/// `abandon_on_cancel` is 0 the task waits for it to return (the
/// cancellation is seen at the task's next checkpoint); if it is nonzero,
/// the call returns `TRIO_ECANCELED` at once and the thread goes on alone:
/// its value is dropped, so `arg` (and whatever `fn` uses) must stay valid
/// until `fn` has returned, which the caller must arrange itself.
///
/// Returns: `fn`'s value; `TRIO_ECANCELED`; `TRIO_EINVAL` if `fn` is NULL;
/// `TRIO_ENORUN` outside a C task; `TRIO_EIO` if no thread could be
/// started.
#[unsafe(no_mangle)]
pub extern "C" fn trio_to_thread(func: TrioTaskFn, arg: *mut c_void, abandon_on_cancel: c_int) -> c_int {
    guard(|| {
        let Some(f) = func else {
            return set_error(error::TRIO_EINVAL, "fn is NULL");
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        let arg = arg as usize;
        let opts = to_thread::Options::new().abandon_on_cancel(abandon_on_cancel != 0);
        // SAFETY: the C function with the argument the C caller gave, on
        // another thread, as documented.
        let call = opts.run_sync(move || unsafe { f(arg as *mut c_void) });
        match task::wait(call) {
            Ok(v) if v < 0 => set_error(v, format_args!("the thread function returned {v}")),
            Ok(v) => v,
            Err(c) => c,
        }
    })
}

/// Writes a new token for the run on the calling thread to `*out`.
///
/// Does not block; may be called from C tasks and from callbacks of
/// `trio_token_run_sync_soon`. Each token must be freed with
/// `trio_token_free`.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_ENORUN` outside a run.
/// `*out` is written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_token *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_token_get(out: *mut *mut trio_token) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match current_trio_token() {
            Ok(token) => {
                let p = Box::into_raw(Box::new(trio_token { token }));
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { *out = p };
                0
            }
            Err(e) => error::from_error(&e),
        }
    })
}

/// Frees a token from `trio_token_get`. Any thread, during or after its
/// run. NULL is accepted and does nothing.
///
/// Returns 0.
///
/// # Safety
/// `token` is NULL or a token from `trio_token_get` not freed yet, and no
/// other thread uses it during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_token_free(token: *mut trio_token) -> c_int {
    guard(|| {
        if !token.is_null() {
            // SAFETY: made by `Box::into_raw` in `trio_token_get`, freed once.
            drop(unsafe { Box::from_raw(token) });
        }
        0
    })
}

/// Queues `fn(arg)` to run soon on the run's thread, between scheduling
/// passes. Any thread may call it, the run's own included; it does not block.
/// Calls run in the order they were queued. `fn` runs outside any C task: it
/// must not block nor call the functions that need a C task (it may call
/// `trio_token_get` and `trio_token_run_sync_soon`). If the run ends before
/// `fn` had its turn, `fn` never runs.
///
/// Returns 0; `TRIO_EINVAL` if `token` or `fn` is NULL; `TRIO_ENORUN` if
/// the run has ended (`fn` will not run).
///
/// # Safety
/// `token` is NULL or a live token (not freed); `arg` stays valid until
/// `fn` has run (or the run has ended).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_token_run_sync_soon(
    token: *const trio_token,
    func: trio_sync_fn,
    arg: *mut c_void,
) -> c_int {
    guard(|| {
        if token.is_null() {
            return set_error(error::TRIO_EINVAL, "token is NULL");
        }
        let Some(f) = func else {
            return set_error(error::TRIO_EINVAL, "fn is NULL");
        };
        // SAFETY: non-null, and the caller promised it is live.
        let token = unsafe { &(*token).token };
        let arg = arg as usize;
        // SAFETY: the C function with the C caller's argument, on the run's
        // thread, as documented.
        match token.run_sync_soon(move || unsafe { f(arg as *mut c_void) }) {
            Ok(()) => 0,
            Err(e) => error::from_error(&e),
        }
    })
}

/// From a thread other than the run's: runs `fn(arg)` as a C task in the
/// run of `token`, blocks the calling OS thread until it returns, and
/// returns its value (0 or more, or its negative code as it is). The task may
/// use everything a C task can (sleep, nurseries, ...).
///
/// From a `trio_to_thread` worker of the same run, the task runs as part of
/// the task that started the worker, inside its cancel scopes: a
/// cancellation there reaches it, and if that task abandoned the thread the
/// call returns `TRIO_ECANCELED`. From any other thread it runs as a system
/// task of the run, cancelled only when the run is torn down.
///
/// Returns: `fn`'s value; `TRIO_ECANCELED`; `TRIO_EINVAL` if `token` or
/// `fn` is NULL; `TRIO_EMISUSE` if called on a thread running a trio run
/// (waiting there would deadlock); `TRIO_ENORUN` if the run has ended or
/// ends before the task returns; `TRIO_ENOMEM` if no task stack could be
/// made.
///
/// # Safety
/// `token` is NULL or a live token (not freed); `arg` stays valid until the
/// call returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_from_thread_run(token: *const trio_token, func: TrioTaskFn, arg: *mut c_void) -> c_int {
    guard(|| {
        if token.is_null() {
            return set_error(error::TRIO_EINVAL, "token is NULL");
        }
        if func.is_none() {
            return set_error(error::TRIO_EINVAL, "fn is NULL");
        }
        if current_trio_token().is_ok() {
            return set_error(
                error::TRIO_EMISUSE,
                "trio_from_thread_run called on a thread running trio_run (it would deadlock): call the function directly or use trio_token_run_sync_soon",
            );
        }
        // SAFETY: non-null, and the caller promised it is live.
        let token = unsafe { &(*token).token };
        let arg = arg as usize;
        let make = move || async move {
            // On the run's thread: a C task, awaited where it was sent.
            let t = CTask::new(func, arg as *mut c_void).map_err(|c| Error::User(Box::new(TaskFailed(c, None))))?;
            t.await
        };
        let r: Result<i32> = if from_thread::worker_token().as_ref() == Some(token) {
            from_thread::run(make)
        } else {
            from_thread::run_with_token(token, make)
        };
        match r {
            Ok(v) if v < 0 => set_error(v, format_args!("the task function returned {v}")),
            Ok(v) => v,
            Err(e) => task::note_error(&e),
        }
    })
}
