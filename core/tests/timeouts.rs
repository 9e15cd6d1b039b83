//! Sleeping, timeouts and the mock clock.

mod util;

use std::cell::Cell;
use std::time::Duration;

use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{
    CancelScope, Error, current_time, fail_after, fail_at, move_on_after, move_on_at, open_nursery, sleep,
    sleep_forever, sleep_until,
};
use util::*;

#[test]
fn sleep_advances_the_mock_clock_exactly() {
    mock_run(async {
        let start = current_time()?;
        assert_eq!(start, at(0));
        sleep(Duration::from_millis(1500)).await?;
        assert_eq!(current_time()?, start + Duration::from_millis(1500));
        sleep(secs(3600)).await?;
        assert_eq!(current_time()?, at(3601) + Duration::from_millis(500));
        Ok(())
    })
    .unwrap();
}

#[test]
fn sleeping_zero_or_until_the_past_is_a_checkpoint() {
    mock_run_with(async |clock| {
        clock.jump(secs(10));
        assert_checkpoints(sleep(Duration::ZERO)).await?;
        assert_checkpoints(sleep_until(at(3))).await?;
        assert_eq!(current_time()?, at(10));
        // And a cancelled zero sleep fails.
        let s = CancelScope::new();
        s.cancel();
        let r = s.run(async { sleep(Duration::ZERO).await }).await?;
        assert!(r.is_none());
        Ok(())
    })
    .unwrap();
}

