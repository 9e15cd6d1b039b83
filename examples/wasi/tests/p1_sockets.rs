//! The WASI preview 1 guests under the wasmtime 46 CLI, driven from here
//! over loopback and pipes (this test itself runs natively).
//!
//! - `echo_server` with a preopened listener (`-Spreview2=n
//!   -Stcplisten=127.0.0.1:PORT --connections 3`): small and 1 MiB echoes,
//!   two connections open at once, clients that half-close, and a clean exit
//!   with `served 3 connections`.
//! - `p1_stdio_echo`: stdin copied to stdout through `trio::stdio` while a
//!   timer ticks; the ticks prove that waiting for stdin does not stop the
//!   guest's loop. Run under both preview 1 implementations of wasmtime 46
//!   (the legacy `-Spreview2=n` one and the default one).
//!
//! The guests are built for `wasm32-wasip1` by this test (`cargo build`,
//! into `CARGO_TARGET_DIR`, else the workspace's `target/`). wasmtime 46 is
//! `~/.cache/trio-ci/tools/wasmtime-46.0.3/bin/wasmtime` (`.ci/run`
//! installs it) or `TRIO_WASMTIME46`; without it the tests fail, unless
//! `TRIO_ALLOW_SKIP=1`, when they print `SKIPPED` and pass.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on every socket read and write, and on the guests' exits.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest may take to start listening (wasmtime compiles the
/// module first, on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on building the guests (cargo may wait for a lock).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);

/// The wasmtime 46 CLI, or `None` (after a loud message) if it is missing
/// and skipping is allowed.
fn wasmtime46() -> Option<PathBuf> {
    let path = match std::env::var_os("TRIO_WASMTIME46") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/trio-ci/tools/wasmtime-46.0.3/bin/wasmtime"),
    };
    if path.is_file() {
        return Some(path);
    }
    let why = format!("the wasmtime 46 CLI is not at {} (TRIO_WASMTIME46 overrides the path)", path.display());
    if std::env::var("TRIO_ALLOW_SKIP").as_deref() == Ok("1") {
        // Straight to the descriptor: the test harness captures `eprintln!`.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: WASI preview 1 guest tests: {why} ***\n");
        return None;
    }
    panic!(
        "{why}; `.ci/run` installs it (cargo install --locked wasmtime-cli --version 46.0.3 --root \
         ~/.cache/trio-ci/tools/wasmtime-46.0.3), or set TRIO_ALLOW_SKIP=1 to skip"
    );
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace().join(d), // `join` keeps an absolute path as is
        _ => workspace().join("target"),
    }
}

