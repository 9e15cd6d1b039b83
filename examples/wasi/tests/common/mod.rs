//! What the guest tests share: building a guest for a WASI target, finding
//! what runs it (the project's host, the wasmtime 46 CLI), running it with
//! its output collected, and a few loopback helpers.
//!
//! Each test binary uses a part of this (`mod common;`), hence the
//! `dead_code` allowance.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on every socket read and write, and on the guests' exits.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a guest may take to start listening or connecting (the runtime
/// compiles it first, on a busy machine).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on building a guest (cargo may wait for a lock).
pub(crate) const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);

/// The workspace root. The manifest directory is read when the test runs
/// (cargo and nextest set it): the compile-time value goes stale when a
/// cached target directory is reused by a clone in another folder.
pub(crate) fn workspace() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
}

pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace().join(d), // `join` keeps an absolute path as is
        _ => workspace().join("target"),
    }
}

/// Builds guest `bin` of this package for `target` (`wasm32-wasip1`,
/// `wasm32-wasip2`) with `cargo build` into [`target_dir`]; its path.
///
/// Each (bin, target) is built once per test binary, and one build at a
/// time: the lock is held across the build, so parallel tests wait for it
/// rather than start a second cargo. (Other test binaries running at the
/// same time are serialised by cargo's own lock on the target directory.)
pub(crate) fn build_guest(bin: &str, target: &str) -> PathBuf {
    /// The result of each build: the guest's path or what went wrong.
    type Builds = BTreeMap<(String, String), Result<PathBuf, String>>;
    static BUILT: Mutex<Builds> = Mutex::new(BTreeMap::new());
    // A panic never happens with the lock held, but a poisoned lock is
    // still usable: the map only ever holds finished results.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let result = built.entry((bin.to_owned(), target.to_owned())).or_insert_with(|| cargo_build(bin, target));
    match result {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn cargo_build(bin: &str, target: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["build", "-q", "-p", "trio-wasi-examples", "--bin", bin, "--target", target])
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let status = wait_timeout(&mut child, BUILD_TIMEOUT).ok_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        format!("building {bin} for {target} took more than {BUILD_TIMEOUT:?}")
    })?;
    if !status.success() {
        return Err(format!("building {bin} for {target} failed: {status}"));
    }
    Ok(target_dir().join(target).join("debug").join(format!("{bin}.wasm")))
}

/// `None` (after a loud message) if a runtime is missing and
/// `TRIO_ALLOW_SKIP=1`; otherwise a panic with `why` and `how` to get it.
fn missing<T>(why: &str, how: &str) -> Option<T> {
    if std::env::var("TRIO_ALLOW_SKIP").as_deref() == Ok("1") {
        // Straight to the descriptor: the test harness captures `eprintln!`.
        let test = env!("CARGO_CRATE_NAME");
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: WASI guest tests ({test}): {why} ***\n");
        return None;
    }
    panic!("{why}; {how}, or set TRIO_ALLOW_SKIP=1 to skip");
}

/// The wasmtime 46 CLI (it can preopen listeners for preview 1 modules),
/// or `None` if it is missing and skipping is allowed.
pub(crate) fn wasmtime46() -> Option<PathBuf> {
    let path = match std::env::var_os("TRIO_WASMTIME46") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/trio-ci/tools/wasmtime-46.0.3/bin/wasmtime"),
    };
    if path.is_file() {
        return Some(path);
    }
    missing(
        &format!("the wasmtime 46 CLI is not at {} (TRIO_WASMTIME46 overrides the path)", path.display()),
        "`.ci/run` installs it (cargo install --locked wasmtime-cli --version 46.0.3 --root \
         ~/.cache/trio-ci/tools/wasmtime-46.0.3)",
    )
}

/// What runs the guests under the project's host.
pub(crate) enum Runner {
    /// The project's host: `run GUEST [--listen ADDR] [--connect ADDR] -- ARGS`.
    Host(PathBuf),
    /// A wasmtime CLI (development only, `TRIO_P2_WASMTIME=PATH`): all of
    /// the network or none, and no report of denials on its stderr.
    Wasmtime(PathBuf),
}

impl Runner {
    /// `TRIO_P2_WASMTIME` if set, else the host
    /// (`$CARGO_TARGET_DIR/wasi-host/trio-wasi-host` or `TRIO_WASI_HOST`),
    /// or `None` if it is missing and skipping is allowed.
    pub(crate) fn find() -> Option<Runner> {
        if let Some(p) = std::env::var_os("TRIO_P2_WASMTIME") {
            return Some(Runner::Wasmtime(PathBuf::from(p)));
        }
        let path = match std::env::var_os("TRIO_WASI_HOST") {
            Some(p) => PathBuf::from(p),
            None => target_dir().join("wasi-host/trio-wasi-host"),
        };
        if path.is_file() {
            return Some(Runner::Host(path));
        }
        missing(
            &format!("the trio-wasi-host binary is not at {} (TRIO_WASI_HOST overrides the path)", path.display()),
            "`.ci/run` builds it (cargo build -p trio-wasi-host --profile wasi-host)",
        )
    }

