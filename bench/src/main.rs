//! The benchmark suite: `trio` against tokio's current-thread runtime (and,
//! for the micro workloads, Python Trio), each workload on both in the same
//! run, interleaved, several rounds; the median figure of each and the
//! ratio (trio/tokio for times and sizes, tokio/trio for rates, so below 1
//! always means trio is faster or leaner).
//!
//! Parts, in order: `micro` (spawn, checkpoints, deadlines, channels,
//! locks, threads; see `micro.rs`), `python` (the same micro workloads on
//! Python Trio, in a venv; `python.rs`), `echo` (each runtime's TCP echo
//! server in a child process driven by one load client; `echo.rs`),
//! `connect` (connect + one message + close per second; `connect.rs`),
//! `fairness` (an idle connection's round trip, and a new connection's first
//! echo, while busy connections stream at full speed; `fairness.rs`),
//! `memory` (RSS per sleeping task and per idle connection, each measured
//! in a fresh child process; `memory.rs`), `tls` (handshakes and bulk;
//! `tls.rs`), and, only with `--only wasi`, the echo server as a WASI
//! component against the same code built natively (`wasi_echo.rs`).
//!
//! `cargo run -p trio-bench --release -- --help` lists the options:
//! `--quick` (under 2 minutes), `--tiny` (a smoke test), `--json PATH`,
//! `--report DIR` (Markdown and PNG charts, see `report.rs`), `--only
//! PART`, `--syscalls`, `--instructions` (callgrind counts per operation,
//! `instructions.rs`). `docs/PERFORMANCE.md` says what is measured and
//! why.

mod affinity;
mod args;
mod connect;
mod echo;
mod fairness;
mod instructions;
mod memory;
mod micro;
mod python;
mod report;
mod results;
mod tls;
mod wasi_echo;

use std::path::Path;
use std::time::Instant;

use args::{Mode, Options};
use results::{Record, Size};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if memory::child_main(&argv) {
        return;
    }
    let mode = match args::parse(&argv) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("trio-bench: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    match mode {
        Mode::Help => println!("{}", args::USAGE),
        Mode::Serve { kind, addr } => echo::server::serve(&kind, &addr),
        Mode::Load(rest) => echo::load_only(&rest),
        Mode::CountOne(rest) => instructions::count_one(&rest),
        Mode::Profile(name) => match micro::profile_one(&name) {
            Some(ns) => println!("{name}: {ns:.1} ns/op"),
            None => unreachable!("args::parse accepts only the names in args::PROFILES"),
        },
        Mode::Suite(opts) => suite(&opts, &argv),
    }
}

/// Runs the parts `opts` asks for, prints a summary, and writes the JSON
/// and the report if asked.
fn suite(opts: &Options, argv: &[String]) {
    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let timed = |name: &str, t: Instant| println!("({name}: {:.1} s)", t.elapsed().as_secs_f64());
    if opts.runs("micro") {
        let t = Instant::now();
        records.extend(micro::run(opts.size));
        timed("micro", t);
    }
    if opts.runs("python") {
        let t = Instant::now();
        python_part(opts.size, &mut records);
        timed("python", t);
    }
    if opts.runs("echo") {
        let t = Instant::now();
        let tracer = opts.syscalls.as_ref().map(|t| echo::Tracer::pick(t.as_deref()));
        records.extend(echo::run(&echo::Plan::new(opts.size), tracer));
        timed("echo", t);
    }
    if opts.runs("connect") {
        let t = Instant::now();
        records.extend(connect::run(opts.size));
        timed("connect", t);
    }
    if opts.runs("fairness") {
        let t = Instant::now();
        let tracer = opts.syscalls.as_ref().map(|t| echo::Tracer::pick(t.as_deref()));
        records.extend(fairness::run(&fairness::Plan::new(opts.size), tracer));
        timed("fairness", t);
    }
    if opts.runs("memory") {
        let t = Instant::now();
        records.extend(memory::run(opts.size));
        timed("memory", t);
    }
    if opts.runs("tls") {
        let t = Instant::now();
        records.extend(tls::run(&tls::Plan::new(opts.size)));
        timed("tls", t);
    }
    if opts.runs("instructions") {
        let t = Instant::now();
        records.extend(instructions::run(opts.size));
        timed("instructions", t);
    }
    if opts.runs("wasi") {
        // WASI against native, not trio against tokio: printed only.
        wasi_echo::run(opts.size != Size::Full);
    }
    if !records.is_empty() {
        print_summary(&records);
    }
    println!("(all: {:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = &opts.json {
        write_or_exit(path, results::to_json(&records).as_bytes());
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &opts.report {
        let meta = report::Meta {
            date: today(),
            machine: machine(),
            size: opts.size,
            command: std::iter::once("trio-bench").chain(argv.iter().map(String::as_str)).collect::<Vec<_>>().join(" "),
        };
        if let Err(e) = report::write_report(dir, &records, &meta) {
            eprintln!("trio-bench: writing the report into {}: {e}", dir.display());
            std::process::exit(1);
        }
        println!("wrote {}/README.md and its charts", dir.display());
    }
}

/// The micro workloads on Python Trio, attached to our records and printed
/// beside them; a loud skip if Python Trio cannot be had.
fn python_part(size: Size, records: &mut [Record]) {
    let figures = match python::run(size) {
        Ok(f) => f,
        Err(why) => {
            println!("SKIPPED: Python Trio ({why})");
            return;
        }
    };
    python::attach(records, &figures);
    println!("{:<40} {:>12} {:>14} {:>12}", "workload", "trio ns/op", "Python ns/op", "Python/trio");
    for r in records.iter().filter(|r| r.python_trio.is_some()) {
        let p = r.python_trio.unwrap_or(f64::NAN);
        println!("{:<40} {:>12.1} {:>14.1} {:>11.1}x", r.name, r.trio, p, p / r.trio);
    }
}

fn write_or_exit(path: &Path, bytes: &[u8]) {
    let made = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    };
    if let Err(e) = made.and_then(|()| std::fs::write(path, bytes)) {
        eprintln!("trio-bench: writing {}: {e}", path.display());
        std::process::exit(1);
    }
}

/// Every record in one table, with its ratio.
fn print_summary(records: &[Record]) {
    println!();
    println!("summary (ratio below 1: trio is faster or leaner)");
    println!("{:<66} {:>12} {:>12} {:>14} {:>7}", "workload", "trio", "tokio", "unit", "ratio");
    for r in records {
        println!("{:<66} {:>12.1} {:>12.1} {:>14} {:>7.2}", r.name, r.trio, r.tokio, r.unit, r.ratio());
    }
    let better = records.iter().filter(|r| r.ratio() <= 1.0).count();
    println!("trio is as fast or leaner in {better} of {} workloads", records.len());
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The machine, for the report: cores, CPU model, kernel.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| std::env::consts::OS.to_owned(), |k| format!("Linux {}", k.trim()));
    format!("{cores} cores, {cpu}, {kernel}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(super::civil_from_days(20_785), (2026, 11, 28));
    }
}
