//! The TLS benchmarks: trio's `TlsStream` against tokio-rustls on tokio's
//! current-thread runtime, over loopback TCP.
//!
//! Both ends of every connection run in this process, on the runtime under
//! test (trio: a server task and the client in one `trio::run`; tokio: a
//! server task and the client in one current-thread runtime), so each
//! runtime does all the work of both sides. Both use the same rustls
//! configurations: one self-signed ECDSA P-256 certificate (rcgen), the ring
//! provider, TLS 1.3 (checked), no session resumption (the client's
//! `Resumption::disabled()`, the server's `send_tls13_tickets = 0`), so every
//! handshake is a full one. `TCP_NODELAY` on both sides (trio's default).
//!
//! - Handshakes: N connections one after the other, each: connect, full
//!   handshake, a 1-byte echo, then `close_notify` both ways (the client's
//!   first; the server closes TCP first, so it keeps the `TIME_WAIT`s, not
//!   our ephemeral ports). The server accepts in its own task and gives each
//!   connection a task. Reported: handshakes per second (the median of the
//!   rounds).
//! - Bulk: one connection (handshake not timed); the client sends 1 MiB, the
//!   server reads all of it and sends it back, the client reads it all;
//!   timed per transfer, the median over every transfer of every round.
//!   Reported: payload MiB/s counting both directions (2 MiB moved per
//!   transfer).
//!
//! Where io_uring is available, trio runs both again on its io_uring
//! driver (rows "trio on io_uring", against the same tokio figures), and
//! monoio on its io_uring driver with monoio-rustls (the monoio column).
//!
//! For scale, the same work on rustls alone, in memory (no sockets, no
//! runtime): the floor both runtimes add their I/O and scheduling to.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::tls::{TlsListener, TlsStream};

use crate::results::{Record, Size};

/// The bulk transfer's size, each way.
const BULK: usize = 1024 * 1024;
/// Untimed transfers at the start of each bulk run.
const BULK_WARMUP: usize = 2;

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// How much to run.
pub(crate) struct Plan {
    handshakes: usize,
    handshake_rounds: usize,
    bulk_transfers: usize,
    bulk_rounds: usize,
}

impl Plan {
    pub(crate) fn new(size: Size) -> Plan {
        match size {
            Size::Full => Plan { handshakes: 1000, handshake_rounds: 5, bulk_transfers: 50, bulk_rounds: 5 },
            Size::Quick => Plan { handshakes: 200, handshake_rounds: 3, bulk_transfers: 10, bulk_rounds: 2 },
            Size::Tiny => Plan { handshakes: 10, handshake_rounds: 1, bulk_transfers: 2, bulk_rounds: 1 },
        }
    }
}

