//! The OS-level name of a worker thread while it runs a `to_thread` call
//! that set `Options::thread_name`. Only Linux renames the OS thread (with
//! `pthread_setname_np`, whose limit is 15 bytes); elsewhere this does
//! nothing and only `from_thread::thread_name` reports the name.

/// The bytes the OS gets for `name`, as Trio makes them: every non-ASCII
/// character becomes `?`, then the first 15 bytes are kept (the kernel's
/// limit; a C string also ends at a NUL, so the name is cut there too).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn os_bytes(name: &str) -> Vec<u8> {
    name.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }).take_while(|&b| b != 0).take(15).collect()
}

/// Renames the calling thread at the OS level until dropped, then puts its
/// previous OS name back (pool threads are reused).
#[derive(Debug)]
pub(crate) struct Rename {
    /// The name to put back (NUL-terminated), if one was read.
    #[cfg(target_os = "linux")]
    previous: Option<[u8; 16]>,
}

#[cfg(target_os = "linux")]
impl Rename {
    /// Gives the calling thread the OS name of `name` (see [`os_bytes`]).
    pub(crate) fn new(name: &str) -> Rename {
        let mut previous = [0u8; 16];
        // SAFETY: the buffer is 16 bytes long, as passed, and
        // `pthread_self` is the calling thread, which is alive.
        let got =
            unsafe { libc::pthread_getname_np(libc::pthread_self(), previous.as_mut_ptr().cast(), previous.len()) };
        let mut bytes = os_bytes(name);
        bytes.push(0);
        set(&bytes);
        Rename { previous: (got == 0).then_some(previous) }
    }
}

#[cfg(not(target_os = "linux"))]
impl Rename {
    /// Does nothing: only Linux renames OS threads here.
    pub(crate) fn new(_name: &str) -> Rename {
        Rename {}
    }
}

/// Sets the calling thread's OS name to `name`, which ends with a NUL and
/// has at most 15 bytes before it. A failure leaves the name as it was (a
/// name is a debugging aid; the call goes on).
#[cfg(target_os = "linux")]
fn set(name: &[u8]) {
    debug_assert!(name.len() <= 16 && name.last() == Some(&0));
    // SAFETY: `name` is NUL-terminated and at most 16 bytes including the
    // NUL, as `pthread_setname_np` requires; the thread is the caller.
    let _ = unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr().cast()) };
}

#[cfg(target_os = "linux")]
impl Drop for Rename {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            let end = previous.iter().position(|&b| b == 0).unwrap_or(15);
            let mut name = previous[..end].to_vec();
            name.push(0);
            set(&name);
        }
    }
}
