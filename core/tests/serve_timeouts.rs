//! The handshake timeout of the serve functions (issue 18 item 5):
//! `serve_tls_with` and `serve_tcp_with` with
//! `ServeOptions::handshake_timeout`. Clients that connect and send nothing
//! are dropped once their timeout runs out, the handler never sees them,
//! the report sees each of them, and real clients are served meanwhile and
//! afterwards; a failed TLS handshake only ends its own connection; for
//! plain TCP the first byte is waited for, not read. Without a timeout the
//! idle clients stay (as `serve_tls` and `serve_tcp`, which have none).
//!
//! Loopback sockets under the mock clock with autojump: an idle client's
//! timeout fires as soon as everything else is blocked, so the ten-second
//! timeouts take no real time. Every wait for the server to close a
//! connection is bounded by a `fail_after` (60 s of virtual time): a server
//! that never drops it fails the test with `TooSlow` instead of hanging.
//! (`serve_fd_limit.rs`: the same with the server out of descriptors.)
//!
//! Before `ServeOptions`, `serve_tls` was all there was: run with it, the
//! idle-client test fails at its first bounded wait (`TooSlow`: the server
//! never closes an idle connection), as `serve_tls_has_no_timeout` shows.
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use trio::abc::{HalfCloseableStream, ReceiveStream, SendStream};
use trio::net::{ServeOptions, TcpStream, serve_tcp_with};
use trio::{Error, Instant, Result, current_time, fail_after, open_nursery};
use util::{mock_run, secs};

/// How long a test waits for the server to close a connection it should
/// drop (virtual time; autojump makes it instant).
const BOUND: Duration = Duration::from_secs(60);

/// Virtual seconds since the start of the run.
fn now() -> Duration {
    current_time().unwrap().saturating_duration_since(Instant::ZERO)
}

/// Waits (at most [`BOUND`]) for the server to close `client`, which sent
/// nothing: the end of stream (or a reset) and when it came. Fails with
/// `TooSlow` if the server keeps the connection.
async fn closed_by_server<S: ReceiveStream>(client: &S) -> Result<Duration> {
    let mut buf = [0u8; 64];
    match fail_after(BOUND, client.receive_some(&mut buf)).await {
        Ok(0) | Err(Error::Broken) => Ok(now()),
        Ok(n) => panic!("the server sent {n} bytes to an idle client"),
        Err(e) => Err(e),
    }
}