/// The configurations both runtimes use.
struct Configs {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

fn configs() -> Configs {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("the certificate as a root");
    // trio's secure defaults (ring, TLS 1.2 and 1.3), without resumption.
    let mut client = trio::tls::client_config_with_roots(roots);
    client.resumption = rustls::client::Resumption::disabled();
    let mut server = trio::tls::server_config(vec![cert], key).expect("server config");
    server.send_tls13_tickets = 0;
    Configs { client: Arc::new(client), server: Arc::new(server) }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a DNS name")
}

// --- handshakes -----------------------------------------------------------

/// The server's side of one handshake connection: echo until the client's
/// `close_notify`, then close (with ours).
async fn trio_handshake_server(stream: TlsStream<trio::net::TcpStream>) -> trio::Result<()> {
    let mut buf = [0u8; 64];
    loop {
        let n = stream.receive_some(&mut buf).await?;
        if n == 0 {
            return stream.aclose().await;
        }
        stream.send_all(&buf[..n]).await?;
    }
}

/// `n` sequential connections; seconds in all.
fn trio_handshakes(c: &Configs, n: usize, driver: trio::Driver) -> f64 {
    let secs = Cell::new(0.0);
    trio::RunOptions::new()
        .driver(driver)
        .run(async {
            let listener = trio::net::TcpListener::bind(LOOPBACK)?;
            let addr = listener.local_addr()?;
            let listener = TlsListener::new(listener, c.server.clone());
            trio::open_nursery(async |nursery| {
                nursery.spawn(async move {
                    match trio::net::serve_listeners(trio_handshake_server, vec![listener], None, None).await? {}
                });
                let mut buf = [0u8; 64];
                let t = Instant::now();
                for i in 0..n {
                    let tcp = trio::net::TcpStream::connect(addr).await?;
                    let tls = TlsStream::client(tcp, "localhost", c.client.clone())?;
                    tls.do_handshake().await?;
                    if i == 0 {
                        assert_eq!(tls.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
                    }
                    tls.send_all(&[7]).await?;
                    assert_eq!(tls.receive_some(&mut buf).await?, 1);
                    tls.send_eof().await?;
                    assert_eq!(tls.receive_some(&mut buf).await?, 0);
                    tls.aclose().await?;
                }
                secs.set(t.elapsed().as_secs_f64());
                nursery.cancel_scope().cancel();
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("trio TLS handshakes: {e}"));
    secs.get()
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime")
}

fn tokio_handshakes(c: &Configs, n: usize) -> f64 {
    tokio_runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(c.server.clone());
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut buf = [0u8; 64];
                    loop {
                        let n = tls.read(&mut buf).await.unwrap();
                        if n == 0 {
                            // Our close_notify, then TCP's FIN.
                            tls.shutdown().await.unwrap();
                            return;
                        }
                        tls.write_all(&buf[..n]).await.unwrap();
                    }
                });
            }
        });
        let connector = tokio_rustls::TlsConnector::from(c.client.clone());
        let mut buf = [0u8; 64];
        let t = Instant::now();
        for i in 0..n {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = connector.connect(server_name(), tcp).await.unwrap();
            if i == 0 {
                assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
            }
            tls.write_all(&[7]).await.unwrap();
            assert_eq!(tls.read(&mut buf).await.unwrap(), 1);
            // close_notify without shutting TCP down (trio's `send_eof`;
            // tokio-rustls's `shutdown` would also send a FIN).
            tls.get_mut().1.send_close_notify();
            tls.flush().await.unwrap();
            assert_eq!(tls.read(&mut buf).await.unwrap(), 0);
        }
        let secs = t.elapsed().as_secs_f64();
        server.abort();
        secs
    })
}

/// monoio's side (its io_uring driver and monoio-rustls, the same
/// configurations): `n` sequential connections; seconds in all. Its close
/// is `shutdown` (close_notify and the TCP FIN; monoio-rustls has no
/// close_notify alone), the server answering the same way.
#[cfg(target_os = "linux")]
fn monoio_handshakes(c: &Configs, n: usize) -> f64 {
    use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().expect("a monoio runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind(LOOPBACK).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = monoio_rustls::TlsAcceptor::from(c.server.clone());
        monoio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let acceptor = acceptor.clone();
                monoio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut buf = vec![0u8; 64];
                    loop {
                        let (r, b) = tls.read(buf).await;
                        let n = r.unwrap();
                        if n == 0 {
                            tls.shutdown().await.unwrap();
                            return;
                        }
                        let (r, b) = tls.write_all(b).await;
                        r.unwrap();
                        buf = b;
                    }
                });
            }
        });
        let connector = monoio_rustls::TlsConnector::from(c.client.clone());
        let mut buf = vec![0u8; 64];
        let t = Instant::now();
        for _ in 0..n {
            let tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = connector.connect(server_name(), tcp).await.unwrap();
            let (r, _) = tls.write_all(vec![7u8]).await;
            r.unwrap();
            let (r, b) = tls.read(buf).await;
            assert_eq!(r.unwrap(), 1);
            tls.shutdown().await.unwrap();
            let (r, b) = tls.read(b).await;
            assert_eq!(r.unwrap(), 0);
            buf = b;
        }
        t.elapsed().as_secs_f64()
    })
}

