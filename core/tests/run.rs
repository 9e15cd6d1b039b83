//! The run loop: entry, errors outside a run, scheduling order, wakeups.

mod util;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use trio::{Error, RunOptions, checkpoint, open_nursery, run};
use util::*;

#[test]
fn run_returns_the_value() {
    assert_eq!(run(async { Ok(42) }).unwrap(), 42);
}

#[test]
fn run_returns_the_error() {
    let e = run(async { Err::<(), _>(boom(1)) }).unwrap_err();
    assert_eq!(booms(&e), vec![1]);
}

#[test]
fn nested_run_is_an_error() {
    let inner = run(async { Ok(run(async { Ok(1) })) }).unwrap();
    assert!(matches!(inner, Err(Error::Runtime(m)) if m.contains("nest")));
}

#[test]
fn runtime_functions_outside_run_are_errors() {
    use futures_lite::future::block_on;
    assert!(matches!(block_on(checkpoint()), Err(Error::Runtime(_))));
    assert!(matches!(block_on(trio::sleep(Duration::ZERO)), Err(Error::Runtime(_))));
    assert!(matches!(block_on(trio::checkpoint_if_cancelled()), Err(Error::Runtime(_))));
    assert!(matches!(trio::current_time(), Err(Error::Runtime(_))));
    assert!(matches!(trio::lowlevel::current_task(), Err(Error::Runtime(_))));
    assert!(matches!(trio::current_effective_deadline(), Err(Error::Runtime(_))));
    let r = block_on(open_nursery(async |_n| Ok(())));
    assert!(matches!(r, Err(Error::Runtime(_))));
    let r = block_on(trio::CancelScope::new().run(async { Ok(()) }));
    assert!(matches!(r, Err(Error::Runtime(_))));
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_panic_in_main_leaves_the_thread_usable() {
    let r = std::panic::catch_unwind(|| run::<(), _>(async { panic!("main panicked") }));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"main panicked"));
    // The thread-local state was torn down: a new run works.
    assert_eq!(run(async { Ok(7) }).unwrap(), 7);
}

// Not on WASI: it needs OS threads, which wasm32-wasip1 does not have.
#[cfg(not(target_os = "wasi"))]
#[test]
fn runs_one_after_another_and_on_many_threads() {
    for i in 0..3 {
        assert_eq!(mock_run(async move { Ok(i) }).unwrap(), i);
    }
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                mock_run(async move {
                    trio::sleep(secs(i)).await?;
                    trio::current_time()
                })
                .unwrap()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), at(i as u64));
    }
}

