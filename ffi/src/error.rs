//! Status codes, the per-thread error detail, and the panic boundary.
//!
//! Every C function returns an `int`: 0 (or a positive count) on success, a
//! negative `TRIO_E*` code on failure. Our codes live in their own range
//! (-1001 and below) so that a C task returning `-1` or `-errno` of its own is
//! never mistaken for one of them. The code says *what kind* of failure; the
//! detail (a message, kept per thread like `errno`) says *which*: the OS
//! message of an I/O error, the members of an error group, the handle that
//! was stale. [`guard`] is the door every `extern "C"` body goes through: a
//! Rust panic inside becomes `TRIO_EPANIC` instead of unwinding into C.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int};
use std::fmt::Display;

use trio::Error;

use crate::task::TaskFailed;

/// Success. (Some calls return a positive count instead.)
pub const TRIO_OK: c_int = 0;
/// An argument was invalid: a NULL pointer where one is required, a size
/// out of range, a NULL function. Nothing was done.
pub const TRIO_EINVAL: c_int = -1001;
/// A handle was 0, stale (already closed: double close), of the wrong kind
/// (a lock passed where a nursery is expected), or made by another run (a
/// run on another thread, or one that has ended). Nothing was done.
pub const TRIO_EBADHANDLE: c_int = -1002;
/// The call needs a running loop: it was made outside `trio_run`, from a
/// thread other than the loop's, or (for calls that wait) outside a C task.
pub const TRIO_ENORUN: c_int = -1003;
/// The call was cancelled by an enclosing cancel scope or nursery. Return it
/// from your task (or pass it on) so the scope that cancelled can catch it.
pub const TRIO_ECANCELED: c_int = -1004;
/// A deadline set to fail (not just cancel) expired before the operation
/// finished (`trio::Error::TooSlow`).
pub const TRIO_ETIMEDOUT: c_int = -1005;
/// The object was already closed by this side (use after close).
pub const TRIO_ECLOSED: c_int = -1006;
/// The other side is gone: the peer reset the connection, every receiver of
/// a channel was closed.
pub const TRIO_EBROKEN: c_int = -1007;
/// Another task is already waiting on this object in the same way (two
/// tasks receiving on one socket at once).
pub const TRIO_EBUSY: c_int = -1008;
/// A non-blocking (`try_`) call would have had to wait.
pub const TRIO_EWOULDBLOCK: c_int = -1009;
/// Every sender of a channel is closed and its buffer is empty: no value
/// will ever come.
pub const TRIO_EENDOFCHANNEL: c_int = -1010;
/// Ctrl-C (SIGINT) interrupted the run: every task was cancelled and
/// finished its cleanup.
pub const TRIO_EINTERRUPTED: c_int = -1011;
/// An operating-system error; the detail has the OS message and
/// `trio_last_os_error` the `errno` value.
pub const TRIO_EIO: c_int = -1012;
/// Memory (or a task stack) could not be allocated.
pub const TRIO_ENOMEM: c_int = -1013;
/// A bug inside libtrio: a Rust panic was caught at the C boundary. The
/// detail has the panic message and location; nothing is printed unless
/// the environment variable `TRIO_DEBUG_PANICS=1` was set when libtrio was
/// first called. Please report it.
pub const TRIO_EPANIC: c_int = -1014;
/// The operation is not supported on this platform or for this object.
pub const TRIO_EUNSUPPORTED: c_int = -1015;
/// Several errors at once (for example from different children of one
/// nursery); the detail lists them.
pub const TRIO_EGROUP: c_int = -1016;
/// A C task failed with a negative status of its own (one that is not a
/// `TRIO_E*` code); the detail names the value.
pub const TRIO_EUSER: c_int = -1017;
/// The runtime was used the wrong way (a lock released by a task that does
/// not hold it, a semaphore released too often, ...); the detail says how.
pub const TRIO_EMISUSE: c_int = -1018;

