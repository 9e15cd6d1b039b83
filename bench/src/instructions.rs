//! `--instructions`: user-space instructions per operation, counted by
//! callgrind (valgrind), for the micro workloads and the echo server, on
//! trio and on tokio's current-thread runtime. Unlike wall-clock figures,
//! these counts do not move with the machine's load, so they are the ones
//! to track from change to change (the wall-clock ratios stay beside them).
//!
//! Each figure is a difference of two runs of the same program that differ
//! only in the number of operations, so start-up and tear-down cancel out:
//!
//! - a micro workload runs in a child process (`--count-one`) under
//!   callgrind, once with `n` and once with `2n` operations:
//!   `(I(2n) - I(n)) / (n × passes)`;
//! - an echo server runs under callgrind (`--serve`), driven by the
//!   uninstrumented load client for a window and, in a second server, for a
//!   window twice as long: `(I₂ - I₁) / (round trips₂ - round trips₁)`.
//!
//! Threads (the `to_thread` and `run_sync_soon` workloads) are counted
//! whole: every thread of the process, serialized by valgrind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::echo::load::Load;
use crate::echo::server::{ChildGuard, Kind, die_with_parent};
use crate::micro::WORKLOADS;
use crate::results::{Record, Size};

/// Whether valgrind's callgrind can run here: its version, or why not.
fn valgrind() -> Result<String, String> {
    let out = Command::new("valgrind").arg("--version").output().map_err(|e| format!("valgrind: {e}"))?;
    if !out.status.success() {
        return Err(format!("valgrind --version: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The instructions callgrind counted, from its log (`Collected : N`).
fn collected(log: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    text.lines()
        .find_map(|l| l.split("Collected :").nth(1).and_then(|n| n.trim().parse().ok()))
        .ok_or_else(|| format!("no \"Collected\" line in {}:\n{text}", log.display()))
}

/// A callgrind command for this program with `args`, logging to `log`.
fn callgrind(log: &Path, args: &[&str]) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(format!("--log-file={}", log.display()))
        .arg(exe)
        .args(args);
    Ok(cmd)
}

/// A temporary log file path for one callgrind run.
fn log_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("trio-bench-callgrind-{}-{tag}.log", std::process::id()))
}

/// Instructions of one `--count-one` run of workload `index` on `side`
/// with `n` operations.
fn count_micro(side: &str, index: usize, n: usize) -> Result<u64, String> {
    let log = log_path(&format!("{side}-{index}-{n}"));
    let status = callgrind(&log, &["--count-one", side, &index.to_string(), &n.to_string()])?
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running valgrind: {e}"))?;
    let count = collected(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        return Err(format!("{side} workload {index} under callgrind: {status}"));
    }
    count
}

/// `--count-one trio|tokio INDEX N`: one call of a micro workload (the
/// child side of [`count_micro`]).
pub(crate) fn count_one(args: &[String]) {
    let usage = "usage: --count-one trio|tokio INDEX N";
    let [side, index, n] = args else { panic!("{usage}") };
    let (Ok(index), Ok(n)) = (index.parse::<usize>(), n.parse::<usize>()) else { panic!("{usage}") };
    let w = WORKLOADS.get(index).unwrap_or_else(|| panic!("{usage}: no workload {index}"));
    let f = match side.as_str() {
        "trio" => w.trio,
        "tokio" => w.tokio,
        _ => panic!("{usage}"),
    };
    std::hint::black_box(f(n));
}

/// The operations per counted call: the workload's full size over
/// `divisor` (a smaller count keeps callgrind's 20-50× slowdown in check;
/// the "100k" workloads keep their size, which is what they measure).
fn micro_n(name: &str, full: usize, size: Size) -> usize {
    match size {
        Size::Tiny => 20,
        _ if name.contains("100k") => full,
        Size::Quick => (full / 100).max(100),
        Size::Full => (full / 20).max(100),
    }
}

/// Echo: instructions of a `kind` server under callgrind while the load
/// client runs `conns` connections for `secs`, and the round trips.
fn count_echo(kind: Kind, conns: usize, secs: f64) -> Result<(u64, u64), String> {
    let log = log_path(&format!("echo-{}-{conns}-{secs}", kind.name()));
    let mut cmd = callgrind(&log, &["--serve", kind.name(), "127.0.0.1:0"])?;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let mut child = ChildGuard(cmd.spawn().map_err(|e| format!("running valgrind: {e}"))?);
    let stdin = child.0.stdin.take();
    let mut stdout = BufReader::new(child.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| format!("reading the server's address: {e}"))?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{} server under callgrind said {line:?}", kind.name()))?;
    let round_trips = {
        let mut load = Load::connect(addr, conns, 64).map_err(|e| format!("connecting to {addr}: {e}"))?;
        load.run(Duration::from_secs_f64(secs), true).map_err(|e| format!("echo load: {e}"))?.round_trips
    };
    // The server exits when its control pipe closes; callgrind then writes
    // its totals.
    drop(stdin);
    let status = child.0.wait().map_err(|e| format!("waiting for valgrind: {e}"))?;
    let count = collected(&log);
    let _ = std::fs::remove_file(&log);
    if !status.success() {
        return Err(format!("{} echo server under callgrind: {status}", kind.name()));
    }
    Ok((count?, round_trips))
}

/// Instructions per round trip of `kind`'s echo server at `conns`.
fn echo_per_rt(kind: Kind, conns: usize, secs: f64) -> Result<f64, String> {
    let (i1, r1) = count_echo(kind, conns, secs)?;
    let (i2, r2) = count_echo(kind, conns, 2.0 * secs)?;
    if r2 <= r1 {
        return Err(format!("the longer window did fewer round trips ({r2} against {r1})"));
    }
    Ok((i2 as f64 - i1 as f64) / (r2 - r1) as f64)
}

/// Runs the part: one record per workload (group `"instructions"`, unit
/// `"instr/op"`, lower is better), or a loud skip without valgrind.
pub(crate) fn run(size: Size) -> Vec<Record> {
    let version = match valgrind() {
        Ok(v) => v,
        Err(why) => {
            println!("SKIPPED: instruction counts ({why}; install valgrind)");
            return Vec::new();
        }
    };
    println!();
    println!(
        "instructions per operation ({version}, callgrind; the difference of two runs, n and 2n operations, \
         so start-up cancels out); ratio = trio/tokio"
    );
    println!("{:<52} {:>12} {:>12} {:>8}", "workload", "trio", "tokio", "ratio");
    let mut records = Vec::new();
    let mut push = |name: String, trio: Result<f64, String>, tokio: Result<f64, String>| match (trio, tokio) {
        (Ok(a), Ok(b)) => {
            let r = Record::lower("instructions", name, a, b, "instr/op");
            println!("{:<52} {:>12.0} {:>12.0} {:>8.2}", r.name, r.trio, r.tokio, r.ratio());
            records.push(r);
        }
        (Err(e), _) | (_, Err(e)) => println!("FAILED: {name}: {e}"),
    };
    for (index, w) in WORKLOADS.iter().enumerate() {
        let n = micro_n(w.name, w.n, size);
        let per_op = |side: &str| -> Result<f64, String> {
            let one = count_micro(side, index, n)?;
            let two = count_micro(side, index, 2 * n)?;
            Ok((two as f64 - one as f64) / (n * w.passes) as f64)
        };
        push(w.name.to_owned(), per_op("trio"), per_op("tokio"));
    }
    let secs = match size {
        Size::Full => 2.0,
        Size::Quick => 1.0,
        Size::Tiny => 0.2,
    };
    for conns in [1, 100] {
        let name = format!("echo {conns} conn{} x 64 B: server, per round trip", if conns == 1 { "" } else { "s" });
        push(name, echo_per_rt(Kind::Trio, conns, secs), echo_per_rt(Kind::Tokio, conns, secs));
    }
    records
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_collected_line_is_read() {
        let dir = std::env::temp_dir().join(format!("trio-bench-cg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        std::fs::write(&log, "==12== Callgrind, a call-graph generating cache profiler\n==12== \n==12== Events    : Ir\n==12== Collected : 123456789\n==12== \n==12== I   refs:      123,456,789\n").unwrap();
        assert_eq!(super::collected(&log), Ok(123_456_789));
        std::fs::write(&log, "nothing here\n").unwrap();
        assert!(super::collected(&log).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_keep_the_100k_workloads_whole() {
        use crate::results::Size;
        assert_eq!(super::micro_n("100k deadlines firing", 100_000, Size::Quick), 100_000);
        assert_eq!(super::micro_n("checkpoint: 1 task x 1M", 1_000_000, Size::Quick), 10_000);
        assert_eq!(super::micro_n("checkpoint: 1 task x 1M", 1_000_000, Size::Full), 50_000);
        assert_eq!(super::micro_n("anything", 1_000_000, Size::Tiny), 20);
    }
}
