//! A TLS echo server: `echo_server` over TLS (rustls, ring provider; TLS 1.2
//! and 1.3). Every connection gets its own task, does its handshake there
//! (within the handshake timeout) and has what it sends echoed back (16 KiB
//! buffer); when the client sends `close_notify` the server answers with its
//! own and closes. Serves until Ctrl-C, then cancels every connection task,
//! prints a summary and exits with status 130 (1 on any other error).
//!
//! `cargo run -p trio --example tls_echo_server [-- [--handshake-timeout
//! DURATION] ADDR [CERT.pem KEY.pem]]` (default `127.0.0.1:9443`; port 0
//! lets the OS choose).
//!
//! - `--handshake-timeout DURATION` (`10s` by default; `500ms`, `2s`, `1m`,
//!   or `off`): a client that has not finished its TLS handshake that long
//!   after it was accepted is dropped (`serve_tls_with` with
//!   `ServeOptions::handshake_timeout`). Without it, clients that connect
//!   and send nothing would hold their descriptors forever, and once the
//!   process is out of descriptors no other client would get in.
//!
//! - Without PEM files it makes a self-signed certificate for `localhost`
//!   (and `127.0.0.1`, `::1`) at start, writes it to a temporary PEM file
//!   and prints its path, with a client command that trusts it, such as
//!   `openssl s_client -connect 127.0.0.1:9443 -servername localhost
//!   -CAfile PATH`.
//! - With `CERT.pem` (the chain, leaf first) and `KEY.pem` (PKCS#8, PKCS#1
//!   or SEC1) it serves those.
//!
//! A failed or timed-out handshake (a client that does not trust the
//! certificate, plain text, a scanner, a client that sends nothing) or any
//! other failure only ends its own connection: its error is printed and the
//! server keeps going.
//!
//! Its lines never stop it: they go through `common::say` (a writer thread
//! behind a queue of 1,024 lines), so a closed stdout (`tls_echo_server |
//! head -1`) or a full pipe nobody reads only loses lines (the summary says
//! how many), never a connection.

mod common;

use common::{say, warn};

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use trio::abc::{AsyncResource, ReceiveStream, SendStream};
use trio::net::{ServeOptions, TcpStream};
use trio::tls::{TlsStream, serve_tls_with, server_config};
use trio::{Error, open_nursery};

/// How long a client may take for its TLS handshake, by default.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Totals, shared by the connection tasks.
#[derive(Default)]
struct Stats {
    accepted: Cell<u64>,
    handshakes_failed: Cell<u64>,
    open: Cell<u64>,
    bytes: Cell<u64>,
}

/// Echoes until the peer sends `close_notify`, then sends ours and closes;
/// returns the byte count.
async fn echo(stream: &TlsStream<TcpStream>, stats: &Stats) -> trio::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = stream.receive_some(&mut buf).await?;
        if n == 0 {
            stream.aclose().await?;
            return Ok(total);
        }
        stream.send_all(&buf[..n]).await?;
        total += n as u64;
        stats.bytes.set(stats.bytes.get() + n as u64);
    }
}

