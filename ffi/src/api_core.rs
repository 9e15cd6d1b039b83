//! The run, C tasks, time, nurseries and cancel scopes.

use std::ffi::{c_int, c_void};
use std::rc::Rc;
use std::time::Duration;

use trio::CancelScope;

use crate::error::{self, guard, set_error};
use crate::handle::{self, Kind, trio_handle_t};
use crate::task::{self, CTask, Layer, NurseryState, TrioTaskFn};

/// A C cancel scope while it is open.
pub(crate) struct ScopeState {
    scope: CancelScope,
    /// The layer id, for the close-in-order check.
    layer: usize,
}

/// Ignores SIGPIPE if it has its default action: a write to a closed pipe
/// must be an `EPIPE` error, not the end of the process (sockets use
/// `MSG_NOSIGNAL`; pipes cannot).
#[cfg(unix)]
fn ignore_sigpipe() {
    // SAFETY: reading and setting a signal disposition.
    unsafe {
        let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        if old != libc::SIG_DFL && old != libc::SIG_ERR {
            libc::signal(libc::SIGPIPE, old);
        }
    }
}

/// Windows has no SIGPIPE.
#[cfg(not(unix))]
fn ignore_sigpipe() {}

/// Runs `main_fn(arg)` as the first C task of a new trio run on the calling
/// thread, and returns when it and everything it started have finished.
///
/// Blocks the calling thread for the whole run. `main_fn` returns 0 (or a
/// positive value) on success or a negative code; that value is returned
/// (a C task's own negative value is passed on as it is, also by
/// `trio_nursery_close` when exactly one child failed).
/// SIGPIPE is set to be ignored if it had its default action. Handles the
/// C code did not close are closed when the run ends (they become stale).
///
/// Returns: `main_fn`'s value; `TRIO_EINVAL` if `main_fn` is NULL;
/// `TRIO_ENORUN` if a run is already active on this thread; `TRIO_ECANCELED`
/// if the run was cancelled (Ctrl-C is not handled: SIGINT keeps its
/// action); the code of the error that ended the run otherwise (for
/// example `TRIO_EGROUP` when several tasks failed; `trio_last_error` has
/// the detail).
#[unsafe(no_mangle)]
pub extern "C" fn trio_run(main_fn: TrioTaskFn, arg: *mut c_void) -> c_int {
    guard(|| run_with(trio::RunOptions::new(), main_fn, arg))
}

/// As `trio_run`, but on a mock clock that starts at 0 and jumps straight
/// to the next deadline whenever every task is blocked: sleeps and
/// deadlines take no real time and happen in a deterministic order. For
/// tests.
///
/// Returns as `trio_run`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_run_mock_clock(main_fn: TrioTaskFn, arg: *mut c_void) -> c_int {
    guard(|| {
        let clock = trio::testing::MockClock::new();
        clock.set_autojump_threshold(Some(Duration::ZERO));
        run_with(trio::RunOptions::new().clock(clock), main_fn, arg)
    })
}

fn run_with(options: trio::RunOptions, main_fn: TrioTaskFn, arg: *mut c_void) -> i32 {
    if main_fn.is_none() {
        return set_error(error::TRIO_EINVAL, "main_fn is NULL");
    }
    // Refused before anything is made: the run already going on this
    // thread keeps its handles.
    if trio::current_time().is_ok() {
        return set_error(error::TRIO_ENORUN, "a run is already active on this thread (runs cannot nest)");
    }
    ignore_sigpipe();
    // The run's handles carry its tag: those of other runs are refused.
    if let Err(c) = handle::begin_run() {
        return c;
    }
    // The stack-overflow handler and this thread's alternate signal stack.
    let _alt_stack = crate::stack::prepare_thread();
    let task = match CTask::new(main_fn, arg) {
        Ok(t) => t,
        Err(c) => {
            handle::end_run();
            return c;
        }
    };
    let options = match DRIVER.with(std::cell::Cell::get) {
        Some(d) => options.driver(d),
        None => options,
    };
    let r = options.handle_ctrl_c(false).run(task);
    // Objects the C code did not close belong to the finished run: their
    // handles go stale and the objects are freed.
    handle::end_run();
    match r {
        Ok(code) => code,
        Err(e) => task::note_error(&e),
    }
}

