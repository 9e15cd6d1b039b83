//! Parking lots and the synchronization primitives (Trio's
//! `test_parking_lot.py` and `test_sync.py`).

mod util;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use trio::lowlevel::current_task;
use trio::sync::{Borrower, CapacityLimiter, Condition, Event, Lock, ParkingLot, Semaphore, StrictFifoLock};
use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{CancelScope, Error, Result, checkpoint, current_time, open_nursery, sleep};
use util::*;

fn idle() -> impl std::future::Future<Output = Result<()>> {
    wait_all_tasks_blocked(Duration::ZERO)
}

// ---- ParkingLot ----

#[test]
fn lot_unparks_in_fifo_order() {
    let log = Log::default();
    mock_run(async {
        let lot = ParkingLot::new();
        open_nursery(async |n| {
            for i in 0..5 {
                let (lot, log) = (&lot, &log);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    lot.park().await?;
                    log.push(i.to_string());
                    Ok(())
                });
            }
            sleep(secs(1)).await?;
            assert_eq!(lot.statistics().tasks_waiting, 5);
            assert_eq!(lot.unpark(2), 2);
            idle().await?;
            assert_eq!(log.snapshot(), ["0", "1"]);
            assert_eq!(lot.unpark_all(), 3);
            Ok(())
        })
        .await?;
        assert!(lot.is_empty());
        assert_eq!(lot.unpark_all(), 0);
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["0", "1", "2", "3", "4"]);
}