/// Every code with its name and message, for `trio_strerror` and tests.
const CODES: &[(c_int, &str, &CStr)] = &[
    (TRIO_OK, "TRIO_OK", c"success"),
    (TRIO_EINVAL, "TRIO_EINVAL", c"invalid argument"),
    (TRIO_EBADHANDLE, "TRIO_EBADHANDLE", c"bad handle (zero, stale, closed, of the wrong kind, or of another run)"),
    (TRIO_ENORUN, "TRIO_ENORUN", c"no trio run on this thread (or not called from a C task)"),
    (TRIO_ECANCELED, "TRIO_ECANCELED", c"cancelled"),
    (TRIO_ETIMEDOUT, "TRIO_ETIMEDOUT", c"deadline expired (too slow)"),
    (TRIO_ECLOSED, "TRIO_ECLOSED", c"resource closed"),
    (TRIO_EBROKEN, "TRIO_EBROKEN", c"resource broken: the other side is gone"),
    (TRIO_EBUSY, "TRIO_EBUSY", c"another task is already waiting on this resource"),
    (TRIO_EWOULDBLOCK, "TRIO_EWOULDBLOCK", c"operation would block"),
    (TRIO_EENDOFCHANNEL, "TRIO_EENDOFCHANNEL", c"end of channel"),
    (TRIO_EINTERRUPTED, "TRIO_EINTERRUPTED", c"interrupted by Ctrl-C"),
    (TRIO_EIO, "TRIO_EIO", c"operating-system I/O error"),
    (TRIO_ENOMEM, "TRIO_ENOMEM", c"out of memory"),
    (TRIO_EPANIC, "TRIO_EPANIC", c"internal error: a Rust panic was caught (a bug in libtrio)"),
    (TRIO_EUNSUPPORTED, "TRIO_EUNSUPPORTED", c"operation not supported"),
    (TRIO_EGROUP, "TRIO_EGROUP", c"several errors"),
    (TRIO_EUSER, "TRIO_EUSER", c"a C task failed with its own error status"),
    (TRIO_EMISUSE, "TRIO_EMISUSE", c"runtime misuse"),
];

/// The name of a status code (`"TRIO_ECANCELED"`), or `None` if unknown.
pub(crate) fn code_name(code: c_int) -> Option<&'static str> {
    CODES.iter().find(|c| c.0 == code).map(|c| c.1)
}

/// Returns a static, NUL-terminated English message for a status code:
/// `trio_strerror(TRIO_ECANCELED)` is `"cancelled"`. Unknown codes give
/// `"unknown trio error code"`. Never NULL; do not free it. Does not block;
/// may be called from any thread, inside or outside `trio_run`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_strerror(code: c_int) -> *const c_char {
    guard_or(c"unknown trio error code".as_ptr(), || {
        CODES.iter().find(|c| c.0 == code).map_or(c"unknown trio error code", |c| c.2).as_ptr()
    })
}

/// The last failure on this thread.
#[derive(Default)]
struct Last {
    /// Its code (0 if nothing failed yet).
    code: c_int,
    /// Its detail message.
    detail: String,
    /// The OS error number behind a `TRIO_EIO`, else 0.
    os_error: i32,
    /// The id of the C task that failed (0 outside C tasks).
    task: usize,
}

thread_local! {
    static LAST: RefCell<Last> = RefCell::new(Last::default());
}

fn record(code: c_int, detail: String, os_error: i32) {
    // `try_with`: a failure during thread teardown has nowhere to go.
    let task = crate::task::running_task_id();
    let _ = LAST.try_with(|l| *l.borrow_mut() = Last { code, detail, os_error, task });
}

/// The detail of this thread's last failure if it has code `code` and C
/// task `task` (not 0) recorded it: what a C task returning `code` failed
/// with.
pub(crate) fn own_detail(code: c_int, task: usize) -> Option<String> {
    LAST.try_with(|l| {
        let l = l.borrow();
        (task != 0 && l.task == task && l.code == code).then(|| l.detail.clone())
    })
    .ok()
    .flatten()
}

