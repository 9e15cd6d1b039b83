//! The cross-thread hand-off behind `Shared`: state under a mutex plus a
//! "maybe non-empty" flag, so the run loop checks for work from other threads
//! with one relaxed load and takes the lock only when something came.
//!
//! Protocol. Producer: edit the state under the lock, then raise the flag,
//! then wake the driver. Consumer (the run loop, each pass): if the flag is
//! up, lower it, then take the state under the lock. A push that lands
//! between the consumer's lowering and its locking is taken in the same
//! drain; one that lands after the drain raised the flag again, so the next
//! pass (or the driver wake) finds it. Nothing is lost and nothing waits
//! for a wake that already happened. The `loom` model below checks this.

#[cfg(loom)]
use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering},
};
#[cfg(not(loom))]
use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, Ordering},
};

pub(crate) struct Inject<S> {
    state: Mutex<S>,
    pending: AtomicBool,
}

impl<S> Inject<S> {
    pub(crate) fn new(state: S) -> Inject<S> {
        Inject { state: Mutex::new(state), pending: AtomicBool::new(false) }
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Producer side: `f` edits the state; if it says it queued something,
    /// the flag goes up. Returns what `f` returned. The caller wakes the
    /// consumer afterwards.
    pub(crate) fn push(&self, f: impl FnOnce(&mut S) -> bool) -> bool {
        let queued = f(&mut self.lock());
        if queued {
            self.pending.store(true, Ordering::Release);
        }
        queued
    }

    /// Consumer side: runs `f` on the state if anything was pushed since the
    /// last drain.
    #[inline]
    pub(crate) fn drain(&self, f: impl FnOnce(&mut S)) {
        // A plain load first: the common case needs no read-modify-write.
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::Acquire) {
            self.drain_locked(f);
        }
    }

    #[cold]
    fn drain_locked(&self, f: impl FnOnce(&mut S)) {
        f(&mut self.lock());
    }

    /// Was anything pushed that has not been drained?
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Plain locked access, for bookkeeping that is neither push nor drain.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock())
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    use super::Inject;
    use loom::sync::{Arc, Condvar, Mutex};

    /// The driver's wake handle, modelled as an eventfd: a wake before the
    /// poll makes the poll return at once.
    #[derive(Default)]
    struct EventFd {
        set: Mutex<bool>,
        cv: Condvar,
    }

    impl EventFd {
        fn wake(&self) {
            *self.set.lock().unwrap() = true;
            self.cv.notify_one();
        }

        fn poll(&self) {
            let mut set = self.set.lock().unwrap();
            while !*set {
                set = self.cv.wait(set).unwrap();
            }
            *set = false;
        }
    }

    /// Producers push `per` items each and wake the driver; the consumer
    /// drains, and blocks in the driver only when a drain found nothing. In
    /// every interleaving it receives every item, each producer's in order,
    /// and never sleeps with an item queued (that would deadlock the model).
    fn model(producers: u32, per: u32) {
        let mut builder = loom::model::Builder::new();
        // Bounded preemptions keep the run to seconds; 3 covers every
        // ordering of the protocol's four steps around one push.
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let q = Arc::new(Inject::new(Vec::<u32>::new()));
            let fd = Arc::new(EventFd::default());
            let threads: Vec<_> = (0..producers)
                .map(|p| {
                    let (q, fd) = (q.clone(), fd.clone());
                    loom::thread::spawn(move || {
                        for i in 0..per {
                            q.push(|v| {
                                v.push(p * 10 + i);
                                true
                            });
                            fd.wake();
                        }
                    })
                })
                .collect();
            let total = (producers * per) as usize;
            let mut got = Vec::new();
            while got.len() < total {
                let before = got.len();
                q.drain(|v| got.append(v));
                if got.len() == before {
                    fd.poll();
                }
            }
            for t in threads {
                t.join().unwrap();
            }
            for p in 0..producers {
                let mine: Vec<u32> = got.iter().copied().filter(|x| x / 10 == p).collect();
                assert_eq!(mine, (0..per).map(|i| p * 10 + i).collect::<Vec<_>>());
            }
        });
    }

    #[test]
    fn two_producers_one_item_each() {
        model(2, 1);
    }

    #[test]
    fn one_producer_two_items_in_order() {
        model(1, 2);
    }
}