/// Sets the stack size, in bytes, of C tasks created from now on by this
/// thread (default 256 KiB; rounded up to whole pages). Below each stack
/// lies its guard region (`trio_set_stack_guard_size`). A task that
/// overflows its stack into the guard region ends the process: one line on
/// stderr names the task and its stack size, then `abort()` (on Windows,
/// where the stack ends at the system's guard pages above the guard
/// region, the process ends with status 0xC00000FD, `STATUS_STACK_OVERFLOW`;
/// see "Stacks" in `ffi/README.md`).
///
/// Does not block; any thread, inside or outside a run. Returns 0, or
/// `TRIO_EINVAL` if `size` is below 16 KiB or above 1 GiB (64 MiB on
/// 32-bit systems).
#[unsafe(no_mangle)]
pub extern "C" fn trio_set_stack_size(size: usize) -> c_int {
    guard(|| crate::stack::set_stack_size(size).map_or_else(|c| c, |()| 0))
}

/// Sets the size, in bytes, of the guard region below the stack of each C
/// task created from now on by this thread (default 1 MiB, 64 KiB on
/// 32-bit systems; rounded up to whole pages). The guard region is address
/// space only (`PROT_NONE`; on Windows reserved, never committed: no memory
/// is used): a frame that moves the stack pointer by less than the guard
/// region faults there instead of writing into memory below it, even in C
/// code built without `-fstack-clash-protection` (on Windows, whose
/// compilers probe every frame larger than a page, without the probes).
///
/// Does not block; any thread, inside or outside a run. Returns 0, or
/// `TRIO_EINVAL` if `size` is below 4 KiB or above 1 GiB (64 MiB on 32-bit
/// systems).
#[unsafe(no_mangle)]
pub extern "C" fn trio_set_stack_guard_size(size: usize) -> c_int {
    guard(|| crate::stack::set_guard_size(size).map_or_else(|c| c, |()| 0))
}

/// `trio_set_driver`: the I/O driver named by the environment variable
/// `TRIO_DRIVER` (`epoll`, `uring` or `auto`), else epoll (the default).
pub const TRIO_DRIVER_DEFAULT: c_int = 0;
/// `trio_set_driver`, `trio_current_driver`: the readiness poller (epoll on
/// Linux, kqueue or IOCP elsewhere).
pub const TRIO_DRIVER_EPOLL: c_int = 1;
/// `trio_set_driver`, `trio_current_driver`: io_uring (Linux).
pub const TRIO_DRIVER_URING: c_int = 2;
/// `trio_set_driver`: io_uring where the kernel offers it, else epoll (see
/// `trio_current_driver` for the reason).
pub const TRIO_DRIVER_AUTO: c_int = 3;

thread_local! {
    /// The driver `trio_set_driver` chose for this thread's runs.
    static DRIVER: std::cell::Cell<Option<trio::Driver>> = const { std::cell::Cell::new(None) };
}

/// Sets the I/O driver of the runs this thread starts from now on:
/// `TRIO_DRIVER_EPOLL`, `TRIO_DRIVER_URING` (a run then fails with
/// `TRIO_EUNSUPPORTED` or `TRIO_EIO`, the detail naming the reason, where
/// io_uring cannot be used: off Linux, not in the kernel, disabled or
/// refused by a seccomp filter), `TRIO_DRIVER_AUTO`, or
/// `TRIO_DRIVER_DEFAULT`.
///
/// Does not block; any thread, inside or outside a run (a run already
/// going keeps its driver). Returns 0, or `TRIO_EINVAL` for another value.
#[unsafe(no_mangle)]
pub extern "C" fn trio_set_driver(driver: c_int) -> c_int {
    guard(|| {
        let d = match driver {
            TRIO_DRIVER_DEFAULT => None,
            TRIO_DRIVER_EPOLL => Some(trio::Driver::Epoll),
            TRIO_DRIVER_URING => Some(trio::Driver::Uring),
            TRIO_DRIVER_AUTO => Some(trio::Driver::Auto),
            other => return set_error(error::TRIO_EINVAL, format_args!("no driver {other} (expected 0 to 3)")),
        };
        DRIVER.with(|c| c.set(d));
        0
    })
}

