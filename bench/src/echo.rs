//! The echo benchmark: trio's TCP echo server against tokio's
//! current-thread one, each in its own process, driven over loopback by the
//! same load client in this process (one epoll loop, one message in flight
//! per connection).
//!
//! For each case and server: start the server, open the connections, warm
//! up (until every connection has done a round trip), then one measured
//! window bracketed by the server's `getrusage` (taken while nothing is in
//! flight, so every round trip counted is wholly inside). With
//! `--syscalls`, more windows: one under perf stat or strace to count
//! system calls, and with perf one under `perf record` whose samples split
//! the CPU time into user and kernel more finely than the kernel's tick
//! does. Reported: round trips per second, p99 round-trip latency, the
//! server's CPU time per round trip (total, user, sys), its voluntary
//! context switches per round trip (how often it slept in `epoll_wait`),
//! and its system calls per round trip. Medians over the rounds (CPU time
//! pooled); ratios are trio/tokio.
//!
//! For profiling, the two halves run on their own too:
//! `trio-bench --serve trio 127.0.0.1:9000` (prints `listening ADDR`) and
//! `trio-bench --load 127.0.0.1:9000 CONNS SIZE SECONDS`, with for example
//! `perf record -g -p PID` on the server.

pub(crate) mod load;
pub(crate) mod server;
pub(crate) mod syscalls;

use std::io;
use std::time::Duration;

use load::Load;

use crate::results::{Record, Size};
use server::{Kind, Rusage, ServerProcess};
use syscalls::Counts;
pub(crate) use syscalls::Tracer;

/// How much to run.
pub(crate) struct Plan {
    conns: &'static [usize],
    sizes: &'static [usize],
    warmup: Duration,
    window: Duration,
    syscall_window: Duration,
    rounds: usize,
}

impl Plan {
    pub(crate) fn new(size: Size) -> Plan {
        if size == Size::Tiny {
            return Plan {
                conns: &[1, 10],
                sizes: &[64],
                warmup: Duration::from_millis(50),
                window: Duration::from_millis(200),
                syscall_window: Duration::from_millis(100),
                rounds: 1,
            };
        }
        if size == Size::Quick {
            Plan {
                conns: &[1, 100],
                sizes: &[64, 4096],
                warmup: Duration::from_millis(200),
                window: Duration::from_millis(1000),
                syscall_window: Duration::from_millis(300),
                rounds: 1,
            }
        } else {
            Plan {
                conns: &[1, 100, 1000],
                sizes: &[64, 4096],
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(2000),
                syscall_window: Duration::from_millis(500),
                rounds: 3,
            }
        }
    }
}

/// One server's figures in one case (one round).
#[derive(Clone, Debug, Default)]
struct Sample {
    msgs_per_sec: f64,
    p99_ns: f64,
    /// Round trips in the measured window, and the server's usage in it.
    round_trips: u64,
    used: Rusage,
    /// Per round trip: total and breakdown.
    syscalls: Option<(f64, Vec<(String, f64)>)>,
    /// The share of the server's CPU time spent in user space, from perf's
    /// samples.
    sampled_user_share: Option<f64>,
}

