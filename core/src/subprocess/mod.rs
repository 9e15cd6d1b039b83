//! Subprocesses: `run_process` and `open_process` (Unix and Windows),
//! after Trio's `trio.run_process` and `trio.lowlevel.open_process`.
//!
//! Both take a [`std::process::Command`] for everything about the program
//! (arguments, environment, working directory, `pre_exec`...) and options
//! for its standard streams. Pipes to and from the child are byte streams
//! ([`PipeSendStream`], [`PipeReceiveStream`]) on the run's I/O driver;
//! waiting for the child to exit does not block the run (see [`Process`]).
//!
//! Every child is reaped exactly once: by [`Process::wait`] (or
//! [`Process::returncode`] once it has exited), by [`run_process`] before it
//! returns, even when cancelled, or, for a `Process` dropped without that,
//! by a background thread after a `SIGKILL`.
//!
//! Writing to a pipe whose reader is gone reports
//! [`Error::Broken`] only while `SIGPIPE` is ignored,
//! which is how a Rust program starts (see [`PipeSendStream`]).
//!
//! # Windows
//! The same API, as Trio has it on Windows, with these differences:
//! - Pipes are named pipes with unique names (one instance, remote clients
//!   refused); the parent's end is opened for overlapped I/O and read and
//!   written through the run's I/O completion port (mio's named pipes), the
//!   child gets a plain synchronous handle. A write completes in the
//!   background, so a failed one is reported by the next write (see
//!   [`PipeSendStream`]).
//! - [`Process::wait`] has the system thread pool wait for the process
//!   handle (`RegisterWaitForSingleObject`) and wake the task through the
//!   run; there is no zombie to reap: the handle is closed with the
//!   `Process`.
//! - There are no signals: `Process::send_signal` is Unix-only,
//!   [`Process::kill`] and [`Process::terminate`] are both
//!   `TerminateProcess` (exit code 1), and a cancelled [`run_process`]
//!   terminates the child at once (no grace period).
//! - [`Redirect::Fd`] is `Redirect::Handle` (any handle, duplicated into
//!   the child by `std`), and the streams have `raw_handle` instead of
//!   `raw_fd`; there is no `from_fd` (an arbitrary handle may not be
//!   opened for overlapped I/O, which the run's completion port needs).
//!
//! ```
//! use std::process::Command;
//! use trio::subprocess::{RunProcessOptions, run_process};
//!
//! trio::run(async {
//!     let out = run_process(
//!         &mut Command::new("/bin/cat"),
//!         RunProcessOptions::new().input(b"hello".to_vec()).capture_stdout(true),
//!     )
//!     .await?;
//!     assert!(out.status.success());
//!     assert_eq!(out.stdout, b"hello");
//!     Ok(())
//! })
//! .unwrap();
//! ```

mod pipe;
mod process;
#[cfg(unix)]
#[path = "unix.rs"]
mod sys;
#[cfg(windows)]
#[path = "windows.rs"]
mod sys;

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::Duration;

pub use pipe::{PipeReceiveStream, PipeSendStream, open_pipe};
use process::invalid;
pub use process::{Process, Redirect, StdioOptions, open_process};

use crate::abc::{AsyncResource, ReceiveStream, SendStream};
use crate::error::{Error, Result};
use crate::{CancelScope, TaskStatus, open_nursery};

/// The result of a [`run_process`] whose child exited (Python's
/// `subprocess.CompletedProcess`).
#[derive(Debug, Clone)]
pub struct CompletedProcess {
    /// How the child exited.
    pub status: ExitStatus,
    /// What it wrote to stdout, if captured (else empty).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, if captured (else empty).
    pub stderr: Vec<u8>,
}

/// The error of a [`run_process`] with `check` on whose child did not exit
/// successfully (a non-zero exit code, or killed by a signal): Python's
/// `subprocess.CalledProcessError`. `run_process` returns it as
/// [`Error::User`]; get it back with `downcast_ref`:
///
/// ```
/// use std::process::Command;
/// use trio::Error;
/// use trio::subprocess::{CalledProcessError, RunProcessOptions, run_process};
///
/// trio::run(async {
///     let err = run_process(&mut Command::new("/bin/false"), RunProcessOptions::new())
///         .await
///         .unwrap_err();
///     let Error::User(e) = &err else { panic!("{err}") };
///     let failed = e.downcast_ref::<CalledProcessError>().unwrap();
///     assert_eq!(failed.status.code(), Some(1));
///     Ok(())
/// })
/// .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct CalledProcessError {
    /// The command, as `Command`'s `Debug` shows it.
    pub command: String,
    /// How the child exited.
    pub status: ExitStatus,
    /// What it wrote to stdout, if captured (else empty).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, if captured (else empty).
    pub stderr: Vec<u8>,
}

