//! The command line: `trio-wasi-host run GUEST.wasm [FLAGS]... [-- ARGS...]`.
//!
//! Hand-written because there are few flags: each takes its value either as
//! the next argument or after `=` (`--fuel 1000` or `--fuel=1000`). Flags may
//! come before or after the guest file; everything after `--` goes to the
//! guest untouched.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{HostConfig, Preopen};
use crate::error::HostError;

/// The one-line synopsis printed with every usage error.
pub const USAGE: &str = "usage: trio-wasi-host run GUEST.wasm [--dir HOST::GUEST[:ro]]... \
    [--env K=V]... [--listen ADDR]... [--connect ADDR]... [--allow-dns] [--fuel N] \
    [--max-memory BYTES] [--timeout DURATION] [-- ARGS...]";

/// The text `--help` prints.
pub const HELP: &str = "\
trio-wasi-host: runs a WASI guest (a preview 1 module or a preview 2 component) in wasmtime.

usage: trio-wasi-host run GUEST.wasm [FLAGS]... [-- ARGS...]

flags:
  --dir HOST::GUEST   preopen host directory HOST as GUEST (--dir DIR: same path in both);
                      with :ro after it (HOST::GUEST:ro, DIR:ro) the guest may only
                      read and list there, never create, write, rename or remove;
                      a guest path may not contain ':' otherwise
  --env K=V           set an environment variable (none are inherited)
  --listen ADDR       allow binding and listening on ADDR (IP:PORT; port 0 = any port)
  --connect ADDR      allow connecting to ADDR (IP:PORT; port 0 = any port)
  --allow-dns         allow looking names up (wasi:sockets/ip-name-lookup): each
                      lookup sends the guest's name to the host's resolver and
                      reads the host's /etc/hosts; without it only IP addresses
                      written out resolve (to themselves)
  --fuel N            stop the guest after N units of fuel (exit status 134)
  --max-memory BYTES  one budget for all the guest's linear memories and tables
                      together (suffixes K, M, G = KiB, MiB, GiB); a table
                      element counts as a pointer (8 bytes on 64-bit hosts),
                      as wasmtime stores it; a growth past the budget fails in the guest
  --timeout DURATION  stop the guest after DURATION of wall-clock time, running,
                      sleeping or waiting (a whole number with ms, s, m or h:
                      500ms, 2s, 1m); the host prints one line and exits 124
  -h, --help          print this help

The guest sees argv[0] = its file name, then ARGS. stdio is inherited.
Without --listen/--connect the guest has no network; UDP is never allowed.
--listen, --connect and --allow-dns need a preview 2 component. Each refused
bind, listen, connect, name lookup or UDP socket prints one line on stderr,
at most 100 per run; then one line says further denials are not printed, and
one at the end how many were not. The host's own lines are dropped if stderr
cannot be written.

exit status:
  the guest's own status when it exits (0..=255), except that a guest status
  the host uses itself (2, 124, 125, 134) becomes 125, with one line giving
  the guest's own; then the host's:
  2    the command line is wrong, or the guest could not be read, compiled or linked
  124  --timeout passed
  125  the guest exited with 2, 124, 125 or 134
  134  the guest trapped, ran out of fuel or memory, or failed otherwise
";

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run a guest.
    Run {
        /// The guest file (`.wasm`, module or component).
        guest: PathBuf,
        /// What the guest is granted.
        config: HostConfig,
    },
    /// Print [`HELP`] and exit successfully.
    Help,
}