fn run_case(
    kind: Kind,
    conns: usize,
    size: usize,
    plan: &Plan,
    tracer: Option<Tracer>,
    server_cpu: Option<usize>,
) -> io::Result<Sample> {
    let mut server = ServerProcess::spawn_on(kind, server_cpu)?;
    let mut load = Load::connect(server.addr, conns, size)?;
    load.run(plan.warmup, true)?;
    let before = server.rusage()?;
    let mut phase = load.run(plan.window, false)?;
    let used = server.rusage()?.since(before);
    let mut sample = Sample {
        msgs_per_sec: phase.round_trips as f64 / phase.elapsed.as_secs_f64(),
        p99_ns: phase.quantile(0.99) as f64,
        round_trips: phase.round_trips,
        used,
        syscalls: None,
        sampled_user_share: None,
    };
    if let Some(tracer) = tracer {
        let pid = server.pid();
        let (counts, phase) = syscalls::count(tracer, pid, || load.run(plan.syscall_window, false))?;
        let rts = phase.round_trips.max(1) as f64;
        let Counts { total, by_call } = counts;
        sample.syscalls =
            Some((total as f64 / rts, by_call.into_iter().map(|(name, n)| (name, n as f64 / rts)).collect()));
        if tracer == Tracer::Perf {
            let ((user, kernel), _) = syscalls::sample_user_kernel(pid, || load.run(plan.syscall_window, false))?;
            // Sampling slows the server down (more CPU per round trip), so
            // only the user share is taken from it, and applied to the
            // exact CPU time of the unperturbed window.
            sample.sampled_user_share = Some(user as f64 / (user + kernel).max(1) as f64);
        }
    }
    // The server goes first: its side of each connection then holds the
    // TIME_WAIT, not our ephemeral ports (a full run opens ~13k connections).
    drop(server);
    drop(load);
    Ok(sample)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One server's figures in one case, over all rounds.
struct Summary {
    msgs_per_sec: f64,
    p99_ns: f64,
    user_ns_per_rt: f64,
    sys_ns_per_rt: f64,
    csw_per_rt: f64,
    syscalls: Option<(f64, Vec<(String, f64)>)>,
    /// User CPU ns per round trip: the sampled user share of the exact total.
    sampled_user_ns_per_rt: Option<f64>,
}

/// Medians of the rates and latencies; CPU time pooled over the rounds
/// (all the time over all the round trips: more ticks, less noise); the
/// syscall breakdown of the first round (the only one traced).
fn summarize(samples: &[Sample]) -> Summary {
    let rts = samples.iter().map(|s| s.round_trips).sum::<u64>().max(1) as f64;
    let per_rt = |f: fn(&Rusage) -> u64| samples.iter().map(|s| f(&s.used)).sum::<u64>() as f64 / rts;
    let total_per_rt = per_rt(|u| u.user_ns + u.sys_ns);
    Summary {
        msgs_per_sec: median(samples.iter().map(|s| s.msgs_per_sec).collect()),
        p99_ns: median(samples.iter().map(|s| s.p99_ns).collect()),
        user_ns_per_rt: per_rt(|u| u.user_ns),
        sys_ns_per_rt: per_rt(|u| u.sys_ns),
        csw_per_rt: per_rt(|u| u.vol_csw),
        syscalls: samples.iter().find_map(|s| s.syscalls.clone()),
        sampled_user_ns_per_rt: samples.iter().find_map(|s| s.sampled_user_share).map(|share| share * total_per_rt),
    }
}

/// Lets this process (and the servers, which inherit it) open enough
/// descriptors for the largest case.
pub(crate) fn raise_nofile(needed: u64) {
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && (lim.rlim_cur as u64) < needed {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 || (lim.rlim_cur as u64) < needed {
                eprintln!("warning: RLIMIT_NOFILE is {} (< {needed}); the largest case may fail", lim.rlim_cur);
            }
        }
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) { format!("{} KiB", size / 1024) } else { format!("{size} B") }
}

