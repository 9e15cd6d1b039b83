//! What each platform's socket API spells its own way: error codes, flags
//! and options the networking layer needs, named here so that `net/` names
//! no platform (the driver boundary of `driver/mod.rs`).

#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
use std::io;

/// The OS errors that say "out of resources, try again later" (Trio's
/// `ACCEPT_CAPACITY_ERRNOS`), with their names for messages.
pub(crate) fn capacity_errors() -> &'static [(i32, &'static str)] {
    #[cfg(any(unix, target_os = "wasi"))]
    return &[(libc::EMFILE, "EMFILE"), (libc::ENFILE, "ENFILE"), (libc::ENOMEM, "ENOMEM"), (libc::ENOBUFS, "ENOBUFS")];
    // WSAEMFILE, WSAENOBUFS.
    #[cfg(windows)]
    return &[(10024, "WSAEMFILE"), (10055, "WSAENOBUFS")];
    #[cfg(not(any(unix, windows, target_os = "wasi")))]
    return &[];
}

/// "Too many open files" as an OS error (`EMFILE`), for a backend whose
/// own error for it has another shape (WASI preview 2's
/// `new-socket-limit`), so that `serve_listeners` treats it as natively.
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) fn too_many_open_files() -> io::Error {
    io::Error::from_raw_os_error(libc::EMFILE)
}

/// The OS error code of "address family not supported", where there is one.
pub(crate) fn address_family_not_supported() -> Option<i32> {
    #[cfg(any(unix, target_os = "wasi"))]
    return Some(libc::EAFNOSUPPORT);
    // WSAEAFNOSUPPORT.
    #[cfg(windows)]
    return Some(10047);
    #[cfg(not(any(unix, windows, target_os = "wasi")))]
    None
}

/// `connect` on a non-blocking socket started and will finish later
/// (`EINPROGRESS` on Unix, `WSAEWOULDBLOCK` on Windows).
#[cfg(not(target_os = "wasi"))]
pub(crate) fn connect_in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// An `accept` error that only means a queued connection died before it
/// was taken (Trio ignores `ECONNABORTED`, `EPROTO` and, for Linux
/// firewalls, `EPERM`): the next accept may succeed.
#[cfg(not(target_os = "wasi"))]
pub(crate) fn accept_error_is_transient(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::ConnectionAborted {
        return true;
    }
    #[cfg(unix)]
    if matches!(e.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM)) {
        return true;
    }
    false
}

/// Flags for `send` so that a closed peer is an `EPIPE` error, never a
/// `SIGPIPE` (Apple has no such flag: socket2 sets `SO_NOSIGPIPE` there).
#[cfg(not(target_os = "wasi"))]
pub(crate) const SEND_FLAGS: std::ffi::c_int = {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd"
    ))]
    {
        libc::MSG_NOSIGNAL
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd"
    )))]
    {
        0
    }
};

/// Makes `sock` non-blocking: one system call (`ioctl(FIONBIO)`) on Unix,
/// where socket2's `set_nonblocking` reads and writes the flags (two).
#[cfg(not(target_os = "wasi"))]
pub(crate) fn set_nonblocking(sock: &socket2::Socket) -> io::Result<()> {
    #[cfg(unix)]
    {
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor and a pointer to an int, as FIONBIO
        // expects.
        if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(sock), libc::FIONBIO, &on) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(unix))]
    sock.set_nonblocking(true)
}

/// Linux's `IP_BIND_ADDRESS_NO_PORT`: `bind` takes the IP only, and
/// `connect` picks the port knowing the destination, so connections from
/// one local address do not each need a port of their own. Best effort;
/// nothing elsewhere.
#[cfg(not(target_os = "wasi"))]
pub(crate) fn bind_address_no_port(sock: &socket2::Socket) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, and a pointer to a `c_int`
        // with its size, as the option expects.
        let _ = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = sock;
}

/// The OS monotonic clock in nanoseconds from an arbitrary start, read as
/// directly as the platform allows (`clock_gettime(CLOCK_MONOTONIC)` on
/// Unix, which is what `std::time::Instant` reads too, without its
/// conversions): the run reads it for every deadline a scope sets.
#[cfg(unix)]
#[inline]
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists
    // on every Unix we build for, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// See the Unix version: elsewhere, `std::time::Instant` from a start of
/// the process's choosing.
#[cfg(not(unix))]
pub(crate) fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
