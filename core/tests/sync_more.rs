//! More primitive semantics, and shuffled-schedule stress of the channels and
//! locks (every value exactly once, exclusion kept, under many orders).

mod util;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use trio::sync::{Borrower, CapacityLimiter, Condition, Event, Lock, ParkingLot, Semaphore, StrictFifoLock};
use trio::testing::{MockClock, wait_all_tasks_blocked};
use trio::{CancelScope, Error, RunOptions, checkpoint, open_memory_channel, open_nursery, sleep};
use util::*;

fn seeded<T>(seed: u64, f: impl Future<Output = trio::Result<T>>) -> T {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::ZERO));
    RunOptions::new().clock(clock).shuffle_seed(seed).run(f).unwrap()
}

#[test]
fn parking_outside_a_run_is_an_error_and_unpark_finds_nobody() {
    let lot = ParkingLot::new();
    assert!(matches!(futures_lite::future::block_on(lot.park()), Err(Error::Runtime(_))));
    assert!(lot.is_empty());
    assert_eq!(lot.unpark_all(), 0);
    assert!(lot.unpark_one().is_none());
    let ev = Event::new();
    ev.set(); // setting needs no run
    assert!(ev.is_set());
    assert!(matches!(Lock::new().try_acquire(), Err(Error::Runtime(_))));
}

#[test]
fn many_producers_and_consumers_deliver_every_value_once() {
    for seed in 1..25u64 {
        let received = seeded(seed, async {
            let (tx, rx) = open_memory_channel::<u32>((seed % 3) as usize);
            let received = RefCell::new(Vec::new());
            open_nursery(async |n| {
                for p in 0..4u32 {
                    let tx = tx.clone();
                    n.spawn(async move {
                        for i in 0..25 {
                            tx.send(p * 100 + i).await?;
                            if i % 7 == 0 {
                                checkpoint().await?;
                            }
                        }
                        Ok(())
                    });
                }
                for _ in 0..3 {
                    let (rx, received) = (rx.clone(), &received);
                    n.spawn(async move {
                        while let Some(v) = rx.recv().await? {
                            received.borrow_mut().push(v);
                        }
                        Ok(())
                    });
                }
                drop(tx);
                drop(rx);
                Ok(())
            })
            .await?;
            Ok(received.into_inner())
        });
        let mut sorted = received.clone();
        sorted.sort();
        let want: Vec<u32> = (0..4).flat_map(|p| (0..25).map(move |i| p * 100 + i)).collect();
        assert_eq!(sorted, want, "seed {seed}");
    }
}

#[test]
fn one_consumer_sees_each_producers_values_in_order() {
    for seed in 1..25u64 {
        let received = seeded(seed, async {
            let (tx, rx) = open_memory_channel::<u32>((seed % 3) as usize);
            let received = RefCell::new(Vec::new());
            open_nursery(async |n| {
                for p in 0..4u32 {
                    let tx = tx.clone();
                    n.spawn(async move {
                        for i in 0..25 {
                            tx.send(p * 100 + i).await?;
                        }
                        Ok(())
                    });
                }
                drop(tx);
                while let Some(v) = rx.recv().await? {
                    received.borrow_mut().push(v);
                }
                Ok(())
            })
            .await?;
            Ok(received.into_inner())
        });
        assert_eq!(received.len(), 100, "seed {seed}");
        for p in 0..4 {
            let mine: Vec<u32> = received.iter().copied().filter(|v| v / 100 == p).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "seed {seed}: producer {p} reordered");
        }
    }
}

#[test]
fn locks_keep_exclusion_under_shuffled_schedules_with_cancellation() {
    for seed in 1..20u64 {
        seeded(seed, async {
            let lock = StrictFifoLock::new();
            let inside = Cell::new(0);
            let entered = Cell::new(0);
            open_nursery(async |n| {
                for t in 0..8u64 {
                    let (lock, inside, entered) = (&lock, &inside, &entered);
                    n.spawn(async move {
                        for round in 0..5u64 {
                            let r = trio::move_on_after(Duration::from_millis((t * 3 + round) % 5), async {
                                lock.acquire().await?;
                                inside.set(inside.get() + 1);
                                assert_eq!(inside.get(), 1, "exclusion");
                                entered.set(entered.get() + 1);
                                let r = sleep(Duration::from_millis(1)).await;
                                inside.set(inside.get() - 1);
                                lock.release()?;
                                r
                            })
                            .await?;
                            let _ = r;
                        }
                        Ok(())
                    });
                }
                Ok(())
            })
            .await?;
            assert!(!lock.locked(), "seed {seed}: nobody holds it at the end");
            assert!(entered.get() > 0);
            Ok(())
        });
    }
}

