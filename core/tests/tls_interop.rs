//! TLS against peers nobody here wrote: Python's `ssl` module (OpenSSL
//! underneath) as client and as server, and `openssl s_client`. Each test
//! checks for its tool at run time and, if it is missing, says so loudly
//! ("SKIPPED: ...") and passes.
//!
//! A separate process is involved, so these run on the real clock; every
//! wait is bounded by `fail_after` (and the scripts' own socket timeouts),
//! and a child still running when a test fails is killed (`run_process`
//! kills on cancellation, a dropped `Process` is killed).
#![cfg(all(feature = "tls", unix))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ProtocolVersion, RootCertStore};
use trio::abc::{AsyncResource, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::subprocess::{CompletedProcess, Redirect, RunProcessOptions, StdioOptions, open_process, run_process};
use trio::tls::{TlsStream, client_config_with_roots, server_config};
use trio::{Error, Result, open_nursery};

/// The bound on every test's run (real time).
const LIMIT: Duration = Duration::from_secs(30);

/// Whether `python3` with its `ssl` module is here; if not, says so.
fn have_python() -> bool {
    let ok = Command::new("python3").args(["-c", "import ssl"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("\n**********\n*** SKIPPED: python3 not found (or it has no ssl module)\n**********\n");
    }
    ok
}

/// Whether the `openssl` command is here; if not, says so.
fn have_openssl() -> bool {
    let ok = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("\n**********\n*** SKIPPED: openssl not found\n**********\n");
    }
    ok
}

/// A self-signed certificate for "localhost", in DER and in PEM files in a
/// fresh directory (removed on drop).
struct Files {
    dir: PathBuf,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Files {
    fn new(test: &str) -> Files {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("trio-tls-interop-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Files { dir, cert: ck.cert.der().clone(), key_der: ck.signing_key.serialize_der() }
    }

    fn cert_pem(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_pem(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn server(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut cfg = server_config(vec![self.cert.clone()], key).unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut cfg = client_config_with_roots(roots);
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Reads up to and including the first `\n` (bounded by the caller's
/// deadline; a line longer than 64 KiB or an early end is an error).
async fn read_line<S: ReceiveStream>(s: &S) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if s.receive_some(&mut byte).await? == 0 {
            return Err(format!("end of stream after {:?}", String::from_utf8_lossy(&line)).into());
        }
        line.push(byte[0]);
        if line.len() > 65536 {
            return Err("line too long".into());
        }
    }
    Ok(String::from_utf8(line)?)
}

/// Runs `cmd` to its end (capturing its output, killing it if the test is
/// cancelled) and fails with its output if it did not succeed.
async fn run_checked(cmd: &mut Command, input: &[u8]) -> Result<CompletedProcess> {
    let opts = RunProcessOptions::new()
        .input(input.to_vec())
        .capture_stdout(true)
        .capture_stderr(true)
        .check(false)
        .kill_grace(Duration::from_millis(200));
    let out = run_process(cmd, opts).await?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes).lines().map(str::to_owned).collect()
}

// ---- Python's ssl client against our server ----

/// Connects to 127.0.0.1:argv[1] trusting argv[2] for "localhost", offers
/// ALPN "echo/1", sends a line and reads the echo, then either unwraps
/// (argv[3] == "unwrap": close_notify both ways, then plain text: reads a
/// line and answers one) or just closes the socket (no close_notify), as
/// many HTTPS clients do. argv[4] == "tls12" caps the version at TLS 1.2.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, cafile, ending, version = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cafile)
ctx.set_alpn_protocols(["echo/1"])
if version == "tls12":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
raw = socket.create_connection(("127.0.0.1", port), timeout=20)
s = ctx.wrap_socket(raw, server_hostname="localhost")
print("version", s.version())
print("alpn", s.selected_alpn_protocol())

def read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("end of stream after %r" % buf)
        buf += chunk
    return buf.decode().rstrip("\n")

s.sendall(b"hello from python\n")
print("echo", read_line(s))
if ending == "unwrap":
    plain = s.unwrap()
    print("plain", read_line(plain))
    plain.sendall(b"plain from python\n")
    plain.close()
else:
    s.close()
print("done")
"#;

/// Our server's side of `PY_CLIENT`: accepts one connection, echoes one
/// line, then ends as the client does.
async fn serve_python_client(files: &Files, unwrap: bool, tls12: bool, https_compatible: bool) -> Result<Vec<String>> {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    let port = listener.local_addr()?.port();
    let output = std::cell::RefCell::new(Vec::new());
    open_nursery(async |n| {
        n.spawn(async {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", PY_CLIENT, &port.to_string(), path_str(&files.cert_pem())])
                .arg(if unwrap { "unwrap" } else { "close" })
                .arg(if tls12 { "tls12" } else { "any" });
            let out = run_checked(&mut cmd, b"").await?;
            *output.borrow_mut() = lines(&out.stdout);
            Ok(())
        });
        let tcp = listener.accept().await?;
        let tls = TlsStream::server(tcp, files.server(&[b"echo/1"]))?.https_compatible(https_compatible);
        let line = read_line(&tls).await?;
        assert_eq!(line, "hello from python\n");
        assert_eq!(tls.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(tls.server_name().as_deref(), Some("localhost"), "Python sent SNI");
        let want = if tls12 { ProtocolVersion::TLSv1_2 } else { ProtocolVersion::TLSv1_3 };
        assert_eq!(tls.protocol_version(), Some(want));
        tls.send_all(line.as_bytes()).await?;
        if unwrap {
            let (plain, trailing) = tls.unwrap().await?;
            assert!(trailing.is_empty(), "Python waits for our plain text first");
            plain.send_all(b"plain from rust\n").await?;
            assert_eq!(read_line(&plain).await?, "plain from python\n");
            plain.aclose().await?;
        } else {
            // Python closes the socket without close_notify.
            let mut buf = [0u8; 16];
            let r = tls.receive_some(&mut buf).await;
            if https_compatible {
                assert_eq!(r?, 0, "https_compatible: a clean end");
            } else {
                assert!(matches!(r, Err(Error::Broken)), "expected a truncation (Broken), got {r:?}");
            }
            tls.aclose().await?;
        }
        Ok(())
    })
    .await?;
    Ok(output.into_inner())
}

/// Python's ssl client (TLS 1.3) against our server: echo, ALPN, then
/// `unwrap` on both sides and plain text both ways.
#[test]
fn python_client_against_our_server() {
    if !have_python() {
        return;
    }
    let files = Files::new("py-client");
    let out = trio::run(trio::fail_after(LIMIT, serve_python_client(&files, true, false, false))).unwrap();
    assert_eq!(
        out,
        ["version TLSv1.3", "alpn echo/1", "echo hello from python", "plain plain from rust", "done"],
        "Python's output"
    );
}

/// Python's ssl client capped at TLS 1.2, closing its socket without
/// `close_notify`: our https_compatible server sees a clean end, a strict
/// one a truncation.
#[test]
fn python_tls12_client_closing_abruptly() {
    if !have_python() {
        return;
    }
    let files = Files::new("py-client-12");
    for https in [true, false] {
        let out = trio::run(trio::fail_after(LIMIT, serve_python_client(&files, false, true, https))).unwrap();
        assert_eq!(out, ["version TLSv1.2", "alpn echo/1", "echo hello from python", "done"], "Python's output");
    }
}

// ---- our client against Python's ssl server ----

/// Serves one TLS connection on 127.0.0.1 (port 0, printed first) with the
/// certificate argv[1] and key argv[2], ALPN "echo/1": reads a line,
/// answers it in upper case, unwraps, reads a plain line and answers one.
const PY_SERVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.set_alpn_protocols(["echo/1"])
seen = []
ctx.sni_callback = lambda sock, name, c: seen.append(name)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(20)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.settimeout(20)
s = ctx.wrap_socket(conn, server_side=True)

def read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("end of stream after %r" % buf)
        buf += chunk
    return buf

line = read_line(s)
s.sendall(line.upper())
print("got", line.decode().rstrip("\n"))
print("alpn", s.selected_alpn_protocol())
print("version", s.version())
print("sni", seen[0] if seen else None)
plain = s.unwrap()
print("plain", read_line(plain).decode().rstrip("\n"))
plain.sendall(b"plain from python\n")
plain.close()
srv.close()
print("done", flush=True)
"#;

/// Our client against Python's ssl server: the certificate is checked
/// against our roots, ALPN agreed, a round trip, then `unwrap` on both
/// sides and plain text both ways.
#[test]
fn our_client_against_python_server() {
    if !have_python() {
        return;
    }
    let files = Files::new("py-server");
    trio::run(trio::fail_after(LIMIT, async {
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", PY_SERVER, path_str(&files.cert_pem()), path_str(&files.key_pem())]);
        // Dropped (and so killed) if anything below fails.
        let mut process = open_process(
            &mut cmd,
            StdioOptions::new().stdin(Redirect::Null).stdout(Redirect::Pipe).stderr(Redirect::Stdout),
        )?;
        let stdout = process.stdout.take().expect("piped");
        let first = read_line(&stdout).await?;
        let port: u16 = first.trim().parse().map_err(|e| format!("not a port: {first:?}: {e}"))?;

        let tcp = TcpStream::connect(([127, 0, 0, 1], port).into()).await?;
        let tls = TlsStream::client(tcp, "localhost", files.client(&[b"h2", b"echo/1"]))?;
        tls.send_all(b"hello from rust\n").await?;
        assert_eq!(read_line(&tls).await?, "HELLO FROM RUST\n");
        assert_eq!(tls.alpn_protocol().as_deref(), Some(&b"echo/1"[..]), "Python picked its protocol");
        assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(tls.peer_certificates().map(|c| c[0].clone()), Some(files.cert.clone()));
        let (plain, trailing) = tls.unwrap().await?;
        assert!(trailing.is_empty(), "Python waits for our plain text first");
        plain.send_all(b"plain from rust\n").await?;
        assert_eq!(read_line(&plain).await?, "plain from python\n");
        let mut end = [0u8; 16];
        assert_eq!(plain.receive_some(&mut end).await?, 0, "Python closed");
        plain.aclose().await?;

        let mut rest = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let k = stdout.receive_some(&mut buf).await?;
            if k == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..k]);
        }
        let status = process.wait().await?;
        let rest = lines(&rest);
        assert!(status.success(), "Python failed: {status}: {rest:#?}");
        assert_eq!(
            rest,
            ["got hello from rust", "alpn echo/1", "version TLSv1.3", "sni localhost", "plain plain from rust", "done"],
            "Python's output"
        );
        Ok(())
    }))
    .unwrap();
}

/// Our client refuses Python's server when its certificate is not the one
/// trusted (another self-signed "localhost"), and Python hears why.
#[test]
fn our_client_refuses_python_server_with_an_untrusted_certificate() {
    if !have_python() {
        return;
    }
    let files = Files::new("py-server-untrusted");
    let other = Files::new("py-server-untrusted-other");
    trio::run(trio::fail_after(LIMIT, async {
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", PY_SERVER, path_str(&files.cert_pem()), path_str(&files.key_pem())]);
        let mut process = open_process(
            &mut cmd,
            StdioOptions::new().stdin(Redirect::Null).stdout(Redirect::Pipe).stderr(Redirect::Stdout),
        )?;
        let stdout = process.stdout.take().expect("piped");
        let port: u16 = read_line(&stdout).await?.trim().parse()?;
        let tcp = TcpStream::connect(([127, 0, 0, 1], port).into()).await?;
        let tls = TlsStream::client(tcp, "localhost", other.client(&[]))?;
        match tls.do_handshake().await {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                assert!(e.to_string().contains("invalid peer certificate"), "{e}");
            }
            other => panic!("expected a certificate error, got {other:?}"),
        }
        tls.aclose().await?;
        let mut rest = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let k = stdout.receive_some(&mut buf).await?;
            if k == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..k]);
        }
        let status = process.wait().await?;
        let text = String::from_utf8_lossy(&rest);
        assert!(!status.success(), "the handshake failed in Python too: {text}");
        assert!(text.to_lowercase().contains("alert") || text.contains("SSL"), "Python says why: {text}");
        Ok(())
    }))
    .unwrap();
}

