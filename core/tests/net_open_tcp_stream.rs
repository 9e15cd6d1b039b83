//! `open_tcp_stream` and the happy eyeballs algorithm, after Trio's
//! `test_highlevel_open_tcp_stream.py`: the algorithm driven by a scripted
//! fake connector under the mock clock, plus real connects on loopback.
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use trio::abc::{AsyncResource, Listener, ReceiveStream, SendStream};
use trio::net::{
    DEFAULT_HAPPY_EYEBALLS_DELAY, OpenTcpStream, TcpListener, open_stream_happy_eyeballs, open_tcp_stream,
    reorder_for_rfc_6555_section_5_4,
};
use trio::{CancelScope, Error, Instant, Result, current_time, open_nursery};
use util::mock_run;

// ---- the fake connector (Trio's FakeSocket/Scenario) ----

/// What a scripted attempt does after its delay.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Success,
    Error,
}
use Outcome::{Error as Fail, Success};

/// One fake socket: made when its attempt starts.
#[derive(Debug)]
struct FakeSock {
    addr: SocketAddr,
    started_at: Duration,
    succeeded: Cell<bool>,
    cancelled: Cell<bool>,
    closed: Cell<bool>,
}

/// What the fake connector hands out: closing it marks its socket closed.
#[derive(Debug)]
struct FakeStream(Rc<FakeSock>);

impl AsyncResource for FakeStream {
    async fn aclose(&self) -> Result<()> {
        self.0.closed.set(true);
        trio::checkpoint().await
    }
}

/// Closes the socket when an attempt ends without handing it out (failure
/// or cancellation), as a real connect closes its half-made socket.
struct CloseUnlessDisarmed(Option<Rc<FakeSock>>);

impl Drop for CloseUnlessDisarmed {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.closed.set(true);
        }
    }
}

/// A scripted set of addresses: each connects or fails after its delay on
/// the (mock) clock.
struct Scenario {
    script: Vec<(SocketAddr, Duration, Outcome)>,
    t0: Instant,
    sockets: RefCell<Vec<Rc<FakeSock>>>,
}

impl Scenario {
    /// `(ip, seconds, outcome)`; port 80.
    fn new(script: &[(&str, f64, Outcome)]) -> Scenario {
        let script = script.iter().map(|&(ip, secs, o)| (addr(ip), Duration::from_secs_f64(secs), o)).collect();
        Scenario { script, t0: current_time().unwrap(), sockets: RefCell::new(Vec::new()) }
    }

    /// The addresses, in the order "getaddrinfo" returns them.
    fn targets(&self) -> Vec<SocketAddr> {
        self.script.iter().map(|s| s.0).collect()
    }

    fn elapsed(&self) -> Duration {
        current_time().unwrap() - self.t0
    }

    /// The fake connect.
    async fn connect(&self, target: SocketAddr) -> Result<FakeStream> {
        let &(_, delay, outcome) = self.script.iter().find(|s| s.0 == target).expect("unknown address");
        assert!(!self.sockets.borrow().iter().any(|s| s.addr == target), "{target} tried twice");
        let sock = Rc::new(FakeSock {
            addr: target,
            started_at: self.elapsed(),
            succeeded: Cell::new(false),
            cancelled: Cell::new(false),
            closed: Cell::new(false),
        });
        self.sockets.borrow_mut().push(sock.clone());
        let mut guard = CloseUnlessDisarmed(Some(sock.clone()));
        if let Err(e) = trio::sleep(delay).await {
            sock.cancelled.set(true);
            return Err(e);
        }
        match outcome {
            Fail => Err(Error::Io(io::Error::other("sorry"))),
            Success => {
                sock.succeeded.set(true);
                guard.0 = None;
                Ok(FakeStream(sock))
            }
        }
    }

    /// When each address was tried, in seconds since the start, in start
    /// order.
    fn connect_times(&self) -> Vec<(String, f64)> {
        self.sockets.borrow().iter().map(|s| (ip_of(s.addr), s.started_at.as_secs_f64())).collect()
    }

