//! The memory benchmark: how much resident memory a parked task, and an idle
//! TCP connection with its task, cost on trio and on tokio's current-thread
//! runtime.
//!
//! Each figure comes from a fresh child process (this executable re-run with
//! the hidden flag `--memory-child WHAT KIND N`, handled by [`child_main`]),
//! so that the allocator starts clean and nothing measured before skews it:
//!
//! - `--memory-child tasks trio|tokio N`: inside a started run, the child
//!   reads its resident set size (`/proc/self/statm`), spawns `N` tasks that
//!   park forever (trio: `sleep_forever` in a nursery; tokio: `tokio::spawn`
//!   of `pending()`, the handle dropped), waits until every one has run and
//!   parked, reads its RSS again and prints `memory-report BEFORE AFTER N`
//!   (bytes), then tears down. (tokio's `pending()` registers nothing, while
//!   a trio task in `sleep_forever` is registered to be woken by
//!   cancellation: that registration is part of what a trio task costs.)
//! - `--memory-child conns trio|tokio N`: the child binds a listener on
//!   `127.0.0.1:0` (backlog: the system's maximum, on both runtimes) and
//!   prints `listening ADDR`, reads its RSS, accepts `N` connections, each
//!   handed to a task blocked receiving into a 64-byte buffer (the same on
//!   both sides), waits until all are parked, and prints the same report
//!   line. The parent opens the `N` connections (plain std sockets, kept
//!   open) between the two lines.
//!
//! Reported: (AFTER - BEFORE) / N, in bytes per task or per connection,
//! lower is better. The kernel's socket buffers are not in the RSS; the
//! figure is what the runtime and the task cost in user space.
//!
//! Every wait is bounded: the parent gives up on a child after a timeout
//! (and kills it), and a child exits on its own after [`CHILD_LIFETIME`].

use std::cell::Cell;
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::echo::raise_nofile;
use crate::echo::server::{ChildGuard, die_with_parent};
use crate::results::{Record, Size};

/// The hidden flag that makes this executable a measuring child.
pub(crate) const CHILD_FLAG: &str = "--memory-child";

/// The marker of the child's result line: `memory-report BEFORE AFTER N`.
const REPORT: &str = "memory-report ";

/// The marker of the connection child's address line.
const LISTENING: &str = "listening ";

/// A child that is still alive after this long exits on its own.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

/// How long the parent waits for a child's line before killing it.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a child waits for its tasks to park before giving up.
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// The record of the tasks workload.
const TASKS_NAME: &str = "RSS per sleeping task (100k tasks)";

/// The record of the connections workload.
const CONNS_NAME: &str = "RSS per idle connection (10k connections)";

/// Runs both memory workloads at `size`, prints the comparison and returns
/// it (group `"memory"`, lower is better). Full: 100k tasks and 10k
/// connections, median of 3 interleaved rounds; Quick: the same sizes, one
/// round; Tiny: 1k tasks and 100 connections, one round.
///
/// # Panics
/// If a child fails or stalls (after killing it).
pub(crate) fn run(size: Size) -> Vec<Record> {
    let (tasks, conns, rounds) = match size {
        Size::Full => (100_000, 10_000, 3),
        Size::Quick => (100_000, 10_000, 1),
        Size::Tiny => (1_000, 100, 1),
    };
    // The children inherit the limit: each side of every connection is a
    // descriptor.
    raise_nofile(conns as u64 + 256);
    println!();
    println!(
        "memory: resident set growth in a fresh child process, per task ({tasks} parked tasks) and per idle \
         connection ({conns} connections, each with a task blocked in receive); median of {rounds} round(s); \
         ratio = trio/tokio (below 1: trio is leaner)"
    );
    println!("{:<44} {:>12} {:>12} {:>8}", "workload", "trio", "tokio", "ratio");
    let mut records = Vec::new();
    for (name, what, n, unit) in
        [(TASKS_NAME, What::Tasks, tasks, "bytes/task"), (CONNS_NAME, What::Conns, conns, "bytes/conn")]
    {
        let mut got = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, kind) in ["trio", "tokio"].into_iter().enumerate() {
                let bytes = measure(what, kind, n).unwrap_or_else(|e| panic!("memory, {name}, {kind}: {e}"));
                got[i].push(bytes);
            }
        }
        let [a, b] = got;
        let record = Record::lower("memory", name, median(a), median(b), unit);
        println!("{:<44} {:>12.0} {:>12.0} {:>8.2}  {unit}", record.name, record.trio, record.tokio, record.ratio());
        records.push(record);
    }
    records
}

/// Which workload a child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// `N` parked tasks.
    Tasks,
    /// `N` idle connections, each with a task.
    Conns,
}

impl What {
    /// The word on the child's command line.
    fn word(self) -> &'static str {
        match self {
            What::Tasks => "tasks",
            What::Conns => "conns",
        }
    }
}

