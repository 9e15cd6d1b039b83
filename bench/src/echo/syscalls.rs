//! Counting the server's system calls over a window (`--syscalls`): those
//! of a server process (the echo part) or of one server thread (the
//! fairness part, whose servers run in this process).
//!
//! Preferred: `perf stat` on the syscall tracepoints, attached to the
//! server with its events disabled and switched on and off over a control
//! FIFO, so the window is exact and the server runs at nearly full speed.
//! Fallback: `strace -c -f -p PID`, attached before the window and
//! interrupted after it; ptrace slows every call down by microseconds, so
//! with many connections the server finds more events per `epoll_wait`
//! than it would untraced (the per-message calls are still right).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{ChildGuard, die_with_parent};

/// The calls worth naming in the breakdown (when their tracepoints exist);
/// the rest is summed as "other".
const NAMED: &[&str] = &[
    "read",
    "write",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "readv",
    "writev",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "accept4",
    "futex",
    "sched_yield",
    "clock_nanosleep",
    "ioctl",
    "poll",
    "ppoll",
];

/// How the calls are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tracer {
    Perf,
    Strace,
}

impl Tracer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tracer::Perf => "perf stat (syscall tracepoints)",
            Tracer::Strace => "strace -c -f",
        }
    }

    /// The tracer to use: `want` names one (`perf`, `strace`), or `None`
    /// picks perf if it can count syscall tracepoints here, else strace if
    /// installed. `Err` says why neither works.
    pub(crate) fn pick(want: Option<&str>) -> Result<Tracer, String> {
        let perf_ok = || {
            Command::new("perf")
                .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let strace_ok = || {
            Command::new("strace")
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match want {
            Some("perf") if perf_ok() => Ok(Tracer::Perf),
            Some("perf") => Err("`perf stat -e raw_syscalls:sys_enter` does not work here".into()),
            Some("strace") if strace_ok() => Ok(Tracer::Strace),
            Some("strace") => Err("strace is not installed".into()),
            Some(other) => Err(format!("unknown tracer {other:?} (perf or strace)")),
            None if perf_ok() => Ok(Tracer::Perf),
            None if strace_ok() => Ok(Tracer::Strace),
            None => Err("neither perf (with syscall tracepoints) nor strace is available".into()),
        }
    }
}

/// System calls made during a window.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    /// Per call, largest first (`other` for the calls not named).
    pub(crate) by_call: Vec<(String, u64)>,
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("trio-bench-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn interrupt(child: &ChildGuard) {
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGINT);
    }
}

/// Waits for the child to exit, up to `limit`; `false` if it did not.
fn wait_exit(child: &mut ChildGuard, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.0.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Whose system calls are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A process, all its threads (perf's and strace's `-p`, strace with `-f`).
    Process(u32),
    /// One thread of this or another process, by its kernel thread id
    /// (perf's `-t`, strace's `-p` without `-f`).
    Thread(u32),
}

impl Target {
    fn perf_args(self) -> [String; 2] {
        match self {
            Target::Process(pid) => ["-p".to_owned(), pid.to_string()],
            Target::Thread(tid) => ["-t".to_owned(), tid.to_string()],
        }
    }

    fn strace_args(self) -> Vec<String> {
        match self {
            Target::Process(pid) => vec!["-f".to_owned(), "-p".to_owned(), pid.to_string()],
            Target::Thread(tid) => vec!["-p".to_owned(), tid.to_string()],
        }
    }
}

/// Counts the system calls of process `pid` (all its threads) while
/// `window` runs; `window`'s value is passed through.
pub(crate) fn count<T>(tracer: Tracer, pid: u32, window: impl FnOnce() -> io::Result<T>) -> io::Result<(Counts, T)> {
    count_target(tracer, Target::Process(pid), window)
}

/// Counts the system calls of `target` while `window` runs; `window`'s
/// value is passed through.
pub(crate) fn count_target<T>(
    tracer: Tracer,
    target: Target,
    window: impl FnOnce() -> io::Result<T>,
) -> io::Result<(Counts, T)> {
    match tracer {
        Tracer::Perf => count_perf(target, window),
        Tracer::Strace => count_strace(target, window),
    }
}

fn tracepoint_dir() -> Option<PathBuf> {
    ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
}