#[test]
fn semaphore_statistics_and_fifo_hand_off() {
    mock_run(async {
        let s = Semaphore::new(0);
        let order = RefCell::new(Vec::new());
        open_nursery(async |n| {
            for i in 0..3 {
                let (s, order) = (&s, &order);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    s.acquire().await?;
                    order.borrow_mut().push(i);
                    Ok(())
                });
            }
            sleep(secs(1)).await?;
            assert_eq!(s.statistics().tasks_waiting, 3);
            for _ in 0..3 {
                s.release()?;
                assert_eq!(s.value(), 0, "handed straight to a waiter");
            }
            Ok(())
        })
        .await?;
        assert_eq!(*order.borrow(), [0, 1, 2]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn semaphore_release_at_usize_max_is_an_error_not_a_wrap() {
    // Without a maximum: the value stops at usize::MAX instead of wrapping
    // to 0 (which would lose every permit).
    let s = Semaphore::new(usize::MAX);
    assert!(matches!(s.release(), Err(Error::Runtime(m)) if m.contains("usize::MAX")));
    assert_eq!(s.value(), usize::MAX, "a refused release changes nothing");
    s.try_acquire().unwrap();
    s.release().unwrap();
    assert_eq!(s.value(), usize::MAX);
    assert!(s.release().is_err());
    // With the largest maximum: the maximum's own error.
    let m = Semaphore::with_max(usize::MAX, usize::MAX).unwrap();
    assert!(matches!(m.release(), Err(Error::Runtime(_))));
    assert_eq!(m.value(), usize::MAX);
    // Inside a run too, and the semaphore still works afterwards.
    mock_run(async {
        let s = Semaphore::new(usize::MAX - 1);
        s.release()?;
        assert!(s.release().is_err());
        s.acquire().await?;
        assert_eq!(s.value(), usize::MAX - 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn limiter_waiters_on_behalf_of_borrowers_are_fifo_and_cancellable() {
    mock_run(async {
        let l = CapacityLimiter::new(1);
        l.acquire_on_behalf_of(Borrower::id(0)).await?;
        let order = RefCell::new(Vec::new());
        let s = CancelScope::new();
        open_nursery(async |n| {
            for i in 1..=3u64 {
                let (l, order, s) = (&l, &order, &s);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    let body = async {
                        l.acquire_on_behalf_of(Borrower::id(i)).await?;
                        order.borrow_mut().push(i);
                        sleep(secs(1)).await?;
                        l.release_on_behalf_of(Borrower::id(i))
                    };
                    if i == 2 { s.run(body).await.map(|_| ()) } else { body.await }
                });
            }
            sleep(secs(1)).await?;
            s.cancel(); // borrower 2 gives up while waiting
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert_eq!(l.statistics().tasks_waiting, 2);
            l.release_on_behalf_of(Borrower::id(0))?;
            Ok(())
        })
        .await?;
        assert_eq!(*order.borrow(), [1, 3]);
        assert_eq!(l.borrowed_tokens(), 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn condition_notify_more_than_waiting_and_a_guarded_lock() {
    mock_run(async {
        let c = Condition::new();
        let woke = Cell::new(0);
        open_nursery(async |n| {
            n.spawn(async {
                c.acquire().await?;
                c.wait().await?;
                woke.set(woke.get() + 1);
                c.release()
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            let g = c.lock().lock().await?;
            assert_eq!(c.notify(10)?, 1);
            drop(g);
            Ok(())
        })
        .await?;
        assert_eq!(woke.get(), 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_lock_guard_held_across_checkpoints_excludes_others() {
    mock_run(async {
        let l = Lock::new();
        let log = Log::default();
        open_nursery(async |n| {
            for name in ["a", "b"] {
                let (l, log) = (&l, &log);
                n.spawn(async move {
                    let _g = l.lock().await?;
                    log.push(format!("{name} in"));
                    sleep(secs(1)).await?;
                    checkpoint().await?;
                    log.push(format!("{name} out"));
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        assert_eq!(log.take(), ["a in", "a out", "b in", "b out"]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn event_set_from_a_cancelled_task_still_wakes_waiters() {
    mock_run(async {
        let ev = Event::new();
        open_nursery(async |n| {
            n.spawn(async {
                ev.wait().await?;
                Ok(())
            });
            let s = CancelScope::new();
            s.cancel();
            s.run(async {
                ev.set(); // sync, not a checkpoint: works while cancelled
                checkpoint().await
            })
            .await?;
            Ok(())
        })
        .await?;
        assert_eq!(ev.statistics().tasks_waiting, 0);
        Ok(())
    })
    .unwrap();
}

#[test]
fn try_lock_gives_a_guard_or_would_block() {
    util::mock_run(async {
        let lock = trio::sync::Lock::new();
        let g = lock.try_lock()?;
        assert!(lock.locked());
        trio::open_nursery(async |n| {
            n.spawn(async {
                assert!(matches!(lock.try_lock(), Err(trio::Error::WouldBlock)));
                Ok(())
            });
            Ok(())
        })
        .await?;
        drop(g);
        assert!(!lock.locked());
        trio::testing::assert_no_checkpoints(async { lock.try_lock().map(drop) }).await?;
        Ok(())
    })
    .unwrap();
}
