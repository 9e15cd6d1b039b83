//! Subprocesses: `run_process`, `open_process`, `Process` and the pipe
//! streams.
#![cfg(unix)]
// Native only: WASI has no threads, signals or processes.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::rc::Rc;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use trio::abc::{AsyncResource, ReceiveStream, SendStream};
use trio::signal::Signal;
use trio::subprocess::{
    CalledProcessError, PipeReceiveStream, PipeSendStream, Process, Redirect, RunProcessOptions, StdioOptions,
    open_pipe, open_process, run_process,
};
use trio::testing::wait_all_tasks_blocked;
use trio::{CancelScope, Error, StapledStream, TaskStatus, current_time, move_on_after, open_nursery};
use util::{mock_run, pseudo_random, secs};

/// Every test holds this shared; the descriptor-counting test holds it
/// exclusively, so no other test opens or closes descriptors meanwhile.
static FDS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FDS.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    FDS.write().unwrap_or_else(PoisonError::into_inner)
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(script);
    c
}

fn sleep_cmd(secs: u32) -> Command {
    let mut c = Command::new("sleep");
    c.arg(secs.to_string());
    c
}

/// Is `pid` no child of ours any more (reaped)? Does not reap it.
fn is_reaped(pid: u32) -> bool {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with a valid out-parameter; WNOWAIT leaves a zombie be.
    let r = unsafe {
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// Waits (bounded, about 5 s of real time) until `pid` is reaped.
fn eventually_reaped(pid: u32) -> bool {
    for _ in 0..500 {
        if is_reaped(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn called_process_error(e: &Error) -> &CalledProcessError {
    match e {
        Error::User(b) => {
            b.downcast_ref::<CalledProcessError>().unwrap_or_else(|| panic!("not a CalledProcessError: {e}"))
        }
        other => panic!("not a CalledProcessError: {other}"),
    }
}

// ---- run_process ----

#[test]
fn run_process_reports_success_and_failure_statuses() {
    let _g = shared();
    trio::run(async {
        let out = run_process(&mut Command::new("/bin/true"), RunProcessOptions::new()).await?;
        assert!(out.status.success());
        assert!(out.stdout.is_empty() && out.stderr.is_empty());

        let out = run_process(&mut Command::new("/bin/false"), RunProcessOptions::new().check(false)).await?;
        assert_eq!(out.status.code(), Some(1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_process_captures_stdout_and_stderr_separately() {
    let _g = shared();
    trio::run(async {
        let out = run_process(
            &mut sh("echo out; echo err >&2; echo more"),
            RunProcessOptions::new().capture_stdout(true).capture_stderr(true),
        )
        .await?;
        assert_eq!(out.stdout, b"out\nmore\n");
        assert_eq!(out.stderr, b"err\n");
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_process_feeds_large_input_through_cat_while_draining_output() {
    let _g = shared();
    // 1 MiB: far more than a pipe holds (64 KiB on Linux), so the child
    // blocks on a full stdout while we still write its stdin, and the other
    // way round: this only finishes if both pipes are served concurrently.
    let data = pseudo_random(1 << 20);
    let expected = data.clone();
    trio::run(async move {
        let out = run_process(
            &mut Command::new("/bin/cat"),
            RunProcessOptions::new().input(data).capture_stdout(true).capture_stderr(true),
        )
        .await?;
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), expected.len());
        assert!(out.stdout == expected);
        assert!(out.stderr.is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_process_default_stdin_is_empty() {
    let _g = shared();
    trio::run(async {
        let out = run_process(&mut Command::new("/bin/cat"), RunProcessOptions::new().capture_stdout(true)).await?;
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn check_turns_a_failure_into_called_process_error_with_the_output() {
    let _g = shared();
    trio::run(async {
        let err = run_process(
            &mut sh("echo partial; echo oops >&2; exit 3"),
            RunProcessOptions::new().capture_stdout(true).capture_stderr(true),
        )
        .await
        .unwrap_err();
        let e = called_process_error(&err);
        assert_eq!(e.status.code(), Some(3));
        assert_eq!(e.stdout, b"partial\n");
        assert_eq!(e.stderr, b"oops\n");
        let msg = err.to_string();
        assert!(msg.contains("/bin/sh") && msg.contains('3'), "{msg}");

        // Killed by a signal is a failure too.
        let err = run_process(&mut sh("kill -KILL $$"), RunProcessOptions::new()).await.unwrap_err();
        assert_eq!(called_process_error(&err).status.signal(), Some(libc::SIGKILL));

        // check(false): the same is a normal result.
        let out =
            run_process(&mut sh("echo x; exit 3"), RunProcessOptions::new().check(false).capture_stdout(true)).await?;
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"x\n");
        Ok(())
    })
    .unwrap();
}

#[test]
fn stderr_can_be_merged_into_captured_stdout() {
    let _g = shared();
    trio::run(async {
        let out = run_process(
            &mut sh("echo a; echo b >&2; echo c"),
            RunProcessOptions::new().capture_stdout(true).stderr(Redirect::Stdout),
        )
        .await?;
        assert_eq!(out.stdout, b"a\nb\nc\n");
        assert!(out.stderr.is_empty());

        // Other redirections: stdout to /dev/null.
        let out = run_process(&mut sh("echo hidden; echo shown >&2"), {
            RunProcessOptions::new().stdout(Redirect::Null).capture_stderr(true)
        })
        .await?;
        assert_eq!(out.stderr, b"shown\n");
        Ok(())
    })
    .unwrap();
}

#[test]
fn input_a_child_never_reads_is_not_an_error() {
    let _g = shared();
    trio::run(async {
        // `true` exits without reading: feeding stdin hits EPIPE, which
        // run_process ignores, as Trio does.
        let out =
            run_process(&mut Command::new("/bin/true"), RunProcessOptions::new().input(vec![b'x'; 1 << 20])).await?;
        assert!(out.status.success());
        Ok(())
    })
    .unwrap();
}

#[test]
fn conflicting_options_and_spawn_failures_are_io_errors() {
    let _g = shared();
    trio::run(async {
        fn invalid<T>(r: trio::Result<T>) -> bool {
            matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput)
        }
        let cat = || Command::new("/bin/cat");
        assert!(invalid(run_process(&mut cat(), RunProcessOptions::new().stdin(Redirect::Pipe)).await));
        assert!(invalid(run_process(&mut cat(), RunProcessOptions::new().stdout(Redirect::Pipe)).await));
        assert!(invalid(run_process(&mut cat(), RunProcessOptions::new().stderr(Redirect::Pipe)).await));
        assert!(invalid(
            run_process(&mut cat(), RunProcessOptions::new().capture_stdout(true).stdout(Redirect::Null)).await
        ));
        assert!(invalid(
            run_process(&mut cat(), RunProcessOptions::new().capture_stderr(true).stderr(Redirect::Null)).await
        ));
        assert!(invalid(open_process(&mut cat(), StdioOptions::new().stdout(Redirect::Stdout))));

        let r = run_process(&mut Command::new("/nonexistent/program"), RunProcessOptions::new()).await;
        assert!(matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound));
        let r = open_process(&mut Command::new("/nonexistent/program"), StdioOptions::piped());
        assert!(matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound));
        Ok(())
    })
    .unwrap();
}

// ---- open_process and Process ----

#[test]
fn pipes_echo_through_cat_and_reach_eof_after_stdin_closes() {
    let _g = shared();
    trio::run(async {
        let mut p = open_process(
            &mut Command::new("/bin/cat"),
            StdioOptions::new().stdin(Redirect::Pipe).stdout(Redirect::Pipe),
        )?;
        assert!(p.stderr.is_none());
        let stdio = StapledStream::new(p.stdin.take().unwrap(), p.stdout.take().unwrap());
        let mut buf = [0u8; 64];
        for msg in [&b"hello\n"[..], b"second line\n"] {
            stdio.send_all(msg).await?;
            let mut got = Vec::new();
            // Bounded: each turn reads at least one byte.
            while got.len() < msg.len() {
                let n = stdio.receive_some(&mut buf).await?;
                assert!(n > 0, "unexpected end of stream");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, msg);
        }
        trio::abc::HalfCloseableStream::send_eof(&stdio).await?;
        assert_eq!(stdio.receive_some(&mut buf).await?, 0);
        assert_eq!(stdio.receive_some(&mut buf).await?, 0);
        assert!(p.wait().await?.success());
        stdio.aclose().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn wait_returns_the_exit_code_and_returncode_polls() {
    let _g = shared();
    trio::run(async {
        let p = open_process(&mut sh("exit 3"), StdioOptions::new())?;
        let s = p.wait().await?;
        assert_eq!(s.code(), Some(3));
        assert_eq!(p.returncode().and_then(|s| s.code()), Some(3));
        assert_eq!(p.wait().await?.code(), Some(3), "a second wait returns the same status");
        assert!(is_reaped(p.pid()));

        // returncode polls without waiting: the child is reaped by it once
        // it has exited.
        let p = open_process(&mut Command::new("/bin/true"), StdioOptions::new())?;
        let pid = p.pid();
        let seen = Cell::new(None);
        util::until(|| {
            seen.set(p.returncode());
            seen.get().is_some()
        })
        .await?;
        assert!(seen.get().unwrap().success());
        assert!(is_reaped(pid));
        Ok(())
    })
    .unwrap();
}

#[test]
fn kill_shows_as_a_signal_and_signals_after_reaping_are_ignored() {
    let _g = shared();
    trio::run(async {
        let p = open_process(&mut sleep_cmd(100), StdioOptions::new())?;
        assert!(p.returncode().is_none());
        p.kill()?;
        let s = p.wait().await?;
        assert_eq!(s.signal(), Some(libc::SIGKILL));
        assert!(!s.success());
        // Reaped: the pid may be someone else's now, so nothing is sent.
        p.kill()?;
        p.terminate()?;

        let p = open_process(&mut sleep_cmd(100), StdioOptions::new())?;
        p.send_signal(Signal::SIGUSR1)?;
        assert_eq!(p.wait().await?.signal(), Some(libc::SIGUSR1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn many_waiters_may_wait_and_be_cancelled() {
    let _g = shared();
    trio::run(async {
        let p = open_process(&mut sleep_cmd(100), StdioOptions::new())?;
        // Cancelled waits leave the child running.
        open_nursery(async |n| {
            for _ in 0..3 {
                n.spawn(async { p.wait().await.map(drop) });
            }
            wait_all_tasks_blocked(Duration::ZERO).await?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert!(p.returncode().is_none());
        // Then all of them see the exit.
        let seen = Cell::new(0);
        open_nursery(async |n| {
            for _ in 0..3 {
                n.spawn(async {
                    assert_eq!(p.wait().await?.signal(), Some(libc::SIGKILL));
                    seen.set(seen.get() + 1);
                    Ok(())
                });
            }
            wait_all_tasks_blocked(Duration::ZERO).await?;
            p.kill()
        })
        .await?;
        assert_eq!(seen.get(), 3);
        Ok(())
    })
    .unwrap();
}

#[test]
fn process_aclose_closes_the_pipes_and_waits() {
    let _g = shared();
    trio::run(async {
        let p = open_process(&mut Command::new("/bin/cat"), StdioOptions::piped())?;
        // cat exits once its stdin is closed.
        p.aclose().await?;
        assert!(p.returncode().unwrap().success());
        let mut buf = [0u8; 4];
        assert!(matches!(p.stdout.as_ref().unwrap().receive_some(&mut buf).await, Err(Error::Closed)));
        assert!(matches!(p.stdin.as_ref().unwrap().send_all(b"x").await, Err(Error::Closed)));

        // A cancelled aclose kills the child and still reaps it.
        let p = open_process(&mut sleep_cmd(100), StdioOptions::new())?;
        let scope = CancelScope::new();
        scope.cancel();
        let r = scope.run(p.aclose()).await?;
        assert!(r.is_none());
        assert_eq!(p.returncode().and_then(|s| s.signal()), Some(libc::SIGKILL));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_dropped_process_is_killed_and_reaped_in_the_background() {
    let _g = shared();
    let pid = trio::run(async {
        let p = open_process(&mut sleep_cmd(100), StdioOptions::piped())?;
        Ok(p.pid())
    })
    .unwrap();
    assert!(eventually_reaped(pid), "the child of a dropped Process was left as a zombie (or alive)");
}

// ---- cancellation ----

/// Starts `cmd` under `run_process` as a background task and cancels it once
/// the child has printed a line (so it is past any setup, such as a `trap`).
/// Returns the started `Process` and what `run_process` returned.
async fn cancel_after_first_line(
    mut cmd: Command,
    opts: RunProcessOptions,
) -> trio::Result<(Rc<Process>, Option<trio::Result<()>>)> {
    let outcome = Cell::new(None);
    let mut process = None;
    open_nursery(async |n| {
        let p: Rc<Process> = n
            .start(async |status: TaskStatus<Rc<Process>>| {
                let r = run_process(&mut cmd, opts.stdout(Redirect::Pipe).task_status(status)).await;
                outcome.set(Some(r.map(drop)));
                Ok(())
            })
            .await?;
        let mut buf = [0u8; 64];
        let n_read = p.stdout.as_ref().unwrap().receive_some(&mut buf).await?;
        assert!(n_read > 0);
        process = Some(p);
        n.cancel_scope().cancel();
        Ok(())
    })
    .await?;
    Ok((process.unwrap(), outcome.take()))
}

#[test]
fn cancelling_run_process_sends_sigterm_and_reaps_the_child() {
    let _g = shared();
    // The system clock: with an autojumping mock clock the 5 s grace would
    // pass at once while the child is dying of SIGTERM.
    trio::run(async {
        let start = current_time()?;
        let (p, outcome) = cancel_after_first_line(sh("echo ready; exec sleep 100"), RunProcessOptions::new()).await?;
        assert!(matches!(outcome, Some(Err(Error::Cancelled(_)))), "{outcome:?}");
        let status = p.returncode().expect("run_process returned before the child was reaped");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(is_reaped(p.pid()));
        assert!(current_time()? - start < Duration::from_secs(5), "SIGTERM was enough; no grace period waited");

        // A plain move_on_after around run_process: the same, with no setup.
        let r = move_on_after(Duration::from_millis(50), run_process(&mut sleep_cmd(100), RunProcessOptions::new()))
            .await?;
        assert!(r.is_none());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_child_ignoring_sigterm_gets_sigkill_after_the_grace_period() {
    let _g = shared();
    mock_run(async {
        let start = current_time()?;
        let script = "trap '' TERM; echo ready; exec sleep 100";
        let (p, outcome) = cancel_after_first_line(sh(script), RunProcessOptions::new()).await?;
        assert!(matches!(outcome, Some(Err(Error::Cancelled(_)))), "{outcome:?}");
        assert_eq!(p.returncode().and_then(|s| s.signal()), Some(libc::SIGKILL));
        assert!(is_reaped(p.pid()));
        let waited = current_time()? - start;
        assert!(waited >= secs(5) && waited < secs(6), "waited {waited:?} on the mock clock");

        // A custom grace period.
        let start = current_time()?;
        let (p, _) = cancel_after_first_line(sh(script), RunProcessOptions::new().kill_grace(secs(2))).await?;
        assert_eq!(p.returncode().and_then(|s| s.signal()), Some(libc::SIGKILL));
        let waited = current_time()? - start;
        assert!(waited >= secs(2) && waited < secs(3), "waited {waited:?} on the mock clock");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_custom_deliver_cancel_is_used_and_cancelled_once_the_child_exits() {
    let _g = shared();
    let finished = Rc::new(Cell::new(false));
    let f = finished.clone();
    trio::run(async move {
        let opts = RunProcessOptions::new().deliver_cancel(move |p: &Process| {
            let f = f.clone();
            Box::pin(async move {
                p.send_signal(Signal::SIGUSR1)?;
                // Cancelled when the child has exited.
                trio::sleep(Duration::from_secs(1000)).await?;
                f.set(true);
                Ok(())
            })
        });
        let (p, outcome) = cancel_after_first_line(sh("echo ready; exec sleep 100"), opts).await?;
        assert!(matches!(outcome, Some(Err(Error::Cancelled(_)))), "{outcome:?}");
        assert_eq!(p.returncode().and_then(|s| s.signal()), Some(libc::SIGUSR1));
        Ok(())
    })
    .unwrap();
    assert!(!finished.get());
}

#[test]
fn started_run_process_shares_its_pipes_and_returns_the_status() {
    let _g = shared();
    trio::run(async {
        let result = Cell::new(None);
        open_nursery(async |n| {
            let p: Rc<Process> = n
                .start(async |status: TaskStatus<Rc<Process>>| {
                    let opts = RunProcessOptions::new()
                        .stdin(Redirect::Pipe)
                        .capture_stdout(true)
                        .check(false)
                        .task_status(status);
                    result.set(Some(run_process(&mut Command::new("/bin/cat"), opts).await));
                    Ok(())
                })
                .await?;
            // run_process captures stdout itself; stdin is ours.
            assert!(p.stdout.is_none());
            let stdin = p.stdin.as_ref().unwrap();
            stdin.send_all(b"via the started process").await?;
            stdin.aclose().await
        })
        .await?;
        let out = result.take().unwrap()?;
        assert!(out.status.success());
        assert_eq!(out.stdout, b"via the started process");
        Ok(())
    })
    .unwrap();
}

// ---- pipe streams ----

#[test]
fn pipe_streams_follow_the_stream_contract() {
    // Exclusive: no other test forks a child that could hold a copy of
    // these pipes for a moment.
    let _g = exclusive();
    mock_run(async {
        let (tx, rx) = open_pipe()?;
        let mut buf = [0u8; 16];
        assert!(
            matches!(rx.receive_some(&mut []).await, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput)
        );
        tx.send_all(b"").await?;

        // Busy: a second receiver, a second sender.
        open_nursery(async |n| {
            n.spawn(async {
                let mut b = [0u8; 4];
                assert_eq!(rx.receive_some(&mut b).await?, 2);
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(matches!(rx.receive_some(&mut buf).await, Err(Error::Busy)));
            tx.send_all(b"hi").await
        })
        .await?;

        // A cancelled send that wrote part of its data breaks the stream.
        let big = vec![7u8; 1 << 20];
        let r = move_on_after(secs(1), tx.send_all(&big)).await?;
        assert!(r.is_none());
        assert!(matches!(tx.send_all(b"x").await, Err(Error::Broken)));
        tx.aclose().await?;
        assert!(matches!(tx.send_all(b"x").await, Err(Error::Closed)));
        assert!(matches!(tx.wait_send_all_might_not_block().await, Err(Error::Closed)));
        tx.aclose().await?;

        // The reader drains what was written, then sees end of stream.
        let mut total = 0;
        for _ in 0..100_000 {
            match rx.receive_some(&mut buf).await? {
                0 => break,
                n => total += n,
            }
        }
        assert!(total > 0 && total < big.len());
        assert_eq!(rx.receive_some(&mut buf).await?, 0);

        // Closing a stream wakes its blocked receiver with Closed.
        let (tx2, rx2) = open_pipe()?;
        open_nursery(async |n| {
            n.spawn(async {
                let mut b = [0u8; 4];
                assert!(matches!(rx2.receive_some(&mut b).await, Err(Error::Closed)));
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            rx2.aclose().await
        })
        .await?;
        assert!(matches!(rx2.receive_some(&mut buf).await, Err(Error::Closed)));

        // The reader gone: sending fails with Broken.
        // (Another test's child may hold a copy of the read end for a moment,
        // between its fork and its exec: then the first sends succeed.)
        let mut result = Ok(());
        for _ in 0..1000 {
            tx2.wait_send_all_might_not_block().await?;
            result = tx2.send_all(b"anyone?").await;
            if result.is_err() {
                break;
            }
            trio::to_thread::run_sync(|| std::thread::sleep(Duration::from_millis(2))).await?;
        }
        assert!(matches!(result, Err(Error::Broken)), "{result:?}");
        assert!(matches!(tx2.send_all(b"anyone?").await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn pipe_to_a_child_that_closed_its_stdin_is_broken() {
    let _g = shared();
    trio::run(async {
        let p = open_process(
            &mut sh("exec 0<&-; echo closed; exec sleep 100"),
            StdioOptions::new().stdin(Redirect::Pipe).stdout(Redirect::Pipe),
        )?;
        let mut buf = [0u8; 16];
        assert!(p.stdout.as_ref().unwrap().receive_some(&mut buf).await? > 0);
        // Another test's child may hold a copy of the read end for a moment
        // (between its fork and its exec), so the first sends may succeed.
        let mut result = Ok(());
        for _ in 0..1000 {
            result = p.stdin.as_ref().unwrap().send_all(b"nobody reads this").await;
            if result.is_err() {
                break;
            }
            trio::sleep(Duration::from_millis(5)).await?;
        }
        assert!(matches!(result, Err(Error::Broken)), "{result:?}");
        p.kill()?;
        p.wait().await?;
        Ok(())
    })
    .unwrap();
}

// ---- resources ----

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn exercise_everything() {
    trio::run(async {
        let out = run_process(
            &mut sh("cat; echo err >&2"),
            RunProcessOptions::new().input(b"in".to_vec()).capture_stdout(true).capture_stderr(true),
        )
        .await?;
        assert_eq!(out.stdout, b"in");
        let _ = run_process(&mut Command::new("/nonexistent/program"), RunProcessOptions::new()).await;
        let _ = run_process(&mut Command::new("/bin/false"), RunProcessOptions::new().capture_stderr(true)).await;
        let _ = move_on_after(Duration::from_millis(10), run_process(&mut sleep_cmd(100), RunProcessOptions::new()))
            .await?;
        let p = open_process(&mut sleep_cmd(100), StdioOptions::piped().stderr(Redirect::Stdout))?;
        p.kill()?;
        p.wait().await?;
        let (tx, rx) = open_pipe()?;
        drop(tx);
        rx.aclose().await?;
        let dropped = open_process(&mut sleep_cmd(100), StdioOptions::piped())?;
        drop(dropped);
        Ok(())
    })
    .unwrap();
}

#[test]
#[cfg(target_os = "linux")]
fn no_descriptor_is_leaked() {
    let _g = exclusive();
    // Warm up whatever the runtime opens once per process.
    exercise_everything();
    let before = open_fds();
    for _ in 0..3 {
        exercise_everything();
    }
    let after = open_fds();
    assert!(before > 0);
    assert_eq!(before, after, "descriptors leaked");
}

#[test]
fn end_of_stream_after_a_short_read_is_seen() {
    let _g = shared();
    trio::run(async {
        let (tx, rx) = open_pipe()?;
        let mut buf = [0u8; 16];
        // Data and the writer's close arrive before the reader looks: the
        // close's readiness event is taken together with the data's.
        tx.send_all(b"12345").await?;
        tx.aclose().await?;
        trio::sleep(Duration::from_millis(20)).await?;
        assert_eq!(rx.receive_some(&mut buf).await?, 5);
        let r = trio::fail_after(Duration::from_secs(2), rx.receive_some(&mut buf)).await;
        assert!(matches!(r, Ok(0)), "{r:?}");
        Ok(())
    })
    .unwrap();
}

/// A pipe whose buffer is full: `send_all` blocks until the reader reads.
async fn clogged_pipe() -> trio::Result<(PipeSendStream, PipeReceiveStream)> {
    let (tx, rx) = open_pipe()?;
    let fd = tx.raw_fd().unwrap();
    let chunk = [0u8; 4096];
    for _ in 0..100_000 {
        // SAFETY: writing from a valid buffer to the pipe we own.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok((tx, rx));
            }
            return Err(e.into());
        }
    }
    panic!("the pipe never filled up");
}

#[test]
fn pipe_streams_pass_the_one_way_conformance_checks() {
    use trio::testing::check_one_way_stream;
    // Exclusive: a child forked by another test could hold a copy of a pipe
    // end for a moment and change what the checks observe.
    let _g = exclusive();
    mock_run(async { check_one_way_stream(async || open_pipe(), Some(clogged_pipe)).await }).unwrap();
    trio::run(async { check_one_way_stream(async || open_pipe(), Some(clogged_pipe)).await }).unwrap();
}