impl fmt::Display for CalledProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command {} failed: {}", self.command, self.status)
    }
}

impl std::error::Error for CalledProcessError {}

/// The future a custom [`deliver_cancel`](RunProcessOptions::deliver_cancel)
/// returns.
pub type DeliverCancelFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

type DeliverCancelFn = Rc<dyn for<'a> Fn(&'a Process) -> DeliverCancelFuture<'a>>;

/// How a cancelled [`run_process`] stops its child.
#[derive(Clone)]
enum DeliverCancel {
    /// `SIGTERM`, then `SIGKILL` after this long.
    TermThenKill(Duration),
    Custom(DeliverCancelFn),
}

/// What the child's stdin is.
#[derive(Debug)]
enum Input {
    Bytes(Vec<u8>),
    Redirect(Redirect),
}

/// The options of [`run_process`]. The defaults are Trio's: empty stdin,
/// output not captured (inherited), `check` on, and on cancellation
/// `SIGTERM` then `SIGKILL` after 5 seconds (on Windows `TerminateProcess`
/// at once).
pub struct RunProcessOptions {
    stdin: Input,
    stdout: Option<Redirect>,
    stderr: Option<Redirect>,
    capture_stdout: bool,
    capture_stderr: bool,
    check: bool,
    deliver_cancel: DeliverCancel,
    task_status: Option<TaskStatus<Rc<Process>>>,
}

impl fmt::Debug for RunProcessOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let deliver = match &self.deliver_cancel {
            DeliverCancel::TermThenKill(grace) => format!("TermThenKill({grace:?})"),
            DeliverCancel::Custom(_) => "Custom".to_owned(),
        };
        f.debug_struct("RunProcessOptions")
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("capture_stdout", &self.capture_stdout)
            .field("capture_stderr", &self.capture_stderr)
            .field("check", &self.check)
            .field("deliver_cancel", &deliver)
            .field("task_status", &self.task_status.is_some())
            .finish()
    }
}

impl Default for RunProcessOptions {
    fn default() -> RunProcessOptions {
        RunProcessOptions {
            stdin: Input::Bytes(Vec::new()),
            stdout: None,
            stderr: None,
            capture_stdout: false,
            capture_stderr: false,
            check: true,
            deliver_cancel: DeliverCancel::TermThenKill(DEFAULT_GRACE),
            task_status: None,
        }
    }
}

/// How long the default cancellation waits between `SIGTERM` and `SIGKILL`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

impl RunProcessOptions {
    /// The defaults (see the type's docs).
    pub fn new() -> RunProcessOptions {
        RunProcessOptions::default()
    }

    /// Feeds `data` to the child's stdin through a pipe, then closes it (the
    /// default is empty input: the child reads end of stream at once). If
    /// the child exits or closes its stdin without reading everything, the
    /// rest is dropped silently.
    pub fn input(mut self, data: impl Into<Vec<u8>>) -> RunProcessOptions {
        self.stdin = Input::Bytes(data.into());
        self
    }

    /// Sets the child's stdin to `r` instead of fed bytes, for example
    /// [`Redirect::Inherit`] to share the parent's (the `std` default).
    /// [`Redirect::Pipe`] needs [`task_status`](Self::task_status): the
    /// started [`Process`] then holds the pipe.
    pub fn stdin(mut self, r: impl Into<Redirect>) -> RunProcessOptions {
        self.stdin = Input::Redirect(r.into());
        self
    }

    /// Sets where the child's stdout goes (inherited by default); not
    /// together with [`capture_stdout`](Self::capture_stdout).
    /// [`Redirect::Pipe`] needs [`task_status`](Self::task_status).
    pub fn stdout(mut self, r: impl Into<Redirect>) -> RunProcessOptions {
        self.stdout = Some(r.into());
        self
    }

