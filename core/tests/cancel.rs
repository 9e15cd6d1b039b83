//! Cancel scopes: level-triggered cancellation, nesting, shields, deadlines.

mod util;

use std::cell::Cell;

use trio::lowlevel::cancel_shielded_checkpoint;
use trio::{
    CancelScope, CancelSource, Error, Instant, checkpoint, checkpoint_if_cancelled, current_effective_deadline,
    current_time, open_nursery, sleep, sleep_forever,
};
use util::*;

#[test]
fn a_cancelled_scope_is_caught_where_it_was_cancelled() {
    mock_run(async {
        let scope = CancelScope::new();
        let r = scope
            .run(async {
                scope.cancel();
                checkpoint().await?;
                Ok(1)
            })
            .await?;
        assert_eq!(r, None);
        assert!(scope.cancel_called());
        assert!(scope.cancelled_caught());
        assert!(!scope.is_entered());
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancellation_is_level_triggered() {
    mock_run(async {
        let scope = CancelScope::new();
        scope
            .run(async {
                scope.cancel();
                for _ in 0..3 {
                    assert!(matches!(checkpoint().await, Err(Error::Cancelled(_))));
                    assert!(matches!(sleep(secs(1)).await, Err(Error::Cancelled(_))));
                }
                Ok(())
            })
            .await?;
        // Outside the scope, checkpoints work again.
        checkpoint().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancel_before_entering_takes_effect_at_the_first_checkpoint() {
    mock_run(async {
        let scope = CancelScope::new();
        scope.cancel();
        let reached = Cell::new(false);
        let r = scope
            .run(async {
                reached.set(true);
                checkpoint().await
            })
            .await?;
        assert!(reached.get());
        assert!(r.is_none());
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_uncancelled_scope_returns_the_value() {
    mock_run(async {
        let scope = CancelScope::new();
        assert_eq!(scope.run(async { checkpoint().await.map(|()| 5) }).await?, Some(5));
        assert!(!scope.cancel_called());
        assert!(!scope.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancel_without_a_checkpoint_is_not_caught() {
    mock_run(async {
        let scope = CancelScope::new();
        let r = scope
            .run(async {
                scope.cancel();
                Ok(3)
            })
            .await?;
        assert_eq!(r, Some(3));
        assert!(scope.cancel_called());
        assert!(!scope.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_outer_scope_catches_its_own_cancellation() {
    mock_run(async {
        let (outer, inner) = (CancelScope::new(), CancelScope::new());
        let r = outer
            .run(async {
                inner
                    .run(async {
                        outer.cancel();
                        checkpoint().await
                    })
                    .await?;
                unreachable!("inner passes Cancelled on");
                #[allow(unreachable_code)]
                Ok(())
            })
            .await?;
        assert!(r.is_none());
        assert!(!inner.cancelled_caught());
        assert!(outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn when_both_are_cancelled_the_outermost_catches() {
    mock_run(async {
        let (outer, inner) = (CancelScope::new(), CancelScope::new());
        outer
            .run(async {
                inner
                    .run(async {
                        inner.cancel();
                        outer.cancel();
                        checkpoint().await
                    })
                    .await?;
                Ok(())
            })
            .await?;
        assert!(!inner.cancelled_caught());
        assert!(outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_inner_cancel_does_not_touch_the_outer_scope() {
    mock_run(async {
        let (outer, inner) = (CancelScope::new(), CancelScope::new());
        let after = outer
            .run(async {
                inner
                    .run(async {
                        inner.cancel();
                        checkpoint().await
                    })
                    .await?;
                checkpoint().await?;
                Ok("after")
            })
            .await?;
        assert_eq!(after, Some("after"));
        assert!(inner.cancelled_caught());
        assert!(!outer.cancel_called());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_shield_hides_outer_cancellation() {
    mock_run(async {
        let outer = CancelScope::new();
        let log = Log::default();
        outer
            .run(async {
                outer.cancel();
                CancelScope::shielded()
                    .run(async {
                        checkpoint().await?;
                        sleep(secs(1)).await?;
                        log.push("cleanup awaited");
                        Ok(())
                    })
                    .await?;
                log.push("left shield");
                checkpoint().await?;
                log.push("never");
                Ok(())
            })
            .await?;
        assert_eq!(log.take(), ["cleanup awaited", "left shield"]);
        assert!(outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn toggling_the_shield_while_cancelled() {
    mock_run(async {
        let outer = CancelScope::new();
        let inner = CancelScope::shielded();
        outer
            .run(async {
                outer.cancel();
                inner
                    .run(async {
                        checkpoint().await?;
                        inner.set_shield(false);
                        assert!(matches!(checkpoint().await, Err(Error::Cancelled(_))));
                        inner.set_shield(true);
                        checkpoint().await?;
                        inner.set_shield(false);
                        checkpoint().await
                    })
                    .await?;
                Ok(())
            })
            .await?;
        assert!(!inner.cancelled_caught());
        assert!(outer.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn dropping_a_shield_wakes_a_sleeper_inside() {
    mock_run(async {
        let outer = CancelScope::new();
        let shield = CancelScope::shielded();
        open_nursery(async |n| {
            n.spawn(async {
                outer
                    .run(async {
                        shield.run(async { sleep_forever().await.map(|_| ()) }).await?;
                        Ok(())
                    })
                    .await?;
                Ok(())
            });
            sleep(secs(1)).await?;
            outer.cancel();
            sleep(secs(1)).await?;
            assert!(shield.is_entered(), "the shield kept the sleeper asleep");
            shield.set_shield(false);
            Ok(())
        })
        .await?;
        assert!(outer.cancelled_caught());
        assert_eq!(current_time()?, at(2));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_shielded_scope_can_still_cancel_itself() {
    mock_run(async {
        let s = CancelScope::shielded();
        let r = s.run(async { sleep(secs(1)).await.map(|()| 0) }).await?;
        assert_eq!(r, Some(0));
        let s = CancelScope::shielded();
        let r = s
            .run(async {
                s.cancel();
                checkpoint().await
            })
            .await?;
        assert!(r.is_none() && s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_scope_can_be_entered_only_once() {
    mock_run(async {
        let s = CancelScope::new();
        s.run(async { Ok(()) }).await?;
        let again = s.run(async { Ok(()) }).await;
        assert!(matches!(again, Err(Error::Runtime(m)) if m.contains("once")));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_cancel_reason_is_kept() {
    mock_run(async {
        let s = CancelScope::new();
        s.run(async {
            s.cancel_with_reason("shutting down");
            s.cancel_with_reason("second reason is ignored");
            checkpoint().await
        })
        .await?;
        let r = s.cancel_reason().expect("a cancelled scope has a reason");
        assert_eq!(r.source(), trio::CancelSource::Explicit);
        assert_eq!(r.reason(), Some("shutting down"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_deadline_in_the_past_cancels_at_once() {
    mock_run_with(async |clock| {
        clock.jump(secs(10));
        let s = CancelScope::with_deadline(at(5));
        let r = s.run(async { sleep(secs(1)).await }).await?;
        assert!(r.is_none());
        assert!(s.cancelled_caught());
        assert_eq!(current_time()?, at(10));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_deadline_moved_later_while_inside() {
    mock_run(async {
        let s = CancelScope::with_deadline(at(2));
        s.run(async {
            sleep(secs(1)).await?;
            s.set_deadline(at(5));
            sleep_forever().await?;
            Ok(())
        })
        .await?;
        assert_eq!(current_time()?, at(5));
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_deadline_moved_earlier_while_inside() {
    mock_run(async {
        let s = CancelScope::with_deadline(at(100));
        open_nursery(async |n| {
            n.spawn(async {
                s.run(async { sleep_forever().await.map(|_| ()) }).await?;
                Ok(())
            });
            sleep(secs(1)).await?;
            s.set_deadline(at(3));
            Ok(())
        })
        .await?;
        assert_eq!(current_time()?, at(3));
        // And moving it into the past cancels at once.
        let s2 = CancelScope::new();
        s2.run(async {
            s2.set_deadline(Instant::ZERO);
            checkpoint().await
        })
        .await?;
        assert!(s2.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn removing_a_deadline_while_inside() {
    manual_run_with(async |clock| {
        let s = CancelScope::with_deadline(at(1));
        s.run(async {
            s.set_deadline(Instant::MAX);
            clock.jump(secs(5));
            checkpoint().await?;
            checkpoint().await
        })
        .await?;
        assert!(!s.cancel_called());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_relative_deadline_starts_at_entry() {
    mock_run_with(async |clock| {
        let s = CancelScope::with_timeout(secs(3));
        assert_eq!(s.deadline(), Instant::MAX);
        assert_eq!(s.relative_deadline(), Some(secs(3)));
        clock.jump(secs(10));
        s.run(async {
            assert_eq!(s.deadline(), at(13));
            s.set_relative_deadline(secs(1));
            assert_eq!(s.deadline(), at(11));
            sleep_forever().await?;
            Ok(())
        })
        .await?;
        assert_eq!(current_time()?, at(11));
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_effective_deadline_is_the_earliest_up_to_a_shield() {
    mock_run(async {
        assert_eq!(current_effective_deadline()?, Instant::MAX);
        CancelScope::with_deadline(at(5))
            .run(async {
                assert_eq!(current_effective_deadline()?, at(5));
                CancelScope::with_deadline(at(9))
                    .run(async {
                        assert_eq!(current_effective_deadline()?, at(5));
                        let shield = CancelScope::shielded();
                        shield
                            .run(async {
                                assert_eq!(current_effective_deadline()?, Instant::MAX);
                                Ok(())
                            })
                            .await?;
                        Ok(())
                    })
                    .await?;
                let c = CancelScope::new();
                c.run(async {
                    c.cancel();
                    assert_eq!(current_effective_deadline()?, Instant::ZERO);
                    Ok(())
                })
                .await?;
                Ok(())
            })
            .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancel_from_another_task_wakes_the_sleeper() {
    mock_run(async {
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                s.run(async { sleep(secs(1000)).await }).await?;
                Ok(())
            });
            sleep(secs(1)).await?;
            s.cancel();
            Ok(())
        })
        .await?;
        assert_eq!(current_time()?, at(1));
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn checkpoint_if_cancelled_does_not_yield_when_not_cancelled() {
    let log = Log::default();
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                log.push("a1");
                checkpoint_if_cancelled().await?;
                log.push("a2");
                Ok(())
            });
            n.spawn(async {
                log.push("b");
                Ok(())
            });
            Ok(())
        })
        .await?;
        let s = CancelScope::new();
        let r = s
            .run(async {
                s.cancel();
                checkpoint_if_cancelled().await
            })
            .await?;
        assert!(r.is_none());
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["a1", "a2", "b"]);
}

#[test]
fn a_cancel_shielded_checkpoint_never_fails() {
    mock_run(async {
        let s = CancelScope::new();
        let r = s
            .run(async {
                s.cancel();
                cancel_shielded_checkpoint().await?;
                cancel_shielded_checkpoint().await?;
                Ok("done")
            })
            .await?;
        assert_eq!(r, Some("done"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn other_errors_pass_through_a_cancelled_scope() {
    mock_run(async {
        let s = CancelScope::new();
        let r = s
            .run(async {
                s.cancel();
                Err::<(), _>(boom(3))
            })
            .await;
        assert_eq!(booms(&r.unwrap_err()), vec![3]);
        assert!(!s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_group_loses_its_cancelled_member_when_caught() {
    mock_run(async {
        let s = CancelScope::new();
        let r = s
            .run(async {
                open_nursery(async |n| {
                    n.spawn(async {
                        // Fails during its cancellation's cleanup.
                        let _ = sleep_forever().await;
                        Err(boom(1))
                    });
                    n.spawn(async { sleep_forever().await.map(|_| ()) });
                    sleep(secs(1)).await?;
                    s.cancel();
                    Ok(())
                })
                .await
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(booms(&e), vec![1]);
        assert!(!e.contains_cancelled());
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancelled_children_of_a_cancelled_outer_scope_are_caught_there() {
    mock_run(async {
        let s = CancelScope::with_timeout(secs(1));
        let r = s
            .run(async {
                open_nursery(async |n| {
                    for _ in 0..10 {
                        n.spawn(async { sleep_forever().await.map(|_| ()) });
                    }
                    Ok(())
                })
                .await
            })
            .await?;
        assert!(r.is_none());
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn dropping_a_scoped_future_leaves_the_scope() {
    mock_run(async {
        let s = CancelScope::with_deadline(at(1));
        let entered = s.run(async { sleep_forever().await.map(|_| ()) });
        let quick = async {
            checkpoint().await?;
            Ok(None)
        };
        futures_lite::future::or(entered, quick).await?;
        assert!(!s.is_entered());
        // The deadline of the dropped scope does not fire into anything.
        sleep(secs(5)).await?;
        assert_eq!(current_time()?, at(5));
        Ok(())
    })
    .unwrap();
}

/// Trio's `cancel_called`: a passed deadline counts for a scope that is
/// active or not entered yet, even before the loop fired it; a scope that
/// was left keeps its answer.
#[test]
fn cancel_called_sees_a_passed_deadline_before_it_fires() {
    manual_run_with(|clock| async move {
        // Never entered, deadline moved into the past.
        let scope = CancelScope::new();
        assert!(!scope.cancel_called());
        scope.set_deadline(current_time()? - secs(1));
        assert!(scope.cancel_called());
        let out = scope.run(checkpoint()).await?;
        assert!(out.is_none() && scope.cancelled_caught());

        // Active: the clock passes the deadline; asked before any checkpoint.
        let scope = CancelScope::with_timeout(secs(5));
        let seen = scope
            .run(async {
                assert!(!scope.cancel_called());
                clock.jump(secs(6));
                Ok(scope.cancel_called())
            })
            .await?;
        assert_eq!(seen, Some(true));

        // Left before the deadline: stays false when the clock passes it.
        let scope = CancelScope::with_timeout(secs(5));
        scope.run(checkpoint()).await?;
        clock.jump(secs(10));
        assert!(!scope.cancel_called());
        Ok(())
    })
    .unwrap();
}

/// What a checkpoint in the current scope fails with.
async fn cancelled_here() -> Error {
    match checkpoint().await {
        Err(e) => e,
        Ok(()) => panic!("the checkpoint was not cancelled"),
    }
}

// trio: test_run.py::test_cancel_reason (Trio >= 0.27: Cancelled.source)
#[test]
fn cancelled_says_which_deadline_or_cancel_caused_it() {
    mock_run(async {
        // A deadline.
        let s = CancelScope::with_timeout(secs(1));
        s.run(async {
            sleep(secs(2)).await.expect_err("the deadline cancels the sleep");
            let e = cancelled_here().await;
            assert_eq!(e.cancel_reason().map(|r| r.source()), Some(CancelSource::Deadline), "{e}");
            assert_eq!(e.to_string(), "cancelled due to deadline");
            Err::<(), _>(e)
        })
        .await?;
        assert_eq!(s.cancel_reason().map(|r| r.source()), Some(CancelSource::Deadline));

        // An explicit cancel, with a reason and the cancelling task.
        let s = CancelScope::new();
        s.run(async {
            s.cancel_with_reason("enough");
            let e = cancelled_here().await;
            let r = e.cancel_reason().expect("a reason");
            assert_eq!((r.source(), r.reason()), (CancelSource::Explicit, Some("enough")));
            assert!(r.source_task().is_some(), "the cancelling task is named");
            assert!(e.to_string().starts_with("cancelled due to explicit with reason \"enough\" from task "), "{e}");
            Err::<(), _>(e)
        })
        .await?;

        // An inner scope cancelled through its parent takes the parent's
        // reason; its own later cancel does not replace it.
        let outer = CancelScope::new();
        let inner = CancelScope::new();
        outer
            .run(async {
                inner
                    .run(async {
                        outer.cancel_with_reason("outer");
                        inner.cancel_with_reason("inner");
                        let e = cancelled_here().await;
                        assert_eq!(e.cancel_reason().and_then(|r| r.reason()), Some("outer"));
                        Err::<(), _>(e)
                    })
                    .await
            })
            .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_failing_child_cancels_its_siblings_with_source_nursery() {
    let seen = std::cell::RefCell::new(None);
    let r = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                let e = sleep(secs(10)).await.expect_err("cancelled by the failing sibling");
                *seen.borrow_mut() = e.cancel_reason().cloned();
                Err(e)
            });
            n.spawn(async {
                sleep(secs(1)).await?;
                Err(Error::Busy)
            });
            Ok(())
        })
        .await
    });
    assert!(matches!(r, Err(Error::Busy)), "{r:?}");
    let reason = seen.borrow().clone().expect("the sibling saw a reason");
    assert_eq!(reason.source(), CancelSource::Nursery);
    assert!(reason.reason().is_some_and(|r| r.contains("another task is already waiting")), "{reason:?}");
}

#[test]
fn an_error_made_outside_a_checkpoint_has_an_unknown_reason() {
    let e = Error::cancelled();
    assert!(e.is_cancelled());
    assert_eq!(e.cancel_reason().map(|r| r.source()), Some(CancelSource::Unknown));
    assert_eq!(e.to_string(), "cancelled");
    assert!(Error::Busy.cancel_reason().is_none());
    // Found inside groups and source chains too.
    let g = Error::Group(vec![Error::Busy, Error::cancelled()]);
    assert!(g.cancel_reason().is_some());
    let io = std::io::Error::other(Error::cancelled());
    assert!(Error::Io(io).cancel_reason().is_some());
}