/// Sets this thread's last error to `code` with the message `detail` (as
/// if a libtrio call had failed with them), and returns `code`: a C task
/// that fails with a code of its own can say why, and that message reaches
/// whoever gets the failure (the detail of `trio_run`, of
/// `trio_nursery_close` and of a `TRIO_EGROUP` lists each failed child's
/// code with the detail of its own last failure with that code):
/// `return trio_set_last_error(-1, "config file missing");`.
///
/// `detail` is copied (invalid UTF-8 is replaced); `trio_last_error`
/// returns it until the next failure on this thread. Does not block; any
/// thread, inside or outside `trio_run`.
///
/// Returns `code`; `TRIO_EINVAL` if `code` is not negative or `detail` is
/// NULL (nothing is set but that error).
///
/// # Safety
/// `detail` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_set_last_error(code: c_int, detail: *const c_char) -> c_int {
    guard(|| {
        if code >= 0 {
            return set_error(TRIO_EINVAL, format_args!("trio_set_last_error: code is {code}, not negative"));
        }
        if detail.is_null() {
            return set_error(TRIO_EINVAL, "trio_set_last_error: detail is NULL");
        }
        // SAFETY: non-null and NUL-terminated (the caller's promise).
        let d = unsafe { CStr::from_ptr(detail) }.to_string_lossy().into_owned();
        set_error(code, d)
    })
}

/// Records `detail` as this thread's last error and returns `code`, so a
/// failing path reads `return set_error(TRIO_EINVAL, "buf is NULL")`.
pub(crate) fn set_error(code: c_int, detail: impl Display) -> c_int {
    record(code, detail.to_string(), 0);
    code
}

/// The code for `e`, recording its message (and OS error) as the detail.
pub(crate) fn from_error(e: &Error) -> c_int {
    let code = code_of(e);
    record(code, e.to_string(), os_error_of(e));
    code
}

/// The `errno` value behind `e`, 0 if none: an I/O error's own, or one
/// found in its chain of sources (happy eyeballs wraps each attempt's error
/// with its address), or the first one in a group.
fn os_error_of(e: &Error) -> i32 {
    match e {
        Error::Io(io) => {
            if let Some(n) = io.raw_os_error() {
                return n;
            }
            let mut source: Option<&(dyn std::error::Error + 'static)> = io.get_ref().map(|r| r as _);
            // Bounded: a source chain is short, and this one cannot loop.
            for _ in 0..16 {
                let Some(s) = source else { break };
                if let Some(n) = s.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
                    return n;
                }
                source = s.source();
            }
            0
        }
        Error::Group(v) => v.iter().map(os_error_of).find(|n| *n != 0).unwrap_or(0),
        _ => 0,
    }
}

/// Maps every variant of `trio::Error` to a status code.
fn code_of(e: &Error) -> c_int {
    match e {
        Error::Cancelled(_) => TRIO_ECANCELED,
        Error::TooSlow => TRIO_ETIMEDOUT,
        Error::Closed => TRIO_ECLOSED,
        Error::Broken => TRIO_EBROKEN,
        Error::Busy => TRIO_EBUSY,
        Error::WouldBlock => TRIO_EWOULDBLOCK,
        Error::EndOfChannel => TRIO_EENDOFCHANNEL,
        Error::RunFinished => TRIO_ENORUN,
        Error::KeyboardInterrupt => TRIO_EINTERRUPTED,
        Error::Io(io) if io.kind() == std::io::ErrorKind::OutOfMemory => TRIO_ENOMEM,
        Error::Io(io) if io.kind() == std::io::ErrorKind::Unsupported => TRIO_EUNSUPPORTED,
        Error::Io(_) => TRIO_EIO,
        Error::Group(_) => TRIO_EGROUP,
        // A C task's failure keeps its code if it is one of ours.
        Error::User(u) => match u.downcast_ref::<TaskFailed>() {
            Some(t) if code_name(t.0).is_some() => t.0,
            _ => TRIO_EUSER,
        },
        // The runtime's "no run here" messages are the C caller's ENORUN;
        // the rest are misuse of an object.
        Error::Runtime(msg) if msg.contains("outside") || msg.contains("cannot nest") => TRIO_ENORUN,
        Error::Runtime(_) => TRIO_EMISUSE,
        // A variant newer than this file: the detail still has its message.
        _ => TRIO_EUNSUPPORTED,
    }
}

