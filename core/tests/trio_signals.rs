//! Ports of Python Trio's `src/trio/_tests/test_signals.py` (see
//! `docs/TRIO_CONFORMANCE.md` (section test_signals.py) for the whole table; the tests already
//! covered by `tests/signals.rs` are not repeated here).
//!
//! Signal dispositions are process-wide and the tests of this binary run on
//! several threads at once, so each test uses signals no other test here
//! touches; the SIGINT test runs in a child process (this binary
//! re-executed).
#![cfg(unix)]
// Native only: WASI has no signals.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_lite::StreamExt;
use trio::signal::{Signal, open_signal_receiver};
use trio::testing::wait_all_tasks_blocked;
use trio::{Error, RunOptions};
use util::*;

fn raise(sig: i32) {
    // SAFETY: raise(3) delivers to this thread before it returns.
    unsafe {
        libc::raise(sig);
    }
}

/// The current disposition's handler field.
fn handler_of(sig: i32) -> libc::sighandler_t {
    // SAFETY: querying into a zeroed, valid sigaction.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut act), 0);
        act.sa_sigaction
    }
}

fn set_handler(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: installing a plain handler (or SIG_IGN / SIG_DFL).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
}

extern "C" fn noop(_: libc::c_int) {}

/// Gives `sig` a handler that does nothing, so a signal handed back late
/// (the dispatch thread is a real thread) cannot end the test process.
fn harmless(sig: i32) {
    set_handler(sig, noop as extern "C" fn(libc::c_int) as libc::sighandler_t);
}

/// Waits (bounded) until the run has handed every caught signal on:
/// two rounds of "everything blocked" are enough for the dispatch thread's
/// `run_sync_soon` to have run, but the dispatch thread is a real thread, so
/// the caller also polls the condition it needs.
async fn settle() -> trio::Result<()> {
    wait_all_tasks_blocked(std::time::Duration::ZERO).await
}

// trio: test_signals.py::test_open_signal_receiver
#[test]
fn open_signal_receiver_coalesces_and_restores_the_handler() {
    let sig = libc::SIGUSR1;
    harmless(sig);
    let orig = handler_of(sig);
    mock_run(async {
        let mut rx = open_signal_receiver(&[Signal::SIGUSR1])?;
        assert_ne!(handler_of(sig), orig, "our handler is in place while open");
        raise(sig);
        raise(sig);
        settle().await?;
        raise(sig);
        until(|| rx.pending_signal_count() == 1).await?;
        settle().await?;
        assert_eq!(rx.pending_signal_count(), 1, "three raises coalesced into one");
        assert_eq!(rx.next().await.expect("never ends")?, Signal::SIGUSR1);
        // The dispatch thread is a real thread: the third raise may be
        // passed on only now, hence "at most one".
        assert!(rx.pending_signal_count() <= 1);
        raise(sig);
        assert_eq!(rx.next().await.expect("never ends")?, Signal::SIGUSR1);
        Ok(())
    })
    .unwrap();
    assert_eq!(handler_of(sig), orig, "restored on close");
}

// trio: test_signals.py::test_open_signal_receiver_restore_handler_after_one_bad_signal
#[test]
fn a_bad_signal_in_the_list_leaves_the_good_ones_restored() {
    let sig = libc::SIGHUP;
    harmless(sig);
    let orig = handler_of(sig);
    mock_run(async {
        let r = open_signal_receiver(&[Signal::SIGHUP, Signal::from_raw(1_234_567)]);
        assert!(matches!(&r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput), "{r:?}");
        assert_eq!(handler_of(sig), orig, "restored although opening failed");
        Ok(())
    })
    .unwrap();
    assert_eq!(handler_of(sig), orig);
}

// trio: test_signals.py::test_open_signal_receiver_restore_handler_after_duplicate_signal
#[test]
fn a_duplicate_signal_is_restored_correctly() {
    let sig = libc::SIGQUIT;
    harmless(sig);
    let orig = handler_of(sig);
    mock_run(async {
        let rx = open_signal_receiver(&[Signal::SIGQUIT, Signal::SIGQUIT])?;
        assert_ne!(handler_of(sig), orig);
        drop(rx);
        assert_eq!(handler_of(sig), orig, "restored once, to the original");
        Ok(())
    })
    .unwrap();
}

