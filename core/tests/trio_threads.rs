//! Ports of Python Trio's `src/trio/_tests/test_threads.py` that
//! `core/tests/threads.rs` does not cover already, see
//! `docs/TRIO_CONFORMANCE.md` (section test_threads.py). Worker threads are real, so every
//! wait on one is bounded in count and time.
// Native only but for one test: WASI has no threads (so there every
// spawn fails, which one test uses).

mod util;

// trio: test_threads.py::test_wait_all_threads_completed_no_threads (and
// the helpers' contract: a checkpoint, cancellable, 0 outside any call;
// on WASI also after a call whose thread could not start)
#[test]
fn with_no_threads_there_is_nothing_to_wait_for() {
    use trio::testing::{active_thread_count, assert_checkpoints, wait_all_threads_completed};
    use trio::{CancelScope, Error};
    use util::*;

    assert!(matches!(active_thread_count(), Err(Error::Runtime(_))), "outside a run");
    mock_run(async {
        assert_checkpoints(wait_all_threads_completed()).await?;
        assert_eq!(active_thread_count()?, 0);
        #[cfg(target_os = "wasi")]
        assert!(matches!(trio::to_thread::run_sync(|| ()).await, Err(Error::Io(_))));
        assert_eq!(active_thread_count()?, 0);
        let scope = CancelScope::new();
        scope.cancel();
        assert!(matches!(scope.run(wait_all_threads_completed()).await, Ok(None)), "a checkpoint sees the cancel");
        assert_checkpoints(wait_all_threads_completed()).await?;
        Ok(())
    })
    .unwrap();
}

#[cfg(target_os = "wasi")]
mod wasi {
    use std::rc::Rc;

    use trio::sync::CapacityLimiter;
    use trio::{Error, to_thread};

    use super::util::*;

    // trio: test_threads.py::test_run_in_worker_thread_fail_to_spawn (WASI
    // cannot start threads: the call fails and gives its token back)
    #[test]
    fn a_thread_that_cannot_start_gives_its_limiter_token_back() {
        mock_run(async {
            let limiter = Rc::new(CapacityLimiter::new(1));
            for _ in 0..3 {
                let r = to_thread::Options::new().limiter(limiter.clone()).run_sync(|| ()).await;
                assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
                assert_eq!(limiter.borrowed_tokens(), 0, "the token of the call that never started came back");
            }
            let default = to_thread::current_default_thread_limiter()?;
            assert!(matches!(to_thread::run_sync(|| ()).await, Err(Error::Io(_))));
            assert_eq!(default.borrowed_tokens(), 0);
            Ok(())
        })
        .unwrap();
    }
}

#[cfg(not(target_os = "wasi"))]
mod native {
    use super::util;

    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use std::panic::{AssertUnwindSafe, catch_unwind};

    use std::cell::Cell;
    use std::future::Future;
    use trio::lowlevel::{current_task, current_trio_token};
    use trio::sync::CapacityLimiter;

    use trio::sync::Event;
    use trio::testing::{active_thread_count, wait_all_tasks_blocked, wait_all_threads_completed};
    use trio::{CancelScope, Error, from_thread, open_nursery, to_thread};
    use util::*;

    thread_local! {
        /// The scope around the `to_thread` call of the running test (set on the
        /// run's thread, read by callbacks that run there).
        static HOST_SCOPE: RefCell<Option<CancelScope>> = const { RefCell::new(None) };
    }

    fn cancel_host_scope() {
        HOST_SCOPE.with_borrow(|s| s.as_ref().expect("host scope set").cancel());
    }

    thread_local! {
        /// The scope of the running test's `bounded` wait (on the run's thread).
        static WATCHDOG_SCOPE: RefCell<Option<CancelScope>> = const { RefCell::new(None) };
        /// Events a worker waits on through `from_thread::run` (the closure
        /// sent to the run's thread carries only the index).
        static EVENTS: RefCell<Vec<Rc<Event>>> = const { RefCell::new(Vec::new()) };
    }