#[test]
fn batch_order_is_fifo_without_a_seed() {
    let log = Log::default();
    run(async {
        open_nursery(async |n| {
            for i in 0..20 {
                let log = &log;
                n.spawn(async move {
                    log.push(i.to_string());
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    let expect: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(log.take(), expect);
}

fn order_with_seed(seed: u64) -> Vec<u32> {
    let order = RefCell::new(Vec::new());
    RunOptions::new()
        .shuffle_seed(seed)
        .run(async {
            open_nursery(async |n| {
                for i in 0..20u32 {
                    let order = &order;
                    n.spawn(async move {
                        order.borrow_mut().push(i);
                        Ok(())
                    });
                }
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    order.into_inner()
}

#[test]
fn a_seed_shuffles_batches_reproducibly() {
    let a = order_with_seed(1);
    assert_eq!(a, order_with_seed(1), "same seed, same order");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "every task ran once");
    let shuffled = (1..6).any(|s| order_with_seed(s) != (0..20).collect::<Vec<_>>());
    assert!(shuffled, "some seed changes the order");
    assert!((1..6).any(|s| order_with_seed(s) != a), "seeds differ");
}

#[test]
fn checkpoints_interleave_siblings() {
    let log = Log::default();
    run(async {
        open_nursery(async |n| {
            for name in ["a", "b"] {
                let log = &log;
                n.spawn(async move {
                    for i in 0..3 {
                        log.push(format!("{name}{i}"));
                        checkpoint().await?;
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
    assert_eq!(log.take(), ["a0", "b0", "a1", "b1", "a2", "b2"]);
}

#[test]
fn a_checkpointing_loop_cannot_starve_a_sibling() {
    let flag = Cell::new(false);
    let seen_at = Cell::new(None);
    run(async {
        open_nursery(async |n| {
            n.spawn(async {
                for i in 0..1000 {
                    if flag.get() {
                        seen_at.set(Some(i));
                        break;
                    }
                    checkpoint().await?;
                }
                Ok(())
            });
            n.spawn(async {
                checkpoint().await?;
                flag.set(true);
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert!(seen_at.get().is_some_and(|i| i <= 3), "sibling ran within a few passes: {:?}", seen_at.get());
}

// Not on WASI: it needs OS threads, which wasm32-wasip1 does not have.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_wake_from_another_thread_reaches_the_task() {
    let r = run(async {
        let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let t = std::thread::spawn(move || {
            // Bounded wait for the task to publish its waker.
            let Ok(w) = waker_rx.recv_timeout(Duration::from_secs(10)) else { return false };
            done2.store(true, Ordering::SeqCst);
            w.wake();
            true
        });
        let mut sent = false;
        poll_fn(|cx| {
            if done.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                if !sent {
                    sent = waker_tx.send(cx.waker().clone()).is_ok();
                }
                Poll::Pending
            }
        })
        .await;
        Ok(t.join().unwrap())
    });
    assert!(r.unwrap());
}

/// Polls the inner future with its own (foreign) waker, as combinators like
/// `FuturesUnordered` do.
struct Foreign {
    outer: Mutex<Option<Waker>>,
    woken: AtomicBool,
}

impl Wake for Foreign {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(w) = self.outer.lock().unwrap().take() {
            w.wake();
        }
    }
}

#[test]
fn foreign_wakers_are_woken_too() {
    let foreign = Arc::new(Foreign { outer: Mutex::new(None), woken: AtomicBool::new(false) });
    let f2 = foreign.clone();
    mock_run(async move {
        let waker = Waker::from(f2.clone());
        let mut inner = std::pin::pin!(async {
            checkpoint().await?;
            trio::sleep(secs(1)).await?;
            Ok::<_, Error>(5)
        });
        let v = poll_fn(|cx| {
            *f2.outer.lock().unwrap() = Some(cx.waker().clone());
            inner.as_mut().poll(&mut std::task::Context::from_waker(&waker))
        })
        .await?;
        Ok(v)
    })
    .map(|v| assert_eq!(v, 5))
    .unwrap();
    assert!(foreign.woken.load(Ordering::SeqCst));
}

// Not on WASI: it needs OS threads, which wasm32-wasip1 does not have.
#[cfg(not(target_os = "wasi"))]
#[test]
fn a_waker_outliving_its_run_is_harmless() {
    let kept: RefCell<Option<Waker>> = RefCell::new(None);
    run(async {
        poll_fn(|cx| {
            *kept.borrow_mut() = Some(cx.waker().clone());
            Poll::Ready(())
        })
        .await;
        Ok(())
    })
    .unwrap();
    let w = kept.into_inner().unwrap();
    w.wake_by_ref();
    std::thread::spawn(move || w.wake()).join().unwrap();
    // And a new run on this thread is not disturbed by it.
    assert_eq!(run(async { Ok(1) }).unwrap(), 1);
}

/// A combinator that, like `FuturesUnordered`, polls its inner future only
/// when the inner future's own (foreign) waker was woken.
#[test]
fn a_nursery_polled_through_a_selective_combinator_is_woken_correctly() {
    let foreign = Arc::new(Foreign { outer: Mutex::new(None), woken: AtomicBool::new(true) });
    let r = mock_run(async {
        let waker = Waker::from(foreign.clone());
        let mut inner = std::pin::pin!(open_nursery(async |n| {
            n.spawn(async { trio::sleep(secs(1)).await });
            n.spawn(async {
                checkpoint().await?;
                checkpoint().await
            });
            Ok(3)
        }));
        poll_fn(|cx| {
            *foreign.outer.lock().unwrap() = Some(cx.waker().clone());
            if !foreign.woken.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
            inner.as_mut().poll(&mut std::task::Context::from_waker(&waker))
        })
        .await
    });
    assert_eq!(r.unwrap(), Some(3));
}
