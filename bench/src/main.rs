//! Benchmarks of `trio` against tokio's current-thread runtime.
//!
//! Micro-benchmarks run in the same process, interleaved, several rounds;
//! they print the median ns per operation and the ratio trio/tokio (below 1
//! means trio is faster). Then the echo benchmark (see `echo.rs`): each
//! runtime's TCP echo server in a child process, driven by one load client.
//! Then the TLS benchmark (see `tls.rs`): full TLS 1.3 handshakes per second
//! and a 1 MiB bulk transfer, trio's `TlsStream` against tokio-rustls, both
//! ends on the runtime under test.
//!
//! `cargo run -p trio-bench --release` runs everything. Options:
//! - `--quick`: fewer rounds, shorter windows, echo with 1 and 100
//!   connections only, fewer handshakes and transfers;
//! - `--only echo`, `--only tls`, `--only wasi`: only that benchmark (`wasi`:
//!   the echo server as a wasip2 component in `trio-wasi-host` against the same
//!   source built natively; see `wasi_echo.rs` for the builds it needs); `--only spawn|checkpoint|
//!   pingpong|lock|child`: one trio micro-benchmark once (a profiling aid);
//! - `--syscalls[=perf|strace]`: also count the echo servers' system calls
//!   per round trip (perf stat if it works, else strace; otherwise n/a);
//!   with perf, also split their CPU time into user and kernel by sampling
//!   (finer than the kernel's tick-based split in `getrusage`).
//!
//! `--serve trio|tokio ADDR` is how the echo benchmark starts its server
//! processes; with `--load ADDR CONNS SIZE SECONDS` the two halves can be
//! run by hand, for profiling (see `echo.rs`).

#[allow(dead_code, reason = "the runner uses it next")]
mod args;
mod echo;
#[allow(dead_code, reason = "the runner collects these next")]
mod results;
mod tls;
mod wasi_echo;

use std::hint::black_box;
use std::time::Instant;

/// Spawn+join of `n` trivial children, timed inside a run that already
/// spawned a warm-up batch (so the slabs are grown, as in a long-lived server).
fn trio_spawn_join(n: usize) -> f64 {
    trio::run(async {
        let mut ns = 0.0;
        for round in 0..2 {
            let t = Instant::now();
            trio::open_nursery(async |nursery| {
                for _ in 0..n {
                    nursery.spawn(async { Ok(()) });
                }
                Ok(())
            })
            .await?;
            if round == 1 {
                ns = t.elapsed().as_nanos() as f64 / n as f64;
            }
        }
        Ok(ns)
    })
    .unwrap()
}

fn tokio_spawn_join(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut ns = 0.0;
        for round in 0..2 {
            let t = Instant::now();
            let mut handles = Vec::with_capacity(n);
            for _ in 0..n {
                handles.push(tokio::task::spawn_local(async {}));
            }
            for h in handles {
                h.await.unwrap();
            }
            if round == 1 {
                ns = t.elapsed().as_nanos() as f64 / n as f64;
            }
        }
        ns
    })
}

fn trio_checkpoints(n: usize) -> f64 {
    let t = Instant::now();
    trio::run(async {
        for _ in 0..n {
            trio::checkpoint().await?;
        }
        Ok(())
    })
    .unwrap();
    t.elapsed().as_nanos() as f64 / n as f64
}

fn tokio_yields(n: usize) -> f64 {
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    });
    t.elapsed().as_nanos() as f64 / n as f64
}

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
    .unwrap();
    t.elapsed().as_nanos() as f64 / n as f64
}

fn tokio_yields_in_task(n: usize) -> f64 {
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        tokio::task::spawn_local(async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    });
    t.elapsed().as_nanos() as f64 / n as f64
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
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    })
    .unwrap()
}

fn trio_ping_pong_0(n: usize) -> f64 {
    trio_ping_pong(0, n)
}

fn trio_ping_pong_1(n: usize) -> f64 {
    trio_ping_pong(1, n)
}

fn tokio_ping_pong(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u32>(1);
        let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u32>(1);
        let t = Instant::now();
        let b = tokio::task::spawn_local(async move {
            while let Some(v) = from_a.recv().await {
                to_a.send(v + 1).await.unwrap();
            }
        });
        for i in 0..n as u32 {
            to_b.send(i).await.unwrap();
            black_box(from_b.recv().await.unwrap());
        }
        drop(to_b);
        b.await.unwrap();
        t.elapsed().as_nanos() as f64 / n as f64
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
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    })
    .unwrap()
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
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    })
    .unwrap()
}

