//! Signals and Ctrl-C (Trio's `test_signals.py` and KeyboardInterrupt
//! semantics). Each test uses its own signal so that tests sharing a process
//! do not see each other's; Ctrl-C runs in a child process (this test binary
//! re-executed) so the test runner itself is never interrupted.
#![cfg(unix)]
// Native only: WASI has no threads, signals or processes.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use trio::signal::{Signal, open_signal_receiver};
use trio::{CancelScope, Error, RunOptions, sleep, sleep_forever};
use util::*;

fn kill_self(sig: Signal) {
    // SAFETY: sending a signal to our own process.
    unsafe {
        libc::kill(libc::getpid(), sig.as_raw());
    }
}

#[test]
fn a_signal_is_delivered_to_the_receiver() {
    mock_run(async {
        let rx = open_signal_receiver(&[Signal::SIGUSR1])?;
        kill_self(Signal::SIGUSR1);
        let got = rx.receive().await?;
        assert_eq!(got, Signal::SIGUSR1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn repeated_signals_are_coalesced_until_read() {
    mock_run(async {
        let rx = open_signal_receiver(&[Signal::SIGHUP, Signal::SIGWINCH])?;
        for _ in 0..3 {
            kill_self(Signal::SIGHUP);
        }
        kill_self(Signal::SIGWINCH);
        until(|| rx.pending_signal_count() == 2).await?;
        assert_eq!(rx.receive().await?, Signal::SIGHUP, "in order of first arrival");
        assert_eq!(rx.receive().await?, Signal::SIGWINCH);
        assert_eq!(rx.pending_signal_count(), 0, "three SIGHUPs became one");
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_receiver_is_a_stream_and_receive_is_cancellable() {
    mock_run(async {
        let mut rx = open_signal_receiver(&[Signal::SIGALRM])?;
        let r = trio::move_on_after(secs(1), rx.receive()).await?;
        assert!(r.is_none(), "no signal yet: cancelled by the deadline");
        kill_self(Signal::SIGALRM);
        let got = rx.next().await.expect("streams do not end")?;
        assert_eq!(got, Signal::SIGALRM);
        Ok(())
    })
    .unwrap();
}

static PREVIOUS_HANDLER_HITS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn previous_handler(_: libc::c_int) {
    PREVIOUS_HANDLER_HITS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_previous_handler_is_restored_and_unread_signals_go_to_it() {
    // SAFETY: installing a plain handler for SIGUSR2 in this process.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = previous_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut());
    }
    mock_run(async {
        let rx = open_signal_receiver(&[Signal::SIGUSR2])?;
        kill_self(Signal::SIGUSR2);
        until(|| rx.pending_signal_count() == 1).await?;
        assert_eq!(PREVIOUS_HANDLER_HITS.load(Ordering::SeqCst), 0, "caught by the receiver");
        drop(rx); // unread: handed back to the restored handler
        assert_eq!(PREVIOUS_HANDLER_HITS.load(Ordering::SeqCst), 1);
        Ok(())
    })
    .unwrap();
    // raise(3) delivers to this thread before it returns (kill(2) may pick
    // another thread and return first).
    // SAFETY: raising a signal whose handler is our counter.
    unsafe {
        libc::raise(libc::SIGUSR2);
    }
    assert_eq!(PREVIOUS_HANDLER_HITS.load(Ordering::SeqCst), 2, "restored after the receiver closed");
}

#[test]
fn uncatchable_signals_are_an_error() {
    mock_run(async {
        let r = open_signal_receiver(&[Signal::from_raw(libc::SIGKILL)]);
        assert!(matches!(r, Err(Error::Io(_))));
        let r = open_signal_receiver(&[Signal::from_raw(999)]);
        assert!(matches!(r, Err(Error::Io(_))));
        Ok(())
    })
    .unwrap();
    assert!(matches!(
        futures_lite::future::block_on(async { open_signal_receiver(&[Signal::SIGUSR1]) }),
        Err(Error::Runtime(_))
    ));
}

/// As Trio's: a receiver for no signals is refused, and only one task may
/// receive from a receiver at a time (the second gets `Busy`).
#[test]
fn an_empty_signal_list_is_refused_and_a_second_receiver_task_is_busy() {
    mock_run(async {
        let r = open_signal_receiver(&[]);
        assert!(matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput), "{r:?}");
        let rx = open_signal_receiver(&[Signal::SIGUSR1])?;
        trio::open_nursery(async |n| {
            n.spawn(async {
                let sig = rx.receive().await?;
                assert_eq!(sig, Signal::SIGUSR1);
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(matches!(rx.receive().await, Err(Error::Busy)));
            kill_self(Signal::SIGUSR1);
            Ok(())
        })
        .await?;
        // Free again once the first receive finished.
        kill_self(Signal::SIGUSR1);
        assert_eq!(rx.receive().await?, Signal::SIGUSR1);
        Ok(())
    })
    .unwrap();
}

// ---- Ctrl-C, in a child process ----

const CHILD_ENV: &str = "TRIO_TEST_CTRL_C_CHILD";

/// Entry point of the child process (this binary re-executed with
/// `CHILD_ENV` set); without it, this test does nothing.
#[test]
fn ctrl_c_child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let options = RunOptions::new().handle_ctrl_c(mode != "ignore");
    let r = options.run(async {
        println!("ready");
        let waited = sleep_forever().await;
        let source = waited.as_ref().err().and_then(|e| e.cancel_reason()).map(|r| r.source());
        println!("cancelled by {source:?}");
        let cleanup = CancelScope::shielded()
            .run(async {
                println!("cleanup started");
                let long = if mode == "twice" { Duration::from_secs(30) } else { Duration::from_millis(100) };
                sleep(long).await?;
                println!("cleaned up");
                Ok(())
            })
            .await;
        // A second Ctrl-C cancels the shielded scope itself, which then
        // catches it: the clean-up returns `Ok(None)`.
        if !matches!(cleanup, Ok(Some(()))) {
            println!("cleanup interrupted");
        }
        waited.map(|_| ())
    });
    let code = match r {
        Err(Error::KeyboardInterrupt) => 130,
        _ => 1,
    };
    std::process::exit(code);
}

/// Runs the child in `mode`, sends it SIGINT `count` times (each after the
/// line it waits for), and returns its exit code and output.
fn run_child(mode: &str, waits: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ctrl_c_child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    for want in waits {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
                let _ = child.kill();
                panic!("child ended before printing {want:?}; output so far: {seen}");
            }
            seen.push_str(&line);
            if line.trim().ends_with(want) {
                break;
            }
        }
        // SAFETY: sending SIGINT to our child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    (status.code(), seen)
}

#[test]
fn ctrl_c_cancels_everything_waits_for_cleanup_and_reports_keyboard_interrupt() {
    let (code, out) = run_child("once", &["ready"]);
    assert!(out.contains("cancelled by Some(KeyboardInterrupt)"), "{out}");
    assert!(out.contains("cleanup started") && out.contains("cleaned up"), "{out}");
    assert!(!out.contains("cleanup interrupted"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn a_second_ctrl_c_interrupts_the_shielded_cleanup() {
    let (code, out) = run_child("twice", &["ready", "cleanup started"]);
    assert!(out.contains("cleanup interrupted"), "{out}");
    assert!(!out.contains("cleaned up"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn with_ctrl_c_handling_off_sigint_takes_its_usual_course() {
    let (code, out) = run_child("ignore", &["ready"]);
    // The default action of SIGINT kills the process: no exit code.
    assert_eq!(code, None, "{out}");
    assert!(!out.contains("cleanup"), "{out}");
}
