//! The micro-benchmarks: small runtime operations, trio against tokio's
//! current-thread runtime in the same process.
//!
//! Every workload runs on both runtimes once as a warm-up (at a tenth of its
//! size), then in interleaved rounds (trio, tokio, trio, tokio, ...); the
//! figure is the median ns per operation (per child, per checkpoint, per
//! round trip, ...), lower is better. The record names are matched by name
//! against the Python Trio results, so they must not change.
//!
//! Each measured call builds its own runtime (`trio::run`, or a fresh tokio
//! current-thread runtime); where the runtime's start-up would be a visible
//! share of the time, the timer starts inside the run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::results::{Record, Size};

/// Runs the micro workloads at `size`, prints the comparison and returns it
/// (group `"micro"`, unit `"ns/op"`, lower is better).
pub(crate) fn run(size: Size) -> Vec<Record> {
    let rounds = match size {
        Size::Full => 9,
        Size::Quick => 3,
        Size::Tiny => 1,
    };
    println!();
    println!(
        "micro-benchmarks: trio against tokio's current-thread runtime, same process, interleaved; \
         median of {rounds} round(s); ratio = trio/tokio (below 1: trio is faster)"
    );
    println!("{:<40} {:>12} {:>12} {:>8}", "workload", "trio ns/op", "tokio ns/op", "ratio");
    let mut records = Vec::new();
    for w in WORKLOADS {
        let n = w.size(size);
        if size != Size::Tiny {
            // Warm up both sides (the allocator, the thread pools, the caches).
            black_box((w.trio)(n / 10));
            black_box((w.tokio)(n / 10));
        }
        let mut a = Vec::with_capacity(rounds);
        let mut b = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            a.push((w.trio)(n));
            b.push((w.tokio)(n));
        }
        let record = Record::lower("micro", w.name, median(a), median(b), "ns/op");
        println!("{:<40} {:>12.1} {:>12.1} {:>8.2}", record.name, record.trio, record.tokio, record.ratio());
        records.push(record);
    }
    records
}

/// `--only spawn|checkpoint|pingpong|pingpong0|lock|child|deadline`: one trio workload, once,
/// at its full size (a profiling aid); ns per operation. `None` for any
/// other name.
pub(crate) fn profile_one(name: &str) -> Option<f64> {
    Some(match name {
        "spawn" => trio_spawn_join_100k(100_000),
        "checkpoint" => trio_checkpoints(1_000_000),
        "pingpong" => trio_ping_pong_1(200_000),
        "lock" => trio_lock(1_000_000),
        "child" => trio_checkpoints_in_child(1_000_000),
        "deadline" => trio_deadline_not_firing(1_000_000),
        "pingpong0" => trio_ping_pong_0(200_000),
        _ => return None,
    })
}

/// One workload: its record name, its size (operations per measured call)
/// and one measured call on each runtime, returning ns per operation.
pub(crate) struct Workload {
    /// The record name (matched against the Python Trio results).
    pub(crate) name: &'static str,
    /// How many times a call with size `n` does its `n` operations (the
    /// spawn workloads time a second pass after a warm-up pass in the same
    /// run); `--instructions` divides by it.
    pub(crate) passes: usize,
    /// Operations per measured call, for `Size::Full`.
    pub(crate) n: usize,
    /// Operations per measured call, for `Size::Quick`.
    quick_n: usize,
    /// trio's side.
    pub(crate) trio: fn(usize) -> f64,
    /// tokio's side.
    pub(crate) tokio: fn(usize) -> f64,
}

impl Workload {
    /// Operations per measured call at `size` (`Tiny`: a thousandth of the
    /// full size, at least 10).
    fn size(&self, size: Size) -> usize {
        match size {
            Size::Full => self.n,
            Size::Quick => self.quick_n,
            Size::Tiny => (self.n / 1000).max(10),
        }
    }
}

