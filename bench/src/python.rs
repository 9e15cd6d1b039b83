//! Python Trio's figures for the micro workloads: `bench/python/micro.py`,
//! run in a venv of its own with a pinned `trio` from PyPI, and matched to
//! our records by name.
//!
//! The venv is `$TRIO_BENCH_VENV`, or else `~/.cache/trio-bench/venv`; it is
//! made once (`python3 -m venv`) and `trio` installed into it once (`pip
//! install` [`TRIO_PIN`]), then reused by every later run. Whatever goes
//! wrong (no `python3`, no venv module, PyPI unreachable, the script
//! failing or taking too long) comes back as a one-line reason, for the
//! caller to print as `SKIPPED: Python Trio (<reason>)`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::results::{Record, Size};

/// The Python Trio release measured: pinned, so that figures taken on
/// different days compare (the latest stable release when this was written).
pub(crate) const TRIO_PIN: &str = "trio==0.35.0";

/// What one run of `micro.py` reported.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PythonRun {
    /// `trio.__version__`, for example `"0.35.0"`.
    pub(crate) trio: String,
    /// `platform.python_version()`, for example `"3.11.7"`.
    pub(crate) python: String,
    /// `platform.python_implementation()`, for example `"CPython"`.
    pub(crate) implementation: String,
    /// `(name, ns per operation)`, in the script's order.
    pub(crate) figures: Vec<(String, f64)>,
}

/// Why there are no figures.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// Something this machine lacks: `python3`, its venv module, PyPI.
    Unavailable(String),
    /// The script failed, printed something unexpected, or took too long.
    Broken(String),
}

impl Failure {
    /// The one-line reason.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Failure::Unavailable(s) | Failure::Broken(s) => s,
        }
    }
}

/// Runs the micro workloads on Python Trio at `size` (making the venv and
/// installing [`TRIO_PIN`] first if need be), prints which Python and trio
/// it measured, and returns `(name, ns per operation)` pairs.
///
/// # Errors
///
/// A one-line reason when there are no figures (see [`measure`]).
pub(crate) fn run(size: Size) -> Result<Vec<(String, f64)>, String> {
    let venv = venv_dir().map_err(|f| f.reason().to_owned())?;
    let got = measure(size, &venv).map_err(|f| f.reason().to_owned())?;
    println!("Python Trio {} on {} {} (venv {})", got.trio, got.implementation, got.python, venv.display());
    Ok(got.figures)
}

/// Sets `python_trio` on each record that has a figure of the same name.
pub(crate) fn attach(records: &mut [Record], python: &[(String, f64)]) {
    for r in records.iter_mut() {
        if let Some((_, ns)) = python.iter().find(|(name, _)| *name == r.name) {
            r.python_trio = Some(*ns);
        }
    }
}

/// The venv's folder: `$TRIO_BENCH_VENV`, or else `~/.cache/trio-bench/venv`.
///
/// # Errors
///
/// [`Failure::Unavailable`] when neither that variable nor `HOME` is set.
pub(crate) fn venv_dir() -> Result<PathBuf, Failure> {
    if let Some(dir) = std::env::var_os("TRIO_BENCH_VENV").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(Path::new(&home).join(".cache/trio-bench/venv")),
        None => Err(Failure::Unavailable("neither TRIO_BENCH_VENV nor HOME is set".to_owned())),
    }
}

/// [`run`]'s work without the printing: readies the venv at `venv`, runs
/// `micro.py --size ...` in it, and parses what it prints.
///
/// # Errors
///
/// [`Failure::Unavailable`] when `python3`, its venv module or PyPI is
/// missing; [`Failure::Broken`] when the script fails, prints something
/// else than expected, or outlives its time limit (and is killed).
pub(crate) fn measure(size: Size, venv: &Path) -> Result<PythonRun, Failure> {
    let python = ensure_venv(venv)?;
    ensure_trio(&python)?;
    let script = script_path()?;
    let mut cmd = Command::new(&python);
    cmd.arg("-I").arg(&script).arg("--size").arg(size_arg(size));
    let out = run_with_limit(cmd, script_limit(size), "micro.py").map_err(Failure::Broken)?;
    if !out.status.success() {
        return Err(Failure::Broken(format!(
            "micro.py --size {} failed ({}): {}",
            size_arg(size),
            out.status,
            last_line(&out.stderr)
        )));
    }
    parse_output(&out.stdout).map_err(Failure::Broken)
}

