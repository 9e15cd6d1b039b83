//! Ports of Python Trio's `src/trio/_core/_tests/test_ki.py` (Ctrl-C), as far
//! as they apply: here Ctrl-C cancels the run's root scope and the run
//! returns `Error::KeyboardInterrupt` once every task has cleaned up (see
//! `docs/TRIO_CONFORMANCE.md` (section test_ki.py)). Each scenario runs in a child process
//! (this test binary re-executed) that raises SIGINT at itself, so that the
//! signal never reaches the test runner or the runs of other tests.
#![cfg(unix)]
// Native only: WASI has no signals or processes.
#![cfg(not(target_os = "wasi"))]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use trio::lowlevel::cancel_shielded_checkpoint;
use trio::{
    CancelScope, Error, Instant, checkpoint, checkpoint_if_cancelled, current_effective_deadline, open_nursery, sleep,
    sleep_forever,
};

const CHILD_ENV: &str = "TRIO_TEST_KI_CHILD";

fn raise_sigint() {
    // SAFETY: raising SIGINT in this (child) process; the run's handler
    // catches it.
    unsafe {
        libc::raise(libc::SIGINT);
    }
}

/// Waits until the Ctrl-C reached the run (the root scope is cancelled),
/// without a checkpoint that could see it: short sleeps in a shield, at
/// most about 30 s (the child's alarm ends it before).
async fn until_ctrl_c_delivered() -> trio::Result<()> {
    for _ in 0..30_000 {
        if current_effective_deadline()? == Instant::ZERO {
            return Ok(());
        }
        CancelScope::shielded().run(sleep(Duration::from_millis(1))).await?;
    }
    panic!("Ctrl-C never reached the run");
}

/// `sleep_forever` that logs whether it ended by cancellation.
async fn sleeper(name: &str) -> trio::Result<()> {
    let r = sleep_forever().await;
    if r.as_ref().is_err_and(|e| e.is_cancelled()) {
        println!("{name} ok");
    }
    r.map(|_| ())
}