fn peer(stream: &TlsStream<TcpStream>) -> String {
    stream.transport().peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

/// A connection whose handshake failed or timed out (`serve_tls_with`
/// drops it after this).
fn handshake_failed(stream: &TlsStream<TcpStream>, e: &Error, timeout: Option<Duration>, stats: &Stats) {
    stats.accepted.set(stats.accepted.get() + 1);
    stats.handshakes_failed.set(stats.handshakes_failed.get() + 1);
    let peer = peer(stream);
    match (e, timeout) {
        (Error::TooSlow, Some(t)) => warn(format!("{peer}: no TLS handshake within {t:?}: dropped")),
        _ => warn(format!("{peer}: TLS handshake failed: {e}")),
    }
}

/// One connection, its handshake done (by `serve_tls_with`). Only a
/// cancellation (Ctrl-C) comes out of it: every other error is this
/// connection's alone, and is printed.
async fn connection(stream: TlsStream<TcpStream>, stats: &Stats) -> trio::Result<()> {
    stats.accepted.set(stats.accepted.get() + 1);
    stats.open.set(stats.open.get() + 1);
    let peer = peer(&stream);
    let version = stream.protocol_version().map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
    let suite = stream.cipher_suite().map_or_else(|| "?".to_owned(), |s| format!("{s:?}"));
    let sni = stream.server_name().unwrap_or_else(|| "(no SNI)".to_owned());
    say(format!("{peer}: connected, handshake done: {version}, {suite}, server name {sni}"));
    match echo(&stream, stats).await {
        Ok(bytes) => say(format!("{peer}: closed after echoing {bytes} bytes")),
        // Ctrl-C: the run is shutting down (this one stays counted as open
        // at the shutdown).
        Err(e @ Error::Cancelled(_)) => return Err(e),
        // Only this connection failed (for example a client that closed
        // TCP without `close_notify`): report it, keep serving.
        Err(e) => warn(format!("{peer}: {e}")),
    }
    stats.open.set(stats.open.get() - 1);
    Ok(())
}

/// Where the certificate came from: generated (its PEM file, to delete at
/// the end) or the user's files (the certificate's).
enum Identity {
    Generated(PathBuf),
    Files(PathBuf),
}

/// A fresh self-signed certificate for `localhost` and the loopback
/// addresses; its PEM goes to a temporary file so that clients can trust it.
fn generate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, PathBuf), String> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| format!("generating a certificate: {e}"))?;
    let path = std::env::temp_dir().join(format!("trio-tls-echo-{}.pem", std::process::id()));
    std::fs::write(&path, ck.cert.pem()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| format!("the key: {e}"))?;
    Ok((vec![ck.cert.der().clone()], key, path))
}

fn load(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((chain, key))
}

/// How to talk to the server from a shell, trusting `ca`.
fn print_client_commands(addr: SocketAddr, ca: &Path) {
    // A wildcard address is reachable on loopback.
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "::1".to_owned(),
        ip => ip.to_string(),
    };
    let host_port = if ip.contains(':') { format!("[{ip}]:{}", addr.port()) } else { format!("{ip}:{}", addr.port()) };
    let ca = ca.display();
    say("try it (type lines; Ctrl-D sends close_notify and ends):");
    say(format!(
        "  openssl s_client -connect {host_port} -servername localhost -CAfile {ca} -verify_return_error -quiet -no_ign_eof"
    ));
    say("or once, from python3:");
    say(format!(
        "  python3 -c \"import socket,ssl; c=ssl.create_default_context(cafile='{ca}'); \
         s=c.wrap_socket(socket.create_connection(('{ip}',{port})),server_hostname='localhost'); \
         s.sendall(b'hello tls'); print(s.version(), s.recv(100)); s.unwrap().close()\"",
        port = addr.port()
    ));
}

/// What the server is told to do.
struct Settings {
    addr: SocketAddr,
    handshake_timeout: Option<Duration>,
}

async fn serve(settings: &Settings, config: Arc<rustls::ServerConfig>, ca: &Path, stats: &Stats) -> trio::Result<()> {
    let (addr, timeout) = (settings.addr, settings.handshake_timeout);
    let host = addr.ip().to_string();
    open_nursery(async |n| {
        let handler = async |stream: TlsStream<TcpStream>| connection(stream, stats).await;
        let options = ServeOptions::new()
            .handshake_timeout(timeout)
            .on_handshake_error(|stream: &TlsStream<TcpStream>, e| handshake_failed(stream, e, timeout, stats));
        let addrs = n
            .start(async move |status| {
                match serve_tls_with(handler, addr.port(), config, Some(&host), options, Some(status)).await? {}
            })
            .await?;
        for a in &addrs {
            say(format!("TLS echo server listening on {a} (Ctrl-C to stop)"));
        }
        match timeout {
            Some(t) => say(format!("handshake timeout: {t:?}")),
            None => say("no handshake timeout (--handshake-timeout off)"),
        }
        print_client_commands(addrs[0], ca);
        Ok(())
    })
    .await?;
    Ok(())
}