/// The I/O driver of the run on this thread: `TRIO_DRIVER_EPOLL` or
/// `TRIO_DRIVER_URING`. With `why` non-NULL and `len` more than 0, the
/// reason a `TRIO_DRIVER_AUTO` run fell back to epoll is copied there,
/// cut to `len - 1` bytes and NUL-terminated (an empty string when it did
/// not fall back).
///
/// Does not block. Returns the driver; `TRIO_ENORUN` outside a run;
/// `TRIO_EINVAL` if `why` is NULL with `len` more than 0.
///
/// # Safety
/// `why` is NULL or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_current_driver(why: *mut std::ffi::c_char, len: usize) -> c_int {
    guard(|| {
        if let Err(c) = crate::buf::check("trio_current_driver", why, "why", len, "len") {
            return c;
        }
        if why.is_null() && len > 0 {
            return set_error(error::TRIO_EINVAL, "trio_current_driver: why is NULL but len is not 0");
        }
        let info = match trio::lowlevel::current_driver() {
            Ok(i) => i,
            Err(_) => return set_error(error::TRIO_ENORUN, "trio_current_driver: no run on this thread"),
        };
        if len > 0 {
            let text = info.fallback().unwrap_or("").as_bytes();
            let n = text.len().min(len - 1);
            // SAFETY: `why` has `len` writable bytes (the caller's
            // promise, checked non-NULL above); `n + 1 <= len`.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), why.cast::<u8>(), n);
                *why.add(n) = 0;
            }
        }
        match info.driver() {
            trio::Driver::Uring => TRIO_DRIVER_URING,
            _ => TRIO_DRIVER_EPOLL,
        }
    })
}

/// Sleeps for `seconds` (0 or more; fractions allowed; `INFINITY`, or a
/// duration too long to represent, sleeps until cancelled). A checkpoint.
///
/// Suspends only the calling C task. Returns 0; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled; `TRIO_EINVAL` for a negative or NaN
/// duration; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_sleep(seconds: f64) -> c_int {
    guard(|| {
        if seconds.is_nan() || seconds < 0.0 {
            return set_error(error::TRIO_EINVAL, format_args!("not a duration: {seconds}"));
        }
        match Duration::try_from_secs_f64(seconds) {
            Ok(d) => task::wait(trio::sleep(d)).map_or_else(|c| c, |()| 0),
            // Too long for a Duration: as long as forever.
            Err(_) => task::wait(trio::sleep_forever()).map_or_else(|c| c, |never| match never {}),
        }
    })
}

/// A checkpoint: lets other tasks run, and reports a pending cancellation.
///
/// Returns 0, `TRIO_ECANCELED`, or `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_checkpoint() -> c_int {
    guard(|| task::wait(trio::checkpoint()).map_or_else(|c| c, |()| 0))
}

/// The run's clock, in seconds since an arbitrary start, into `*out`.
///
/// Does not block. Returns 0, `TRIO_EINVAL` if `out` is NULL, `TRIO_ENORUN`
/// outside a run. `*out` is written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `double`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_now(out: *mut f64) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match trio::current_time() {
            // SAFETY: non-null, and the caller promised it is writable.
            Ok(t) => {
                unsafe { *out = t.as_nanos() as f64 / 1e9 };
                0
            }
            Err(e) => error::from_error(&e),
        }
    })
}

/// Opens a nursery in the calling C task and writes its handle to `*out`.
///
/// Until `trio_nursery_close`, everything the calling task does runs inside
/// the nursery (a failing child cancels it), and the nursery's children run
/// whenever the task waits on anything. Nurseries and cancel scopes close in
/// the reverse order of opening.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_ENORUN` outside a C
/// task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_nursery_open(out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let id = task::next_id();
        let state = Rc::new(NurseryState::new(id));
        let h = match handle::insert_rc(Kind::Nursery, state.clone()) {
            Ok(h) => h,
            Err(c) => return c,
        };
        if let Err(c) = task::open(Layer::Nursery(state), id) {
            let _ = handle::remove::<NurseryState>(h, Kind::Nursery);
            return c;
        }
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { *out = h };
        0
    })
}

