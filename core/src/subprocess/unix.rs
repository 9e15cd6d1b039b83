//! The Unix parts of `subprocess`: pipe descriptors made non-blocking and
//! read with `read(2)`/`write(2)`, pipes made close-on-exec, and waiting for
//! a child through a pidfd or a `waitid` thread.

#[cfg(test)]
use std::cell::Cell;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Child;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::runtime::io::Dir;

/// What a child's standard stream can be given as (see `Redirect::Fd`).
pub(super) type OwnedStdio = OwnedFd;

/// The parent's end of a pipe: a descriptor made non-blocking. Dropping it
/// closes the descriptor, making it blocking again first if it was when it
/// was handed over (it may be shared with another process).
#[derive(Debug)]
pub(super) struct PipeHandle {
    fd: OwnedFd,
    restore_blocking: bool,
}

impl PipeHandle {
    /// Makes `fd` non-blocking.
    pub(super) fn new(fd: OwnedFd) -> io::Result<PipeHandle> {
        let was_nonblocking = get_nonblocking(&fd)?;
        if !was_nonblocking {
            set_nonblocking(&fd, true)?;
        }
        Ok(PipeHandle { fd, restore_blocking: !was_nonblocking })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Registers the descriptor with the current run.
    pub(super) fn register(&self) -> Result<IoHandle> {
        IoHandle::new(self.fd.as_raw_fd())
    }
}

impl Drop for PipeHandle {
    fn drop(&mut self) {
        if self.restore_blocking {
            let _ = set_nonblocking(&self.fd, false);
        }
    }
}

/// `read(2)` into `buf`.
pub(super) fn read(h: &PipeHandle, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(h.raw(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `write(2)` of `buf`.
pub(super) fn write(h: &PipeHandle, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe { libc::write(h.raw(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A pipe for `open_pipe`: `(read, write)`, both close-on-exec.
pub(super) fn anonymous_pipe() -> io::Result<(PipeHandle, PipeHandle)> {
    let (r, w) = pipe_cloexec()?;
    Ok((PipeHandle::new(r)?, PipeHandle::new(w)?))
}

/// A pipe between the parent and a child: `(child's end, parent's end)`
/// (`parent_reads`: the child writes into it). Both ends close-on-exec
/// (`std` makes the child's its stdin, stdout or stderr).
pub(super) fn pipe_for_child(parent_reads: bool) -> io::Result<(OwnedStdio, PipeHandle)> {
    let (r, w) = pipe_cloexec()?;
    if parent_reads { Ok((w, PipeHandle::new(r)?)) } else { Ok((r, PipeHandle::new(w)?)) }
}

/// A close-on-exec duplicate of the parent's stdout (for `stderr =
/// Redirect::Stdout` with stdout inherited).
pub(super) fn dup_parent_stdout() -> io::Result<Option<OwnedStdio>> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor we then own.
    let fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nobody else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn get_nonblocking(fd: &OwnedFd) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK` on `fd`'s open file description.
fn set_nonblocking(fd: &OwnedFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let new = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        if new != flags && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe whose two ends are close-on-exec (and blocking): `(read, write)`.
fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    #[cfg(not(any(target_vendor = "apple", target_os = "aix", target_os = "haiku")))]
    {
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }
    #[cfg(any(target_vendor = "apple", target_os = "aix", target_os = "haiku"))]
    {
        // No pipe2: a `fork` on another thread between `pipe` and `fcntl`
        // could inherit the descriptors (std's own pipes have the same race
        // on these systems).
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&r, &w] {
            // SAFETY: F_SETFD on a descriptor we own.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((r, w))
    }
}

/// A descriptor that becomes readable when the child exits: a pidfd, or the
/// read end of a pipe whose writer (a `waitid` thread) closes it then.
/// Field order: deregistered before closed.
#[derive(Debug)]
struct ExitWatch {
    io: IoHandle,
    _fd: OwnedFd,
}

impl ExitWatch {
    fn new(fd: OwnedFd) -> Result<ExitWatch> {
        let io = IoHandle::new(fd.as_raw_fd())?;
        Ok(ExitWatch { io, _fd: fd })
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: skip `pidfd_open` to exercise the thread fallback.
    pub(super) static FORCE_THREAD_WATCH: Cell<bool> = const { Cell::new(false) };
}

/// `pidfd_open(pid)`, where it exists.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    #[cfg(test)]
    if FORCE_THREAD_WATCH.get() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    // SAFETY: the syscall takes a pid and flags and returns a new descriptor
    // (always close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pidfd_open(_pid: u32) -> io::Result<OwnedFd> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The fallback watch: a thread blocks in `waitid(P_PID, pid, WEXITED |
/// WNOWAIT)` (the child stays reapable) and then closes the write end of a
/// pipe, which makes the read end readable (end of stream). The thread ends
/// when the child exits, or at once if `waitid` fails.
fn thread_watch(pid: u32) -> io::Result<OwnedFd> {
    let (r, w) = pipe_cloexec()?;
    set_nonblocking(&r, true)?;
    std::thread::Builder::new().name(format!("trio-waitid-{pid}")).spawn(move || {
        // Bounded by the child's lifetime; only EINTR retries.
        loop {
            // SAFETY: a zeroed siginfo_t is a valid out-parameter.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid with a valid out-parameter.
            let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        drop(w);
    })?;
    Ok(r)
}

/// What `Process::wait` waits on: a descriptor that becomes readable when
/// the child exits (a pidfd, or a pipe closed by a `waitid` thread), made
/// on first use, dropped once the child is reaped.
#[derive(Debug)]
pub(super) struct ExitWaiter {
    pid: u32,
    watch: RefCell<Option<Rc<ExitWatch>>>,
}

impl ExitWaiter {
    pub(super) fn new(child: &Child) -> ExitWaiter {
        ExitWaiter { pid: child.id(), watch: RefCell::new(None) }
    }

    /// The watch, made on first use.
    fn watch(&self) -> Result<Rc<ExitWatch>> {
        if let Some(w) = self.watch.borrow().as_ref() {
            return Ok(w.clone());
        }
        let fd = match pidfd_open(self.pid) {
            Ok(fd) => fd,
            Err(_) => thread_watch(self.pid)?,
        };
        let w = Rc::new(ExitWatch::new(fd)?);
        *self.watch.borrow_mut() = Some(w.clone());
        Ok(w)
    }

    /// Waits until the child has exited (without reaping it): `Ok(true)`.
    /// `Ok(false)` if the watch was closed meanwhile (the child was reaped,
    /// or someone called `notify_closing` on it): look again.
    pub(super) async fn wait_exit(&self) -> Result<bool> {
        let watch = self.watch()?;
        match watch.io.wait_ready(Dir::Read).await {
            Ok(()) => Ok(true),
            Err(Error::Closed) => {
                let mut slot = self.watch.borrow_mut();
                if slot.as_ref().is_some_and(|w| Rc::ptr_eq(w, &watch)) {
                    *slot = None;
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The child was reaped: close the watch (a parked waiter wakes with
    /// `Closed` and finds the status).
    pub(super) fn reaped(&self) {
        let watch = self.watch.borrow_mut().take();
        if let Some(w) = watch {
            w.io.release();
        }
    }
}

/// `kill(pid, sig)`; a child that is gone already is not an error.
pub(super) fn send_signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall; the pid is our unreaped child, so it cannot
    // have been reused.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(Error::Io(e));
        }
    }
    Ok(())
}

/// The end of a `Process` dropped while its child runs: `SIGKILL`, then
/// reaped on a short-lived background thread so no zombie is left behind.
pub(super) fn kill_and_reap_in_background(mut child: Child) {
    let _ = child.kill();
    let pid = child.id();
    // `Child` owns nothing but the pid (its stdio handles are `None`),
    // so reaping through the raw pid is all that is left to do.
    drop(child);
    if std::thread::Builder::new().name(format!("trio-reap-{pid}")).spawn(move || reap_blocking(pid)).is_err() {
        // No thread: reap here. The child was just sent SIGKILL, so this
        // blocks only until the kernel has torn it down.
        reap_blocking(pid);
    }
}

/// `waitpid(pid, 0)`, retried on `EINTR`. Bounded by the child's death.
fn reap_blocking(pid: u32) {
    let mut st = 0;
    // SAFETY: plain syscall on our own unreaped child.
    while unsafe { libc::waitpid(pid as libc::pid_t, &mut st, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}
