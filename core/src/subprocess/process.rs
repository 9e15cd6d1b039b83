//! `open_process` and `Process`: spawning through `std::process::Command`,
//! waiting for exit without blocking the run, reaping exactly once.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
#[cfg(unix)]
use std::os::fd::OwnedFd;
#[cfg(windows)]
use std::os::windows::io::OwnedHandle;
use std::process::{Child, Command, ExitStatus, Stdio};

use super::pipe::{PipeReceiveStream, PipeSendStream};
use super::sys::{self, ExitWaiter, OwnedStdio};
use crate::error::{Error, Result};
#[cfg(unix)]
use crate::signal::Signal;
use crate::sync::Lock;

/// Where one of the child's standard streams goes (see [`StdioOptions`]).
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Redirect {
    /// The parent's own stream (the default, as with `std` and Trio).
    #[default]
    Inherit,
    /// `/dev/null` (`NUL` on Windows).
    Null,
    /// A new pipe: the parent's end becomes [`Process::stdin`],
    /// [`Process::stdout`] or [`Process::stderr`].
    Pipe,
    /// This descriptor (a file, a pipe end, a socket...). It is handed to the
    /// child and closed in the parent once the child is spawned.
    #[cfg(unix)]
    Fd(OwnedFd),
    /// This handle (a file, a pipe end...). The child gets an inheritable
    /// duplicate (made by `std`), and it is closed in the parent once the
    /// child is spawned.
    #[cfg(windows)]
    Handle(OwnedHandle),
    /// For stderr only: the same place as stdout (Trio's
    /// `stderr=subprocess.STDOUT`), so both are interleaved in one stream.
    Stdout,
}

#[cfg(unix)]
impl From<OwnedFd> for Redirect {
    fn from(fd: OwnedFd) -> Redirect {
        Redirect::Fd(fd)
    }
}

#[cfg(windows)]
impl From<OwnedHandle> for Redirect {
    fn from(h: OwnedHandle) -> Redirect {
        Redirect::Handle(h)
    }
}

impl From<std::fs::File> for Redirect {
    fn from(f: std::fs::File) -> Redirect {
        #[cfg(unix)]
        return Redirect::Fd(f.into());
        #[cfg(windows)]
        return Redirect::Handle(f.into());
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
    Owned(OwnedStdio),
}

impl ChildSide {
    /// The same destination again, for `stderr = Stdout`.
    fn duplicate(&self) -> io::Result<ChildSide> {
        Ok(match self {
            ChildSide::Null => ChildSide::Null,
            ChildSide::Owned(h) => ChildSide::Owned(h.try_clone()?),
            ChildSide::Inherit => match sys::dup_parent_stdout()? {
                Some(h) => ChildSide::Owned(h),
                // No stdout to share (a Windows program without a
                // console): the child inherits the same nothing.
                None => ChildSide::Inherit,
            },
        })
    }

    fn into_stdio(self) -> Stdio {
        match self {
            ChildSide::Inherit => Stdio::inherit(),
            ChildSide::Null => Stdio::null(),
            ChildSide::Owned(h) => Stdio::from(h),
        }
    }
}

pub(super) fn invalid(msg: &str) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned()))
}

