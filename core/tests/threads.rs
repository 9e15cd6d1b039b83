//! Threads: `to_thread`, `from_thread` and the `TrioToken` (Trio's
//! `test_threads.py` semantics that apply). Worker threads are real, so
//! waits on them are bounded in time; virtual time comes from the mock
//! clock.
// Native only: WASI has no threads, signals or processes.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;
use std::time::Duration;

use trio::lowlevel::{TrioToken, current_trio_token};
use trio::sync::CapacityLimiter;
use trio::{CancelScope, Error, from_thread, open_nursery, sleep, to_thread};
use util::*;

fn me() -> ThreadId {
    std::thread::current().id()
}

#[test]
fn run_sync_runs_on_another_thread_and_returns_its_value() {
    mock_run(async {
        let (v, tid) = to_thread::run_sync(|| (6 * 7, me())).await?;
        assert_eq!(v, 42);
        assert_ne!(tid, me());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_panic_in_the_thread_continues_in_the_caller() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            to_thread::run_sync(|| panic!("worker exploded")).await?;
            Ok(())
        })
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"worker exploded"));
}

#[test]
fn the_limiter_bounds_concurrent_threads() {
    let running = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    // Threads meet in pairs: two must run at once, and a third never can.
    let pair = Arc::new(std::sync::Barrier::new(2));
    mock_run(async {
        let limiter = Rc::new(CapacityLimiter::new(2));
        open_nursery(async |n| {
            for _ in 0..6 {
                let (running, max, limiter, pair) = (running.clone(), max.clone(), limiter.clone(), pair.clone());
                n.spawn(async move {
                    to_thread::Options::new()
                        .limiter(limiter)
                        .run_sync(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            max.fetch_max(now, Ordering::SeqCst);
                            pair.wait();
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                });
            }
            Ok(())
        })
        .await?;
        assert_eq!(limiter.borrowed_tokens(), 0, "every token came back");
        Ok(())
    })
    .unwrap();
    let max = max.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "at most 2 at once, saw {max}");
}

#[test]
fn the_default_limiter_has_40_tokens_and_is_per_run() {
    let first = mock_run(async {
        let l = to_thread::current_default_thread_limiter()?;
        assert_eq!(l.total_tokens(), to_thread::DEFAULT_THREAD_LIMIT);
        assert_eq!(to_thread::DEFAULT_THREAD_LIMIT, 40);
        assert!(Rc::ptr_eq(&l, &to_thread::current_default_thread_limiter()?));
        l.set_total_tokens(3);
        to_thread::run_sync(|| ()).await?;
        assert_eq!(l.borrowed_tokens(), 0);
        Ok(Rc::as_ptr(&l) as usize)
    })
    .unwrap();
    mock_run(async move {
        let l = to_thread::current_default_thread_limiter()?;
        assert_eq!(l.total_tokens(), 40, "a new run gets a new limiter");
        let _ = first;
        Ok(())
    })
    .unwrap();
}

#[test]
fn without_abandon_cancellation_waits_for_the_thread() {
    let finished = Arc::new(AtomicUsize::new(0));
    let f2 = finished.clone();
    mock_run(async move {
        let s = CancelScope::new();
        let r = s
            .run(async {
                s.cancel();
                // Cancelled before it started: f never runs.
                to_thread::run_sync(|| unreachable!("not started")).await
            })
            .await?;
        assert!(r.is_none());
        let s = CancelScope::with_timeout(secs(1));
        let f3 = f2.clone();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        // The thread runs until a sibling lets it go at t=2, after the
        // scope's deadline at t=1 (the mock clock jumps to each in turn).
        let r = open_nursery(async |n| {
            n.spawn(async move {
                sleep(secs(2)).await?;
                go_tx.send(()).unwrap();
                Ok(())
            });
            s.run(async move {
                to_thread::run_sync(move || {
                    go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    f3.fetch_add(1, Ordering::SeqCst);
                    7
                })
                .await
            })
            .await
        })
        .await?
        .flatten();
        // The deadline passed while the thread ran, but the call waited.
        assert_eq!(r, Some(7));
        assert!(s.cancel_called());
        assert!(!s.cancelled_caught());
        assert_eq!(f2.load(Ordering::SeqCst), 1);
        Ok(())
    })
    .unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

#[test]
fn abandon_on_cancel_returns_at_once_and_frees_the_token_later() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    mock_run(async move {
        let limiter = Rc::new(CapacityLimiter::new(1));
        let s = CancelScope::with_timeout(secs(1));
        let l2 = limiter.clone();
        let r = s
            .run(async move {
                to_thread::Options::new()
                    .limiter(l2)
                    .abandon_on_cancel(true)
                    .run_sync(move || {
                        let _ = release_rx.recv_timeout(Duration::from_secs(10));
                        let _ = done_tx.send(());
                        "dropped"
                    })
                    .await
            })
            .await?;
        assert!(r.is_none() && s.cancelled_caught());
        assert_eq!(limiter.borrowed_tokens(), 1, "the thread still holds its token");
        release_tx.send(()).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        until(|| limiter.borrowed_tokens() == 0).await?;
        assert_eq!(limiter.borrowed_tokens(), 0, "given back when the thread ended");
        Ok(())
    })
    .unwrap();
}