/// Parses the command line, without the program name (`std::env::args_os()`
/// minus its first item).
///
/// # Errors
///
/// Returns [`HostError::Usage`] saying what is wrong; its `Display` ends with
/// the [`USAGE`] line.
///
/// # Examples
///
/// ```
/// use trio_wasi_host::{parse_args, Command};
///
/// let cmd = parse_args(["run", "echo.wasm", "--listen", "127.0.0.1:0", "--", "-v"]).unwrap();
/// let Command::Run { guest, config } = cmd else { unreachable!() };
/// assert_eq!(guest.to_str(), Some("echo.wasm"));
/// assert_eq!(config.listen[0].port(), 0);
/// assert_eq!(config.args, ["-v"]);
/// ```
pub fn parse_args<I, S>(args: I) -> Result<Command, HostError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into);
    match args.next() {
        None => return Err(usage("missing command")),
        Some(cmd) if cmd == "run" => {}
        Some(cmd) if cmd == "-h" || cmd == "--help" || cmd == "help" => return Ok(Command::Help),
        Some(cmd) => {
            return Err(usage(format!("unknown command '{}' (the only command is 'run')", cmd.to_string_lossy())));
        }
    }

    let mut guest = None;
    let mut config = HostConfig::default();
    while let Some(arg) = args.next() {
        if arg == "--" {
            for a in args.by_ref() {
                config.args.push(utf8(a, "guest argument")?);
            }
            break;
        }
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(text) = arg.to_str() else {
            // Only the guest path may be non-UTF-8.
            set_guest(&mut guest, arg)?;
            continue;
        };
        if !text.starts_with('-') || text == "-" {
            set_guest(&mut guest, arg)?;
            continue;
        }
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (text.to_owned(), None),
        };
        let mut value = || match &inline {
            Some(v) => Ok(v.clone()),
            None => match args.next() {
                Some(v) => utf8(v, &flag),
                None => Err(usage(format!("{flag} needs a value"))),
            },
        };
        match flag.as_str() {
            "--dir" => config.dirs.push(parse_dir(&value()?)?),
            "--env" => config.envs.push(parse_env(&value()?)?),
            "--listen" => config.listen.push(parse_addr(&value()?, "--listen")?),
            "--connect" => config.connect.push(parse_addr(&value()?, "--connect")?),
            "--allow-dns" => {
                if inline.is_some() {
                    return Err(usage("--allow-dns takes no value"));
                }
                config.allow_dns = true;
            }
            "--fuel" => {
                let v = value()?;
                let fuel = v.parse().map_err(|_| usage(format!("invalid --fuel '{v}' (expected a whole number)")))?;
                set_once(&mut config.fuel, fuel, "--fuel")?;
            }
            "--max-memory" => {
                let bytes = parse_size(&value()?)?;
                set_once(&mut config.max_memory, bytes, "--max-memory")?;
            }
            "--timeout" => {
                let timeout = parse_duration(&value()?)?;
                set_once(&mut config.timeout, timeout, "--timeout")?;
            }
            _ => return Err(usage(format!("unknown flag '{flag}'"))),
        }
    }

    match guest {
        Some(guest) => Ok(Command::Run { guest, config }),
        None => Err(usage("missing GUEST.wasm")),
    }
}

fn usage(msg: impl Into<String>) -> HostError {
    HostError::Usage(msg.into())
}

fn utf8(arg: OsString, what: &str) -> Result<String, HostError> {
    arg.into_string().map_err(|a| usage(format!("{what} is not valid UTF-8: {}", a.to_string_lossy())))
}

