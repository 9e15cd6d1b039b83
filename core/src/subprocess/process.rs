//! `open_process` and `Process`: spawning through `std::process::Command`,
//! waiting for exit on the run's I/O driver, reaping exactly once.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;

use super::pipe::{PipeReceiveStream, PipeSendStream, pipe_cloexec, set_nonblocking};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::runtime::io::Dir;
use crate::signal::Signal;
use crate::sync::Lock;

/// Where one of the child's standard streams goes (see [`StdioOptions`]).
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Redirect {
    /// The parent's own stream (the default, as with `std` and Trio).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A new pipe: the parent's end becomes [`Process::stdin`],
    /// [`Process::stdout`] or [`Process::stderr`].
    Pipe,
    /// This descriptor (a file, a pipe end, a socket...). It is handed to the
    /// child and closed in the parent once the child is spawned.
    Fd(OwnedFd),
    /// For stderr only: the same place as stdout (Trio's
    /// `stderr=subprocess.STDOUT`), so both are interleaved in one stream.
    Stdout,
}

impl From<OwnedFd> for Redirect {
    fn from(fd: OwnedFd) -> Redirect {
        Redirect::Fd(fd)
    }
}

impl From<std::fs::File> for Redirect {
    fn from(f: std::fs::File) -> Redirect {
        Redirect::Fd(f.into())
    }
}

/// The standard streams of a child started by [`open_process`]. Each one
/// is [`Redirect::Inherit`] unless set.
#[derive(Debug, Default)]
pub struct StdioOptions {
    pub(super) stdin: Redirect,
    pub(super) stdout: Redirect,
    pub(super) stderr: Redirect,
}

impl StdioOptions {
    /// All three inherited.
    pub fn new() -> StdioOptions {
        StdioOptions::default()
    }

    /// All three piped.
    pub fn piped() -> StdioOptions {
        StdioOptions { stdin: Redirect::Pipe, stdout: Redirect::Pipe, stderr: Redirect::Pipe }
    }

    /// Sets where stdin comes from.
    pub fn stdin(mut self, r: impl Into<Redirect>) -> StdioOptions {
        self.stdin = r.into();
        self
    }

    /// Sets where stdout goes.
    pub fn stdout(mut self, r: impl Into<Redirect>) -> StdioOptions {
        self.stdout = r.into();
        self
    }

    /// Sets where stderr goes ([`Redirect::Stdout`] to merge it into
    /// stdout).
    pub fn stderr(mut self, r: impl Into<Redirect>) -> StdioOptions {
        self.stderr = r.into();
        self
    }
}

/// The child's side of one standard stream, before it becomes a `Stdio`.
enum ChildSide {
    Inherit,
    Null,
    Fd(OwnedFd),
}