/// Runs `perf ARGS` attached to nothing yet (the caller's `args` include
/// `-p PID`), with its events switched on only while `window` runs.
fn perf_window<T>(dir: &TempDir, args: &[String], window: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let (ctl_path, ack_path) = (dir.0.join("ctl"), dir.0.join("ack"));
    mkfifo(&ctl_path)?;
    mkfifo(&ack_path)?;
    let mut cmd = Command::new("perf");
    cmd.args(&args[..1])
        .args(["-D", "-1"])
        .arg("--control")
        .arg(format!("fifo:{},{}", ctl_path.display(), ack_path.display()))
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    // Opened read-write, the FIFOs never block on open and never see EOF.
    let mut ctl = fs::OpenOptions::new().read(true).write(true).open(&ctl_path)?;
    let ack = fs::OpenOptions::new().read(true).write(true).open(&ack_path)?;
    let mut perf = ChildGuard(cmd.spawn()?);
    let mut command = |what: &str, perf: &mut ChildGuard| -> io::Result<()> {
        ctl.write_all(format!("{what}\n").as_bytes())?;
        wait_ack(&ack, perf, what)
    };
    command("enable", &mut perf)?;
    let value = window()?;
    command("disable", &mut perf)?;
    interrupt(&perf);
    if !wait_exit(&mut perf, Duration::from_secs(20)) {
        return Err(io::Error::other(format!("perf {} did not exit after SIGINT", args[0])));
    }
    Ok(value)
}

fn count_perf<T>(target: Target, window: impl FnOnce() -> io::Result<T>) -> io::Result<(Counts, T)> {
    let dir = TempDir::new("perf-stat")?;
    let out_path = dir.0.join("out");
    let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
    if let Some(tp) = tracepoint_dir() {
        for name in NAMED {
            if tp.join(format!("sys_enter_{name}")).is_dir() {
                events.push(format!("syscalls:sys_enter_{name}"));
            }
        }
    }
    let [who, id] = target.perf_args();
    let args =
        ["stat", "-x,", "-o", &out_path.display().to_string(), "-e", &events.join(","), &who, &id].map(str::to_owned);
    let value = perf_window(&dir, &args, window)?;
    let text = fs::read_to_string(&out_path)?;
    Ok((parse_perf(&text)?, value))
}

/// CPU time of process `pid` while `window` runs, split into user and
/// kernel by sampling: `perf record` on the `cpu-clock` software event,
/// one sample per `SAMPLE_NS` of the process's CPU time (about 10 kHz while
/// it is busy, against the kernel tick's 250 Hz). Returns (user ns,
/// kernel ns) and `window`'s value. Only with perf.
pub(crate) fn sample_user_kernel<T>(pid: u32, window: impl FnOnce() -> io::Result<T>) -> io::Result<((u64, u64), T)> {
    const SAMPLE_NS: u64 = 100_000;
    let dir = TempDir::new("perf-record")?;
    let data = dir.0.join("perf.data");
    let args = [
        "record",
        "-q",
        "-e",
        "cpu-clock",
        "-c",
        &SAMPLE_NS.to_string(),
        "-o",
        &data.display().to_string(),
        "-p",
        &pid.to_string(),
    ]
    .map(str::to_owned);
    let value = perf_window(&dir, &args, window)?;
    let out = Command::new("perf")
        .args(["script", "-F", "ip", "-i"])
        .arg(&data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let (mut user, mut kernel) = (0u64, 0u64);
    for ip in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        // Kernel text is in the upper half of the address space.
        match u64::from_str_radix(ip, 16) {
            Ok(a) if a >> 63 == 1 => kernel += 1,
            Ok(_) => user += 1,
            Err(_) => {}
        }
    }
    if user + kernel == 0 {
        return Err(io::Error::other("perf record took no samples"));
    }
    Ok(((user * SAMPLE_NS, kernel * SAMPLE_NS), value))
}

/// Waits (up to 10 s) for perf's `ack` line on the ack FIFO.
fn wait_ack(mut ack: &fs::File, perf: &mut ChildGuard, what: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let until = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    // perf writes "ack\n" and, as it sends `sizeof` the tag, a NUL.
    while !got.windows(4).any(|w| w == b"ack\n") {
        if let Ok(Some(status)) = perf.0.try_wait() {
            return Err(io::Error::other(format!("perf stat exited ({status}) before acknowledging {what:?}")));
        }
        if Instant::now() >= until {
            return Err(io::Error::other(format!("perf stat did not acknowledge {what:?}")));
        }
        let mut pfd = libc::pollfd { fd: ack.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
            let mut buf = [0u8; 64];
            let n = ack.read(&mut buf)?;
            got.extend_from_slice(&buf[..n]);
        }
    }
    Ok(())
}