fn tokio_mutex(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let m = tokio::sync::Mutex::new(0u64);
        let t = Instant::now();
        for _ in 0..n {
            let mut g = m.lock().await;
            *g += 1;
        }
        black_box(*m.lock().await);
        t.elapsed().as_nanos() as f64 / n as f64
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
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    })
    .unwrap()
}

fn tokio_spawn_blocking(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        tokio::task::spawn_blocking(|| ()).await.unwrap();
        let t = Instant::now();
        for _ in 0..n {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        t.elapsed().as_nanos() as f64 / n as f64
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
                token.run_sync_soon(move || tx.send(()).unwrap()).unwrap();
                rx.recv().unwrap();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .await
    })
    .unwrap()
}

fn tokio_handle_spawn(n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let handle = rt.handle().clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let t = Instant::now();
            for _ in 0..n {
                let tx = tx.clone();
                handle.spawn(async move { tx.send(()).unwrap() });
                rx.recv().unwrap();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .await
        .unwrap()
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Workload {
    name: &'static str,
    n: usize,
    trio: fn(usize) -> f64,
    tokio: fn(usize) -> f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        match (args.get(i + 1), args.get(i + 2)) {
            (Some(kind), Some(addr)) => echo::server::serve(kind, addr),
            _ => panic!("usage: --serve trio|tokio ADDR"),
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        echo::load_only(args.get(i + 1..).unwrap_or_default());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let tracer = args.iter().find_map(|a| match a.as_str() {
        "--syscalls" => Some(echo::Tracer::pick(None)),
        _ => a.strip_prefix("--syscalls=").map(|t| echo::Tracer::pick(Some(t))),
    });
    let size = if quick { results::Size::Quick } else { results::Size::Full };
    let echo_plan = echo::Plan::new(size);
    let tls_plan = tls::Plan::new(size);
    if let Some(only) = args.iter().skip_while(|a| *a != "--only").nth(1) {
        if only == "echo" {
            let _ = echo::run(&echo_plan, tracer);
            return;
        }
        if only == "tls" {
            let _ = tls::run(&tls_plan);
            return;
        }
        if only == "wasi" {
            wasi_echo::run(quick);
            return;
        }
        // Profiling aid: one trio workload, once.
        let r = match only.as_str() {
            "spawn" => trio_spawn_join(100_000),
            "checkpoint" => trio_checkpoints(1_000_000),
            "pingpong" => trio_ping_pong_1(200_000),
            "lock" => trio_lock(1_000_000),
            _ => trio_checkpoints_in_child(1_000_000),
        };
        println!("{only}: {r:.1} ns/op");
        return;
    }
    micro(quick);
    let _ = echo::run(&echo_plan, tracer);
    let _ = tls::run(&tls_plan);
}

fn micro(quick: bool) {
    let rounds = if quick { 3 } else { 9 };
    let workloads = [
        Workload { name: "spawn+join 100k children", n: 100_000, trio: trio_spawn_join, tokio: tokio_spawn_join },
        Workload { name: "checkpoint x1M (main task)", n: 1_000_000, trio: trio_checkpoints, tokio: tokio_yields },
        Workload {
            name: "checkpoint x1M (child task)",
            n: 1_000_000,
            trio: trio_checkpoints_in_child,
            tokio: tokio_yields_in_task,
        },
        Workload { name: "ping-pong cap 0 (tokio cap 1)", n: 200_000, trio: trio_ping_pong_0, tokio: tokio_ping_pong },
        Workload { name: "ping-pong cap 1", n: 200_000, trio: trio_ping_pong_1, tokio: tokio_ping_pong },
        Workload { name: "lock acquire+release", n: 1_000_000, trio: trio_lock, tokio: tokio_mutex },
        Workload { name: "lock try_acquire+release", n: 1_000_000, trio: trio_lock_try, tokio: tokio_mutex },
        Workload {
            name: "to_thread (tokio spawn_blocking)",
            n: 20_000,
            trio: trio_to_thread,
            tokio: tokio_spawn_blocking,
        },
        Workload {
            name: "run_sync_soon (tokio Handle::spawn)",
            n: 20_000,
            trio: trio_run_sync_soon,
            tokio: tokio_handle_spawn,
        },
    ];
    println!("{:<32} {:>12} {:>12} {:>8}", "workload", "trio ns/op", "tokio ns/op", "ratio");
    for w in &workloads {
        // Warm up both sides once, then interleave the rounds.
        black_box((w.trio)(w.n / 10));
        black_box((w.tokio)(w.n / 10));
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..rounds {
            a.push((w.trio)(w.n));
            b.push((w.tokio)(w.n));
        }
        let (ta, tb) = (median(a), median(b));
        println!("{:<32} {:>12.1} {:>12.1} {:>8.2}", w.name, ta, tb, ta / tb);
    }
}