/// monoio's bulk transfers, as `tokio_bulk`.
#[cfg(target_os = "linux")]
fn monoio_bulk(c: &Configs, transfers: usize) -> Vec<f64> {
    use monoio::io::{AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().expect("a monoio runtime");
    rt.block_on(async {
        let listener = monoio::net::TcpListener::bind(LOOPBACK).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = monoio_rustls::TlsAcceptor::from(c.server.clone());
        let server = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = vec![0u8; BULK];
            loop {
                let (r, b) = tls.read_exact(buf).await;
                match r {
                    Ok(_) => {
                        let (r, b) = tls.write_all(b).await;
                        r.unwrap();
                        buf = b;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => panic!("monoio TLS bulk server: {e}"),
                }
            }
            tls.shutdown().await.unwrap();
        });
        let tcp = monoio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut tls = monoio_rustls::TlsConnector::from(c.client.clone()).connect(server_name(), tcp).await.unwrap();
        let mut data = vec![0x5au8; BULK];
        let mut buf = vec![0u8; BULK];
        let mut times = Vec::with_capacity(transfers);
        for i in 0..BULK_WARMUP + transfers {
            let t = Instant::now();
            let (r, d) = tls.write_all(data).await;
            r.unwrap();
            data = d;
            let (r, b) = tls.read_exact(buf).await;
            r.unwrap();
            buf = b;
            if i >= BULK_WARMUP {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        assert_eq!(buf, data);
        tls.shutdown().await.unwrap();
        server.await;
        times
    })
}

/// The handshakes on rustls alone: both connections in memory, their
/// records handed over in buffers.
fn rustls_handshakes(c: &Configs, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let mut client = Connection::Client(ClientConnection::new(c.client.clone(), server_name()).unwrap());
        let mut server = Connection::Server(ServerConnection::new(c.server.clone()).unwrap());
        while client.is_handshaking() || server.is_handshaking() {
            let a = transfer(&mut client, &mut server);
            let b = transfer(&mut server, &mut client);
            assert!(a + b > 0, "the in-memory handshake is stuck");
        }
        std::hint::black_box(&client);
    }
    t.elapsed().as_secs_f64()
}

/// The cipher suite and key exchange the configurations agree on.
fn negotiated(c: &Configs) -> String {
    let mut client = Connection::Client(ClientConnection::new(c.client.clone(), server_name()).unwrap());
    let mut server = Connection::Server(ServerConnection::new(c.server.clone()).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }
    let suite = client.negotiated_cipher_suite().map_or_else(|| "?".to_owned(), |s| format!("{:?}", s.suite()));
    let kx = client.negotiated_key_exchange_group().map_or_else(|| "?".to_owned(), |g| format!("{:?}", g.name()));
    format!("{suite}, {kx}")
}

/// Moves what `from` has queued to `to`, processing it; the byte count.
fn transfer(from: &mut Connection, to: &mut Connection) -> usize {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets().unwrap();
    }
    buf.len()
}

// --- bulk -----------------------------------------------------------------

/// Reads exactly `buf.len()` bytes; false on a clean end of stream first.
async fn trio_read_exact<S: ReceiveStream>(s: &S, buf: &mut [u8]) -> trio::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = s.receive_some(&mut buf[got..]).await?;
        if n == 0 {
            assert_eq!(got, 0, "end of stream in the middle of a transfer");
            return Ok(false);
        }
        got += n;
    }
    Ok(true)
}

