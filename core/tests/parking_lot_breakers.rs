//! Lot breakers (Trio's `add_parking_lot_breaker`, `remove_parking_lot_breaker`
//! and `ParkingLot.break_lot`), and the `Lock` that uses them so that a task
//! exiting while it holds the lock breaks it for its waiters. Ported from
//! `_core/_tests/test_parking_lot.py` and `_tests/test_sync.py`.

mod util;

use std::cell::Cell;
use std::time::Duration;

use trio::lowlevel::{ParkingLot, Task, add_parking_lot_breaker, current_task, remove_parking_lot_breaker};
use trio::sync::Lock;
use trio::testing::wait_all_tasks_blocked;
use trio::{CancelScope, Error, TaskStatus, open_nursery, sleep_forever};
use util::*;

fn idle() -> impl std::future::Future<Output = trio::Result<()>> {
    wait_all_tasks_blocked(Duration::ZERO)
}

/// A child that reports its task and sleeps until cancelled.
async fn dummy_task(status: TaskStatus<Task>) -> trio::Result<()> {
    status.started(current_task()?);
    sleep_forever().await?;
    Ok(())
}

// trio: test_parking_lot.py::test_parking_lot_breaker_basic
#[test]
fn breaking_records_the_breaker_and_parking_fails() {
    mock_run(async {
        let lot = ParkingLot::new();
        let me = current_task()?;
        lot.break_lot(None)?;
        assert_eq!(lot.broken_by(), vec![me]);
        lot.break_lot(None)?;
        assert_eq!(lot.broken_by(), vec![me, me]);
        assert!(matches!(lot.park().await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

// trio: test_parking_lot.py::test_parking_lot_break_parking_tasks
#[test]
fn a_breaker_that_exits_wakes_the_parked_tasks_with_broken() {
    let lot = ParkingLot::new();
    let cs = CancelScope::new();
    let r = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                add_parking_lot_breaker(current_task()?, &lot)?;
                cs.run(sleep_forever()).await?;
                Ok(())
            });
            idle().await?;
            n.spawn(async { lot.park().await });
            idle().await?;
            assert_eq!(lot.statistics().tasks_waiting, 1);
            cs.cancel();
            Ok(())
        })
        .await
    });
    assert!(matches!(r, Err(Error::Broken)), "{r:?}");
    assert_eq!(lot.broken_by().len(), 1);
    assert!(lot.is_empty());
}

