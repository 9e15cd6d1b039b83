//! The command line.

use std::path::PathBuf;

use crate::results::Size;

/// The usage text (`--help`, and after a bad argument).
pub(crate) const USAGE: &str = "\
usage: trio-bench [--quick | --tiny] [--json PATH] [--report DIR] [--only PART]
                  [--syscalls[=perf|strace]] [--instructions] [--no-python]
       trio-bench --serve trio|tokio ADDR
       trio-bench --load ADDR CONNS SIZE SECONDS

Runs every workload on trio and on tokio's current-thread runtime in the
same run, interleaved, and prints the median figure of each and the ratio
(trio/tokio for times and sizes, tokio/trio for rates: below 1 means trio
is faster or leaner).

  --quick          everything in under 2 minutes (default: longer, steadier)
  --tiny           every workload once at a tiny size (a smoke test for CI;
                   the figures mean nothing)
  --json PATH      also write the results as a JSON list of
                   {name, trio, tokio, unit, ratio} objects
  --report DIR     also write DIR/README.md and PNG charts of the ratios
  --only PART      one part: micro, echo, connect, fairness, memory, tls,
                   python, instructions, wasi; or one trio micro workload once, as a
                   profiling aid: spawn, checkpoint, pingpong, pingpong0,
                   lock, child, deadline
                   (fairness: an idle connection's round trip and a new
                   connection's first echo while 8 connections stream at
                   full speed through the same server; p50/p99 in µs, and
                   the busy streams' MiB/s)
  --syscalls[=T]   count the echo servers' system calls per round trip, and
                   the fairness servers' reads per epoll_wait
                   (T: perf or strace; default: perf if it works)
  --instructions   also count user-space instructions per operation under
                   callgrind (valgrind) for the micro workloads and the
                   echo servers: figures that do not move with the
                   machine's load (the part `instructions`)
  --no-python      skip the Python Trio comparison
  --serve K ADDR   run one echo server, K one of trio, tokio, trio-uring,
                   monoio (how the echo benchmark starts them)
  --load ADDR ...  drive an echo server started by hand (a profiling aid)";

/// The parts of the suite, in the order they run.
pub(crate) const PARTS: &[&str] =
    &["micro", "python", "echo", "connect", "fairness", "memory", "tls", "instructions", "wasi"];

/// The trio micro workloads `--only` can run once for profiling.
pub(crate) const PROFILES: &[&str] = &["spawn", "checkpoint", "pingpong", "pingpong0", "lock", "child", "deadline"];

/// What to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Mode {
    /// Run (part of) the suite.
    Suite(Options),
    /// Run one trio micro workload once (`--only spawn`, ...).
    Profile(String),
    /// `--serve KIND ADDR`.
    Serve { kind: String, addr: String },
    /// `--load ADDR CONNS SIZE SECONDS` (the arguments after `--load`).
    Load(Vec<String>),
    /// `--count-one trio|tokio INDEX N`: one micro workload call, for
    /// `--instructions` (which runs it under callgrind).
    CountOne(Vec<String>),
    /// `--help`.
    Help,
}

/// How to run the suite.
#[derive(Debug, PartialEq)]
pub(crate) struct Options {
    pub(crate) size: Size,
    pub(crate) json: Option<PathBuf>,
    pub(crate) report: Option<PathBuf>,
    /// `None`: every part except `wasi` (which needs extra builds).
    pub(crate) only: Option<&'static str>,
    /// `Some(None)`: `--syscalls`; `Some(Some(t))`: `--syscalls=t`.
    pub(crate) syscalls: Option<Option<String>>,
    pub(crate) python: bool,
    /// `--instructions`: the `instructions` part runs too.
    pub(crate) instructions: bool,
}

