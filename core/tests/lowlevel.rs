//! The park primitive, checkpoint accounting and task introspection.

mod util;

use std::cell::{Cell, RefCell};
#[cfg(not(target_os = "wasi"))]
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use trio::lowlevel::{Abort, WakeToken, current_root_task, current_task, park, unpark};
#[cfg_attr(target_os = "wasi", allow(unused_imports))] // some users are native-only
use trio::testing::{assert_checkpoints, assert_no_checkpoints, wait_all_tasks_blocked};
#[cfg_attr(target_os = "wasi", allow(unused_imports))]
use trio::{CancelScope, Error, checkpoint, current_time, open_nursery, sleep};
use util::*;

fn zero() -> std::time::Duration {
    std::time::Duration::ZERO
}

#[test]
fn park_and_unpark() {
    mock_run(async {
        let token: Cell<Option<WakeToken>> = Cell::new(None);
        let woke = Cell::new(false);
        open_nursery(async |n| {
            n.spawn(async {
                park(|t| token.set(Some(t)), || Abort::Succeeded).await?;
                woke.set(true);
                Ok(())
            });
            wait_all_tasks_blocked(zero()).await?;
            assert!(!woke.get());
            let t = token.get().unwrap();
            assert!(unpark(t));
            assert!(!unpark(t), "a second unpark finds nobody waiting");
            Ok(())
        })
        .await?;
        assert!(woke.get());
        Ok(())
    })
    .unwrap();
}

#[test]
fn unpark_of_a_finished_waiter_is_false() {
    mock_run(async {
        let token: Cell<Option<WakeToken>> = Cell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                let r = trio::move_on_after(secs(1), async { park(|t| token.set(Some(t)), || Abort::Succeeded).await })
                    .await?;
                assert!(r.is_none());
                Ok(())
            });
            sleep(secs(2)).await?;
            assert!(!unpark(token.get().unwrap()));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_failed_abort_keeps_waiting_for_the_committed_wakeup() {
    mock_run(async {
        let token: Cell<Option<WakeToken>> = Cell::new(None);
        let aborts = Rc::new(Cell::new(0));
        let outcome = RefCell::new(None);
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                let r = s
                    .run(async {
                        let aborts = aborts.clone();
                        let r = park(
                            |t| token.set(Some(t)),
                            move || {
                                aborts.set(aborts.get() + 1);
                                Abort::Failed
                            },
                        )
                        .await;
                        *outcome.borrow_mut() = Some(r.is_ok());
                        r
                    })
                    .await?;
                assert_eq!(r, Some(()), "the wakeup won, the scope did not catch");
                Ok(())
            });
            wait_all_tasks_blocked(zero()).await?;
            s.cancel();
            // As in Trio, the abort ran inside cancel().
            assert_eq!(aborts.get(), 1, "the abort callback ran inside cancel()");
            wait_all_tasks_blocked(zero()).await?;
            assert_eq!(aborts.get(), 1);
            assert!(outcome.borrow().is_none(), "still parked after the failed abort");
            sleep(secs(1)).await?;
            assert!(unpark(token.get().unwrap()));
            Ok(())
        })
        .await?;
        assert_eq!(*outcome.borrow(), Some(true));
        Ok(())
    })
    .unwrap();
}

#[test]
fn no_wakeup_is_lost_when_cancel_and_wake_coincide() {
    // The waker-upper unparks in the same pass in which the scope is
    // cancelled: the waiter must see exactly one outcome, and the resource
    // handed over must not vanish.
    for cancel_first in [true, false] {
        mock_run(async {
            let token: Cell<Option<WakeToken>> = Cell::new(None);
            let handed_over = Rc::new(Cell::new(false));
            let received = Cell::new(false);
            let s = CancelScope::new();
            open_nursery(async |n| {
                n.spawn(async {
                    let handed = handed_over.clone();
                    s.run(async {
                        park(
                            |t| token.set(Some(t)),
                            // A lot would remove the waiter here; if it was
                            // already handed the resource, abort fails.
                            move || if handed.get() { Abort::Failed } else { Abort::Succeeded },
                        )
                        .await?;
                        received.set(true);
                        Ok(())
                    })
                    .await?;
                    Ok(())
                });
                wait_all_tasks_blocked(zero()).await?;
                let wake = || {
                    if unpark(token.get().unwrap()) {
                        handed_over.set(true);
                    }
                };
                if cancel_first {
                    s.cancel();
                    wake();
                } else {
                    wake();
                    s.cancel();
                }
                Ok(())
            })
            .await?;
            assert_eq!(handed_over.get(), received.get(), "handed over iff received");
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn dropping_a_parked_future_runs_abort() {
    mock_run(async {
        let aborted = Rc::new(Cell::new(false));
        let flag = aborted.clone();
        let parked = park(
            |_| {},
            move || {
                flag.set(true);
                Abort::Succeeded
            },
        );
        let other = async {
            checkpoint().await?;
            Ok(())
        };
        futures_lite::future::or(parked, other).await?;
        assert!(aborted.get());
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancelled_on_entry_park_still_yields() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                let s = CancelScope::new();
                s.cancel();
                s.run(async {
                    let r = park(|_| {}, || Abort::Succeeded).await;
                    log.push("a cancelled");
                    r
                })
                .await?;
                Ok(())
            });
            n.spawn(async {
                log.push("b ran");
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["b ran", "a cancelled"]);
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn assert_checkpoints_passes_and_fails() {
    mock_run(async {
        assert_checkpoints(checkpoint()).await?;
        assert_checkpoints(sleep(secs(1))).await?;
        assert_no_checkpoints(async { Ok::<_, Error>(1 + 1) }).await?;
        Ok(())
    })
    .unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            assert_checkpoints(async { Ok::<_, Error>(()) }).await?;
            Ok(())
        })
    }));
    assert!(r.is_err(), "a block without a checkpoint fails assert_checkpoints");
    let r = catch_unwind(AssertUnwindSafe(|| {
        mock_run(async {
            assert_no_checkpoints(checkpoint()).await?;
            Ok(())
        })
    }));
    assert!(r.is_err(), "a checkpoint fails assert_no_checkpoints");
}

#[test]
fn the_runtime_async_operations_are_checkpoints() {
    mock_run(async {
        assert_checkpoints(trio::checkpoint()).await?;
        assert_checkpoints(trio::sleep_until(trio::Instant::ZERO)).await?;
        assert_checkpoints(open_nursery(async |n| {
            n.spawn(async { Ok(()) });
            Ok(())
        }))
        .await?;
        assert_checkpoints(wait_all_tasks_blocked(zero())).await?;
        let n = assert_checkpoints(open_nursery(async |n| {
            n.start(async |s: trio::TaskStatus<u8>| {
                s.started(1);
                Ok(())
            })
            .await
        }))
        .await?;
        assert_eq!(n, Some(1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn current_task_and_root() {
    mock_run(async {
        let root = current_root_task()?;
        assert_eq!(current_task()?, root);
        assert!(root.is_alive());
        let child = RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                let me = current_task()?;
                assert_ne!(me, root);
                *child.borrow_mut() = Some(me);
                Ok(())
            });
            Ok(())
        })
        .await?;
        let child = child.borrow().unwrap();
        assert!(!child.is_alive());
        assert_eq!(child.name(), None);
        assert_eq!(current_time()?, at(0));
        Ok(())
    })
    .unwrap();
}
