//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use trio::testing::MockClock;
use trio::{Instant, Result, RunOptions};

/// Runs `f` under a mock clock that autojumps as soon as everything blocks.
pub fn mock_run<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::ZERO));
    RunOptions::new().clock(clock).run(f)
}

/// Like `mock_run`, handing the test the clock.
pub fn mock_run_with<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(MockClock) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let clock = MockClock::new();
    clock.set_autojump_threshold(Some(Duration::ZERO));
    RunOptions::new().clock(clock.clone()).run(f(clock))
}

/// A mock clock without autojump (time moves only by `jump`).
pub fn manual_run_with<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(MockClock) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let clock = MockClock::new();
    RunOptions::new().clock(clock.clone()).run(f(clock))
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn at(s: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(s)
}

/// An append-only log shared by the tasks of one test.
#[derive(Default, Debug)]
pub struct Log(RefCell<Vec<String>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.borrow_mut().push(s.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
    pub fn snapshot(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Sets a flag when dropped (to see that a future was dropped).
pub struct DropFlag<'a>(pub &'a std::cell::Cell<bool>);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A custom error for group tests.
#[derive(Debug)]
pub struct Boom(pub u32);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom {}", self.0)
    }
}

impl std::error::Error for Boom {}

pub fn boom(n: u32) -> trio::Error {
    trio::Error::user(Boom(n))
}

/// The `Boom` numbers in an error (a leaf or a group), sorted.
pub fn booms(e: &trio::Error) -> Vec<u32> {
    let mut v: Vec<u32> = e
        .leaves()
        .iter()
        .filter_map(|l| match l {
            trio::Error::User(b) => b.downcast_ref::<Boom>().map(|b| b.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// Waits until `cond` holds, for conditions that another OS thread makes true
/// (a worker thread finishing, a signal being dispatched). The pause runs on
/// a worker thread, so the run keeps serving other tasks. Bounded: panics
/// after about two seconds.
pub async fn until(cond: impl FnMut() -> bool) -> Result<()> {
    until_within(Duration::from_secs(2), cond).await
}

/// As [`until`], bounded by about `limit` (in 1 ms pauses).
pub async fn until_within(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..limit.as_millis() {
        if cond() {
            return Ok(());
        }
        trio::to_thread::run_sync(|| std::thread::sleep(Duration::from_millis(1))).await?;
    }
    panic!("condition not met within the bound");
}

/// Polls `fut` once from the current task and asserts that it is pending
/// (it started: it parked, or completed at once and yielded), so that a
/// test can drop it right there.
pub async fn poll_once_pending<F: Future + ?Sized>(mut fut: std::pin::Pin<&mut F>, what: &str) {
    std::future::poll_fn(|cx| {
        assert!(fut.as_mut().poll(cx).is_pending(), "{what}");
        std::task::Poll::Ready(())
    })
    .await
}

/// `len` bytes of a fixed pseudo-random sequence (xorshift32), for data
/// that a transfer must bring back unchanged.
pub fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A connected TCP pair over IPv4 loopback: (client side, server side).
#[cfg(not(target_os = "wasi"))]
pub async fn tcp_pair() -> Result<(trio::net::TcpStream, trio::net::TcpStream)> {
    use trio::abc::Listener;
    let listener = trio::net::TcpListener::bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())?;
    let client = trio::net::TcpStream::connect(listener.local_addr()?).await?;
    let server = listener.accept().await?;
    Ok((client, server))
}

/// Echoes what `s` receives back to it until the end of the stream, then
/// closes it (the echo handler of the server tests).
pub async fn echo_until_eof<S: trio::abc::ReceiveStream + trio::abc::SendStream>(s: &S) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let k = s.receive_some(&mut buf).await?;
        if k == 0 {
            return s.aclose().await;
        }
        s.send_all(&buf[..k]).await?;
    }
}
