//! The `trio-wasi-host` binary on a preview 2 component: a small Rust
//! program built here for `wasm32-wasip2`, told what to do by its
//! arguments.
//!
//! Skipped (with a loud message) when the `wasm32-wasip2` target is not
//! installed.

mod util;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use util::{
    assert_contains, closed_pipe_stderr, full_stderr, host, host_status_with_stderr, run_with_deadline, scratch,
    write_if_changed,
};

const GUEST_MAIN: &str = r#"
use std::io::Write;
use std::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "exit" => std::process::exit(arg(2).parse().unwrap_or(99)),
        "panic" => panic!("guest panicked on purpose"),
        "argv" => println!("{args:?}"),
        "env" => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        "read" => match std::fs::read_to_string(arg(2)) {
            Ok(s) => print!("{s}"),
            Err(e) => {
                println!("read error: {:?}", e.kind());
                std::process::exit(1);
            }
        },
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(arg(2).parse().unwrap_or(60)));
            println!("woke up");
        }
        "write" => match std::fs::write(arg(2), arg(3)) {
            Ok(()) => println!("written"),
            Err(e) => {
                println!("write error: {:?}", e.kind());
                std::process::exit(1);
            }
        },
        "bind" => match TcpListener::bind(arg(2)) {
            Ok(l) => println!("bound {}", l.local_addr().unwrap()),
            Err(e) => {
                println!("bind error: {:?}", e.kind());
                std::process::exit(1);
            }
        },
        "bind-many" => {
            let n: usize = arg(2).parse().unwrap_or(0);
            let denied = (0..n).filter(|_| TcpListener::bind(arg(3)).is_err()).count();
            println!("denied {denied} of {n}");
        }
        "connect" => match TcpStream::connect(arg(2)) {
            Ok(mut s) => {
                s.write_all(b"hi from the guest").unwrap();
                println!("connected");
            }
            Err(e) => {
                println!("connect error: {:?}", e.kind());
                std::process::exit(1);
            }
        },
        "lookup" => match std::net::ToSocketAddrs::to_socket_addrs(&(arg(2).as_str(), 80)) {
            Ok(addrs) => {
                let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                println!("resolved {}", ips.join(" "));
            }
            Err(e) => {
                println!("lookup error");
                eprintln!("guest: {e}");
                std::process::exit(1);
            }
        },
        "udp" => match std::net::UdpSocket::bind(arg(2)) {
            Ok(s) => println!("udp bound {}", s.local_addr().unwrap()),
            Err(e) => {
                println!("udp error: {:?}", e.kind());
                std::process::exit(1);
            }
        },
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(99);
        }
    }
}
"#;

const GUEST_MANIFEST: &str = r#"[package]
name = "wasi-host-test-guest"
version = "0.0.0"
edition = "2024"
publish = false

# Its own workspace, wherever the scratch directory is.
[workspace]
"#;

