//! The WASI preview 2 `echo_server` guest under the project's host
//! (`trio-wasi-host`), driven from here over loopback (this test itself
//! runs natively).
//!
//! - `echo_server_over_wasi_sockets`: the guest binds `127.0.0.1:0` through
//!   `wasi:sockets` (the host allows `--listen 127.0.0.1:0`, any port on
//!   that IP) with `--connections 3`: small and 1 MiB echoes, two
//!   connections open at once, clients that half-close (their last bytes
//!   still come back), and a clean exit with `served 3 connections`.
//! - `bind_outside_the_policy_is_denied`: the guest asks for addresses the
//!   host's `--listen` does not allow; it fails (non-zero status) with
//!   "access denied: the host's network policy does not allow binding to
//!   ADDR", and the host reports the denial on its stderr too.
//!
//! The guest is built for `wasm32-wasip2` by this test (`cargo build`, into
//! `CARGO_TARGET_DIR`, else the workspace's `target/`). The host is
//! `$CARGO_TARGET_DIR/wasi-host/trio-wasi-host` (`.ci/run` builds it with
//! `cargo build -p trio-wasi-host --profile wasi-host`) or `TRIO_WASI_HOST`;
//! without it the tests fail, unless `TRIO_ALLOW_SKIP=1`, when they print
//! `SKIPPED` and pass. For development, `TRIO_P2_WASMTIME=PATH` runs the
//! guest under a wasmtime CLI instead (`-Sinherit-network` for the echo,
//! no network for the denial; the host-side message is then not checked).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on every socket read and write, and on the guest's exit.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest may take to start listening (the host compiles the
/// component first, on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on building the guest (cargo may wait for a lock).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);

/// What runs the guest.
enum Runner {
    /// The project's host: `run GUEST --listen ADDR -- ARGS`.
    Host(PathBuf),
    /// A wasmtime CLI (development only, see the module docs).
    Wasmtime(PathBuf),
}

impl Runner {
    /// The runner, or `None` (after a loud message) if the host is missing
    /// and skipping is allowed.
    fn find() -> Option<Runner> {
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
        let why = format!("the trio-wasi-host binary is not at {} (TRIO_WASI_HOST overrides the path)", path.display());
        if std::env::var("TRIO_ALLOW_SKIP").as_deref() == Ok("1") {
            // Straight to the descriptor: the test harness captures `eprintln!`.
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: WASI preview 2 echo tests: {why} ***\n");
            return None;
        }
        panic!(
            "{why}; `.ci/run` builds it (cargo build -p trio-wasi-host --profile wasi-host), or set \
             TRIO_ALLOW_SKIP=1 to skip"
        );
    }

