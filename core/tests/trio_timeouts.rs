//! Ports of Python Trio's `src/trio/_tests/test_timeouts.py` that
//! `core/tests/timeouts.rs` and `core/tests/cancel.rs` do not cover already,
//! see `docs/TRIO_CONFORMANCE.md` (section test_timeouts.py). All time is mock time.

mod util;

use std::time::Duration;

use trio::testing::assert_checkpoints;
use trio::{CancelScope, Error, Instant, checkpoint, current_time, move_on_at, sleep, sleep_forever, sleep_until};
use util::*;

// trio: test_timeouts.py::test_sleep
#[test]
fn sleep_and_sleep_until_take_their_time_and_a_trivial_move_on_at_cancels() {
    mock_run(async {
        let start = current_time()?;
        sleep_until(start + secs(1)).await?;
        assert_eq!(current_time()?, start + secs(1));
        sleep(secs(1)).await?;
        assert_eq!(current_time()?, start + secs(2));
        assert_checkpoints(sleep(Duration::ZERO)).await?;
        // A deadline of "now" cancels the first checkpoint inside.
        let now = current_time()?;
        let r = move_on_at(now, async {
            let r = sleep(Duration::ZERO).await;
            assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
            r
        })
        .await?;
        assert!(r.is_none());
        Ok(())
    })
    .unwrap();
}

/// A timeout scope with a shield (Trio's `move_on_after(t, shield=True)`;
/// here the scope is built and its shield set before it is entered).
fn shielded_timeout(t: Duration) -> CancelScope {
    let s = CancelScope::with_timeout(t);
    s.set_shield(true);
    s
}

// trio: test_timeouts.py::test_context_shields_from_outer (both the
// move_on_after and the fail_after parametrization)
#[test]
fn a_shielded_timeout_scope_shields_from_outer_cancellation() {
    for fail in [false, true] {
        mock_run(async {
            let outer = CancelScope::new();
            let inner = shielded_timeout(secs(1));
            assert!(inner.shield());
            let r = outer
                .run(async {
                    let r = inner
                        .run(async {
                            outer.cancel();
                            checkpoint().await.expect("the shield did not work");
                            inner.set_shield(false);
                            let r = checkpoint().await;
                            assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
                            r
                        })
                        .await;
                    // The outer cancellation is not the inner scope's: it
                    // passes through (and is no TooSlow for fail_after).
                    let r = if fail { r.and_then(|v| v.ok_or(Error::TooSlow)).map(Some) } else { r };
                    assert!(matches!(r, Err(Error::Cancelled(_))), "{r:?}");
                    r
                })
                .await?;
            assert!(r.is_none() && outer.cancelled_caught());
            assert!(!inner.cancelled_caught());
            Ok(())
        })
        .unwrap();
    }
}

// trio: test_timeouts.py::test_move_on_after_moves_on_even_if_shielded
#[test]
fn a_shielded_move_on_after_still_moves_on_at_its_deadline() {
    mock_run(async {
        let outer = CancelScope::new();
        let inner = shielded_timeout(secs(1));
        let start = current_time()?;
        outer
            .run(async {
                outer.cancel();
                // Protected by the shield, it sleeps until its own deadline.
                let r = inner.run(async { sleep_forever().await.map(|_| ()) }).await?;
                assert!(r.is_none());
                assert_eq!(current_time()?, start + secs(1));
                Ok(())
            })
            .await?;
        assert!(inner.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

// trio: test_timeouts.py::test_fail_after_fails_even_if_shielded
#[test]
fn a_shielded_fail_after_still_fails_at_its_deadline() {
    mock_run(async {
        let outer = CancelScope::new();
        let inner = shielded_timeout(secs(1));
        let start = current_time()?;
        outer
            .run(async {
                outer.cancel();
                let r = inner.run(async { sleep_forever().await.map(|_| ()) }).await?.ok_or(Error::TooSlow);
                assert!(matches!(r, Err(Error::TooSlow)), "{r:?}");
                assert_eq!(current_time()?, start + secs(1));
                Ok(())
            })
            .await?;
        Ok(())
    })
    .unwrap();
}

// trio: test_timeouts.py::test_timeout_deadline_on_entry
#[test]
fn a_relative_timeout_counts_from_entry_and_can_be_changed_inside() {
    mock_run_with(async |clock| {
        let s = CancelScope::with_timeout(secs(5));
        assert_eq!(s.relative_deadline(), Some(secs(5)));
        clock.jump(secs(3));
        let start = current_time()?;
        s.run(async {
            assert_eq!(s.deadline(), start + secs(5), "counted from entry, not creation");
            s.set_deadline(start + secs(3));
            assert_eq!(s.deadline(), start + secs(3));
            s.set_relative_deadline(secs(4));
            assert_eq!(s.deadline(), start + secs(4));
            Ok(())
        })
        .await?;

        // The shield can be set before entry and is kept.
        let s = CancelScope::with_timeout(secs(5));
        assert!(!s.shield());
        s.set_shield(true);
        assert!(s.shield());
        clock.jump(secs(3));
        let start = current_time()?;
        s.run(async {
            assert!(s.shield());
            assert_eq!(s.deadline(), start + secs(5));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// trio: test_timeouts.py::test_invalid_access_unentered (differs: Rust
// answers instead of raising; this pins what it answers)
#[test]
fn unentered_scopes_report_the_deadline_kind_they_have() {
    mock_run(async {
        // A relative scope has no absolute deadline before entry...
        let s = CancelScope::with_timeout(secs(5));
        assert_eq!(s.deadline(), Instant::MAX);
        assert_eq!(s.relative_deadline(), Some(secs(5)));
        // ... and an absolute one has no relative deadline.
        let s = CancelScope::with_deadline(at(5));
        assert_eq!(s.relative_deadline(), None);
        assert_eq!(s.deadline(), at(5));
        // Setting an absolute deadline on a relative scope replaces it.
        let s = CancelScope::with_timeout(secs(5));
        s.set_deadline(at(7));
        assert_eq!(s.relative_deadline(), None);
        assert_eq!(s.deadline(), at(7));
        Ok(())
    })
    .unwrap();
}