fn set_guest(guest: &mut Option<PathBuf>, arg: OsString) -> Result<(), HostError> {
    if guest.is_some() {
        return Err(usage(format!("unexpected argument '{}' (guest arguments go after --)", arg.to_string_lossy())));
    }
    *guest = Some(PathBuf::from(arg));
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T, flag: &str) -> Result<(), HostError> {
    if slot.is_some() {
        return Err(usage(format!("{flag} given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// `HOST::GUEST`, `DIR`, each optionally followed by `:ro`. The guest path
/// (in `DIR`, the whole of it) may not contain `:` otherwise, so that a
/// mistyped suffix (`:rw`, `:r0`) is an error, not part of a path.
fn parse_dir(v: &str) -> Result<Preopen, HostError> {
    let invalid = |why: &str| usage(format!("invalid --dir '{v}' ({why})"));
    let (host, guest) = v.split_once("::").unwrap_or((v, v));
    let (guest, read_only) = match guest.rsplit_once(':') {
        None => (guest, false),
        Some((path, "ro")) if !path.contains(':') => (path, true),
        Some(_) => return Err(invalid("the only suffix is :ro, and a guest path may not contain ':'")),
    };
    // In the DIR form the suffix belongs to the host path too.
    let host = if v.contains("::") { host } else { guest };
    if host.is_empty() || guest.is_empty() {
        return Err(invalid("expected HOST::GUEST or DIR, optionally followed by :ro"));
    }
    Ok(Preopen { host: PathBuf::from(host), guest: guest.to_owned(), read_only })
}

fn parse_env(v: &str) -> Result<(String, String), HostError> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_owned(), val.to_owned())),
        _ => Err(usage(format!("invalid --env '{v}' (expected K=V)"))),
    }
}

fn parse_addr(v: &str, flag: &str) -> Result<SocketAddr, HostError> {
    v.parse()
        .map_err(|_| usage(format!("invalid {flag} address '{v}' (expected IP:PORT, e.g. 127.0.0.1:0 or [::1]:8080)")))
}

/// Parses a byte count with an optional binary suffix: `65536`, `64K`,
/// `16MiB`, `1G`.
fn parse_size(v: &str) -> Result<usize, HostError> {
    let invalid = || usage(format!("invalid --max-memory '{v}' (expected bytes, optionally with K, M or G)"));
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    let n: usize = digits.parse().map_err(|_| invalid())?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(invalid()),
    };
    n.checked_mul(1 << shift).ok_or_else(invalid)
}

/// Parses a nonzero whole number followed by its unit: `500ms`, `2s`,
/// `1m`, `1h`.
fn parse_duration(v: &str) -> Result<Duration, HostError> {
    let invalid = || usage(format!("invalid --timeout '{v}' (expected a nonzero whole number and ms, s, m or h)"));
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    match n.checked_mul(ms_per_unit) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(invalid()),
    }
}