impl ChildSide {
    /// The same destination again, for `stderr = Stdout` (`parent_fd`: the
    /// parent's own descriptor for `Inherit`).
    fn duplicate(&self, parent_fd: libc::c_int) -> io::Result<ChildSide> {
        Ok(match self {
            ChildSide::Null => ChildSide::Null,
            ChildSide::Fd(fd) => ChildSide::Fd(fd.try_clone()?),
            ChildSide::Inherit => {
                // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor we then own.
                let fd = unsafe { libc::fcntl(parent_fd, libc::F_DUPFD_CLOEXEC, 3) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just created and nobody else owns it.
                ChildSide::Fd(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })
    }

    fn into_stdio(self) -> Stdio {
        match self {
            ChildSide::Inherit => Stdio::inherit(),
            ChildSide::Null => Stdio::null(),
            ChildSide::Fd(fd) => Stdio::from(fd),
        }
    }
}

pub(super) fn invalid(msg: &str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned()))
}

/// Resolves one `Redirect` into the child's side and, for a pipe, the
/// parent's end (`parent_reads`: the parent reads from the pipe).
fn resolve(r: Redirect, parent_reads: bool) -> Result<(ChildSide, Option<OwnedFd>)> {
    Ok(match r {
        Redirect::Inherit => (ChildSide::Inherit, None),
        Redirect::Null => (ChildSide::Null, None),
        Redirect::Fd(fd) => (ChildSide::Fd(fd), None),
        Redirect::Pipe => {
            let (r, w) = pipe_cloexec()?;
            if parent_reads { (ChildSide::Fd(w), Some(r)) } else { (ChildSide::Fd(r), Some(w)) }
        }
        Redirect::Stdout => return Err(invalid("Redirect::Stdout is only valid for stderr")),
    })
}

/// Starts `cmd` as a child process with the standard streams of `stdio`,
/// like Trio's `trio.lowlevel.open_process`. Nothing supervises the child:
/// wait for it ([`Process::wait`]) or use [`run_process`](super::run_process).
///
/// The `Command` keeps everything else you configured (arguments,
/// environment, working directory, `pre_exec`, process group...). Its stdin,
/// stdout and stderr settings are replaced by `stdio`, and reset to
/// `Stdio::inherit()` after the spawn so that the `Command` holds no pipe
/// end (which would keep the child's output from ever reaching end of
/// stream).
///
/// The pipes are made here: close-on-exec on both ends (no other child
/// inherits them), and the parent's ends non-blocking and registered with
/// the run. The spawn itself runs on the run's thread (`fork`/`exec` or
/// `posix_spawn` through `std`, which returns once the program was
/// executed). Not a checkpoint.
///
/// # Errors
/// [`Error::Io`] if the spawn fails (for example `NotFound` for a missing
/// program) or pipes cannot be made, or with `InvalidInput` for
/// [`Redirect::Stdout`] anywhere but stderr; [`Error::Runtime`] outside
/// `trio::run` when a pipe is requested. On error nothing is left open.
pub fn open_process(cmd: &mut Command, stdio: StdioOptions) -> Result<Process> {
    let StdioOptions { stdin, stdout, stderr } = stdio;
    if matches!(stdin, Redirect::Stdout) || matches!(stdout, Redirect::Stdout) {
        return Err(invalid("Redirect::Stdout is only valid for stderr"));
    }
    let (child_in, parent_in) = resolve(stdin, false)?;
    let (child_out, parent_out) = resolve(stdout, true)?;
    let (child_err, parent_err) = match stderr {
        Redirect::Stdout => (child_out.duplicate(libc::STDOUT_FILENO)?, None),
        other => resolve(other, true)?,
    };
    // Register the parent's ends before spawning, so a failure (for example
    // outside `trio::run`) leaves no child behind.
    let stdin = parent_in.map(PipeSendStream::from_fd).transpose()?;
    let stdout = parent_out.map(PipeReceiveStream::from_fd).transpose()?;
    let stderr = parent_err.map(PipeReceiveStream::from_fd).transpose()?;

    cmd.stdin(child_in.into_stdio()).stdout(child_out.into_stdio()).stderr(child_err.into_stdio());
    let spawned = cmd.spawn();
    // Close the child's ends, which the `Command` holds.
    cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let child = spawned?;
    Ok(Process {
        stdin,
        stdout,
        stderr,
        pid: child.id(),
        child: RefCell::new(Some(child)),
        status: Cell::new(None),
        watch: RefCell::new(None),
        wait_lock: Lock::new(),
    })
}

/// A child process started by [`open_process`] (Trio's `trio.Process`).
///
/// The standard streams that were piped are here as streams; use them in
/// place, or take them (`process.stdout.take()`) to hand them elsewhere.
///
/// # Waiting and reaping
/// [`wait`](Process::wait) sleeps until the child exits without blocking
/// the run: on Linux it waits for a pidfd (`pidfd_open`) to become readable
/// on the run's I/O driver; where `pidfd_open` is missing (other Unixes, old
/// kernels, some sandboxes) a helper thread blocks in
/// `waitid(.., WEXITED | WNOWAIT)`, which does not reap, and then closes a
/// pipe that the run is watching. The child is then reaped exactly once,
/// through `std`'s `Child`, and its status kept:
/// [`returncode`](Process::returncode) and later `wait`s return it.
///
/// # Dropping
/// Dropping a `Process` whose child was not reaped yet kills the child
/// (`SIGKILL`) and reaps it on a short-lived background thread, so no
/// zombie is left behind. Wait for the child first to let it finish.
///
/// `Process` also implements [`AsyncResource`](crate::abc::AsyncResource):
/// `aclose` closes the pipes and waits for the child (killing it if the
/// wait is cancelled).
pub struct Process {
    /// The parent's end of the child's stdin, if it was [`Redirect::Pipe`].
    pub stdin: Option<PipeSendStream>,
    /// The parent's end of the child's stdout, if it was [`Redirect::Pipe`].
    pub stdout: Option<PipeReceiveStream>,
    /// The parent's end of the child's stderr, if it was [`Redirect::Pipe`].
    pub stderr: Option<PipeReceiveStream>,
    pid: u32,
    /// `None` only while being dropped.
    child: RefCell<Option<Child>>,
    /// Set once the child is reaped.
    status: Cell<Option<ExitStatus>>,
    /// What `wait` waits on, made on first use, dropped once reaped.
    watch: RefCell<Option<Rc<ExitWatch>>>,
    /// One waiter at a time waits on the watch; the others queue here.
    wait_lock: Lock,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("status", &self.status.get())
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish_non_exhaustive()
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

impl Process {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's exit status if it has exited (it is reaped then), `None`
    /// while it runs. Never blocks; not a checkpoint. Like Trio's
    /// `returncode`, it is always up to date: no `wait` needed first.
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.try_reap().ok().flatten()
    }