/// Starts `fn(arg)` as a new C task in `nursery`. Does not block (the child
/// starts at the next scheduling point).
///
/// Returns 0; `TRIO_EINVAL` if `fn` is NULL; `TRIO_EBADHANDLE` for a handle
/// that is not an open nursery; `TRIO_ECLOSED` if the nursery is closing;
/// `TRIO_ENOMEM` if no stack could be allocated.
#[unsafe(no_mangle)]
pub extern "C" fn trio_nursery_spawn(nursery: trio_handle_t, func: TrioTaskFn, arg: *mut c_void) -> c_int {
    guard(|| match handle::get::<NurseryState>(nursery, Kind::Nursery) {
        Ok(state) => state.spawn(func, arg),
        Err(c) => c,
    })
}

/// Starts `fn(arg)` as a new C task in `nursery` and waits until it
/// reports that it is ready by calling `trio_task_started(value)`; writes
/// that value to `*value_out` (if not NULL). From then on the task runs on
/// as a child of the nursery, as if spawned (Trio's `nursery.start`): use
/// it for a task that must finish setting up (bind a port, open a file)
/// before the caller goes on.
///
/// Blocks the calling C task. Until it calls `trio_task_started`, the new
/// task runs under the caller's cancel scopes: cancelling the caller
/// cancels it, and its failure comes back from this call instead of going
/// to the nursery. A checkpoint.
///
/// Returns 0; the task's own error (its negative return value) if it
/// failed before `trio_task_started`; `TRIO_EMISUSE` if it returned 0
/// without calling it; `TRIO_ECANCELED` if the caller was cancelled first
/// (the task is cancelled too); `TRIO_EINVAL` if `fn` is NULL;
/// `TRIO_EBADHANDLE` for a handle that is not an open nursery;
/// `TRIO_ECLOSED` if the nursery is closed; `TRIO_ENORUN` outside a C task;
/// `TRIO_ENOMEM` if no stack could be allocated. `*value_out` is written
/// only on success.
///
/// # Safety
/// `value_out` is NULL or points to a writable `void *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_nursery_start(
    nursery: trio_handle_t,
    func: TrioTaskFn,
    arg: *mut c_void,
    value_out: *mut *mut c_void,
) -> c_int {
    guard(|| {
        if func.is_none() {
            return set_error(error::TRIO_EINVAL, "the task function is NULL");
        }
        let state = match handle::get::<NurseryState>(nursery, Kind::Nursery) {
            Ok(s) => s,
            Err(c) => return c,
        };
        match state.start(func, arg) {
            Ok(v) => {
                if !value_out.is_null() {
                    // SAFETY: non-null, and the caller promised it is writable.
                    unsafe { *value_out = v as *mut c_void };
                }
                0
            }
            Err(c) => c,
        }
    })
}

/// Reports that the calling C task, started by `trio_nursery_start`, is
/// ready: that call returns `value` to its caller, and this task moves into
/// the nursery. Call it once.
///
/// Does not block and is not a checkpoint. Returns 0; `TRIO_EMISUSE` if the
/// calling task was not started by `trio_nursery_start` or already called
/// this; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_task_started(value: *mut c_void) -> c_int {
    guard(|| match task::started(value as usize) {
        Ok(()) => 0,
        Err(c) => c,
    })
}

/// Cancels `nursery`: its children and the region of the task that opened
/// it. Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_nursery_cancel(nursery: trio_handle_t) -> c_int {
    guard(|| match handle::get::<NurseryState>(nursery, Kind::Nursery) {
        Ok(state) => state.cancel(),
        Err(c) => c,
    })
}

