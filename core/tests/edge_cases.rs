//! Edge cases ported from Trio's `test_run.py`, `test_timeouts.py` and
//! `test_mock_clock.py`, plus shuffled-order stress of the wakeup protocol.

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use trio::lowlevel::{Abort, WakeToken, park, unpark};
use trio::testing::{MockClock, wait_all_tasks_blocked};
use trio::{CancelScope, Error, RunOptions, checkpoint, current_time, open_nursery, sleep, sleep_forever};
use util::*;

#[test]
fn a_task_spawned_into_a_cancelled_nursery_is_cancelled_at_its_first_checkpoint() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |n| {
            n.cancel_scope().cancel();
            n.spawn(async {
                log.push("started");
                let r = checkpoint().await;
                log.push(format!("checkpoint cancelled: {}", r.is_err()));
                r
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["started", "checkpoint cancelled: true"]);
}

#[test]
fn a_checkpoint_sees_a_deadline_that_passed_by_a_jump() {
    manual_run_with(async |clock| {
        let s = CancelScope::with_timeout(secs(1));
        let r = s
            .run(async {
                checkpoint().await?;
                clock.jump(secs(2));
                // The loop fires the deadline between passes, so the next
                // checkpoint already sees it.
                checkpoint().await?;
                Ok("not reached")
            })
            .await?;
        assert_eq!(r, None);
        Ok(())
    })
    .unwrap();
}

#[test]
fn autojump_can_be_turned_on_mid_run() {
    let clock = MockClock::new();
    let c = clock.clone();
    RunOptions::new()
        .clock(clock)
        .run(async {
            open_nursery(async |n| {
                n.spawn(async { sleep(secs(30)).await });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                assert_eq!(current_time()?, at(0));
                c.set_autojump_threshold(Some(Duration::ZERO));
                Ok(())
            })
            .await?;
            assert_eq!(current_time()?, at(30));
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_small_cushion_waiter_runs_before_a_larger_autojump_threshold() {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::from_millis(50)));
    let log = Log::default();
    RunOptions::new()
        .clock(clock)
        .run(async {
            open_nursery(async |n| {
                n.spawn(async {
                    sleep(secs(10)).await?;
                    log.push("sleeper woke");
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::from_millis(1)).await?;
                log.push(format!("idle at {:?}", current_time()?));
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    assert_eq!(log.take(), [format!("idle at {:?}", at(0)), "sleeper woke".into()]);
}

#[test]
fn cancelling_a_scope_after_it_exited_is_harmless() {
    mock_run(async {
        let s = CancelScope::new();
        s.run(async { checkpoint().await }).await?;
        s.cancel();
        s.set_deadline(at(0));
        s.set_shield(true);
        assert!(!s.cancelled_caught());
        checkpoint().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn deeply_nested_scopes_and_nurseries() {
    fn nest(
        depth: u32,
        hit: &Cell<u32>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = trio::Result<()>> + '_>> {
        Box::pin(async move {
            if depth == 0 {
                hit.set(hit.get() + 1);
                return sleep_forever().await.map(|_| ());
            }
            let scope = CancelScope::new();
            scope
                .run(async {
                    open_nursery(async |n| {
                        n.spawn(nest(depth - 1, hit));
                        Ok(())
                    })
                    .await
                })
                .await?;
            Ok(())
        })
    }
    let hit = Cell::new(0);
    mock_run(async {
        let outer = CancelScope::with_timeout(secs(1));
        outer.run(nest(60, &hit)).await?;
        assert!(outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
    assert_eq!(hit.get(), 1);
}

#[test]
fn ten_thousand_sleepers_all_wake_at_their_deadlines() {
    let woke = Cell::new(0u32);
    let late = Cell::new(0u32);
    mock_run(async {
        open_nursery(async |n| {
            for i in 0..10_000u64 {
                let (woke, late) = (&woke, &late);
                n.spawn(async move {
                    let want = trio::Instant::ZERO + Duration::from_millis(i % 997);
                    trio::sleep_until(want).await?;
                    woke.set(woke.get() + 1);
                    if current_time()? != want {
                        late.set(late.get() + 1);
                    }
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(woke.get(), 10_000);
    assert_eq!(late.get(), 0, "with a mock clock every sleeper wakes exactly at its deadline");
}

/// Under many schedule orders, waiters that are cancelled and unparked in the
/// same pass each see exactly one outcome, and a resource handed over is
/// always received.
#[test]
fn no_lost_wakeups_under_shuffled_schedules() {
    for seed in 1..40u64 {
        let clock = MockClock::new();
        clock.set_autojump_threshold(Some(Duration::ZERO));
        let handed = Rc::new(RefCell::new(vec![false; 16]));
        let received = RefCell::new(vec![false; 16]);
        let cancelled = RefCell::new(vec![false; 16]);
        let tokens: RefCell<Vec<Option<WakeToken>>> = RefCell::new(vec![None; 16]);
        let scopes: Vec<CancelScope> = (0..16).map(|_| CancelScope::new()).collect();
        RunOptions::new()
            .clock(clock)
            .shuffle_seed(seed)
            .run(async {
                open_nursery(async |n| {
                    for (i, scope) in scopes.iter().enumerate() {
                        let (received, cancelled, tokens) = (&received, &cancelled, &tokens);
                        let handed = handed.clone();
                        n.spawn(async move {
                            let r = scope
                                .run(async {
                                    park(
                                        |t| tokens.borrow_mut()[i] = Some(t),
                                        move || if handed.borrow()[i] { Abort::Failed } else { Abort::Succeeded },
                                    )
                                    .await
                                })
                                .await?;
                            match r {
                                Some(()) => received.borrow_mut()[i] = true,
                                None => cancelled.borrow_mut()[i] = true,
                            }
                            Ok(())
                        });
                    }
                    wait_all_tasks_blocked(Duration::ZERO).await?;
                    // Two actors in the same pass, in a shuffled order.
                    n.spawn(async {
                        for (i, s) in scopes.iter().enumerate() {
                            if i % 3 != 0 {
                                s.cancel();
                            }
                        }
                        Ok(())
                    });
                    n.spawn(async {
                        for i in 0..16 {
                            if i % 2 == 0
                                && let Some(t) = tokens.borrow()[i]
                                && unpark(t)
                            {
                                handed.borrow_mut()[i] = true;
                            }
                        }
                        Ok(())
                    });
                    // Release whoever neither actor reached.
                    wait_all_tasks_blocked(Duration::ZERO).await?;
                    for s in &scopes {
                        s.cancel();
                    }
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .unwrap();
        for i in 0..16 {
            let (h, r, c) = (handed.borrow()[i], received.borrow()[i], cancelled.borrow()[i]);
            assert_eq!(h, r, "seed {seed}, waiter {i}: handed over iff received");
            assert!(r != c, "seed {seed}, waiter {i}: exactly one outcome");
        }
    }
}

#[test]
fn errors_from_user_code_keep_their_source() {
    let e = mock_run(async {
        let n: i32 = "not a number".parse()?;
        Ok(n)
    })
    .unwrap_err();
    assert!(matches!(e, Error::User(_)));
    assert!(std::error::Error::source(&e).is_some());
    assert!(e.to_string().contains("invalid digit"));
}
