//! Ports of Python Trio's `src/trio/_tests/test_ssl.py` (the table is
//! `docs/TRIO_CONFORMANCE.md` (section test_ssl.py); tests already covered by `tls_basic.rs`,
//! `tls_errors.rs` and `tls_interop.rs` are not repeated here).
//!
//! Memory and lockstep streams run under a mock clock inside a deadline (a
//! deadlock jumps to the deadline and fails with `TooSlow`); TCP tests run on
//! loopback under the mock clock without deadlines.
#![cfg(feature = "tls")]
// Native only: TLS is not built for WASI.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream, Stream};
use trio::net::{TcpListener, TcpStream};
use trio::sync::Event;
use trio::testing::{
    AsyncHook, LockstepStream, MemoryReceiveStream, MemorySendStream, MemoryStream, NoStreamMaker, SyncHook,
    assert_checkpoints, check_two_way_stream, lockstep_stream_pair, memory_stream_pair, memory_stream_pump,
    wait_all_tasks_blocked,
};
use trio::tls::{TlsListener, TlsStream, client_config_with_roots, server_config};
use trio::{CancelScope, Error, Result, open_nursery};
use util::{mock_run, secs};

// ---- certificates ----

const HOST: &str = "trio-test-1.example.org";

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA issuing the server certificate for `HOST` (Trio's trustme CA).
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "trio test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Ca { params, key, cert }
    }

    /// A leaf for `name`; `expired` makes it valid only in the past.
    fn issue(&self, name: &str, client: bool, expired: bool) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap().der().clone();
        (cert, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }
}

struct Fixture {
    ca: Ca,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    client12: Arc<ClientConfig>,
}

fn fixture() -> Fixture {
    let ca = Ca::new();
    let (cert, key) = ca.issue(HOST, false, false);
    let server = Arc::new(server_config(vec![cert], key).unwrap());
    let client = Arc::new(client_config_with_roots(ca.roots()));
    let client12 = Arc::new(
        ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    );
    Fixture { ca, server, client, client12 }
}

impl Fixture {
    /// Trio's `client_ctx` fixture: TLS 1.3 (the default) and TLS 1.2.
    fn clients(&self) -> [Arc<ClientConfig>; 2] {
        [self.client.clone(), self.client12.clone()]
    }

    fn memory_pair(&self, client: &Arc<ClientConfig>) -> (TlsStream<MemoryStream>, TlsStream<MemoryStream>) {
        let (a, b) = memory_stream_pair();
        (TlsStream::client(a, HOST, client.clone()).unwrap(), TlsStream::server(b, self.server.clone()).unwrap())
    }
}

// ---- helpers ----

/// A mock-clock run inside a deadline (memory streams only).
fn run<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    mock_run(trio::fail_after(secs(600), f))
}

async fn handshake_both<S: Stream>(a: &TlsStream<S>, b: &TlsStream<S>) -> Result<()> {
    open_nursery(async |n| {
        n.spawn(a.do_handshake());
        n.spawn(b.do_handshake());
        Ok(())
    })
    .await
    .map(drop)
}