    /// Every socket but the winner's is closed; the winner's is open.
    fn check(&self, winner: Option<&FakeStream>) {
        for s in self.sockets.borrow().iter() {
            let is_winner = winner.is_some_and(|w| Rc::ptr_eq(&w.0, s));
            assert_eq!(s.closed.get(), !is_winner, "socket {} closed={} winner={is_winner}", s.addr, s.closed.get());
        }
    }

    /// Runs the algorithm on this scenario.
    async fn run(&self, delay: Option<Duration>) -> Result<FakeStream> {
        let r = open_stream_happy_eyeballs(&self.targets(), delay, async |a| self.connect(a).await).await;
        self.check(r.as_ref().ok());
        r
    }
}

fn addr(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 80)
}

fn ip_of(a: SocketAddr) -> String {
    a.ip().to_string()
}

fn times(v: &[(&str, f64)]) -> Vec<(String, f64)> {
    v.iter().map(|&(ip, t)| (ip.to_owned(), t)).collect()
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn assert_times(got: Vec<(String, f64)>, want: &[(&str, f64)]) {
    let want = times(want);
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!(g.0 == w.0 && approx(g.1, w.1), "got {got:?}, want {want:?}");
    }
}

const D: Option<Duration> = Some(DEFAULT_HAPPY_EYEBALLS_DELAY);

fn secs(s: f64) -> Option<Duration> {
    Some(Duration::from_secs_f64(s))
}

/// The OS-error messages of an error's leaves.
fn messages(e: &Error) -> Vec<String> {
    e.leaves()
        .iter()
        .map(|l| match l {
            Error::Io(io) => io.to_string(),
            other => panic!("not an I/O error: {other:?}"),
        })
        .collect()
}

// ---- reordering ----

#[test]
fn reorder_for_rfc_6555_section_5_4_cases() {
    let v4 = |i: u8| addr(&format!("10.0.0.{i}"));
    let v6 = |i: u8| addr(&format!("::{i}"));
    for fake in [v4, v6] {
        // Homogeneous lists are left alone.
        let mut t = vec![fake(0), fake(1), fake(2)];
        reorder_for_rfc_6555_section_5_4(&mut t);
        assert_eq!(t, [fake(0), fake(1), fake(2)]);
        // One item, and none.
        let mut t = vec![fake(0)];
        reorder_for_rfc_6555_section_5_4(&mut t);
        assert_eq!(t, [fake(0)]);
        let mut t: Vec<SocketAddr> = vec![];
        reorder_for_rfc_6555_section_5_4(&mut t);
        assert!(t.is_empty());
    }
    // Different families in places 0 and 1 already: left alone.
    let orig = vec![v4(0), v6(0), v4(1), v6(1)];
    let mut t = orig.clone();
    reorder_for_rfc_6555_section_5_4(&mut t);
    assert_eq!(t, orig);
    // Otherwise the first address of the other family moves to place 1.
    let mut t = vec![v4(0), v4(1), v4(2), v6(0), v6(1)];
    reorder_for_rfc_6555_section_5_4(&mut t);
    assert_eq!(t, [v4(0), v6(0), v4(1), v4(2), v6(1)]);
    let mut t = vec![v6(0), v6(1), v4(0), v4(1)];
    reorder_for_rfc_6555_section_5_4(&mut t);
    assert_eq!(t, [v6(0), v4(0), v6(1), v4(1)]);
}

// ---- one address ----