/// Seconds per transfer (1 MiB there and back), after the warm-up.
fn trio_bulk(c: &Configs, transfers: usize, driver: trio::Driver) -> Vec<f64> {
    trio::RunOptions::new()
        .driver(driver)
        .run(async {
            let listener = trio::net::TcpListener::bind(LOOPBACK)?;
            let addr = listener.local_addr()?;
            let mut times = Vec::with_capacity(transfers);
            trio::open_nursery(async |nursery| {
                nursery.spawn(async move {
                    let tls = TlsStream::server(listener.accept().await?, c.server.clone())?;
                    let mut buf = vec![0u8; BULK];
                    while trio_read_exact(&tls, &mut buf).await? {
                        tls.send_all(&buf).await?;
                    }
                    tls.aclose().await
                });
                let tcp = trio::net::TcpStream::connect(addr).await?;
                let tls = TlsStream::client(tcp, "localhost", c.client.clone())?;
                tls.do_handshake().await?;
                let data = vec![0x5au8; BULK];
                let mut buf = vec![0u8; BULK];
                for i in 0..BULK_WARMUP + transfers {
                    let t = Instant::now();
                    tls.send_all(&data).await?;
                    assert!(trio_read_exact(&tls, &mut buf).await?);
                    if i >= BULK_WARMUP {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
                assert_eq!(buf, data);
                tls.send_eof().await?;
                assert_eq!(tls.receive_some(&mut buf).await?, 0);
                tls.aclose().await
            })
            .await?;
            Ok(times)
        })
        .unwrap_or_else(|e| panic!("trio TLS bulk: {e}"))
}

fn tokio_bulk(c: &Configs, transfers: usize) -> Vec<f64> {
    tokio_runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(c.server.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buf = vec![0u8; BULK];
            loop {
                match tls.read_exact(&mut buf).await {
                    Ok(_) => tls.write_all(&buf).await.unwrap(),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => panic!("tokio TLS bulk server: {e}"),
                }
            }
            tls.shutdown().await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(c.client.clone()).connect(server_name(), tcp).await.unwrap();
        let data = vec![0x5au8; BULK];
        let mut buf = vec![0u8; BULK];
        let mut times = Vec::with_capacity(transfers);
        for i in 0..BULK_WARMUP + transfers {
            let t = Instant::now();
            tls.write_all(&data).await.unwrap();
            tls.read_exact(&mut buf).await.unwrap();
            if i >= BULK_WARMUP {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        assert_eq!(buf, data);
        tls.get_mut().1.send_close_notify();
        tls.flush().await.unwrap();
        assert_eq!(tls.read(&mut buf).await.unwrap(), 0);
        server.await.unwrap();
        times
    })
}

/// The bulk transfers on rustls alone, in memory: encrypt, hand over,
/// decrypt, both ways.
fn rustls_bulk(c: &Configs, transfers: usize) -> Vec<f64> {
    let mut client = Connection::Client(ClientConnection::new(c.client.clone(), server_name()).unwrap());
    let mut server = Connection::Server(ServerConnection::new(c.server.clone()).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }
    let data = vec![0x5au8; BULK];
    let mut buf = vec![0u8; BULK];
    let mut times = Vec::with_capacity(transfers);
    for i in 0..BULK_WARMUP + transfers {
        let t = Instant::now();
        pipe(&mut client, &mut server, &data, &mut buf);
        pipe(&mut server, &mut client, &data, &mut buf);
        if i >= BULK_WARMUP {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    assert_eq!(buf, data);
    times
}

/// Sends `data` from `from` to `to` and reads it there into `out`.
fn pipe(from: &mut Connection, to: &mut Connection, data: &[u8], out: &mut [u8]) {
    let (mut sent, mut got) = (0, 0);
    let mut records = Vec::new();
    while got < data.len() {
        if sent < data.len() {
            sent += from.writer().write(&data[sent..]).unwrap();
        }
        records.clear();
        while from.wants_write() {
            from.write_tls(&mut records).unwrap();
        }
        // Piece by piece, taking the plaintext out as it comes (rustls
        // takes no more while too much of it waits).
        let mut rest = &records[..];
        loop {
            while got < out.len() {
                match to.reader().read(&mut out[got..]) {
                    Ok(0) => panic!("in-memory TLS: end of stream"),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("in-memory TLS: {e}"),
                }
            }
            if rest.is_empty() {
                break;
            }
            to.read_tls(&mut rest).unwrap();
            to.process_new_packets().unwrap();
        }
    }
}

// --- the report -----------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(case: &str, metric: &str, x: f64, y: f64, prec: usize) {
    let ratio = if y > 0.0 { format!("{:.2}", x / y) } else { "-".to_owned() };
    println!("{case:<20} {metric:<30} {x:>12.prec$} {y:>12.prec$} {ratio:>8}");
}

/// Runs the TLS workloads of `plan`, prints the comparison and returns it.
pub(crate) fn run(plan: &Plan) -> Vec<Record> {
    use trio::Driver::{Epoll, Uring};
    let mut records = Vec::new();
    let c = configs();
    println!();
    println!(
        "TLS over loopback TCP (rustls 0.23, ring, TLS 1.3, {}, one self-signed ECDSA P-256 certificate, \
         no resumption): client and server in one process, both on the runtime under test (trio: TlsStream; \
         tokio: tokio-rustls); ratio = trio/tokio",
        negotiated(&c)
    );
    println!("{:<20} {:<30} {:>12} {:>12} {:>8}", "case", "metric", "trio", "tokio", "ratio");

    // Handshakes.
    let n = plan.handshakes;
    // Warm-up.
    let uring = crate::echo::server::uring_here();
    std::hint::black_box((trio_handshakes(&c, n / 10, Epoll), tokio_handshakes(&c, n / 10)));
    let (mut a, mut b, mut u, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.handshake_rounds {
        a.push(trio_handshakes(&c, n, Epoll));
        b.push(tokio_handshakes(&c, n));
        #[cfg(target_os = "linux")]
        if uring {
            u.push(trio_handshakes(&c, n, Uring));
            m.push(monoio_handshakes(&c, n));
        }
    }
    let (ta, tb) = (median(a) / n as f64, median(b) / n as f64);
    let floor = rustls_handshakes(&c, n) / n as f64;
    let case = format!("{n} handshakes");
    row(&case, "handshakes/s (higher: faster)", 1.0 / ta, 1.0 / tb, 0);
    records.push(Record::higher("tls", "TLS 1.3 handshake + 1-byte echo", 1.0 / ta, 1.0 / tb, "handshakes/s"));
    row("", "µs / handshake", ta * 1e6, tb * 1e6, 1);
    if uring {
        let (tu, tm) = (median(u) / n as f64, median(m) / n as f64);
        row("(trio on io_uring)", "handshakes/s (higher: faster)", 1.0 / tu, 1.0 / tb, 0);
        row("(monoio)", "handshakes/s (higher: faster)", 1.0 / tm, 1.0 / tb, 0);
        let mut r = Record::higher(
            "tls",
            "TLS 1.3 handshake + 1-byte echo (trio on io_uring)",
            1.0 / tu,
            1.0 / tb,
            "handshakes/s",
        );
        r.monoio = Some(1.0 / tm);
        records.push(r);
    }
    println!(
        "{:<20} (rustls alone, in memory: {:.1} µs / handshake, {:.0}/s; connect + 1-byte echo + close_notify both ways \
         on top; median of {} rounds)",
        "",
        floor * 1e6,
        1.0 / floor,
        plan.handshake_rounds
    );

    // Bulk.
    let k = plan.bulk_transfers;
    let (mut a, mut b, mut u, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.bulk_rounds {
        a.extend(trio_bulk(&c, k, Epoll));
        b.extend(tokio_bulk(&c, k));
        #[cfg(target_os = "linux")]
        if uring {
            u.extend(trio_bulk(&c, k, Uring));
            m.extend(monoio_bulk(&c, k));
        }
    }
    let (ta, tb) = (median(a), median(b));
    let floor = median(rustls_bulk(&c, k));
    let mib_s = |secs: f64| 2.0 * BULK as f64 / (1024.0 * 1024.0) / secs;
    row("1 MiB round trip", "MiB/s (higher: faster)", mib_s(ta), mib_s(tb), 0);
    records.push(Record::higher("tls", "TLS 1 MiB each way", mib_s(ta), mib_s(tb), "MiB/s"));
    row("", "ms / transfer", ta * 1e3, tb * 1e3, 2);
    if uring {
        let (tu, tm) = (median(u), median(m));
        row("(trio on io_uring)", "MiB/s (higher: faster)", mib_s(tu), mib_s(tb), 0);
        row("(monoio)", "MiB/s (higher: faster)", mib_s(tm), mib_s(tb), 0);
        let mut r = Record::higher("tls", "TLS 1 MiB each way (trio on io_uring)", mib_s(tu), mib_s(tb), "MiB/s");
        r.monoio = Some(mib_s(tm));
        records.push(r);
    }
    println!(
        "{:<20} (rustls alone, in memory: {:.2} ms, {:.0} MiB/s; median of {} transfers on {} connections; \
         MiB/s counts both directions)",
        "",
        floor * 1e3,
        mib_s(floor),
        k * plan.bulk_rounds,
        plan.bulk_rounds
    );
    records
}