/// Runs the echo cases of `plan`, prints the comparison and returns it.
pub(crate) fn run(plan: &Plan, tracer: Option<Result<Tracer, String>>) -> Vec<Record> {
    let mut records = Vec::new();
    let max_conns = plan.conns.iter().copied().max().unwrap_or(1) as u64;
    raise_nofile(max_conns * 2 + 256);
    let tracer = match tracer {
        Some(Ok(t)) => Some(t),
        Some(Err(why)) => {
            println!("(--syscalls: {why}; system calls are n/a)");
            None
        }
        None => None,
    };
    println!();
    println!(
        "echo over loopback TCP: server in its own process (one task per connection, 16 KiB buffer, TCP_NODELAY); \
         one load client, one message in flight per connection; {:.1} s windows, median of {} round(s); \
         ratio = trio/tokio",
        plan.window.as_secs_f64(),
        plan.rounds
    );
    println!(
        "CPU: the server's getrusage over the window, pooled over the rounds; user+sys is exact, but the kernel \
         splits it into user and sys by sampling at its tick (tick accounting), so the user figures are rough"
    );
    match tracer {
        Some(t) => {
            println!("system calls: {}, separate {:.1} s window", t.name(), plan.syscall_window.as_secs_f64());
            if t == Tracer::Perf {
                println!(
                    "user (sampled): the user share of perf record -e cpu-clock samples (one per 100 µs of the server's \
                     CPU) in another {:.1} s window, times the exact CPU per round trip above",
                    plan.syscall_window.as_secs_f64()
                );
            }
        }
        None => println!("system calls: n/a (run with --syscalls, needs perf or strace)"),
    }
    // With two CPUs or more: the server on one, this load client on another.
    let cpus = crate::affinity::allowed_cpus();
    let (server_cpu, _pinned) = if cpus.len() >= 2 {
        println!("pinned: the server on CPU {}, the load client on CPU {}", cpus[1], cpus[0]);
        (Some(cpus[1]), Some(crate::affinity::PinnedThread::new(cpus[0])))
    } else {
        println!("not pinned: one CPU");
        (None, None)
    };
    // Where io_uring is here: trio on it and monoio, in the same rounds.
    let kinds: Vec<Kind> = if server::uring_here() {
        println!("io_uring: trio on its io_uring driver and monoio are measured in the same rounds");
        vec![Kind::Trio, Kind::Tokio, Kind::TrioUring, Kind::Monoio]
    } else {
        println!("io_uring: not available here, trio on epoll and tokio only");
        vec![Kind::Trio, Kind::Tokio]
    };
    println!("{:<20} {:<26} {:>12} {:>12} {:>8}", "case", "metric (server side)", "trio", "tokio", "ratio");
    for &conns in plan.conns {
        for &size in plan.sizes {
            let mut got: Vec<Vec<Sample>> = vec![Vec::new(); kinds.len()];
            for round in 0..plan.rounds {
                for (i, &kind) in kinds.iter().enumerate() {
                    let t = if round == 0 { tracer } else { None };
                    let s = run_case(kind, conns, size, plan, t, server_cpu)
                        .unwrap_or_else(|e| panic!("echo {}, {conns} conn x {size} B: {e}", kind.name()));
                    got[i].push(s);
                }
            }
            let sums: Vec<Summary> = got.iter().map(|g| summarize(g)).collect();
            let case = format!("{conns} conn x {}", size_name(size));
            print_case(&case, &sums[0], &sums[1]);
            records.extend(case_records("echo", &case, &sums[0], &sums[1]));
            if let [_, tokio, trio_uring, monoio] = &sums[..] {
                let case = format!("{case} (trio on io_uring)");
                print_case(&format!("{case} vs tokio"), trio_uring, tokio);
                print_case(&format!("{case} vs monoio"), trio_uring, monoio);
                let vs_monoio = case_records("echo-uring", &case, trio_uring, monoio);
                let mut rows = case_records("echo-uring", &case, trio_uring, tokio);
                for (r, m) in rows.iter_mut().zip(&vs_monoio) {
                    if r.name == m.name {
                        r.monoio = Some(m.tokio);
                    }
                }
                records.extend(rows);
            }
        }
    }
    records
}

/// The records of one case: the rate, the p99 latency, and the server's
/// CPU time and system calls per round trip (the figures to judge by).
fn case_records(group: &'static str, case: &str, a: &Summary, b: &Summary) -> Vec<Record> {
    let mut v = vec![
        Record::higher(group, format!("echo {case}: round trips"), a.msgs_per_sec, b.msgs_per_sec, "msgs/s"),
        Record::lower(group, format!("echo {case}: p99 latency"), a.p99_ns / 1e3, b.p99_ns / 1e3, "µs"),
        Record::lower(
            group,
            format!("echo {case}: server CPU per round trip"),
            a.user_ns_per_rt + a.sys_ns_per_rt,
            b.user_ns_per_rt + b.sys_ns_per_rt,
            "ns/rt",
        ),
    ];
    match (a.sampled_user_ns_per_rt, b.sampled_user_ns_per_rt) {
        (Some(x), Some(y)) => {
            v.push(Record::lower(
                group,
                format!("echo {case}: server user CPU per round trip (sampled)"),
                x,
                y,
                "ns/rt",
            ));
        }
        _ => v.push(Record::lower(
            group,
            format!("echo {case}: server user CPU per round trip (tick split)"),
            a.user_ns_per_rt,
            b.user_ns_per_rt,
            "ns/rt",
        )),
    }
    if let (Some((x, _)), Some((y, _))) = (&a.syscalls, &b.syscalls) {
        v.push(Record::lower(group, format!("echo {case}: server system calls per round trip"), *x, *y, "syscalls/rt"));
    }
    v
}