// trio: test_parking_lot.py::test_parking_lot_breaker_registration
#[test]
fn registration_is_counted_and_checked() {
    mock_run(async {
        let lot = ParkingLot::new();
        let me = current_task()?;
        assert!(matches!(remove_parking_lot_breaker(me, &lot), Err(Error::Runtime(_))));
        add_parking_lot_breaker(me, &lot)?;
        add_parking_lot_breaker(me, &lot)?;
        remove_parking_lot_breaker(me, &lot)?;
        remove_parking_lot_breaker(me, &lot)?;
        assert!(matches!(remove_parking_lot_breaker(me, &lot), Err(Error::Runtime(_))));

        // Registering a breaker of an already broken lot is fine.
        lot.break_lot(None)?;
        let child = Cell::new(None);
        open_nursery(async |n| {
            let t = n.start(dummy_task).await?;
            child.set(Some(t));
            add_parking_lot_breaker(t, &lot)?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        let child = child.get().unwrap();
        assert_eq!(lot.broken_by(), vec![me, child]);

        // Breaking a lot in the name of a task that exited is fine.
        let lot = ParkingLot::new();
        lot.break_lot(Some(child))?;
        assert_eq!(lot.broken_by(), vec![child]);
        Ok(())
    })
    .unwrap();
}

// trio: test_parking_lot.py::test_parking_lot_breaker_rebreak
#[test]
fn a_broken_lot_can_be_broken_again_by_another_task() {
    mock_run(async {
        let lot = ParkingLot::new();
        let me = current_task()?;
        lot.break_lot(None)?;
        let child = Cell::new(None);
        open_nursery(async |n| {
            let t = n.start(dummy_task).await?;
            child.set(Some(t));
            lot.break_lot(Some(t))?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert_eq!(lot.broken_by(), vec![me, child.get().unwrap()]);
        Ok(())
    })
    .unwrap();
}

// trio: test_parking_lot.py::test_parking_lot_multiple_breakers_exit
#[test]
fn every_breaker_that_exits_is_recorded() {
    mock_run(async {
        let lot = ParkingLot::new();
        let tasks = std::cell::RefCell::new(Vec::new());
        open_nursery(async |n| {
            for _ in 0..3 {
                let t = n.start(dummy_task).await?;
                add_parking_lot_breaker(t, &lot)?;
                tasks.borrow_mut().push(t);
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        let mut by = lot.broken_by();
        let mut want = tasks.into_inner();
        by.sort_by_key(|t| format!("{t:?}"));
        want.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(by, want);
        Ok(())
    })
    .unwrap();
}

// trio: test_parking_lot.py::test_parking_lot_breaker_register_exited_task
#[test]
fn an_exited_task_cannot_become_a_breaker() {
    mock_run(async {
        let lot = ParkingLot::new();
        let child = Cell::new(None);
        open_nursery(async |n| {
            child.set(Some(n.start(dummy_task).await?));
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert!(matches!(add_parking_lot_breaker(child.get().unwrap(), &lot), Err(Error::Broken)));
        assert!(lot.broken_by().is_empty());
        Ok(())
    })
    .unwrap();
}

// trio: test_parking_lot.py::test_parking_lot_break_itself
#[test]
fn breaking_a_lot_in_the_name_of_a_task_parked_in_it() {
    let lot = ParkingLot::new();
    let r = mock_run(async {
        open_nursery(async |n| {
            let t = n
                .start(async |status: TaskStatus<Task>| {
                    status.started(current_task()?);
                    lot.park().await
                })
                .await?;
            idle().await?;
            lot.break_lot(Some(t))?;
            Ok(())
        })
        .await
    });
    assert!(matches!(r, Err(Error::Broken)), "{r:?}");
}

// trio: test_sync.py::test_lock_acquire_unowned_lock / the lock's breaker
// (a task that exits holding a Lock breaks it for its waiters)
#[test]
fn a_task_that_exits_holding_a_lock_breaks_it_for_its_waiters() {
    let lock = Lock::new();
    let waiter_saw = Cell::new(None);
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                lock.acquire().await?;
                // Ends without releasing.
                Ok(())
            });
            idle().await?;
            assert!(lock.locked());
            n.spawn(async {
                waiter_saw.set(Some(matches!(lock.acquire().await, Err(Error::Broken))));
                Ok(())
            });
            Ok(())
        })
        .await?;
        assert_eq!(waiter_saw.get(), Some(true), "the waiter got Broken");
        // Later acquirers too, and nothing hangs.
        assert!(matches!(lock.acquire().await, Err(Error::Broken)));
        assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_lock_released_normally_is_not_broken_and_hand_offs_move_the_breaker() {
    let lock = Lock::new();
    mock_run(async {
        open_nursery(async |n| {
            for _ in 0..3 {
                n.spawn(async {
                    lock.acquire().await?;
                    trio::checkpoint().await?;
                    lock.release()
                });
            }
            Ok(())
        })
        .await?;
        // Each owner released (the lock passed through hand-offs): the
        // exits broke nothing.
        assert!(!lock.locked());
        lock.acquire().await?;
        lock.release()?;
        Ok(())
    })
    .unwrap();
}

// trio: test_sync.py::test_lock_multiple_acquire
#[test]
fn a_second_acquirer_fails_when_the_first_exits_holding_the_lock() {
    let lock = Lock::new();
    let r = mock_run(async {
        open_nursery(async |n| {
            n.spawn(lock.acquire());
            n.spawn(lock.acquire());
            Ok(())
        })
        .await
    });
    assert!(matches!(r, Err(Error::Broken)), "{r:?}");
}

// trio: test_sync.py::test_lock_handover
#[test]
fn the_breaker_moves_with_a_handed_over_lock() {
    let lock = Lock::new();
    mock_run(async {
        let me = current_task()?;
        lock.try_acquire()?;
        let child = Cell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                child.set(Some(current_task()?));
                lock.acquire().await
            });
            idle().await?;
            // Hand it to the child, which then exits holding it.
            lock.release()?;
            Ok(())
        })
        .await?;
        // The lock went to the child, whose exit broke it; our release
        // deregistered us, so nothing broke it while we held it.
        assert_eq!(lock.statistics().owner, child.get());
        assert_ne!(child.get(), Some(me));
        assert!(matches!(lock.acquire().await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn condition_waiters_moved_onto_the_lock_see_its_owner_exit() {
    let cond = trio::sync::Condition::new();
    let r = mock_run(async {
        open_nursery(async |n| {
            n.spawn(async {
                cond.acquire().await?;
                cond.wait().await
            });
            idle().await?;
            n.spawn(async {
                cond.acquire().await?;
                cond.notify(1)?;
                // Ends holding the lock: the notified waiter now waits for
                // the lock, and must not wait forever.
                Ok(())
            });
            Ok(())
        })
        .await
    });
    assert!(matches!(r, Err(Error::Broken)), "{r:?}");
}

#[test]
fn an_owner_that_exited_with_nobody_waiting_is_found_out_by_the_next_acquire() {
    let lock = Lock::new();
    mock_run(async {
        open_nursery(async |n| {
            n.spawn(async { lock.acquire().await });
            Ok(())
        })
        .await?;
        // Nobody waited while the owner lived; the next acquire that would
        // wait finds it gone and fails instead of blocking forever.
        assert!(matches!(lock.acquire().await, Err(Error::Broken)));
        assert!(matches!(lock.acquire().await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}
