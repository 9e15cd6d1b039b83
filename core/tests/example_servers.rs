//! The example servers' output can neither kill nor stall them (issue 18,
//! item 3): each example is built with `cargo build --example` (into
//! `CARGO_TARGET_DIR`, else the workspace's `target/`), run with its stdout
//! a pipe, and driven over loopback.
//!
//! - `*_survives_closed_stdout`: the test reads the line with the address,
//!   then closes its end of the pipe (as `server | head -1` does); two
//!   connections after that are both served. (`println!` used to panic on
//!   the first one's "connected" line, ending the server.)
//! - `*_survives_unread_stdout`: nobody reads stdout after the address
//!   line; 2,000 short connections, many more lines than a pipe holds, are
//!   all served. (The server used to freeze once the pipe was full, after
//!   about 900 connections.)
//!
//! The same for `tls_echo_server` (its generated certificate is trusted
//! through the PEM file it names; 1,000 connections, of two lines each).
//!
//! And (issue 18 item 5) `tls_echo_server` with 64 descriptors
//! (`RLIMIT_NOFILE`) and `--handshake-timeout 1s` is not locked out by 60
//! clients that connect and send nothing: a real client is served once
//! their handshake timeout drops them, and each of them sees its
//! connection closed. (Before the timeout the server held them forever
//! and served no one else.)

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => workspace().join(d), // `join` keeps an absolute path as is
        _ => workspace().join("target"),
    }
}

/// Builds example `name` of this package (once per test binary, one build
/// at a time); its path.
fn build_example(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["build", "-q", "-p", "trio", "--example", name])
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot run cargo");
    let status = wait_timeout(&mut child, BUILD_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("building example {name} took more than {BUILD_TIMEOUT:?}")
    });
    assert!(status.success(), "building example {name} failed: {status}");
    target_dir().join("debug").join("examples").join(name)
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
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