/// Copies this thread's last error detail (the message of the most recent
/// call that failed on this thread, like `errno`; successful calls do not
/// clear it) into `buf`, NUL-terminated and truncated to `len` bytes
/// including the NUL.
///
/// Returns the length of the whole message without the NUL, like
/// `snprintf`: if that is `>= len` the copy was truncated. `buf` may be
/// NULL when `len` is 0 (to learn the length). Returns 0 with an empty
/// string if nothing failed yet, `TRIO_EINVAL` if `buf` is NULL and `len`
/// is not 0 or `len` is more than `PTRDIFF_MAX` (then the detail is that
/// refusal). Does not block; any thread, inside or outside `trio_run`.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_last_error(buf: *mut c_char, len: usize) -> c_int {
    guard(|| {
        if let Err(c) = crate::buf::check("trio_last_error", buf, "buf", len, "len") {
            return c;
        }
        let copy = |detail: &str| {
            let bytes = detail.as_bytes();
            if len > 0 {
                let n = bytes.len().min(len - 1);
                // SAFETY: `buf` points to `len` writable bytes (the caller's
                // promise) and `n + 1 <= len`; `bytes` is a separate Rust
                // allocation, so the ranges do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            c_int::try_from(bytes.len()).unwrap_or(c_int::MAX)
        };
        LAST.try_with(|l| copy(&l.borrow().detail)).unwrap_or_else(|_| copy(""))
    })
}

/// The OS error number (`errno`) behind this thread's last failure if it
/// was an operating-system error (`TRIO_EIO`), else 0. On Windows it is the
/// Winsock or Win32 error code (`WSAECONNREFUSED`, ...), not an `errno`
/// value. Does not block; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn trio_last_os_error() -> c_int {
    guard(|| LAST.try_with(|l| l.borrow().os_error).unwrap_or(0))
}

/// The code of this thread's last failure (0 if no call has failed yet).
/// Does not block; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn trio_last_error_code() -> c_int {
    guard(|| LAST.try_with(|l| l.borrow().code).unwrap_or(0))
}

/// Runs `f` behind the panic boundary: a Rust panic inside becomes
/// `TRIO_EPANIC`, with the panic message as the detail, instead of unwinding
/// into C (undefined behaviour). Every `extern "C"` body goes through here.
/// The panic itself prints nothing (see `panics.rs`).
pub(crate) fn guard(f: impl FnOnce() -> c_int) -> c_int {
    crate::panics::catching(f).unwrap_or_else(|(payload, seen)| {
        let msg = seen.unwrap_or_else(|| panic_message(&*payload).to_owned());
        set_error(TRIO_EPANIC, format_args!("panic in libtrio: {msg}"))
    })
}