/// Watches each of `clients` (which send nothing) in a task of its own in
/// `n`, started now, before the server closes any: when the server closes
/// it, the time goes to `closed` (a client still open after [`BOUND`] fails
/// its task with `TooSlow`). Each waits from the start, as a real client
/// does. (Not one after the other once the server is done: under Wine a
/// `receive_some` started after the peer's FIN had arrived and been
/// polled is never woken, a driver issue apart from what is tested here.)
fn watch_closes<'s, 'e, S: ReceiveStream + 's>(
    n: &'s trio::Nursery<'s, 'e>,
    clients: Vec<S>,
    closed: &'s RefCell<Vec<Duration>>,
) {
    for c in clients {
        n.spawn(async move {
            let at = closed_by_server(&c).await?;
            closed.borrow_mut().push(at);
            Ok(())
        });
    }
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

/// An echo handler that counts its connections; ends at end of stream.
async fn echo<S: ReceiveStream + SendStream>(s: S, served: &Cell<u32>) -> Result<()> {
    served.set(served.get() + 1);
    util::echo_until_eof(&s).await
}

// ---- plain TCP: the first byte ----

/// `serve_tcp_with` and a 5 s first-byte timeout: three idle clients are
/// closed at 5 s without reaching the handler, each reported with
/// `TooSlow`; a client that sends its first byte after 2 s is served and
/// gets every byte back (the wait read nothing); one that connects after
/// the idle ones were dropped is served too.
#[test]
fn tcp_clients_that_send_nothing_are_dropped_after_the_first_byte_timeout() {
    mock_run(async {
        let served = Cell::new(0);
        let reports = RefCell::new(Vec::new());
        open_nursery(async |n| {
            let handler = async |s: TcpStream| echo(s, &served).await;
            let options = ServeOptions::new().handshake_timeout(secs(5)).on_handshake_error(|s: &TcpStream, e| {
                reports.borrow_mut().push((s.peer_addr().ok(), now(), e.to_string()))
            });
            let addrs = n
                .start(async move |st| match serve_tcp_with(handler, 0, Some("127.0.0.1"), options, Some(st)).await? {})
                .await?;
            let addr = addrs[0];
            let idle =
                vec![TcpStream::connect(addr).await?, TcpStream::connect(addr).await?, TcpStream::connect(addr).await?];
            let idle_ports: Vec<u16> = idle.iter().map(|c| c.local_addr().unwrap().port()).collect();
            let closed = RefCell::new(Vec::new());
            let slow = TcpStream::connect(addr).await?;
            open_nursery(async |w| {
                watch_closes(w, idle, &closed);
                // A slow but real client: connected at 0 s, speaks at 2 s.
                trio::sleep(secs(2)).await?;
                slow.send_all(b"first bytes").await?;
                assert_eq!(read_exact(&slow, 11).await?, b"first bytes", "nothing was consumed by the wait");
                assert_eq!(served.get(), 1);
                assert!(now() < secs(5), "served before the idle clients' timeout ({:?})", now());
                Ok(())
            })
            .await?;
            assert_eq!(*closed.borrow(), [secs(5); 3], "each dropped when its timeout ran out");
            assert_eq!(served.get(), 1, "the handler never saw an idle client");
            {
                let reports = reports.borrow();
                assert_eq!(reports.len(), 3, "{reports:?}");
                for (peer, at, e) in reports.iter() {
                    assert!(idle_ports.contains(&peer.expect("the stream is still open in the report").port()));
                    assert_eq!(*at, secs(5));
                    assert_eq!(*e, Error::TooSlow.to_string());
                }
            }

            // The slow client is still served after the idle ones are gone
            // (the timeout bounds only the first byte), and so is a new one.
            slow.send_all(b"more").await?;
            assert_eq!(read_exact(&slow, 4).await?, b"more");
            let late = TcpStream::connect(addr).await?;
            late.send_all(b"late").await?;
            assert_eq!(read_exact(&late, 4).await?, b"late");
            assert_eq!(served.get(), 2);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// A client that closes without sending anything (end of stream) or after
/// sending ends the first-byte wait at once: the handler is called (and
/// sees the end of stream); nothing is reported.
#[test]
fn tcp_end_of_stream_ends_the_first_byte_wait() {
    mock_run(async {
        let served = Cell::new(0);
        let reports = Cell::new(0);
        open_nursery(async |n| {
            let handler = async |s: TcpStream| echo(s, &served).await;
            let options = ServeOptions::new().handshake_timeout(secs(5)).on_handshake_error(|_: &TcpStream, _| {
                reports.set(reports.get() + 1);
            });
            let addrs = n
                .start(async move |st| match serve_tcp_with(handler, 0, Some("127.0.0.1"), options, Some(st)).await? {})
                .await?;
            let c = TcpStream::connect(addrs[0]).await?;
            c.send_eof().await?;
            let mut buf = [0u8; 8];
            assert_eq!(fail_after(BOUND, c.receive_some(&mut buf)).await?, 0);
            assert_eq!(now(), Duration::ZERO, "no timeout was needed");
            assert_eq!((served.get(), reports.get()), (1, 0));
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// `ServeOptions::new()` (no timeout) is `serve_tcp`: the handler is called
/// at once, so a server that speaks first works, and an idle client is
/// never dropped (it is still open after 60 s).
#[test]
fn without_a_timeout_the_handler_runs_at_once_and_idle_clients_stay() {
    mock_run(async {
        let reports = Cell::new(0);
        open_nursery(async |n| {
            let hello = async |s: TcpStream| {
                s.send_all(b"hello\n").await?;
                // Then waits for the client, however long.
                let mut buf = [0u8; 8];
                while s.receive_some(&mut buf).await? > 0 {}
                Ok(())
            };
            let options = ServeOptions::new().on_handshake_error(|_: &TcpStream, _| reports.set(reports.get() + 1));
            let addrs = n
                .start(async move |st| match serve_tcp_with(hello, 0, Some("127.0.0.1"), options, Some(st)).await? {})
                .await?;
            let c = TcpStream::connect(addrs[0]).await?;
            assert_eq!(read_exact(&c, 6).await?, b"hello\n");
            let mut buf = [0u8; 8];
            let r = fail_after(BOUND, c.receive_some(&mut buf)).await;
            assert!(matches!(r, Err(Error::TooSlow)), "the idle client is still connected: {r:?}");
            assert_eq!(reports.get(), 0);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// Cancelling the server while connections wait for their first byte
/// cancels them: `serve_tcp_with` returns `Cancelled`, the connections are
/// closed, nothing is reported.
#[test]
fn cancelling_the_server_during_handshakes_reports_nothing() {
    mock_run(async {
        let reports = Cell::new(0);
        let closed = RefCell::new(Vec::new());
        open_nursery(async |outer| {
            let r = trio::move_on_after(
                secs(3),
                open_nursery(async |n| {
                    let handler = async |_: TcpStream| -> Result<()> { panic!("no client sends anything") };
                    let options = ServeOptions::new()
                        .handshake_timeout(secs(10))
                        .on_handshake_error(|_: &TcpStream, _| reports.set(reports.get() + 1));
                    let addrs = n
                        .start(async move |st| {
                            match serve_tcp_with(handler, 0, Some("127.0.0.1"), options, Some(st)).await? {}
                        })
                        .await?;
                    let mut clients = Vec::new();
                    for _ in 0..3 {
                        clients.push(TcpStream::connect(addrs[0]).await?);
                    }
                    watch_closes(outer, clients, &closed);
                    Ok(())
                }),
            )
            .await?;
            assert!(r.is_none(), "cancelled at 3 s");
            assert_eq!(now(), secs(3));
            Ok(())
        })
        .await?;
        assert_eq!(*closed.borrow(), [secs(3); 3], "closed by the cancellation, not by the timeout");
        assert_eq!(reports.get(), 0);
        Ok(())
    })
    .unwrap();
}

// ---- TLS: the handshake ----

#[cfg(feature = "tls")]
mod tls {
    use std::cell::{Cell, RefCell};
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use trio::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream};
    use trio::net::{ServeOptions, TcpStream};
    use trio::tls::{TlsStream, client_config_with_roots, serve_tls, serve_tls_with, server_config};
    use trio::{Error, Result, fail_after, open_nursery};

    use super::{BOUND, closed_by_server, echo, now, read_exact, watch_closes};
    use crate::util::{mock_run, secs};

    /// A server configuration for `localhost` and a client one trusting it.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        (Arc::new(server_config(vec![cert], key).unwrap()), Arc::new(client_config_with_roots(roots)))
    }

    /// A TLS client of `addr` for `localhost`, its handshake done. (Not
    /// `open_tls_over_tcp_stream("localhost", ..)`: resolving the name
    /// takes a worker thread, and the clock would jump meanwhile.)
    async fn tls_connect(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> Result<TlsStream<TcpStream>> {
        let c = TlsStream::client(TcpStream::connect(addr).await?, "localhost", client.clone())?;
        c.do_handshake().await?;
        Ok(c)
    }

    /// One TLS client: `msg` echoed, then a clean end both ways.
    async fn tls_echo_once(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, msg: &[u8]) -> Result<()> {
        let c = tls_connect(addr, client).await?;
        c.send_all(msg).await?;
        assert_eq!(read_exact(&c, msg.len()).await?, msg);
        c.send_eof().await?;
        let mut buf = [0u8; 8];
        assert_eq!(c.receive_some(&mut buf).await?, 0, "the handler closed cleanly");
        c.aclose().await
    }

    /// What the report saw: the peer's port, when, and the error.
    type Reports = RefCell<Vec<(Option<u16>, Duration, String)>>;

    /// `serve_tls_with` with a 10 s handshake timeout. Five clients connect
    /// at 0 s and send nothing (as in the review: they held the server
    /// forever); a real client at 1 s is served at once (a slow handshake
    /// holds up nobody else); the idle ones are closed at exactly 10 s,
    /// without reaching the handler, each reported with `TooSlow` and its
    /// peer address; a real client after that is served too.
    #[test]
    fn idle_tls_clients_are_dropped_after_the_handshake_timeout() {
        let (server, client) = configs();
        mock_run(async {
            let served = Cell::new(0);
            let reports: Reports = RefCell::new(Vec::new());
            open_nursery(async |n| {
                let handler = async |s: TlsStream<TcpStream>| echo(s, &served).await;
                let options = ServeOptions::new().handshake_timeout(secs(10)).on_handshake_error(
                    |s: &TlsStream<TcpStream>, e| {
                        let port = s.transport().peer_addr().ok().map(|a| a.port());
                        reports.borrow_mut().push((port, now(), e.to_string()));
                    },
                );
                let addrs = n
                    .start(async move |st| {
                        match serve_tls_with(handler, 0, server, Some("127.0.0.1"), options, Some(st)).await? {}
                    })
                    .await?;
                let addr = addrs[0];
                let mut idle = Vec::new();
                for _ in 0..5 {
                    idle.push(TcpStream::connect(addr).await?);
                }
                let idle_ports: Vec<u16> = idle.iter().map(|c| c.local_addr().unwrap().port()).collect();
                let closed = RefCell::new(Vec::new());
                open_nursery(async |w| {
                    watch_closes(w, idle, &closed);
                    trio::sleep(secs(1)).await?;
                    tls_echo_once(addr, &client, b"meanwhile").await?;
                    assert_eq!(served.get(), 1);
                    assert!(now() < secs(10), "served while the idle clients wait ({:?})", now());
                    Ok(())
                })
                .await?;
                assert_eq!(*closed.borrow(), [secs(10); 5], "each dropped when its timeout ran out");
                {
                    let reports = reports.borrow();
                    assert_eq!(reports.len(), 5, "{reports:?}");
                    for (port, at, e) in reports.iter() {
                        assert!(idle_ports.contains(&port.expect("the stream is open in the report")));
                        assert_eq!(*at, secs(10));
                        assert_eq!(*e, Error::TooSlow.to_string());
                    }
                }
                assert_eq!(served.get(), 1, "the handler never saw an idle client");

                tls_echo_once(addr, &client, b"afterwards").await?;
                assert_eq!(served.get(), 2);
                assert_eq!(reports.borrow().len(), 5, "the real clients were not reported");
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    }

    /// A client that sends its ClientHello one byte a second cannot stretch
    /// its handshake past the timeout: it is a deadline for the whole
    /// handshake, not an idle timeout.
    #[test]
    fn a_trickling_client_is_dropped_at_the_deadline() {
        let (server, _) = configs();
        mock_run(async {
            let reports = Cell::new(0);
            open_nursery(async |n| {
                let handler = async |_: TlsStream<TcpStream>| -> Result<()> { panic!("the handshake cannot finish") };
                let options = ServeOptions::new()
                    .handshake_timeout(secs(10))
                    .on_handshake_error(|_: &TlsStream<TcpStream>, _| reports.set(reports.get() + 1));
                let addrs = n
                    .start(async move |st| {
                        match serve_tls_with(handler, 0, server, Some("127.0.0.1"), options, Some(st)).await? {}
                    })
                    .await?;
                let c = TcpStream::connect(addrs[0]).await?;
                // A TLS record header (handshake, TLS 1.0, 512 bytes), then
                // one byte of it a second, from another task, until the
                // server is gone (at most 60).
                c.send_all(&[22, 3, 1, 2, 0]).await?;
                let at = Cell::new(None);
                open_nursery(async |inner| {
                    inner.spawn(async {
                        for _ in 0..60 {
                            trio::sleep(secs(1)).await?;
                            if c.send_all(&[1]).await.is_err() {
                                break;
                            }
                        }
                        Ok(())
                    });
                    at.set(Some(closed_by_server(&c).await?));
                    inner.cancel_scope().cancel();
                    Ok(())
                })
                .await?;
                let at = at.get().expect("the server closed the connection");
                assert_eq!(at, secs(10), "closed at the deadline, though bytes kept coming");
                assert_eq!(reports.get(), 1);
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    }

    /// A failed handshake (a client speaking plain text, one that does not
    /// trust the certificate) is reported with its TLS error and ends only
    /// its own connection: the handler never sees it, no error comes out
    /// of the server, and a real client is served afterwards.
    #[test]
    fn failed_handshakes_are_reported_and_the_server_goes_on() {
        let (server, client) = configs();
        let (_, untrusting) = configs();
        mock_run(async {
            let served = Cell::new(0);
            let reports = RefCell::new(Vec::new());
            open_nursery(async |n| {
                let handler = async |s: TlsStream<TcpStream>| echo(s, &served).await;
                let options = ServeOptions::new()
                    .handshake_timeout(secs(10))
                    .on_handshake_error(|_: &TlsStream<TcpStream>, e| reports.borrow_mut().push(e.to_string()));
                let addrs = n
                    .start(async move |st| {
                        match serve_tls_with(handler, 0, server, Some("127.0.0.1"), options, Some(st)).await? {}
                    })
                    .await?;

                let plain = TcpStream::connect(addrs[0]).await?;
                plain.send_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                let mut buf = [0u8; 256];
                let mut got = 0;
                // The alert, then the end: bounded.
                for _ in 0..10 {
                    match fail_after(BOUND, plain.receive_some(&mut buf)).await {
                        Ok(0) | Err(Error::Broken) => break,
                        Ok(k) => got += k,
                        Err(e) => return Err(e),
                    }
                }
                assert!(got > 0, "a TLS alert was sent");
                let r = tls_connect(addrs[0], &untrusting).await.map(drop);
                assert!(matches!(&r, Err(Error::Io(e)) if e.kind() == io::ErrorKind::InvalidData), "{r:?}");

                tls_echo_once(addrs[0], &client, b"still serving").await?;
                assert_eq!(served.get(), 1);
                assert_eq!(now(), Duration::ZERO, "no timeout was involved");
                let reports = reports.borrow();
                assert_eq!(reports.len(), 2, "{reports:?}");
                assert!(reports.iter().all(|e| e.contains("TLS")), "{reports:?}");
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    }

    /// `serve_tls` keeps its behaviour (no timeout; the handler gets the
    /// stream before the handshake): an idle client is still connected
    /// after 60 s. This is what the review found.
    #[test]
    fn serve_tls_has_no_timeout() {
        let (server, _) = configs();
        mock_run(async {
            let handlers = Cell::new(0);
            open_nursery(async |n| {
                let handler = async |s: TlsStream<TcpStream>| {
                    handlers.set(handlers.get() + 1);
                    let mut buf = [0u8; 8];
                    s.receive_some(&mut buf).await.map(drop)
                };
                let addrs = n
                    .start(async move |st| match serve_tls(handler, 0, server, Some("127.0.0.1"), Some(st)).await? {})
                    .await?;
                let c = TcpStream::connect(addrs[0]).await?;
                let mut buf = [0u8; 8];
                let r = fail_after(BOUND, c.receive_some(&mut buf)).await;
                assert!(matches!(r, Err(Error::TooSlow)), "still connected: {r:?}");
                assert_eq!(handlers.get(), 1, "the handler got it before any handshake");
                n.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
    }
}
