//! Console control events on Windows: Ctrl-C and Ctrl-Break, delivered as
//! `SIGINT` (the C runtime's number) to the same kind of listeners as the
//! Unix signal plumbing. Windows calls the handler on a thread of its own,
//! so listeners are called directly. The handler is added while any
//! listener exists and removed after the last one, which restores the
//! previous behaviour.
//!
//! Checked end to end under Wine in CI (`.ci/windows-ctrl-c`: a console
//! Ctrl-C reaches the run as `KeyboardInterrupt`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Win32::Foundation::{FALSE, TRUE};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT, SetConsoleCtrlHandler};
use windows_sys::core::BOOL;

type Deliver = Arc<dyn Fn(i32) + Send + Sync>;

struct Listener {
    id: u64,
    deliver: Deliver,
}

static LISTENERS: Mutex<Vec<Listener>> = Mutex::new(Vec::new());
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(1);

/// Signal numbers by name (only Ctrl-C exists here).
pub(crate) mod numbers {
    /// The C runtime's `SIGINT`.
    pub(crate) const SIGINT: i32 = 2;
}

unsafe extern "system" fn on_console_event(kind: u32) -> BOOL {
    if kind != CTRL_C_EVENT && kind != CTRL_BREAK_EVENT {
        return FALSE;
    }
    let targets: Vec<Deliver> =
        LISTENERS.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|l| l.deliver.clone()).collect();
    if targets.is_empty() {
        return FALSE;
    }
    for deliver in targets {
        deliver(numbers::SIGINT);
    }
    TRUE
}

/// A registration: while alive, `deliver` is called for each Ctrl-C.
pub(crate) struct Registration {
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

/// Starts listening for `signals` (only `SIGINT` is supported here).
///
/// # Errors
/// `Unsupported` for any other signal; the OS error if the handler cannot
/// be added.
pub(crate) fn listen(signals: &[i32], deliver: Deliver) -> io::Result<Registration> {
    if signals.iter().any(|&s| s != numbers::SIGINT) {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "only Ctrl-C (SIGINT) is supported on Windows"));
    }
    let mut list = LISTENERS.lock().unwrap_or_else(PoisonError::into_inner);
    if list.is_empty() {
        // SAFETY: registering a handler with the signature Windows expects.
        if unsafe { SetConsoleCtrlHandler(Some(on_console_event), TRUE) } == 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let id = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
    list.push(Listener { id, deliver });
    Ok(Registration { id })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut list = LISTENERS.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|l| l.id != self.id);
        if list.is_empty() {
            // SAFETY: removing the handler added in `listen`.
            unsafe {
                SetConsoleCtrlHandler(Some(on_console_event), FALSE);
            }
        }
    }
}

/// Re-raising is not possible for console events; an unread Ctrl-C is
/// dropped when its receiver closes.
pub(crate) fn raise(_sig: i32) {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Ctrl-Break reaches the listeners as Ctrl-C does (as `SIGINT`), and
    /// other console events (closing the console, logging off) are left to
    /// the next handler. The handler is called directly: Wine cannot send
    /// a console Ctrl-Break to a process without a console
    /// (`GenerateConsoleCtrlEvent` fails there), and `.ci/windows-ctrl-c`
    /// covers a real Ctrl-C end to end.
    #[test]
    fn ctrl_break_is_delivered_as_sigint_and_other_events_are_not() {
        use windows_sys::Win32::System::Console::CTRL_CLOSE_EVENT;
        let got = Arc::new(AtomicUsize::new(0));
        let seen = got.clone();
        let registration = listen(
            &[numbers::SIGINT],
            Arc::new(move |sig| {
                assert_eq!(sig, numbers::SIGINT);
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("adding the console handler");
        // SAFETY: the handler is an ordinary function; Windows would call
        // it the same way on its own thread.
        unsafe {
            assert_eq!(on_console_event(CTRL_BREAK_EVENT), TRUE);
            assert_eq!(on_console_event(CTRL_C_EVENT), TRUE);
            assert_eq!(on_console_event(CTRL_CLOSE_EVENT), FALSE);
        }
        assert_eq!(got.load(Ordering::SeqCst), 2);
        drop(registration);
        // SAFETY: as above. (Other tests' runs may listen meanwhile, so
        // only this listener's count is checked.)
        unsafe { on_console_event(CTRL_BREAK_EVENT) };
        assert_eq!(got.load(Ordering::SeqCst), 2, "a dropped registration hears nothing");
    }
}
