//! TLS failures and the less common features, after Trio's `test_ssl.py`:
//! every failed handshake gives a clear error (its kind, and a message that
//! says what went wrong), leaves the stream broken and its transport
//! closable, and never panics; truncation, cancellation, `Busy`, `Closed`,
//! `unwrap`, ALPN, SNI, TLS 1.2, `TlsListener`, `serve_tls` and
//! `open_tls_over_tcp_stream`.
//!
//! Memory streams run under a mock clock inside a deadline (a deadlock
//! fails at once with `TooSlow` instead of hanging); TCP tests run on
//! loopback under the mock clock without deadlines (the autojump must not
//! fire while a real socket is merely slow).
#![cfg(feature = "tls")]

mod util;

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream, Stream};
use trio::net::{TcpListener, TcpStream};
use trio::testing::{
    AsyncHook, MemoryReceiveStream, MemorySendStream, MemoryStream, memory_stream_pair, memory_stream_pump,
    wait_all_tasks_blocked,
};
use trio::tls::{
    TlsListener, TlsStream, client_config_with_roots, default_client_config, open_tls_over_tcp_stream, serve_tls,
    server_config,
};
use trio::{Error, Result, current_time, open_nursery};
use util::{mock_run, secs};

// ---- certificates and configurations ----

/// A self-signed certificate and its key.
struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Identity {
    /// Valid for `names` (DNS names or IP addresses), for centuries.
    fn new(names: &[&str]) -> Identity {
        let ck = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        Identity { cert: ck.cert.der().clone(), key: ck.signing_key.serialize_der() }
    }

    /// For "localhost", valid only between the two dates.
    fn with_validity(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Identity {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Identity { cert: cert.der().clone(), key: key.serialize_der() }
    }

    fn server(&self) -> ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        server_config(vec![self.cert.clone()], key).unwrap()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    /// A client trusting this certificate.
    fn client(&self) -> ClientConfig {
        client_config_with_roots(self.roots())
    }
}

fn localhost() -> Identity {
    Identity::new(&["localhost"])
}

// ---- helpers ----

/// A mock-clock run inside a deadline: with the autojump at zero, a
/// deadlock jumps straight to the deadline and fails with `TooSlow`.
/// Memory streams only.
fn run<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    mock_run(trio::fail_after(secs(600), f))
}

/// Runs both futures concurrently to their ends and returns both results
/// (a failure of one does not cancel the other).
async fn join2<A, B>(
    fa: impl Future<Output = Result<A>>,
    fb: impl Future<Output = Result<B>>,
) -> (Result<A>, Result<B>) {
    let ra = RefCell::new(None);
    let rb = RefCell::new(None);
    open_nursery(async |n| {
        n.spawn(async {
            *ra.borrow_mut() = Some(fa.await);
            Ok(())
        });
        n.spawn(async {
            *rb.borrow_mut() = Some(fb.await);
            Ok(())
        });
        Ok(())
    })
    .await
    .expect("join2 tasks do not fail");
    (ra.into_inner().expect("first finished"), rb.into_inner().expect("second finished"))
}

/// A client and a server over a memory stream pair.
fn memory_pair(
    client: ClientConfig,
    name: &str,
    server: ServerConfig,
) -> (TlsStream<MemoryStream>, TlsStream<MemoryStream>) {
    let (a, b) = memory_stream_pair();
    (TlsStream::client(a, name, Arc::new(client)).unwrap(), TlsStream::server(b, Arc::new(server)).unwrap())
}

/// `r` is `Err(Io(e))` of `kind` whose message mentions each of `needles`;
/// returns the message.
#[track_caller]
fn assert_io<T: std::fmt::Debug>(r: &Result<T>, kind: io::ErrorKind, needles: &[&str]) -> String {
    match r {
        Err(Error::Io(e)) => {
            let msg = e.to_string();
            assert_eq!(e.kind(), kind, "wrong kind for {msg:?}");
            for n in needles {
                assert!(msg.contains(n), "{msg:?} should mention {n:?}");
            }
            msg
        }
        other => panic!("expected Io({kind:?}) mentioning {needles:?}, got {other:?}"),
    }
}

/// After a failure: every operation fails with `Broken`, `aclose` succeeds
/// and closes the transport, and then everything fails with `Closed`.
async fn assert_broken_then_closable<S: Stream>(s: &TlsStream<S>) -> Result<()> {
    let mut buf = [0u8; 8];
    assert!(matches!(s.send_all(b"x").await, Err(Error::Broken)), "send_all on a broken stream");
    assert!(matches!(s.receive_some(&mut buf).await, Err(Error::Broken)), "receive_some on a broken stream");
    assert!(matches!(s.do_handshake().await, Err(Error::Broken)), "do_handshake on a broken stream");
    assert!(matches!(s.send_eof().await, Err(Error::Broken)), "send_eof on a broken stream");
    s.aclose().await?;
    assert!(matches!(s.transport().send_all(b"x").await, Err(Error::Closed)), "the transport is closed");
    assert!(matches!(s.send_all(b"x").await, Err(Error::Closed)));
    assert!(matches!(s.receive_some(&mut buf).await, Err(Error::Closed)));
    s.aclose().await?;
    Ok(())
}

/// Reads until end of stream (or an error), at most `limit` bytes.
async fn read_all<S: ReceiveStream>(s: &S, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < limit {
        match s.receive_some(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
    out
}

/// Reads exactly `n` bytes.
async fn read_exact<S: ReceiveStream>(s: &S, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let k = s.receive_some(&mut buf[..(n - out.len()).min(4096)]).await?;
        assert!(k > 0, "end of stream after {} of {n} bytes", out.len());
        out.extend_from_slice(&buf[..k]);
    }
    Ok(out)
}

/// A genuine TLS ClientHello (what a client sends first), made with rustls
/// directly.
fn client_hello(config: ClientConfig) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a handshake record");
    out
}