    /// Awaits `fut`, which waits on real threads: a plain thread cancels it
    /// if it has not finished within ten seconds of real time, and then this
    /// panics (a bound on a broken wait, not a timing assertion).
    async fn bounded<T>(fut: impl Future<Output = trio::Result<T>>) -> trio::Result<T> {
        let scope = CancelScope::new();
        WATCHDOG_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
        let token = current_trio_token()?;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let dog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(Duration::from_secs(10)) {
                let _ = token.run_sync_soon(|| {
                    WATCHDOG_SCOPE.with_borrow(|s| s.as_ref().map(CancelScope::cancel));
                });
            }
        });
        let out = scope.run(fut).await;
        drop(stop_tx);
        dog.join().unwrap();
        WATCHDOG_SCOPE.with_borrow_mut(|s| *s = None);
        Ok(out?.expect("the wait on real threads did not end within its bound"))
    }

    /// Blocks (bounded: about two seconds) until `cond` holds. Only for code
    /// that must hold the run's thread while another OS thread acts.
    fn spin_until(cond: impl Fn() -> bool) {
        for _ in 0..2000 {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // trio: test_threads.py::test_run_in_worker_thread_abandoned (a cancel
    // delivered before the thread's result reaches the host wins: the call is
    // abandoned and reports Cancelled, as Trio's abort runs inside cancel())
    #[test]
    fn a_cancel_queued_before_the_result_wins_with_abandon_on_cancel() {
        for _ in 0..20 {
            mock_run(async {
                let scope = CancelScope::new();
                HOST_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
                let token = current_trio_token()?;
                let r = scope
                    .run(to_thread::Options::new().abandon_on_cancel(true).run_sync(move || {
                        // This worker is busy, so it is not counted as idle.
                        let before = to_thread::idle_worker_threads();
                        // Queued before the completion notice, so it runs first.
                        // It holds the run's thread until this worker went idle
                        // (after queuing that notice), so that the cancel and
                        // the notice reach the run in the same batch.
                        token
                            .run_sync_soon(move || {
                                spin_until(|| to_thread::idle_worker_threads() > before);
                                cancel_host_scope();
                            })
                            .unwrap();
                        7
                    }))
                    .await?;
                assert_eq!(r, None, "the thread's result came back although the cancel came first");
                assert!(scope.cancelled_caught());
                HOST_SCOPE.with_borrow_mut(|s| *s = None);
                Ok(())
            })
            .unwrap();
        }
    }

    // trio: test_threads.py::test_from_thread_check_cancelled_raises_in_foreign_threads
    // and test_run_in_worker_thread_abandoned (a cancel delivered before a
    // `from_thread` request is served: the host gives up the call, it does not
    // serve the request first and hand back the thread's result)
    #[test]
    fn a_cancel_queued_before_a_from_thread_request_wins_with_abandon_on_cancel() {
        for _ in 0..20 {
            let served = Arc::new(AtomicUsize::new(0));
            let (reply_tx, reply_rx) = mpsc::channel::<trio::Result<()>>();
            mock_run(async {
                let scope = CancelScope::new();
                HOST_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
                let token = current_trio_token()?;
                let served2 = served.clone();
                let asking = Arc::new(AtomicBool::new(false));
                let (go_tx, go_rx) = mpsc::channel::<()>();
                let r = scope
                    .run(open_nursery(async |n| {
                        // The worker starts only once the host is parked.
                        n.spawn(async move {
                            wait_all_tasks_blocked(Duration::ZERO).await?;
                            go_tx.send(()).unwrap();
                            Ok(())
                        });
                        to_thread::Options::new()
                            .abandon_on_cancel(true)
                            .run_sync(move || {
                                go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                                let asking2 = asking.clone();
                                token
                                    .run_sync_soon(move || {
                                        spin_until(|| asking2.load(Ordering::SeqCst));
                                        cancel_host_scope();
                                    })
                                    .unwrap();
                                asking.store(true, Ordering::SeqCst);
                                let reply = from_thread::run_sync(move || {
                                    served2.fetch_add(1, Ordering::SeqCst);
                                });
                                let _ = reply_tx.send(reply);
                                7
                            })
                            .await
                    }))
                    .await?;
                assert_eq!(r, None, "the host served the request and returned the thread's result");
                assert!(scope.cancelled_caught());
                HOST_SCOPE.with_borrow_mut(|s| *s = None);
                // The worker's request was refused (this crate refuses requests
                // of an abandoned call; Trio runs them in a system task).
                let reply = to_thread::run_sync(move || reply_rx.recv_timeout(Duration::from_secs(10))).await?;
                assert!(matches!(reply, Ok(Err(Error::Cancelled(_)))), "{reply:?}");
                Ok(())
            })
            .unwrap();
            assert_eq!(served.load(Ordering::SeqCst), 0, "the request ran after the cancel");
        }
    }

    // trio: test_threads.py::test_run_in_worker_thread_abandoned (the limiter:
    // an abandoned thread keeps its token until it really finishes, so a limit
    // of N never lets more than N threads run at once)
    #[test]
    fn abandoned_threads_keep_their_limiter_tokens_until_they_finish() {
        const N: usize = 2;
        let running = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        mock_run(async {
            let limiter = Rc::new(CapacityLimiter::new(N));
            let start = |abandon: bool| {
                let (running, max, release_rx, limiter) =
                    (running.clone(), max.clone(), release_rx.clone(), limiter.clone());
                to_thread::Options::new().limiter(limiter).abandon_on_cancel(abandon).run_sync(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            };
            // N calls start their threads and are abandoned (cancelled at t=1)
            // while the threads keep running.
            let r = trio::move_on_after(secs(1), async {
                open_nursery(async |n| {
                    for _ in 0..N {
                        n.spawn(start(true));
                    }
                    Ok(())
                })
                .await
            })
            .await?;
            assert!(r.is_none());
            until(|| running.load(Ordering::SeqCst) == N).await?;
            assert_eq!(limiter.borrowed_tokens(), N, "abandoned threads still hold their tokens");
            // Another call must wait for a token: it does not start while the
            // abandoned threads run.
            let r = trio::move_on_after(secs(1), start(false)).await?;
            assert!(r.is_none(), "a call got a token while {N} abandoned threads ran");
            assert_eq!(running.load(Ordering::SeqCst), N);
            // One abandoned thread finishes: its token goes back, and a waiting
            // call can run.
            release_tx.send(()).unwrap();
            until(|| limiter.borrowed_tokens() == N - 1).await?;
            open_nursery(async |n| {
                n.spawn(start(false));
                // Let it (and the last abandoned thread) finish.
                until(|| running.load(Ordering::SeqCst) == N).await?;
                release_tx.send(()).unwrap();
                release_tx.send(()).unwrap();
                Ok(())
            })
            .await?;
            until(|| limiter.borrowed_tokens() == 0).await?;
            Ok(())
        })
        .unwrap();
        assert_eq!(max.load(Ordering::SeqCst), N, "never more than {N} threads at once");
    }

    // trio: test_threads.py::test_wait_all_threads_completed
    #[test]
    fn wait_all_threads_completed_waits_for_every_thread() {
        mock_run(async {
            let events = [Rc::new(Event::new()), Rc::new(Event::new())];
            EVENTS.with_borrow_mut(|e| *e = events.to_vec());
            let exited = [Event::new(), Event::new()];
            let no_threads_left = Cell::new(false);
            let wait_event = |i: usize| {
                let exited = &exited[i];
                async move {
                    to_thread::run_sync(move || {
                        from_thread::run(move || async move {
                            let e = EVENTS.with_borrow(|e| e[i].clone());
                            e.wait().await
                        })
                    })
                    .await??;
                    exited.set();
                    Ok(())
                }
            };
            bounded(open_nursery(async |n| {
                n.spawn(wait_event(0));
                n.spawn(wait_event(1));
                wait_all_tasks_blocked(Duration::ZERO).await?;
                n.spawn(async {
                    wait_all_threads_completed().await?;
                    no_threads_left.set(true);
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert!(!no_threads_left.get());
                assert_eq!(active_thread_count()?, 2);

                events[0].set();
                exited[0].wait().await?;
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert!(!no_threads_left.get());
                assert_eq!(active_thread_count()?, 1);

                events[1].set();
                exited[1].wait().await?;
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert!(no_threads_left.get());
                assert_eq!(active_thread_count()?, 0);
                Ok(())
            }))
            .await?;
            EVENTS.with_borrow_mut(Vec::clear);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_wait_all_threads_completed (abandoned
    // threads: counted until they finish, where Trio stops counting when
    // the call returns; a call waiting for its limiter is not counted yet;
    // the wait is cancellable)
    #[test]
    fn abandoned_threads_count_until_they_finish() {
        mock_run(async {
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let limiter = Rc::new(CapacityLimiter::new(1));
            let r = trio::move_on_after(secs(1), async {
                open_nursery(async |n| {
                    n.spawn(async {
                        to_thread::Options::new()
                            .limiter(limiter.clone())
                            .abandon_on_cancel(true)
                            .run_sync(move || release_rx.recv_timeout(Duration::from_secs(10)))
                            .await?
                            .unwrap();
                        Ok(())
                    });
                    // This one waits for the limiter's only token.
                    n.spawn(async {
                        to_thread::Options::new().limiter(limiter.clone()).run_sync(|| ()).await?;
                        Ok(())
                    });
                    wait_all_tasks_blocked(Duration::ZERO).await?;
                    assert_eq!(limiter.statistics().tasks_waiting, 1);
                    assert_eq!(active_thread_count()?, 1, "a call waiting for its limiter has no thread yet");
                    Ok(())
                })
                .await
            })
            .await?;
            assert!(r.is_none(), "the calls were cancelled at t=1");
            assert_eq!(active_thread_count()?, 1, "the abandoned thread still runs");

            // Cancelling the wait: Cancelled while the thread runs.
            let r = trio::move_on_after(secs(1), wait_all_threads_completed()).await?;
            assert!(r.is_none());
            assert_eq!(active_thread_count()?, 1);

            let done = Cell::new(false);
            bounded(open_nursery(async |n| {
                n.spawn(async {
                    wait_all_threads_completed().await?;
                    done.set(true);
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert!(!done.get(), "returned while the abandoned thread ran");
                release_tx.send(()).unwrap();
                Ok(())
            }))
            .await?;
            assert!(done.get());
            assert_eq!(active_thread_count()?, 0);
            assert_eq!(limiter.borrowed_tokens(), 0);
            Ok(())
        })
        .unwrap();
    }

    /// What a worker sees of its names: `from_thread::thread_name()`, std's
    /// name, and on Linux its thread id and OS name.
    #[derive(Debug)]
    struct Names {
        trio: Option<String>,
        std: Option<String>,
        os: Option<(String, String)>,
    }

    fn names_here() -> Names {
        Names {
            trio: from_thread::thread_name(),
            std: std::thread::current().name().map(str::to_owned),
            os: os_name_of("thread-self"),
        }
    }

    /// (thread id, OS name) of `/proc/<thread>` (`thread-self` or
    /// `self/task/<tid>`); `None` but on Linux.
    fn os_name_of(thread: &str) -> Option<(String, String)> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let link = std::fs::read_link(format!("/proc/{thread}")).ok();
        let tid = match link {
            Some(l) => l.file_name()?.to_str()?.to_owned(),
            None => thread.rsplit('/').next()?.to_owned(),
        };
        let comm = std::fs::read_to_string(format!("/proc/{thread}/comm")).ok()?;
        Some((tid, comm.strip_suffix('\n').unwrap_or(&comm).to_owned()))
    }

    // trio: test_threads.py::test_named_thread and test_named_thread_os
    // (one test: it alone renames threads, so no other test can rename a
    // worker between a call and the check that its name came back)
    #[test]
    fn a_call_names_its_thread_for_the_call_only() {
        mock_run(async {
            // The default: the worker's own name, everywhere.
            let d = to_thread::run_sync(names_here).await?;
            assert!(d.std.as_deref().is_some_and(|n| n.starts_with("trio-worker-")), "{d:?}");
            assert_eq!(d.trio, d.std);
            if let Some((_, os)) = &d.os {
                assert_eq!(Some(os.as_str()), d.std.as_deref().map(|n| &n[..n.len().min(15)]));
            }
            let cases = [
                ("", ""),
                ("fobiedoo", "fobiedoo"),
                ("name_longer_than_15_characters", "name_longer_tha"),
                ("💙", "?"),
            ];
            for (name, os_expected) in cases {
                let n = to_thread::Options::new().thread_name(name).run_sync(names_here).await?;
                assert_eq!(n.trio.as_deref(), Some(name));
                let worker = n.std.expect("workers are named");
                assert!(worker.starts_with("trio-worker-"), "std's name stays: {worker}");
                if cfg!(target_os = "linux") {
                    let (tid, os) = n.os.expect("Linux reports OS names");
                    assert_eq!(os, os_expected, "the OS name during the call");
                    // Restored before the call returned (the worker is idle
                    // now, or runs an unnamed call of another test).
                    let (_, after) = os_name_of(&format!("self/task/{tid}")).expect("the worker is still alive");
                    assert_eq!(after, worker[..worker.len().min(15)], "the OS name after the call");
                }
            }
            // Only workers have a call's name.
            assert_eq!(from_thread::thread_name(), None);
            assert_eq!(std::thread::spawn(from_thread::thread_name).join().unwrap(), None);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_do_in_trio_thread
    #[test]
    fn a_plain_thread_runs_code_in_the_run_through_the_token() {
        mock_run(async {
            let token = current_trio_token()?;
            let trio_thread = std::thread::current().id();
            let plain = std::thread::spawn(move || {
                let a = from_thread::run_sync_with_token(&token, || std::thread::current().id());
                let b = catch_unwind(AssertUnwindSafe(|| {
                    from_thread::run_sync_with_token(&token, || -> u32 { panic!("raised on the run's thread") })
                }));
                let c = from_thread::run_with_token(&token, || async {
                    trio::checkpoint().await?;
                    Ok(3)
                });
                let d = from_thread::run_with_token(&token, || async {
                    trio::checkpoint().await?;
                    Err::<u32, _>(boom(4))
                });
                (a, b.is_err(), c, d)
            });
            let (a, panicked, c, d) = to_thread::run_sync(move || plain.join().unwrap()).await?;
            assert_eq!(a?, trio_thread);
            assert!(panicked, "the panic continued on the calling thread");
            assert_eq!(c?, 3);
            assert_eq!(booms(&d.unwrap_err()), [4]);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_do_in_trio_thread_from_trio_thread
    #[test]
    fn from_thread_calls_on_the_runs_own_thread_are_errors() {
        mock_run(async {
            let token = current_trio_token()?;
            assert!(matches!(from_thread::run_sync(|| ()), Err(Error::Runtime(_))));
            assert!(matches!(from_thread::run(|| async { Ok(()) }), Err(Error::Runtime(_))));
            assert!(matches!(from_thread::run_with_token(&token, || async { Ok(()) }), Err(Error::Runtime(_))));
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_run_in_worker_thread_abandoned
    #[test]
    fn an_abandoned_thread_that_finishes_after_the_run_is_harmless() {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        mock_run(async move {
            let r = trio::move_on_after(
                secs(1),
                to_thread::Options::new().abandon_on_cancel(true).run_sync(move || {
                    go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    done_tx.send(()).unwrap();
                    7
                }),
            )
            .await?;
            assert!(r.is_none());
            Ok(())
        })
        .unwrap();
        // The run is over; now the thread finishes (its report finds no run).
        go_tx.send(()).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // Threads still work in a new run.
        assert_eq!(mock_run(async { to_thread::run_sync(|| 6 * 7).await }).unwrap(), 42);
    }

    // trio: test_threads.py::test_worker_thread_context_not_leaked (what
    // the call captured is dropped when it returns, not kept by the worker)
    #[test]
    fn a_worker_keeps_nothing_of_the_call_it_ran() {
        mock_run(async {
            let value = Arc::new(());
            let captured = value.clone();
            to_thread::run_sync(move || drop(captured)).await?;
            assert_eq!(Arc::strong_count(&value), 1);
            let captured = value.clone();
            to_thread::run_sync(move || {
                let _still_held = &captured;
            })
            .await?;
            assert_eq!(Arc::strong_count(&value), 1);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_trio_from_thread_token_kwarg
    #[test]
    fn a_worker_can_also_call_back_with_an_explicit_token() {
        mock_run(async {
            let caller = current_trio_token()?;
            let token = caller.clone();
            let callee =
                to_thread::run_sync(move || from_thread::run_sync_with_token(&token, current_trio_token)).await??;
            assert_eq!(callee?, caller);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_from_thread_reuses_task
    #[test]
    fn from_thread_calls_run_in_the_host_task() {
        mock_run(async {
            let task = current_task()?;
            let a = to_thread::run_sync(|| from_thread::run_sync(current_task)).await??;
            assert_eq!(a?, task);
            let b = to_thread::run_sync(|| from_thread::run(|| async { current_task() })).await??;
            assert_eq!(b, task);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_recursive_to_thread
    #[test]
    fn a_worker_can_start_another_worker_through_the_run() {
        mock_run(async {
            let (outer, inner) = to_thread::run_sync(|| {
                let outer = std::thread::current().id();
                let inner = from_thread::run(|| to_thread::run_sync(|| std::thread::current().id()));
                (outer, inner)
            })
            .await?;
            assert_ne!(outer, inner?);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_from_thread_host_cancelled
    #[test]
    fn a_worker_cancelling_its_host() {
        mock_run(async {
            // The thread cancels its host, then asks for more.
            let sync_check = || {
                from_thread::run_sync(cancel_host_scope)?;
                from_thread::run_sync(|| true)
            };
            let async_check = || {
                from_thread::run_sync(cancel_host_scope)?;
                from_thread::run(|| async { Ok(true) })
            };

            for check in [sync_check, async_check] {
                // Not abandoning: a request without a checkpoint is still
                // served, and the call returns the thread's value.
                let scope = CancelScope::new();
                HOST_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
                let r = scope.run(to_thread::run_sync(check)).await?;
                assert!(matches!(r, Some(Ok(true))), "{r:?}");
                assert!(!scope.cancelled_caught());

                // Abandoning: the call ends with Cancelled; the request
                // after the cancel is refused with Cancelled (Trio serves it
                // in a system task instead).
                let scope = CancelScope::new();
                HOST_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
                let (tx, rx) = mpsc::channel();
                let r = scope
                    .run(to_thread::Options::new().abandon_on_cancel(true).run_sync(move || {
                        let _ = tx.send(check());
                    }))
                    .await?;
                assert!(r.is_none());
                assert!(scope.cancelled_caught());
                let after = to_thread::run_sync(move || rx.recv_timeout(Duration::from_secs(10))).await?;
                assert!(matches!(after, Ok(Err(Error::Cancelled(_)))), "{after:?}");
            }

            // A future the thread runs cancels the host and then waits: it
            // gets Cancelled, which the thread hands back and the scope
            // catches.
            let scope = CancelScope::new();
            HOST_SCOPE.with_borrow_mut(|s| *s = Some(scope.clone()));
            let r = scope
                .run(async {
                    to_thread::run_sync(|| {
                        from_thread::run(|| async {
                            cancel_host_scope();
                            trio::fail_after(secs(10), async { trio::sleep_forever().await.map(|_| ()) }).await
                        })
                    })
                    .await?
                })
                .await?;
            assert!(r.is_none());
            assert!(scope.cancelled_caught());
            HOST_SCOPE.with_borrow_mut(|s| *s = None);
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_from_thread_check_cancelled_no_abandon
    // (both parametrizations; the cancel reason is item b of the core work)
    #[test]
    fn check_cancelled_in_a_worker_that_is_waited_for() {
        for cancel in [false, true] {
            mock_run(async {
                let (q_tx, q_rx) = mpsc::channel::<bool>();
                let (ev_tx, ev_rx) = mpsc::channel::<()>();
                let scope = CancelScope::new();
                let scope = &scope;
                open_nursery(async |n| {
                    n.spawn(async move {
                        scope
                            .run(async move {
                                to_thread::run_sync(move || {
                                    q_tx.send(from_thread::check_cancelled().is_ok()).unwrap();
                                    ev_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                                    let r = from_thread::check_cancelled();
                                    if let Err(e) = &r {
                                        let source = e.cancel_reason().map(|r| r.source());
                                        assert_eq!(source, Some(trio::CancelSource::Explicit), "{e}");
                                    }
                                    r
                                })
                                .await?
                            })
                            .await?;
                        Ok(())
                    });
                    wait_all_tasks_blocked(Duration::ZERO).await?;
                    assert!(q_rx.recv_timeout(Duration::from_secs(10)).unwrap(), "not cancelled yet");
                    if cancel {
                        scope.cancel();
                    }
                    ev_tx.send(()).unwrap();
                    Ok(())
                })
                .await?;
                assert_eq!(scope.cancelled_caught(), cancel);
                Ok(())
            })
            .unwrap();
        }
    }

    // trio: test_threads.py::test_from_thread_check_cancelled_abandon_on_cancel
    #[test]
    fn check_cancelled_in_an_abandoned_worker() {
        mock_run(async {
            let (q_tx, q_rx) = mpsc::channel::<trio::Result<()>>();
            let (ev_tx, ev_rx) = mpsc::channel::<()>();
            let scope = CancelScope::new();
            let scope = &scope;
            open_nursery(async |n| {
                n.spawn(async move {
                    scope
                        .run(to_thread::Options::new().abandon_on_cancel(true).run_sync(move || {
                            ev_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                            q_tx.send(from_thread::check_cancelled()).unwrap();
                        }))
                        .await?;
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                scope.cancel();
                Ok(())
            })
            .await?;
            // The nursery is done before the thread even looked.
            ev_tx.send(()).unwrap();
            assert!(scope.cancelled_caught());
            let got = to_thread::run_sync(move || q_rx.recv_timeout(Duration::from_secs(10))).await?;
            assert!(matches!(got, Ok(Err(Error::Cancelled(_)))), "{got:?}");
            // With the reason of the host's cancellation (Trio: "cancelled
            // due to explicit from task ...").
            let reason = got.unwrap().unwrap_err().cancel_reason().cloned().expect("a reason");
            assert_eq!(reason.source(), trio::CancelSource::Explicit);
            assert!(reason.source_task().is_some());
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_from_thread_check_cancelled_raises_in_foreign_threads
    #[test]
    fn check_cancelled_outside_a_worker_is_an_error() {
        let r = std::thread::spawn(from_thread::check_cancelled).join().unwrap();
        assert!(matches!(r, Err(Error::Runtime(_))));
        mock_run(async {
            assert!(matches!(from_thread::check_cancelled(), Err(Error::Runtime(_))));
            Ok(())
        })
        .unwrap();
    }

    // trio: test_threads.py::test_reentry_doesnt_deadlock (bounded: 4 tasks,
    // 20 round trips each)
    #[test]
    fn many_tasks_bouncing_between_threads_and_the_run_do_not_deadlock() {
        let rounds = AtomicUsize::new(0);
        mock_run(async {
            open_nursery(async |n| {
                for _ in 0..4 {
                    let rounds = &rounds;
                    n.spawn(async move {
                        for _ in 0..20 {
                            to_thread::run_sync(|| from_thread::run(|| async { trio::sleep(Duration::ZERO).await }))
                                .await??;
                            rounds.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    });
                }
                Ok(())
            })
            .await
        })
        .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 80);
    }
}