#[test]
fn one_host_quick_and_slow_success() {
    for (secs, port_ip) in [(0.123, "1.2.3.4"), (100.0, "1.2.3.5")] {
        mock_run(async {
            let sc = Scenario::new(&[(port_ip, secs, Success)]);
            let s = sc.run(D).await?;
            assert_eq!(s.0.addr, addr(port_ip));
            assert!(s.0.succeeded.get() && !s.0.closed.get());
            assert!(approx(sc.elapsed().as_secs_f64(), secs));
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn one_host_quick_and_slow_failure_is_that_error() {
    for secs in [0.123, 100.0] {
        mock_run(async {
            let sc = Scenario::new(&[("1.2.3.4", secs, Fail)]);
            let e = sc.run(D).await.unwrap_err();
            // One address: its error itself, not a group.
            assert!(matches!(&e, Error::Io(io) if io.to_string() == "sorry"), "{e:?}");
            assert!(approx(sc.elapsed().as_secs_f64(), secs));
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn no_targets_is_invalid_input() {
    mock_run(async {
        let r = open_stream_happy_eyeballs(&[], D, async |_| -> Result<FakeStream> { unreachable!() }).await;
        assert!(matches!(r, Err(Error::Io(e)) if e.kind() == io::ErrorKind::InvalidInput));
        Ok(())
    })
    .unwrap();
}

// ---- staggering ----

/// With the default 250 ms delay the third attempt, started at 0.5 s,
/// wins; the two slow ones are cancelled and their sockets closed.
#[test]
fn basic_fallthrough_staggers_by_the_default_delay() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Success), ("2.2.2.2", 1.0, Success), ("3.3.3.3", 0.2, Success)]);
        let s = sc.run(D).await?;
        assert_eq!(ip_of(s.0.addr), "3.3.3.3");
        assert!(approx(sc.elapsed().as_secs_f64(), 0.25 + 0.25 + 0.2));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.25), ("3.3.3.3", 0.5)]);
        let socks = sc.sockets.borrow();
        assert!(socks[0].cancelled.get() && socks[1].cancelled.get(), "the losers were cancelled");
        assert!(!socks[0].succeeded.get() && !socks[1].succeeded.get());
        Ok(())
    })
    .unwrap();
}

#[test]
fn early_success_never_starts_the_rest() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Success), ("2.2.2.2", 0.1, Success), ("3.3.3.3", 0.2, Success)]);
        let s = sc.run(D).await?;
        assert_eq!(ip_of(s.0.addr), "2.2.2.2");
        assert!(approx(sc.elapsed().as_secs_f64(), 0.25 + 0.1));
        // 3.3.3.3 was never even started.
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.25)]);
        Ok(())
    })
    .unwrap();
}

/// With a 0.45 s delay the first attempt (1 s) wins.
#[test]
fn custom_delay() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Success), ("2.2.2.2", 1.0, Success), ("3.3.3.3", 0.2, Success)]);
        let s = sc.run(secs(0.45)).await?;
        assert_eq!(ip_of(s.0.addr), "1.1.1.1");
        assert!(approx(sc.elapsed().as_secs_f64(), 1.0));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.45), ("3.3.3.3", 0.9)]);
        Ok(())
    })
    .unwrap();
}

/// `None`: one attempt at a time; the next starts only when one fails.
#[test]
fn no_delay_means_one_attempt_at_a_time() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Fail), ("2.2.2.2", 10.0, Success), ("3.3.3.3", 0.2, Success)]);
        let s = sc.run(None).await?;
        assert_eq!(ip_of(s.0.addr), "2.2.2.2", "the slow second one still wins: nothing runs beside it");
        assert!(approx(sc.elapsed().as_secs_f64(), 11.0));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 1.0)]);
        Ok(())
    })
    .unwrap();
}

/// A zero delay starts every attempt at once.
#[test]
fn zero_delay_starts_everything_at_once() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 3.0, Success), ("2.2.2.2", 2.0, Success), ("3.3.3.3", 1.0, Success)]);
        let s = sc.run(Some(Duration::ZERO)).await?;
        assert_eq!(ip_of(s.0.addr), "3.3.3.3");
        assert!(approx(sc.elapsed().as_secs_f64(), 1.0));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.0), ("3.3.3.3", 0.0)]);
        Ok(())
    })
    .unwrap();
}

/// A failure starts the next attempt at once, without waiting for the
/// delay.
#[test]
fn errors_expedite_the_next_attempt() {
    mock_run(async {
        let sc = Scenario::new(&[
            ("1.1.1.1", 0.1, Fail),
            ("2.2.2.2", 0.2, Fail),
            ("3.3.3.3", 10.0, Success),
            ("4.4.4.4", 0.25, Success),
        ]);
        let s = sc.run(D).await?;
        assert_eq!(ip_of(s.0.addr), "4.4.4.4");
        assert!(approx(sc.elapsed().as_secs_f64(), 0.1 + 0.2 + 0.25 + 0.25));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.1), ("3.3.3.3", 0.3), ("4.4.4.4", 0.55)]);
        Ok(())
    })
    .unwrap();
}