/// A running example, killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(example: &str, args: &[&str]) -> (Self, ChildStdout) {
        Self::start_limited(example, args, None)
    }

    /// As `start`, with the soft descriptor limit (`RLIMIT_NOFILE`) set to
    /// `nofile` in the child.
    fn start_limited(example: &str, args: &[&str], nofile: Option<u64>) -> (Self, ChildStdout) {
        use std::os::unix::process::CommandExt;
        let path = build_example(example);
        let mut command = Command::new(&path);
        if let Some(n) = nofile {
            let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
            // SAFETY: `setrlimit` is async-signal-safe and touches only the
            // child's limit (between fork and exec).
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        (Self { child }, stdout)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Reads stdout byte by byte (nothing past the line it wants stays buffered
/// here) until a line containing `marker`; the address after it, and
/// every line read.
fn read_address(stdout: &ChildStdout, marker: &str) -> (SocketAddr, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    // The reading thread gets the pipe and gives it back with the address.
    let mut out = BufReader::with_capacity(1, dup(stdout));
    std::thread::spawn(move || {
        let mut seen = String::new();
        let found = loop {
            let mut line = String::new();
            match out.read_line(&mut line) {
                Ok(0) | Err(_) => break Err(format!("no {marker:?} line in {seen:?}")),
                Ok(_) => {}
            }
            seen.push_str(&line);
            if let Some(rest) = line.split(&marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").parse::<SocketAddr>();
                break addr.map(|a| (a, seen.clone())).map_err(|e| format!("{line:?}: {e}"));
            }
        };
        drop(out); // before the test goes on: it may close the pipe
        let _ = tx.send(found);
    });
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("no address line within {IO_TIMEOUT:?}"),
    }
}

/// A second handle on the same pipe (the reader thread owns it; `stdout`
/// stays with the test, which decides when the pipe closes).
fn dup(stdout: &ChildStdout) -> std::fs::File {
    use std::os::fd::AsFd;
    std::fs::File::from(stdout.as_fd().try_clone_to_owned().expect("dup stdout"))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
    s
}

/// Sends `msg` on a fresh connection, reads it back, closes.
fn echo_once(addr: SocketAddr, msg: &[u8]) -> Result<(), String> {
    let mut s = connect(addr);
    s.write_all(msg).map_err(|e| format!("send: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).map_err(|e| format!("receive: {e}"))?;
    if back != msg {
        return Err(format!("echoed {back:?}, sent {msg:?}"));
    }
    Ok(())
}

#[test]
fn echo_server_survives_closed_stdout() {
    let (mut server, stdout) = Server::start("echo_server", &["127.0.0.1:0"]);
    let (addr, _) = read_address(&stdout, "listening on ");
    drop(stdout); // `| head -1`
    for i in 0..2 {
        echo_once(addr, format!("hello {i}").as_bytes())
            .unwrap_or_else(|e| panic!("connection {i} after stdout closed: {e}"));
    }
    assert!(server.is_running(), "the server ended");
}

#[test]
fn echo_server_survives_unread_stdout() {
    let (mut server, stdout) = Server::start("echo_server", &["127.0.0.1:0"]);
    let (addr, _) = read_address(&stdout, "listening on ");
    // `stdout` stays open and unread from here on. A frozen server fails
    // the connection it froze on (each has its own I/O timeout).
    for i in 0..2000 {
        echo_once(addr, b"x").unwrap_or_else(|e| panic!("connection {i} with stdout unread: {e}"));
    }
    assert!(server.is_running(), "the server ended");
    drop(stdout);
}

#[cfg(feature = "tls")]
mod tls {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::process::ChildStdout;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::{IO_TIMEOUT, Server, connect, read_address};

    /// The `tls_echo_server` example with a generated certificate: the server,
    /// its stdout, its address and a client configuration that trusts it.
    fn start_tls() -> (Server, ChildStdout, SocketAddr, Arc<rustls::ClientConfig>) {
        start_tls_with(&["127.0.0.1:0"], None)
    }

    /// As `start_tls`, with `args` and a descriptor limit.
    fn start_tls_with(
        args: &[&str],
        nofile: Option<u64>,
    ) -> (Server, ChildStdout, SocketAddr, Arc<rustls::ClientConfig>) {
        let (server, stdout) = Server::start_limited("tls_echo_server", args, nofile);
        let (addr, seen) = read_address(&stdout, "listening on ");
        let pem = seen
            .lines()
            .find_map(|l| l.split("written to ").nth(1))
            .unwrap_or_else(|| panic!("no certificate path in {seen:?}"));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pem.trim()).expect("the PEM file") {
            roots.add(cert.expect("a certificate")).expect("a usable certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, stdout, addr, Arc::new(config))
    }

    /// One TLS connection: `msg` echoed, then `close_notify` both ways.
    fn tls_echo_once(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, msg: &[u8]) -> Result<(), String> {
        let name = ServerName::try_from("localhost").expect("a server name");
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| format!("client: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, connect(addr));
        tls.write_all(msg).map_err(|e| format!("send: {e}"))?;
        let mut back = vec![0u8; msg.len()];
        tls.read_exact(&mut back).map_err(|e| format!("receive: {e}"))?;
        if back != msg {
            return Err(format!("echoed {back:?}, sent {msg:?}"));
        }
        tls.conn.send_close_notify();
        tls.flush().map_err(|e| format!("close_notify: {e}"))?;
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).map_err(|e| format!("the server's close_notify: {e}"))?;
        Ok(())
    }

    #[test]
    fn tls_echo_server_survives_closed_stdout() {
        let (mut server, stdout, addr, config) = start_tls();
        drop(stdout); // `| head`
        for i in 0..2 {
            tls_echo_once(addr, &config, format!("hello {i}").as_bytes())
                .unwrap_or_else(|e| panic!("connection {i} after stdout closed: {e}"));
        }
        assert!(server.is_running(), "the server ended");
    }

    #[test]
    fn tls_echo_server_survives_unread_stdout() {
        let (mut server, stdout, addr, config) = start_tls();
        // `stdout` stays open and unread from here on (each connection has
        // its own I/O timeout).
        for i in 0..1000 {
            tls_echo_once(addr, &config, b"x").unwrap_or_else(|e| panic!("connection {i} with stdout unread: {e}"));
        }
        assert!(server.is_running(), "the server ended");
        drop(stdout);
    }

    /// The review's case: 60 clients connect and send nothing to a server
    /// with 64 descriptors, which runs out of them (the last idle clients
    /// and the real one wait in the listen queue). With a 1 s handshake
    /// timeout the idle ones are dropped (each sees its connection closed,
    /// within its read timeout) and the real client is served.
    #[test]
    fn tls_echo_server_drops_idle_clients_and_serves_with_64_descriptors() {
        let (mut server, stdout, addr, config) =
            start_tls_with(&["--handshake-timeout", "1s", "127.0.0.1:0"], Some(64));
        let idle: Vec<_> = (0..60).map(|_| connect(addr)).collect();
        // Each read below has its own timeout (10 s): a server that never
        // drops the idle clients fails the first of them.
        tls_echo_once(addr, &config, b"let me in")
            .unwrap_or_else(|e| panic!("a real client behind 60 idle ones (1 s handshake timeout): {e}"));
        for (i, mut c) in idle.into_iter().enumerate() {
            let mut buf = [0u8; 16];
            match c.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => {
                    panic!("idle client {i}: expected the server to close it within {IO_TIMEOUT:?}, got {other:?}")
                }
            }
        }
        tls_echo_once(addr, &config, b"and again").unwrap_or_else(|e| panic!("a real client afterwards: {e}"));
        assert!(server.is_running(), "the server ended");
        drop(stdout);
    }
}
