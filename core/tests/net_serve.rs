//! `serve_listeners` and `serve_tcp`, after Trio's
//! `test_highlevel_serve_listeners.py`: scripted fake listeners under the
//! mock clock, real TCP servers on loopback, and an `EMFILE` test in a child
//! process whose descriptor limit is lowered.
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use trio::abc::{AsyncResource, Listener, ReceiveStream, SendStream};
use trio::net::{
    ACCEPT_CAPACITY_ERROR_SLEEP, TcpListener, TcpStream, open_tcp_listeners, open_tcp_stream, serve_listeners,
    serve_tcp,
};
use trio::sync::Event;
use trio::testing::{MockClock, wait_all_tasks_blocked};
use trio::{Error, Instant, Receiver, Result, RunOptions, Sender, current_time, open_nursery};
use util::{boom, booms, mock_run};

/// Runs a test with real sockets under a mock clock that jumps only after
/// two seconds of real idleness, inside a generous deadline: a test that
/// deadlocks fails with `TooSlow` within seconds instead of hanging, and
/// loopback I/O on a loaded machine is not mistaken for idleness.
fn net_run<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::from_secs(2)));
    RunOptions::new().clock(clock).run(trio::fail_after(Duration::from_secs(600), f))
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Seconds since `t0` on the run's clock.
fn since(t0: Instant) -> f64 {
    (current_time().unwrap() - t0).as_secs_f64()
}

/// The OS errors `serve_listeners` treats as "out of resources", and two
/// more, as this platform spells them.
#[cfg(unix)]
mod errno {
    pub(crate) const CAPACITY: [i32; 4] = [libc::ENFILE, libc::ENOMEM, libc::ENOBUFS, libc::EMFILE];
    pub(crate) const EMFILE: i32 = libc::EMFILE;
    pub(crate) const CONNABORTED: i32 = libc::ECONNABORTED;
}
#[cfg(windows)]
mod errno {
    /// WSAEMFILE, WSAENOBUFS.
    pub(crate) const CAPACITY: [i32; 2] = [10024, 10055];
    pub(crate) const EMFILE: i32 = 10024;
    /// WSAECONNABORTED.
    pub(crate) const CONNABORTED: i32 = 10053;
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Asserts that nothing listens on `addr` any more. Retried for up to a
/// second: a process forked meanwhile by another test (the EMFILE test of
/// this binary) holds a copy of every descriptor until it executes.
async fn assert_refused(addr: SocketAddr) -> Result<()> {
    for _ in 0..200 {
        match TcpStream::connect(addr).await {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => trio::to_thread::run_sync(|| std::thread::sleep(Duration::from_millis(5))).await?,
        }
    }
    panic!("{addr} still accepts connections");
}

// ---- a scripted fake listener (Trio's MemoryListener) ----

/// A fake connection; counts its drops (= closes) in the shared log.
#[derive(Debug)]
struct FakeConn {
    id: u32,
    log: Rc<ConnLog>,
}

#[derive(Debug, Default)]
struct ConnLog {
    dropped: RefCell<Vec<u32>>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.log.dropped.borrow_mut().push(self.id);
    }
}

/// What the test sees of a fake listener after handing it over.
#[derive(Debug)]
struct ListenerState {
    t0: Instant,
    /// Errors returned by the next accepts, in order.
    script: RefCell<VecDeque<Error>>,
    /// Then, if set, this OS error on every accept.
    forever: Cell<Option<i32>>,
    accept_times: RefCell<Vec<f64>>,
    closed: Cell<bool>,
}

#[derive(Debug)]
struct FakeListener {
    state: Rc<ListenerState>,
    incoming: Receiver<FakeConn>,
}