/// Failing at once (as when the system lacks the address family and the
/// socket cannot even be made) moves on at once, also to the second family.
#[test]
fn immediate_failures_move_on_immediately() {
    mock_run(async {
        let sc = Scenario::new(&[
            ("::1", 10.0, Success),
            ("2.2.2.2", 0.0, Fail),
            ("::3", 0.1, Success),
            ("4.4.4.4", 0.0, Fail),
        ]);
        let s = sc.run(secs(1.0)).await?;
        assert_eq!(ip_of(s.0.addr), "::3");
        assert!(approx(sc.elapsed().as_secs_f64(), 1.1));
        // Already alternating: ::1 at 0; 2.2.2.2 after the delay, failing
        // at once, so ::3 starts in the same instant.
        assert_times(sc.connect_times(), &[("::1", 0.0), ("2.2.2.2", 1.0), ("::3", 1.0)]);
        Ok(())
    })
    .unwrap();
}

// ---- outcomes ----

/// Every attempt failed: a group of all four errors, in the order tried.
#[test]
fn all_fail_reports_every_error() {
    mock_run(async {
        let sc = Scenario::new(&[
            ("1.1.1.1", 0.1, Fail),
            ("2.2.2.2", 0.2, Fail),
            ("3.3.3.3", 10.0, Fail),
            ("4.4.4.4", 0.25, Fail),
        ]);
        let e = sc.run(D).await.unwrap_err();
        assert!(matches!(e, Error::Group(ref v) if v.len() == 4), "{e:?}");
        assert_eq!(messages(&e), ["sorry"; 4]);
        assert!(e.leaves().iter().all(|l| matches!(l, Error::Io(io) if io.kind() == io::ErrorKind::Other)));
        assert!(approx(sc.elapsed().as_secs_f64(), 0.1 + 0.2 + 10.0));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("2.2.2.2", 0.1), ("3.3.3.3", 0.3), ("4.4.4.4", 0.55)]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn first_of_several_successes_wins_and_the_rest_are_closed() {
    mock_run(async {
        let sc = Scenario::new(&[
            ("1.1.1.1", 0.5, Fail),
            ("2.2.2.2", 10.0, Success),
            ("3.3.3.3", 9.0, Success),
            ("4.4.4.4", 8.0, Success),
            ("5.5.5.5", 0.5, Fail),
        ]);
        let s = sc.run(secs(1.0)).await?;
        // 2.2.2.2 started at 0.5 and ends at 10.5, 3.3.3.3 at 1.5 + 9,
        // 4.4.4.4 at 2.5 + 8: all three at once; one of them wins.
        assert!(["2.2.2.2", "3.3.3.3", "4.4.4.4"].contains(&ip_of(s.0.addr).as_str()));
        assert!(approx(sc.elapsed().as_secs_f64(), 10.5));
        assert_times(
            sc.connect_times(),
            &[("1.1.1.1", 0.0), ("2.2.2.2", 0.5), ("3.3.3.3", 1.5), ("4.4.4.4", 2.5), ("5.5.5.5", 3.5)],
        );
        let socks = sc.sockets.borrow();
        assert!(!socks[0].succeeded.get() && !socks[4].succeeded.get());
        Ok(())
    })
    .unwrap();
}

/// Two attempts that connect in the same instant: one wins, the other's
/// stream is closed, not leaked.
#[test]
fn simultaneous_successes_close_the_extra_stream() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Success), ("2.2.2.2", 1.0, Success), ("3.3.3.3", 1.0, Success)]);
        let s = sc.run(Some(Duration::ZERO)).await?;
        assert!(approx(sc.elapsed().as_secs_f64(), 1.0));
        let socks = sc.sockets.borrow();
        assert_eq!(socks.len(), 3);
        assert_eq!(socks.iter().filter(|x| !x.closed.get()).count(), 1, "only the winner is open");
        assert!(socks.iter().any(|x| Rc::ptr_eq(x, &s.0)));
        Ok(())
    })
    .unwrap();
}