/// Builds the guest component once per target dir (cargo makes repeated
/// builds no-ops); `None` if the wasm32-wasip2 target is not installed.
fn guest() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().expect("rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/wasm32-wasip2").exists() {
        eprintln!("SKIPPED: component tests (target wasm32-wasip2 not installed)");
        return None;
    }

    let dir = scratch("component-guest");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    write_if_changed(&dir.join("Cargo.toml"), GUEST_MANIFEST);
    write_if_changed(&dir.join("src/main.rs"), GUEST_MAIN);
    let target = dir.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run_with_deadline(
        Command::new(cargo)
            .current_dir(&dir)
            .args(["build", "--release", "--offline", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    );
    assert_eq!(out.status, Some(0), "building the guest failed: {out:?}");
    Some(target.join("wasm32-wasip2/release/wasi-host-test-guest.wasm"))
}

fn run_guest(flags: &[&str], guest_args: &[&str]) -> Option<util::Output> {
    let guest = guest()?;
    let mut args: Vec<String> = vec!["run".into(), guest.display().to_string()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(guest_args.iter().map(|s| s.to_string()));
    Some(host(&args))
}

/// Rust's std on wasm32-wasip2 (1.95) exits through wasi-libc, which calls
/// `wasi:cli/exit.exit` with `ok`/`err`, never `exit-with-code`: every
/// nonzero status reaches the host as 1. (A guest calling
/// `wasip2::cli::exit::exit_with_code(n)` gets `n`.)
#[test]
fn std_exit_status_is_0_or_1() {
    let Some(out) = run_guest(&[], &["exit", "0"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    let Some(out) = run_guest(&[], &["exit", "3"]) else { return };
    assert_eq!(out.status, Some(1), "{out:?}");
}

#[test]
fn panic_is_a_trap() {
    let Some(out) = run_guest(&[], &["panic"]) else { return };
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_contains(&out.stderr, &["guest panicked on purpose", "trio-wasi-host: guest trapped: "]);
}

#[test]
fn argv0_is_the_file_name_and_env_is_only_what_was_given() {
    let Some(out) = run_guest(&[], &["argv", "a b", "--c"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "[\"wasi-host-test-guest.wasm\", \"argv\", \"a b\", \"--c\"]\n");
    let Some(out) = run_guest(&["--env", "GREETING=hi there", "--env=X="], &["env"]) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "GREETING=hi there\nX=\n");
}

#[test]
fn preopened_dir_is_readable_and_nothing_else_is() {
    let data = scratch("component_dir").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.txt"), "file contents\n").unwrap();
    let dir = format!("{}::/data", data.display());
    let Some(out) = run_guest(&["--dir", &dir], &["read", "/data/in.txt"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "file contents\n");
    let Some(out) = run_guest(&[], &["read", "/data/in.txt"]) else { return };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "read error: NotFound\n");
}

#[test]
fn read_only_dir_refuses_writes_but_reads() {
    let data = scratch("component_ro_dir").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.txt"), "keep me\n").unwrap();
    let _ = std::fs::remove_file(data.join("new.txt"));
    let dir = format!("{}::/data:ro", data.display());
    for path in ["/data/in.txt", "/data/new.txt"] {
        let Some(out) = run_guest(&["--dir", &dir], &["write", path, "overwritten"]) else { return };
        assert_eq!(out.status, Some(1), "{out:?}");
        assert!(out.stdout.starts_with("write error: "), "{out:?}");
        assert_eq!(out.stderr, "");
    }
    assert_eq!(std::fs::read_to_string(data.join("in.txt")).unwrap(), "keep me\n");
    assert!(!data.join("new.txt").exists());
    let Some(out) = run_guest(&["--dir", &dir], &["read", "/data/in.txt"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "keep me\n");
    // The same directory without :ro is writable.
    let rw = format!("{}::/data", data.display());
    let Some(out) = run_guest(&["--dir", &rw], &["write", "/data/new.txt", "new"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(data.join("new.txt")).unwrap(), "new");
}

#[test]
fn timeout_stops_a_sleeping_component_with_124() {
    let Some(guest) = guest() else { return };
    let start = std::time::Instant::now();
    let out = host([
        "run".as_ref(),
        guest.as_os_str(),
        "--timeout".as_ref(),
        "1s".as_ref(),
        "--".as_ref(),
        "sleep".as_ref(),
        "60".as_ref(),
    ]);
    // A bound, not a timing: the guest alone would take 60 s.
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "{out:?}");
    assert_eq!(out.status, Some(124), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "trio-wasi-host: guest stopped: --timeout 1s passed\n");
    let Some(out) = run_guest(&["--timeout", "1m"], &["sleep", "0"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "woke up\n");
}

#[test]
fn bind_without_listen_is_denied() {
    let Some(out) = run_guest(&[], &["bind", "0.0.0.0:80"]) else { return };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "bind error: PermissionDenied\n");
    assert_eq!(out.stderr, "trio-wasi-host: access denied: guest tried to bind 0.0.0.0:80, not allowed by --listen\n");
}

#[test]
fn bind_elsewhere_than_listen_is_denied() {
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0"], &["bind", "127.0.0.2:0"]) else {
        return;
    };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "bind error: PermissionDenied\n");
    assert_contains(&out.stderr, &["guest tried to bind 127.0.0.2:0, not allowed by --listen"]);
}

#[test]
fn listen_on_the_wildcard_address_is_denied_at_listen() {
    // Binding 0.0.0.0:0 is allowed (it is also the implicit bind before a
    // connect); listening there is not.
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0"], &["bind", "0.0.0.0:0"]) else {
        return;
    };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "bind error: PermissionDenied\n");
    assert_contains(&out.stderr, &["access denied: guest tried to listen on 0.0.0.0:", ", not allowed by --listen"]);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn listen_port_0_allows_any_port_on_that_ip() {
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0"], &["bind", "127.0.0.1:0"]) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{out:?}");
    let port: u16 = out
        .stdout
        .trim()
        .strip_prefix("bound 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected stdout {out:?}"));
    assert_ne!(port, 0);
    assert_eq!(out.stderr, "");
}

#[test]
fn connect_without_connect_flag_is_denied() {
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0"], &["connect", "127.0.0.1:9"]) else {
        return;
    };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "connect error: PermissionDenied\n");
    assert_eq!(
        out.stderr,
        "trio-wasi-host: access denied: guest tried to connect to 127.0.0.1:9, not allowed by --connect\n"
    );
}

#[test]
fn connect_to_an_allowed_address_works() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let Some(out) = run_guest(&["--connect", &addr], &["connect", &addr]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "connected\n");
    assert_eq!(server.join().unwrap(), "hi from the guest");
}

#[test]
fn listen_and_connect_work_with_components() {
    // The preview 1 refusal must not leak into components.
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:0"], &["exit", "0"]) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{out:?}");
}

