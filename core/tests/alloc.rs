//! The hot paths do not allocate: checkpoints, wakes between tasks and
//! park/unpark, once the run's buffers are warm. Counted by a global
//! allocator that tallies allocations made on the current thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::time::Duration;

use trio::lowlevel::{Abort, WakeToken, park, unpark};
use trio::testing::MockClock;
use trio::{RunOptions, checkpoint, open_nursery};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised
// thread-local `Cell`, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

fn run<T>(f: impl Future<Output = trio::Result<T>>) -> T {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::ZERO));
    RunOptions::new().clock(clock).run(f).unwrap()
}

#[test]
fn checkpoints_do_not_allocate() {
    let counted = run(async {
        let counted = Cell::new(u64::MAX);
        open_nursery(async |n| {
            let counted2 = &counted;
            n.spawn(async move {
                for _ in 0..100 {
                    checkpoint().await?;
                }
                let before = allocs();
                for _ in 0..10_000 {
                    checkpoint().await?;
                }
                counted2.set(allocs() - before);
                Ok(())
            });
            // The body keeps checkpointing too, so wakes cross between nodes,
            // until the child has measured.
            for _ in 0..100_000 {
                if counted.get() != u64::MAX {
                    break;
                }
                checkpoint().await?;
            }
            Ok(())
        })
        .await?;
        Ok(counted.get())
    });
    assert_eq!(counted, 0);
}

#[test]
fn park_unpark_ping_pong_does_not_allocate() {
    let counted = run(async {
        let ping: Cell<Option<WakeToken>> = Cell::new(None);
        let pong: Cell<Option<WakeToken>> = Cell::new(None);
        let result = RefCell::new(None);
        open_nursery(async |n| {
            let (ping, pong, result) = (&ping, &pong, &result);
            n.spawn(async move {
                let mut before = 0;
                for round in 0..2_100 {
                    if round == 100 {
                        before = allocs();
                    }
                    park(|t| ping.set(Some(t)), || Abort::Succeeded).await?;
                    while !pong.take().is_some_and(unpark) {
                        checkpoint().await?;
                    }
                }
                *result.borrow_mut() = Some(allocs() - before);
                Ok(())
            });
            n.spawn(async move {
                for _ in 0..2_100 {
                    while !ping.take().is_some_and(unpark) {
                        checkpoint().await?;
                    }
                    park(|t| pong.set(Some(t)), || Abort::Succeeded).await?;
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(result.take())
    });
    assert_eq!(counted, Some(0));
}

/// The deadline helpers enter a scope no handle can reach: its state lives
/// in the runtime's record, so entering and leaving allocates nothing
/// (issue 20: a `CancelScope` handle is an `Rc`, one allocation per scope).
/// Both a body that finishes at once and one that waits (its deadline goes
/// into the timer map) are counted, after warm-up rounds have grown the
/// run's tables.
#[test]
fn deadline_helpers_do_not_allocate() {
    let counted = run(async {
        let mut before = 0;
        for round in 0..1_100 {
            if round == 100 {
                before = allocs();
            }
            let fast = trio::move_on_after(Duration::from_secs(5), async { Ok(round) }).await?;
            assert_eq!(fast, Some(round));
            let waited = trio::fail_after(Duration::from_secs(5), checkpoint()).await;
            assert!(waited.is_ok());
            let deadline = trio::current_time()? + Duration::from_secs(1);
            let caught = trio::move_on_at(deadline, trio::sleep(Duration::from_secs(2))).await?;
            assert!(caught.is_none(), "the deadline fires first (mock clock)");
        }
        Ok(allocs() - before)
    });
    assert_eq!(counted, 0);
}