/// [`guard`] for functions that do not return a status: `on_panic` is
/// returned after a panic (whose message becomes the detail).
pub(crate) fn guard_or<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    crate::panics::catching(f).unwrap_or_else(|(payload, seen)| {
        let msg = seen.unwrap_or_else(|| panic_message(&*payload).to_owned());
        set_error(TRIO_EPANIC, format_args!("panic in libtrio: {msg}"));
        on_panic
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a panic payload that is not a string)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        let n = unsafe { trio_last_error(std::ptr::null_mut(), 0) };
        let mut buf = vec![0 as c_char; n as usize + 1];
        unsafe { trio_last_error(buf.as_mut_ptr(), buf.len()) };
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn codes_are_distinct_negative_and_named() {
        for (i, (code, name, msg)) in CODES.iter().enumerate() {
            assert!(*code < 0 || *name == "TRIO_OK");
            assert!(CODES[i + 1..].iter().all(|c| c.0 != *code), "{name} repeats a value");
            let s = unsafe { CStr::from_ptr(trio_strerror(*code)) };
            assert_eq!(s, *msg);
        }
        assert_eq!(unsafe { CStr::from_ptr(trio_strerror(-1)) }, c"unknown trio error code");
        assert_eq!(unsafe { CStr::from_ptr(trio_strerror(1)) }, c"unknown trio error code");
    }

    #[test]
    fn every_error_variant_maps_to_a_code() {
        let io = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let cases: Vec<(Error, c_int)> = vec![
            (Error::cancelled(), TRIO_ECANCELED),
            (Error::TooSlow, TRIO_ETIMEDOUT),
            (Error::Closed, TRIO_ECLOSED),
            (Error::Broken, TRIO_EBROKEN),
            (Error::Busy, TRIO_EBUSY),
            (Error::WouldBlock, TRIO_EWOULDBLOCK),
            (Error::EndOfChannel, TRIO_EENDOFCHANNEL),
            (Error::RunFinished, TRIO_ENORUN),
            (Error::KeyboardInterrupt, TRIO_EINTERRUPTED),
            (Error::Io(io), TRIO_EIO),
            (Error::Group(vec![Error::Busy, Error::Closed]), TRIO_EGROUP),
            (Error::from("boom"), TRIO_EUSER),
            (Error::Runtime("called outside trio::run"), TRIO_ENORUN),
            (Error::Runtime("Semaphore released too many times"), TRIO_EMISUSE),
        ];
        for (e, code) in cases {
            assert_eq!(from_error(&e), code, "{e:?}");
            assert_eq!(last(), e.to_string());
        }
        assert_eq!(trio_last_os_error(), 0);
        from_error(&Error::Io(std::io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert_eq!(trio_last_os_error(), libc::ECONNREFUSED);
        // Wrapped with a message (as happy eyeballs does per address), and
        // in a group.
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "connecting to 127.0.0.1:1: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = || {
            let inner = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
            Error::Io(std::io::Error::new(inner.kind(), Wrapped(inner)))
        };
        from_error(&Error::cancelled());
        assert_eq!(trio_last_os_error(), 0);
        from_error(&wrapped());
        assert_eq!(trio_last_os_error(), libc::ECONNREFUSED);
        from_error(&Error::cancelled());
        from_error(&Error::Group(vec![Error::Busy, wrapped(), wrapped()]));
        assert_eq!(trio_last_os_error(), libc::ECONNREFUSED);
    }

    #[test]
    fn a_c_tasks_status_keeps_our_codes_and_wraps_its_own() {
        assert_eq!(from_error(&Error::user(TaskFailed(TRIO_EBADHANDLE, None))), TRIO_EBADHANDLE);
        assert_eq!(from_error(&Error::user(TaskFailed(-1, None))), TRIO_EUSER);
        assert!(last().contains("-1"), "{}", last());
        let g = Error::combine(vec![
            Error::user(TaskFailed(-42, Some("no config".into()))),
            Error::user(TaskFailed(TRIO_EINVAL, Some("size is 0".into()))),
            Error::Closed,
        ])
        .unwrap();
        assert_eq!(from_error(&g), TRIO_EGROUP);
        assert_eq!(
            last(),
            "3 errors: [0] a C task returned -42 (no config); [1] a C task returned -1001 (TRIO_EINVAL: size is 0); \
             [2] resource closed;"
        );
    }

    #[test]
    fn set_last_error_sets_the_detail_and_returns_the_code() {
        assert_eq!(unsafe { trio_set_last_error(-7, c"no config".as_ptr()) }, -7);
        assert_eq!(last(), "no config");
        assert_eq!(trio_last_error_code(), -7);
        assert_eq!(unsafe { trio_set_last_error(0, c"x".as_ptr()) }, TRIO_EINVAL);
        assert!(last().contains("code is 0"), "{}", last());
        assert_eq!(unsafe { trio_set_last_error(-1, std::ptr::null()) }, TRIO_EINVAL);
        assert!(last().contains("detail is NULL"), "{}", last());
    }

    #[test]
    fn last_error_truncates_like_snprintf() {
        set_error(TRIO_EINVAL, "0123456789");
        assert_eq!(unsafe { trio_last_error(std::ptr::null_mut(), 0) }, 10);
        let mut buf = [b'x' as c_char; 4];
        assert_eq!(unsafe { trio_last_error(buf.as_mut_ptr(), 4) }, 10);
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }, c"012");
        assert_eq!(unsafe { trio_last_error(buf.as_mut_ptr(), 1) }, 10);
        assert_eq!(buf[0], 0);
        assert_eq!(unsafe { trio_last_error(std::ptr::null_mut(), 5) }, TRIO_EINVAL);
        assert!(last().contains("buf is NULL"));
    }

    #[test]
    fn a_panic_becomes_epanic() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let code = guard(|| panic!("deliberate {}", 42));
        let ptr = guard_or(std::ptr::null::<u8>(), || panic!("static message"));
        std::panic::set_hook(prev);
        assert_eq!(code, TRIO_EPANIC);
        assert!(ptr.is_null());
        // With its location if our hook saw it (another test may have
        // replaced it meanwhile).
        assert!(last().starts_with("panic in libtrio: static message"), "{}", last());
    }
}