/// Builds both guests once (for every test of this binary); the path of
/// guest `name`.
fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut child = Command::new(cargo)
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", target_dir())
            .args(["build", "-q", "-p", "trio-wasi-examples", "--bin", "echo_server", "--bin", "p1_stdio_echo"])
            .args(["--target", "wasm32-wasip1"])
            .spawn()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let status = wait_timeout(&mut child, BUILD_TIMEOUT).ok_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            format!("building the guests took more than {BUILD_TIMEOUT:?}")
        })?;
        if !status.success() {
            return Err(format!("building the guests failed: {status}"));
        }
        Ok(target_dir().join("wasm32-wasip1/debug"))
    });
    match dir {
        Ok(d) => d.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
struct Guest {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Guest {
    fn spawn(cmd: &mut Command) -> Guest {
        let mut child = cmd
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

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&self.stdout.lock().unwrap()),
            String::from_utf8_lossy(&self.stderr.lock().unwrap())
        )
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded) for the exit and the end of the output.
    fn wait(&mut self) -> ExitStatus {
        let Some(status) = wait_timeout(&mut self.child, IO_TIMEOUT) else {
            panic!("the guest did not exit within {IO_TIMEOUT:?}\n{}", self.output());
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
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
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn timeouts(s: &TcpStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
}

/// Starts `echo_server` on a free port and returns it with a first
/// connection (retrying with another port if wasmtime could not bind).
fn start_echo_server(wasmtime: &PathBuf) -> (Guest, u16, TcpStream) {
    let wasm = guest("echo_server");
    for _attempt in 0..5 {
        let port = free_port();
        let mut guest = Guest::spawn(
            Command::new(wasmtime)
                .args(["run", "-Spreview2=n", &format!("-Stcplisten=127.0.0.1:{port}")])
                .arg(&wasm)
                .args(["--connections", "3"])
                .stdin(Stdio::null()),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = guest.exited() {
                let _ = guest.wait();
                let out = guest.output();
                if out.contains("failed to bind") {
                    break; // the port was taken meanwhile: another one
                }
                panic!("the guest exited ({status}) before accepting\n{out}");
            }
            let addr = ([127, 0, 0, 1], port).into();
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                timeouts(&s);
                return (guest, port, s);
            }
            if Instant::now() >= deadline {
                panic!("the guest did not listen within {START_TIMEOUT:?}\n{}", guest.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start the guest on a free port in 5 attempts");
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).expect("read EOF"), 0, "expected end of stream");
}

#[test]
fn echo_server_serves_preopened_listener() {
    let Some(wasmtime) = wasmtime46() else { return };
    let (mut guest, port, mut c1) = start_echo_server(&wasmtime);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        timeouts(&s);
        s
    };

    // 1: small, then 1 MiB written by a thread while this one reads, then
    // a half-close: the server sees end of stream, finishes its echo and
    // closes.
    echo(&mut c1, b"hello, trio on wasip1");
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = c1.try_clone().expect("clone");
    let to_send = big.clone();
    let w = std::thread::spawn(move || writer.write_all(&to_send));
    let mut back = vec![0u8; big.len()];
    c1.read_exact(&mut back).expect("read 1 MiB echo");
    w.join().expect("writer").expect("write 1 MiB");
    assert!(back == big, "the 1 MiB echo differs");
    c1.shutdown(Shutdown::Write).expect("half-close");
    expect_eof(&mut c1);
    drop(c1);

    // 2 and 3 at once: 3 is served while 2 waits in the guest, then both.
    let mut c2 = connect();
    let mut c3 = connect();
    echo(&mut c3, b"third first");
    echo(&mut c2, b"second");
    echo(&mut c3, b"third again");
    echo(&mut c2, b"second again");
    c2.shutdown(Shutdown::Write).expect("half-close");
    expect_eof(&mut c2);
    drop(c3); // a full close ends the server's side too
    drop(c2);

    let status = guest.wait();
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    assert!(out.contains("served 3 connections"), "no `served 3 connections`\n{out}");
    assert!(out.contains("connection closed after 1048597 bytes"), "connection 1's count\n{out}");
}

/// Runs `p1_stdio_echo` with `flags`: a line, then stdin idle for half a
/// second (the guest's timer must tick meanwhile), then 300 KB and end of
/// input; stdout must be exactly the input.
fn stdio_echo(flags: &[&str]) {
    let Some(wasmtime) = wasmtime46() else { return };
    let wasm = guest("p1_stdio_echo");
    let mut guest = Guest::spawn(Command::new(&wasmtime).arg("run").args(flags).arg(&wasm).stdin(Stdio::piped()));
    let mut stdin: ChildStdin = guest.child.stdin.take().expect("piped");
    stdin.write_all(b"hello\n").expect("write stdin");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + START_TIMEOUT;
    while guest.stdout() != b"hello\n" {
        assert!(Instant::now() < deadline, "no echo of the first line\n{}", guest.output());
        assert!(guest.exited().is_none(), "the guest exited early\n{}", guest.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let to_send = big.clone();
    let w = std::thread::spawn(move || {
        let r = stdin.write_all(&to_send);
        drop(stdin); // end of input
        r
    });
    let status = guest.wait();
    w.join().expect("writer").expect("write stdin");
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    let mut expected = b"hello\n".to_vec();
    expected.extend_from_slice(&big);
    assert!(guest.stdout() == expected, "stdout differs from stdin ({} bytes)\n", guest.stdout().len());
    let line = out.lines().find(|l| l.starts_with("p1_stdio_echo: copied")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&format!("copied {} bytes", expected.len())), "{line}");
    let ticks: u64 =
        line.rsplit(' ').nth(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no tick count in {line:?}"));
    // About 50 in the idle half second; none if stdin blocked the loop.
    assert!(ticks >= 10, "the timer hardly ticked while stdin was idle: {line}");
}

#[test]
fn stdio_under_legacy_preview1() {
    stdio_echo(&["-Spreview2=n"]);
}

#[test]
fn stdio_under_default_preview1() {
    stdio_echo(&[]);
}