/// The median (the upper one of an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One child's figure: RSS growth per task or connection, in bytes.
fn measure(what: What, kind: &str, n: usize) -> io::Result<f64> {
    let count = n.to_string();
    let child = ChildProcess::spawn(&[CHILD_FLAG, what.word(), kind, &count])?;
    let mut conns = Vec::new();
    if what == What::Conns {
        let line = child.wait_for(LISTENING, LINE_TIMEOUT)?;
        let addr: SocketAddr =
            line.parse().map_err(|e| io::Error::other(format!("bad address line {line:?} from the child: {e}")))?;
        conns.reserve(n);
        for _ in 0..n {
            conns.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?);
        }
    }
    let line = child.wait_for(REPORT, LINE_TIMEOUT)?;
    let report = Report::parse(&line).ok_or_else(|| io::Error::other(format!("bad report line {line:?}")))?;
    if report.n != n as u64 {
        return Err(io::Error::other(format!("the child measured {} instead of {n}", report.n)));
    }
    // The child goes first: its side of each connection then holds the
    // TIME_WAIT, not our ephemeral ports.
    drop(child);
    drop(conns);
    Ok(report.per_item())
}

/// A child's result line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Report {
    /// RSS before the tasks, bytes.
    before: u64,
    /// RSS with every task parked, bytes.
    after: u64,
    /// How many tasks (or connections).
    n: u64,
}

impl Report {
    /// Parses what follows the marker: `BEFORE AFTER N`.
    fn parse(rest: &str) -> Option<Report> {
        let mut it = rest.split_whitespace().map(str::parse::<u64>);
        let mut next = || it.next()?.ok();
        let report = Report { before: next()?, after: next()?, n: next()? };
        (next().is_none() && report.n > 0).then_some(report)
    }

    /// The line the child prints.
    fn line(&self) -> String {
        format!("{REPORT}{} {} {}", self.before, self.after, self.n)
    }

    /// Bytes per task (negative if the RSS shrank).
    fn per_item(&self) -> f64 {
        (self.after as f64 - self.before as f64) / self.n as f64
    }
}

/// A child process of this executable, its stdout read line by line by a
/// thread (so that every wait can time out). Dropping it kills the child.
pub(crate) struct ChildProcess {
    /// The child's stdout lines.
    lines: mpsc::Receiver<String>,
    /// Kept open for the child's lifetime (an echo server exits when its
    /// stdin closes).
    _stdin: Option<ChildStdin>,
    /// Declared last: the pipes close before the kill.
    _child: ChildGuard,
}

impl ChildProcess {
    /// Starts this executable with `args` (under `cargo test`, the test
    /// binary running the test `memory::tests::child_entry` with them), stdin and
    /// stdout piped, stderr inherited; it dies with this process.
    pub(crate) fn spawn(args: &[&str]) -> io::Result<ChildProcess> {
        let mut cmd = self_command(args)?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = ChildGuard(cmd.spawn()?);
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Ends when the child's stdout closes (it exited or was killed).
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProcess { lines: rx, _stdin: stdin, _child: child })
    }

    /// Waits up to `timeout` for a line containing `marker` (other lines
    /// are skipped) and returns what follows the marker, trimmed.
    pub(crate) fn wait_for(&self, marker: &str, timeout: Duration) -> io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = after_marker(&line, marker) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no {:?} line from the child in {timeout:?}", marker.trim()),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the child exited before its {:?} line", marker.trim()),
                    ));
                }
            }
        }
    }
}

/// What follows `marker` in `line`, trimmed, if it is there (under `cargo
/// test` the test harness may print before it on the same line).
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

/// This executable with `args`.
#[cfg(not(test))]
fn self_command(args: &[&str]) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args);
    Ok(cmd)
}

/// Under `cargo test` the executable is the test harness: it runs only the
/// test `memory::tests::child_entry`, which reads `args` from the
/// environment variable `TRIO_BENCH_TEST_CHILD` and acts on them as `main`
/// would.
#[cfg(test)]
fn self_command(args: &[&str]) -> io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--exact", "memory::tests::child_entry", "--nocapture", "--test-threads=1", "-q"])
        .env(tests::CHILD_ENV, args.join("\n"));
    Ok(cmd)
}