/// Every micro workload, in the order they run and are reported.
pub(crate) const WORKLOADS: &[Workload] = &[
    Workload {
        name: "spawn+join 1k children",
        passes: 2,
        n: 100_000,
        quick_n: 100_000,
        trio: trio_spawn_join_1k,
        tokio: tokio_spawn_join_1k,
    },
    Workload {
        name: "spawn+join 100k children",
        passes: 2,
        n: 100_000,
        quick_n: 100_000,
        trio: trio_spawn_join_100k,
        tokio: tokio_spawn_join_100k,
    },
    Workload {
        name: "checkpoint: 1 task x 1M",
        passes: 1,
        n: 1_000_000,
        quick_n: 1_000_000,
        trio: trio_checkpoints,
        tokio: tokio_yields,
    },
    Workload {
        name: "checkpoint: 1000 tasks x 1k",
        passes: 1,
        n: 1_000_000,
        quick_n: 1_000_000,
        trio: trio_checkpoints_many,
        tokio: tokio_yields_many,
    },
    Workload {
        name: "deadline scope enter+exit, not firing",
        passes: 1,
        n: 1_000_000,
        quick_n: 1_000_000,
        trio: trio_deadline_not_firing,
        tokio: tokio_timeout_not_firing,
    },
    Workload {
        name: "100k deadlines firing",
        passes: 1,
        n: 100_000,
        quick_n: 100_000,
        trio: trio_deadlines_firing,
        tokio: tokio_timeouts_firing,
    },
    Workload {
        name: "ping-pong capacity 0",
        passes: 1,
        n: 200_000,
        quick_n: 200_000,
        trio: trio_ping_pong_0,
        tokio: tokio_ping_pong,
    },
    Workload {
        name: "ping-pong capacity 1",
        passes: 1,
        n: 200_000,
        quick_n: 200_000,
        trio: trio_ping_pong_1,
        tokio: tokio_ping_pong,
    },
    Workload {
        name: "uncontended lock acquire+release",
        passes: 1,
        n: 1_000_000,
        quick_n: 1_000_000,
        trio: trio_lock,
        tokio: tokio_mutex,
    },
    Workload {
        name: "uncontended lock try_acquire+release",
        passes: 1,
        n: 1_000_000,
        quick_n: 1_000_000,
        trio: trio_lock_try,
        tokio: tokio_mutex_try,
    },
    Workload {
        name: "to_thread round trip",
        passes: 1,
        n: 20_000,
        quick_n: 10_000,
        trio: trio_to_thread,
        tokio: tokio_spawn_blocking,
    },
    Workload {
        name: "run_sync_soon from another thread",
        passes: 1,
        n: 20_000,
        quick_n: 10_000,
        trio: trio_run_sync_soon,
        tokio: tokio_handle_spawn,
    },
];

/// The median (the upper one of an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// ns per operation.
fn per_op(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / n.max(1) as f64
}

/// A current-thread tokio runtime with the timer enabled.
fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime")
}

/// Spawn+join of `n` trivial children, in nurseries of `batch` children
/// each, timed inside a run that already spawned a warm-up batch (so the
/// slabs are grown, as in a long-lived server); ns per child.
fn trio_spawn_join(batch: usize, n: usize) -> f64 {
    let batch = batch.clamp(1, n.max(1));
    let batches = n.div_ceil(batch).max(1);
    trio::run(async {
        let mut ns = 0.0;
        for round in 0..2 {
            let t = Instant::now();
            for _ in 0..batches {
                trio::open_nursery(async |nursery| {
                    for _ in 0..batch {
                        nursery.spawn(async { Ok(()) });
                    }
                    Ok(())
                })
                .await?;
            }
            if round == 1 {
                ns = per_op(t.elapsed(), batches * batch);
            }
        }
        Ok(ns)
    })
    .expect("trio spawn+join")
}

/// tokio's side of [`trio_spawn_join`]: `spawn_local` `batch` tasks, await
/// their handles, repeat; ns per task.
fn tokio_spawn_join(batch: usize, n: usize) -> f64 {
    let batch = batch.clamp(1, n.max(1));
    let batches = n.div_ceil(batch).max(1);
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut ns = 0.0;
        let mut handles = Vec::with_capacity(batch);
        for round in 0..2 {
            let t = Instant::now();
            for _ in 0..batches {
                for _ in 0..batch {
                    handles.push(tokio::task::spawn_local(async {}));
                }
                for h in handles.drain(..) {
                    h.await.expect("a tokio task");
                }
            }
            if round == 1 {
                ns = per_op(t.elapsed(), batches * batch);
            }
        }
        ns
    })
}

/// "spawn+join 1k children", trio: nurseries of 1000 children.
fn trio_spawn_join_1k(n: usize) -> f64 {
    trio_spawn_join(1000, n)
}