/// Resolves one `Redirect` into the child's side and, for a pipe, the
/// parent's end (`parent_reads`: the parent reads from the pipe).
fn resolve(r: Redirect, parent_reads: bool) -> Result<(ChildSide, Option<sys::PipeHandle>)> {
    Ok(match r {
        Redirect::Inherit => (ChildSide::Inherit, None),
        Redirect::Null => (ChildSide::Null, None),
        #[cfg(unix)]
        Redirect::Fd(fd) => (ChildSide::Owned(fd), None),
        #[cfg(windows)]
        Redirect::Handle(h) => (ChildSide::Owned(h), None),
        Redirect::Pipe => {
            let (child, parent) = sys::pipe_for_child(parent_reads)?;
            (ChildSide::Owned(child), Some(parent))
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
/// On Windows each pipe is a named pipe with a unique name
/// (`\\.\pipe\trio-<pid>-<counter>-<random>`, one instance, remote clients
/// refused): the parent's end is opened for overlapped I/O and watched by
/// the run's I/O completion port, the child's end is a plain synchronous
/// handle, not inheritable (`std` hands the child an inheritable duplicate
/// of it while spawning, so no other child can inherit it).
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
        Redirect::Stdout => (child_out.duplicate()?, None),
        other => resolve(other, true)?,
    };
    // Register the parent's ends before spawning, so a failure (for example
    // outside `trio::run`) leaves no child behind.
    let stdin = parent_in.map(PipeSendStream::from_handle).transpose()?;
    let stdout = parent_out.map(PipeReceiveStream::from_handle).transpose()?;
    let stderr = parent_err.map(PipeReceiveStream::from_handle).transpose()?;

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
        exit: ExitWaiter::new(&child),
        child: RefCell::new(Some(child)),
        status: Cell::new(None),
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
/// On Windows `wait` has the system thread pool wait for the process
/// handle (`RegisterWaitForSingleObject`), which wakes the waiting task
/// through the run's cross-thread queue; a cancelled wait unregisters it.
/// There is nothing to reap: the handle is closed when the `Process` is
/// dropped.
///
/// # Dropping
/// Dropping a `Process` whose child was not reaped yet kills the child
/// (`SIGKILL`; `TerminateProcess` on Windows) and reaps it on a
/// short-lived background thread (Unix), so no zombie is left behind. Wait
/// for the child first to let it finish.
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
    /// What `wait` waits on.
    exit: ExitWaiter,
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
        self.exit.reaped();
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
    /// someone else, for example because `SIGCHLD` is set to be ignored;
    /// on Windows: the thread pool refused to wait for it);
    /// [`Error::Runtime`] outside the run that spawned it (on Windows:
    /// outside any run).
    pub async fn wait(&self) -> Result<ExitStatus> {
        let _guard = self.wait_lock.lock().await?;
        // Bounded: a turn ends in a return, or in "look again" because the
        // watch was closed (after a reap: the next turn returns) or
        // deregistered behind our back (`notify_closing`: the next turn
        // registers anew).
        for _ in 0..3 {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            if self.exit.wait_exit().await? {
                // The child has exited: this reaps it without blocking
                // (its status is there by now).
                let status = match self.child.borrow_mut().as_mut() {
                    Some(child) => child.wait()?,
                    None => return Err(Error::Runtime("a Process was used while being dropped")),
                };
                self.reaped(status);
                return Ok(status);
            }
        }
        Err(Error::Closed)
    }

    /// Sends `sig` to the child. Does nothing once the child was reaped (its
    /// pid may belong to another process by then). Not a checkpoint. Unix
    /// only (Windows has no signals for other processes).
    ///
    /// # Errors
    /// [`Error::Io`] from `kill(2)` (for example `EINVAL` for a bad signal
    /// number).
    #[cfg(unix)]
    pub fn send_signal(&self, sig: Signal) -> Result<()> {
        if self.status.get().is_some() {
            return Ok(());
        }
        sys::send_signal(self.pid, sig.as_raw())
    }

    /// Asks the child to exit: `SIGTERM` (it may catch or ignore it). On
    /// Windows the same as [`kill`](Process::kill) (Trio's too). Not a
    /// checkpoint.
    ///
    /// # Errors
    /// As [`kill`](Process::kill).
    pub fn terminate(&self) -> Result<()> {
        #[cfg(unix)]
        return self.send_signal(Signal::SIGTERM);
        #[cfg(windows)]
        return self.kill();
    }

    /// Kills the child: `SIGKILL`, which it cannot ignore
    /// (`TerminateProcess` with exit code 1 on Windows). It dies soon after,
    /// not necessarily before this returns: [`wait`](Process::wait) for it.
    /// Does nothing once the child was reaped. Not a checkpoint.
    ///
    /// # Errors
    /// [`Error::Io`] from `kill(2)` or `TerminateProcess`.
    pub fn kill(&self) -> Result<()> {
        #[cfg(unix)]
        return self.send_signal(Signal::from_raw(libc::SIGKILL));
        #[cfg(windows)]
        {
            if self.status.get().is_some() {
                return Ok(());
            }
            match self.child.borrow_mut().as_mut() {
                // `std` reports success for a child that has exited already.
                Some(child) => Ok(child.kill()?),
                None => Err(Error::Runtime("a Process was used while being dropped")),
            }
        }
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
        sys::kill_and_reap_in_background(child);
    }
}
