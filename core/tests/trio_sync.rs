//! Ports of Python Trio's `src/trio/_tests/test_sync.py` that
//! `core/tests/sync.rs` and `core/tests/sync_more.rs` do not cover already,
//! see `docs/TRIO_CONFORMANCE.md` (section test_sync.py).

mod util;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use trio::channel::{Receiver, Sender};
use trio::lowlevel::current_task;
use trio::sync::{Borrower, CapacityLimiter, Condition, Lock, Semaphore, StrictFifoLock};
use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{CancelScope, Error, Result, checkpoint, open_memory_channel, open_nursery, sleep_forever};
use util::*;

async fn idle() -> Result<()> {
    wait_all_tasks_blocked(Duration::ZERO).await
}

/// The ids among a limiter's borrowers (tasks left out).
fn ids(l: &CapacityLimiter) -> BTreeSet<u64> {
    (0..10).filter(|i| l.statistics().borrowers.contains(&Borrower::id(*i))).collect()
}

fn set(v: &[u64]) -> BTreeSet<u64> {
    v.iter().copied().collect()
}

// trio: test_sync.py::test_CapacityLimiter
#[test]
fn capacity_limiter_tokens_borrowers_and_fair_hand_off() {
    mock_run(async {
        assert_eq!(CapacityLimiter::new(0).total_tokens(), 0);
        let c = CapacityLimiter::new(2);
        assert_eq!((c.total_tokens(), c.borrowed_tokens(), c.available_tokens()), (2, 0, 2));
        assert!(matches!(c.release(), Err(Error::Runtime(_))), "release without a token");
        assert_eq!(c.borrowed_tokens(), 0);
        c.try_acquire()?;
        assert_eq!((c.borrowed_tokens(), c.available_tokens()), (1, 1));
        let st = c.statistics();
        assert_eq!((st.borrowed_tokens, st.total_tokens, st.tasks_waiting), (1, 2, 0));
        assert_eq!(st.borrowers, [Borrower::from(current_task()?)]);
        // No second token for the same borrower.
        assert!(matches!(c.try_acquire(), Err(Error::Runtime(_))));
        assert!(matches!(c.acquire().await, Err(Error::Runtime(_))));
        assert_eq!(c.borrowed_tokens(), 1);
        // On behalf of someone else is fine, and a checkpoint.
        assert_checkpoints(c.acquire_on_behalf_of(Borrower::id(1))).await?;
        assert_eq!(c.borrowed_tokens(), 2);
        assert!(matches!(c.try_acquire_on_behalf_of(Borrower::id(2)), Err(Error::WouldBlock)));
        c.release_on_behalf_of(current_task()?.into())?;
        assert_eq!(c.statistics().borrowers, [Borrower::id(1)]);
        c.release_on_behalf_of(Borrower::id(1))?;
        assert_eq!(c.borrowed_tokens(), 0);

        open_nursery(async |n| {
            c.acquire_on_behalf_of(Borrower::id(1)).await?;
            c.acquire_on_behalf_of(Borrower::id(2)).await?;
            n.spawn(c.acquire_on_behalf_of(Borrower::id(3)));
            idle().await?;
            assert_eq!(c.borrowed_tokens(), 2);
            assert_eq!(c.statistics().tasks_waiting, 1);
            c.release_on_behalf_of(Borrower::id(2))?;
            // Fairness: the token went straight to the waiter.
            assert_eq!(c.borrowed_tokens(), 2);
            assert!(matches!(c.try_acquire(), Err(Error::WouldBlock)));
            Ok(())
        })
        .await?;
        assert_eq!(ids(&c), set(&[1, 3]));
        c.release_on_behalf_of(Borrower::id(3))?;
        c.release_on_behalf_of(Borrower::id(1))?;
        assert_eq!(c.borrowed_tokens(), 0);
        Ok(())
    })
    .unwrap();
}

// trio: test_sync.py::test_CapacityLimiter_inf (no infinity: usize::MAX
// stands in for it)
#[test]
fn capacity_limiter_with_usize_max_tokens() {
    mock_run(async {
        let c = CapacityLimiter::new(usize::MAX);
        assert_eq!(c.available_tokens(), usize::MAX);
        assert!(matches!(c.release(), Err(Error::Runtime(_))));
        c.try_acquire()?;
        assert_eq!(c.borrowed_tokens(), 1);
        assert_eq!(c.available_tokens(), usize::MAX - 1);
        c.release()
    })
    .unwrap();
}

