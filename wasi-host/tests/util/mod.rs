//! Shared helpers: run the built host binary with a deadline, and write
//! guests to files.

#![allow(dead_code, unreachable_pub)] // each test file uses a subset

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one host run may take before the test kills it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What a finished host run produced.
#[derive(Debug)]
pub struct Output {
    /// The exit status (`None` if killed by a signal).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `trio-wasi-host` with `args`, killing it after [`DEADLINE`].
pub fn host<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_deadline(Command::new(env!("CARGO_BIN_EXE_trio-wasi-host")).args(args))
}

/// Runs `cmd` to completion with stdin closed, killing it after
/// [`DEADLINE`] (the test then fails).
pub fn run_with_deadline(cmd: &mut Command) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs `trio-wasi-host` with `args`, stdin and stdout at `/dev/null` and
/// stderr as given, killing it after [`DEADLINE`]; returns the exit status
/// (`None` if killed by a signal).
pub fn host_status_with_stderr<I, S>(args: I, stderr: Stdio) -> Option<i32>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trio-wasi-host"));
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    let mut child = cmd.spawn().expect("spawn");
    wait_with_deadline(&mut child)
}

/// Waits for `child`, killing it after [`DEADLINE`] (the test then fails);
/// returns its exit status (`None` if killed by a signal).
pub fn wait_with_deadline(child: &mut std::process::Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the host did not finish within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A stderr that fails every write: `/dev/full` (ENOSPC).
pub fn full_stderr() -> Stdio {
    std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full").into()
}

/// A stderr that fails every write: a pipe whose read end is closed (EPIPE).
pub fn closed_pipe_stderr() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer.into()
}

/// A directory of its own for `test` under cargo's scratch space.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trio-wasi-host-tests").join(test);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles `wat` and writes it to `<scratch(test)>/<test>.wasm`.
pub fn wat_guest(test: &str, wat: &str) -> PathBuf {
    let bytes = wat::parse_str(wat).expect("valid WAT");
    let path = scratch(test).join(format!("{test}.wasm"));
    std::fs::write(&path, bytes).expect("write guest");
    path
}

/// Writes `contents` to `path` unless it already holds them, atomically, so
/// that tests in parallel processes can share a file.
pub fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Asserts that `haystack` contains every one of `needles`.
#[track_caller]
pub fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "expected {n:?} in:\n{haystack}");
    }
}