/// A fake listener, its state, and the sending end of its connection
/// queue.
fn fake_listener() -> (FakeListener, Rc<ListenerState>, Sender<FakeConn>) {
    let (tx, rx) = trio::open_unbounded_memory_channel();
    let state = Rc::new(ListenerState {
        t0: current_time().unwrap(),
        script: RefCell::new(VecDeque::new()),
        forever: Cell::new(None),
        accept_times: RefCell::new(Vec::new()),
        closed: Cell::new(false),
    });
    (FakeListener { state: state.clone(), incoming: rx }, state, tx)
}

impl AsyncResource for FakeListener {
    async fn aclose(&self) -> Result<()> {
        self.state.closed.set(true);
        trio::checkpoint().await
    }
}

impl Listener for FakeListener {
    type Stream = FakeConn;

    async fn accept(&self) -> Result<FakeConn> {
        trio::checkpoint().await?;
        assert!(!self.state.closed.get(), "accept after close");
        self.state.accept_times.borrow_mut().push(since(self.state.t0));
        if let Some(e) = self.state.script.borrow_mut().pop_front() {
            return Err(e);
        }
        if let Some(errno) = self.state.forever.get() {
            return Err(Error::Io(io::Error::from_raw_os_error(errno)));
        }
        self.incoming.receive().await
    }
}

fn conn(id: u32, log: &Rc<ConnLog>) -> FakeConn {
    FakeConn { id, log: log.clone() }
}

// ---- fake listeners ----