#[test]
fn fuel_applies_to_components() {
    let Some(out) = run_guest(&["--fuel", "1000"], &["argv"]) else { return };
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest ran out of fuel (1000 units)\n");
}

#[test]
fn a_denial_with_stderr_unwritable_keeps_the_guest_status() {
    let Some(guest) = guest() else { return };
    for (name, stderr) in
        [("/dev/full", full_stderr as fn() -> std::process::Stdio), ("closed pipe", closed_pipe_stderr)]
    {
        let args = ["run".as_ref(), guest.as_os_str(), "--".as_ref(), "bind".as_ref(), "0.0.0.0:80".as_ref()];
        // The guest's bind fails and it exits 1; the host's denial line
        // cannot be written, which must not make it panic (101).
        assert_eq!(host_status_with_stderr(args, stderr()), Some(1), "{name}");
    }
}

#[test]
fn denial_lines_are_capped_per_run() {
    let cap = trio_wasi_host::MAX_DENIAL_LINES;
    let Some(out) = run_guest(&[], &["bind-many", &(cap + 150).to_string(), "0.0.0.0:80"]) else {
        return;
    };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("denied {0} of {0}\n", cap + 150));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), cap + 2, "{out:?}");
    let denial = "trio-wasi-host: access denied: guest tried to bind 0.0.0.0:80, not allowed by --listen";
    assert!(lines[..cap].iter().all(|l| *l == denial), "{out:?}");
    assert_eq!(lines[cap], format!("trio-wasi-host: further denials are not printed (at most {cap} per run)"));
    assert_eq!(lines[cap + 1], "trio-wasi-host: 150 more denials were not printed");
}

#[test]
fn denials_under_the_cap_are_all_printed_without_a_summary() {
    let cap = trio_wasi_host::MAX_DENIAL_LINES;
    let Some(out) = run_guest(&[], &["bind-many", &cap.to_string(), "0.0.0.0:80"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stderr.lines().count(), cap, "{out:?}");
    assert!(!out.stderr.contains("not printed"), "{out:?}");
}

/// The host's line for a refused lookup of `name`.
fn lookup_denial(name: &str) -> String {
    format!(
        "trio-wasi-host: access denied: guest tried to look up the name \"{name}\", not allowed without --allow-dns\n"
    )
}

#[test]
fn name_lookup_needs_allow_dns_even_with_connect() {
    // `--connect` used to switch name lookups on: a guest could send any
    // name it liked to the host's resolver.
    for flags in [&[][..], &["--connect", "127.0.0.1:0"][..]] {
        let Some(out) = run_guest(flags, &["lookup", "localhost"]) else { return };
        assert_eq!(out.status, Some(1), "{out:?}");
        assert_eq!(out.stdout, "lookup error\n", "{out:?}");
        assert!(out.stderr.starts_with(&lookup_denial("localhost")), "{out:?}");
        assert_eq!(out.stderr.matches("trio-wasi-host:").count(), 1, "{out:?}");
    }
}

#[test]
fn name_lookup_with_allow_dns_resolves() {
    let Some(out) = run_guest(&["--allow-dns"], &["lookup", "localhost"]) else { return };
    assert_eq!(out.status, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("resolved "), "{out:?}");
    assert!(out.stdout.contains("127.0.0.1") || out.stdout.contains("::1"), "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn ip_literals_resolve_without_allow_dns() {
    for (name, ip) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
        let Some(out) = run_guest(&[], &["lookup", name]) else { return };
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(out.stdout, format!("resolved {ip}\n"), "{out:?}");
        assert_eq!(out.stderr, "");
    }
}

#[test]
fn a_refused_name_is_shown_escaped() {
    let Some(out) = run_guest(&[], &["lookup", "a\nb\u{1b}[2J.example"]) else { return };
    assert_eq!(out.status, Some(1), "{out:?}");
    let host_lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("trio-wasi-host:")).collect();
    assert_eq!(host_lines, [lookup_denial("a\\nb\\u{1b}[2J.example").trim_end()], "{out:?}");
    assert!(!out.stderr.contains('\u{1b}'), "{out:?}");
}

#[test]
fn udp_is_refused_with_a_host_line() {
    let Some(out) = run_guest(&["--listen", "127.0.0.1:0", "--connect", "127.0.0.1:0"], &["udp", "127.0.0.1:0"]) else {
        return;
    };
    assert_eq!(out.status, Some(1), "{out:?}");
    assert_eq!(out.stdout, "udp error: PermissionDenied\n", "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: access denied: guest tried to create a UDP socket; UDP is never allowed\n");
}

#[test]
fn allow_dns_with_a_preview_1_module_is_refused_by_name() {
    let guest = util::wat_guest("p1_allow_dns", r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    let out = host(["run".as_ref(), guest.as_os_str(), "--allow-dns".as_ref()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &["--allow-dns is not supported for it"]);
}
