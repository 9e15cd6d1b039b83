//! Choosing the I/O driver: `RunOptions::driver`, what a run reports it
//! got (`lowlevel::current_driver`), and the io_uring backend doing real
//! socket work in runs that ask for it explicitly (the whole suite also
//! runs under `TRIO_DRIVER=uring` in `.ci/run`).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::time::Duration;

use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::testing::MockClock;
use trio::{Driver, RunOptions, lowlevel, open_nursery};

/// The runs of this file that may use io_uring go one at a time, so that
/// the process-wide count of the driver's buffers is one test's alone.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RINGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether this kernel lets a run use io_uring.
fn uring_here() -> bool {
    RunOptions::new().driver(Driver::Uring).run(async { Ok(()) }).is_ok()
}

/// The drivers to check a behaviour on: epoll, and io_uring if it is here.
fn drivers() -> Vec<Driver> {
    if uring_here() { vec![Driver::Epoll, Driver::Uring] } else { vec![Driver::Epoll] }
}

/// The inodes of the sockets this process has open (`/proc/self/fd`).
#[cfg(target_os = "linux")]
fn open_socket_inodes() -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(n) = target.to_str().and_then(|t| t.strip_prefix("socket:[")).and_then(|t| t.strip_suffix(']'))
        {
            out.push(n.parse().unwrap());
        }
    }
    out
}

/// The inode of a stream's socket.
#[cfg(target_os = "linux")]
fn inode_of(s: &TcpStream) -> u64 {
    let fd = s.with_socket(|s| Ok(std::os::fd::AsRawFd::as_raw_fd(&*s))).unwrap();
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    let t = target.to_str().unwrap();
    t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')).unwrap().parse().unwrap()
}