/// Closes `nursery`: waits until every child has finished, then frees the
/// handle. Must be called by the task that opened it, for its innermost open
/// nursery or scope.
///
/// Blocks the calling C task. If a child failed, the others were cancelled
/// and the error is returned (`TRIO_EGROUP` for several; see
/// `trio_last_error`). Returns 0 also when the nursery was cancelled by
/// `trio_nursery_cancel`; `TRIO_ECANCELED` if an enclosing scope was
/// cancelled; `TRIO_EBADHANDLE`; `TRIO_EINVAL` if it is not the calling
/// task's innermost nursery or scope; `TRIO_ENORUN` outside a C task (in a
/// `trio_token_run_sync_soon` callback).
#[unsafe(no_mangle)]
pub extern "C" fn trio_nursery_close(nursery: trio_handle_t) -> c_int {
    guard(|| {
        let state = match handle::get::<NurseryState>(nursery, Kind::Nursery) {
            Ok(s) => s,
            Err(c) => return c,
        };
        match task::innermost_layer() {
            Ok(id) if id == state.layer() => {}
            Ok(_) => {
                return set_error(
                    error::TRIO_EINVAL,
                    "not the calling task's innermost open nursery or scope (close them in reverse order)",
                );
            }
            Err(c) => return c,
        }
        // The handle stays valid while the children finish: they may spawn
        // siblings into it.
        let r = task::close();
        let _ = handle::remove::<NurseryState>(nursery, Kind::Nursery);
        match r {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => task::note_error(&e),
            Err(c) => c,
        }
    })
}

/// Opens a cancel scope in the calling C task and writes its handle to
/// `*out`. `timeout` is a relative deadline in seconds (negative or
/// infinite: none); `shield` non-zero shields the scope from outer
/// cancellation. The deadline counts from now on the run's clock; when it
/// passes, every wait inside the scope returns `TRIO_ECANCELED`, and
/// `trio_cancel_scope_close` reports that the scope caught it.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL or `timeout` is NaN;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_cancel_scope_open(timeout: f64, shield: c_int, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if timeout.is_nan() {
            return set_error(error::TRIO_EINVAL, "timeout is NaN");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let scope = match Duration::try_from_secs_f64(timeout) {
            Ok(d) if timeout.is_finite() => CancelScope::with_timeout(d),
            _ => CancelScope::new(),
        };
        scope.set_shield(shield != 0);
        let id = task::next_id();
        let h = match handle::insert(Kind::CancelScope, ScopeState { scope: scope.clone(), layer: id }) {
            Ok(h) => h,
            Err(c) => return c,
        };
        if let Err(c) = task::open(Layer::Scope(scope), id) {
            let _ = handle::remove::<ScopeState>(h, Kind::CancelScope);
            return c;
        }
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { *out = h };
        0
    })
}

/// Cancels `scope` (any task may). Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_cancel_scope_cancel(scope: trio_handle_t) -> c_int {
    guard(|| match handle::get::<ScopeState>(scope, Kind::CancelScope) {
        Ok(s) => {
            s.scope.cancel();
            0
        }
        Err(c) => c,
    })
}

/// Closes `scope`, the calling task's innermost open nursery or scope, and
/// frees the handle. Does not wait for anything else.
///
/// Returns 1 if the scope caught a cancellation (its own deadline or
/// `trio_cancel_scope_cancel` cancelled a call inside it), 0 if not;
/// `TRIO_ECANCELED` if an outer scope's cancellation passes through it;
/// `TRIO_EBADHANDLE`; `TRIO_EINVAL` if it is not the innermost;
/// `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_cancel_scope_close(scope: trio_handle_t) -> c_int {
    guard(|| {
        let state = match handle::get::<ScopeState>(scope, Kind::CancelScope) {
            Ok(s) => s,
            Err(c) => return c,
        };
        match task::innermost_layer() {
            Ok(id) if id == state.layer => {}
            Ok(_) => {
                return set_error(
                    error::TRIO_EINVAL,
                    "not the calling task's innermost open nursery or scope (close them in reverse order)",
                );
            }
            Err(c) => return c,
        }
        let _ = handle::remove::<ScopeState>(scope, Kind::CancelScope);
        match task::close() {
            Ok(Ok(())) => i32::from(state.scope.cancelled_caught()),
            Ok(Err(e)) => task::note_error(&e),
            Err(c) => c,
        }
    })
}