/// Parses `perf stat -x,` output: `COUNT,UNIT,EVENT,...` lines.
fn parse_perf(text: &str) -> io::Result<Counts> {
    let mut total = None;
    let mut by_call = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let Ok(n) = f[0].trim().parse::<u64>() else { continue };
        if f[2] == "raw_syscalls:sys_enter" {
            total = Some(n);
        } else if let Some(name) = f[2].strip_prefix("syscalls:sys_enter_") {
            by_call.push((name.to_owned(), n));
        }
    }
    let total = total.ok_or_else(|| io::Error::other(format!("no syscall total in perf's output:\n{text}")))?;
    Ok(finish(total, by_call))
}

/// Sorts the named calls and adds `other` for the rest.
fn finish(total: u64, mut by_call: Vec<(String, u64)>) -> Counts {
    by_call.retain(|(_, n)| *n > 0);
    by_call.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named: u64 = by_call.iter().map(|(_, n)| n).sum();
    if total > named {
        by_call.push(("other".to_owned(), total - named));
    }
    Counts { total, by_call }
}

fn count_strace<T>(target: Target, window: impl FnOnce() -> io::Result<T>) -> io::Result<(Counts, T)> {
    let dir = TempDir::new("strace")?;
    let out_path = dir.0.join("out");
    let mut cmd = Command::new("strace");
    cmd.args(["-c", "-o"])
        .arg(&out_path)
        .args(target.strace_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut strace = ChildGuard(cmd.spawn()?);
    // "strace: Process N attached [with M threads]" once every thread is.
    let mut err = BufReader::new(strace.0.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            return Err(io::Error::other("strace exited before attaching"));
        }
        if line.contains("attached") {
            break;
        }
    }
    // Keep draining its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || io::copy(&mut err, &mut io::sink()));
    std::thread::sleep(Duration::from_millis(50));
    let value = window()?;
    interrupt(&strace);
    if !wait_exit(&mut strace, Duration::from_secs(10)) {
        return Err(io::Error::other("strace did not exit after SIGINT"));
    }
    let text = fs::read_to_string(&out_path)?;
    Ok((parse_strace(&text)?, value))
}

/// Parses the table of `strace -c`:
/// `% time  seconds  usecs/call  calls  [errors]  syscall`, then `total`.
fn parse_strace(text: &str) -> io::Result<Counts> {
    let mut total = None;
    let mut by_call = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !(5..=6).contains(&f.len()) || f[0].parse::<f64>().is_err() {
            continue;
        }
        let (Ok(calls), Some(name)) = (f[3].parse::<u64>(), f.last()) else { continue };
        if *name == "total" {
            total = Some(calls);
        } else {
            by_call.push((name.to_string(), calls));
        }
    }
    let total = total.ok_or_else(|| io::Error::other(format!("no total in strace's summary:\n{text}")))?;
    Ok(finish(total, by_call))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strace_summary() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
            ------ ----------- ----------- --------- --------- ----------------\n \
            60.00    0.000600           6       100           sendto\n \
            30.00    0.000300           3       100        10 recvfrom\n \
            10.00    0.000100           1        50           epoll_wait\n\
            ------ ----------- ----------- --------- --------- ----------------\n\
            100.00    0.001000           4       250        10 total\n";
        let c = parse_strace(text).unwrap();
        assert_eq!(c.total, 250);
        assert_eq!(c.by_call[0], ("recvfrom".to_owned(), 100));
        assert_eq!(c.by_call[2], ("epoll_wait".to_owned(), 50));
    }

    #[test]
    fn parses_perf_csv() {
        let text = "# started on ...\n\n1000,,raw_syscalls:sys_enter,200,100.00,,\n\
            400,,syscalls:sys_enter_sendto,200,100.00,,\n\
            <not counted>,,syscalls:sys_enter_futex,0,0,,\n\
            350,,syscalls:sys_enter_recvfrom,200,100.00,,\n";
        let c = parse_perf(text).unwrap();
        assert_eq!(c.total, 1000);
        assert_eq!(c.by_call, vec![("sendto".into(), 400), ("recvfrom".into(), 350), ("other".into(), 250)]);
    }
}
