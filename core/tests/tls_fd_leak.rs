//! TLS leaks no file descriptor: the process's descriptor count returns to
//! where it started after a run full of TLS connections over TCP that
//! succeed, fail their handshakes, get truncated, cancelled, unwrapped or
//! just dropped. (Its own test binary: other tests would open descriptors
//! concurrently.)
#![cfg(target_os = "linux")]
#![cfg(feature = "tls")]

mod util;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::tls::{TlsListener, TlsStream, client_config_with_roots, open_tls_over_tcp_stream, serve_tls, server_config};
use trio::{CancelScope, Result, open_nursery};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The descriptor count once it is steady: a descriptor can outlive a run
/// for a moment on another thread (none should here, since no host name is
/// resolved, but a real leak never settles, so waiting costs nothing).
fn settled_fd_count(want: usize) -> usize {
    for _ in 0..100 {
        if fd_count() == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    fd_count()
}

struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// A client trusting some other certificate.
    untrusting: Arc<rustls::ClientConfig>,
}

fn configs() -> Configs {
    let make = || {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        (cert, key)
    };
    let (cert, key) = make();
    let (other, _) = make();
    let roots = |c: CertificateDer<'static>| {
        let mut r = rustls::RootCertStore::empty();
        r.add(c).unwrap();
        r
    };
    Configs {
        server: Arc::new(server_config(vec![cert.clone()], key).unwrap()),
        client: Arc::new(client_config_with_roots(roots(cert))),
        untrusting: Arc::new(client_config_with_roots(roots(other))),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Echoes until end of stream, then closes; errors are ignored (some
/// clients below misbehave on purpose).
async fn echo(s: TlsStream<TcpStream>) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match s.receive_some(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if s.send_all(&buf[..k]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.aclose().await;
    Ok(())
}

/// One round of everything, against a server on `listener`.
async fn round(c: &Configs, listener: &TlsListener<TcpListener>, i: usize) -> Result<()> {
    let addr = listener.transport_listener.local_addr()?;
    open_nursery(async |n| {
        // The server side: every accepted stream in its own task; most are
        // closed, every third is dropped without aclose.
        n.spawn(async {
            for k in 0..6 {
                let s = listener.accept().await?;
                if k % 3 == 2 {
                    let mut b = [0u8; 8];
                    let _ = s.receive_some(&mut b).await;
                    drop(s);
                } else {
                    echo(s).await?;
                }
            }
            Ok(())
        });

        // 1. A clean round trip, closed with close_notify.
        let tls = TlsStream::client(TcpStream::connect(addr).await?, "localhost", c.client.clone())?;
        tls.send_all(b"hello").await?;
        let mut buf = [0u8; 16];
        let k = tls.receive_some(&mut buf).await?;
        assert_eq!(&buf[..k], b"hello");
        tls.send_eof().await?;
        assert_eq!(tls.receive_some(&mut buf).await?, 0);
        tls.aclose().await?;

        // 2. A failed handshake (untrusted certificate), closed or dropped.
        let tls = TlsStream::client(TcpStream::connect(addr).await?, "localhost", c.untrusting.clone())?;
        assert!(tls.do_handshake().await.is_err());
        if i.is_multiple_of(2) {
            tls.aclose().await?;
        } else {
            drop(tls);
        }

        // 3. A client speaking plain text to the TLS server.
        let plain = TcpStream::connect(addr).await?;
        plain.send_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut sink = [0u8; 256];
        while matches!(plain.receive_some(&mut sink).await, Ok(k) if k > 0) {}
        drop(plain);

        // 4. Truncated: the client's TCP connection goes away without
        //    close_notify after the handshake (the server's receive fails).
        let tls = TlsStream::client(TcpStream::connect(addr).await?, "localhost", c.client.clone())?;
        tls.do_handshake().await?;
        tls.send_all(b"x").await?;
        tls.transport().aclose().await?;
        drop(tls);

        // 5. Unwrapped, then plain text, then the transport dropped.
        let tls = TlsStream::client(TcpStream::connect(addr).await?, "localhost", c.client.clone())?;
        tls.send_all(b"y").await?;
        let k = tls.receive_some(&mut buf).await?;
        assert_eq!(&buf[..k], b"y");
        // The server echoes, and closes with close_notify when we unwrap.
        let _ = tls.unwrap().await;

        // 6. A dropped client in mid-handshake: the future cancelled, the
        //    stream dropped.
        let tls = TlsStream::client(TcpStream::connect(addr).await?, "localhost", c.client.clone())?;
        let scope = CancelScope::new();
        scope.cancel();
        assert!(scope.run(tls.do_handshake()).await?.is_none());
        drop(tls);
        Ok(())
    })
    .await?;

    // A cancelled handshake against a peer that never answers, then closed;
    // and one simply dropped.
    let silent = TcpListener::bind(loopback())?;
    let tls = TlsStream::client(TcpStream::connect(silent.local_addr()?).await?, "localhost", c.client.clone())?;
    let peer = silent.accept().await?;
    assert!(trio::move_on_after(util::secs(1), tls.do_handshake()).await?.is_none());
    tls.aclose().await?;
    let tls = TlsStream::server(TcpStream::connect(silent.local_addr()?).await?, c.server.clone())?;
    assert!(trio::move_on_after(util::secs(1), tls.do_handshake()).await?.is_none());
    drop((tls, peer, silent));

    // A refused connection through open_tls_over_tcp_stream.
    let dead = {
        let l = TcpListener::bind(loopback())?;
        l.local_addr()?.port()
    };
    assert!(open_tls_over_tcp_stream("127.0.0.1", dead, c.client.clone()).await.is_err());
    Ok(())
}

#[test]
fn no_descriptor_leaks_with_tls() {
    let c = configs();
    // Warm up once with a whole TLS connection (lazily opened process-wide
    // descriptors, if any, such as the crypto library's randomness). Host
    // names are IP addresses throughout: resolving a name would run on a
    // worker thread, whose share of the run's wakeup descriptor can
    // outlive the run for a moment.
    util::mock_run(async {
        let l = TlsListener::new(TcpListener::bind(loopback())?, c.server.clone());
        let addr = l.transport_listener.local_addr()?;
        open_nursery(async |n| {
            n.spawn(async { echo(l.accept().await?).await });
            let tls = open_tls_over_tcp_stream("127.0.0.1", addr.port(), c.client.clone()).await?;
            tls.send_eof().await?;
            let mut b = [0u8; 4];
            tls.receive_some(&mut b).await?;
            tls.aclose().await
        })
        .await?;
        Ok(())
    })
    .unwrap();
    let before = fd_count();
    util::mock_run(async {
        for i in 0..8 {
            let listener = TlsListener::new(TcpListener::bind(loopback())?, c.server.clone());
            round(&c, &listener, i).await?;
            if i.is_multiple_of(2) {
                listener.aclose().await?;
            }
        }
        // serve_tls, reached by open_tls_over_tcp_stream, then cancelled
        // with connections still open.
        open_nursery(async |n| {
            let cfg = c.server.clone();
            let addrs =
                n.start(async move |st| match serve_tls(echo, 0, cfg, Some("127.0.0.1"), Some(st)).await? {}).await?;
            let mut open = Vec::new();
            for _ in 0..5 {
                let tls = open_tls_over_tcp_stream("127.0.0.1", addrs[0].port(), c.client.clone()).await?;
                tls.send_all(b"z").await?;
                let mut b = [0u8; 4];
                assert_eq!(tls.receive_some(&mut b).await?, 1);
                open.push(tls);
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(settled_fd_count(before), before, "descriptors leaked");
}