/// The child's side: if `args` (the whole command line, or just the
/// arguments) hold `--memory-child WHAT KIND N`, runs that measurement,
/// prints its lines and returns true (`main` should then return). Returns
/// false, doing nothing, for any other command line. A child whose
/// measurement fails prints why on stderr and exits with status 1.
pub(crate) fn child_main(args: &[String]) -> bool {
    let Some(i) = args.iter().position(|a| a == CHILD_FLAG) else { return false };
    let usage = "usage: --memory-child tasks|conns trio|tokio N";
    let what = match args.get(i + 1).map(String::as_str) {
        Some("tasks") => What::Tasks,
        Some("conns") => What::Conns,
        _ => panic!("{usage}"),
    };
    let kind = args.get(i + 2).map(String::as_str).unwrap_or_default();
    let Some(n) = args.get(i + 3).and_then(|n| n.parse::<usize>().ok()).filter(|&n| n > 0) else { panic!("{usage}") };
    // The watchdog: a child the parent forgot ends anyway.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        eprintln!("memory child: still running after {CHILD_LIFETIME:?}; exiting");
        std::process::exit(2);
    });
    if what == What::Conns {
        raise_nofile(n as u64 + 256);
    }
    let result = match (what, kind) {
        (What::Tasks, "trio") => trio_tasks(n),
        (What::Tasks, "tokio") => tokio_tasks(n),
        (What::Conns, "trio") => trio_conns(n),
        (What::Conns, "tokio") => tokio_conns(n),
        _ => panic!("{usage}"),
    };
    if let Err(e) = result {
        eprintln!("memory child ({} {kind} {n}): {e}", what.word());
        std::process::exit(1);
    }
    true
}

/// The page size, bytes.
fn page_size() -> u64 {
    // SAFETY: `sysconf` has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// The resident pages in the text of `/proc/self/statm` (its second field).
fn parse_statm(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// This process's resident set size, bytes.
fn rss_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages = parse_statm(&statm).ok_or_else(|| io::Error::other(format!("bad /proc/self/statm {statm:?}")))?;
    Ok(pages * page_size())
}

/// Prints a line on stdout and flushes it (the parent is waiting for it).
fn say(line: &str) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The error of a child whose tasks did not all park in time.
fn not_parked(parked: usize, n: usize) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("only {parked} of {n} tasks parked within {PARK_TIMEOUT:?}"))
}