    /// Sets where the child's stderr goes (inherited by default);
    /// [`Redirect::Stdout`] merges it into stdout (and into the captured
    /// stdout). Not together with [`capture_stderr`](Self::capture_stderr).
    /// [`Redirect::Pipe`] needs [`task_status`](Self::task_status).
    pub fn stderr(mut self, r: impl Into<Redirect>) -> RunProcessOptions {
        self.stderr = Some(r.into());
        self
    }

    /// Collects what the child writes to stdout into
    /// [`CompletedProcess::stdout`] (read concurrently with everything else,
    /// so a full pipe cannot deadlock the child).
    pub fn capture_stdout(mut self, on: bool) -> RunProcessOptions {
        self.capture_stdout = on;
        self
    }

    /// Collects what the child writes to stderr into
    /// [`CompletedProcess::stderr`].
    pub fn capture_stderr(mut self, on: bool) -> RunProcessOptions {
        self.capture_stderr = on;
        self
    }

    /// With `check` on (the default), a child that does not exit
    /// successfully makes `run_process` fail with a [`CalledProcessError`].
    pub fn check(mut self, on: bool) -> RunProcessOptions {
        self.check = on;
        self
    }

    /// On cancellation, wait `grace` (on the run's clock) between `SIGTERM`
    /// and `SIGKILL` instead of [`DEFAULT_GRACE`]. Replaces a custom
    /// [`deliver_cancel`](Self::deliver_cancel). On Windows there is nothing
    /// to wait between: the child is terminated at once and `grace` is not
    /// used.
    pub fn kill_grace(mut self, grace: Duration) -> RunProcessOptions {
        self.deliver_cancel = DeliverCancel::TermThenKill(grace);
        self
    }

    /// On cancellation, run `f` to stop the child instead of the default
    /// `SIGTERM`-then-`SIGKILL`. It runs shielded from the cancellation, and
    /// is itself cancelled as soon as the child has exited; `run_process`
    /// waits for the child either way, so `f` must make it exit. An error
    /// from `f` is reported together with the cancellation.
    ///
    /// ```
    /// # use trio::subprocess::{Process, RunProcessOptions};
    /// let opts = RunProcessOptions::new()
    ///     .deliver_cancel(|p: &Process| Box::pin(async move { p.kill() }));
    /// ```
    pub fn deliver_cancel<F>(mut self, f: F) -> RunProcessOptions
    where
        F: for<'a> Fn(&'a Process) -> DeliverCancelFuture<'a> + 'static,
    {
        self.deliver_cancel = DeliverCancel::Custom(Rc::new(f));
        self
    }

    /// Runs as a background task (Trio's `nursery.start(run_process, ...)`):
    /// once the child is spawned, `run_process` hands the [`Process`] to
    /// `status` and goes on supervising it. The pipes `run_process` feeds or
    /// captures are not in that `Process`; those set to [`Redirect::Pipe`]
    /// are.
    ///
    /// ```
    /// # use std::process::Command;
    /// # use std::rc::Rc;
    /// # use trio::{TaskStatus, open_nursery};
    /// # use trio::subprocess::{Process, RunProcessOptions, run_process};
    /// trio::run(async {
    ///     open_nursery(async |n| {
    ///         let p: Rc<Process> = n
    ///             .start(async |status: TaskStatus<Rc<Process>>| {
    ///                 let opts = RunProcessOptions::new().check(false).task_status(status);
    ///                 run_process(&mut Command::new("sleep").arg("100"), opts).await.map(drop)
    ///             })
    ///             .await?;
    ///         assert!(p.returncode().is_none());
    ///         n.cancel_scope().cancel(); // SIGTERM, then reaped
    ///         Ok(())
    ///     })
    ///     .await?;
    ///     Ok(())
    /// })
    /// .unwrap();
    /// ```
    pub fn task_status(mut self, status: TaskStatus<Rc<Process>>) -> RunProcessOptions {
        self.task_status = Some(status);
        self
    }
}