    /// Reaps the child if it has exited. `Err` if `waitpid` fails (for
    /// example `ECHILD`: someone else reaped it, or `SIGCHLD` is ignored).
    fn try_reap(&self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status.get() {
            return Ok(Some(s));
        }
        let polled = match self.child.borrow_mut().as_mut() {
            Some(child) => child.try_wait()?,
            None => return Err(Error::Runtime("a Process was used while being dropped")),
        };
        if let Some(s) = polled {
            self.reaped(s);
        }
        Ok(polled)
    }

    /// Records the status and closes the watch (a parked waiter wakes with
    /// `Closed` and finds the status).
    fn reaped(&self, status: ExitStatus) {
        self.status.set(Some(status));
        let watch = self.watch.borrow_mut().take();
        if let Some(w) = watch {
            w.io.release();
        }
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

    /// Waits until the child exits, reaps it, and returns its exit status.
    /// Several tasks may wait at once; once reaped, every call returns the
    /// same status at once.
    ///
    /// # Checkpoint
    /// Always.
    /// # Cancellation
    /// Returns `Err(Cancelled)`; the child keeps running (kill it, or use
    /// [`run_process`](super::run_process), which does).
    /// # Errors
    /// [`Error::Io`] if the child cannot be waited for (`ECHILD`: reaped by
    /// someone else, for example because `SIGCHLD` is set to be ignored);
    /// [`Error::Runtime`] outside the run that spawned it.
    pub async fn wait(&self) -> Result<ExitStatus> {
        let _guard = self.wait_lock.lock().await?;
        // Bounded: a turn ends in a return, or in `Closed` because the watch
        // was dropped (after a reap: the next turn returns) or deregistered
        // behind our back (`notify_closing`: the next turn registers anew).
        for _ in 0..3 {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            let watch = self.watch()?;
            match watch.io.wait_ready(Dir::Read).await {
                Ok(()) => {
                    // The child has exited: this reaps it without blocking
                    // (its status is there by now).
                    let status = match self.child.borrow_mut().as_mut() {
                        Some(child) => child.wait()?,
                        None => return Err(Error::Runtime("a Process was used while being dropped")),
                    };
                    self.reaped(status);
                    return Ok(status);
                }
                Err(Error::Closed) => {
                    let mut slot = self.watch.borrow_mut();
                    if slot.as_ref().is_some_and(|w| Rc::ptr_eq(w, &watch)) {
                        *slot = None;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Closed)
    }

    /// Sends `sig` to the child. Does nothing once the child was reaped (its
    /// pid may belong to another process by then). Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`] from `kill(2)` (for example `EINVAL` for a bad signal
    /// number).
    pub fn send_signal(&self, sig: Signal) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall; the pid is our unreaped child, so it cannot
        // have been reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig.as_raw()) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(Error::Io(e));
            }
        }
        Ok(())
    }

    /// Asks the child to exit: `SIGTERM` (it may catch or ignore it). Not a
    /// checkpoint.
    ///
    /// # Errors
    /// As [`send_signal`](Process::send_signal).
    pub fn terminate(&self) -> Result<()> {
        self.send_signal(Signal::SIGTERM)
    }

    /// Kills the child: `SIGKILL`, which it cannot ignore. It dies soon
    /// after, not necessarily before this returns: [`wait`](Process::wait)
    /// for it. Not a checkpoint.
    ///
    /// # Errors
    /// As [`send_signal`](Process::send_signal).
    pub fn kill(&self) -> Result<()> {
        self.send_signal(Signal::from_raw(libc::SIGKILL))
    }
}

impl crate::abc::AsyncResource for Process {
    /// Closes the pipes this `Process` still holds, then waits for the child
    /// to exit (Trio's old `async with process`). If the wait is cancelled
    /// (or fails), the child is killed and reaped (shielded from
    /// cancellation) before the error is returned.
    async fn aclose(&self) -> Result<()> {
        if let Some(s) = &self.stdin {
            s.close_now();
        }
        if let Some(s) = &self.stdout {
            s.close_now();
        }
        if let Some(s) = &self.stderr {
            s.close_now();
        }
        match self.wait().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = self.kill();
                crate::CancelScope::shielded().run(self.wait()).await?;
                Err(e)
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.get().is_some() {
            return;
        }
        let Some(mut child) = self.child.get_mut().take() else { return };
        match child.try_wait() {
            Ok(None) => {}
            // Exited (and now reaped), or not ours to reap.
            Ok(Some(_)) | Err(_) => return,
        }
        let _ = child.kill();
        let pid = self.pid;
        // `Child` owns nothing but the pid (its stdio handles are `None`),
        // so reaping through the raw pid is all that is left to do.
        drop(child);
        if std::thread::Builder::new().name(format!("trio-reap-{pid}")).spawn(move || reap_blocking(pid)).is_err() {
            // No thread: reap here. The child was just sent SIGKILL, so this
            // blocks only until the kernel has torn it down.
            reap_blocking(pid);
        }
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
