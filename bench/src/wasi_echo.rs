//! The WASI echo benchmark: the same echo server source
//! (`examples/wasi/src/bin/echo_server.rs`) built natively and built as a
//! preview 2 component running inside `trio-wasi-host` (wasmtime 48), each
//! in its own process, driven by the echo benchmark's load client in this
//! process. Reported per case: round trips per second (ratio wasi/native)
//! and the server process's CPU time per round trip (from
//! `/proc/PID/stat`, so coarse: 10 ms ticks over the window).
//!
//! Needs both builds first (the bench says so if they are missing):
//! `cargo build -p trio-wasi-host --profile wasi-host`,
//! `cargo build -p trio-wasi-examples --bin echo_server --release` and
//! `cargo build -p trio-wasi-examples --bin echo_server --release --target wasm32-wasip2`.
//! `TRIO_WASI_HOST` overrides the host's path.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::echo::load::Load;
use crate::echo::server::{ChildGuard, die_with_parent};

/// The build directory: `CARGO_TARGET_DIR`, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// One server process under test.
struct Server {
    child: ChildGuard,
    addr: SocketAddr,
}

impl Server {
    fn spawn(mut cmd: Command) -> Result<Server, String> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let mut child = ChildGuard(cmd.spawn().map_err(|e| format!("starting {cmd:?}: {e}"))?);
        let stdout = child.0.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        // Drain the rest (a line per closed connection), so a full pipe
        // never stalls the server.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("the server said {line:?}, not `listening on ADDR`"))?;
        Ok(Server { child, addr })
    }

    /// User + system CPU time so far, from `/proc/PID/stat`.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.0.id())).unwrap_or_default();
        // Fields after the command name (which may contain spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        // utime and stime are fields 14 and 15 of the whole line; `f`
        // starts at field 4 (the state, field 3, is not numeric).
        let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / hz)
    }
}

/// Round trips per second and CPU per round trip for one server and case.
fn measure(server: &Server, conns: usize, size: usize, window: Duration) -> Result<(f64, f64), String> {
    let mut load = Load::connect(server.addr, conns, size).map_err(|e| format!("connecting: {e}"))?;
    load.run(Duration::from_millis(300), true).map_err(|e| e.to_string())?;
    let before = server.cpu();
    let phase = load.run(window, false).map_err(|e| e.to_string())?;
    let cpu = server.cpu().saturating_sub(before);
    let rts = phase.round_trips.max(1) as f64;
    Ok((phase.round_trips as f64 / phase.elapsed.as_secs_f64(), cpu.as_nanos() as f64 / rts))
}

/// Runs the comparison (see the module docs).
pub(crate) fn run(quick: bool) {
    let target = target_dir();
    let host = std::env::var_os("TRIO_WASI_HOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("wasi-host/trio-wasi-host"));
    let guest = target.join("wasm32-wasip2/release/echo_server.wasm");
    let native = target.join("release/echo_server");
    for (what, path) in [("host", &host), ("wasip2 guest", &guest), ("native server", &native)] {
        if !path.exists() {
            println!("wasi echo: SKIPPED, no {what} at {} (see `trio-bench`'s docs for the builds)", path.display());
            return;
        }
    }
    let cases: &[(usize, usize)] = if quick { &[(1, 64), (100, 64)] } else { &[(1, 64), (100, 64), (100, 4096)] };
    let window = Duration::from_millis(if quick { 1000 } else { 2000 });
    println!("\n## echo: native vs wasip2 component in trio-wasi-host (same source, same load client)\n");
    println!(
        "{:<18} {:>14} {:>14} {:>7} {:>14} {:>14}",
        "case", "native rt/s", "wasi rt/s", "ratio", "native µs/rt", "wasi µs/rt"
    );
    for &(conns, size) in cases {
        let start_native = || {
            let mut cmd = Command::new(&native);
            cmd.arg("127.0.0.1:0");
            Server::spawn(cmd)
        };
        let start_wasi = || {
            let mut cmd = Command::new(&host);
            cmd.args(["run"]).arg(&guest).args(["--listen", "127.0.0.1:0", "--", "127.0.0.1:0"]);
            Server::spawn(cmd)
        };
        let result = start_native()
            .and_then(|s| measure(&s, conns, size, window))
            .and_then(|n| start_wasi().and_then(|s| measure(&s, conns, size, window)).map(|w| (n, w)));
        match result {
            Ok(((n_rate, n_cpu), (w_rate, w_cpu))) => println!(
                "{:<18} {:>14.0} {:>14.0} {:>7.2} {:>14.1} {:>14.1}",
                format!("{conns} x {size} B"),
                n_rate,
                w_rate,
                w_rate / n_rate,
                n_cpu / 1e3,
                w_cpu / 1e3
            ),
            Err(e) => println!("{conns} x {size} B: failed: {e}"),
        }
    }
}