/// Runs `cmd` to completion (Trio's `trio.run_process`): spawns it, feeds
/// its stdin, captures its output if asked, waits for it to exit, and
/// checks its status.
///
/// Everything runs in a nursery: feeding stdin, draining stdout and
/// draining stderr are separate tasks, so a child that fills one pipe while
/// the parent writes to another cannot deadlock. The captured output is
/// complete when this returns (it waits for end of stream on the pipes,
/// which also waits for any grandchild still holding them).
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// The child is stopped (by default `SIGTERM`, then `SIGKILL` after
/// [`DEFAULT_GRACE`] on the run's clock, `TerminateProcess` on Windows, see
/// [`kill_grace`](RunProcessOptions::kill_grace) and
/// [`deliver_cancel`](RunProcessOptions::deliver_cancel)), and always
/// waited for and reaped before `Err(Cancelled)` is returned: that cleanup
/// is shielded from the cancellation. The same happens if feeding or
/// draining a pipe fails.
/// # Errors
/// [`Error::User`] holding a [`CalledProcessError`] if `check` is on and
/// the child did not exit with status 0; [`Error::Io`] if it cannot be
/// spawned (see [`open_process`]) or with `InvalidInput` for conflicting
/// options (`capture_stdout` with `stdout`, or a [`Redirect::Pipe`] without
/// [`task_status`](RunProcessOptions::task_status)); errors of the pipes.
pub async fn run_process(cmd: &mut Command, options: RunProcessOptions) -> Result<CompletedProcess> {
    let RunProcessOptions { stdin, stdout, stderr, capture_stdout, capture_stderr, check, deliver_cancel, task_status } =
        options;
    let started = task_status.is_some();
    let pipe_needs_start = |r: &Redirect, which: &str| -> Result<()> {
        if matches!(r, Redirect::Pipe) && !started {
            return Err(invalid(&format!(
                "{which}: Redirect::Pipe needs task_status (it is the only way to reach the pipe); \
                 pass the data or capture the output instead"
            )));
        }
        Ok(())
    };
    let (input, stdin) = match stdin {
        Input::Bytes(data) => (Some(data), Redirect::Pipe),
        Input::Redirect(r) => {
            pipe_needs_start(&r, "stdin")?;
            (None, r)
        }
    };
    let stdout = match (stdout, capture_stdout) {
        (Some(_), true) => return Err(invalid("cannot set both stdout and capture_stdout")),
        (None, true) => Redirect::Pipe,
        (Some(r), false) => {
            pipe_needs_start(&r, "stdout")?;
            r
        }
        (None, false) => Redirect::Inherit,
    };
    let stderr = match (stderr, capture_stderr) {
        (Some(_), true) => return Err(invalid("cannot set both stderr and capture_stderr")),
        (None, true) => Redirect::Pipe,
        (Some(r), false) => {
            pipe_needs_start(&r, "stderr")?;
            r
        }
        (None, false) => Redirect::Inherit,
    };

    let command = format!("{cmd:?}");
    let mut proc = open_process(cmd, StdioOptions { stdin, stdout, stderr })?;
    let feed = if input.is_some() { proc.stdin.take() } else { None };
    let out_pipe = if capture_stdout { proc.stdout.take() } else { None };
    let err_pipe = if capture_stderr { proc.stderr.take() } else { None };
    let proc = Rc::new(proc);
    let out_buf = RefCell::new(Vec::new());
    let err_buf = RefCell::new(Vec::new());
    let (out_ref, err_ref, proc_ref, deliver_ref) = (&out_buf, &err_buf, &proc, &deliver_cancel);

    let status = open_nursery(async move |n| {
        if let Some(s) = feed {
            n.spawn(feed_input(s, input.unwrap_or_default()));
        }
        if let Some(s) = out_pipe {
            n.spawn(read_output(s, out_ref));
        }
        if let Some(s) = err_pipe {
            n.spawn(read_output(s, err_ref));
        }
        if let Some(ts) = task_status {
            ts.started(proc_ref.clone());
        }
        match proc_ref.wait().await {
            Ok(s) => Ok(s),
            Err(e) => {
                // Cancelled (from outside, or because a pipe task failed):
                // stop the child and reap it, shielded.
                match stop_and_reap(proc_ref, deliver_ref).await {
                    Ok(()) => Err(e),
                    Err(cleanup) => Err(Error::combine(vec![e, cleanup]).unwrap_or_else(Error::cancelled)),
                }
            }
        }
    })
    .await?;
    // The nursery catches only its own scope's cancellation, which nothing
    // but a failed child task triggers, and then returns that error.
    let status = status.ok_or_else(Error::cancelled)?;
    let stdout = out_buf.into_inner();
    let stderr = err_buf.into_inner();
    if check && !status.success() {
        return Err(Error::user(CalledProcessError { command, status, stdout, stderr }));
    }
    Ok(CompletedProcess { status, stdout, stderr })
}