    /// The command running `guest` with `args`; `allow_listen` is the
    /// address the host's policy lets the guest bind (`None`: nothing).
    fn command(&self, guest: &PathBuf, allow_listen: Option<&str>, args: &[&str]) -> Command {
        match self {
            Runner::Host(host) => {
                let mut cmd = Command::new(host);
                cmd.arg("run").arg(guest);
                if let Some(addr) = allow_listen {
                    cmd.args(["--listen", addr]);
                }
                cmd.arg("--").args(args);
                cmd
            }
            Runner::Wasmtime(wasmtime) => {
                let mut cmd = Command::new(wasmtime);
                cmd.args(["run", "-Stcp"]);
                if allow_listen.is_some() {
                    cmd.arg("-Sinherit-network");
                }
                cmd.arg(guest).args(args);
                cmd
            }
        }
    }
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

/// Builds the guest once (for every test of this binary); its path.
fn echo_server_wasm() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut child = Command::new(cargo)
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", target_dir())
            .args(["build", "-q", "-p", "trio-wasi-examples", "--bin", "echo_server", "--target", "wasm32-wasip2"])
            .spawn()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let status = wait_timeout(&mut child, BUILD_TIMEOUT).ok_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            format!("building the guest took more than {BUILD_TIMEOUT:?}")
        })?;
        if !status.success() {
            return Err(format!("building the guest failed: {status}"));
        }
        Ok(target_dir().join("wasm32-wasip2/debug/echo_server.wasm"))
    });
    match built {
        Ok(p) => p.clone(),
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
    fn spawn(mut cmd: Command) -> Guest {
        let mut child = cmd
            .stdin(Stdio::null())
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

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn output(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout(), self.stderr())
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

    /// Waits (bounded) for `listening on 127.0.0.1:PORT`; the port.
    fn listening_port(&mut self) -> u16 {
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

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the guest");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
    s
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// Half-closes `s` right after sending `tail`: the echo of `tail` must still
/// arrive, then the end of stream (the guest saw ours and closed).
fn half_close_with(s: &mut TcpStream, tail: &[u8]) {
    s.write_all(tail).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read the rest and the end of stream");
    assert_eq!(back, tail, "after the half-close");
}

#[test]
fn echo_server_over_wasi_sockets() {
    let Some(runner) = Runner::find() else { return };
    let wasm = echo_server_wasm();
    let mut guest = Guest::spawn(runner.command(&wasm, Some("127.0.0.1:0"), &["127.0.0.1:0", "--connections", "3"]));
    let port = guest.listening_port();

    // 1: small, then 1 MiB written by a thread while this one reads, then
    // a half-close.
    let mut c1 = connect(port);
    let hello = b"hello, trio on wasip2";
    echo(&mut c1, hello);
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = c1.try_clone().expect("clone");
    let to_send = big.clone();
    let w = std::thread::spawn(move || writer.write_all(&to_send));
    let mut back = vec![0u8; big.len()];
    c1.read_exact(&mut back).expect("read the 1 MiB echo");
    w.join().expect("writer").expect("write 1 MiB");
    assert!(back == big, "the 1 MiB echo differs");
    let tail = b"the last words";
    half_close_with(&mut c1, tail);
    drop(c1);

    // 2 and 3 at once, interleaved: each is served in its own guest task.
    let mut c2 = connect(port);
    let mut c3 = connect(port);
    echo(&mut c3, b"third first");
    echo(&mut c2, b"second");
    echo(&mut c3, b"third again");
    half_close_with(&mut c2, b"second, closing");
    // 3 still works after 2 ended.
    echo(&mut c3, b"third, alone");
    drop(c3); // a full close ends the guest's side too
    drop(c2);

    let status = guest.wait();
    let out = guest.output();
    assert!(status.success(), "the guest failed: {status}\n{out}");
    assert!(out.contains("served 3 connections"), "no `served 3 connections`\n{out}");
    let first = hello.len() + big.len() + tail.len();
    assert!(out.contains(&format!("connection closed after {first} bytes")), "connection 1's count\n{out}");
}

#[test]
fn bind_outside_the_policy_is_denied() {
    let Some(runner) = Runner::find() else { return };
    let wasm = echo_server_wasm();
    // wasmtime's policy is all or nothing: there, run without network.
    let allow = if let Runner::Host(_) = runner { Some("127.0.0.1:0") } else { None };
    for addr in ["0.0.0.0:0", "127.0.0.2:0"] {
        let mut guest = Guest::spawn(runner.command(&wasm, allow, &[addr, "--connections", "1"]));
        let status = guest.wait();
        let (stdout, stderr) = (guest.stdout(), guest.stderr());
        let out = guest.output();
        assert!(!status.success(), "binding {addr} did not fail\n{out}");
        assert!(!stdout.contains("listening on"), "the guest listened on {addr}\n{out}");
        let guest_line = format!("access denied: the host's network policy does not allow binding to {addr}");
        assert!(stderr.contains(&guest_line), "no `{guest_line}` from the guest\n{out}");
        if let Runner::Host(_) = runner {
            let host_said = stderr.lines().any(|l| l.contains("access denied") && !l.contains(&guest_line));
            assert!(host_said, "the host did not report the denial on its stderr\n{out}");
        }
    }
}
