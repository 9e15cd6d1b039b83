//! A TLS server out of descriptors is not locked out by clients that
//! connect and send nothing (issue 18 item 5: 60 idle clients held a
//! 64-descriptor `serve_tls` server forever, every real client locked out).
//!
//! The process's descriptor limit is lowered (`RLIMIT_NOFILE`) so that,
//! with the idle clients' connections accepted, exactly one descriptor is
//! left: the real client's socket takes it, and the server's `accept`
//! fails with `EMFILE` (`serve_listeners` retries every 100 ms; the
//! connection waits in the listen queue). With a 10 s handshake timeout the
//! idle connections are dropped at 10 s, the next `accept` succeeds and the
//! real client is served; without one it never would be (bounded here by a
//! 60 s `fail_after`). Mock clock with autojump: no real waiting.
//!
//! With `serve_tls` (no timeout; all there was before `ServeOptions`) the
//! test fails: 600 `EMFILE` retries, then `TooSlow` at 60 s.
//!
//! Its own test binary, with one test: the limit is the whole process's.
#![cfg(target_os = "linux")]
#![cfg(feature = "tls")]

mod util;

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use trio::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream};
use trio::net::{ServeOptions, TcpStream};
use trio::tls::{TlsStream, client_config_with_roots, serve_tls_with, server_config};
use trio::{Instant, Result, current_time, fail_after, open_nursery};
use util::{mock_run, secs};

/// Idle clients, as many as the server may hold before the limit.
const IDLE: usize = 8;

fn now() -> Duration {
    current_time().unwrap().saturating_duration_since(Instant::ZERO)
}

/// Restores the descriptor limit when dropped (also on a panic).
struct NofileLimit(libc::rlimit);

impl NofileLimit {
    /// Lowers the soft limit to `soft`; the old limits come back on drop.
    fn lower_to(soft: u64) -> NofileLimit {
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let new = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: old.rlim_max };
        // SAFETY: a valid rlimit; lowering the soft limit is always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
        NofileLimit(old)
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        // SAFETY: the limits read before.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

/// The lowest free descriptor number (every one below it is in use): the
/// one a new file gets.
fn lowest_free_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/dev/null").expect("open /dev/null");
    f.as_raw_fd() as u64
}

fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    (Arc::new(server_config(vec![cert], key).unwrap()), Arc::new(client_config_with_roots(roots)))
}

async fn echo(s: TlsStream<TcpStream>, served: &Cell<u32>) -> Result<()> {
    served.set(served.get() + 1);
    util::echo_until_eof(&s).await
}

/// The real client (its socket is the last descriptor): connects, waits
/// for its handshake (the server accepts it only once it has a descriptor),
/// has a message echoed, ends cleanly. Returns when its handshake was done.
async fn real_client(addr: SocketAddr, client: Arc<rustls::ClientConfig>) -> Result<Duration> {
    let c = TlsStream::client(TcpStream::connect(addr).await?, "localhost", client)?;
    c.do_handshake().await?;
    let at = now();
    c.send_all(b"let me in").await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 9 {
        let k = c.receive_some(&mut buf).await?;
        assert!(k > 0, "end of stream before the echo");
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, b"let me in");
    c.send_eof().await?;
    assert_eq!(c.receive_some(&mut buf).await?, 0);
    c.aclose().await?;
    Ok(at)
}

#[test]
fn idle_clients_do_not_lock_a_server_out_of_descriptors() {
    let (server, client) = configs();
    mock_run(async {
        let served = Cell::new(0);
        let timed_out = Cell::new(0);
        open_nursery(async |n| {
            let handler = async |s: TlsStream<TcpStream>| echo(s, &served).await;
            let options =
                ServeOptions::new().handshake_timeout(secs(10)).on_handshake_error(|_: &TlsStream<TcpStream>, e| {
                    assert!(matches!(e, trio::Error::TooSlow), "{e}");
                    timed_out.set(timed_out.get() + 1);
                });
            let addrs = n
                .start(async move |st| {
                    match serve_tls_with(handler, 0, server, Some("127.0.0.1"), options, Some(st)).await? {}
                })
                .await?;
            let addr = addrs[0];
            let mut idle = Vec::new();
            for _ in 0..IDLE {
                idle.push(TcpStream::connect(addr).await?);
            }
            // The server accepts them (real time passes, virtual time not).
            trio::testing::wait_all_tasks_blocked(Duration::from_millis(20)).await?;
            assert_eq!(now(), Duration::ZERO);

            // One descriptor left, for the real client's socket.
            let limit = NofileLimit::lower_to(lowest_free_fd() + 1);
            let at = fail_after(secs(60), real_client(addr, client)).await;
            drop(limit);
            let at = at.expect("the real client was served within 60 s");
            assert!(at >= secs(10), "it could only be accepted once the idle clients were gone ({at:?})");
            assert!(at < secs(11), "accepted at most a few 100 ms retries after 10 s ({at:?})");
            assert_eq!(served.get(), 1);
            assert_eq!(timed_out.get(), IDLE as u32, "every idle client was dropped");
            for c in &idle {
                let mut buf = [0u8; 8];
                let r = fail_after(secs(1), c.receive_some(&mut buf)).await;
                assert!(matches!(r, Ok(0) | Err(trio::Error::Broken)), "closed by the server: {r:?}");
            }
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}