// ---- openssl s_client against our server ----

/// Serves one connection: echoes one line, then closes (close_notify).
async fn serve_one_echo(listener: &TcpListener, config: Arc<rustls::ServerConfig>) -> Result<TlsStream<TcpStream>> {
    let tcp = listener.accept().await?;
    let tls = TlsStream::server(tcp, config)?;
    let line = read_line(&tls).await?;
    tls.send_all(line.as_bytes()).await?;
    tls.aclose().await?;
    Ok(tls)
}

/// `openssl s_client -quiet` verifying our certificate for "localhost"
/// sends a line from its stdin and prints our echo.
#[test]
fn openssl_s_client_against_our_server() {
    if !have_openssl() {
        return;
    }
    let files = Files::new("s-client");
    trio::run(trio::fail_after(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let port = listener.local_addr()?.port();
        let result = std::cell::RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                let mut cmd = Command::new("openssl");
                cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args(["-servername", "localhost", "-verify_hostname", "localhost", "-verify_return_error"])
                    .args(["-alpn", "echo/1", "-CAfile", path_str(&files.cert_pem()), "-quiet"]);
                *result.borrow_mut() = Some(run_checked(&mut cmd, b"hello from openssl\n").await?);
                Ok(())
            });
            let tls = serve_one_echo(&listener, files.server(&[b"echo/1"])).await?;
            assert_eq!(tls.alpn_protocol().as_deref(), Some(&b"echo/1"[..]));
            assert_eq!(tls.server_name().as_deref(), Some("localhost"));
            Ok(())
        })
        .await?;
        let out = result.into_inner().expect("s_client ran");
        assert_eq!(lines(&out.stdout), ["hello from openssl"], "stderr: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }))
    .unwrap();
}