/// `1500ms`, `2s`: how the host's lines show a `--timeout`.
pub(crate) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<(PathBuf, HostConfig), String> {
        match parse_args(args.iter().copied()) {
            Ok(Command::Run { guest, config }) => Ok((guest, config)),
            Ok(Command::Help) => Err("help".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn err(args: &[&str]) -> String {
        let e = run(args).expect_err("should be a usage error");
        assert!(e.ends_with(USAGE), "no usage line in {e:?}");
        e
    }

    #[test]
    fn minimal() {
        let (guest, config) = run(&["run", "g.wasm"]).unwrap();
        assert_eq!(guest, PathBuf::from("g.wasm"));
        assert_eq!(config, HostConfig::default());
    }

    #[test]
    fn all_flags_both_spellings() {
        let (guest, c) = run(&[
            "run",
            "--env=A=1",
            "g.wasm",
            "--dir",
            "/tmp::/data",
            "--dir=.",
            "--env",
            "B=x=y",
            "--listen",
            "127.0.0.1:0",
            "--listen=[::1]:8080",
            "--connect",
            "10.0.0.1:443",
            "--fuel",
            "1000",
            "--max-memory=64M",
            "--timeout=2s",
            "--",
            "--fuel",
            "x",
            "--",
        ])
        .unwrap();
        assert_eq!(guest, PathBuf::from("g.wasm"));
        assert_eq!(c.dirs, [dir("/tmp", "/data", false), dir(".", ".", false)]);
        assert_eq!(c.envs, [("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x=y".to_owned())]);
        assert_eq!(c.listen, ["127.0.0.1:0".parse::<SocketAddr>().unwrap(), "[::1]:8080".parse().unwrap()]);
        assert_eq!(c.connect, ["10.0.0.1:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.fuel, Some(1000));
        assert_eq!(c.max_memory, Some(64 << 20));
        assert_eq!(c.timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.args, ["--fuel", "x", "--"]);
    }

    fn dir(host: &str, guest: &str, read_only: bool) -> Preopen {
        Preopen { host: PathBuf::from(host), guest: guest.to_owned(), read_only }
    }

    #[test]
    fn read_only_dirs() {
        let (_, c) = run(&["run", "g.wasm", "--dir", "/tmp::/data:ro", "--dir=/srv:ro", "--dir", "/a:b::/c"]).unwrap();
        assert_eq!(c.dirs, [dir("/tmp", "/data", true), dir("/srv", "/srv", true), dir("/a:b", "/c", false)]);
        for bad in
            ["/tmp::/data:rw", "/tmp::/data:", "/tmp:rw", "/tmp::/a:b:ro", "/tmp:ro:ro", ":ro", "/tmp:::ro", "::/d:ro"]
        {
            assert!(err(&["run", "g.wasm", "--dir", bad]).contains("invalid --dir"), "{bad}");
        }
    }

    #[test]
    fn allow_dns_is_a_switch_off_by_default() {
        let (_, c) = run(&["run", "g.wasm"]).unwrap();
        assert!(!c.allow_dns);
        let (_, c) = run(&["run", "g.wasm", "--allow-dns", "--connect", "127.0.0.1:0"]).unwrap();
        assert!(c.allow_dns);
        assert!(err(&["run", "g.wasm", "--allow-dns=yes"]).contains("--allow-dns takes no value"));
    }

    #[test]
    fn help_states_every_host_status() {
        for status in crate::HOST_STATUSES {
            assert!(HELP.contains(&format!("\n  {status} ")), "{status}");
        }
    }

    #[test]
    fn help_states_the_denial_cap() {
        assert!(HELP.contains(&format!("at most {} per run", crate::MAX_DENIAL_LINES)));
    }

    #[test]
    fn help() {
        for args in [&["--help"][..], &["-h"], &["help"], &["run", "--help"], &["run", "g.wasm", "-h"]] {
            assert_eq!(parse_args(args.iter().copied()).unwrap(), Command::Help);
        }
    }

    #[test]
    fn usage_errors() {
        assert!(err(&[]).contains("missing command"));
        assert!(err(&["exec", "g.wasm"]).contains("unknown command 'exec'"));
        assert!(err(&["run"]).contains("missing GUEST.wasm"));
        assert!(err(&["run", "--", "a"]).contains("missing GUEST.wasm"));
        assert!(err(&["run", "g.wasm", "extra"]).contains("guest arguments go after --"));
        assert!(err(&["run", "g.wasm", "--bogus"]).contains("unknown flag '--bogus'"));
        assert!(err(&["run", "g.wasm", "-x"]).contains("unknown flag '-x'"));
        assert!(err(&["run", "g.wasm", "--fuel"]).contains("--fuel needs a value"));
        assert!(err(&["run", "g.wasm", "--fuel", "-1"]).contains("invalid --fuel"));
        assert!(err(&["run", "g.wasm", "--fuel=1", "--fuel=2"]).contains("given twice"));
        assert!(err(&["run", "g.wasm", "--env", "NOEQ"]).contains("invalid --env"));
        assert!(err(&["run", "g.wasm", "--env", "=v"]).contains("invalid --env"));
        assert!(err(&["run", "g.wasm", "--dir", "::g"]).contains("invalid --dir"));
        assert!(err(&["run", "g.wasm", "--listen", "localhost:80"]).contains("invalid --listen"));
        assert!(err(&["run", "g.wasm", "--connect", "1.2.3.4"]).contains("invalid --connect"));
        assert!(err(&["run", "g.wasm", "--max-memory", "12X"]).contains("invalid --max-memory"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "1", "s", "0s", "0ms", "1.5s", "-1s", "1 s", "1S", "1sec", "2s3", "99999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(2)), "2s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert!(err(&["run", "g.wasm", "--timeout", "1"]).contains("invalid --timeout"));
        assert!(err(&["run", "g.wasm", "--timeout=1s", "--timeout=2s"]).contains("given twice"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("1.5M").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999999999G").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_guest_path_is_fine_but_not_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'g', 0xff]);
        let cmd = parse_args([OsString::from("run"), bad.clone()]).unwrap();
        assert!(matches!(cmd, Command::Run { .. }));
        let e = parse_args([OsString::from("run"), "g.wasm".into(), "--".into(), bad]).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
    }
}