/// A receive whose future is dropped while it waits loses nothing, on
/// either driver: on io_uring its op may have received the bytes already
/// (they are kept for the next receive) or is cancelled in the ring.
#[test]
fn a_dropped_receive_loses_nothing() {
    let _one = one_at_a_time();
    for driver in drivers() {
        let clock = MockClock::new();
        clock.set_autojump_threshold(Some(Duration::from_secs(1)));
        RunOptions::new()
            .driver(driver)
            .clock(clock)
            .run(async {
                let (client, server) = util::tcp_pair().await?;
                let mut buf = [0u8; 64];
                for word in [&b"hello"[..], b"world"] {
                    {
                        let mut waiting = std::pin::pin!(server.receive_some(&mut buf));
                        assert!(futures_lite::future::poll_once(&mut waiting).await.is_none(), "{driver:?}");
                        // Loopback delivers within the send; the run's
                        // next look at the ring (while all tasks are
                        // blocked) completes the receive there, untaken.
                        client.send_all(word).await?;
                        trio::testing::wait_all_tasks_blocked(Duration::ZERO).await?;
                    }
                    let mut got = Vec::new();
                    while got.len() < word.len() {
                        let k = trio::fail_after(Duration::from_secs(10), server.receive_some(&mut buf)).await?;
                        assert!(k > 0, "{driver:?}: the end of the stream instead of {word:?}");
                        got.extend_from_slice(&buf[..k]);
                    }
                    assert_eq!(got, word, "{driver:?}");
                }
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(lowlevel::driver_buffers(), 0, "a run's end gives every buffer back");
}

/// A run that ends with an error while operations are in flight (a
/// receive and an 8 MiB send polled and left waiting, a task blocked in a
/// receive that the failing nursery cancels) leaks nothing: every socket
/// of the run is closed, and on io_uring every buffer the kernel held was
/// given back (the ops were cancelled in the ring and waited for).
#[cfg(target_os = "linux")]
#[test]
fn a_run_that_dies_with_operations_in_flight_leaks_nothing() {
    let _one = one_at_a_time();
    for driver in drivers() {
        let inodes = std::cell::RefCell::new(Vec::new());
        let r = RunOptions::new().driver(driver).run(async {
            let (client, server) = util::tcp_pair().await?;
            let (other_client, other_server) = util::tcp_pair().await?;
            inodes.borrow_mut().extend([&client, &server, &other_client, &other_server].map(inode_of));
            let mut buf = [0u8; 64];
            let mut receiving = std::pin::pin!(server.receive_some(&mut buf));
            assert!(futures_lite::future::poll_once(&mut receiving).await.is_none());
            let big = vec![7u8; 8 << 20];
            let mut sending = std::pin::pin!(client.send_all(&big));
            assert!(futures_lite::future::poll_once(&mut sending).await.is_none(), "nobody reads: it waits");
            open_nursery(async |n| {
                n.spawn(async {
                    let mut b = [0u8; 8];
                    other_client.receive_some(&mut b).await.map(drop)
                });
                trio::testing::wait_all_tasks_blocked(Duration::ZERO).await?;
                Err::<(), _>(trio::Error::Io(std::io::Error::other("the run dies")))
            })
            .await?;
            drop(other_server);
            Ok(())
        });
        let e = r.expect_err("the run fails");
        assert!(e.to_string().contains("the run dies"), "{driver:?}: {e}");
        let open = open_socket_inodes();
        for inode in inodes.borrow().iter() {
            assert!(!open.contains(inode), "{driver:?}: socket {inode} of the run is still open");
        }
        assert_eq!(lowlevel::driver_buffers(), 0, "{driver:?}: buffers still held");
    }
}

/// `RunOptions::driver(Driver::Epoll)` gives the readiness poller, and the
/// run says so, with no fallback reason.
#[test]
fn epoll_is_what_a_run_asking_for_it_gets() {
    let info = RunOptions::new().driver(Driver::Epoll).run(async { lowlevel::current_driver() }).unwrap();
    assert_eq!(info.driver(), Driver::Epoll);
    assert_eq!(info.fallback(), None);
}

/// `Driver::Auto` gets io_uring where the kernel offers it, else epoll
/// with a one-line reason; never `Auto` itself.
#[test]
fn auto_gets_uring_or_says_why_not() {
    let info = RunOptions::new().driver(Driver::Auto).run(async { lowlevel::current_driver() }).unwrap();
    match info.driver() {
        Driver::Uring => assert_eq!(info.fallback(), None),
        Driver::Epoll => {
            let why = info.fallback().expect("a fallback says why");
            assert!(why.contains("io_uring") && !why.contains('\n'), "{why}");
        }
        other => panic!("a run got {other:?}"),
    }
}

/// Asking for io_uring where it cannot be used is an error naming it;
/// where it can, the run is on it.
#[test]
fn uring_is_used_or_refused_with_the_reason() {
    match RunOptions::new().driver(Driver::Uring).run(async { lowlevel::current_driver() }) {
        Ok(info) => assert_eq!(info.driver(), Driver::Uring),
        Err(e) => assert!(e.to_string().contains("io_uring"), "{e}"),
    }
}

/// A run that asks for io_uring, if this kernel has it, on a mock clock
/// that jumps to the next deadline once the run has been idle for a second
/// of real time: deadlines take no real time, yet an idle run first waits
/// in the ring (with a timeout), where the socket events and wakes come.
fn on_uring<T>(f: impl Future<Output = trio::Result<T>>) -> Option<T> {
    let _one = one_at_a_time();
    let probe = RunOptions::new().driver(Driver::Uring).run(async { Ok(()) });
    if let Err(e) = probe {
        eprintln!("io_uring is not available here ({e}): nothing to check on it");
        return None;
    }
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::from_secs(1)));
    Some(RunOptions::new().driver(Driver::Uring).clock(clock).run(f).unwrap())
}

/// Echo over loopback TCP on io_uring: accept, connect, both directions,
/// EOF, from several connections at once.
#[test]
fn tcp_echo_on_uring() {
    let total = on_uring(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let addr = listener.local_addr()?;
        let got = std::cell::Cell::new(0usize);
        open_nursery(async |n| {
            n.spawn(async {
                open_nursery(async |conns| {
                    for _ in 0..4 {
                        let s = listener.accept().await?;
                        conns.spawn(async move { util::echo_until_eof(&s).await });
                    }
                    Ok(())
                })
                .await
                .map(drop)
            });
            for i in 0..4u8 {
                let got = &got;
                n.spawn(async move {
                    let c = TcpStream::connect(addr).await?;
                    let msg = vec![i; 3000];
                    c.send_all(&msg).await?;
                    c.send_eof().await?;
                    let mut back = Vec::new();
                    let mut buf = [0u8; 512];
                    loop {
                        let k = c.receive_some(&mut buf).await?;
                        if k == 0 {
                            break;
                        }
                        back.extend_from_slice(&buf[..k]);
                    }
                    assert_eq!(back, msg);
                    got.set(got.get() + back.len());
                    Ok(())
                });
            }
            Ok(())
        })
        .await?;
        Ok(got.get())
    });
    if let Some(total) = total {
        assert_eq!(total, 4 * 3000);
    }
}

/// A stream closed while a task waits to receive on it: the waiter gets
/// `Closed` and the socket really closes (the peer reads EOF), although
/// the ring was watching it (a pending poll holds a reference to the
/// file; the backend cancels it when the source goes).
#[test]
fn closing_a_watched_socket_closes_it_on_uring() {
    on_uring(async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let server = std::rc::Rc::new(listener.accept().await?);
        open_nursery(async |n| {
            let s = server.clone();
            n.spawn(async move {
                let mut buf = [0u8; 8];
                let r = s.receive_some(&mut buf).await;
                assert!(matches!(r, Err(trio::Error::Closed)), "{r:?}");
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(Duration::ZERO).await?;
            server.aclose().await?;
            // The peer sees the end of the stream, within a (virtual)
            // bound: were the socket left open, the clock would jump there.
            let mut buf = [0u8; 8];
            let k = trio::fail_after(Duration::from_secs(10), client.receive_some(&mut buf)).await?;
            assert_eq!(k, 0);
            Ok(())
        })
        .await
    });
}

/// An idle io_uring wait ends with its timeout (the clock then jumps to
/// the deadline), and a wake from another thread ends a wait.
#[test]
fn timeouts_and_wakes_on_uring() {
    on_uring(async {
        let t0 = trio::current_time()?;
        trio::sleep(Duration::from_secs(3600)).await?;
        assert_eq!(trio::current_time()? - t0, Duration::from_secs(3600));
        assert_eq!(trio::to_thread::run_sync(|| 7).await?, 7);
        Ok(())
    });
}