/// Deterministic junk (a linear congruential generator).
fn junk(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// Record content type of a TLS alert.
const ALERT: u8 = 0x15;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn tcp_pair() -> Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind(loopback())?;
    let c = TcpStream::connect(l.local_addr()?).await?;
    let s = l.accept().await?;
    Ok((c, s))
}

// ---- certificate failures ----

/// The certificate is for "localhost", the client asks for "example.com":
/// the client names the mismatch, the server hears the client's alert.
#[test]
fn wrong_host_name() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "example.com", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS", "not valid for name", "example.com", "localhost"]);
        assert_io(&s, io::ErrorKind::InvalidData, &["TLS", "alert"]);
        assert_broken_then_closable(&client).await?;
        assert_broken_then_closable(&server).await?;
        Ok(())
    })
    .unwrap();
}

/// An expired certificate, and one not valid yet.
#[test]
fn expired_and_not_yet_valid_certificates() {
    run(async {
        let expired = Identity::with_validity((2000, 1, 1), (2001, 1, 1));
        let (client, server) = memory_pair(expired.client(), "localhost", expired.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS", "invalid peer certificate", "expired"]);
        assert_io(&s, io::ErrorKind::InvalidData, &["alert"]);
        assert_broken_then_closable(&client).await?;
        assert_broken_then_closable(&server).await?;

        let future = Identity::with_validity((2090, 1, 1), (2099, 1, 1));
        let (client, server) = memory_pair(future.client(), "localhost", future.server());
        let (c, _) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["invalid peer certificate", "not valid yet"]);
        assert_broken_then_closable(&client).await?;
        server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// A self-signed certificate is not among the Mozilla roots of
/// `default_client_config`; nor is one trusted root good for a server with
/// another certificate.
#[test]
fn unknown_issuer() {
    let id = localhost();
    let other = localhost();
    run(async {
        let (client, server) = memory_pair(default_client_config(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["invalid peer certificate", "UnknownIssuer"]);
        assert_io(&s, io::ErrorKind::InvalidData, &["alert"]);
        assert_broken_then_closable(&client).await?;
        assert_broken_then_closable(&server).await?;

        // Trusting a different self-signed certificate for the same name.
        let (client, server) = memory_pair(other.client(), "localhost", id.server());
        let (c, _) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["invalid peer certificate"]);
        assert_broken_then_closable(&client).await?;
        server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// The client reports the certificate error from the operation that
/// triggered the handshake (here `send_all`, then `receive_some` on a
/// fresh stream), not only from `do_handshake`.
#[test]
fn certificate_error_from_implicit_handshake() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "example.com", id.server());
        let (c, _) = join2(client.send_all(b"never sent"), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["not valid for name"]);
        assert_broken_then_closable(&client).await?;
        server.aclose().await?;

        let (client, server) = memory_pair(id.client(), "example.com", id.server());
        let mut buf = [0u8; 16];
        let (c, _) = join2(client.receive_some(&mut buf), server.do_handshake()).await;
        assert_io(&c, io::ErrorKind::InvalidData, &["not valid for name"]);
        assert_broken_then_closable(&client).await?;
        server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

// ---- peers that do not speak TLS ----

/// A TLS client whose server answers in plain HTTP: a clear error, and the
/// client tells the server so with an alert.
#[test]
fn plain_http_server_to_tls_client() {
    let id = localhost();
    mock_run(async {
        let (tcp_client, tcp_server) = tcp_pair().await?;
        let client = TlsStream::client(tcp_client, "localhost", Arc::new(id.client()))?;
        let (c, heard) = join2(
            async {
                let r = client.do_handshake().await;
                assert_broken_then_closable(&client).await?;
                Ok(r)
            },
            async {
                let mut buf = [0u8; 4096];
                let k = tcp_server.receive_some(&mut buf).await?;
                assert_eq!(buf[0], 0x16, "a ClientHello came");
                assert!(k > 40);
                tcp_server.send_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello\r\n").await?;
                Ok(read_all(&tcp_server, 1 << 16).await)
            },
        )
        .await;
        let c = c?;
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS", "corrupt message"]);
        let heard = heard?;
        assert_eq!(heard.first(), Some(&ALERT), "the client sent an alert: {heard:?}");
        tcp_server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// A plain-text client talking to a TLS server.
#[test]
fn plain_client_to_tls_server() {
    let id = localhost();
    mock_run(async {
        let (tcp_client, tcp_server) = tcp_pair().await?;
        let server = TlsStream::server(tcp_server, Arc::new(id.server()))?;
        let (s, heard) = join2(
            async {
                let mut buf = [0u8; 64];
                let r = server.receive_some(&mut buf).await;
                assert_broken_then_closable(&server).await?;
                Ok(r)
            },
            async {
                tcp_client.send_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
                Ok(read_all(&tcp_client, 1 << 16).await)
            },
        )
        .await;
        assert_io(&s?, io::ErrorKind::InvalidData, &["TLS", "corrupt message"]);
        let heard = heard?;
        assert_eq!(heard.first(), Some(&ALERT), "the server sent an alert: {heard:?}");
        tcp_client.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// Garbage instead of a handshake, to either side: a TLS error, never a
/// panic, whatever the bytes (a few seeds, with and without a plausible
/// record header).
#[test]
fn garbage_bytes() {
    let id = localhost();
    run(async {
        for seed in 0..8u32 {
            let mut bytes = junk(300, seed);
            if seed % 2 == 1 {
                // A handshake record header, then junk.
                bytes[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x01, 0x00]);
            }
            // To a server.
            let (raw, b) = memory_stream_pair();
            let server = TlsStream::server(b, Arc::new(id.server()))?;
            raw.send_all(&bytes).await?;
            raw.send_eof().await?;
            let r = server.do_handshake().await;
            match &r {
                Err(Error::Io(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "seed {seed}: {e}");
                    assert!(e.to_string().contains("TLS"), "seed {seed}: {e}");
                }
                // Garbage that looks like the start of a record, then EOF:
                // the peer is gone mid-handshake.
                Err(Error::Broken) => {}
                other => panic!("seed {seed}: expected a TLS error, got {other:?}"),
            }
            assert_broken_then_closable(&server).await?;

            // To a client, once it sent its ClientHello.
            let (a, raw) = memory_stream_pair();
            let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
            let (c, _) = join2(client.do_handshake(), async {
                let mut buf = [0u8; 4096];
                raw.receive_some(&mut buf).await?;
                raw.send_all(&bytes).await?;
                raw.send_eof().await
            })
            .await;
            match &c {
                Err(Error::Io(e)) => assert!(e.to_string().contains("TLS"), "seed {seed}: {e}"),
                other => panic!("seed {seed}: expected a TLS error, got {other:?}"),
            }
            assert_broken_then_closable(&client).await?;
        }
        Ok(())
    })
    .unwrap();
}

/// A record tampered with after the handshake: the receiver cannot decrypt
/// it, says so, and the stream is broken.
#[test]
fn tampered_record_after_the_handshake() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        // An application-data record of junk, straight onto the transport.
        let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        record.extend(junk(0x40, 7));
        server.transport().send_all(&record).await?;
        let mut buf = [0u8; 64];
        let r = client.receive_some(&mut buf).await;
        assert_io(&r, io::ErrorKind::InvalidData, &["TLS", "decrypt"]);
        assert_broken_then_closable(&client).await?;
        server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

// ---- peers that vanish ----

/// The server reads the ClientHello and hangs up: the client's handshake
/// fails with `Broken` (the peer is gone; Trio's `BrokenResourceError`).
#[test]
fn server_vanishes_mid_handshake() {
    let id = localhost();
    run(async {
        let (a, raw) = memory_stream_pair();
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        let (c, _) = join2(client.do_handshake(), async {
            let mut buf = [0u8; 4096];
            let k = raw.receive_some(&mut buf).await?;
            assert_eq!(buf[0], 0x16);
            assert!(k > 40);
            raw.aclose().await
        })
        .await;
        assert!(matches!(c, Err(Error::Broken)), "{c:?}");
        assert_broken_then_closable(&client).await?;
        Ok(())
    })
    .unwrap();
}

/// The same over TCP, with the server side being a real socket that closes.
#[test]
fn server_vanishes_mid_handshake_over_tcp() {
    let id = localhost();
    mock_run(async {
        let (tcp_client, tcp_server) = tcp_pair().await?;
        let client = TlsStream::client(tcp_client, "localhost", Arc::new(id.client()))?;
        let (c, _) = join2(client.do_handshake(), async {
            let mut buf = [0u8; 4096];
            tcp_server.receive_some(&mut buf).await?;
            tcp_server.aclose().await
        })
        .await;
        assert!(matches!(c, Err(Error::Broken)), "{c:?}");
        assert_broken_then_closable(&client).await?;
        Ok(())
    })
    .unwrap();
}

/// A client sends its ClientHello, reads the server's answer and hangs up:
/// the server's handshake fails with `Broken`.
#[test]
fn client_vanishes_mid_handshake() {
    let id = localhost();
    run(async {
        let (raw, b) = memory_stream_pair();
        let server = TlsStream::server(b, Arc::new(id.server()))?;
        let (s, _) = join2(server.do_handshake(), async {
            raw.send_all(&client_hello(id.client())).await?;
            let mut buf = [0u8; 8192];
            let k = raw.receive_some(&mut buf).await?;
            assert_eq!(buf[0], 0x16, "the ServerHello came");
            assert!(k > 100);
            raw.aclose().await
        })
        .await;
        assert!(matches!(s, Err(Error::Broken)), "{s:?}");
        assert_broken_then_closable(&server).await?;
        Ok(())
    })
    .unwrap();
}

/// A client that connects and hangs up without a word.
#[test]
fn client_vanishes_before_the_handshake() {
    let id = localhost();
    run(async {
        let (raw, b) = memory_stream_pair();
        let server = TlsStream::server(b, Arc::new(id.server()))?;
        raw.aclose().await?;
        let r = server.do_handshake().await;
        assert!(matches!(r, Err(Error::Broken)), "{r:?}");
        assert_broken_then_closable(&server).await?;
        Ok(())
    })
    .unwrap();
}

/// After the handshake, the peer closes its transport without
/// `close_notify`: `Broken` by default (a truncation attack looks just the
/// same; Trio's `BrokenResourceError`), a clean end of stream with
/// `https_compatible(true)`.
#[test]
fn truncated_stream() {
    let id = localhost();
    run(async {
        for https in [false, true] {
            let (a, b) = memory_stream_pair();
            let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?.https_compatible(https);
            let server = TlsStream::server(b, Arc::new(id.server()))?;
            let (c, s) = join2(
                async {
                    client.send_all(b"ping").await?;
                    read_exact(&client, 4).await
                },
                async {
                    let got = read_exact(&server, 4).await?;
                    server.send_all(b"pong").await?;
                    Ok(got)
                },
            )
            .await;
            assert_eq!(c?, b"pong");
            assert_eq!(s?, b"ping");
            // Gone without close_notify.
            server.transport().aclose().await?;
            let mut buf = [0u8; 16];
            let r = client.receive_some(&mut buf).await;
            if https {
                assert_eq!(r?, 0, "https_compatible: a clean end");
                assert_eq!(client.receive_some(&mut buf).await?, 0, "and it stays so");
                client.aclose().await?;
            } else {
                assert!(matches!(r, Err(Error::Broken)), "{r:?}");
                assert_broken_then_closable(&client).await?;
            }
            server.aclose().await?;
        }
        Ok(())
    })
    .unwrap();
}

/// With `close_notify` (send_eof, or aclose), the end is clean in both
/// modes; an https_compatible `aclose` sends no `close_notify`, so a strict
/// peer sees a truncation.
#[test]
fn clean_end_versus_https_compatible_close() {
    let id = localhost();
    run(async {
        // Strict both ways: aclose sends close_notify.
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        server.aclose().await?;
        let mut buf = [0u8; 16];
        assert_eq!(client.receive_some(&mut buf).await?, 0);
        client.aclose().await?;

        // The server closes https-style (no close_notify): the strict client
        // sees a truncation.
        let (a, b) = memory_stream_pair();
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        let server = TlsStream::server(b, Arc::new(id.server()))?.https_compatible(true);
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        server.aclose().await?;
        let r = client.receive_some(&mut buf).await;
        assert!(matches!(r, Err(Error::Broken)), "a truncation: {r:?}");
        client.aclose().await?;
        Ok(())
    })
    .unwrap();
}

// ---- a peer that closes right after the handshake ----

/// From its `live`-th send on, what `from` sends stays in its buffer until
/// its send side closes, and then reaches `to` in one piece, with the EOF
/// (so the peer gets, in one transport read, a handshake's last flight and
/// what followed it). Returns the count of sends so far.
fn hold_after(from: &MemoryStream, to: &MemoryStream, live: usize) -> std::rc::Rc<std::cell::Cell<usize>> {
    let sends = std::rc::Rc::new(std::cell::Cell::new(0));
    let (count, r) = (sends.clone(), to.receive_stream.clone());
    from.send_stream.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
        count.set(count.get() + 1);
        if count.get() <= live { memory_stream_pump(s, &r, None).map(drop) } else { Ok(()) }
    })));
    sends
}

/// A TLS 1.2 client configuration trusting `id`.
fn tls12_client(id: &Identity) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(id.roots())
        .with_no_client_auth()
}

/// A full handshake and a clean close with `client` (so that its session
/// cache holds a session of `server` to resume).
async fn warm_up(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Result<()> {
    let (a, b) = memory_stream_pair();
    let (c, s) = (TlsStream::client(a, "localhost", client.clone())?, TlsStream::server(b, server.clone())?);
    let (rc, rs) = join2(c.do_handshake(), s.do_handshake()).await;
    rc?;
    rs?;
    s.aclose().await?;
    let mut buf = [0u8; 8];
    // Reading takes the TLS 1.3 session tickets.
    assert_eq!(c.receive_some(&mut buf).await?, 0);
    c.aclose().await
}

/// A client that closes right after its handshake: its last flight (in TLS
/// 1.3 its `Finished`), its `close_notify` and the transport's EOF reach the
/// server in one read, and the server, done, cannot send what it sends after
/// the handshake (the TLS 1.3 session tickets) to a client that is gone.
/// As with Trio (OpenSSL) over TCP: the server's handshake succeeds, its
/// first `receive_some` is a clean end of stream (`Ok(0)`); sending to the
/// gone client is `Broken`. Without `close_notify` (the client just cuts
/// its transport), the handshake succeeds too and the receive is the
/// truncation's `Broken`. TLS 1.3 and 1.2, full and resumed handshakes.
#[test]
fn client_closes_right_after_its_handshake() {
    let id = localhost();
    let server_config = Arc::new(id.server());
    run(async {
        for (client_config, version) in
            [(id.client(), ProtocolVersion::TLSv1_3), (tls12_client(&id), ProtocolVersion::TLSv1_2)]
        {
            let client_config = Arc::new(client_config);
            for resumed in [false, true] {
                if resumed {
                    warm_up(&client_config, &server_config).await?;
                }
                for clean in [true, false] {
                    let what = format!("{version:?}, resumed: {resumed}, close_notify: {clean}");
                    let (a, b) = memory_stream_pair();
                    // The client's sends that reach the server at once: the
                    // ClientHello, and in a full TLS 1.2 handshake the
                    // flight with the client's Finished (the server's
                    // Finished comes after it).
                    let live = if version == ProtocolVersion::TLSv1_2 && !resumed { 2 } else { 1 };
                    let sends = hold_after(&a, &b, live);
                    let client = TlsStream::client(a, "localhost", client_config.clone())?;
                    let server = TlsStream::server(b, server_config.clone())?;
                    let (c, s) = join2(
                        async {
                            client.do_handshake().await?;
                            if clean { client.aclose().await } else { client.transport().aclose().await }
                        },
                        async {
                            let handshake = server.do_handshake().await;
                            let mut buf = [0u8; 16];
                            let received = server.receive_some(&mut buf).await;
                            Ok((handshake, received))
                        },
                    )
                    .await;
                    c.unwrap_or_else(|e| panic!("{what}: the client: {e:?}"));
                    let (handshake, received) = s?;
                    // (A full TLS 1.2 handshake that ends without
                    // close_notify: the client sends nothing after it.)
                    if clean || live == 1 {
                        assert!(sends.get() > live, "{what}: the client's last sends were held back");
                    }
                    assert!(handshake.is_ok(), "{what}: the server's handshake: {handshake:?}");
                    assert_eq!(server.protocol_version(), Some(version), "{what}");
                    let mut buf = [0u8; 16];
                    if clean {
                        assert_eq!(received.ok(), Some(0), "{what}: a clean end");
                        assert_eq!(server.receive_some(&mut buf).await.ok(), Some(0), "{what}: it stays so");
                        let r = server.send_all(b"late").await;
                        assert!(matches!(r, Err(Error::Broken)), "{what}: the client is gone: {r:?}");
                        server.aclose().await?;
                    } else {
                        assert!(matches!(received, Err(Error::Broken)), "{what}: a truncation: {received:?}");
                        assert_broken_then_closable(&server).await?;
                    }
                }
            }
        }
        Ok(())
    })
    .unwrap();
}

/// The other way round: the server's last flight, its data and its
/// `close_notify` (and the transport's EOF) reach the client in one read.
/// With our server (TLS 1.3: session tickets, data, `close_notify` after the
/// handshake; TLS 1.2: its `ChangeCipherSpec` and `Finished` too), and with
/// a raw rustls server that sends TLS 1.3 half-RTT data and `close_notify`
/// right after its `Finished` and hangs up before the client's `Finished`
/// (which the client then cannot send): the client's handshake succeeds,
/// it reads the data, then a clean end of stream.
#[test]
fn server_closes_right_after_its_handshake() {
    let id = localhost();
    let server_config = Arc::new(id.server());
    run(async {
        for (client_config, version) in
            [(id.client(), ProtocolVersion::TLSv1_3), (tls12_client(&id), ProtocolVersion::TLSv1_2)]
        {
            let (a, b) = memory_stream_pair();
            let sends = hold_after(&b, &a, 1);
            let client = TlsStream::client(a, "localhost", Arc::new(client_config))?;
            let server = TlsStream::server(b, server_config.clone())?;
            let (c, s) = join2(
                async {
                    let handshake = client.do_handshake().await;
                    Ok((handshake, read_to_end(&client).await))
                },
                async {
                    server.do_handshake().await?;
                    server.send_all(b"bye").await?;
                    server.aclose().await
                },
            )
            .await;
            s.unwrap_or_else(|e| panic!("{version:?}: the server: {e:?}"));
            let (handshake, read) = c?;
            assert!(sends.get() > 1, "{version:?}: the server's last sends were held back");
            assert!(handshake.is_ok(), "{version:?}: the client's handshake: {handshake:?}");
            assert_eq!(read.ok(), Some(b"bye".to_vec()), "{version:?}");
            assert_eq!(client.protocol_version(), Some(version));
            client.aclose().await?;
        }

        // A raw rustls server with half-RTT data.
        let (a, raw) = memory_stream_pair();
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        let (c, s) = join2(
            async {
                let handshake = client.do_handshake().await;
                Ok((handshake, read_to_end(&client).await))
            },
            async {
                let mut config = id.server();
                config.send_half_rtt_data = true;
                let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let k = raw.receive_some(&mut buf).await?;
                conn.read_tls(&mut &buf[..k]).unwrap();
                conn.process_new_packets().unwrap();
                conn.writer().write_all(b"half-rtt").unwrap();
                conn.send_close_notify();
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
                assert!(conn.is_handshaking(), "the client's Finished is still to come");
                raw.send_all(&out).await?;
                raw.aclose().await
            },
        )
        .await;
        s?;
        let (handshake, read) = c?;
        assert!(handshake.is_ok(), "half-RTT: the client's handshake: {handshake:?}");
        assert_eq!(read.ok(), Some(b"half-rtt".to_vec()));
        let r = client.send_all(b"late").await;
        assert!(matches!(r, Err(Error::Broken)), "the server is gone: {r:?}");
        client.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// Reads to a clean end of stream (at most 64 reads), or the first error.
async fn read_to_end<S: ReceiveStream>(s: &S) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.receive_some(&mut buf).await? {
            0 => return Ok(out),
            k => out.extend_from_slice(&buf[..k]),
        }
    }
    panic!("no end of stream after 64 reads");
}

// ---- ALPN ----

/// Both sides offer protocols: the server's pick (its first one the client
/// offers) is what both see.
#[test]
fn alpn_negotiated_on_both_sides() {
    let id = localhost();
    run(async {
        let mut cc = id.client();
        cc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut sc = id.server();
        sc.alpn_protocols = vec![b"http/1.1".to_vec(), b"spdy/3".to_vec()];
        let (client, server) = memory_pair(cc, "localhost", sc);
        assert_eq!(client.alpn_protocol(), None, "nothing before the handshake");
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        assert_eq!(client.alpn_protocol().as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(server.alpn_protocol().as_deref(), Some(&b"http/1.1"[..]));

        // No ALPN at all: None on both sides.
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        assert_eq!(client.alpn_protocol(), None);
        assert_eq!(server.alpn_protocol(), None);
        Ok(())
    })
    .unwrap();
}

/// The server speaks only "h2", the client offers something else: the
/// server refuses (no_application_protocol) and both sides say so.
#[test]
fn alpn_mismatch() {
    let id = localhost();
    run(async {
        let mut cc = id.client();
        cc.alpn_protocols = vec![b"spdy/1".to_vec(), b"http/1.1".to_vec()];
        let mut sc = id.server();
        sc.alpn_protocols = vec![b"h2".to_vec()];
        let (client, server) = memory_pair(cc, "localhost", sc);
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        assert_io(&s, io::ErrorKind::InvalidData, &["TLS", "doesn't support any known protocol"]);
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS", "alert", "NoApplicationProtocol"]);
        assert_broken_then_closable(&client).await?;
        assert_broken_then_closable(&server).await?;
        Ok(())
    })
    .unwrap();
}

// ---- cancellation, Busy, Closed ----

/// A handshake whose peer never answers, cancelled by a deadline, returns
/// at the deadline, and `aclose` then closes at once (it does not try to
/// finish the handshake to send `close_notify`).
#[test]
fn cancelled_handshake_returns_and_the_stream_closes() {
    let id = localhost();
    run(async {
        for client_side in [true, false] {
            let (a, peer) = memory_stream_pair();
            let tls = if client_side {
                TlsStream::client(a, "localhost", Arc::new(id.client()))?
            } else {
                TlsStream::server(a, Arc::new(id.server()))?
            };
            let t0 = current_time()?;
            let r = trio::move_on_after(secs(5), tls.do_handshake()).await?;
            assert!(r.is_none(), "the handshake cannot finish");
            assert_eq!(current_time()? - t0, secs(5), "returned at the deadline");
            // Closing must not wait for the silent peer.
            trio::fail_after(secs(1), tls.aclose()).await?;
            assert!(matches!(tls.send_all(b"x").await, Err(Error::Closed)));
            assert!(matches!(tls.transport().send_all(b"x").await, Err(Error::Closed)));
            // The silent peer sees the end (after the ClientHello, if any).
            let heard = read_all(&peer, 1 << 16).await;
            assert_eq!(heard.is_empty(), !client_side, "{heard:?}");
        }
        Ok(())
    })
    .unwrap();
}

/// A handshake cancelled while waiting for the peer can go on later (here
/// the stream differs from Trio, whose cancelled handshake breaks it, so
/// that a cancelled `receive_some` never breaks a stream); a cancelled
/// `receive_some` after the handshake loses nothing either.
#[test]
fn cancelled_handshake_can_resume_and_cancelled_receive_loses_nothing() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        assert!(trio::move_on_after(secs(1), client.do_handshake()).await?.is_none());
        let (c, s) = join2(
            async {
                client.send_all(b"late").await?;
                read_exact(&client, 4).await
            },
            async {
                let got = read_exact(&server, 4).await?;
                server.send_all(b"LATE").await?;
                Ok(got)
            },
        )
        .await;
        assert_eq!(c?, b"LATE");
        assert_eq!(s?, b"late");

        let mut buf = [0u8; 16];
        assert!(trio::move_on_after(secs(1), client.receive_some(&mut buf)).await?.is_none());
        server.send_all(b"still fine").await?;
        let k = client.receive_some(&mut buf).await?;
        assert_eq!(&buf[..k], b"still fine");
        // Completed since: aclose sends close_notify as usual.
        client.aclose().await?;
        assert_eq!(server.receive_some(&mut buf).await?, 0);
        server.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// An error of the transport during the handshake (Trio's
/// `test_send_error_during_handshake` / `test_receive_error_during_handshake`)
/// comes out as itself and breaks the stream.
#[test]
fn transport_error_during_handshake_breaks_the_stream() {
    let id = localhost();
    run(async {
        // Sending fails.
        let (a, _b) = memory_stream_pair();
        a.send_stream
            .set_send_all_hook(Some(AsyncHook::new(async |_: &MemorySendStream| Err(Error::from("send hook failed")))));
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        match client.do_handshake().await {
            Err(Error::User(e)) => assert_eq!(e.to_string(), "send hook failed"),
            other => panic!("{other:?}"),
        }
        assert_broken_then_closable(&client).await?;

        // Receiving fails (after the ClientHello went out).
        let (a, b) = memory_stream_pair();
        a.receive_stream.set_receive_some_hook(Some(AsyncHook::new(async |_: &MemoryReceiveStream| {
            Err(Error::from("receive hook failed"))
        })));
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        match client.do_handshake().await {
            Err(Error::User(e)) => assert_eq!(e.to_string(), "receive hook failed"),
            other => panic!("{other:?}"),
        }
        assert_broken_then_closable(&client).await?;
        b.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// Every operation after `aclose` fails with `Closed`; closing twice is fine.
#[test]
fn operations_after_aclose_are_closed() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(
            async {
                client.send_all(b"hi").await?;
                client.aclose().await
            },
            async {
                let got = read_exact(&server, 2).await?;
                let mut buf = [0u8; 8];
                assert_eq!(server.receive_some(&mut buf).await?, 0, "close_notify came");
                Ok(got)
            },
        )
        .await;
        c?;
        assert_eq!(s?, b"hi");
        let mut buf = [0u8; 8];
        assert!(matches!(client.send_all(b"x").await, Err(Error::Closed)));
        assert!(matches!(client.send_all(b"").await, Err(Error::Closed)));
        assert!(matches!(client.receive_some(&mut buf).await, Err(Error::Closed)));
        assert!(matches!(client.send_eof().await, Err(Error::Closed)));
        assert!(matches!(client.do_handshake().await, Err(Error::Closed)));
        assert!(matches!(client.wait_send_all_might_not_block().await, Err(Error::Closed)));
        client.aclose().await?;
        assert!(matches!(client.unwrap().await, Err(Error::Closed)));

        // Closed before any handshake (https_compatible: no close_notify,
        // so no handshake first): same, and the peer's handshake fails on
        // the early close.
        let (a, b) = memory_stream_pair();
        let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?;
        let server = TlsStream::server(b, Arc::new(id.server()))?.https_compatible(true);
        server.aclose().await?;
        assert!(matches!(server.receive_some(&mut buf).await, Err(Error::Closed)));
        assert!(matches!(server.send_all(b"x").await, Err(Error::Closed)));
        // (Its ClientHello cannot even be sent: the memory transport says
        // the peer is gone.)
        assert!(matches!(client.do_handshake().await, Err(Error::Broken)));
        assert_broken_then_closable(&client).await?;
        Ok(())
    })
    .unwrap();
}

/// A second task receiving (or sending) while one already does gets `Busy`;
/// the first is not disturbed.
#[test]
fn concurrent_receives_are_busy() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        open_nursery(async |n| {
            n.spawn(async {
                let got = read_exact(&client, 2).await?;
                assert_eq!(got, b"hi");
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            let mut buf = [0u8; 8];
            assert!(matches!(client.receive_some(&mut buf).await, Err(Error::Busy)));
            // Sending while another task receives is fine.
            client.send_all(b"ok").await?;
            assert_eq!(read_exact(&server, 2).await?, b"ok");
            server.send_all(b"hi").await?;
            Ok(())
        })
        .await?;

        // A sender held up by a slow transport makes a second sender (and
        // send_eof) Busy.
        let to_server = server.transport().receive_stream.clone();
        client.transport().send_stream.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
            trio::sleep(secs(1)).await?;
            memory_stream_pump(s, &to_server, None).map(drop)
        })));
        open_nursery(async |n| {
            n.spawn(async {
                client.send_all(b"slow").await?;
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(matches!(client.send_all(b"fast").await, Err(Error::Busy)));
            assert!(matches!(client.send_eof().await, Err(Error::Busy)));
            assert!(matches!(client.wait_send_all_might_not_block().await, Err(Error::Busy)));
            assert_eq!(read_exact(&server, 4).await?, b"slow");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// ---- unwrap ----

/// Both sides unwrap at once, then talk plain text over the transports
/// they got back.
#[test]
fn unwrap_both_sides_then_plain_text() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(
            async {
                client.send_all(b"secret").await?;
                read_exact(&client, 6).await
            },
            async {
                let got = read_exact(&server, 6).await?;
                server.send_all(b"SECRET").await?;
                Ok(got)
            },
        )
        .await;
        assert_eq!(c?, b"SECRET");
        assert_eq!(s?, b"secret");
        let (c, s) = join2(client.unwrap(), server.unwrap()).await;
        let ((c, c_trailing), (s, s_trailing)) = (c?, s?);
        assert!(c_trailing.is_empty() && s_trailing.is_empty());
        c.send_all(b"plain from the client").await?;
        assert_eq!(read_exact(&s, 21).await?, b"plain from the client");
        s.send_all(b"plain from the server").await?;
        assert_eq!(read_exact(&c, 21).await?, b"plain from the server");
        c.aclose().await?;
        let mut buf = [0u8; 4];
        assert_eq!(s.receive_some(&mut buf).await?, 0);
        s.aclose().await?;
        Ok(())
    })
    .unwrap();
}

/// `unwrap` before any handshake does the handshake first; data instead
/// of `close_notify` is an error.
#[test]
fn unwrap_before_handshake_and_data_instead_of_close_notify() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.unwrap(), server.unwrap()).await;
        let ((c, _), (s, _)) = (c?, s?);
        c.send_all(b"x").await?;
        assert_eq!(read_exact(&s, 1).await?, b"x");

        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.unwrap(), async {
            server.send_all(b"not a close_notify").await?;
            Ok(server)
        })
        .await;
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS unwrap", "data instead of close_notify"]);
        s?.aclose().await?;
        Ok(())
    })
    .unwrap();
}

// ---- names, certificates, versions ----

/// The server sees the name the client asked for (SNI); an IP address
/// sends none.
#[test]
fn sni_and_peer_certificates() {
    let id = Identity::new(&["localhost", "sni.example", "127.0.0.1"]);
    run(async {
        let (client, server) = memory_pair(id.client(), "sni.example", id.server());
        assert_eq!(server.server_name(), None, "nothing before the handshake");
        assert_eq!(client.peer_certificates(), None);
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        assert_eq!(server.server_name().as_deref(), Some("sni.example"));
        assert_eq!(client.server_name(), None, "only the server side has one");
        assert_eq!(client.peer_certificates(), Some(vec![id.cert.clone()]), "the server's certificate, as DER");
        assert_eq!(server.peer_certificates(), None, "no client certificate");
        assert_eq!(client.cipher_suite(), server.cipher_suite());
        client.aclose().await?;
        server.aclose().await?;

        let (client, server) = memory_pair(id.client(), "127.0.0.1", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        assert_eq!(server.server_name(), None, "no SNI for an IP address");
        assert_eq!(client.peer_certificates().unwrap()[0], id.cert);

        // An invalid server name is refused up front.
        let (a, _b) = memory_stream_pair();
        let r = TlsStream::client(a, "not a host name!", Arc::new(id.client())).map(drop);
        assert_io(&r, io::ErrorKind::InvalidInput, &["TLS server name", "not a host name!"]);
        Ok(())
    })
    .unwrap();
}

/// A client that speaks only TLS 1.2 gets TLS 1.2 (and a TLS 1.2 cipher
/// suite); the default is TLS 1.3.
#[test]
fn tls12_only_client() {
    let id = localhost();
    run(async {
        let tls12 = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(id.roots())
            .with_no_client_auth();
        let (client, server) = memory_pair(tls12, "localhost", id.server());
        let (c, s) = join2(
            async {
                client.send_all(b"over 1.2").await?;
                read_exact(&client, 8).await
            },
            async {
                let got = read_exact(&server, 8).await?;
                server.send_all(&got).await?;
                Ok(())
            },
        )
        .await;
        assert_eq!(c?, b"over 1.2");
        s?;
        assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        let suite = format!("{:?}", client.cipher_suite().unwrap());
        assert!(suite.starts_with("TLS_ECDHE_"), "a TLS 1.2 suite: {suite}");
        client.aclose().await?;
        server.aclose().await?;

        // The default: 1.3.
        let (client, server) = memory_pair(id.client(), "localhost", id.server());
        let (c, s) = join2(client.do_handshake(), server.do_handshake()).await;
        c?;
        s?;
        assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        Ok(())
    })
    .unwrap();
}

// ---- over TCP: serve_tls, open_tls_over_tcp_stream, TlsListener ----

/// An echo handler: echoes until end of stream, then closes (with
/// `close_notify`).
async fn echo<S: Stream>(s: TlsStream<S>) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let k = s.receive_some(&mut buf).await?;
        if k == 0 {
            break;
        }
        s.send_all(&buf[..k]).await?;
    }
    s.aclose().await
}

/// `serve_tls` started with `nursery.start`, reached by
/// `open_tls_over_tcp_stream("localhost", port, ..)`: an echo round trip,
/// then a clean end both ways.
#[test]
fn serve_tls_and_open_tls_over_tcp_stream() {
    let id = localhost();
    let server_cfg = Arc::new(id.server());
    let client_cfg = Arc::new(id.client());
    mock_run(async {
        open_nursery(async |n| {
            let addrs = n
                .start(async move |st| match serve_tls(echo, 0, server_cfg, Some("127.0.0.1"), Some(st)).await? {})
                .await?;
            assert_eq!(addrs.len(), 1);
            let port = addrs[0].port();
            for round in 0..3 {
                let c = open_tls_over_tcp_stream("localhost", port, client_cfg.clone()).await?;
                assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3), "handshake done already");
                for i in 0..5u8 {
                    let msg = vec![round * 10 + i; 1 + 3000 * i as usize];
                    c.send_all(&msg).await?;
                    assert_eq!(read_exact(&c, msg.len()).await?, msg);
                }
                c.send_eof().await?;
                let mut buf = [0u8; 8];
                assert_eq!(c.receive_some(&mut buf).await?, 0, "the handler closed cleanly");
                c.aclose().await?;
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// `open_tls_over_tcp_stream` against a server whose certificate is for
/// another name fails with the certificate error (and closes its socket).
#[test]
fn open_tls_over_tcp_stream_reports_the_certificate_error() {
    let id = Identity::new(&["elsewhere.example"]);
    let server_cfg = Arc::new(id.server());
    let client_cfg = Arc::new(id.client());
    mock_run(async {
        open_nursery(async |n| {
            let handler = async |s: TlsStream<TcpStream>| {
                let _ = s.do_handshake().await;
                Ok(())
            };
            let addrs = n
                .start(async move |st| match serve_tls(handler, 0, server_cfg, Some("127.0.0.1"), Some(st)).await? {})
                .await?;
            let r = open_tls_over_tcp_stream("localhost", addrs[0].port(), client_cfg).await.map(drop);
            assert_io(&r, io::ErrorKind::InvalidData, &["not valid for name", "localhost"]);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// `TlsListener` over a `TcpListener`: accepted streams are TLS servers; a
/// client that does not speak TLS fails only its own stream's first
/// operation, not `accept`.
#[test]
fn tls_listener_over_tcp_listener() {
    let id = localhost();
    mock_run(async {
        let listener = TlsListener::new(TcpListener::bind(loopback())?, Arc::new(id.server()));
        let addr = listener.transport_listener.local_addr()?;
        // A plain client first.
        let plain = TcpStream::connect(addr).await?;
        plain.send_all(b"hello?\r\n").await?;
        let bad = listener.accept().await?;
        let mut buf = [0u8; 16];
        assert_io(&bad.receive_some(&mut buf).await, io::ErrorKind::InvalidData, &["corrupt message"]);
        assert_broken_then_closable(&bad).await?;
        plain.aclose().await?;

        // Then real TLS clients.
        for i in 0..3u8 {
            let (s, c) = join2(async { echo(listener.accept().await?).await }, async {
                let tcp = TcpStream::connect(addr).await?;
                let c = TlsStream::client(tcp, "localhost", Arc::new(id.client()))?;
                let msg = vec![i; 10_000];
                c.send_all(&msg).await?;
                assert_eq!(read_exact(&c, msg.len()).await?, msg);
                c.send_eof().await?;
                let mut end = [0u8; 4];
                assert_eq!(c.receive_some(&mut end).await?, 0);
                c.aclose().await
            })
            .await;
            s?;
            c?;
        }
        listener.aclose().await?;
        assert!(matches!(listener.accept().await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

/// As Trio (`test_https_mode_eof_before_handshake`): in HTTPS-compatible
/// mode a client that closes before the handshake is an end of stream for
/// the server, not an error; in strict mode it is an error.
#[test]
fn https_compatible_eof_before_the_handshake() {
    let id = localhost();
    run(async {
        for https in [false, true] {
            let (a, b) = memory_stream_pair();
            let client = TlsStream::client(a, "localhost", Arc::new(id.client()))?.https_compatible(true);
            let server = TlsStream::server(b, Arc::new(id.server()))?.https_compatible(https);
            let (c, r) = join2(client.aclose(), async {
                let mut buf = [0u8; 8];
                server.receive_some(&mut buf).await
            })
            .await;
            c?;
            if https {
                assert_eq!(r?, 0);
            } else {
                assert!(matches!(r, Err(Error::Broken)), "{r:?}");
            }
            server.aclose().await?;
        }
        Ok(())
    })
    .unwrap();
}

/// As Trio: a handshake that `aclose` has to run and that fails is
/// reported, and the transport is closed anyway.
#[test]
fn handshake_failure_during_aclose_is_reported() {
    let id = localhost();
    run(async {
        let (client, server) = memory_pair(id.client(), "example.com", id.server());
        let (c, _s) = join2(client.aclose(), async {
            let mut buf = [0u8; 8];
            server.receive_some(&mut buf).await
        })
        .await;
        assert_io(&c, io::ErrorKind::InvalidData, &["TLS", "example.com"]);
        let mut buf = [0u8; 8];
        assert!(matches!(client.receive_some(&mut buf).await, Err(trio::Error::Closed)));
        assert!(matches!(client.transport().send_all(b"x").await, Err(trio::Error::Closed)), "transport closed");
        Ok(())
    })
    .unwrap();
}