/// RFC 6555 section 5.4: the IPv6 address is tried second, before the
/// second IPv4 one (which would have won otherwise).
#[test]
fn does_reorder() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 10.0, Fail), ("2.2.2.2", 1.0, Success), ("::3", 0.5, Success)]);
        let s = sc.run(secs(1.0)).await?;
        assert_eq!(ip_of(s.0.addr), "::3");
        assert!(approx(sc.elapsed().as_secs_f64(), 1.5));
        assert_times(sc.connect_times(), &[("1.1.1.1", 0.0), ("::3", 1.0)]);
        Ok(())
    })
    .unwrap();
}

/// Cancelling the whole operation cancels every attempt and closes every
/// socket.
#[test]
fn cancellation_cancels_every_attempt() {
    mock_run(async {
        let sc = Scenario::new(&[
            ("1.1.1.1", 10.0, Success),
            ("2.2.2.2", 10.0, Success),
            ("3.3.3.3", 10.0, Success),
            ("4.4.4.4", 10.0, Success),
        ]);
        let scope = CancelScope::with_timeout(Duration::from_secs(5));
        let out = scope.run(sc.run(D)).await?;
        assert!(out.is_none() && scope.cancelled_caught());
        assert!(approx(sc.elapsed().as_secs_f64(), 5.0));
        let socks = sc.sockets.borrow();
        assert_eq!(socks.len(), 4);
        assert!(socks.iter().all(|s| s.cancelled.get() && s.closed.get() && !s.succeeded.get()));
        Ok(())
    })
    .unwrap();
}

/// A cancellation that arrives while the outer code is cancelled in the
/// very pass the winner connects: the stream is closed, not leaked.
#[test]
fn cancellation_at_the_moment_of_success_closes_the_winner() {
    mock_run(async {
        let sc = Scenario::new(&[("1.1.1.1", 1.0, Success)]);
        let scope = CancelScope::with_timeout(Duration::from_secs(1));
        let out = scope.run(sc.run(D)).await?;
        let socks = sc.sockets.borrow();
        match out {
            // The attempt connected first: it is the (open) result.
            Some(s) => assert!(Rc::ptr_eq(&s.0, &socks[0]) && !s.0.closed.get()),
            // The deadline came first: nothing stays open.
            None => assert!(socks[0].closed.get()),
        }
        Ok(())
    })
    .unwrap();
}

// ---- real sockets on loopback ----

async fn exchange(listener: &TcpListener, client: &trio::net::TcpStream) -> Result<()> {
    let server = listener.accept().await?;
    client.send_all(b"x").await?;
    let mut buf = [0u8; 4];
    let k = server.receive_some(&mut buf).await?;
    assert_eq!(&buf[..k], b"x");
    assert_eq!(server.peer_addr()?, client.local_addr()?);
    Ok(())
}

#[test]
fn real_connect_to_an_ip_literal() {
    mock_run(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let port = listener.local_addr()?.port();
        let client = open_tcp_stream("127.0.0.1", port).await?;
        assert_eq!(client.peer_addr()?, listener.local_addr()?);
        exchange(&listener, &client).await?;
        client.aclose().await
    })
    .unwrap();
}

/// "localhost" may resolve to `::1` and `127.0.0.1`; the listener is on
/// IPv4 only, so an IPv6 attempt is refused and the IPv4 one wins.
#[test]
fn real_connect_to_localhost() {
    mock_run(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let port = listener.local_addr()?.port();
        let client = open_tcp_stream("localhost", port).await?;
        assert_eq!(client.peer_addr()?, listener.local_addr()?);
        exchange(&listener, &client).await?;
        client.aclose().await
    })
    .unwrap();
}