#[test]
fn idle_threads_are_reused() {
    mock_run(async {
        // The pool is process-wide: a test running beside this one may take
        // the idle worker between two calls, so try a bounded number of
        // times; a pool that never reused threads would never match.
        let mut reused = false;
        for _ in 0..20 {
            let a = to_thread::run_sync(me).await?;
            let b = to_thread::run_sync(me).await?;
            if a == b {
                reused = true;
                break;
            }
        }
        assert!(reused, "the second call reused the idle worker");
        // A worker is back on the idle list before its caller hears of the
        // result (so the caller's next call finds it awake): right after a
        // call returns, one is idle, unless a test beside this one took it.
        let mut idle_at_once = false;
        for _ in 0..20 {
            to_thread::run_sync(|| ()).await?;
            if to_thread::idle_worker_threads() >= 1 {
                idle_at_once = true;
                break;
            }
        }
        assert!(idle_at_once, "a worker was idle as soon as its call returned");
        Ok(())
    })
    .unwrap();
}

#[test]
fn from_thread_run_sync_runs_on_the_trio_thread() {
    mock_run(async {
        let trio_thread = me();
        let (seen, worker) = to_thread::run_sync(|| (from_thread::run_sync(me), me())).await?;
        assert_eq!(seen?, trio_thread);
        assert_ne!(worker, trio_thread);
        Ok(())
    })
    .unwrap();
}

#[test]
fn from_thread_run_awaits_in_the_host_task() {
    mock_run(async {
        let v = to_thread::run_sync(|| {
            from_thread::run(|| async {
                sleep(secs(5)).await?;
                let t = trio::current_time()?;
                Ok(t)
            })
        })
        .await??;
        assert_eq!(v, at(5));
        Ok(())
    })
    .unwrap();
}