async fn scenario(mode: &str) -> trio::Result<()> {
    match mode {
        // trio: test_ki.py::test_ki_protection_works, checks 1 and 2
        "every_task" => {
            open_nursery(async |n| {
                n.spawn(sleeper("s1"));
                n.spawn(sleeper("s2"));
                n.spawn(async {
                    raise_sigint();
                    sleeper("r1 cancel").await
                });
                Ok(())
            })
            .await?;
            Ok(())
        }
        // trio: test_ki.py::test_ki_protection_works, checks 5 and 6
        "next_checkpoint" => {
            raise_sigint();
            until_ctrl_c_delivered().await?;
            for _ in 0..3 {
                cancel_shielded_checkpoint().await?;
            }
            println!("shielded checkpoints passed");
            let r = checkpoint_if_cancelled().await;
            if r.as_ref().is_err_and(|e| e.is_cancelled()) {
                println!("checkpoint_if_cancelled cancelled");
            }
            r
        }
        // trio: test_ki.py::test_ki_protection_works, check 10
        "runs_on" => {
            raise_sigint();
            // Nothing interrupts code between checkpoints, however long.
            let mut spins = 0u64;
            for i in 0..20_000_000u64 {
                spins = std::hint::black_box(spins + i % 3);
            }
            println!("ran on to the checkpoint {}", spins > 0);
            let r = sleep(Duration::from_secs(30)).await;
            if r.as_ref().is_err_and(|e| e.is_cancelled()) {
                println!("sleep cancelled");
            }
            r
        }
        // trio: test_ki.py::test_ki_protection_works, check 11
        "cancelled_scope" => {
            let delivered = std::cell::Cell::new(false);
            open_nursery(async |n| {
                n.spawn(async {
                    let r = sleep(Duration::from_secs(30)).await;
                    delivered.set(true);
                    r
                });
                let scope = CancelScope::new();
                let r = scope
                    .run(async {
                        scope.cancel();
                        if checkpoint().await.is_err_and(|e| e.is_cancelled()) {
                            println!("own cancel seen");
                        }
                        raise_sigint();
                        for _ in 0..30_000 {
                            if delivered.get() {
                                break;
                            }
                            CancelScope::shielded().run(sleep(Duration::from_millis(1))).await?;
                        }
                        println!("delivered {}", delivered.get());
                        checkpoint().await
                    })
                    .await;
                // The run's cancellation is the outer one: the cancelled
                // inner scope must not swallow it.
                println!("passed through the cancelled scope: {}", r.as_ref().is_err_and(|e| e.is_cancelled()));
                r?;
                Ok(())
            })
            .await?;
            Ok(())
        }
        // trio: test_ki.py::test_ki_protection_works, check 9: a Ctrl-C
        // that arrives as the main task returns still makes the run
        // report it.
        "just_before_exit" => {
            raise_sigint();
            Ok(())
        }
        // trio: test_ki.py::test_ki_protection_works, check 3: a Ctrl-C
        // raised by a callback that runs after the main task returned.
        "late_callback" => {
            fn requeue(token: trio::lowlevel::TrioToken) {
                let t = token.clone();
                // Keeps requeueing itself until the run refuses new
                // callbacks (the main task has returned): then this is a
                // late callback, and it raises SIGINT.
                if token.run_sync_soon(move || requeue(t)).is_err() {
                    println!("raised from a late callback");
                    raise_sigint();
                }
            }
            let token = trio::lowlevel::current_trio_token()?;
            let t = token.clone();
            token.run_sync_soon(move || requeue(t))?;
            Ok(())
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Entry point of the child process (this binary re-executed with
/// `CHILD_ENV` set); without it, this test does nothing.
#[test]
fn ki_child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    // SAFETY: a plain alarm: a child that hangs is killed by SIGALRM.
    unsafe {
        libc::alarm(60);
    }
    let r = trio::run(scenario(&mode));
    println!("result: {r:?}");
    let code = match r {
        Err(Error::KeyboardInterrupt) => 130,
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

/// Runs scenario `mode` in a child process; returns its exit code and
/// output. The child's alarm bounds the wait.
fn run_child(mode: &str) -> (Option<i32>, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ki_child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    (status.code(), out)
}

#[test]
fn ctrl_c_cancels_every_task_and_the_run_reports_it() {
    let (code, out) = run_child("every_task");
    for line in ["s1 ok", "s2 ok", "r1 cancel ok"] {
        assert!(out.contains(line), "{line:?} missing: {out}");
    }
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn a_delivered_ctrl_c_is_seen_by_the_next_checkpoint_only() {
    let (code, out) = run_child("next_checkpoint");
    assert!(out.contains("shielded checkpoints passed"), "{out}");
    assert!(out.contains("checkpoint_if_cancelled cancelled"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn code_between_checkpoints_runs_on_after_ctrl_c() {
    let (code, out) = run_child("runs_on");
    assert!(out.contains("ran on to the checkpoint true"), "{out}");
    assert!(out.contains("sleep cancelled"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn ctrl_c_inside_a_cancelled_scope_passes_through_it() {
    let (code, out) = run_child("cancelled_scope");
    assert!(out.contains("own cancel seen"), "{out}");
    assert!(out.contains("delivered true"), "{out}");
    assert!(out.contains("passed through the cancelled scope: true"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}

#[test]
fn a_ctrl_c_raised_just_before_the_main_task_returns_is_reported() {
    for _ in 0..3 {
        let (code, out) = run_child("just_before_exit");
        assert_eq!(code, Some(130), "{out}");
    }
}

#[test]
fn a_ctrl_c_raised_by_a_late_callback_is_reported() {
    let (code, out) = run_child("late_callback");
    assert!(out.contains("raised from a late callback"), "{out}");
    assert_eq!(code, Some(130), "{out}");
}
