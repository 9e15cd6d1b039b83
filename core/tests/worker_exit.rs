//! The end of the last run joins the idle worker threads (one test in its
//! own binary: no other run may be alive in the process meanwhile).
#![cfg(not(target_os = "wasi"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trio::{open_nursery, to_thread};

/// Counts its drop: kept in a worker's thread-local storage, it is dropped
/// when that worker thread exits (before a join returns).
struct OnExit(Arc<AtomicUsize>);

impl Drop for OnExit {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<OnExit>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn the_end_of_the_last_run_joins_the_idle_workers() {
    let exited = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    for round in 0..3 {
        let (exited2, started2) = (exited.clone(), started.clone());
        trio::run(async move {
            // Several workers at once, and one reused.
            open_nursery(async |n| {
                for _ in 0..3 {
                    let (e, s) = (exited2.clone(), started2.clone());
                    n.spawn(async move {
                        to_thread::run_sync(move || {
                            ON_EXIT.with_borrow_mut(|o| {
                                if o.is_none() {
                                    s.fetch_add(1, Ordering::SeqCst);
                                    *o = Some(OnExit(e));
                                }
                            })
                        })
                        .await
                    });
                }
                Ok(())
            })
            .await?;
            to_thread::run_sync(|| ()).await
        })
        .unwrap();
        // Joined: every worker that ever ran has exited, none is idle.
        assert_eq!(to_thread::idle_worker_threads(), 0, "round {round}");
        assert!(started.load(Ordering::SeqCst) >= 1);
        assert_eq!(exited.load(Ordering::SeqCst), started.load(Ordering::SeqCst), "round {round}");
    }
}