/// `micro.py`'s `--size` argument.
fn size_arg(size: Size) -> &'static str {
    match size {
        Size::Full => "full",
        Size::Quick => "quick",
        Size::Tiny => "tiny",
    }
}

/// How long `micro.py` may take before it is killed (on a busy 2-core
/// machine it took 2 to 2.6 min, 11 to 16 s and 0.3 s).
fn script_limit(size: Size) -> Duration {
    Duration::from_secs(match size {
        Size::Full => 600,
        Size::Quick => 120,
        Size::Tiny => 60,
    })
}

/// How long `python3 -m venv` may take.
const VENV_LIMIT: Duration = Duration::from_secs(120);

/// How long `pip install` may take.
const PIP_LIMIT: Duration = Duration::from_secs(300);

/// `micro.py`: under the runtime `CARGO_MANIFEST_DIR` if that is set and
/// has it (a build can be reused by a clone in another folder), else under
/// the folder this was compiled from.
fn script_path() -> Result<PathBuf, Failure> {
    let relative = Path::new("python/micro.py");
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(|d| PathBuf::from(d).join(relative));
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    runtime
        .filter(|p| p.is_file())
        .or_else(|| built.is_file().then_some(built.clone()))
        .ok_or_else(|| Failure::Broken(format!("{} is missing", built.display())))
}

/// The venv's interpreter, making the venv first if there is none: in a
/// folder beside it, renamed into place when complete, so that a run
/// killed half way (or two at once) leaves no half-made venv behind.
fn ensure_venv(venv: &Path) -> Result<PathBuf, Failure> {
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    if venv.exists() {
        return Err(Failure::Broken(format!("{} exists but has no bin/python; remove it", venv.display())));
    }
    let unavailable = |what: String| Failure::Unavailable(format!("making the venv {}: {what}", venv.display()));
    let parent = venv.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| unavailable(format!("creating {}: {e}", parent.display())))?;
    let name = venv.file_name().map_or_else(|| "venv".into(), |n| n.to_string_lossy().into_owned());
    let partial = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&partial);
    let made = run_with_limit(cmd, VENV_LIMIT, "python3 -m venv").map_err(&unavailable).and_then(|out| {
        if out.status.success() {
            Ok(())
        } else {
            Err(unavailable(format!("python3 -m venv failed ({}): {}", out.status, last_line(&out.stderr))))
        }
    });
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if std::fs::rename(&partial, venv).is_err() {
        // Another run made it meanwhile (or the rename failed: then the
        // check below says so).
        let _ = std::fs::remove_dir_all(&partial);
    }
    if python.exists() {
        Ok(python)
    } else {
        Err(unavailable(format!("no {} after python3 -m venv", python.display())))
    }
}

/// Installs [`TRIO_PIN`] into the venv of `python` unless it is there.
fn ensure_trio(python: &Path) -> Result<(), Failure> {
    let wanted = TRIO_PIN.trim_start_matches("trio==");
    let mut check = Command::new(python);
    check.args(["-I", "-c", "import trio; print(trio.__version__)"]);
    if let Ok(out) = run_with_limit(check, VENV_LIMIT, "import trio")
        && out.status.success()
        && out.stdout.trim() == wanted
    {
        return Ok(());
    }
    let mut pip = Command::new(python);
    pip.args(["-I", "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--retries", "2", "--timeout"])
        .args(["15", TRIO_PIN]);
    let out = run_with_limit(pip, PIP_LIMIT, "pip install").map_err(Failure::Unavailable)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Failure::Unavailable(format!("pip install {TRIO_PIN} failed ({}): {}", out.status, last_line(&out.stderr))))
    }
}