#[test]
fn lot_unpark_one_reports_task_and_tag() {
    mock_run(async {
        let lot = ParkingLot::new();
        let child = Cell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                child.set(Some(current_task()?));
                lot.park_tagged(42).await
            });
            idle().await?;
            assert_eq!(lot.tasks(), vec![child.get().unwrap()]);
            let u = lot.unpark_one().unwrap();
            assert_eq!(u.tag, 42);
            assert_eq!(u.task, child.get());
            assert!(lot.unpark_one().is_none());
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancelling_a_parked_task_removes_it() {
    mock_run(async {
        let lot = ParkingLot::new();
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                s.run(lot.park()).await?;
                Ok(())
            });
            n.spawn(async { lot.park().await });
            idle().await?;
            assert_eq!(lot.len(), 2);
            s.cancel();
            idle().await?;
            assert_eq!(lot.len(), 1);
            assert_eq!(lot.unpark_all(), 1);
            Ok(())
        })
        .await?;
        assert!(s.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

#[test]
fn repark_moves_waiters_without_waking_them() {
    let log = Log::default();
    mock_run(async {
        let (a, b) = (ParkingLot::new(), ParkingLot::new());
        open_nursery(async |n| {
            for i in 0..4 {
                let (a, log) = (&a, &log);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    a.park().await?;
                    log.push(i.to_string());
                    Ok(())
                });
            }
            sleep(secs(1)).await?;
            assert_eq!(a.repark(&b, 1), 1);
            assert_eq!((a.len(), b.len()), (3, 1));
            idle().await?;
            assert!(log.snapshot().is_empty(), "repark wakes nobody");
            assert_eq!(a.repark(&a, 1), 0, "repark onto itself is a no-op");
            assert_eq!(a.repark_all(&b), 3);
            assert_eq!(b.len(), 4);
            // FIFO order is kept across the move.
            b.unpark_all();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["0", "1", "2", "3"]);
}

#[test]
fn a_reparked_waiter_can_still_be_cancelled() {
    mock_run(async {
        let (a, b) = (ParkingLot::new(), ParkingLot::new());
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                s.run(a.park()).await?;
                Ok(())
            });
            idle().await?;
            a.repark_all(&b);
            s.cancel();
            idle().await?;
            assert!(b.is_empty(), "the cancelled waiter left the lot it was moved to");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn unpark_where_picks_by_tag() {
    mock_run(async {
        let lot = ParkingLot::new();
        let woke = RefCell::new(Vec::new());
        open_nursery(async |n| {
            for tag in 0..6usize {
                let (lot, woke) = (&lot, &woke);
                n.spawn(async move {
                    lot.park_tagged(tag).await?;
                    woke.borrow_mut().push(tag);
                    Ok(())
                });
            }
            idle().await?;
            assert_eq!(lot.unpark_where(|u| u.tag % 2 == 0), 3);
            idle().await?;
            assert_eq!(lot.len(), 3);
            lot.unpark_all();
            Ok(())
        })
        .await?;
        assert_eq!(&woke.borrow()[..3], &[0, 2, 4]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn parking_is_a_checkpoint_and_fails_when_cancelled_on_entry() {
    mock_run(async {
        let lot = ParkingLot::new();
        let s = CancelScope::new();
        s.cancel();
        let r = s.run(assert_checkpoints(lot.park())).await?;
        assert!(r.is_none());
        assert!(lot.is_empty());
        Ok(())
    })
    .unwrap();
}

// ---- Event ----

#[test]
fn event_wakes_every_waiter_and_stays_set() {
    mock_run(async {
        let ev = Event::new();
        let woke = Cell::new(0);
        open_nursery(async |n| {
            for _ in 0..3 {
                n.spawn(async {
                    ev.wait().await?;
                    woke.set(woke.get() + 1);
                    Ok(())
                });
            }
            idle().await?;
            assert_eq!(ev.statistics().tasks_waiting, 3);
            assert!(!ev.is_set());
            ev.set();
            ev.set();
            Ok(())
        })
        .await?;
        assert_eq!(woke.get(), 3);
        assert!(ev.is_set());
        // Waiting on a set event still checkpoints.
        assert_checkpoints(ev.wait()).await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn event_wait_can_be_cancelled() {
    mock_run(async {
        let ev = Event::new();
        let r = trio::move_on_after(secs(1), ev.wait()).await?;
        assert!(r.is_none());
        assert_eq!(ev.statistics().tasks_waiting, 0);
        Ok(())
    })
    .unwrap();
}

// ---- The lock-like primitives share one set of checks ----

/// What the fairness and hand-off checks need of a lock-like primitive.
trait LockLike {
    fn name(&self) -> &'static str;
    async fn acquire(&self) -> Result<()>;
    fn try_acquire(&self) -> Result<()>;
    fn release(&self) -> Result<()>;
    fn waiting(&self) -> usize;
}

/// The four primitives whose API already has the lock shape.
macro_rules! lock_like {
    ($($t:ident => $name:literal),* $(,)?) => {$(
        impl LockLike for $t {
            fn name(&self) -> &'static str {
                $name
            }
            async fn acquire(&self) -> Result<()> {
                $t::acquire(self).await
            }
            fn try_acquire(&self) -> Result<()> {
                $t::try_acquire(self)
            }
            fn release(&self) -> Result<()> {
                $t::release(self)
            }
            fn waiting(&self) -> usize {
                self.statistics().tasks_waiting
            }
        }
    )*};
}

lock_like!(
    Lock => "Lock",
    StrictFifoLock => "StrictFifoLock",
    Semaphore => "Semaphore(1)",
    CapacityLimiter => "CapacityLimiter(1)",
);

impl LockLike for Condition {
    fn name(&self) -> &'static str {
        "Condition"
    }
    async fn acquire(&self) -> Result<()> {
        Condition::acquire(self).await
    }
    fn try_acquire(&self) -> Result<()> {
        self.lock().try_acquire()
    }
    fn release(&self) -> Result<()> {
        Condition::release(self)
    }
    fn waiting(&self) -> usize {
        self.statistics().lock_statistics.tasks_waiting
    }
}

/// Trio's `test_generic_lock_exclusion`, `_fifo_fairness` and
/// `_acquire_nowait_blocks_acquire`, over one primitive.
async fn generic_lock_checks(l: &impl LockLike) -> Result<()> {
    // Exclusion: never two holders.
    let holders = Cell::new(0);
    let max = Cell::new(0);
    open_nursery(async |n| {
        for _ in 0..5 {
            n.spawn(async {
                for _ in 0..3 {
                    l.acquire().await?;
                    holders.set(holders.get() + 1);
                    max.set(max.get().max(holders.get()));
                    checkpoint().await?;
                    holders.set(holders.get() - 1);
                    l.release()?;
                }
                Ok(())
            });
        }
        Ok(())
    })
    .await?;
    assert_eq!(max.get(), 1, "{}: exclusion", l.name());

    // FIFO fairness and direct hand-off: a release goes to the first waiter,
    // and a newcomer calling try_acquire cannot barge in.
    let order = RefCell::new(Vec::new());
    l.acquire().await?;
    open_nursery(async |n| {
        for i in 0..4 {
            let order = &order;
            n.spawn(async move {
                sleep(Duration::from_millis(i)).await?;
                l.acquire().await?;
                order.borrow_mut().push(i);
                l.release()
            });
        }
        sleep(secs(1)).await?;
        assert_eq!(l.waiting(), 4, "{}", l.name());
        l.release()?;
        assert!(matches!(l.try_acquire(), Err(Error::WouldBlock)), "{}: handed off, not free", l.name());
        Ok(())
    })
    .await?;
    assert_eq!(*order.borrow(), [0, 1, 2, 3], "{}: FIFO", l.name());

    // A pending try_acquire blocks acquire.
    l.try_acquire()?;
    let got = Cell::new(false);
    open_nursery(async |n| {
        n.spawn(async {
            l.acquire().await?;
            got.set(true);
            l.release()
        });
        idle().await?;
        assert!(!got.get(), "{}", l.name());
        l.release()
    })
    .await?;
    assert!(got.get(), "{}", l.name());

    // A waiter cancelled while blocked leaves the queue without the lock.
    l.acquire().await?;
    let s = CancelScope::new();
    open_nursery(async |n| {
        n.spawn(async {
            s.run(l.acquire()).await?;
            Ok(())
        });
        idle().await?;
        assert_eq!(l.waiting(), 1, "{}", l.name());
        s.cancel();
        idle().await?;
        assert_eq!(l.waiting(), 0, "{}", l.name());
        Ok(())
    })
    .await?;
    l.release()?;
    l.try_acquire()?;
    l.release()?;

    // Cancelled at the moment of the hand-off: no permit is lost, and a
    // cancelled waiter is out of the queue before cancel() returns.
    for cancel_first in [true, false] {
        l.acquire().await?;
        let s = CancelScope::new();
        let got = Cell::new(false);
        open_nursery(async |n| {
            n.spawn(async {
                let r = s
                    .run(async {
                        l.acquire().await?;
                        got.set(true);
                        Ok(())
                    })
                    .await?;
                if r.is_some() {
                    l.release()?;
                }
                Ok(())
            });
            idle().await?;
            if cancel_first {
                s.cancel();
                l.release()?;
            } else {
                l.release()?;
                s.cancel();
            }
            Ok(())
        })
        .await?;
        // As in Trio, cancel() takes the waiter out of the queue at once:
        // a release right after it finds nobody and leaves the lock free;
        // a release before it hands the lock over, and the waiter keeps it.
        assert_eq!(got.get(), !cancel_first, "{}: cancel_first={cancel_first}", l.name());
        l.try_acquire().map_err(|_| Error::Runtime("not free afterwards: lost"))?;
        l.release()?;
    }
    Ok(())
}

#[test]
fn generic_checks_lock() {
    mock_run(generic_lock_checks(&Lock::new())).unwrap();
}

#[test]
fn generic_checks_strict_fifo_lock() {
    mock_run(generic_lock_checks(&StrictFifoLock::new())).unwrap();
}

#[test]
fn generic_checks_semaphore() {
    mock_run(generic_lock_checks(&Semaphore::with_max(1, 1).unwrap())).unwrap();
}

#[test]
fn generic_checks_capacity_limiter() {
    mock_run(generic_lock_checks(&CapacityLimiter::new(1))).unwrap();
}

#[test]
fn generic_checks_condition_lock() {
    mock_run(generic_lock_checks(&Condition::new())).unwrap();
}

// ---- Lock ----

#[test]
fn lock_misuse_is_an_error() {
    mock_run(async {
        let l = Lock::new();
        assert!(matches!(l.release(), Err(Error::Runtime(_))), "release while unlocked");
        l.acquire().await?;
        assert!(matches!(l.try_acquire(), Err(Error::Runtime(_))), "re-acquire");
        assert!(matches!(l.acquire().await, Err(Error::Runtime(_))), "re-acquire");
        open_nursery(async |n| {
            n.spawn(async {
                assert!(matches!(l.release(), Err(Error::Runtime(_))), "release by another task");
                Ok(())
            });
            Ok(())
        })
        .await?;
        let st = l.statistics();
        assert!(st.locked);
        assert_eq!(st.owner, Some(current_task()?));
        l.release()?;
        assert!(!l.locked());
        Ok(())
    })
    .unwrap();
}

#[test]
fn lock_guard_releases_on_drop() {
    mock_run(async {
        let l = Lock::new();
        {
            let _g = l.lock().await?;
            assert!(l.locked());
        }
        assert!(!l.locked());
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_acquire_dropped_after_the_hand_off_passes_the_lock_on() {
    mock_run(async {
        let l = Lock::new();
        let third = Cell::new(false);
        l.acquire().await?;
        let released = Event::new();
        open_nursery(async |n| {
            n.spawn(async {
                // Parks for the lock, is handed it, and is dropped before it
                // ever runs again.
                let mut acquire = Box::pin(l.acquire());
                poll_once_pending(acquire.as_mut(), "pending after its first poll").await;
                released.wait().await?;
                assert_eq!(l.statistics().owner, Some(current_task()?), "handed over");
                drop(acquire);
                Ok(())
            });
            n.spawn(async {
                sleep(Duration::from_millis(1)).await?;
                l.acquire().await?;
                third.set(true);
                l.release()
            });
            sleep(secs(1)).await?;
            l.release()?;
            released.set();
            Ok(())
        })
        .await?;
        assert!(third.get(), "the lock was not lost with the dropped waiter");
        assert!(!l.locked());
        Ok(())
    })
    .unwrap();
}

#[test]
fn an_acquire_dropped_after_it_took_a_free_lock_gives_it_back() {
    mock_run(async {
        let l = Lock::new();
        // Took the free lock on its first poll (and yielded, as every
        // acquire does), then dropped before it returned.
        let mut acquire = Box::pin(l.acquire());
        poll_once_pending(acquire.as_mut(), "pending after its first poll").await;
        assert!(l.locked(), "taken on the first poll");
        drop(acquire);
        assert!(!l.locked(), "given back by the dropped future");
        l.acquire().await?;
        l.release()
    })
    .unwrap();
}

#[test]
fn an_acquire_cancelled_on_entry_yields_and_leaves_the_lock_free() {
    mock_run(async {
        let l = Lock::new();
        let scope = CancelScope::new();
        scope.cancel();
        let r = assert_checkpoints(scope.run(async { l.acquire().await })).await?;
        assert_eq!(r, None, "the scope caught its own cancellation");
        assert!(!l.locked());
        Ok(())
    })
    .unwrap();
}

// ---- Semaphore ----

#[test]
fn semaphore_counts_and_limits() {
    mock_run(async {
        let s = Semaphore::new(2);
        s.acquire().await?;
        s.try_acquire()?;
        assert_eq!(s.value(), 0);
        assert!(matches!(s.try_acquire(), Err(Error::WouldBlock)));
        s.release()?;
        s.release()?;
        s.release()?; // no maximum: may grow
        assert_eq!(s.value(), 3);
        let m = Semaphore::with_max(1, 1)?;
        assert!(matches!(m.release(), Err(Error::Runtime(_))));
        assert!(Semaphore::with_max(2, 1).is_err());
        assert_eq!(m.statistics().max_value, Some(1));
        Ok(())
    })
    .unwrap();
}

#[test]
fn semaphore_with_many_permits_admits_that_many() {
    mock_run(async {
        let s = Semaphore::new(3);
        let inside = Cell::new(0);
        let max = Cell::new(0);
        open_nursery(async |n| {
            for _ in 0..10 {
                n.spawn(async {
                    s.acquire().await?;
                    inside.set(inside.get() + 1);
                    max.set(max.get().max(inside.get()));
                    sleep(secs(1)).await?;
                    inside.set(inside.get() - 1);
                    s.release()
                });
            }
            Ok(())
        })
        .await?;
        assert_eq!(max.get(), 3);
        assert_eq!(current_time()?, at(4));
        Ok(())
    })
    .unwrap();
}

// ---- Condition ----

#[test]
fn condition_wait_requires_the_lock() {
    mock_run(async {
        let c = Condition::new();
        assert!(matches!(c.wait().await, Err(Error::Runtime(_))));
        assert!(matches!(c.notify(1), Err(Error::Runtime(_))));
        c.acquire().await?;
        assert_eq!(c.notify_all()?, 0);
        c.release()?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn condition_notify_wakes_in_order_each_holding_the_lock() {
    let log = Log::default();
    mock_run(async {
        let c = Condition::new();
        open_nursery(async |n| {
            for i in 0..3 {
                let (c, log) = (&c, &log);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    c.acquire().await?;
                    c.wait().await?;
                    assert_eq!(c.lock().statistics().owner, Some(current_task()?));
                    log.push(format!("woke {i}"));
                    c.release()
                });
            }
            sleep(secs(1)).await?;
            assert_eq!(c.statistics().tasks_waiting, 3);
            c.acquire().await?;
            assert_eq!(c.notify(1)?, 1);
            c.release()?;
            idle().await?;
            assert_eq!(log.snapshot(), ["woke 0"]);
            c.acquire().await?;
            assert_eq!(c.notify_all()?, 2);
            log.push("notifier still holds the lock");
            c.release()
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["woke 0", "notifier still holds the lock", "woke 1", "woke 2"]);
}

#[test]
fn condition_wait_reacquires_the_lock_when_cancelled() {
    mock_run(async {
        let c = Condition::new();
        let s = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                let r = s
                    .run(async {
                        c.acquire().await?;
                        let r = c.wait().await;
                        assert!(matches!(r, Err(Error::Cancelled(_))));
                        assert_eq!(c.lock().statistics().owner, Some(current_task()?), "holds the lock again");
                        c.release()?;
                        r
                    })
                    .await?;
                assert!(r.is_none());
                Ok(())
            });
            idle().await?;
            // Hold the lock while cancelling, so the re-acquire has to wait.
            c.acquire().await?;
            s.cancel();
            sleep(secs(1)).await?;
            c.release()
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// ---- CapacityLimiter ----

#[test]
fn limiter_tracks_borrowers() {
    mock_run(async {
        let l = CapacityLimiter::new(2);
        l.acquire().await?;
        assert!(matches!(l.acquire().await, Err(Error::Runtime(_))), "one token per borrower");
        l.acquire_on_behalf_of(Borrower::id(7)).await?;
        assert_eq!(l.available_tokens(), 0);
        assert!(matches!(l.try_acquire_on_behalf_of(Borrower::id(8)), Err(Error::WouldBlock)));
        let st = l.statistics();
        assert_eq!(st.borrowed_tokens, 2);
        assert!(st.borrowers.contains(&Borrower::id(7)));
        assert!(st.borrowers.contains(&current_task()?.into()));
        assert!(matches!(l.release_on_behalf_of(Borrower::id(9)), Err(Error::Runtime(_))));
        l.release_on_behalf_of(Borrower::id(7))?;
        l.release()?;
        assert!(matches!(l.release(), Err(Error::Runtime(_))));
        Ok(())
    })
    .unwrap();
}

#[test]
fn limiter_total_tokens_can_change_while_in_use() {
    mock_run(async {
        let l = CapacityLimiter::new(1);
        let inside = Cell::new(0);
        open_nursery(async |n| {
            for i in 0..4u64 {
                let (l, inside) = (&l, &inside);
                n.spawn(async move {
                    l.acquire_on_behalf_of(Borrower::id(i)).await?;
                    inside.set(inside.get() + 1);
                    trio::sleep_forever().await.map(|_| ())
                });
            }
            idle().await?;
            assert_eq!(inside.get(), 1);
            l.set_total_tokens(3);
            idle().await?;
            assert_eq!(inside.get(), 3, "raising the limit wakes waiters at once");
            l.set_total_tokens(0);
            assert_eq!(l.available_tokens(), 0);
            l.release_on_behalf_of(Borrower::id(0))?;
            idle().await?;
            assert_eq!(inside.get(), 3, "with 0 tokens nobody new gets in");
            assert_eq!(l.statistics().tasks_waiting, 1);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}
