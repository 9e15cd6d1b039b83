//! Panics stay inside libtrio: a panic inside a C API call (a bug) becomes
//! `TRIO_EPANIC` with its message and location in `trio_last_error`, and
//! nothing is printed to the C program's stderr, unless the environment
//! variable `TRIO_DEBUG_PANICS` is set (not empty, not `0`) when libtrio is
//! first called: then the panic also goes to the hook that was there before
//! (Rust's default one prints the message, and a backtrace with
//! `RUST_BACKTRACE=1`).
//!
//! The hook is installed once, by the first C API call. It handles only
//! panics raised on a thread while it is inside a C API call: any other
//! panic (a Rust program or test linking this crate, a thread libtrio did
//! not enter) goes to the previous hook as before.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::Once;

thread_local! {
    /// How many C API calls this thread is inside (C tasks nest them).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The message and location of the last panic inside a call.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Whether `TRIO_DEBUG_PANICS` asks for panics to be printed.
fn debug_wanted(v: Option<std::ffi::OsString>) -> bool {
    v.is_some_and(|v| !v.is_empty() && v != "0")
}

fn install() {
    let debug = debug_wanted(std::env::var_os("TRIO_DEBUG_PANICS"));
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
        let inside = DEPTH.try_with(Cell::get).unwrap_or(0) > 0;
        if !inside {
            previous(info);
            return;
        }
        let msg = if let Some(s) = info.payload().downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(a panic payload that is not a string)".to_owned()
        };
        let text = match info.location() {
            Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
            None => msg,
        };
        let _ = CAUGHT.try_with(|c| *c.borrow_mut() = Some(text));
        if debug {
            previous(info);
        }
    }));
}

/// Leaves a call: the depth goes back down, also when unwinding.
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// `catch_unwind(f)`, with the hook installed and this thread marked as
/// inside a C API call. On a panic, `Err` has the message and location
/// the hook saw (`None` if it did not see it: another hook replaced ours).
pub(crate) fn catching<R>(f: impl FnOnce() -> R) -> Result<R, (Box<dyn std::any::Any + Send>, Option<String>)> {
    INSTALL.call_once(install);
    let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
    let inside = Inside;
    let r = catch_unwind(AssertUnwindSafe(f));
    drop(inside);
    r.map_err(|payload| (payload, CAUGHT.try_with(|c| c.borrow_mut().take()).ok().flatten()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{self, TRIO_EPANIC};
    use std::ffi::{CStr, c_char};

    fn last() -> String {
        let mut buf = vec![0 as c_char; 1024];
        unsafe { error::trio_last_error(buf.as_mut_ptr(), buf.len()) };
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_owned()
    }

    #[test]
    fn debug_wanted_reads_the_variable() {
        assert!(!debug_wanted(None));
        assert!(!debug_wanted(Some("".into())));
        assert!(!debug_wanted(Some("0".into())));
        assert!(debug_wanted(Some("1".into())));
    }

    const CHILD: &str = "TRIO_FFI_PANIC_TEST_CHILD";

    /// In a child process (this test binary run again on this test alone,
    /// without output capture): a panic inside a call prints nothing to
    /// stderr unless TRIO_DEBUG_PANICS=1, and its message and location are
    /// the detail of TRIO_EPANIC.
    #[test]
    fn a_panic_inside_a_call_prints_nothing_unless_asked() {
        if std::env::var_os(CHILD).is_some() {
            let code = error::guard(|| panic!("deliberate panic {}", 4242));
            assert_eq!(code, TRIO_EPANIC);
            let detail = last();
            assert!(detail.starts_with("panic in libtrio: deliberate panic 4242 (at "), "{detail}");
            assert!(detail.contains("panics.rs:"), "{detail}");
            // A panic outside any call still goes to the previous hook.
            let outside = std::panic::catch_unwind(|| panic!("outside panic 5151"));
            assert!(outside.is_err());
            return;
        }
        let exe = std::env::current_exe().unwrap();
        for debug in [None, Some("1")] {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--exact", "panics::tests::a_panic_inside_a_call_prints_nothing_unless_asked", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(CHILD, "1")
                .env_remove("TRIO_DEBUG_PANICS")
                .env_remove("RUST_BACKTRACE");
            if let Some(d) = debug {
                cmd.env("TRIO_DEBUG_PANICS", d);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
            assert!(stdout.contains("1 passed"), "the child ran the test: {stdout}");
            assert_eq!(
                stderr.contains("deliberate panic 4242"),
                debug.is_some(),
                "TRIO_DEBUG_PANICS={debug:?}: {stderr}"
            );
            assert!(stderr.contains("outside panic 5151"), "{stderr}");
        }
    }
}