// trio: test_signals.py::test_catch_signals_wrong_thread
// A deliberate difference: Python signals belong to the main thread, so
// Trio refuses a receiver in a run on another thread; here any thread's run
// may open one and receives the signal.
#[test]
fn a_run_on_another_thread_may_receive_signals() {
    harmless(libc::SIGVTALRM);
    let got = std::thread::spawn(|| {
        mock_run(async {
            let rx = open_signal_receiver(&[Signal::from_raw(libc::SIGVTALRM)])?;
            raise(libc::SIGVTALRM);
            rx.receive().await
        })
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(got.as_raw(), libc::SIGVTALRM);
}

// trio: test_signals.py::test_open_signal_receiver_no_starvation
#[test]
fn two_always_pending_signals_alternate() {
    let (a, b) = (libc::SIGURG, libc::SIGXCPU);
    harmless(a);
    harmless(b);
    mock_run(async {
        let rx = open_signal_receiver(&[Signal::from_raw(a), Signal::from_raw(b)])?;
        let mut previous: Option<Signal> = None;
        for _ in 0..10 {
            raise(a);
            raise(b);
            until(|| rx.pending_signal_count() == 2).await?;
            let got = rx.receive().await?;
            assert!(got.as_raw() == a || got.as_raw() == b);
            if let Some(p) = previous {
                assert_ne!(got, p, "the two take turns");
            }
            previous = Some(got);
        }
        Ok(())
    })
    .unwrap();
}

static DIRECT_A: AtomicUsize = AtomicUsize::new(0);
static DIRECT_B: AtomicUsize = AtomicUsize::new(0);

extern "C" fn direct_a(_: libc::c_int) {
    DIRECT_A.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn direct_b(_: libc::c_int) {
    DIRECT_B.fetch_add(1, Ordering::SeqCst);
}

// trio: test_signals.py::test_catch_signals_race_condition_on_exit
// Cases 1 and 2 (the signal not yet passed on / already queued when the
// receiver closes), each 200 times: every raised signal reaches the
// restored handler, none is lost.
#[test]
fn signals_raised_just_before_close_go_to_the_previous_handler() {
    let (a, b) = (libc::SIGUSR2, libc::SIGWINCH);
    set_handler(a, direct_a as extern "C" fn(libc::c_int) as libc::sighandler_t);
    set_handler(b, direct_b as extern "C" fn(libc::c_int) as libc::sighandler_t);
    mock_run(async {
        let signals = [Signal::from_raw(a), Signal::from_raw(b)];
        let rounds = 200;
        // Closed at once: the dispatch thread may not have passed them on.
        for i in 1..=rounds {
            let rx = open_signal_receiver(&signals)?;
            raise(a);
            raise(b);
            drop(rx);
            assert_eq!(DIRECT_A.load(Ordering::SeqCst), i, "round {i}: a signal was lost");
            assert_eq!(DIRECT_B.load(Ordering::SeqCst), i, "round {i}: a signal was lost");
        }
        // Closed once both are queued (unread).
        for i in rounds + 1..=rounds + 20 {
            let rx = open_signal_receiver(&signals)?;
            raise(a);
            raise(b);
            until(|| rx.pending_signal_count() == 2).await?;
            drop(rx);
            assert_eq!(DIRECT_A.load(Ordering::SeqCst), i);
            assert_eq!(DIRECT_B.load(Ordering::SeqCst), i);
        }
        Ok(())
    })
    .unwrap();
    // Restored: raised now, each goes straight to its handler.
    raise(a);
    raise(b);
    assert_eq!(DIRECT_A.load(Ordering::SeqCst), 221);
    assert_eq!(DIRECT_B.load(Ordering::SeqCst), 221);
}

// trio: test_signals.py::test_catch_signals_race_condition_on_exit
// Cases 3 and 4: the previous disposition is SIG_IGN; the handed-back
// signal is ignored (the process lives on).
#[test]
fn signals_handed_back_to_sig_ign_are_ignored() {
    let sig = libc::SIGSYS;
    set_handler(sig, libc::SIG_IGN);
    mock_run(async {
        for _ in 0..50 {
            let rx = open_signal_receiver(&[Signal::from_raw(sig)])?;
            raise(sig);
            drop(rx);
        }
        let rx = open_signal_receiver(&[Signal::from_raw(sig)])?;
        raise(sig);
        until(|| rx.pending_signal_count() == 1).await?;
        drop(rx);
        Ok(())
    })
    .unwrap();
    assert_eq!(handler_of(sig), libc::SIG_IGN);
}

// ---- SIGINT handlers and the run, in a child process ----

const CHILD_ENV: &str = "TRIO_TEST_SIGINT_RESTORE_CHILD";

static PROGRAM_SIGINTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn program_sigint(_: libc::c_int) {
    PROGRAM_SIGINTS.fetch_add(1, Ordering::SeqCst);
}

/// The child's side (this binary re-executed with `CHILD_ENV` set); without
/// it, this test does nothing.
#[test]
fn sigint_restore_child_entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let sig = libc::SIGINT;
    let dfl = handler_of(sig);
    let program = program_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // A run that leaves SIGINT alone gives back the disposition it found.
    RunOptions::new().run(async { trio::lowlevel::checkpoint().await }).unwrap();
    println!("plain run restored: {}", handler_of(sig) == dfl);
    // A handler the program installs during a run stays after it.
    RunOptions::new()
        .run(async {
            set_handler(sig, program);
            trio::lowlevel::checkpoint().await
        })
        .unwrap();
    println!("program handler kept: {}", handler_of(sig) == program);
    raise(sig);
    println!("program handler hits: {}", PROGRAM_SIGINTS.load(Ordering::SeqCst));
    // A run that starts over the program's handler takes SIGINT for itself
    // (Ctrl-C cancels it) and gives the program's handler back at the end.
    let r = RunOptions::new().run(async {
        raise(sig);
        trio::sleep_forever().await
    });
    println!("second run: {}", matches!(r, Err(Error::KeyboardInterrupt)));
    println!("program handler back: {}", handler_of(sig) == program);
    std::process::exit(0);
}

// trio: (KeyboardInterrupt handling) a run restores only the SIGINT handler
// it installed; one the program installs during the run stays.
#[test]
fn a_run_restores_only_the_sigint_handler_it_installed() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigint_restore_child_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    for want in [
        "plain run restored: true",
        "program handler kept: true",
        "program handler hits: 1",
        "second run: true",
        "program handler back: true",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}