async fn receive_vec<R: ReceiveStream>(r: &R, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let n = r.receive_some(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

/// Trio's `aclose_forcefully`: close inside an already cancelled scope.
async fn aclose_forcefully<T: AsyncResource>(r: &T) -> Result<()> {
    let scope = CancelScope::new();
    scope.cancel();
    scope.run(r.aclose()).await.map(drop)
}

/// Echoes until end of stream, then `unwrap`s back (as Trio's echo server,
/// which answers the peer's `close_notify` with its own).
async fn echo_then_unwrap<S: Stream>(s: TlsStream<S>) -> Result<()> {
    for _ in 0..100_000 {
        let got = receive_vec(&s, 4096).await?;
        if got.is_empty() {
            // As Trio's echo server: answer with our close_notify, but the
            // peer may be gone already.
            let _ = s.unwrap().await;
            return Ok(());
        }
        s.send_all(&got).await?;
    }
    panic!("the echo went on too long");
}

/// Whether `e` is `Busy`, or an error group holding one.
fn has_busy(e: &Error) -> bool {
    match e {
        Error::Busy => true,
        Error::Group(v) => v.iter().any(has_busy),
        _ => false,
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

// ---- ports ----

// trio: test_ssl.py::test_ssl_server_basics
// Our server over TCP against a blocking rustls client on its own thread
// (Trio's is the stdlib ssl module on a thread).
#[test]
fn ssl_server_basics() {
    let fx = fixture();
    for client_config in fx.clients() {
        let std_listener = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let conn = rustls::ClientConnection::new(client_config, HOST.try_into().unwrap()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(b"x").unwrap();
            let mut one = [0u8; 1];
            tls.read_exact(&mut one).unwrap();
            assert_eq!(&one, b"y");
            tls.write_all(b"z").unwrap();
            // Python's `unwrap`: our close_notify, then the server's.
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });
        std_listener.set_nonblocking(true).unwrap();
        mock_run(async {
            let listener = TcpListener::from_std(std_listener)?;
            let server = TlsStream::server(listener.accept().await?, fx.server.clone())?;
            assert_eq!(receive_vec(&server, 1).await?, b"x");
            server.send_all(b"y").await?;
            assert_eq!(receive_vec(&server, 1).await?, b"z");
            assert_eq!(receive_vec(&server, 1).await?, b"", "the client's close_notify");
            server.aclose().await
        })
        .unwrap();
        client.join().unwrap();
    }
}

/// A server configuration that requires a client certificate issued by
/// `ca`.
fn server_requiring_client_certs(fx: &Fixture) -> Arc<ServerConfig> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(fx.ca.roots()), ring()).build().unwrap();
    let (cert, key) = fx.ca.issue(HOST, false, false);
    Arc::new(
        ServerConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap(),
    )
}

fn client_with_cert(fx: &Fixture, tls12: bool, expired: bool) -> Arc<ClientConfig> {
    let (cert, key) = fx.ca.issue("user.example.org", true, expired);
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    Arc::new(
        ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(fx.ca.roots())
            .with_client_auth_cert(vec![cert], key)
            .unwrap(),
    )
}

// trio: test_ssl.py::test_client_certificate
// (With rustls the server asks for client certificates through the
// `ServerConfig` a user builds; `server_config` makes one without.)
#[test]
fn client_certificate() {
    let fx = fixture();
    let server_config = server_requiring_client_certs(&fx);
    run(async {
        for tls12 in [false, true] {
            // A valid client certificate.
            let (a, b) = memory_stream_pair();
            let client = TlsStream::client(a, HOST, client_with_cert(&fx, tls12, false))?;
            let server = TlsStream::server(b, server_config.clone())?;
            open_nursery(async |n| {
                n.spawn(async {
                    client.send_all(b"x").await?;
                    assert_eq!(receive_vec(&client, 1).await?, b"y");
                    client.send_all(b"z").await?;
                    client.send_eof().await
                });
                assert_eq!(receive_vec(&server, 1).await?, b"x");
                server.send_all(b"y").await?;
                assert_eq!(receive_vec(&server, 1).await?, b"z");
                assert_eq!(receive_vec(&server, 1).await?, b"");
                Ok(())
            })
            .await?;
            assert!(server.peer_certificates().is_some_and(|c| c.len() == 1), "the client's certificate");
            server.aclose().await?;
            client.aclose().await?;

            // An expired one: the server's receive fails (and the stream is
            // broken); the client hears why.
            let (a, b) = memory_stream_pair();
            let client = TlsStream::client(a, HOST, client_with_cert(&fx, tls12, true))?;
            let server = TlsStream::server(b, server_config.clone())?;
            let client_result = RefCell::new(None);
            open_nursery(async |n| {
                n.spawn(async {
                    let r = async {
                        client.send_all(b"x").await?;
                        receive_vec(&client, 1).await
                    }
                    .await;
                    *client_result.borrow_mut() = Some(r);
                    Ok(())
                });
                let r = receive_vec(&server, 1).await;
                match &r {
                    Err(Error::Io(e)) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                        assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
                    }
                    other => panic!("expected the certificate error, got {other:?}"),
                }
                assert!(matches!(server.send_all(b"y").await, Err(Error::Broken)));
                Ok(())
            })
            .await?;
            match client_result.into_inner().expect("the client finished") {
                Err(Error::Io(e)) => assert!(e.to_string().contains("CertificateExpired"), "{e}"),
                other => panic!("expected the server's alert, got {other:?}"),
            }
            server.aclose().await?;
            client.aclose().await?;
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_full_duplex_basics
// Over TCP, against an echo server: one task sends 30 chunks of 32 KiB while
// another receives and two more run do_handshake, all at once.
#[test]
fn full_duplex_basics() {
    const CHUNKS: usize = 30;
    const CHUNK_SIZE: usize = 32768;
    let fx = fixture();
    for client_config in fx.clients() {
        mock_run(async {
            let listener = TcpListener::bind(loopback())?;
            let addr = listener.local_addr()?;
            let sent = RefCell::new(Vec::new());
            let received = RefCell::new(Vec::new());
            open_nursery(async |n| {
                n.spawn(async {
                    let server = TlsStream::server(listener.accept().await?, fx.server.clone())?;
                    echo_then_unwrap(server).await
                });
                let s = TlsStream::client(TcpStream::connect(addr).await?, HOST, client_config.clone())?;
                open_nursery(async |m| {
                    m.spawn(async {
                        for i in 0..CHUNKS {
                            let chunk = vec![i as u8; CHUNK_SIZE];
                            sent.borrow_mut().extend_from_slice(&chunk);
                            s.send_all(&chunk).await?;
                        }
                        Ok(())
                    });
                    m.spawn(async {
                        for _ in 0..CHUNKS * CHUNK_SIZE {
                            if received.borrow().len() >= CHUNKS * CHUNK_SIZE {
                                break;
                            }
                            let got = receive_vec(&s, CHUNK_SIZE / 2).await?;
                            assert!(!got.is_empty(), "early end of stream");
                            received.borrow_mut().extend_from_slice(&got);
                        }
                        Ok(())
                    });
                    m.spawn(s.do_handshake());
                    m.spawn(s.do_handshake());
                    Ok(())
                })
                .await?;
                s.aclose().await
            })
            .await?;
            assert_eq!(sent.borrow().len(), CHUNKS * CHUNK_SIZE);
            assert!(*sent.borrow() == *received.borrow(), "the echo differs");
            Ok(())
        })
        .unwrap();
    }
}

// trio: test_ssl.py::test_resource_busy_errors
// send/send, receive/receive, send/wait and wait/wait on one stream over a
// lockstep transport (the first call blocks): the second is Busy.
#[test]
fn resource_busy_errors() {
    let fx = fixture();
    type Op = fn(&TlsStream<LockstepStream>) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + '_>>;
    let send: Op = |s| Box::pin(s.send_all(b"x"));
    let receive: Op = |s| {
        Box::pin(async move {
            let mut buf = [0u8; 1];
            s.receive_some(&mut buf).await.map(drop)
        })
    };
    let wait: Op = |s| Box::pin(s.wait_send_all_might_not_block());
    run(async {
        for (first, second) in [(send, send), (receive, receive), (send, wait), (wait, wait)] {
            let (a, _b) = lockstep_stream_pair();
            let s = TlsStream::client(a, HOST, fx.client.clone())?;
            let r = open_nursery(async |n| {
                n.spawn(first(&s));
                n.spawn(second(&s));
                Ok(())
            })
            .await;
            let e = r.expect_err("the second call is refused");
            assert!(has_busy(&e), "{e:?}");
        }
        Ok(())
    })
    .unwrap();
}

/// A transport that only has `wait_send_all_might_not_block`.
struct NotAStream {
    record: RefCell<Vec<&'static str>>,
}

impl AsyncResource for NotAStream {
    async fn aclose(&self) -> Result<()> {
        panic!("aclose should not be called");
    }
}

impl SendStream for NotAStream {
    async fn send_all(&self, _: &[u8]) -> Result<()> {
        panic!("send_all should not be called");
    }
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.record.borrow_mut().push("ok");
        Ok(())
    }
}

impl ReceiveStream for NotAStream {
    async fn receive_some(&self, _: &mut [u8]) -> Result<usize> {
        panic!("receive_some should not be called");
    }
}

// trio: test_ssl.py::test_wait_writable_calls_underlying_wait_writable
// (It does not start the handshake.)
#[test]
fn wait_send_all_might_not_block_calls_the_transports() {
    let fx = fixture();
    run(async {
        let s = TlsStream::client(NotAStream { record: RefCell::default() }, "x.example", fx.client.clone())?;
        s.wait_send_all_might_not_block().await?;
        assert_eq!(*s.transport().record.borrow(), ["ok"]);
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_checkpoints
#[test]
fn every_operation_is_a_checkpoint() {
    let fx = fixture();
    run(async {
        for client_config in fx.clients() {
            let (s, server) = fx.memory_pair(&client_config);
            open_nursery(async |n| {
                n.spawn(echo_then_unwrap(server));
                assert_checkpoints(s.do_handshake()).await?;
                assert_checkpoints(s.do_handshake()).await?;
                assert_checkpoints(s.wait_send_all_might_not_block()).await?;
                assert_checkpoints(s.send_all(b"xxx")).await?;
                let mut one = [0u8; 1];
                // The first reads the record; the next two find the rest in
                // rustls's buffer and are checkpoints all the same.
                for _ in 0..3 {
                    assert_eq!(assert_checkpoints(s.receive_some(&mut one)).await?, 1);
                    assert_eq!(&one, b"x");
                }
                let (raw, trailing) = assert_checkpoints(s.unwrap()).await?;
                assert!(trailing.is_empty());
                raw.aclose().await
            })
            .await?;

            let (s, server) = fx.memory_pair(&client_config);
            open_nursery(async |n| {
                n.spawn(async {
                    let _ = echo_then_unwrap(server).await;
                    Ok(())
                });
                s.do_handshake().await?;
                assert_checkpoints(s.aclose()).await
            })
            .await?;
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_send_all_empty_string
#[test]
fn send_all_of_nothing_is_a_checkpoint_and_sends_no_eof() {
    let fx = fixture();
    run(async {
        for client_config in fx.clients() {
            let (s, server) = fx.memory_pair(&client_config);
            open_nursery(async |n| {
                n.spawn(echo_then_unwrap(server));
                s.do_handshake().await?;
                assert_checkpoints(s.send_all(b"")).await?;
                assert_checkpoints(s.send_all(b"")).await?;
                s.send_all(b"x").await?;
                assert_eq!(receive_vec(&s, 1).await?, b"x");
                s.aclose().await
            })
            .await?;
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_SSLStream_generic
// The https_compatible half of the parametrization (the strict one is
// tls_basic.rs::conformance_over_memory_streams).
#[test]
fn generic_stream_checks_in_https_compatible_mode() {
    let fx = fixture();
    let mut no_tickets = (*fx.server).clone();
    no_tickets.send_tls13_tickets = 0;
    let no_tickets = Arc::new(no_tickets);
    mock_run(async {
        let maker = async || {
            let (a, b) = memory_stream_pair();
            let client = TlsStream::client(a, HOST, fx.client.clone())?.https_compatible(true);
            let server = TlsStream::server(b, fx.server.clone())?.https_compatible(true);
            Ok((client, server))
        };
        check_two_way_stream(maker, None::<NoStreamMaker<_, _>>).await?;
        // And over a lockstep transport, with the clogged checks.
        let clogged = async || {
            let (a, b) = lockstep_stream_pair();
            let client = TlsStream::client(a, HOST, fx.client.clone())?.https_compatible(true);
            let server = TlsStream::server(b, no_tickets.clone())?.https_compatible(true);
            handshake_both(&client, &server).await?;
            Ok((client, server))
        };
        let maker = async || {
            let (a, b) = lockstep_stream_pair();
            let client = TlsStream::client(a, HOST, fx.client.clone())?.https_compatible(true);
            let server = TlsStream::server(b, no_tickets.clone())?.https_compatible(true);
            handshake_both(&client, &server).await?;
            Ok((client, server))
        };
        check_two_way_stream(maker, Some(clogged)).await
    })
    .unwrap();
}

// trio: test_ssl.py::test_unwrap
// Bytes the peer sent right after its close_notify, received in the same
// transport read, come back from `unwrap` with the transport.
#[test]
fn unwrap_returns_the_bytes_after_close_notify() {
    let fx = fixture();
    run(async {
        for client_config in fx.clients() {
            let (client, server) = fx.memory_pair(&client_config);
            let client_send = client.transport().send_stream.clone();
            let server_receive = server.transport().receive_stream.clone();
            let stopped = Event::new();
            open_nursery(async |n| {
                n.spawn(async {
                    client.do_handshake().await?;
                    client.send_all(b"x").await?;
                    assert_eq!(receive_vec(&client, 1).await?, b"y");
                    client.send_all(b"z").await?;
                    // Hold back what the client sends from now on, so the
                    // server gets our close_notify and what follows at once.
                    client_send.set_send_all_hook(None);
                    stopped.set();
                    assert_eq!(receive_vec(&client, 1).await?, b"", "the server's close_notify");
                    let (raw, trailing) = client.unwrap().await?;
                    assert!(trailing.is_empty());
                    raw.send_all(b"trailing").await?;
                    let pumped = memory_stream_pump(&client_send, &server_receive, None)?;
                    assert!(pumped, "close_notify and the trailing bytes went over together");
                    Ok(())
                });
                server.do_handshake().await?;
                assert_eq!(receive_vec(&server, 1).await?, b"x");
                server.send_all(b"y").await?;
                assert_eq!(receive_vec(&server, 1).await?, b"z");
                stopped.wait().await?;
                let (raw, trailing) = server.unwrap().await?;
                assert_eq!(trailing, b"trailing");
                raw.aclose().await
            })
            .await?;
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_closing_nice_case
#[test]
fn closing_nice_case() {
    let fx = fixture();
    run(async {
        for client_config in fx.clients() {
            let (client, server) = fx.memory_pair(&client_config);
            open_nursery(async |n| {
                n.spawn(async { assert_checkpoints(client.aclose()).await });
                assert_eq!(receive_vec(&server, 10).await?, b"");
                assert_eq!(receive_vec(&server, 10).await?, b"");
                assert_checkpoints(server.aclose()).await
            })
            .await?;
            // Closing the TLS stream closed its transport.
            assert!(matches!(client.transport().send_all(b"123").await, Err(Error::Closed)));
            // Closing again is fine, and a checkpoint.
            assert_checkpoints(client.aclose()).await?;
            assert_checkpoints(client.aclose()).await?;
            assert!(matches!(server.send_all(b"123").await, Err(Error::Closed)));
            let mut buf = [0u8; 10];
            assert!(matches!(client.receive_some(&mut buf).await, Err(Error::Closed)), "closed locally: an error");
            assert!(matches!(client.do_handshake().await, Err(Error::Closed)));
            assert!(matches!(client.unwrap().await, Err(Error::Closed)));

            // A graceful close before the handshake is a clean end for the
            // peer.
            let (client, server) = fx.memory_pair(&client_config);
            open_nursery(async |n| {
                n.spawn(client.aclose());
                assert_eq!(assert_checkpoints(receive_vec(&server, 10)).await?, b"");
                assert_checkpoints(server.aclose()).await
            })
            .await?;

            // Also when the client's last handshake flight (in TLS 1.3 its
            // Finished, after which the server sends session tickets to a
            // client that is gone), its close_notify and its transport's EOF
            // reach the server in one read: the client's sends after its
            // first ones stay in its buffer until its transport closes.
            let (a, b) = memory_stream_pair();
            let live = if Arc::ptr_eq(&client_config, &fx.client12) { 2 } else { 1 };
            let (sends, r) = (Rc::new(Cell::new(0)), b.receive_stream.clone());
            let count = sends.clone();
            a.send_stream.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
                count.set(count.get() + 1);
                if count.get() <= live { memory_stream_pump(s, &r, None).map(drop) } else { Ok(()) }
            })));
            let client = TlsStream::client(a, HOST, client_config.clone())?;
            let server = TlsStream::server(b, fx.server.clone())?;
            open_nursery(async |n| {
                n.spawn(client.aclose());
                assert_eq!(assert_checkpoints(receive_vec(&server, 10)).await?, b"");
                assert_checkpoints(server.aclose()).await
            })
            .await?;
            assert!(sends.get() > live, "the client's close_notify was held back");
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_send_all_fails_in_the_middle
#[test]
fn send_all_fails_in_the_middle() {
    let fx = fixture();
    run(async {
        let (client, server) = fx.memory_pair(&fx.client);
        handshake_both(&client, &server).await?;
        client
            .transport()
            .send_stream
            .set_send_all_hook(Some(AsyncHook::new(async |_: &MemorySendStream| Err(Error::from("KeyError")))));
        match client.send_all(b"x").await {
            Err(Error::User(e)) => assert_eq!(e.to_string(), "KeyError"),
            other => panic!("the transport's error, not {other:?}"),
        }
        assert!(matches!(client.wait_send_all_might_not_block().await, Err(Error::Broken)));
        let closed = Rc::new(Cell::new(0));
        let c = closed.clone();
        client
            .transport()
            .send_stream
            .set_close_hook(Some(SyncHook::new(move |_: &MemorySendStream| c.set(c.get() + 1))));
        let c = closed.clone();
        client
            .transport()
            .receive_stream
            .set_close_hook(Some(SyncHook::new(move |_: &MemoryReceiveStream| c.set(c.get() + 1))));
        client.aclose().await?;
        assert_eq!(closed.get(), 2, "both halves of the transport closed");
        server.aclose().await
    })
    .unwrap();
}

// trio: test_ssl.py::test_ssl_over_ssl
#[test]
fn tls_over_tls() {
    let fx = fixture();
    run(async {
        let (a, b) = memory_stream_pair();
        let client_1 = TlsStream::client(a, HOST, fx.client.clone())?;
        let server_1 = TlsStream::server(b, fx.server.clone())?;
        let client_2 = TlsStream::client(client_1, HOST, fx.client.clone())?;
        let server_2 = TlsStream::server(server_1, fx.server.clone())?;
        open_nursery(async |n| {
            n.spawn(async {
                client_2.send_all(b"hi").await?;
                assert_eq!(receive_vec(&client_2, 10).await?, b"bye");
                Ok(())
            });
            assert_eq!(receive_vec(&server_2, 10).await?, b"hi");
            server_2.send_all(b"bye").await
        })
        .await
    })
    .unwrap();
}

// trio: test_ssl.py::test_ssl_bad_shutdown
// A peer that closes without close_notify: Broken for receive and send
// (Trio's BrokenResourceError).
#[test]
fn bad_shutdown_is_broken() {
    let fx = fixture();
    run(async {
        for client_config in fx.clients() {
            let (client, server) = fx.memory_pair(&client_config);
            handshake_both(&client, &server).await?;
            aclose_forcefully(&client).await?;
            let mut buf = [0u8; 10];
            let r = server.receive_some(&mut buf).await;
            assert!(matches!(r, Err(Error::Broken)), "{r:?}");
            assert!(matches!(server.send_all(&[b'x'; 10]).await, Err(Error::Broken)));
            server.aclose().await?;

            // Also when the receive is already waiting, and for a send
            // first.
            let (client, server) = fx.memory_pair(&client_config);
            handshake_both(&client, &server).await?;
            open_nursery(async |n| {
                n.spawn(async {
                    let r = server.receive_some(&mut [0u8; 10]).await;
                    assert!(matches!(r, Err(Error::Broken)), "{r:?}");
                    Ok(())
                });
                wait_all_tasks_blocked(Duration::ZERO).await?;
                aclose_forcefully(&client).await
            })
            .await?;
            let (client, server) = fx.memory_pair(&client_config);
            handshake_both(&client, &server).await?;
            aclose_forcefully(&client).await?;
            assert!(matches!(server.send_all(&[b'x'; 10]).await, Err(Error::Broken)));
        }
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_ssl_bad_shutdown_but_its_ok
#[test]
fn bad_shutdown_is_a_clean_end_in_https_compatible_mode() {
    let fx = fixture();
    run(async {
        let (client, server) = fx.memory_pair(&fx.client);
        let (client, server) = (client.https_compatible(true), server.https_compatible(true));
        handshake_both(&client, &server).await?;
        aclose_forcefully(&client).await?;
        assert_eq!(receive_vec(&server, 10).await?, b"");
        assert!(matches!(server.send_all(&[b'x'; 10]).await, Err(Error::Broken)));
        server.aclose().await
    })
    .unwrap();
}

/// A memory transport whose `aclose` fails (after closing), counting calls.
struct FailingClose {
    inner: MemoryStream,
    closes: Cell<usize>,
}

impl AsyncResource for FailingClose {
    async fn aclose(&self) -> Result<()> {
        self.inner.aclose().await?;
        self.closes.set(self.closes.get() + 1);
        Err(Error::from("KeyError"))
    }
}

impl SendStream for FailingClose {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.inner.send_all(data).await
    }
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.inner.wait_send_all_might_not_block().await
    }
}

impl ReceiveStream for FailingClose {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.inner.receive_some(buf).await
    }
}

// trio: test_ssl.py::test_ssl_only_closes_stream_once
#[test]
fn the_transport_is_closed_once_even_if_its_close_fails() {
    let fx = fixture();
    run(async {
        let (a, b) = memory_stream_pair();
        let client = TlsStream::client(FailingClose { inner: a, closes: Cell::new(0) }, HOST, fx.client.clone())?;
        let server = TlsStream::server(b, fx.server.clone())?;
        open_nursery(async |n| {
            n.spawn(server.do_handshake());
            client.do_handshake().await
        })
        .await?;
        match client.aclose().await {
            Err(Error::User(e)) => assert_eq!(e.to_string(), "KeyError"),
            other => panic!("the transport's close error, not {other:?}"),
        }
        assert_eq!(client.transport().closes.get(), 1);
        client.aclose().await?;
        assert_eq!(client.transport().closes.get(), 1, "not closed again");
        server.aclose().await
    })
    .unwrap();
}

// trio: test_ssl.py::test_selected_alpn_protocol_before_handshake
// trio: test_ssl.py::test_selected_alpn_protocol_when_not_set
// (Trio raises NeedHandshakeError before the handshake; here it is `None`.)
#[test]
fn alpn_protocol_is_none_before_the_handshake_and_when_not_set() {
    let fx = fixture();
    run(async {
        let (client, server) = fx.memory_pair(&fx.client);
        assert_eq!(client.alpn_protocol(), None);
        assert_eq!(server.alpn_protocol(), None);
        handshake_both(&client, &server).await?;
        assert_eq!(client.alpn_protocol(), None);
        assert_eq!(server.alpn_protocol(), None);
        Ok(())
    })
    .unwrap();
}

// trio: test_ssl.py::test_SSLListener
#[test]
fn tls_listener_and_its_https_compatible_option() {
    let fx = fixture();
    // No TLS 1.3 session tickets: a client that closes its socket with them
    // unread makes the kernel reset the connection (a different error).
    let mut no_tickets = (*fx.server).clone();
    no_tickets.send_tls13_tickets = 0;
    let no_tickets = Arc::new(no_tickets);
    mock_run(async {
        for https in [false, true] {
            let listener = TlsListener::new(TcpListener::bind(loopback())?, no_tickets.clone()).https_compatible(https);
            let addr = listener.transport_listener.local_addr()?;
            let client = TlsStream::client(TcpStream::connect(addr).await?, HOST, fx.client.clone())?;
            let server = listener.accept().await?;
            handshake_both(&client, &server).await?;
            // The client goes away without close_notify.
            client.transport().aclose().await?;
            let r = server.receive_some(&mut [0u8; 10]).await;
            if https {
                assert_eq!(r?, 0, "accepted streams are https_compatible");
            } else {
                assert!(matches!(r, Err(Error::Broken)), "{r:?}");
            }
            server.aclose().await?;
            client.aclose().await?;
            listener.aclose().await?;
            assert!(matches!(listener.accept().await, Err(Error::Closed)), "closing it closed the socket");
        }
        Ok(())
    })
    .unwrap();
}