/// `openssl s_client` expecting another host name refuses our certificate
/// (with `-verify_return_error`), and our server hears the alert.
#[test]
fn openssl_s_client_refuses_the_wrong_host_name() {
    if !have_openssl() {
        return;
    }
    let files = Files::new("s-client-wrong-name");
    trio::run(trio::fail_after(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let port = listener.local_addr()?.port();
        open_nursery(async |n| {
            n.spawn(async {
                let mut cmd = Command::new("openssl");
                cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                    .args(["-servername", "example.com", "-verify_hostname", "example.com", "-verify_return_error"])
                    .args(["-CAfile", path_str(&files.cert_pem()), "-quiet"]);
                let opts = RunProcessOptions::new()
                    .input(b"never echoed\n".to_vec())
                    .capture_stdout(true)
                    .capture_stderr(true)
                    .check(false)
                    .kill_grace(Duration::from_millis(200));
                let out = run_process(&mut cmd, opts).await?;
                assert!(!out.status.success(), "s_client accepted a certificate for another name");
                assert!(out.stdout.is_empty());
                Ok(())
            });
            let tcp = listener.accept().await?;
            let tls = TlsStream::server(tcp, files.server(&[]))?;
            match tls.do_handshake().await {
                Err(Error::Io(e)) => assert!(e.to_string().contains("TLS"), "{e}"),
                other => panic!("expected the handshake to fail, got {other:?}"),
            }
            assert_eq!(tls.server_name().as_deref(), Some("example.com"));
            tls.aclose().await?;
            Ok(())
        })
        .await?;
        Ok(())
    }))
    .unwrap();
}