    pub(crate) fn is_host(&self) -> bool {
        matches!(self, Runner::Host(_))
    }

    /// The command running `guest` with `args`; `allow` is what the host's
    /// policy grants, as flag and address (`("--listen", "127.0.0.1:0")`,
    /// `("--connect", ...)`). wasmtime gets the whole network if `allow` is
    /// not empty, none otherwise.
    pub(crate) fn command(&self, guest: &Path, allow: &[(&str, &str)], args: &[&str]) -> Command {
        match self {
            Runner::Host(host) => {
                let mut cmd = Command::new(host);
                cmd.arg("run").arg(guest);
                for (flag, addr) in allow {
                    cmd.args([flag, addr]);
                }
                cmd.arg("--").args(args);
                cmd
            }
            Runner::Wasmtime(wasmtime) => {
                let mut cmd = Command::new(wasmtime);
                cmd.args(["run", "-Stcp"]);
                if !allow.is_empty() {
                    cmd.arg("-Sinherit-network");
                }
                cmd.arg(guest).args(args);
                cmd
            }
        }
    }
}

/// Waits for `child` at most `timeout`; `None` if it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running guest whose output is collected by threads; killed when
/// dropped (so a failing test leaves no process behind).
pub(crate) struct Guest {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Guest {
    /// Starts `cmd` with `stdin` and its stdout and stderr collected.
    pub(crate) fn spawn(cmd: &mut Command, stdin: Stdio) -> Guest {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), stdout.clone()),
            collect(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Guest { child, stdout, stderr, readers }
    }

    /// Runs `cmd` (stdin empty) to its exit, bounded; the guest, for its
    /// output, and the status.
    pub(crate) fn run(cmd: &mut Command) -> (Guest, ExitStatus) {
        let mut guest = Guest::spawn(cmd, Stdio::null());
        let status = guest.wait();
        (guest, status)
    }

    /// The guest's stdin, if it was started with `Stdio::piped()`.
    pub(crate) fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped")
    }

    pub(crate) fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Both outputs, for failure messages.
    pub(crate) fn output(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout(), self.stderr())
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded) for the exit and the end of the output.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        let Some(status) = wait_timeout(&mut self.child, IO_TIMEOUT) else {
            panic!("the guest did not exit within {IO_TIMEOUT:?}\n{}", self.output());
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// Waits (bounded) for `listening on 127.0.0.1:PORT`; the port.
    pub(crate) fn listening_port(&mut self) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.stdout();
            let port = out.lines().find_map(|l| l.strip_prefix("listening on 127.0.0.1:")).and_then(|p| p.parse().ok());
            if let Some(port) = port {
                return port;
            }
            if let Some(status) = self.exited() {
                let _ = self.wait();
                panic!("the guest exited ({status}) before listening\n{}", self.output());
            }
            if Instant::now() >= deadline {
                panic!("the guest did not listen within {START_TIMEOUT:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Bounds `s`'s reads and writes by [`IO_TIMEOUT`].
pub(crate) fn timeouts(s: &TcpStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
}

/// Connects to `127.0.0.1:port`, with [`timeouts`].
pub(crate) fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the guest");
    timeouts(&s);
    s
}

/// Sends `msg` and checks that it comes back.
pub(crate) fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// Sends 1 MiB from a thread while this one reads the echo back.
pub(crate) fn echo_1mib(s: &mut TcpStream) -> usize {
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = s.try_clone().expect("clone");
    let to_send = big.clone();
    let w = std::thread::spawn(move || writer.write_all(&to_send));
    let mut back = vec![0u8; big.len()];
    s.read_exact(&mut back).expect("read the 1 MiB echo");
    w.join().expect("writer").expect("write 1 MiB");
    assert!(back == big, "the 1 MiB echo differs");
    big.len()
}

pub(crate) fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).expect("read EOF"), 0, "expected end of stream");
}

/// Half-closes `s` right after sending `tail`: the echo of `tail` must still
/// arrive, then the end of stream (the guest saw ours and closed).
pub(crate) fn half_close_with(s: &mut TcpStream, tail: &[u8]) {
    s.write_all(tail).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the rest and the end of stream");
    assert_eq!(back, tail, "after the half-close");
}

/// Checks that a guest run ended in a denial: a failure status, `guest_line`
/// on the guest's stderr, and (under the host) the host's own report of the
/// denial on the same stderr, a line with "access denied" that is not the
/// guest's.
pub(crate) fn assert_denied(runner: &Runner, guest: &Guest, status: ExitStatus, guest_line: &str) {
    let (stderr, out) = (guest.stderr(), guest.output());
    assert!(!status.success(), "the guest did not fail ({status})\n{out}");
    assert!(stderr.contains(guest_line), "no `{guest_line}` from the guest\n{out}");
    if runner.is_host() {
        let host_said = stderr.lines().any(|l| l.contains("access denied") && !l.contains(guest_line));
        assert!(host_said, "the host did not report the denial on its stderr\n{out}");
    }
}