/// "spawn+join 1k children", tokio: batches of 1000 tasks.
fn tokio_spawn_join_1k(n: usize) -> f64 {
    tokio_spawn_join(1000, n)
}

/// "spawn+join 100k children", trio: one nursery of all `n` children.
fn trio_spawn_join_100k(n: usize) -> f64 {
    trio_spawn_join(n, n)
}

/// "spawn+join 100k children", tokio: one batch of all `n` tasks.
fn tokio_spawn_join_100k(n: usize) -> f64 {
    tokio_spawn_join(n, n)
}

/// `n` checkpoints in the main task; ns per checkpoint (the run's start-up
/// included, as it always was: it is small against 1M checkpoints).
fn trio_checkpoints(n: usize) -> f64 {
    let t = Instant::now();
    trio::run(async {
        for _ in 0..n {
            trio::checkpoint().await?;
        }
        Ok(())
    })
    .expect("trio checkpoints");
    per_op(t.elapsed(), n)
}

/// tokio's side of [`trio_checkpoints`]: `yield_now` in `block_on`.
fn tokio_yields(n: usize) -> f64 {
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
    rt.block_on(async {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    });
    per_op(t.elapsed(), n)
}

/// `n` checkpoints in one child task (`--only child`, a profiling aid).
fn trio_checkpoints_in_child(n: usize) -> f64 {
    let t = Instant::now();
    trio::run(async {
        trio::open_nursery(async |nursery| {
            nursery.spawn(async move {
                for _ in 0..n {
                    trio::checkpoint().await?;
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        Ok(())
    })
    .expect("trio checkpoints in a child");
    per_op(t.elapsed(), n)
}

/// How many tasks share the checkpoints of "checkpoint: 1000 tasks x 1k".
const MANY_TASKS: usize = 1000;

/// `n` checkpoints spread over 1000 children (fewer if `n` is smaller), so
/// every pass of the scheduler has 1000 runnable tasks; ns per checkpoint.
fn trio_checkpoints_many(n: usize) -> f64 {
    let tasks = MANY_TASKS.min(n.max(1));
    let each = (n / tasks).max(1);
    trio::run(async {
        let t = Instant::now();
        trio::open_nursery(async |nursery| {
            for _ in 0..tasks {
                nursery.spawn(async move {
                    for _ in 0..each {
                        trio::checkpoint().await?;
                    }
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(per_op(t.elapsed(), tasks * each))
    })
    .expect("trio checkpoints in many tasks")
}

/// tokio's side of [`trio_checkpoints_many`]: 1000 `spawn_local` tasks
/// calling `yield_now`.
fn tokio_yields_many(n: usize) -> f64 {
    let tasks = MANY_TASKS.min(n.max(1));
    let each = (n / tasks).max(1);
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let t = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::task::spawn_local(async move {
                    for _ in 0..each {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("a tokio task");
        }
        per_op(t.elapsed(), tasks * each)
    })
}

/// A deadline far enough away never to fire during a benchmark.
const FAR: Duration = Duration::from_secs(3600);

/// `move_on_after(1 h)` around a future that is ready at once: entering and
/// leaving a cancel scope with a deadline (Python Trio: `with
/// trio.move_on_after(3600): pass`); ns per scope.
fn trio_deadline_not_firing(n: usize) -> f64 {
    trio::run(async {
        let t = Instant::now();
        for _ in 0..n {
            black_box(trio::move_on_after(FAR, async { Ok(()) }).await?);
        }
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio deadline scopes")
}

/// tokio's side of [`trio_deadline_not_firing`]: `timeout(1 h, ready(()))`
/// (it reads the clock to set the deadline, then finds the inner future
/// ready and never registers the timer: tokio's cheapest honest equivalent).
fn tokio_timeout_not_firing(n: usize) -> f64 {
    let rt = tokio_rt();
    rt.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            black_box(tokio::time::timeout(FAR, std::future::ready(())).await.is_ok());
        }
        per_op(t.elapsed(), n)
    })
}

/// The deadline of "100k deadlines firing".
const SHORT: Duration = Duration::from_millis(1);

/// `n` children each waiting forever under a 1 ms deadline that fires:
/// the whole nursery's wall time (spawning, arming, firing, cancelling,
/// joining; the 1 ms included) per deadline.
fn trio_deadlines_firing(n: usize) -> f64 {
    trio::run(async {
        let t = Instant::now();
        trio::open_nursery(async |nursery| {
            for _ in 0..n {
                nursery.spawn(async {
                    let r = trio::move_on_after(SHORT, trio::sleep_forever()).await?;
                    debug_assert!(r.is_none());
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio deadlines firing")
}

/// tokio's side of [`trio_deadlines_firing`]: `n` `spawn_local` tasks each
/// awaiting `timeout(1 ms, pending())`, then every handle.
fn tokio_timeouts_firing(n: usize) -> f64 {
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let t = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                tokio::task::spawn_local(async {
                    let r = tokio::time::timeout(SHORT, std::future::pending::<()>()).await;
                    debug_assert!(r.is_err());
                })
            })
            .collect();
        for h in handles {
            h.await.expect("a tokio task");
        }
        per_op(t.elapsed(), n)
    })
}

/// Ping-pong between two tasks over two channels of `capacity`; ns per
/// round trip.
fn trio_ping_pong(capacity: usize, n: usize) -> f64 {
    trio::run(async {
        let (to_b, from_a) = trio::open_memory_channel::<u32>(capacity);
        let (to_a, from_b) = trio::open_memory_channel::<u32>(capacity);
        let t = Instant::now();
        trio::open_nursery(async |nursery| {
            nursery.spawn(async move {
                while let Some(v) = from_a.recv().await? {
                    to_a.send(v + 1).await?;
                }
                Ok(())
            });
            for i in 0..n as u32 {
                to_b.send(i).await?;
                black_box(from_b.receive().await?);
            }
            drop(to_b);
            Ok(())
        })
        .await?;
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio ping-pong")
}

/// "ping-pong capacity 0", trio: unbuffered channels (a send waits for the
/// receiver).
fn trio_ping_pong_0(n: usize) -> f64 {
    trio_ping_pong(0, n)
}

/// "ping-pong capacity 1", trio.
fn trio_ping_pong_1(n: usize) -> f64 {
    trio_ping_pong(1, n)
}

/// tokio's side of both ping-pongs: tokio's channels cannot have capacity
/// 0, so this is `mpsc::channel(1)`, its smallest, for "capacity 0" too.
fn tokio_ping_pong(n: usize) -> f64 {
    let rt = tokio_rt();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u32>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u32>(1);
        let t = Instant::now();
        let b = tokio::task::spawn_local(async move {
            while let Some(v) = from_a.recv().await {
                to_a.send(v + 1).await.expect("the ping side is alive");
            }
        });
        for i in 0..n as u32 {
            to_b.send(i).await.expect("the pong side is alive");
            black_box(from_b.recv().await.expect("a pong"));
        }
        drop(to_b);
        b.await.expect("the pong task");
        per_op(t.elapsed(), n)
    })
}

/// Uncontended acquire + release (acquire is a checkpoint, so it yields).
fn trio_lock(n: usize) -> f64 {
    trio::run(async {
        let lock = trio::sync::Lock::new();
        let t = Instant::now();
        for _ in 0..n {
            lock.acquire().await?;
            lock.release()?;
        }
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio lock")
}

/// Uncontended `try_acquire` + release: the no-yield fast path.
fn trio_lock_try(n: usize) -> f64 {
    trio::run(async {
        let lock = trio::sync::Lock::new();
        let t = Instant::now();
        for _ in 0..n {
            lock.try_acquire()?;
            lock.release()?;
        }
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio try_acquire")
}

/// tokio's side of [`trio_lock`]: `Mutex::lock().await` and drop the guard.
fn tokio_mutex(n: usize) -> f64 {
    let rt = tokio_rt();
    rt.block_on(async {
        let m = tokio::sync::Mutex::new(0u64);
        let t = Instant::now();
        for _ in 0..n {
            let mut g = m.lock().await;
            *g += 1;
        }
        black_box(*m.lock().await);
        per_op(t.elapsed(), n)
    })
}

/// tokio's side of [`trio_lock_try`]: `Mutex::try_lock` and drop the guard.
fn tokio_mutex_try(n: usize) -> f64 {
    let rt = tokio_rt();
    rt.block_on(async {
        let m = tokio::sync::Mutex::new(0u64);
        let t = Instant::now();
        for _ in 0..n {
            let mut g = m.try_lock().expect("uncontended");
            *g += 1;
        }
        black_box(*m.lock().await);
        per_op(t.elapsed(), n)
    })
}

/// `to_thread::run_sync` of an empty closure, sequentially; ns per round trip.
fn trio_to_thread(n: usize) -> f64 {
    trio::run(async {
        trio::to_thread::run_sync(|| ()).await?; // start a worker
        let t = Instant::now();
        for _ in 0..n {
            trio::to_thread::run_sync(|| ()).await?;
        }
        Ok(per_op(t.elapsed(), n))
    })
    .expect("trio to_thread")
}

/// tokio's side of [`trio_to_thread`]: `spawn_blocking` of an empty closure.
fn tokio_spawn_blocking(n: usize) -> f64 {
    let rt = tokio_rt();
    rt.block_on(async {
        tokio::task::spawn_blocking(|| ()).await.expect("a blocking task"); // start a worker
        let t = Instant::now();
        for _ in 0..n {
            tokio::task::spawn_blocking(|| ()).await.expect("a blocking task");
        }
        per_op(t.elapsed(), n)
    })
}

/// Another thread asks the run to run a callback that answers it, and waits
/// for the answer; ns per round trip.
fn trio_run_sync_soon(n: usize) -> f64 {
    trio::run(async {
        let token = trio::lowlevel::current_trio_token()?;
        trio::to_thread::run_sync(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let t = Instant::now();
            for _ in 0..n {
                let tx = tx.clone();
                token.run_sync_soon(move || tx.send(()).expect("the thread waits")).expect("the run is alive");
                rx.recv().expect("an answer");
            }
            per_op(t.elapsed(), n)
        })
        .await
    })
    .expect("trio run_sync_soon")
}

/// tokio's side of [`trio_run_sync_soon`]: `Handle::spawn` of a task that
/// answers, from a blocking thread.
fn tokio_handle_spawn(n: usize) -> f64 {
    let rt = tokio_rt();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let t = Instant::now();
            for _ in 0..n {
                let tx = tx.clone();
                handle.spawn(async move { tx.send(()).expect("the thread waits") });
                rx.recv().expect("an answer");
            }
            per_op(t.elapsed(), n)
        })
        .await
        .expect("the blocking thread")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The record names, which the Python Trio results are matched against.
    pub(crate) const NAMES: &[&str] = &[
        "spawn+join 1k children",
        "spawn+join 100k children",
        "checkpoint: 1 task x 1M",
        "checkpoint: 1000 tasks x 1k",
        "deadline scope enter+exit, not firing",
        "100k deadlines firing",
        "ping-pong capacity 0",
        "ping-pong capacity 1",
        "uncontended lock acquire+release",
        "uncontended lock try_acquire+release",
        "to_thread round trip",
        "run_sync_soon from another thread",
    ];

    #[test]
    fn tiny_run_gives_every_record() {
        let records = run(Size::Tiny);
        let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, NAMES);
        for r in &records {
            assert_eq!((r.group, r.unit, r.higher_is_better), ("micro", "ns/op", false), "{}", r.name);
            assert!(r.trio.is_finite() && r.trio > 0.0, "{}: trio {}", r.name, r.trio);
            assert!(r.tokio.is_finite() && r.tokio > 0.0, "{}: tokio {}", r.name, r.tokio);
        }
    }

    /// `BENCH_PRINT=1 cargo test --release -p trio-bench --bin trio-bench
    /// micro::tests::quick -- --nocapture` prints the `--quick` figures.
    #[test]
    fn quick_figures_on_request() {
        if std::env::var_os("BENCH_PRINT").is_some_and(|v| v == "1") {
            let records = run(Size::Quick);
            assert_eq!(records.len(), NAMES.len());
        }
    }

    #[test]
    fn sizes() {
        let w = &WORKLOADS[0];
        assert_eq!(w.size(Size::Full), 100_000);
        assert_eq!(w.size(Size::Tiny), 100);
        let small = Workload { name: "x", passes: 1, n: 5000, quick_n: 5000, trio: trio_lock, tokio: tokio_mutex };
        assert_eq!(small.size(Size::Tiny), 10);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn profile_of_an_unknown_name_is_none() {
        assert!(profile_one("nope").is_none());
    }
}