/// What a finished child printed.
#[derive(Debug)]
struct Output {
    /// How it ended.
    status: ExitStatus,
    /// Its standard output.
    stdout: String,
    /// Its standard error.
    stderr: String,
}

/// Runs `cmd` (standard input empty, both outputs captured) and waits for
/// it, killing it once it has run for `limit`. `what` names it in errors.
fn run_with_limit(mut cmd: Command, limit: Duration, what: &str) -> Result<Output, String> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{program} not found")
        } else {
            format!("starting {program}: {e}")
        }
    })?;
    // Drained on threads, so that a child printing more than a pipe holds
    // does not stall.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                // The drain threads are left to end with the pipes (a
                // grandchild may still hold them).
                return Err(format!("{what} took longer than {} s and was killed", limit.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for {what}: {e}"));
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// The last non-empty line of `text` (a Python traceback's last line says
/// what was raised), or `"(no output)"`.
fn last_line(text: &str) -> &str {
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("(no output)")
}

/// At most 80 characters of `line`, for error messages.
fn excerpt(line: &str) -> String {
    let mut s: String = line.chars().take(80).collect();
    if s.len() < line.len() {
        s.push_str("...");
    }
    s
}

/// Parses `micro.py`'s output: a `{"meta": {"trio": ..., "python": ...,
/// "implementation": ...}}` line, and `{"name": NAME, "ns_per_op": NUMBER}`
/// lines with a positive, finite number; blank lines are ignored.
///
/// # Errors
///
/// A reason naming the first line that is none of these, or saying the
/// meta line is missing.
pub(crate) fn parse_output(stdout: &str) -> Result<PythonRun, String> {
    let mut meta = None;
    let mut figures = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| format!("micro.py output line {}: {why}: {}", i + 1, excerpt(line));
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
        if let Some(m) = object.get("meta") {
            let field = |key: &str| {
                m.get(key)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| bad(&format!("no meta.{key}")))
            };
            meta = Some((field("trio")?, field("python")?, field("implementation")?));
            continue;
        }
        let name = object.get("name").and_then(serde_json::Value::as_str).ok_or_else(|| bad("no \"name\" string"))?;
        let ns = object
            .get("ns_per_op")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| bad("no \"ns_per_op\" number"))?;
        if !(ns.is_finite() && ns > 0.0) {
            return Err(bad("ns_per_op is not a positive number"));
        }
        figures.push((name.to_owned(), ns));
    }
    let (trio, python, implementation) = meta.ok_or("micro.py printed no meta line")?;
    Ok(PythonRun { trio, python, implementation, figures })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str =
        r#"{"meta": {"trio": "0.35.0", "python": "3.11.7", "implementation": "CPython", "size": "tiny"}}"#;

    #[test]
    fn parses_good_output() {
        let out = format!(
            "{META}\n{{\"name\": \"spawn+join 1k children\", \"ns_per_op\": 6684.5}}\n\n\
             {{\"name\": \"to_thread round trip\", \"ns_per_op\": 59519}}\n"
        );
        let got = parse_output(&out).expect("good output");
        assert_eq!(
            got,
            PythonRun {
                trio: "0.35.0".into(),
                python: "3.11.7".into(),
                implementation: "CPython".into(),
                figures: vec![("spawn+join 1k children".into(), 6684.5), ("to_thread round trip".into(), 59519.0)],
            }
        );
    }

    #[test]
    fn meta_line_alone_and_missing() {
        let got = parse_output(META).expect("a meta line alone");
        assert_eq!((got.trio.as_str(), got.figures.len()), ("0.35.0", 0));
        let e = parse_output(r#"{"name": "x", "ns_per_op": 1.5}"#).unwrap_err();
        assert_eq!(e, "micro.py printed no meta line");
        let e = parse_output(r#"{"meta": {"trio": "0.35.0"}}"#).unwrap_err();
        assert!(e.contains("line 1: no meta.python"), "{e}");
    }

    #[test]
    fn malformed_lines_are_named() {
        let e = parse_output(&format!("{META}\nTraceback (most recent call last):\n")).unwrap_err();
        assert!(e.starts_with("micro.py output line 2: not JSON"), "{e}");
        assert!(e.ends_with(": Traceback (most recent call last):"), "{e}");
        let e = parse_output(&format!("{META}\n[1, 2]")).unwrap_err();
        assert!(e.contains("line 2: not a JSON object"), "{e}");
        let e = parse_output(&format!("{META}\n{{\"name\": \"x\", \"ns_per_op\": \"fast\"}}")).unwrap_err();
        assert!(e.contains("line 2: no \"ns_per_op\" number"), "{e}");
        let e = parse_output(&format!("{META}\n{{\"ns_per_op\": 1}}")).unwrap_err();
        assert!(e.contains("line 2: no \"name\" string"), "{e}");
        let e = parse_output(&format!("{META}\n{{\"name\": \"x\", \"ns_per_op\": -1}}")).unwrap_err();
        assert!(e.contains("line 2: ns_per_op is not a positive number"), "{e}");
        assert!(excerpt(&"y".repeat(100)).ends_with("y..."));
    }

    #[test]
    fn attach_matches_by_name() {
        let mut records = vec![
            Record::lower("micro", "ping-pong capacity 0", 100.0, 200.0, "ns/op"),
            Record::lower("micro", "uncontended lock try_acquire+release", 5.0, 6.0, "ns/op"),
            Record::higher("echo", "1 conn x 64 B", 1.0, 2.0, "msgs/s"),
        ];
        let python = vec![("ping-pong capacity 0".to_owned(), 24000.0), ("not a record".to_owned(), 1.0)];
        attach(&mut records, &python);
        let got: Vec<Option<f64>> = records.iter().map(|r| r.python_trio).collect();
        assert_eq!(got, [Some(24000.0), None, None]);
    }

    #[test]
    fn helpers() {
        assert_eq!(last_line("a\n  b  \n\n"), "b");
        assert_eq!(last_line(""), "(no output)");
        assert_eq!(TRIO_PIN.trim_start_matches("trio=="), "0.35.0");
        assert!(script_path().expect("micro.py").ends_with("python/micro.py"));
        let e = run_with_limit(Command::new("/nonexistent/python3"), VENV_LIMIT, "x").unwrap_err();
        assert_eq!(e, "/nonexistent/python3 not found");
        let mut sleeper = Command::new("sleep");
        sleeper.arg("10");
        let t = Instant::now();
        let e = run_with_limit(sleeper, Duration::from_millis(100), "sleep").unwrap_err();
        assert_eq!(e, "sleep took longer than 0.1 s and was killed");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// The real thing, at the tiny size: every name, each a positive figure.
    /// Without python3 (with venv) or PyPI it fails, unless TRIO_ALLOW_SKIP
    /// is set.
    #[test]
    fn tiny_run_has_every_workload() {
        let venv = venv_dir().expect("a venv folder (set HOME or TRIO_BENCH_VENV)");
        let got = match measure(Size::Tiny, &venv) {
            Ok(got) => got,
            Err(Failure::Unavailable(why)) => {
                assert!(
                    std::env::var_os("TRIO_ALLOW_SKIP").is_some(),
                    "Python Trio is unavailable: {why}; .ci/run expects python3 (with its venv module) and PyPI \
                     access (or set TRIO_ALLOW_SKIP=1 to skip)"
                );
                println!("SKIPPED: Python Trio ({why})");
                return;
            }
            Err(Failure::Broken(why)) => panic!("{why}"),
        };
        assert_eq!(got.trio, TRIO_PIN.trim_start_matches("trio=="));
        // Every Python figure is attached by name to one of our micro records:
        // all but the two workloads Python Trio has no counterpart for.
        let names: Vec<&str> = got.figures.iter().map(|(n, _)| n.as_str()).collect();
        let ours = crate::micro::tests::NAMES;
        let without = ["uncontended lock try_acquire+release", "run_sync_soon from another thread"];
        assert_eq!(names, ours.iter().copied().filter(|n| !without.contains(n)).collect::<Vec<_>>());
        for (name, ns) in &got.figures {
            assert!(ns.is_finite() && *ns > 0.0, "{name}: {ns}");
        }
    }
}