#[test]
fn from_thread_run_is_cancelled_with_the_host() {
    mock_run(async {
        let s = CancelScope::with_timeout(secs(2));
        let r = s
            .run(async {
                let inner = to_thread::run_sync(|| {
                    let r = from_thread::run(|| async {
                        sleep(secs(100)).await?;
                        Ok(())
                    });
                    let checked = from_thread::check_cancelled();
                    (r, checked)
                })
                .await?;
                Ok(inner)
            })
            .await?;
        let (r, checked) = r.expect("the call returned (not abandoned)");
        assert!(matches!(r, Err(Error::Cancelled(_))));
        assert!(matches!(checked, Err(Error::Cancelled(_))));
        assert_eq!(trio::current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn from_thread_on_the_trio_thread_is_an_error_not_a_deadlock() {
    mock_run(async {
        assert!(matches!(from_thread::run_sync(|| 1), Err(Error::Runtime(_))));
        let token = current_trio_token()?;
        assert!(matches!(from_thread::run_sync_with_token(&token, || 1), Err(Error::Runtime(_))));
        assert!(matches!(from_thread::check_cancelled(), Err(Error::Runtime(_))));
        Ok(())
    })
    .unwrap();
}

#[test]
fn from_thread_on_a_plain_thread_needs_a_token() {
    let r = std::thread::spawn(|| from_thread::run_sync(|| 1)).join().unwrap();
    assert!(matches!(r, Err(Error::Runtime(_))));
    assert!(std::thread::spawn(from_thread::worker_token).join().unwrap().is_none());
}

#[test]
fn run_sync_with_token_from_any_thread() {
    mock_run(async {
        let token = current_trio_token()?;
        let trio_thread = me();
        let counter = Rc::new(Cell::new(0));
        let (v, t) = to_thread::run_sync(move || {
            // A plain thread (not our worker) with the token.
            std::thread::spawn(move || from_thread::run_sync_with_token(&token, || (5, me()))).join().unwrap()
        })
        .await??;
        assert_eq!((v, t), (5, trio_thread));
        counter.set(1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_token_after_the_run_is_an_error() {
    let token: TrioToken = mock_run(async { current_trio_token() }).unwrap();
    assert!(token.is_finished());
    assert!(matches!(token.run_sync_soon(|| ()), Err(Error::RunFinished)));
    assert!(matches!(token.run_sync_soon_idempotent(1, || ()), Err(Error::RunFinished)));
    assert!(matches!(from_thread::run_sync_with_token(&token, || 1), Err(Error::RunFinished)));
}

#[test]
fn tokens_compare_equal_within_a_run() {
    mock_run(async {
        let a = current_trio_token()?;
        let b = current_trio_token()?;
        assert_eq!(a, b);
        let other = std::thread::spawn(|| mock_run(async { current_trio_token() }).unwrap()).join().unwrap();
        assert_ne!(a, other);
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_sync_soon_is_fifo_per_thread_under_stress() {
    let log: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let log2 = log.clone();
    mock_run(async move {
        let token = current_trio_token()?;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (token, log) = (token.clone(), log2.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let log = log.clone();
                        token.run_sync_soon(move || log.lock().unwrap().push((t, i))).unwrap();
                    }
                })
            })
            .collect();
        // Every callback was queued before the producers were joined, and
        // so before this call's own completion notice: FIFO means they have
        // all run by the time it returns.
        to_thread::run_sync(move || threads.into_iter().for_each(|t| t.join().unwrap())).await?;
        assert_eq!(log2.lock().unwrap().len(), 1600);
        Ok(())
    })
    .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1600);
    for t in 0..8 {
        let mine: Vec<usize> = log.iter().filter(|(tt, _)| *tt == t).map(|(_, i)| *i).collect();
        assert_eq!(mine, (0..200).collect::<Vec<_>>(), "thread {t} in order");
    }
}

/// A user's `run_sync_soon_idempotent` keys live apart from the runtime's
/// own: a worker that queues idempotent callbacks under every small key
/// (call ids count up from 1; the small ones last, just before the call's
/// own completion notice) must not swallow that notice. Before the key
/// spaces were split, the notice was dropped as a duplicate whenever the
/// user's callback with the same key was still pending, and the host
/// waited forever (the guard turns that into a failure). Whether it was
/// still pending depends on the run loop's timing, so this test did not
/// fail every time before the fix; it cannot pass wrongly after it.
#[test]
fn user_idempotent_keys_never_swallow_the_runtimes_wakeups() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = mock_run(async {
            let token = current_trio_token()?;
            let ran = Arc::new(AtomicUsize::new(0));
            let ran2 = ran.clone();
            let v = to_thread::run_sync(move || {
                for k in (0..50_000u64).rev() {
                    let ran = ran2.clone();
                    token
                        .run_sync_soon_idempotent(k, move || {
                            ran.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                }
                7
            })
            .await?;
            assert_eq!(v, 7);
            // FIFO: the callbacks the worker queued before it returned ran
            // before the call returned.
            assert_eq!(ran.load(Ordering::SeqCst), 50_000);
            Ok(())
        });
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("the to_thread call never returned: its completion notice was lost"),
    }
}

/// As Trio guarantees: a callback that `run_sync_soon` accepted runs, even
/// when the main task returns before the loop came round to it; one asked
/// for after the run ended is refused.
#[test]
fn callbacks_accepted_before_the_run_ends_still_run() {
    let ran = Arc::new(AtomicUsize::new(0));
    let (ran2, ran3) = (ran.clone(), ran.clone());
    let token = mock_run(async move {
        let token = current_trio_token()?;
        token.run_sync_soon(move || {
            ran2.fetch_add(1, Ordering::SeqCst);
        })?;
        token.run_sync_soon_idempotent(7, move || {
            ran3.fetch_add(10, Ordering::SeqCst);
        })?;
        // Returns at once: the loop has not drained the queue yet.
        Ok(token)
    })
    .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 11);
    assert!(matches!(token.run_sync_soon(|| {}), Err(Error::RunFinished)));
}

#[test]
fn run_sync_soon_idempotent_runs_a_pending_key_once() {
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    mock_run(async move {
        let token = current_trio_token()?;
        for _ in 0..5 {
            let c = c2.clone();
            token.run_sync_soon_idempotent(99, move || {
                c.fetch_add(1, Ordering::SeqCst);
            })?;
        }
        trio::checkpoint().await?;
        assert_eq!(c2.load(Ordering::SeqCst), 1);
        let c = c2.clone();
        token.run_sync_soon_idempotent(99, move || {
            c.fetch_add(1, Ordering::SeqCst);
        })?;
        trio::checkpoint().await?;
        assert_eq!(c2.load(Ordering::SeqCst), 2, "once it ran, the key can be queued again");
        Ok(())
    })
    .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panic_in_a_run_sync_soon_callback_crashes_the_run() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            current_trio_token()?.run_sync_soon(|| panic!("callback bug"))?;
            sleep(secs(1)).await
        })
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"callback bug"));
}

#[test]
fn a_worker_of_an_abandoned_call_gets_cancelled_from_thread_calls() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (out_tx, out_rx) = mpsc::channel::<trio::Result<u32>>();
    mock_run(async move {
        let r = trio::move_on_after(
            secs(1),
            to_thread::Options::new().abandon_on_cancel(true).run_sync(move || {
                let _ = go_rx.recv_timeout(Duration::from_secs(10));
                let _ = out_tx.send(from_thread::run_sync(|| 1));
            }),
        )
        .await?;
        assert!(r.is_none());
        go_tx.send(()).unwrap();
        let got = to_thread::run_sync(move || out_rx.recv_timeout(Duration::from_secs(10)).unwrap()).await?;
        assert!(matches!(got, Err(Error::Cancelled(_))));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_zero_token_limiter_blocks_until_cancelled() {
    mock_run(async {
        let limiter = Rc::new(CapacityLimiter::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        let r = trio::move_on_after(
            secs(3),
            to_thread::Options::new().limiter(limiter.clone()).run_sync(move || {
                r2.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await?;
        assert!(r.is_none());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(limiter.statistics().tasks_waiting, 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_with_token_awaits_a_future_from_a_plain_thread() {
    mock_run(async {
        let token = current_trio_token()?;
        let trio_thread = me();
        let plain = std::thread::spawn(move || {
            from_thread::run_with_token(&token, || async {
                sleep(secs(3)).await?;
                Ok((trio::current_time()?, me()))
            })
        });
        // Keep the run alive until the plain thread is done.
        let (t, tid) = to_thread::run_sync(move || plain.join().unwrap()).await??;
        assert_eq!(t, at(3));
        assert_eq!(tid, trio_thread);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_system_task_left_running_ends_with_the_run() {
    let (tx, rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    mock_run(async move {
        let token = current_trio_token()?;
        std::thread::spawn(move || {
            let r = from_thread::run_with_token(&token, move || async move {
                let _ = started_tx.send(());
                trio::sleep_forever().await?;
                Ok(())
            });
            let _ = tx.send(r);
        });
        // Once the system task runs, finish the main task.
        to_thread::run_sync(move || started_rx.recv_timeout(Duration::from_secs(10)).unwrap()).await?;
        Ok(())
    })
    .unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(r, Err(Error::RunFinished)), "{r:?}");
}

#[test]
fn a_panic_in_from_thread_run_sync_reaches_the_worker() {
    mock_run(async {
        let caught = to_thread::run_sync(|| {
            catch_unwind(AssertUnwindSafe(|| from_thread::run_sync(|| panic!("on the trio thread")))).is_err()
        })
        .await?;
        assert!(caught);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_worker_knows_its_runs_token() {
    mock_run(async {
        let token = current_trio_token()?;
        let seen = to_thread::run_sync(from_thread::worker_token).await?;
        assert_eq!(seen, Some(token));
        Ok(())
    })
    .unwrap();
}

#[test]
fn dropping_a_waiting_call_keeps_the_token_until_the_thread_ends() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    mock_run(async move {
        let limiter = Rc::new(CapacityLimiter::new(1));
        let call = to_thread::Options::new().limiter(limiter.clone()).run_sync(move || {
            let _ = go_rx.recv_timeout(Duration::from_secs(10));
            let _ = done_tx.send(());
        });
        let other = async {
            sleep(secs(1)).await?;
            Ok(())
        };
        // The call future is dropped while its thread still runs.
        futures_lite::future::or(call, other).await?;
        assert_eq!(limiter.borrowed_tokens(), 1, "the running thread keeps its token");
        go_tx.send(()).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        until(|| limiter.borrowed_tokens() == 0).await?;
        assert_eq!(limiter.borrowed_tokens(), 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn run_sync_soon_from_the_run_thread_itself_runs_between_passes() {
    mock_run(async {
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        current_trio_token()?.run_sync_soon(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        })?;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not run inline");
        trio::checkpoint().await?;
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        Ok(())
    })
    .unwrap();
}