/// Two listeners, three connections each: every connection gets a
/// handler, every stream is dropped when its handler returns, `start`
/// reports the listeners, and cancelling closes them.
#[test]
fn serve_listeners_basic() {
    mock_run(async {
        let log = Rc::new(ConnLog::default());
        let (l1, s1, tx1) = fake_listener();
        let (l2, s2, tx2) = fake_listener();
        let handled = RefCell::new(Vec::new());
        let handler = async |c: FakeConn| {
            trio::sleep(Duration::from_secs(1)).await?;
            handled.borrow_mut().push(c.id);
            Ok(())
        };
        open_nursery(async |n| {
            let handles =
                n.start(async |st| match serve_listeners(handler, vec![l1, l2], None, Some(st)).await? {}).await?;
            assert_eq!(handles.len(), 2);
            assert!(Rc::ptr_eq(&handles[0].state, &s1) && Rc::ptr_eq(&handles[1].state, &s2));
            for i in 0..3 {
                tx1.send(conn(i, &log)).await?;
                tx2.send(conn(10 + i, &log)).await?;
            }
            trio::sleep(Duration::from_secs(2)).await?;
            let mut got = handled.borrow().clone();
            got.sort();
            assert_eq!(got, [0, 1, 2, 10, 11, 12]);
            let mut dropped = log.dropped.borrow().clone();
            dropped.sort();
            assert_eq!(dropped, [0, 1, 2, 10, 11, 12], "each stream is closed when its handler returns");
            assert!(!s1.closed.get() && !s2.closed.get());
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert!(s1.closed.get() && s2.closed.get(), "cancelling closes the listeners");
        Ok(())
    })
    .unwrap();
}

/// Trio's `test_serve_listeners_accept_capacity_error`: EMFILE forever;
/// it retries every 100 ms, so in 950 ms it accepts at 0, 100, ..., 900.
#[test]
fn emfile_is_retried_every_100_ms() {
    mock_run(async {
        let (l, state, _tx) = fake_listener();
        state.forever.set(Some(errno::EMFILE));
        let handler = async |_c: FakeConn| Ok(());
        let r = trio::move_on_after(Duration::from_millis(950), serve_listeners(handler, vec![l], None, None)).await?;
        assert!(r.is_none(), "still serving at the deadline");
        let times = state.accept_times.borrow().clone();
        assert_eq!(times.len(), 10, "{times:?}");
        for (i, t) in times.iter().enumerate() {
            assert!(approx(*t, 0.1 * i as f64), "{times:?}");
        }
        assert!(state.closed.get());
        Ok(())
    })
    .unwrap();
    assert_eq!(ACCEPT_CAPACITY_ERROR_SLEEP, Duration::from_millis(100));
}

/// ENFILE, ENOMEM, ENOBUFS and EMFILE (on Windows WSAEMFILE and
/// WSAENOBUFS) each cost a 100 ms pause; then the queued connection is
/// served.
#[test]
fn every_capacity_errno_is_retried_then_serving_resumes() {
    mock_run(async {
        let log = Rc::new(ConnLog::default());
        let (l, state, tx) = fake_listener();
        let failures = errno::CAPACITY.len();
        for errno in errno::CAPACITY {
            state.script.borrow_mut().push_back(Error::Io(io::Error::from_raw_os_error(errno)));
        }
        tx.send(conn(7, &log)).await?;
        let served_at = Cell::new(None);
        let t0 = state.t0;
        let handler = async |c: FakeConn| {
            served_at.set(Some((c.id, since(t0))));
            Ok(())
        };
        let r = trio::move_on_after(Duration::from_secs(1), serve_listeners(handler, vec![l], None, None)).await?;
        assert!(r.is_none());
        let (id, at) = served_at.get().expect("the connection was served");
        assert_eq!(id, 7);
        assert!(approx(at, 0.1 * failures as f64), "served at {at}");
        let times = state.accept_times.borrow().clone();
        assert_eq!(times.len(), failures + 2, "the failures, the success, then waiting: {times:?}");
        for (i, t) in times.iter().take(failures + 1).enumerate() {
            assert!(approx(*t, 0.1 * i as f64), "{times:?}");
        }
        assert_eq!(*log.dropped.borrow(), [7]);
        Ok(())
    })
    .unwrap();
}

/// Any other accept error stops the server at once and comes out of it
/// (Trio's `test_serve_listeners_accept_unrecognized_error`); the other
/// listeners are closed too.
#[test]
fn other_accept_errors_propagate() {
    for which in 0..2 {
        mock_run(async {
            let (l1, s1, _tx1) = fake_listener();
            let (l2, s2, _tx2) = fake_listener();
            let err = match which {
                0 => Error::Io(io::Error::from_raw_os_error(errno::CONNABORTED)),
                _ => boom(3),
            };
            s2.script.borrow_mut().push_back(err);
            let handler = async |_c: FakeConn| Ok(());
            let e = serve_listeners(handler, vec![l1, l2], None, None).await.unwrap_err();
            match which {
                0 => assert!(matches!(&e, Error::Io(io) if io.raw_os_error() == Some(errno::CONNABORTED)), "{e:?}"),
                _ => assert_eq!(booms(&e), [3], "{e:?}"),
            }
            assert!(!e.contains_cancelled(), "{e:?}");
            assert!(approx(since(s1.t0), 0.0), "no retry pause");
            assert!(s1.closed.get() && s2.closed.get());
            Ok(())
        })
        .unwrap();
    }
}

/// With a handler nursery the handlers run there (Trio's
/// `test_serve_listeners_connection_nursery`), and a handler's error
/// crashes that nursery, server included.
#[test]
fn handlers_run_in_the_given_nursery() {
    mock_run(async {
        let log = Rc::new(ConnLog::default());
        let (l, state, tx) = fake_listener();
        let failing = Cell::new(false);
        let handler = async |c: FakeConn| {
            if failing.get() {
                return Err(boom(c.id));
            }
            trio::sleep(Duration::from_secs(1000)).await
        };
        let e = open_nursery(async |hn| {
            hn.start(async |st| match serve_listeners(handler, vec![l], Some(hn), Some(st)).await? {}).await?;
            for i in 0..10 {
                tx.send(conn(i, &log)).await?;
            }
            wait_all_tasks_blocked(Duration::ZERO).await?;
            // The server and ten handlers, all children of this nursery.
            assert_eq!(hn.child_count(), 11);
            failing.set(true);
            tx.send(conn(99, &log)).await?;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(booms(&e), [99], "{e:?}");
        assert!(state.closed.get(), "the crash stopped the server");
        assert_eq!(log.dropped.borrow().len(), 11, "every stream was dropped");
        Ok(())
    })
    .unwrap();
}

#[test]
fn no_listeners_is_an_error() {
    mock_run(async {
        let handler = async |_c: FakeConn| Ok(());
        let r = serve_listeners(handler, Vec::<FakeListener>::new(), None, None).await;
        assert!(matches!(r, Err(Error::Io(e)) if e.kind() == io::ErrorKind::InvalidInput));
        Ok(())
    })
    .unwrap();
}

// ---- real TCP ----

/// `serve_tcp` on port 0 reports the bound address through `start`, and
/// serves several clients at once: each handler waits until all have
/// arrived, so this finishes only if they run concurrently. Each client
/// sees end-of-stream once its handler returned.
#[test]
fn serve_tcp_reports_the_address_and_serves_clients_concurrently() {
    const CLIENTS: usize = 5;
    net_run(async {
        let arrived = Cell::new(0);
        let all_here = Event::new();
        let handler = async |s: TcpStream| {
            let mut buf = [0u8; 64];
            let k = s.receive_some(&mut buf).await?;
            arrived.set(arrived.get() + 1);
            if arrived.get() == CLIENTS {
                all_here.set();
            }
            all_here.wait().await?;
            s.send_all(&buf[..k].to_ascii_uppercase()).await
        };
        let replies = RefCell::new(Vec::new());
        open_nursery(async |n| {
            let addrs = n.start(async |st| match serve_tcp(handler, 0, Some("127.0.0.1"), Some(st)).await? {}).await?;
            assert_eq!(addrs.len(), 1);
            assert!(addrs[0].ip().is_loopback() && addrs[0].port() != 0, "{addrs:?}");
            let port = addrs[0].port();
            open_nursery(async |clients| {
                for i in 0..CLIENTS {
                    let replies = &replies;
                    clients.spawn(async move {
                        let c = open_tcp_stream("127.0.0.1", port).await?;
                        c.send_all(format!("hello {i}").as_bytes()).await?;
                        let mut buf = [0u8; 64];
                        let k = c.receive_some(&mut buf).await?;
                        replies.borrow_mut().push(String::from_utf8(buf[..k].to_vec()).unwrap());
                        // The handler returned: its stream was closed.
                        assert_eq!(c.receive_some(&mut buf).await?, 0);
                        Ok(())
                    });
                }
                Ok(())
            })
            .await?;
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        let mut got = replies.take();
        got.sort();
        let want: Vec<String> = (0..CLIENTS).map(|i| format!("HELLO {i}")).collect();
        assert_eq!(got, want);
        Ok(())
    })
    .unwrap();
}

/// Without a host: every local address; each reported address is bound.
#[test]
fn serve_tcp_on_every_interface() {
    net_run(async {
        let handler = async |s: TcpStream| s.send_all(b"hi").await;
        open_nursery(async |n| {
            let addrs = n.start(async |st| match serve_tcp(handler, 0, None, Some(st)).await? {}).await?;
            assert!(!addrs.is_empty());
            assert!(addrs.iter().all(|a| a.ip().is_unspecified() && a.port() != 0), "{addrs:?}");
            let v4 = addrs.iter().find(|a| a.is_ipv4()).expect("an IPv4 listener");
            let c = TcpStream::connect(SocketAddr::new([127, 0, 0, 1].into(), v4.port())).await?;
            let mut buf = [0u8; 8];
            let k = c.receive_some(&mut buf).await?;
            assert_eq!(&buf[..k], b"hi");
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

/// A handler's error crashes the server, as in Trio, and the listener is
/// closed.
#[test]
fn handler_error_propagates_out_of_serve_tcp() {
    net_run(async {
        let handler = async |s: TcpStream| {
            let mut buf = [0u8; 8];
            s.receive_some(&mut buf).await?;
            Err(boom(1))
        };
        let addr = Cell::new(None);
        let e = open_nursery(async |n| {
            let addrs = n.start(async |st| match serve_tcp(handler, 0, Some("127.0.0.1"), Some(st)).await? {}).await?;
            addr.set(Some(addrs[0]));
            let c = TcpStream::connect(addrs[0]).await?;
            c.send_all(b"x").await?;
            trio::sleep_forever().await?;
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(booms(&e), [1], "{e:?}");
        assert!(!e.contains_cancelled(), "{e:?}");
        assert_refused(addr.get().unwrap()).await?;
        Ok(())
    })
    .unwrap();
}

/// Cancelling the server stops it and closes its listeners: the handles
/// `start` reported fail with `Closed`, and connects are refused.
#[test]
fn cancellation_stops_the_server_and_closes_the_listeners() {
    net_run(async {
        let listeners = vec![TcpListener::bind(loopback())?, TcpListener::bind(loopback())?];
        let addrs: Vec<SocketAddr> = listeners.iter().map(TcpListener::local_addr).collect::<Result<_>>()?;
        let served = Cell::new(0);
        let handler = async |s: TcpStream| {
            served.set(served.get() + 1);
            s.send_all(b"!").await
        };
        let handles = open_nursery(async |n| {
            let handles =
                n.start(async |st| match serve_listeners(handler, listeners, None, Some(st)).await? {}).await?;
            for a in &addrs {
                let c = TcpStream::connect(*a).await?;
                let mut buf = [0u8; 4];
                assert_eq!(c.receive_some(&mut buf).await?, 1);
            }
            n.cancel_scope().cancel();
            Ok(handles)
        })
        .await?
        .expect("the body returned");
        assert_eq!(served.get(), 2);
        for (h, a) in handles.iter().zip(&addrs) {
            assert!(matches!(h.local_addr(), Err(Error::Closed)));
            assert!(matches!(h.accept().await, Err(Error::Closed)));
            assert_refused(*a).await?;
        }
        Ok(())
    })
    .unwrap();
}

/// A shared handler nursery with real TCP: `open_tcp_listeners` then
/// `serve_listeners`, the handlers outliving their accept.
#[test]
fn open_tcp_listeners_then_serve_listeners() {
    net_run(async {
        let listeners = open_tcp_listeners(0, Some("127.0.0.1")).await?;
        let handler = async |s: TcpStream| {
            let mut buf = [0u8; 16];
            loop {
                let k = s.receive_some(&mut buf).await?;
                if k == 0 {
                    return Ok(());
                }
                s.send_all(&buf[..k]).await?;
            }
        };
        open_nursery(async |n| {
            let handles =
                n.start(async |st| match serve_listeners(handler, listeners, Some(n), Some(st)).await? {}).await?;
            let addr = handles[0].local_addr()?;
            let c = open_tcp_stream("127.0.0.1", addr.port()).await?;
            for msg in [&b"one"[..], b"two", b"three"] {
                c.send_all(msg).await?;
                let mut buf = [0u8; 16];
                let k = c.receive_some(&mut buf).await?;
                assert_eq!(&buf[..k], msg);
            }
            assert_eq!(n.child_count(), 2, "the server and one handler");
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// ---- EMFILE for real, in a child process with a low descriptor limit ----

#[cfg(unix)]
mod emfile {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use trio::abc::{ReceiveStream, SendStream};
    use trio::net::{TcpStream, open_tcp_listeners, serve_listeners};
    use trio::{CancelScope, Error};

    const CHILD_ENV: &str = "TRIO_TEST_EMFILE_CHILD";
    /// More connections than the child has descriptors for.
    const CLIENTS: usize = 12;
    /// Descriptors left to the child's server.
    const SPARE: usize = 3;

    /// Lowers the soft `RLIMIT_NOFILE` so that exactly `spare` descriptor
    /// numbers are free below it (new descriptors take the lowest free
    /// number; those already open above the limit stay valid).
    fn lower_fd_limit(spare: usize) {
        let is_open = |fd: i32| {
            // SAFETY: F_GETFD on any number is harmless.
            unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
        };
        let mut free = 0;
        let mut limit = 0;
        while free < spare {
            if !is_open(limit) {
                free += 1;
            }
            limit += 1;
        }
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid pointers to an rlimit.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
            rl.rlim_cur = limit as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        }
    }

    /// Entry point of the child (this binary re-executed with `CHILD_ENV`
    /// set); without it, this test does nothing.
    #[test]
    fn emfile_child_process_entry() {
        if std::env::var(CHILD_ENV).is_err() {
            return;
        }
        // The system clock: the retry pauses are real 100 ms sleeps.
        let r = trio::run(trio::fail_after(Duration::from_secs(30), async {
            let listeners = open_tcp_listeners(0, Some("127.0.0.1")).await?;
            let port = listeners[0].local_addr()?.port();
            lower_fd_limit(SPARE);
            println!("listening {port}");
            let served = std::cell::Cell::new(0);
            let scope = CancelScope::new();
            let handler = async |s: TcpStream| {
                let mut buf = [0u8; 8];
                assert_eq!(s.receive_some(&mut buf).await?, 1);
                s.send_all(b"ok\n").await?;
                // Hold the descriptor until the client leaves.
                for _ in 0..100 {
                    if s.receive_some(&mut buf).await? == 0 {
                        break;
                    }
                }
                served.set(served.get() + 1);
                if served.get() == CLIENTS {
                    scope.cancel();
                }
                Ok(())
            };
            let out = scope.run(serve_listeners(handler, listeners, None, None)).await?;
            assert!(out.is_none());
            println!("served {}", served.get());
            Ok::<_, Error>(())
        }));
        if let Err(e) = &r {
            println!("child failed: {e}");
        }
        std::process::exit(if r.is_ok() { 0 } else { 1 });
    }

    /// The child serves on loopback with a few spare descriptors; the
    /// parent opens more connections than that, so `accept` hits `EMFILE`.
    /// The server logs, pauses, retries, and serves every connection as the
    /// earlier ones close.
    #[test]
    fn serve_survives_a_real_emfile() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "emfile::emfile_child_process_entry", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A 60 s guard: kill the child unless the test reaped it by then
        // (also when the test panicked: the sender is dropped).
        let pid = child.id() as libc::pid_t;
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let guard = std::thread::spawn(move || {
            if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
                // SAFETY: killing our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        // (libtest's "test ... " may share the line.)
        let port = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("the child ended before listening: {seen}");
            }
            seen.push_str(&line);
            if let Some((_, port)) = line.trim().split_once("listening ") {
                break port.parse::<u16>().unwrap();
            }
        };

        let conns: Vec<std::net::TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                c.write_all(b"x").unwrap();
                c
            })
            .collect();
        // In order: each reply comes once enough earlier connections closed.
        for (i, mut c) in conns.into_iter().enumerate() {
            let mut reply = [0u8; 3];
            c.read_exact(&mut reply).unwrap_or_else(|e| panic!("no reply on connection {i}: {e}"));
            assert_eq!(&reply, b"ok\n");
            drop(c);
        }
        out.read_to_string(&mut seen).unwrap();
        let status = child.wait().unwrap();
        let _ = done_tx.send(());
        guard.join().unwrap();
        let errors = err_reader.join().unwrap();
        assert!(status.success(), "child failed: {status:?}\nstdout: {seen}\nstderr: {errors}");
        assert!(seen.contains(&format!("served {CLIENTS}")), "{seen}");
        assert!(errors.contains("accept returned EMFILE") && errors.contains("retrying"), "stderr: {errors}");
    }
}