// trio: test_sync.py::test_CapacityLimiter_change_total_tokens
#[test]
fn capacity_limiter_total_tokens_raised_and_lowered_with_waiters() {
    mock_run(async {
        let c = CapacityLimiter::new(2);
        open_nursery(async |n| {
            for i in 0..5 {
                n.spawn(c.acquire_on_behalf_of(Borrower::id(i)));
                idle().await?;
            }
            assert_eq!(ids(&c), set(&[0, 1]));
            assert_eq!(c.statistics().tasks_waiting, 3);
            c.set_total_tokens(c.total_tokens() + 2);
            // Handed over at once, not at the waiters' next turn.
            assert_eq!(ids(&c), set(&[0, 1, 2, 3]));
            assert_eq!(c.statistics().tasks_waiting, 1);
            c.set_total_tokens(c.total_tokens() - 3);
            assert_eq!(c.borrowed_tokens(), 4);
            assert_eq!(c.total_tokens(), 1);
            for i in 0..3 {
                c.release_on_behalf_of(Borrower::id(i))?;
            }
            assert_eq!(ids(&c), set(&[3]));
            assert_eq!(c.statistics().tasks_waiting, 1);
            c.release_on_behalf_of(Borrower::id(3))?;
            assert_eq!(ids(&c), set(&[4]));
            assert_eq!(c.statistics().tasks_waiting, 0);
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// trio: test_sync.py::test_CapacityLimiter_memleak_548
#[test]
fn a_cancelled_limiter_acquire_leaves_no_pending_borrower() {
    mock_run(async {
        let limiter = CapacityLimiter::new(1);
        limiter.acquire().await?;
        open_nursery(async |n| {
            n.spawn(limiter.acquire_on_behalf_of(Borrower::id(1)));
            idle().await?;
            assert_eq!(limiter.statistics().tasks_waiting, 1);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert_eq!(limiter.statistics().tasks_waiting, 0);
        assert_eq!(limiter.statistics().borrowers, [Borrower::from(current_task()?)]);
        limiter.release()
    })
    .unwrap();
}

// trio: test_sync.py::test_CapacityLimiter_zero_limit_tokens
#[test]
fn a_zero_token_limiter_lets_nobody_through() {
    mock_run(async {
        let c = CapacityLimiter::new(5);
        open_nursery(async |n| {
            c.set_total_tokens(0);
            for i in 0..5 {
                n.spawn(c.acquire_on_behalf_of(Borrower::id(i)));
                idle().await?;
            }
            assert!(ids(&c).is_empty());
            assert_eq!(c.statistics().tasks_waiting, 5);
            c.set_total_tokens(5);
            assert_eq!(ids(&c), set(&[0, 1, 2, 3, 4]));
            n.spawn(c.acquire_on_behalf_of(Borrower::id(5)));
            idle().await?;
            assert_eq!(c.statistics().tasks_waiting, 1);
            for i in 0..5 {
                c.release_on_behalf_of(Borrower::id(i))?;
            }
            assert_eq!(c.statistics().tasks_waiting, 0);
            c.release_on_behalf_of(Borrower::id(5))?;

            // With zero tokens nobody gets in.
            c.set_total_tokens(0);
            assert!(matches!(c.try_acquire(), Err(Error::WouldBlock)));
            n.spawn(c.acquire_on_behalf_of(Borrower::id(6)));
            idle().await?;
            assert_eq!(c.statistics().tasks_waiting, 1);
            assert!(c.statistics().borrowers.is_empty());
            c.set_total_tokens(1);
            assert_eq!(c.statistics().tasks_waiting, 0);
            assert_eq!(c.statistics().borrowers, [Borrower::id(6)]);
            c.release_on_behalf_of(Borrower::id(6))?;

            // Lowered to zero while one holds a token and one waits.
            c.acquire_on_behalf_of(Borrower::id(0)).await?;
            n.spawn(c.acquire_on_behalf_of(Borrower::id(1)));
            idle().await?;
            c.set_total_tokens(0);
            assert_eq!(c.statistics().borrowers, [Borrower::id(0)]);
            c.release_on_behalf_of(Borrower::id(0))?;
            idle().await?;
            assert!(c.statistics().borrowers.is_empty());
            assert_eq!(c.statistics().tasks_waiting, 1);
            c.set_total_tokens(1);
            idle().await?;
            assert_eq!(c.statistics().borrowers, [Borrower::id(1)]);
            assert_eq!(c.statistics().tasks_waiting, 0);
            c.release_on_behalf_of(Borrower::id(1))?;
            c.set_total_tokens(0);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert_eq!(c.total_tokens(), 0);
        assert!(c.statistics().borrowers.is_empty());
        assert_eq!(c.statistics().tasks_waiting, 0);
        Ok(())
    })
    .unwrap();
}

// trio: test_sync.py::test_Semaphore
#[test]
fn semaphore_value_checkpoints_and_fair_hand_off() {
    let record = Log::default();
    mock_run(async {
        let s = Semaphore::new(1);
        assert_eq!(s.value(), 1);
        assert_eq!(s.max_value(), None);
        s.release()?;
        assert_eq!(s.value(), 2);
        assert_eq!(s.statistics().tasks_waiting, 0);
        s.try_acquire()?;
        assert_eq!(s.value(), 1);
        assert_checkpoints(s.acquire()).await?;
        assert_eq!(s.value(), 0);
        assert!(matches!(s.try_acquire(), Err(Error::WouldBlock)));
        s.release()?;
        assert_eq!(s.value(), 1);
        s.try_acquire()?;

        open_nursery(async |n| {
            n.spawn(async {
                record.push("started");
                s.acquire().await?;
                record.push("finished");
                Ok(())
            });
            idle().await?;
            assert_eq!(record.snapshot(), ["started"]);
            assert_eq!(s.value(), 0);
            s.release()?;
            // Fairness: the permit went to the waiter.
            assert_eq!(s.value(), 0);
            assert!(matches!(s.try_acquire(), Err(Error::WouldBlock)));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(record.take(), ["started", "finished"]);
}

// trio: test_sync.py::test_Semaphore_bounded
#[test]
fn a_bounded_semaphore_refuses_a_release_past_its_maximum() {
    mock_run(async {
        assert!(Semaphore::with_max(2, 1).is_err());
        let bs = Semaphore::with_max(1, 1)?;
        assert_eq!(bs.max_value(), Some(1));
        assert!(matches!(bs.release(), Err(Error::Runtime(_))));
        assert_eq!(bs.value(), 1, "the refused release changed nothing");
        bs.try_acquire()?;
        assert_eq!(bs.value(), 0);
        bs.release()?;
        assert_eq!(bs.value(), 1);
        Ok(())
    })
    .unwrap();
}

/// Trio's `test_Lock_and_StrictFIFOLock`, for both lock types.
macro_rules! lock_basics {
    ($name:ident, $ty:ty) => {
        // trio: test_sync.py::test_Lock_and_StrictFIFOLock
        #[test]
        fn $name() {
            mock_run(async {
                let l = <$ty>::new();
                assert!(!l.locked());
                {
                    let _g = assert_checkpoints(l.lock()).await?;
                    assert!(l.locked());
                }
                assert!(!l.locked());
                l.try_acquire()?;
                assert!(l.locked());
                l.release()?;
                assert!(!l.locked());
                assert_checkpoints(l.acquire()).await?;
                assert!(l.locked());
                l.release()?;
                assert!(!l.locked());

                l.try_acquire()?;
                assert!(matches!(l.try_acquire(), Err(Error::Runtime(_))), "already ours");
                l.release()?;
                assert!(matches!(l.release(), Err(Error::Runtime(_))), "not ours");

                let holder_task = Cell::new(None);
                let holder = async || -> Result<()> {
                    holder_task.set(Some(current_task()?));
                    let _g = l.lock().await?;
                    sleep_forever().await?;
                    Ok(())
                };
                open_nursery(async |n| {
                    assert!(!l.locked());
                    n.spawn(holder());
                    idle().await?;
                    assert!(l.locked());
                    assert!(matches!(l.try_acquire(), Err(Error::WouldBlock)));
                    // Releasing a lock another task holds is an error, and
                    // leaves it with its holder.
                    assert!(matches!(l.release(), Err(Error::Runtime(_))));
                    let st = l.statistics();
                    assert!(st.locked);
                    assert_eq!(st.owner, holder_task.get());
                    assert_eq!(st.tasks_waiting, 0);
                    n.spawn(holder());
                    idle().await?;
                    assert_eq!(l.statistics().tasks_waiting, 1);
                    n.cancel_scope().cancel();
                    Ok(())
                })
                .await?;
                let st = l.statistics();
                assert!(!st.locked);
                assert_eq!(st.owner, None);
                assert_eq!(st.tasks_waiting, 0);
                Ok(())
            })
            .unwrap();
        }
    };
}

lock_basics!(lock_basics_for_lock, Lock);
lock_basics!(lock_basics_for_strict_fifo_lock, StrictFifoLock);

// trio: test_sync.py::test_Condition
#[test]
fn condition_notify_counts_statistics_and_hand_off() {
    let finished = RefCell::new(BTreeSet::new());
    mock_run(async {
        let c = Condition::new();
        assert!(!c.lock().locked());
        assert_checkpoints(c.acquire()).await?;
        assert!(c.lock().locked());
        assert!(matches!(c.lock().try_acquire(), Err(Error::Runtime(_))));
        c.release()?;
        // Waiting or notifying needs the lock.
        assert!(matches!(c.wait().await, Err(Error::Runtime(_))));
        assert!(matches!(c.notify(1), Err(Error::Runtime(_))));
        assert!(matches!(c.notify_all(), Err(Error::Runtime(_))));

        let waiter = async |i: u32| -> Result<()> {
            c.acquire().await?;
            c.wait().await?;
            c.release()?;
            finished.borrow_mut().insert(i);
            Ok(())
        };
        open_nursery(async |n| {
            for i in 0..3 {
                n.spawn(waiter(i));
                idle().await?;
            }
            c.acquire().await?;
            c.notify(1)?;
            c.release()?;
            idle().await?;
            assert_eq!(*finished.borrow(), [0].into());
            c.acquire().await?;
            c.notify_all()?;
            c.release()?;
            idle().await?;
            assert_eq!(*finished.borrow(), [0, 1, 2].into());
            Ok(())
        })
        .await?;

        finished.borrow_mut().clear();
        open_nursery(async |n| {
            for i in 0..3 {
                n.spawn(waiter(i));
                idle().await?;
            }
            c.acquire().await?;
            assert_eq!(c.notify(2)?, 2);
            let st = c.statistics();
            assert_eq!(st.tasks_waiting, 1);
            assert_eq!(st.lock_statistics.tasks_waiting, 2, "the notified wait for the lock");
            c.release()?;
            // The release handed the lock to the first of them.
            assert_eq!(c.statistics().lock_statistics.tasks_waiting, 1);
            idle().await?;
            assert_eq!(*finished.borrow(), [0, 1].into());
            c.acquire().await?;
            c.notify_all()?;
            c.release()
        })
        .await?;

        // Cancelled in wait: it still holds the lock afterwards.
        let scope = CancelScope::new();
        scope
            .run(async {
                c.acquire().await?;
                scope.cancel();
                let r = c.wait().await;
                assert!(c.lock().locked());
                assert_eq!(c.lock().statistics().owner, Some(current_task()?));
                c.release()?;
                r
            })
            .await?;
        assert!(scope.cancelled_caught());
        Ok(())
    })
    .unwrap();
}

// ---- Trio's channel-based locks, through its generic lock tests ----

/// A lock made of a memory channel, three ways (Trio's `ChannelLock1/2/3`).
enum ChannelLock {
    /// Holds the lock by having a value in a buffer of `capacity`
    /// (pre-filled with `capacity - 1` values).
    One(Sender<()>, Receiver<()>),
    /// Holds the lock by having taken the one value out.
    Two(Sender<()>, Receiver<()>),
    /// An unbuffered channel: waiters send; release receives (hands over)
    /// or marks the lock free.
    Three(Sender<()>, Receiver<()>, Cell<bool>),
}

impl ChannelLock {
    fn one(capacity: usize) -> ChannelLock {
        let (s, r) = open_memory_channel(capacity);
        for _ in 0..capacity - 1 {
            s.try_send(()).unwrap();
        }
        ChannelLock::One(s, r)
    }

    fn two() -> ChannelLock {
        let (s, r) = open_memory_channel(10);
        s.try_send(()).unwrap();
        ChannelLock::Two(s, r)
    }

    fn three() -> ChannelLock {
        let (s, r) = open_memory_channel(0);
        ChannelLock::Three(s, r, Cell::new(false))
    }

    fn try_acquire(&self) -> Result<()> {
        match self {
            ChannelLock::One(s, _) => s.try_send(()).map_err(|_| Error::WouldBlock),
            ChannelLock::Two(_, r) => r.try_receive(),
            ChannelLock::Three(_, _, acquired) => {
                assert!(!acquired.get());
                acquired.set(true);
                Ok(())
            }
        }
    }

    async fn acquire(&self) -> Result<()> {
        match self {
            ChannelLock::One(s, _) => s.send(()).await,
            ChannelLock::Two(_, r) => r.receive().await,
            ChannelLock::Three(s, _, acquired) => {
                if acquired.get() {
                    s.send(()).await
                } else {
                    acquired.set(true);
                    checkpoint().await
                }
            }
        }
    }

    fn release(&self) -> Result<()> {
        match self {
            ChannelLock::One(_, r) => r.try_receive(),
            ChannelLock::Two(s, _) => s.try_send(()).map_err(|_| Error::WouldBlock),
            ChannelLock::Three(_, r, acquired) => match r.try_receive() {
                Ok(()) => Ok(()),
                Err(Error::WouldBlock) => {
                    assert!(acquired.get());
                    acquired.set(false);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }
    }
}

fn channel_locks() -> Vec<(&'static str, ChannelLock)> {
    vec![
        ("ChannelLock1(10)", ChannelLock::one(10)),
        ("ChannelLock1(1)", ChannelLock::one(1)),
        ("ChannelLock2", ChannelLock::two()),
        ("ChannelLock3", ChannelLock::three()),
    ]
}

// trio: test_sync.py::test_generic_lock_exclusion (the channel locks; the
// sync primitives are in sync.rs::generic_checks_*)
#[test]
fn channel_locks_exclude() {
    for (name, lock) in channel_locks() {
        mock_run(async {
            let inside = Cell::new(false);
            let acquires = Cell::new(0);
            open_nursery(async |n| {
                for _ in 0..5 {
                    n.spawn(async {
                        for _ in 0..10 {
                            lock.acquire().await?;
                            acquires.set(acquires.get() + 1);
                            assert!(!inside.get(), "{name}: two holders");
                            inside.set(true);
                            checkpoint().await?;
                            checkpoint().await?;
                            assert!(inside.get());
                            inside.set(false);
                            lock.release()?;
                        }
                        Ok(())
                    });
                }
                Ok(())
            })
            .await?;
            assert_eq!(acquires.get(), 50, "{name}");
            Ok(())
        })
        .unwrap();
    }
}

// trio: test_sync.py::test_generic_lock_fifo_fairness (the channel locks)
#[test]
fn channel_locks_are_fifo_fair() {
    for (name, lock) in channel_locks() {
        let initial = RefCell::new(Vec::new());
        let record = RefCell::new(Vec::new());
        mock_run(async {
            open_nursery(async |n| {
                for id in 1..=3 {
                    let (lock, initial, record) = (&lock, &initial, &record);
                    n.spawn(async move {
                        initial.borrow_mut().push(id);
                        for _ in 0..5 {
                            lock.acquire().await?;
                            record.borrow_mut().push(id);
                            lock.release()?;
                        }
                        Ok(())
                    });
                }
                Ok(())
            })
            .await
        })
        .unwrap();
        let (initial, record) = (initial.take(), record.take());
        for round in record.chunks(3) {
            assert_eq!(round, initial.as_slice(), "{name}: {record:?}");
        }
        assert_eq!(record.len(), 15);
    }
}

// trio: test_sync.py::test_generic_lock_acquire_nowait_blocks_acquire (the
// channel locks)
#[test]
fn channel_locks_try_acquire_blocks_acquire() {
    for (name, lock) in channel_locks() {
        let record = Log::default();
        mock_run(async {
            open_nursery(async |n| {
                lock.try_acquire()?;
                n.spawn(async {
                    record.push("started");
                    lock.acquire().await?;
                    lock.release()?;
                    record.push("finished");
                    Ok(())
                });
                idle().await?;
                assert_eq!(record.snapshot(), ["started"], "{name}");
                lock.release()
            })
            .await
        })
        .unwrap();
        assert_eq!(record.take(), ["started", "finished"], "{name}");
    }
}