#[test]
fn move_on_after_expires() {
    mock_run(async {
        let r = move_on_after(secs(2), async { sleep(secs(5)).await.map(|()| "slept") }).await?;
        assert_eq!(r, None);
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn move_on_after_finishing_first() {
    mock_run(async {
        let r = move_on_after(secs(5), async { sleep(secs(2)).await.map(|()| "slept") }).await?;
        assert_eq!(r, Some("slept"));
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn fail_after_expires_with_too_slow() {
    mock_run(async {
        let r = fail_after(secs(1), async { sleep(secs(5)).await }).await;
        assert!(matches!(r, Err(Error::TooSlow)));
        assert_eq!(current_time()?, at(1));
        let r = fail_after(secs(10), async { sleep(secs(5)).await.map(|()| 7) }).await?;
        assert_eq!(r, 7);
        Ok(())
    })
    .unwrap();
}

#[test]
fn absolute_variants() {
    mock_run(async {
        assert!(move_on_at(at(3), async { sleep_forever().await.map(|_| ()) }).await?.is_none());
        assert_eq!(current_time()?, at(3));
        assert!(matches!(fail_at(at(4), async { sleep_forever().await.map(|_| ()) }).await, Err(Error::TooSlow)));
        assert_eq!(current_time()?, at(4));
        assert_eq!(fail_at(at(10), async { Ok(1) }).await?, 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn fail_after_passes_outer_cancellation_on() {
    mock_run(async {
        let outer = CancelScope::with_timeout(secs(1));
        let r = outer
            .run(async {
                let inner = fail_after(secs(10), async { sleep_forever().await.map(|_| ()) }).await;
                assert!(matches!(inner, Err(Error::Cancelled(_))), "not TooSlow: the outer deadline fired");
                inner
            })
            .await?;
        assert!(r.is_none() && outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn nested_timeouts_the_earlier_one_fires() {
    mock_run(async {
        let inner = CancelScope::with_timeout(secs(10));
        let r = move_on_after(secs(2), async { inner.run(async { sleep(secs(100)).await }).await }).await?;
        assert!(r.is_none());
        assert!(!inner.cancelled_caught());
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn sleep_forever_only_ends_by_cancellation() {
    mock_run(async {
        let r = move_on_after(secs(86_400 * 365), async { sleep_forever().await.map(|_| ()) }).await?;
        assert!(r.is_none());
        assert_eq!(current_time()?, at(86_400 * 365));
        Ok(())
    })
    .unwrap();
}

#[test]
fn many_deadlines_fire_in_order() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |n| {
            for i in (0..50u64).rev() {
                let log = &log;
                n.spawn(async move {
                    sleep(Duration::from_millis(i * 7 % 50 * 10 + 1)).await?;
                    log.push(format!("{}", i * 7 % 50));
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    let got: Vec<u64> = log.take().iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[test]
fn jumping_the_clock_by_hand_wakes_sleepers() {
    let woke_at = Cell::new(None);
    manual_run_with(async |clock| {
        open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(10)).await?;
                woke_at.set(Some(current_time()?));
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            clock.jump(secs(4));
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(woke_at.get().is_none());
            clock.jump(secs(6));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(woke_at.get(), Some(at(10)));
}

#[test]
fn wait_all_tasks_blocked_runs_before_autojump() {
    mock_run(async {
        let log = Log::default();
        open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(5)).await?;
                log.push("sleeper");
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            log.push(format!("idle at {:?}", current_time()?));
            Ok(())
        })
        .await?;
        assert_eq!(log.take(), [format!("idle at {:?}", at(0)), "sleeper".to_string()]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn wait_all_tasks_blocked_waits_for_busy_tasks() {
    mock_run(async {
        let steps = Cell::new(0);
        open_nursery(async |n| {
            n.spawn(async {
                for _ in 0..20 {
                    steps.set(steps.get() + 1);
                    trio::checkpoint().await?;
                }
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert_eq!(steps.get(), 20, "woke only once the busy task finished");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn smaller_cushions_wake_first() {
    let log = Log::default();
    manual_run_with(async |_clock| {
        open_nursery(async |n| {
            for (name, ms) in [("c", 3u64), ("a", 1), ("b", 2)] {
                let log = &log;
                n.spawn(async move {
                    wait_all_tasks_blocked(Duration::from_millis(ms)).await?;
                    log.push(name);
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["a", "b", "c"]);
}

#[test]
fn wait_all_tasks_blocked_can_be_cancelled() {
    mock_run(async {
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                s.run(wait_all_tasks_blocked(secs(3600))).await?;
                Ok(())
            });
            trio::checkpoint().await?;
            s.cancel();
            Ok(())
        })
        .await?;
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn autojump_makes_hour_long_timeouts_instant() {
    mock_run(async {
        for _ in 0..24 {
            let r = move_on_after(secs(3600), async { sleep_forever().await.map(|_| ()) }).await?;
            assert!(r.is_none());
        }
        assert_eq!(current_time()?, at(24 * 3600));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_real_clock_short_sleep_works() {
    trio::run(async {
        let t0 = current_time()?;
        sleep(Duration::from_millis(5)).await?;
        assert!(current_time()? - t0 >= Duration::from_millis(5));
        Ok(())
    })
    .unwrap();
}

#[test]
fn mock_clock_with_a_rate_moves_by_itself() {
    let clock = trio::testing::MockClock::new();
    clock.set_rate(1000.0);
    trio::RunOptions::new()
        .clock(clock)
        .run(async {
            // 10 virtual seconds at rate 1000 is 10 ms of real time.
            sleep(secs(10)).await?;
            assert!(current_time()? >= at(10));
            Ok(())
        })
        .unwrap();
}

// A scope's deadline goes into the timer map only once its body first
// waits (a timeout around an operation that completes at once never
// touches it). These check that the deadline still holds in every case.

#[test]
fn a_deadline_that_passed_before_the_body_first_waits_still_fires() {
    mock_run_with(async |clock| {
        let start = current_time()?;
        let r = move_on_after(secs(1), async {
            // No wait yet: the clock moves past the deadline, then the body
            // waits for much longer.
            clock.jump(secs(2));
            sleep(secs(10)).await
        })
        .await?;
        assert!(r.is_none(), "the deadline cancelled the sleep");
        assert_eq!(current_time()?, start + secs(2), "at once, not after the sleep");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_deadline_fires_for_a_wait_deep_inside_the_scope() {
    mock_run(async {
        let start = current_time()?;
        let r = move_on_after(secs(1), async {
            // The body waits in a nested scope without a deadline and in a
            // nursery's child: the outer deadline must be armed anyway.
            CancelScope::new()
                .run(async {
                    open_nursery(async |n| {
                        n.spawn(async { sleep_forever().await.map(|_| ()) });
                        Ok(())
                    })
                    .await
                })
                .await
        })
        .await?;
        assert!(r.is_none());
        assert_eq!(current_time()?, start + secs(1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn scopes_that_never_wait_leave_no_timer_behind() {
    mock_run(async {
        let start = current_time()?;
        for i in 0..1000_u64 {
            let r = move_on_after(secs(1 + i), async { Ok(i) }).await?;
            assert_eq!(r, Some(i));
        }
        // The next deadline is the sleep's own, not one of those scopes'.
        sleep(Duration::from_millis(500)).await?;
        assert_eq!(current_time()?, start + Duration::from_millis(500));
        // A scope whose deadline is moved while it waits re-arms.
        let scope = CancelScope::with_timeout(secs(100));
        let s2 = scope.clone();
        let r = scope
            .run(async move {
                s2.set_deadline(current_time()? + secs(3));
                sleep(secs(50)).await
            })
            .await?;
        assert!(r.is_none());
        assert_eq!(current_time()?, start + Duration::from_millis(3500));
        Ok(())
    })
    .unwrap();
}