/// `--memory-child tasks trio N`.
fn trio_tasks(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let report = trio::run(async move {
        let parked = Cell::new(0usize);
        let parked = &parked;
        let after = Cell::new(0u64);
        let before = rss_bytes()?;
        trio::open_nursery(async |nursery| {
            for _ in 0..n {
                nursery.spawn(async move {
                    parked.set(parked.get() + 1);
                    trio::sleep_forever().await.map(|_| ())
                });
            }
            trio_wait_parked(parked, n).await?;
            after.set(rss_bytes()?);
            nursery.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(Report { before, after: after.get(), n: n as u64 })
    })?;
    say(&report.line());
    Ok(())
}

/// Waits until every task of the run is blocked (the runtime knows; no
/// polling), bounded by [`PARK_TIMEOUT`] on the run's clock, and checks that
/// all `n` tasks counted themselves (each does, just before it parks).
async fn trio_wait_parked(parked: &Cell<usize>, n: usize) -> trio::Result<()> {
    match trio::move_on_after(PARK_TIMEOUT, trio::testing::wait_all_tasks_blocked(Duration::ZERO)).await? {
        Some(()) if parked.get() == n => Ok(()),
        _ => Err(not_parked(parked.get(), n).into()),
    }
}

/// Yields until `parked` reaches `n`, bounded by [`PARK_TIMEOUT`] (tokio's
/// current-thread scheduler runs a few dozen tasks per yield of the
/// `block_on` future).
async fn tokio_wait_parked(parked: &AtomicUsize, n: usize) -> io::Result<()> {
    let start = Instant::now();
    while parked.load(Ordering::Relaxed) < n {
        if start.elapsed() > PARK_TIMEOUT {
            return Err(not_parked(parked.load(Ordering::Relaxed), n));
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// `--memory-child tasks tokio N`.
fn tokio_tasks(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let report = rt.block_on(async move {
        let parked = Arc::new(AtomicUsize::new(0));
        let before = rss_bytes()?;
        for _ in 0..n {
            let parked = Arc::clone(&parked);
            drop(tokio::spawn(async move {
                parked.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }));
        }
        tokio_wait_parked(&parked, n).await?;
        let after = rss_bytes()?;
        io::Result::Ok(Report { before, after, n: n as u64 })
    })?;
    say(&report.line());
    Ok(())
}

/// Where the connection children listen.
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// `--memory-child conns trio N`.
fn trio_conns(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    use trio::abc::{Listener, ReceiveStream};
    let report = trio::run(async move {
        let listener = trio::net::TcpListener::bind(LOOPBACK)?;
        say(&format!("{LISTENING}{}", listener.local_addr()?));
        let parked = Cell::new(0usize);
        let parked = &parked;
        let after = Cell::new(0u64);
        let before = rss_bytes()?;
        trio::open_nursery(async |nursery| {
            for _ in 0..n {
                let stream = listener.accept().await?;
                nursery.spawn(async move {
                    let mut buf = [0u8; 64];
                    parked.set(parked.get() + 1);
                    // The parent sends nothing: this waits until the end.
                    let _ = stream.receive_some(&mut buf).await;
                    Ok(())
                });
            }
            trio_wait_parked(parked, n).await?;
            after.set(rss_bytes()?);
            nursery.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(Report { before, after: after.get(), n: n as u64 })
    })?;
    say(&report.line());
    Ok(())
}

/// `--memory-child conns tokio N`.
fn tokio_conns(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let report = rt.block_on(async move {
        // The backlog of trio's default (the system's maximum): tokio's
        // `bind` asks for 1024, which the parent's connect loop overruns,
        // and each overflow costs a 1 s SYN retransmission.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(LOOPBACK)?;
        let listener = socket.listen(65535)?;
        say(&format!("{LISTENING}{}", listener.local_addr()?));
        let parked = Arc::new(AtomicUsize::new(0));
        let before = rss_bytes()?;
        for _ in 0..n {
            let (mut stream, _) = listener.accept().await?;
            let parked = Arc::clone(&parked);
            drop(tokio::spawn(async move {
                let mut buf = [0u8; 64];
                parked.fetch_add(1, Ordering::Relaxed);
                // The parent sends nothing: this waits until the end.
                let _ = stream.read(&mut buf).await;
            }));
        }
        tokio_wait_parked(&parked, n).await?;
        let after = rss_bytes()?;
        io::Result::Ok(Report { before, after, n: n as u64 })
    })?;
    say(&report.line());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Under `cargo test`, the arguments of a child (one per line).
    pub(crate) const CHILD_ENV: &str = "TRIO_BENCH_TEST_CHILD";

    /// The entry point of children under `cargo test` (see
    /// [`self_command`]): with [`CHILD_ENV`] set, acts on its arguments as
    /// `main` would (`--memory-child ...`, or `--serve KIND ADDR`); without
    /// it, passes at once.
    #[test]
    fn child_entry() {
        let Ok(args) = std::env::var(CHILD_ENV) else { return };
        let args: Vec<String> = args.lines().map(str::to_owned).collect();
        if child_main(&args) {
            return;
        }
        match args.as_slice() {
            [flag, kind, addr] if flag == "--serve" => crate::echo::server::serve(kind, addr),
            _ => panic!("unknown child arguments {args:?}"),
        }
    }

    #[test]
    fn report_lines_round_trip() {
        let r = Report { before: 4096, after: 4096 + 300_000, n: 1000 };
        let line = r.line();
        assert_eq!(line, "memory-report 4096 304096 1000");
        assert_eq!(after_marker(&line, REPORT).and_then(Report::parse), Some(r));
        assert_eq!(r.per_item(), 300.0);
        // The test harness may print before the marker.
        let noisy = format!("test memory::tests::child_entry ... {line}");
        assert_eq!(after_marker(&noisy, REPORT).and_then(Report::parse), Some(r));
        assert_eq!(Report::parse("1 2"), None);
        assert_eq!(Report::parse("1 2 3 4"), None);
        assert_eq!(Report::parse("1 2 0"), None);
        assert_eq!(Report::parse("1 x 3"), None);
        assert_eq!(Report { before: 10, after: 0, n: 5 }.per_item(), -2.0);
    }

    #[test]
    fn statm_second_field_is_resident_pages() {
        assert_eq!(parse_statm("2530 1234 567 1 0 300 0\n"), Some(1234));
        assert_eq!(parse_statm("2530"), None);
        assert_eq!(parse_statm(""), None);
        assert!(rss_bytes().expect("/proc/self/statm") > 0);
    }

    #[test]
    fn child_main_ignores_other_command_lines() {
        assert!(!child_main(&["trio-bench".to_owned(), "--quick".to_owned()]));
        assert!(!child_main(&[]));
    }

    #[test]
    fn tiny_run_gives_both_records() {
        let records = run(Size::Tiny);
        let got: Vec<(&str, &str)> = records.iter().map(|r| (r.name.as_str(), r.unit)).collect();
        assert_eq!(got, [(TASKS_NAME, "bytes/task"), (CONNS_NAME, "bytes/conn")]);
        for r in &records {
            assert_eq!((r.group, r.higher_is_better), ("memory", false));
            // 1k tasks may fit in memory the allocator already had: the
            // figure can be 0, but it is a number.
            assert!(r.trio.is_finite() && r.tokio.is_finite(), "{r:?}");
        }
    }

    /// `BENCH_PRINT=1 cargo test --release -p trio-bench --bin trio-bench
    /// memory::tests::quick -- --nocapture` prints the `--quick` figures.
    #[test]
    fn quick_figures_on_request() {
        if std::env::var_os("BENCH_PRINT").is_some_and(|v| v == "1") {
            assert_eq!(run(Size::Quick).len(), 2);
        }
    }
}