/// Sends `data`, then closes the pipe. A child that stops reading (closed
/// its stdin, or exited) is not an error.
async fn feed_input(stream: PipeSendStream, data: Vec<u8>) -> Result<()> {
    let sent = match stream.send_all(&data).await {
        Err(Error::Broken) => Ok(()),
        other => other,
    };
    let closed = stream.aclose().await;
    sent.and(closed)
}

/// Reads `stream` to its end into `buf`, then closes it.
async fn read_output(stream: PipeReceiveStream, buf: &RefCell<Vec<u8>>) -> Result<()> {
    let mut chunk = vec![0u8; 65536];
    // Bounded by the child's output: each turn reads at least one byte, or
    // ends the loop.
    let read = loop {
        match stream.receive_some(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(n) => buf.borrow_mut().extend_from_slice(&chunk[..n]),
            Err(e) => break Err(e),
        }
    };
    let closed = stream.aclose().await;
    read.and(closed)
}

/// The cleanup of a cancelled `run_process`: runs `deliver` (in its own
/// scope, cancelled once the child exits) next to a wait for the child, all
/// shielded from the outer cancellation. `Err` carries an error of
/// `deliver` or of the wait.
async fn stop_and_reap(proc: &Process, deliver: &DeliverCancel) -> Result<()> {
    let killer_scope = CancelScope::new();
    let killer_error: RefCell<Option<Error>> = RefCell::new(None);
    let (killer_scope_ref, killer_error_ref) = (&killer_scope, &killer_error);
    CancelScope::shielded()
        .run(open_nursery(async move |n| {
            n.spawn(async move {
                let stop: DeliverCancelFuture<'_> = match deliver {
                    DeliverCancel::TermThenKill(grace) => Box::pin(term_then_kill(proc, *grace)),
                    DeliverCancel::Custom(f) => f(proc),
                };
                // Report, not fail: a failure here must not cancel the wait.
                if let Err(e) = killer_scope_ref.run(stop).await {
                    *killer_error_ref.borrow_mut() = Some(e);
                }
                Ok(())
            });
            let waited = proc.wait().await;
            killer_scope_ref.cancel();
            waited.map(drop)
        }))
        .await?;
    match killer_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The default `deliver_cancel` on Unix: `SIGTERM`, and `SIGKILL` if the
/// child is still there after `grace`.
#[cfg(unix)]
async fn term_then_kill(proc: &Process, grace: Duration) -> Result<()> {
    proc.terminate()?;
    crate::sleep(grace).await?;
    proc.kill()
}

/// The default `deliver_cancel` on Windows: `TerminateProcess` at once
/// (there is no gentler request to make of another process, and Trio does
/// the same); `grace` is not used.
#[cfg(windows)]
async fn term_then_kill(proc: &Process, _grace: Duration) -> Result<()> {
    proc.terminate()
}

#[cfg(all(test, unix))]
mod tests {
    use std::process::Command;

    use super::sys::FORCE_THREAD_WATCH;
    use super::*;

    /// Without a pidfd, `wait` falls back to a `waitid` thread.
    #[test]
    fn wait_without_pidfd_uses_a_waitid_thread() {
        FORCE_THREAD_WATCH.set(true);
        let r = crate::run(async {
            let p = open_process(Command::new("/bin/sh").args(["-c", "exit 7"]), StdioOptions::new())?;
            assert_eq!(p.wait().await?.code(), Some(7));
            assert_eq!(p.wait().await?.code(), Some(7));

            let p = open_process(Command::new("sleep").arg("100"), StdioOptions::new())?;
            // A cancelled wait leaves the thread to an uncancelled one.
            let r = crate::move_on_after(Duration::from_millis(20), p.wait()).await?;
            assert!(r.is_none());
            p.kill()?;
            let s = p.wait().await?;
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(s.signal(), Some(libc::SIGKILL));

            let out = run_process(
                &mut Command::new("/bin/cat"),
                RunProcessOptions::new().input(b"abc".to_vec()).capture_stdout(true),
            )
            .await?;
            assert_eq!(out.stdout, b"abc");
            Ok(())
        });
        FORCE_THREAD_WATCH.set(false);
        r.unwrap();
    }
}