fn usage(why: &str) -> ! {
    warn(format!("usage: tls_echo_server [--handshake-timeout DURATION] [IP:PORT [CERT.pem KEY.pem]]  ({why})"));
    common::finish(Duration::from_millis(500));
    std::process::exit(2);
}

/// `off`, or a number with a unit: `500ms`, `10s`, `1.5s`, `2m`.
fn parse_timeout(text: &str) -> Result<Option<Duration>, String> {
    if text == "off" {
        return Ok(None);
    }
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => return Err(format!("{text:?}: give a unit (ms, s or m), or off")),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?}: not a number"))?;
    Duration::try_from_secs_f64(value * scale)
        .ok()
        .filter(|d| !d.is_zero())
        .map(Some)
        .ok_or_else(|| format!("{text:?}: out of range (more than 0, or off)"))
}

/// The flags come first; the rest are the positional arguments.
fn parse_args(mut args: Vec<String>) -> (Option<Duration>, Vec<String>) {
    let mut timeout = Some(DEFAULT_HANDSHAKE_TIMEOUT);
    loop {
        let value = match args.first().map(String::as_str) {
            Some("--handshake-timeout") if args.len() >= 2 => args.drain(..2).nth(1),
            Some("--handshake-timeout") => usage("--handshake-timeout needs a DURATION"),
            Some(a) if a.starts_with("--handshake-timeout=") => {
                args.remove(0).split_once('=').map(|(_, v)| v.to_owned())
            }
            Some(a) if a.starts_with("--") => usage(&format!("unknown option {a:?}")),
            _ => return (timeout, args),
        };
        timeout = parse_timeout(value.as_deref().unwrap_or("")).unwrap_or_else(|e| usage(&e));
    }
}

fn main() {
    let (handshake_timeout, args) = parse_args(std::env::args().skip(1).collect());
    let arg = args.first().cloned().unwrap_or_else(|| "127.0.0.1:9443".to_owned());
    let addr: SocketAddr = arg.parse().unwrap_or_else(|e| usage(&format!("{arg:?}: {e}")));
    let loaded = match &args[..] {
        [] | [_] => generate().map(|(chain, key, path)| (chain, key, Identity::Generated(path))),
        [_, cert, key] => {
            load(Path::new(cert), Path::new(key)).map(|(chain, key)| (chain, key, Identity::Files(cert.into())))
        }
        _ => usage("give both CERT.pem and KEY.pem, or neither"),
    };
    let (chain, key, identity) = loaded.unwrap_or_else(|e| {
        warn(format!("tls_echo_server: {e}"));
        common::finish(Duration::from_millis(500));
        std::process::exit(1);
    });
    let ca = match &identity {
        Identity::Generated(path) => {
            say(format!("self-signed certificate for localhost, 127.0.0.1 and ::1 written to {}", path.display()));
            path.as_path()
        }
        Identity::Files(cert) => {
            say(format!(
                "serving {} (clients must trust its issuer: the file itself if self-signed; the commands below \
                 assume it is valid for localhost)",
                cert.display()
            ));
            cert.as_path()
        }
    };
    let config = match server_config(chain, key) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn(format!("tls_echo_server: {e}"));
            common::finish(Duration::from_millis(500));
            std::process::exit(1);
        }
    };
    let stats = Stats::default();
    let settings = Settings { addr, handshake_timeout };
    let result = trio::run(serve(&settings, config, ca, &stats));
    if let Identity::Generated(path) = &identity {
        let _ = std::fs::remove_file(path);
    }
    let summary = format!(
        "connections: {} served ({} failed their handshake or ran out of time), {} still open at the end; {} bytes echoed; {} output lines dropped",
        stats.accepted.get(),
        stats.handshakes_failed.get(),
        stats.open.get(),
        stats.bytes.get(),
        common::dropped()
    );
    let limit = Duration::from_millis(500);
    match result {
        Err(Error::KeyboardInterrupt) => {
            say(format!("\ninterrupted: every connection task was cancelled; {summary}"));
            common::finish(limit);
            std::process::exit(130);
        }
        Err(e) => {
            warn(format!("TLS echo server failed: {e}; {summary}"));
            common::finish(limit);
            std::process::exit(1);
        }
        Ok(()) => {}
    }
}
