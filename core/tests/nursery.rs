//! Nurseries: waiting, borrowing, error groups, panics, `start()`.

mod util;

use std::cell::Cell;
#[cfg(not(target_os = "wasi"))]
use std::panic::{AssertUnwindSafe, catch_unwind};

use trio::lowlevel::current_task;
use trio::{CancelScope, Error, Nursery, TaskStatus, checkpoint, current_time, open_nursery, sleep, sleep_forever};
use util::*;

#[test]
fn children_borrow_the_enclosing_frame() {
    let count = Cell::new(0);
    mock_run(async {
        open_nursery(async |n| {
            for i in 1..=4 {
                let count = &count;
                n.spawn(async move {
                    sleep(secs(i)).await?;
                    count.set(count.get() + i);
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(count.get(), 10);
}

#[test]
fn the_nursery_waits_for_every_child_and_returns_the_body_value() {
    let v = mock_run(async {
        let v = open_nursery(async |n| {
            n.spawn(async { sleep(secs(3)).await });
            n.spawn(async { sleep(secs(7)).await });
            Ok("body")
        })
        .await?;
        assert_eq!(current_time()?, at(7));
        Ok(v)
    })
    .unwrap();
    assert_eq!(v, Some("body"));
}

#[test]
fn a_failing_child_cancels_its_siblings_and_the_body() {
    let sibling_cancelled = Cell::new(false);
    let body_cancelled = Cell::new(false);
    let e = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                let r = sleep_forever().await;
                sibling_cancelled.set(matches!(r, Err(Error::Cancelled(_))));
                r.map(|_| ())
            });
            n.spawn(async {
                sleep(secs(1)).await?;
                Err(boom(1))
            });
            let r = sleep(secs(100)).await;
            body_cancelled.set(matches!(r, Err(Error::Cancelled(_))));
            r
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(booms(&e), vec![1]);
    assert!(!e.contains_cancelled(), "the nursery caught its own cancellation: {e}");
    assert!(sibling_cancelled.get());
    assert!(body_cancelled.get());
}

#[test]
fn every_error_is_reported_as_a_group() {
    let e = mock_run(async {
        open_nursery(async |n| {
            // All fail in the same batch, before the cancellation that the
            // first failure causes can reach the others.
            for i in 1..=3 {
                n.spawn(async move { Err(boom(i)) });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert!(matches!(e, Error::Group(_)));
    assert_eq!(booms(&e), vec![1, 2, 3]);
}

#[test]
fn body_error_and_child_error_are_both_reported() {
    let e = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                // Fails during cleanup of its cancellation.
                let _ = sleep_forever().await;
                Err(boom(2))
            });
            checkpoint().await?;
            Err::<(), _>(boom(1))
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(booms(&e), vec![1, 2]);
}

#[test]
fn nested_groups_are_flattened() {
    let e = mock_run(async {
        open_nursery(async |outer| {
            outer.spawn(async {
                open_nursery(async |inner| {
                    inner.spawn(async { Err(boom(1)) });
                    inner.spawn(async { Err(boom(2)) });
                    Ok(())
                })
                .await?;
                Ok(())
            });
            outer.spawn(async { Err(boom(3)) });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(booms(&e), vec![1, 2, 3]);
    assert!(e.leaves().iter().all(|l| !matches!(l, Error::Group(_))));
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_child_panic_cancels_siblings_waits_for_them_then_unwinds() {
    let cleaned_up = Cell::new(false);
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            open_nursery(async |n| {
                n.spawn(async {
                    let r = sleep_forever().await;
                    // Async cleanup in a shield still runs before the unwind.
                    CancelScope::shielded().run(sleep(secs(5))).await?;
                    cleaned_up.set(true);
                    r.map(|_| ())
                });
                n.spawn(async {
                    sleep(secs(1)).await?;
                    panic!("child exploded");
                });
                Ok(())
            })
            .await?;
            Ok(())
        })
    }));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"child exploded"));
    assert!(cleaned_up.get());
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_body_panic_waits_for_children() {
    let child_done = Cell::new(false);
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            open_nursery(async |n| {
                n.spawn(async {
                    let _ = sleep_forever().await;
                    child_done.set(true);
                    Ok(())
                });
                checkpoint().await?;
                panic!("body exploded {}", 7);
                #[allow(unreachable_code)]
                Ok(())
            })
            .await?;
            Ok(())
        })
    }));
    let payload = r.unwrap_err();
    let msg = payload.downcast_ref::<String>().cloned().or(payload.downcast_ref::<&str>().map(|s| s.to_string()));
    assert_eq!(msg.as_deref(), Some("body exploded 7"));
    assert!(child_done.get());
}

#[test]
fn a_nursery_handle_can_be_handed_to_children() {
    let count = Cell::new(0);
    mock_run(async {
        open_nursery(async |n| {
            let count = &count;
            n.spawn(async move {
                for i in 0..5 {
                    n.spawn(async move {
                        sleep(secs(i)).await?;
                        count.set(count.get() + 1);
                        Ok(())
                    });
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(count.get(), 5);
}

#[test]
fn nested_nurseries_borrow_outer_locals() {
    let total = Cell::new(0);
    mock_run(async {
        let total = &total;
        open_nursery(async |outer| {
            outer.spawn(async { sleep(secs(1)).await });
            // A local of the outer body, borrowed by the inner nursery's children.
            let local = 5;
            open_nursery(async |inner| {
                let local = &local;
                inner.spawn(async move {
                    total.set(total.get() + *local);
                    Ok(())
                });
                Ok(())
            })
            .await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(total.get(), 5);
}

#[test]
fn cancelling_the_nursery_scope_from_a_child_is_caught_by_the_nursery() {
    let r = mock_run(async {
        let r = open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(1)).await?;
                n.cancel_scope().cancel();
                Ok(())
            });
            n.spawn(async { sleep_forever().await.map(|_| ()) });
            sleep_forever().await?;
            Ok(1)
        })
        .await?;
        assert_eq!(current_time()?, at(1));
        Ok(r)
    })
    .unwrap();
    assert_eq!(r, None, "the body was interrupted, so there is no value");
}

#[test]
fn cancelling_the_nursery_at_the_end_of_the_body_keeps_its_value() {
    let r = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async { sleep_forever().await.map(|_| ()) });
            n.cancel_scope().cancel();
            Ok(9)
        })
        .await
    })
    .unwrap();
    assert_eq!(r, Some(9));
}

#[test]
fn outer_cancellation_passes_through_a_nursery() {
    let r = mock_run(async {
        let scope = CancelScope::with_timeout(secs(2));
        let r = scope
            .run(async {
                open_nursery(async |n| {
                    n.spawn(async { sleep_forever().await.map(|_| ()) });
                    n.spawn(async { sleep_forever().await.map(|_| ()) });
                    Ok(())
                })
                .await
            })
            .await?;
        assert!(scope.cancelled_caught());
        Ok(r)
    })
    .unwrap();
    assert!(r.is_none());
}

#[test]
fn a_nursery_is_a_checkpoint() {
    mock_run(async {
        trio::testing::assert_checkpoints(open_nursery(async |_n| Ok(()))).await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn exiting_a_nursery_in_a_cancelled_scope_raises_cancelled() {
    mock_run(async {
        let scope = CancelScope::new();
        scope.cancel();
        let r = scope.run(async { open_nursery(async |_n| Ok(())).await }).await?;
        assert!(r.is_none());
        assert!(scope.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn children_may_keep_spawning_after_the_body_returned() {
    let count = Cell::new(0u32);
    mock_run(async {
        open_nursery(async |n| {
            fn chain<'s>(n: &'s Nursery<'s, '_>, count: &'s Cell<u32>, left: u32) {
                if left == 0 {
                    return;
                }
                n.spawn(async move {
                    sleep(secs(1)).await?;
                    count.set(count.get() + 1);
                    chain(n, count, left - 1);
                    Ok(())
                });
            }
            chain(n, &count, 5);
            Ok(())
        })
        .await?;
        assert_eq!(current_time()?, at(5));
        Ok(())
    })
    .unwrap();
    assert_eq!(count.get(), 5);
}

#[test]
fn dropping_a_nursery_future_drops_its_children() {
    let dropped = Cell::new(false);
    mock_run(async {
        let nursery = open_nursery(async |n| {
            n.spawn(async {
                let _flag = DropFlag(&dropped);
                sleep_forever().await.map(|_| ())
            });
            Ok(())
        });
        let timeout = async {
            sleep(secs(1)).await?;
            Ok(None)
        };
        let r = futures_lite::future::or(nursery, timeout).await?;
        assert!(r.is_none());
        assert!(dropped.get());
        // The run is still healthy afterwards.
        sleep(secs(1)).await?;
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn tasks_have_names_and_a_tree() {
    mock_run(async {
        let root = current_task()?;
        assert_eq!(root.name().as_deref(), Some("<main>"));
        assert!(root.parent_nursery().is_none());
        open_nursery(async |n| {
            // The body runs as the task that opened the nursery.
            assert_eq!(current_task()?, root);
            let nurseries = root.child_nurseries();
            assert_eq!(nurseries.len(), 1);
            let nursery = nurseries[0];
            assert_eq!(nursery.parent_task(), Some(root));
            n.spawn_named("worker-1", async move {
                let me = current_task()?;
                assert_eq!(me.name().as_deref(), Some("worker-1"));
                assert_eq!(me.parent_nursery(), Some(nursery));
                sleep(secs(1)).await
            });
            n.spawn_named(String::from("worker-2"), async { sleep(secs(2)).await });
            checkpoint().await?;
            let names: Vec<_> = nursery.child_tasks().iter().filter_map(|t| t.name()).collect();
            assert_eq!(names, ["worker-1", "worker-2"]);
            sleep(secs(1)).await?;
            checkpoint().await?;
            assert_eq!(nursery.child_tasks().len(), 1);
            Ok(())
        })
        .await?;
        assert!(root.child_nurseries().is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn spawn_default_names_name_the_future_type() {
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                let name = current_task()?.name().unwrap();
                assert!(name.contains("nursery"), "{name}");
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// ---- start() ----

#[test]
fn start_returns_the_started_value_and_the_task_runs_on() {
    let finished = Cell::new(false);
    mock_run(async {
        open_nursery(async |n| {
            let v = n
                .start(async |status: TaskStatus<u32>| {
                    sleep(secs(1)).await?;
                    status.started(17);
                    sleep(secs(1)).await?;
                    finished.set(true);
                    Ok(())
                })
                .await?;
            assert_eq!(v, 17);
            assert_eq!(current_time()?, at(1));
            assert!(!finished.get());
            Ok(())
        })
        .await?;
        assert!(finished.get());
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_error_before_started_goes_to_the_caller_not_the_nursery() {
    let sibling_survived = Cell::new(false);
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(5)).await?;
                sibling_survived.set(true);
                Ok(())
            });
            let r = n
                .start(async |_status: TaskStatus<()>| {
                    sleep(secs(1)).await?;
                    Err(boom(4))
                })
                .await;
            assert_eq!(booms(&r.unwrap_err()), vec![4]);
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert!(sibling_survived.get());
}

#[test]
fn returning_without_started_is_an_error_for_the_caller() {
    mock_run(async {
        open_nursery(async |n| {
            let r = n.start(async |_status: TaskStatus<()>| sleep(secs(1)).await).await;
            assert!(matches!(r, Err(Error::Runtime(m)) if m.contains("without calling")));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn dropping_the_task_status_early_is_an_error_not_a_hang() {
    let child_cancelled = Cell::new(false);
    mock_run(async {
        open_nursery(async |n| {
            let r = n
                .start(async |status: TaskStatus<()>| {
                    drop(status);
                    let r = sleep_forever().await;
                    child_cancelled.set(matches!(r, Err(Error::Cancelled(_))));
                    r.map(|_| ())
                })
                .await;
            assert!(matches!(r, Err(Error::Runtime(m)) if m.contains("TaskStatus")));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert!(child_cancelled.get(), "the orphaned task was cancelled, so the nursery could close");
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_panic_before_started_reaches_the_caller() {
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            open_nursery(async |n| {
                let r = n
                    .start(async |_status: TaskStatus<()>| {
                        checkpoint().await?;
                        panic!("start panic");
                    })
                    .await;
                let _ = r;
                unreachable!("the panic continues in the caller");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await?;
            Ok(())
        })
    }));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"start panic"));
}

#[test]
fn cancelling_the_caller_before_started_cancels_the_task() {
    let task_cancelled = Cell::new(false);
    mock_run(async {
        open_nursery(async |n| {
            let r = trio::move_on_after(secs(1), async {
                n.start(async |status: TaskStatus<()>| {
                    let r = sleep(secs(10)).await;
                    task_cancelled.set(matches!(r, Err(Error::Cancelled(_))));
                    r?;
                    status.started(());
                    Ok(())
                })
                .await
            })
            .await?;
            assert!(r.is_none());
            assert_eq!(current_time()?, at(1));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert!(task_cancelled.get());
}

#[test]
fn before_started_the_nursery_cancel_does_not_reach_the_task() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |n| {
            n.cancel_scope().cancel();
            let r = CancelScope::shielded()
                .run(async {
                    n.start(async |status: TaskStatus<()>| {
                        // Still under the caller's (shielded) scope.
                        sleep(secs(1)).await?;
                        log.push("slept before started");
                        status.started(());
                        // Now inside the cancelled nursery.
                        let r = checkpoint().await;
                        log.push(format!("after started: {}", r.is_err()));
                        r
                    })
                    .await
                })
                .await?;
            assert_eq!(r, Some(()));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["slept before started", "after started: true"]);
}

#[test]
fn an_error_after_started_goes_to_the_nursery() {
    let e = mock_run(async {
        open_nursery(async |n| {
            n.start(async |status: TaskStatus<()>| {
                status.started(());
                sleep(secs(1)).await?;
                Err(boom(9))
            })
            .await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(booms(&e), vec![9]);
}

#[test]
fn start_into_an_outer_nursery_outlives_the_inner_one() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |outer| {
            open_nursery(async |_inner| {
                outer
                    .start(async |status: TaskStatus<()>| {
                        status.started(());
                        sleep(secs(5)).await?;
                        log.push("outer child done");
                        Ok(())
                    })
                    .await?;
                Ok(())
            })
            .await?;
            log.push("inner closed");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["inner closed", "outer child done"]);
}

#[test]
fn an_orphaned_start_task_still_reports_its_errors() {
    let e = mock_run(async {
        open_nursery(async |n| {
            let r = n
                .start(async |status: TaskStatus<()>| {
                    drop(status);
                    // Cancelled by the orphaning, fails during its cleanup.
                    let _ = sleep_forever().await;
                    Err(boom(5))
                })
                .await;
            assert!(matches!(r, Err(Error::Runtime(_))));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap_err();
    assert_eq!(booms(&e), vec![5], "the error was not lost");
}

// trio: test_run.py::test_nursery_start (the cancelled-caller cases)
#[test]
fn start_in_a_cancelled_scope_is_cancelled_when_the_task_checkpoints() {
    mock_run(async {
        open_nursery(async |n| {
            let cs = CancelScope::new();
            cs.cancel();
            let r = cs
                .run(async {
                    let v = n
                        .start(async |status: TaskStatus<&str>| {
                            status.started("hi");
                            trio::checkpoint().await
                        })
                        .await;
                    assert!(matches!(v, Err(ref e) if e.is_cancelled()), "start raised Cancelled, got {v:?}");
                    v.map(|_| ())
                })
                .await?;
            assert!(r.is_none() && cs.cancelled_caught(), "the caller's scope caught it");
            // The task stayed with the caller: nothing is left in the nursery.
            assert_eq!(n.child_count(), 0);
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn start_in_a_cancelled_scope_returns_the_value_if_the_task_ends_without_a_checkpoint() {
    mock_run(async {
        open_nursery(async |n| {
            let cs = CancelScope::new();
            cs.cancel();
            let v = cs
                .run(async {
                    n.start(async |status: TaskStatus<u32>| {
                        status.started(7);
                        Ok(())
                    })
                    .await
                })
                .await?;
            assert_eq!(v, Some(7));
            assert!(!cs.cancelled_caught());
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn an_error_after_started_in_a_cancelled_scope_comes_out_of_start() {
    let e = mock_run(async {
        open_nursery(async |n| {
            let cs = CancelScope::new();
            cs.cancel();
            let r = cs
                .run(async {
                    n.start(async |status: TaskStatus<()>| {
                        status.started(());
                        Err(boom(4))
                    })
                    .await
                })
                .await;
            // Out of start(), past the caller's scope (it is no
            // cancellation), not via the nursery.
            assert_eq!(booms(r.as_ref().unwrap_err()), vec![4]);
            assert_eq!(n.child_count(), 0);
            Ok(())
        })
        .await
    });
    assert!(e.is_ok(), "the error went to the nursery: {e:?}");
}