fn print_case(case: &str, a: &Summary, b: &Summary) {
    let row = |case: &str, metric: &str, x: f64, y: f64, prec: usize| {
        let ratio = if y > 0.0 { format!("{:.2}", x / y) } else { "-".to_owned() };
        println!("{case:<20} {metric:<26} {x:>12.prec$} {y:>12.prec$} {ratio:>8}");
    };
    row(case, "msgs/s (higher: faster)", a.msgs_per_sec, b.msgs_per_sec, 0);
    row("", "p99 round trip µs", a.p99_ns / 1e3, b.p99_ns / 1e3, 1);
    row("", "CPU ns / rt (user+sys)", a.user_ns_per_rt + a.sys_ns_per_rt, b.user_ns_per_rt + b.sys_ns_per_rt, 0);
    row("", "  user ns / rt (tick split)", a.user_ns_per_rt, b.user_ns_per_rt, 0);
    row("", "  sys ns / rt (tick split)", a.sys_ns_per_rt, b.sys_ns_per_rt, 0);
    if let (Some(x), Some(y)) = (a.sampled_user_ns_per_rt, b.sampled_user_ns_per_rt) {
        row("", "  user ns / rt (sampled)", x, y, 0);
    }
    row("", "sleeps / rt (vol. csw)", a.csw_per_rt, b.csw_per_rt, 3);
    match (&a.syscalls, &b.syscalls) {
        (Some((x, xs)), Some((y, ys))) => {
            row("", "syscalls / rt", *x, *y, 2);
            let list = |v: &[(String, f64)]| {
                v.iter().filter(|(_, n)| *n >= 0.005).map(|(c, n)| format!("{c} {n:.2}")).collect::<Vec<_>>().join(", ")
            };
            println!("{:<20}   trio:  {}", "", list(xs));
            println!("{:<20}   tokio: {}", "", list(ys));
        }
        _ => println!("{:<20} {:<26} {:>12} {:>12} {:>8}", "", "syscalls / rt", "n/a", "n/a", "-"),
    }
}

/// `--load ADDR CONNS SIZE SECONDS`: drives a server started by hand and
/// prints the client's view (a profiling aid).
pub(crate) fn load_only(args: &[String]) {
    let usage = "usage: --load ADDR CONNS SIZE SECONDS";
    let [addr, conns, size, secs] = args else { panic!("{usage}") };
    let (Ok(addr), Ok(conns), Ok(size), Ok(secs)) =
        (addr.parse(), conns.parse::<usize>(), size.parse::<usize>(), secs.parse::<f64>())
    else {
        panic!("{usage}")
    };
    raise_nofile(conns as u64 + 256);
    let mut load = Load::connect(addr, conns, size).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let mut phase = load.run(Duration::from_secs_f64(secs), true).unwrap_or_else(|e| panic!("echo load: {e}"));
    let (p50, p99) = (phase.quantile(0.5) as f64 / 1e3, phase.quantile(0.99) as f64 / 1e3);
    println!(
        "{} round trips in {:.2} s: {:.0}/s, p50 {p50:.1} µs, p99 {p99:.1} µs",
        phase.round_trips,
        phase.elapsed.as_secs_f64(),
        phase.round_trips as f64 / phase.elapsed.as_secs_f64(),
    );
}