impl Options {
    /// Whether `part` runs.
    pub(crate) fn runs(&self, part: &str) -> bool {
        match self.only {
            Some(only) => only == part,
            None => match part {
                "wasi" => false,
                "python" => self.python,
                "instructions" => self.instructions,
                _ => true,
            },
        }
    }
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A one-line message naming the bad argument.
pub(crate) fn parse(args: &[String]) -> Result<Mode, String> {
    let mut opts = Options {
        size: Size::Full,
        json: None,
        report: None,
        only: None,
        syscalls: None,
        python: true,
        instructions: false,
    };
    let mut sized = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let mut value = |what: &str| -> Result<String, String> {
            i += 1;
            args.get(i).cloned().ok_or_else(|| format!("{arg} needs {what}"))
        };
        match arg {
            "--help" | "-h" => return Ok(Mode::Help),
            "--serve" => {
                let kind = value("a server kind (trio, tokio, trio-uring or monoio)")?;
                let addr = value("an address")?;
                if !["trio", "tokio", "trio-uring", "monoio"].contains(&kind.as_str()) {
                    return Err(format!("--serve: unknown server kind {kind:?} (trio, tokio, trio-uring or monoio)"));
                }
                return Ok(Mode::Serve { kind, addr });
            }
            "--load" => return Ok(Mode::Load(args[i + 1..].to_vec())),
            "--count-one" => return Ok(Mode::CountOne(args[i + 1..].to_vec())),
            "--instructions" => opts.instructions = true,
            "--quick" | "--tiny" => {
                if sized {
                    return Err("give at most one of --quick and --tiny".to_owned());
                }
                sized = true;
                opts.size = if arg == "--quick" { Size::Quick } else { Size::Tiny };
            }
            "--json" => opts.json = Some(PathBuf::from(value("a file path")?)),
            "--report" => opts.report = Some(PathBuf::from(value("a directory")?)),
            "--no-python" => opts.python = false,
            "--syscalls" => opts.syscalls = Some(None),
            "--only" => {
                let part = value("a part")?;
                if PROFILES.contains(&part.as_str()) {
                    return Ok(Mode::Profile(part));
                }
                let Some(p) = PARTS.iter().find(|p| **p == part) else {
                    return Err(format!(
                        "--only: unknown part {part:?} (one of {}, or {})",
                        PARTS.join(", "),
                        PROFILES.join(", ")
                    ));
                };
                opts.only = Some(p);
            }
            _ => match arg.strip_prefix("--syscalls=") {
                Some(t) if t == "perf" || t == "strace" => opts.syscalls = Some(Some(t.to_owned())),
                Some(t) => return Err(format!("--syscalls: unknown tracer {t:?} (perf or strace)")),
                None => return Err(format!("unknown argument {arg:?}")),
            },
        }
        i += 1;
    }
    Ok(Mode::Suite(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Mode, String> {
        parse(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    fn suite(s: &str) -> Options {
        match parse_str(s) {
            Ok(Mode::Suite(o)) => o,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn defaults_run_everything_but_wasi() {
        let o = suite("");
        assert_eq!(o.size, Size::Full);
        assert!(o.json.is_none() && o.report.is_none() && o.syscalls.is_none() && o.python);
        for part in PARTS {
            assert_eq!(o.runs(part), *part != "wasi" && *part != "instructions", "{part}");
        }
        let o = suite("--instructions --quick");
        assert!(o.runs("instructions") && o.runs("micro") && !o.runs("wasi"));
        let o = suite("--only instructions");
        assert!(o.runs("instructions") && !o.runs("micro"));
    }

    #[test]
    fn options() {
        let o = suite("--quick --json out.json --report docs/bench --syscalls=strace --no-python");
        assert_eq!(o.size, Size::Quick);
        assert_eq!(o.json, Some(PathBuf::from("out.json")));
        assert_eq!(o.report, Some(PathBuf::from("docs/bench")));
        assert_eq!(o.syscalls, Some(Some("strace".to_owned())));
        assert!(!o.runs("python") && o.runs("micro"));
        assert_eq!(suite("--tiny --syscalls").syscalls, Some(None));
        assert_eq!(suite("--tiny").size, Size::Tiny);
        let o = suite("--only fairness --syscalls");
        assert!(o.runs("fairness") && !o.runs("echo") && o.syscalls == Some(None));
        let o = suite("--only wasi");
        assert!(o.runs("wasi") && !o.runs("micro"));
        assert!(suite("--only python --no-python").runs("python"), "--only wins");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_str("--only spawn"), Ok(Mode::Profile("spawn".to_owned())));
        assert_eq!(
            parse_str("--serve tokio 127.0.0.1:0"),
            Ok(Mode::Serve { kind: "tokio".to_owned(), addr: "127.0.0.1:0".to_owned() })
        );
        assert_eq!(
            parse_str("--load 127.0.0.1:9 1 64 2"),
            Ok(Mode::Load(["127.0.0.1:9", "1", "64", "2"].map(str::to_owned).to_vec()))
        );
        assert_eq!(parse_str("--quick --help"), Ok(Mode::Help));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, needle) in [
            ("--bogus", "unknown argument \"--bogus\""),
            ("--quick --tiny", "at most one"),
            ("--json", "--json needs a file path"),
            ("--only nothing", "unknown part \"nothing\""),
            ("--syscalls=dtrace", "unknown tracer"),
            ("--serve trio", "--serve needs an address"),
            ("--serve go 127.0.0.1:1", "unknown server kind"),
        ] {
            let err = parse_str(args).expect_err(args);
            assert!(err.contains(needle), "{args}: {err}");
        }
    }
}
