//! Busy tasks cannot starve I/O or deadlines: the run loop looks at I/O
//! after a bounded number of task polls however the busy tasks are laid
//! out (few, many in one batch, nested nurseries), and a deadline that
//! passed is seen at the next checkpoint of a runnable child.
//!
//! The bounds are counted in polls (iterations of the busy loops), never in
//! time, so they hold on a loaded machine. `POLL_BUDGET` is the runtime's
//! I/O budget (61 polls); before it, the loop looked at I/O every 61
//! *passes* of up to 16 batches each, about 8,000 polls with 8 busy tasks.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::Cell;
use std::time::Duration;

use trio::abc::{ReceiveStream, SendStream};
use trio::testing::wait_all_tasks_blocked;
use trio::{CancelScope, Error, Nursery, checkpoint, open_nursery};
use util::{manual_run_with, secs, tcp_pair};

/// The runtime's I/O budget, in task polls.
const POLL_BUDGET: u64 = 61;

/// A busy loop gives up after this many polls (the test then fails):
/// keeps every loop bounded.
const CAP: u64 = 2_000_000;

/// Spawns `count` tasks into `n` that checkpoint until `stop`, counting
/// their polls in `polls`.
fn spawn_busy<'s, 'e>(n: &'s Nursery<'s, 'e>, count: usize, polls: &'e Cell<u64>, stop: &'e Cell<bool>) {
    for _ in 0..count {
        n.spawn(async move {
            while !stop.get() {
                polls.set(polls.get() + 1);
                assert!(polls.get() < CAP, "I/O never got its turn");
                checkpoint().await?;
            }
            Ok(())
        });
    }
}

/// How many busy polls ran between data arriving for a parked receiver
/// and that receiver running, with `busy` busy tasks nested `depth`
/// nurseries deep.
fn polls_until_io(busy: usize, depth: usize) -> u64 {
    let lag = trio::run(async {
        let (client, server) = tcp_pair().await?;
        let polls = Cell::new(0u64);
        let stop = Cell::new(false);
        let lag = Cell::new(None);
        let sent_at = Cell::new(0u64);
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 8];
                server.receive_some(&mut buf).await?;
                lag.set(Some(polls.get() - sent_at.get()));
                stop.set(true);
                Ok(())
            });
            // The receiver parks (its readiness bit clear) before anything
            // else runs.
            wait_all_tasks_blocked(Duration::ZERO).await?;
            n.spawn(nested_busy(depth, busy, &polls, &stop));
            // Let the busy tasks get going, then send: from here on the
            // receiver's data is in its socket, waiting for the loop to
            // look at I/O.
            for _ in 0..3 {
                checkpoint().await?;
            }
            client.send_all(b"x").await?;
            sent_at.set(polls.get());
            Ok(())
        })
        .await?;
        Ok(lag.get().expect("the receiver ran"))
    })
    .unwrap();
    eprintln!("{busy} busy tasks, {depth} nurseries deep: {lag} busy polls before the receiver ran");
    lag
}

/// `busy` busy tasks inside `depth` nested nurseries.
async fn nested_busy(depth: usize, busy: usize, polls: &Cell<u64>, stop: &Cell<bool>) -> trio::Result<()> {
    if depth == 0 {
        open_nursery(async |n| {
            spawn_busy(n, busy, polls, stop);
            Ok(())
        })
        .await?;
        return Ok(());
    }
    Box::pin(nested_busy(depth - 1, busy, polls, stop)).await
}

#[test]
fn io_is_looked_at_within_the_budget_with_a_few_busy_tasks() {
    let lag = polls_until_io(8, 0);
    // The budget, plus the busy tasks queued ahead of the receiver once its
    // readiness was seen; twice that leaves room for one check that came
    // just before the data.
    assert!(lag <= 2 * (POLL_BUDGET + 8), "{lag} busy polls before the receiver ran");
}

#[test]
fn io_is_looked_at_within_the_budget_in_the_middle_of_a_long_batch() {
    // One batch of 500 tasks is longer than the budget: the nursery stops
    // inside it. The receiver then waits for its turn behind the tasks
    // queued before it (first in, first out), not for the whole batch to be
    // run 16 times.
    let busy = 500;
    let lag = polls_until_io(busy, 0);
    assert!(lag <= 2 * (POLL_BUDGET + busy as u64), "{lag} busy polls before the receiver ran");
}

#[test]
fn io_is_looked_at_within_the_budget_under_nested_nurseries() {
    let lag = polls_until_io(8, 4);
    assert!(lag <= 2 * (POLL_BUDGET + 8), "{lag} busy polls before the receiver ran");
}

#[test]
fn deeply_nested_nurseries_make_progress() {
    // Deeper than the budget: every nursery still runs at least one node
    // per poll, so the innermost tasks are reached.
    async fn nest(depth: usize, done: &Cell<u32>) -> trio::Result<()> {
        if depth == 0 {
            for _ in 0..100 {
                checkpoint().await?;
            }
            done.set(done.get() + 1);
            return Ok(());
        }
        open_nursery(async |n| {
            n.spawn(Box::pin(nest(depth - 1, done)));
            n.spawn(async {
                for _ in 0..100 {
                    checkpoint().await?;
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    }
    let done = Cell::new(0);
    trio::run(nest(150, &done)).unwrap();
    assert_eq!(done.get(), 1);
}

/// Trio checks deadlines between batches: after the clock passes a
/// deadline, the very next checkpoint inside the scope fails, in a child
/// as in the main task, busy siblings or not.
#[test]
fn a_passed_deadline_is_seen_at_the_next_checkpoint_of_a_child() {
    manual_run_with(|clock| async move {
        let stop = Cell::new(false);
        let polls = Cell::new(0u64);
        let clock = &clock;
        open_nursery(async |n| {
            spawn_busy(n, 3, &polls, &stop);
            n.spawn(async {
                let passed_ok = Cell::new(0u32);
                let scope = CancelScope::with_timeout(secs(1));
                let out = scope
                    .run(async {
                        checkpoint().await?;
                        clock.jump(secs(2));
                        for _ in 0..100 {
                            checkpoint().await?;
                            passed_ok.set(passed_ok.get() + 1);
                        }
                        Ok(())
                    })
                    .await?;
                assert!(out.is_none());
                assert_eq!(passed_ok.get(), 0, "checkpoints that succeeded after the deadline passed");
                stop.set(true);
                Ok(())
            });
            Ok(())
        })
        .await?;
        // The same in the main task.
        let passed_ok = Cell::new(0u32);
        let out = CancelScope::with_timeout(secs(1))
            .run(async {
                clock.jump(secs(2));
                for _ in 0..100 {
                    checkpoint().await?;
                    passed_ok.set(passed_ok.get() + 1);
                }
                Ok(())
            })
            .await?;
        assert!(out.is_none());
        assert_eq!(passed_ok.get(), 0);
        Ok::<_, Error>(())
    })
    .unwrap();
}
