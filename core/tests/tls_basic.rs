//! TLS over memory streams and TCP: the basics and the conformance checks.
#![cfg(feature = "tls")]

mod util;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use trio::abc::Listener;
use trio::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::open_nursery;
use trio::testing::NoStreamMaker;
use trio::testing::{
    LockstepStream, MemoryStream, check_half_closeable_stream, lockstep_stream_pair, memory_stream_pair,
};
use trio::tls::{TlsStream, client_config_with_roots, server_config};
use util::mock_run;

struct Certs {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    /// Without TLS 1.3 session tickets: over a lockstep transport the
    /// server's tickets, sent after the handshake, would block until the
    /// client reads, and the client does not read during `do_handshake`.
    server_no_tickets: Arc<rustls::ServerConfig>,
}

fn certs() -> Certs {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let server = server_config(vec![cert], key).unwrap();
    let mut server_no_tickets = server.clone();
    server_no_tickets.send_tls13_tickets = 0;
    Certs {
        client: Arc::new(client_config_with_roots(roots)),
        server: Arc::new(server),
        server_no_tickets: Arc::new(server_no_tickets),
    }
}

/// A memory or a lockstep transport: the checks need one type for the
/// normal and the clogged maker.
enum Transport {
    Memory(MemoryStream),
    Lockstep(LockstepStream),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Transport::Memory($s) => $e,
            Transport::Lockstep($s) => $e,
        }
    };
}

impl AsyncResource for Transport {
    async fn aclose(&self) -> trio::Result<()> {
        each!(self, s => s.aclose().await)
    }
}
impl SendStream for Transport {
    async fn send_all(&self, data: &[u8]) -> trio::Result<()> {
        each!(self, s => s.send_all(data).await)
    }
    async fn wait_send_all_might_not_block(&self) -> trio::Result<()> {
        each!(self, s => s.wait_send_all_might_not_block().await)
    }
}
impl ReceiveStream for Transport {
    async fn receive_some(&self, buf: &mut [u8]) -> trio::Result<usize> {
        each!(self, s => s.receive_some(buf).await)
    }
}

fn tls_pair(c: &Certs) -> (TlsStream<Transport>, TlsStream<Transport>) {
    let (a, b) = memory_stream_pair();
    (
        TlsStream::client(Transport::Memory(a), "localhost", c.client.clone()).unwrap(),
        TlsStream::server(Transport::Memory(b), c.server.clone()).unwrap(),
    )
}

#[test]
fn hello_over_memory_streams() {
    let c = certs();
    mock_run(async {
        let (client, server) = tls_pair(&c);
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 64];
                let k = server.receive_some(&mut buf).await?;
                server.send_all(&buf[..k]).await?;
                assert_eq!(server.server_name().as_deref(), Some("localhost"));
                Ok(())
            });
            client.send_all(b"hello tls").await?;
            let mut buf = [0u8; 64];
            let k = client.receive_some(&mut buf).await?;
            assert_eq!(&buf[..k], b"hello tls");
            assert_eq!(client.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
            assert!(client.cipher_suite().is_some());
            assert_eq!(client.peer_certificates().map(|v| v.len()), Some(1));
            Ok(())
        })
        .await?;
        client.send_eof().await?;
        let mut buf = [0u8; 4];
        assert_eq!(server.receive_some(&mut buf).await?, 0);
        server.aclose().await?;
        client.aclose().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn conformance_over_memory_streams() {
    let c = certs();
    mock_run(async {
        let maker = async || Ok(tls_pair(&c));
        let clogged = async || {
            let (a, b) = lockstep_stream_pair();
            let client = TlsStream::client(Transport::Lockstep(a), "localhost", c.client.clone())?;
            let server = TlsStream::server(Transport::Lockstep(b), c.server_no_tickets.clone())?;
            // Handshake first: a lockstep transport blocks every send until
            // the peer reads, so both sides must run at once.
            open_nursery(async |n| {
                n.spawn(client.do_handshake());
                n.spawn(server.do_handshake());
                Ok(())
            })
            .await?;
            Ok((client, server))
        };
        check_half_closeable_stream(maker, Some(clogged)).await
    })
    .unwrap();
}

async fn tcp_tls_pair(c: &Certs) -> trio::Result<(TlsStream<TcpStream>, TlsStream<TcpStream>)> {
    let l = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    let client = TcpStream::connect(l.local_addr()?).await?;
    let server = l.accept().await?;
    Ok((TlsStream::client(client, "localhost", c.client.clone())?, TlsStream::server(server, c.server.clone())?))
}

#[test]
fn conformance_over_tcp() {
    let c = certs();
    mock_run(async { check_half_closeable_stream(async || tcp_tls_pair(&c).await, None::<NoStreamMaker<_, _>>).await })
        .unwrap();
}

#[test]
fn conformance_over_tcp_with_the_system_clock() {
    let c = certs();
    trio::run(async {
        check_half_closeable_stream(async || tcp_tls_pair(&c).await, None::<NoStreamMaker<_, _>>).await
    })
    .unwrap();
}