#[test]
fn real_refused_is_an_io_error_naming_the_address() {
    mock_run(async {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
            l.local_addr()?
        };
        match open_tcp_stream("127.0.0.1", addr.port()).await {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                assert!(e.to_string().contains(&addr.to_string()), "{e}");
                let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
                assert!(source.is_some_and(|s| s.raw_os_error().is_some()), "the OS error is the source");
            }
            other => panic!("expected refused, got {other:?}"),
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn real_unknown_host_and_empty_host_are_errors() {
    mock_run(async {
        assert!(matches!(open_tcp_stream("", 80).await, Err(Error::Io(_))));
        assert!(matches!(open_tcp_stream("no-such-host.invalid", 80).await, Err(Error::Io(_))));
        Ok(())
    })
    .unwrap();
}

/// Binding a local address: the connection comes from it (127.0.0.2 where
/// the system routes all of 127/8 to loopback, else 127.0.0.1). An IPv6
/// local address cannot reach an IPv4 host; the IPv4 wildcard can.
#[test]
fn real_local_address() {
    let local: IpAddr = if std::net::TcpListener::bind("127.0.0.2:0").is_ok() {
        "127.0.0.2".parse().unwrap()
    } else {
        "127.0.0.1".parse().unwrap()
    };
    mock_run(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let port = listener.local_addr()?.port();
        let client = OpenTcpStream::new().local_address(local).connect("127.0.0.1", port).await?;
        assert_eq!(client.local_addr()?.ip(), local);
        let server = listener.accept().await?;
        assert_eq!(server.peer_addr()?.ip(), local);
        #[cfg(target_os = "linux")]
        client.with_socket(|s| {
            use std::os::fd::AsRawFd;
            let mut v: libc::c_int = 0;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a valid descriptor and a c_int-sized out buffer.
            let r = unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&raw mut v).cast(),
                    &mut len,
                )
            };
            assert!(r == 0 && v == 1, "IP_BIND_ADDRESS_NO_PORT is set");
            Ok(())
        })?;
        client.aclose().await?;

        match OpenTcpStream::new().local_address("::".parse().unwrap()).connect("127.0.0.1", port).await {
            Err(Error::Io(e)) => assert!(e.to_string().contains("incompatible"), "{e}"),
            other => panic!("an IPv6 local address cannot reach IPv4: {other:?}"),
        }

        let client = OpenTcpStream::new().local_address("0.0.0.0".parse().unwrap()).connect("127.0.0.1", port).await?;
        let server = listener.accept().await?;
        assert_eq!(server.peer_addr()?, client.local_addr()?);
        Ok(())
    })
    .unwrap();
}

#[test]
fn real_local_address_refused_is_an_io_error() {
    mock_run(async {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
            l.local_addr()?
        };
        let r =
            OpenTcpStream::new().local_address("127.0.0.1".parse().unwrap()).connect("127.0.0.1", addr.port()).await;
        assert!(matches!(r, Err(Error::Io(ref e)) if e.kind() == io::ErrorKind::ConnectionRefused), "{r:?}");
        Ok(())
    })
    .unwrap();
}

/// Many real connects at once through the builder, each to its own
/// listener: nothing is shared between calls.
#[test]
fn real_concurrent_opens() {
    mock_run(async {
        let listeners: Vec<TcpListener> =
            (0..4).map(|_| TcpListener::bind("127.0.0.1:0".parse().unwrap())).collect::<Result<_>>()?;
        let done = Cell::new(0);
        open_nursery(async |n| {
            for l in &listeners {
                let done = &done;
                n.spawn(async move {
                    let port = l.local_addr()?.port();
                    let c = OpenTcpStream::new().happy_eyeballs_delay(None).connect("127.0.0.1", port).await?;
                    exchange(l, &c).await?;
                    done.set(done.get() + 1);
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        assert_eq!(done.get(), 4);
        Ok(())
    })
    .unwrap();
}

#[test]
fn builder_defaults() {
    assert_eq!(OpenTcpStream::new(), OpenTcpStream::default());
    assert_eq!(DEFAULT_HAPPY_EYEBALLS_DELAY, Duration::from_millis(250));
    let b = OpenTcpStream::new().happy_eyeballs_delay(None);
    assert_ne!(b, OpenTcpStream::new());
}
