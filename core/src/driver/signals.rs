//! OS signal plumbing (Unix): handlers, a self-pipe, and a dispatch thread.
//!
//! The handler is async-signal-safe: it sets a per-signal flag and writes
//! one byte to a pipe. A process-wide dispatch thread reads the pipe and
//! hands each pending signal to the registered listeners (runs with a Ctrl-C
//! handler, open signal receivers). Installing a signal saves the previous
//! disposition; when the last user of that signal goes away, the previous
//! disposition is restored exactly, unless the program has put a handler of
//! its own in place meanwhile: then that one stays (a run restores only what
//! it changed, as Trio's Ctrl-C handling does).
//!
//! A registration that goes away first restores the disposition, then hands
//! its listener any of its signals that the handler caught but the dispatch
//! thread has not passed on yet (both under the dispatch lock), so a signal
//! raised just before a receiver closes reaches that receiver (which hands
//! it back to the restored handler) instead of being lost. A caught signal
//! that finds no listener at all once its handler is gone is raised again.
//!
//! Why not `signal-hook-registry` (tokio's): it never restores the previous
//! disposition when the last action goes away (a closed receiver would leave
//! `SIGINT`/`SIGTERM` ignored), and it calls the previous handler as well
//! while its own is installed; Trio's semantics need both the other way.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};

/// Signal numbers go up to this (exclusive) on the platforms we support.
const MAX_SIGNAL: usize = 65;

static PENDING: [AtomicBool; MAX_SIGNAL] = [const { AtomicBool::new(false) }; MAX_SIGNAL];
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static DISPATCHER: Once = Once::new();
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(1);
/// Held while pending flags are taken and their signals delivered (by the
/// dispatch thread, or by a registration going away).
static DISPATCH: Mutex<()> = Mutex::new(());

type Deliver = Arc<dyn Fn(i32) + Send + Sync>;

struct Listener {
    id: u64,
    signals: Vec<i32>,
    deliver: Deliver,
}

struct Installed {
    users: usize,
    previous: libc::sigaction,
}

static LISTENERS: Mutex<Vec<Listener>> = Mutex::new(Vec::new());
static INSTALLED: Mutex<Option<HashMap<i32, Installed>>> = Mutex::new(None);

extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY (async-signal-safety): only atomics and write(2) here; errno is
    // saved and restored so the interrupted code does not see it change.
    let errno = io::Error::last_os_error().raw_os_error();
    if let Some(flag) = usize::try_from(sig).ok().and_then(|s| PENDING.get(s)) {
        flag.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: writing one byte from a valid stack buffer to a pipe fd.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    if let Some(e) = errno {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        unsafe { *errno_location() = e };
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: always valid on this thread.
    unsafe { libc::__errno_location() }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: always valid on this thread.
    unsafe { libc::__error() }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
)))]
unsafe fn errno_location() -> *mut libc::c_int {
    // SAFETY: always valid on this thread.
    unsafe { libc::__errno() }
}

fn start_dispatcher() -> io::Result<()> {
    let mut result = Ok(());
    DISPATCHER.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            result = Err(io::Error::last_os_error());
            return;
        }
        for fd in fds {
            // SAFETY: plain fcntl calls on descriptors we own.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // SAFETY: as above; the write end must never block in the handler.
        unsafe {
            let flags = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        WAKE_FD.store(fds[1], Ordering::SeqCst);
        let read_fd = fds[0];
        let spawned = std::thread::Builder::new().name("trio-signals".into()).spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reading into a valid buffer from our pipe.
                let n = unsafe { libc::read(read_fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted) {
                    return;
                }
                let _d = DISPATCH.lock().unwrap_or_else(PoisonError::into_inner);
                for (sig, flag) in PENDING.iter().enumerate() {
                    if flag.swap(false, Ordering::SeqCst) {
                        dispatch(sig as i32);
                    }
                }
            }
        });
        if let Err(e) = spawned {
            result = Err(e);
        }
    });
    result
}

/// Hands `sig` to its listeners (the caller holds `DISPATCH`). With none,
/// and our handler no longer installed (the last one went away between the
/// catch and now), raises it again for the handler now in place.
fn dispatch(sig: i32) {
    let targets: Vec<Deliver> = LISTENERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|l| l.signals.contains(&sig))
        .map(|l| l.deliver.clone())
        .collect();
    if targets.is_empty() {
        let ours =
            INSTALLED.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|m| m.contains_key(&sig));
        if !ours {
            raise(sig);
        }
        return;
    }
    for deliver in targets {
        deliver(sig);
    }
}

/// Whether `sig`'s disposition is our handler now.
fn ours_in_place(sig: i32) -> bool {
    // SAFETY: querying the disposition into a zeroed, valid sigaction.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t
    }
}

/// Puts our handler in place for `sig`; returns the disposition it replaced.
fn put_ours(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // sigaction(2) gets valid pointers for the new and the old action.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &new, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

fn install(sig: i32) -> io::Result<()> {
    if sig <= 0 || sig as usize >= MAX_SIGNAL || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("signal {sig} cannot be caught")));
    }
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let map = installed.get_or_insert_with(HashMap::new);
    if let Some(entry) = map.get_mut(&sig) {
        if !ours_in_place(sig) {
            // The program put its own handler in place meanwhile: a new
            // listener must hear the signal (as Trio's receiver, which always
            // installs its handler), and that handler is what the last one
            // restores.
            entry.previous = put_ours(sig)?;
        }
        entry.users += 1;
        return Ok(());
    }
    let previous = put_ours(sig)?;
    map.insert(sig, Installed { users: 1, previous });
    Ok(())
}

fn uninstall(sig: i32) {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(map) = installed.as_mut() else { return };
    let Some(entry) = map.get_mut(&sig) else { return };
    entry.users -= 1;
    if entry.users == 0 {
        let entry = map.remove(&sig).expect("present");
        // Only what we changed: a handler the program installed since stays.
        if ours_in_place(sig) {
            // SAFETY: restoring the disposition sigaction(2) gave us earlier.
            unsafe {
                libc::sigaction(sig, &entry.previous, std::ptr::null_mut());
            }
        }
    }
}

/// A registration: while alive, `deliver` is called (on the dispatch thread)
/// for each of its signals that arrives. Dropping it unregisters and, for
/// signals nobody else listens to, restores the previous handlers.
pub(crate) struct Registration {
    id: u64,
    signals: Vec<i32>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("signals", &self.signals).finish()
    }
}

/// Starts listening for `signals`.
///
/// # Errors
/// An invalid or uncatchable signal (`InvalidInput`), or an OS error.
pub(crate) fn listen(signals: &[i32], deliver: Deliver) -> io::Result<Registration> {
    start_dispatcher()?;
    let mut done = Vec::new();
    for &sig in signals {
        if done.contains(&sig) {
            continue;
        }
        if let Err(e) = install(sig) {
            for &s in &done {
                uninstall(s);
            }
            return Err(e);
        }
        done.push(sig);
    }
    let id = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
    LISTENERS.lock().unwrap_or_else(PoisonError::into_inner).push(Listener { id, signals: done.clone(), deliver });
    Ok(Registration { id, signals: done })
}

impl Drop for Registration {
    fn drop(&mut self) {
        // With the dispatch thread held off: restore the handlers (from now
        // on these signals take their previous course), then deliver what
        // was caught before that and not passed on yet (to every listener of
        // the signal, this one included), then stop listening.
        let _d = DISPATCH.lock().unwrap_or_else(PoisonError::into_inner);
        for &sig in &self.signals {
            uninstall(sig);
        }
        for &sig in &self.signals {
            if PENDING[sig as usize].swap(false, Ordering::SeqCst) {
                dispatch(sig);
            }
        }
        LISTENERS.lock().unwrap_or_else(PoisonError::into_inner).retain(|l| l.id != self.id);
    }
}

/// Signal numbers by name, for the public `Signal` constants.
pub(crate) mod numbers {
    pub(crate) const SIGHUP: i32 = libc::SIGHUP;
    pub(crate) const SIGINT: i32 = libc::SIGINT;
    pub(crate) const SIGQUIT: i32 = libc::SIGQUIT;
    pub(crate) const SIGTERM: i32 = libc::SIGTERM;
    pub(crate) const SIGUSR1: i32 = libc::SIGUSR1;
    pub(crate) const SIGUSR2: i32 = libc::SIGUSR2;
    pub(crate) const SIGWINCH: i32 = libc::SIGWINCH;
    pub(crate) const SIGCHLD: i32 = libc::SIGCHLD;
    pub(crate) const SIGPIPE: i32 = libc::SIGPIPE;
    pub(crate) const SIGALRM: i32 = libc::SIGALRM;
}

/// Sends `sig` to this process again (used to hand back signals a closed
/// receiver never read).
pub(crate) fn raise(sig: i32) {
    // SAFETY: raise(3) with a signal number; no memory is involved.
    unsafe {
        libc::raise(sig);
    }
}
