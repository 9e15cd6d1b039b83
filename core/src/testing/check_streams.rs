//! Conformance checks for stream implementations (Trio's
//! `trio.testing._check_streams`).
//!
//! [`check_one_way_stream`], [`check_two_way_stream`] and
//! [`check_half_closeable_stream`] put a stream implementation through the
//! contract of [`abc`](crate::abc): ordering, `Busy` on concurrent use,
//! `Closed` after `aclose`, end of stream after the peer closed, `Broken`
//! after the receiver closed, cancellation, closing waking blocked tasks,
//! flow control on a clogged stream, full-duplex transfers and half-close.
//! They panic (they are test assertions) on a contract violation.
//!
//! The checks use only the public stream traits, cancel scopes, nurseries and
//! [`wait_all_tasks_blocked`], so they run on any transport (memory, TCP,
//! Unix sockets, TLS) and under the real clock as well as a `MockClock` (no
//! step relies on time passing). While a check runs, no unrelated task of the
//! run should be busy: it uses `wait_all_tasks_blocked` to let the streams'
//! tasks get as far as they can.
//!
//! # Makers
//!
//! Each check takes a *stream maker*, anything callable as
//! `maker().await -> Result<(A, B)>` returning a fresh connected pair (an
//! async closure `async || Ok(make_pair())`, or a closure returning a future),
//! and optionally a *clogged* maker: like the first, but the pair it returns
//! must be in a state where `send_all` and `wait_send_all_might_not_block`
//! block until `receive_some` is called on the other end (for example a
//! [`lockstep_stream_one_way_pair`](super::lockstep_stream_one_way_pair), or
//! a socket whose buffers were filled). Without one, pass
//! `None::<NoStreamMaker<_, _>>`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::ErrorKind;
use std::time::Duration;

use super::{points, wait_all_tasks_blocked};
use crate::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream, Stream};
use crate::cancel::CancelScope;
use crate::error::{Error, Result};
use crate::nursery::open_nursery;

/// The type to name when there is no clogged stream maker:
/// `check_one_way_stream(maker, None::<NoStreamMaker<_, _>>)`.
pub type NoStreamMaker<A, B> = fn() -> std::future::Ready<Result<(A, B)>>;

/// Bound on `send_all` calls made while waiting for a closed receiver to be
/// noticed (a socket may accept a few sends before the reset arrives).
const SEND_UNTIL_BROKEN_BOUND: usize = 100_000;
/// Bound on the reads of a receiver that drains a clogged stream.
const DRAIN_BOUND: usize = 1_000_000;
/// The size of the full-duplex transfer (each direction), as in Trio.
const DUPLEX_TEST_SIZE: usize = 1 << 20;
/// The largest chunk sent or received at once in the duplex transfer.
const CHUNK_SIZE_MAX: usize = 1 << 14;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Awaits `fut` and, if it succeeded, asserts that it executed a checkpoint
/// (a yield and a cancellation check). Failures are not checked, as in Trio.
async fn cp<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let before = points();
    let out = fut.await;
    if out.is_ok()
        && let (Some(b), Some(a)) = (before, points())
    {
        assert!(
            a.schedule != b.schedule && a.cancel != b.cancel,
            "{what} returned without executing a checkpoint (every stream operation must be one)"
        );
    }
    out
}

fn idle() -> impl Future<Output = Result<()>> {
    wait_all_tasks_blocked(Duration::ZERO)
}

fn is_closed(e: &Error) -> bool {
    matches!(e, Error::Closed)
}

fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Busy)
}

/// `Broken`, or an OS error that says the peer is gone (the contract allows
/// either).
fn is_broken(e: &Error) -> bool {
    match e {
        Error::Broken => true,
        Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::NotConnected
        ),
        _ => false,
    }
}

/// Asserts that `res` failed with an error that `pred` accepts. Errors of a
/// nursery count if every leaf is accepted or `Cancelled`, and at least one
/// is accepted. A stray `Cancelled` is passed on (an outer scope may be
/// cancelling the check); anything else panics.
fn expect_err<T: std::fmt::Debug>(res: Result<T>, what: &str, expected: &str, pred: fn(&Error) -> bool) -> Result<()> {
    match res {
        Ok(v) => panic!("{what}: expected {expected}, but it succeeded with {v:?}"),
        Err(e) => {
            let leaves = e.leaves();
            if leaves.iter().any(pred) && leaves.iter().all(|l| pred(l) || l.is_cancelled()) {
                Ok(())
            } else if e.is_cancelled() {
                Err(e)
            } else {
                panic!("{what}: expected {expected}, got {e:?}")
            }
        }
    }
}

/// Closes `res` inside an already-cancelled scope (Trio's
/// `aclose_forcefully`): it must still end up closed.
async fn aclose_forcefully<T: AsyncResource>(res: &T) -> Result<()> {
    let scope = CancelScope::new();
    scope.cancel();
    scope.run(res.aclose()).await.map(drop)
}

/// Makes a pair, runs `body` on it, then closes both ends forcefully (Trio's
/// `_ForceCloseBoth`).
async fn with_pair<A, B, M>(maker: &mut M, body: impl AsyncFnOnce(&A, &B) -> Result<()>) -> Result<()>
where
    A: AsyncResource,
    B: AsyncResource,
    M: AsyncFnMut() -> Result<(A, B)>,
{
    let (a, b) = maker().await?;
    let out = body(&a, &b).await;
    let ca = aclose_forcefully(&a).await;
    let cb = aclose_forcefully(&b).await;
    out.and(ca).and(cb)
}

async fn do_send_all<S: SendStream>(s: &S, data: &[u8]) -> Result<()> {
    cp("send_all", s.send_all(data)).await
}

async fn do_receive_some<R: ReceiveStream>(r: &R, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let n = cp("receive_some", r.receive_some(&mut buf)).await?;
    assert!(n <= max, "receive_some reported {n} bytes into a buffer of {max}");
    buf.truncate(n);
    Ok(buf)
}

async fn checked_receive_1<R: ReceiveStream>(r: &R, expected: &[u8]) -> Result<()> {
    let got = do_receive_some(r, 1).await?;
    assert_eq!(got, expected, "receive_some(1) returned the wrong data (empty means EOF)");
    Ok(())
}

async fn do_aclose<T: AsyncResource>(res: &T) -> Result<()> {
    cp("aclose", res.aclose()).await
}

/// Sends until the stream reports that the receiver is gone.
async fn send_until_broken<S: SendStream>(s: &S) -> Result<()> {
    let chunk = [b'x'; 100];
    for _ in 0..SEND_UNTIL_BROKEN_BOUND {
        match do_send_all(s, &chunk).await {
            Ok(()) => {}
            Err(e) => return expect_err::<()>(Err(e), "send_all after the receiver closed", "Broken", is_broken),
        }
    }
    panic!("send_all kept succeeding after the receiver was closed ({SEND_UNTIL_BROKEN_BOUND} sends)");
}

/// `Ok`, or an error saying the peer is gone.
fn ok_or_broken(res: Result<()>, what: &str) -> Result<()> {
    match res {
        Ok(()) => Ok(()),
        Err(e) if is_broken(&e) => Ok(()),
        Err(e) if e.is_cancelled() => Err(e),
        Err(e) => panic!("{what}: expected Ok or Broken, got {e:?}"),
    }
}

/// A small deterministic generator (SplitMix64) for the duplex test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `1..=max`.
    fn chunk(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

// ---------------------------------------------------------------------------
// One-way
// ---------------------------------------------------------------------------

/// Puts a one-way stream implementation through the generic checks (Trio's
/// `check_one_way_stream`); panics on a contract violation.
///
/// `stream_maker` returns a fresh connected `(send, receive)` pair each time
/// it is called. `clogged_stream_maker`, if given, returns a pair on which
/// `send_all` and `wait_send_all_might_not_block` block until `receive_some`
/// is called; it enables the checks of blocking behaviour (flow control,
/// `Busy` between blocked senders, closing a blocked sender). Without one,
/// pass `None::<NoStreamMaker<_, _>>`.
///
/// ```
/// use trio::testing::{check_one_way_stream, lockstep_stream_one_way_pair, memory_stream_one_way_pair, NoStreamMaker};
///
/// trio::run(async {
///     check_one_way_stream(async || Ok(memory_stream_one_way_pair()), None::<NoStreamMaker<_, _>>).await?;
///     let lockstep = async || Ok(lockstep_stream_one_way_pair());
///     check_one_way_stream(lockstep, Some(lockstep)).await
/// })
/// .unwrap();
/// ```
///
/// # Errors
/// What the makers return, and errors of the runtime itself. Contract
/// violations panic.
pub async fn check_one_way_stream<S, R, M, C>(mut stream_maker: M, mut clogged_stream_maker: Option<C>) -> Result<()>
where
    S: SendStream,
    R: ReceiveStream,
    M: AsyncFnMut() -> Result<(S, R)>,
    C: AsyncFnMut() -> Result<(S, R)>,
{
    check_basics(&mut stream_maker).await?;
    check_closing(&mut stream_maker).await?;
    check_cancellation(&mut stream_maker).await?;
    if let Some(clogged) = clogged_stream_maker.as_mut() {
        check_clogged(clogged).await?;
    }
    Ok(())
}

/// Data flow, argument checks, `Busy` receivers, `wait_send_all_might_not_block`
/// and the life cycle of closing each end.
async fn check_basics<S, R, M>(maker: &mut M) -> Result<()>
where
    S: SendStream,
    R: ReceiveStream,
    M: AsyncFnMut() -> Result<(S, R)>,
{
    with_pair(maker, async |s: &S, r: &R| {
        // Simple sending and receiving.
        open_nursery(async |n| {
            n.spawn(do_send_all(s, b"x"));
            n.spawn(checked_receive_1(r, b"x"));
            Ok(())
        })
        .await?;

        // An empty send is allowed and means nothing.
        open_nursery(async |n| {
            n.spawn(async move {
                do_send_all(s, b"").await?;
                do_send_all(s, b"y").await
            });
            n.spawn(checked_receive_1(r, b"y"));
            Ok(())
        })
        .await?;

        // Data sent from an owned buffer and received into a large one.
        open_nursery(async |n| {
            n.spawn(async move { do_send_all(s, Vec::from(*b"2").as_slice()).await });
            n.spawn(async move {
                assert_eq!(do_receive_some(r, 4096).await?, b"2");
                Ok(())
            });
            Ok(())
        })
        .await?;

        // An empty receive buffer is invalid input.
        let res = r.receive_some(&mut []).await;
        match res {
            Err(Error::Io(e)) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) if e.is_cancelled() => return Err(e),
            other => panic!("receive_some with an empty buffer: expected Io(InvalidInput), got {other:?}"),
        }

        // Two tasks receiving at once: the second gets Busy.
        let res = open_nursery(async |n| {
            n.spawn(async move { do_receive_some(r, 1).await.map(drop) });
            n.spawn(async move { do_receive_some(r, 1).await.map(drop) });
            Ok(())
        })
        .await;
        expect_err(res, "two concurrent receive_some", "Busy", is_busy)?;

        // With a receiver blocked on an empty stream, send_all must not
        // block, so wait_send_all_might_not_block returns. (A stream without
        // a buffer may wait until receive_some runs, hence the receiver.)
        open_nursery(async |n| {
            n.spawn(async move {
                cp("wait_send_all_might_not_block", s.wait_send_all_might_not_block()).await?;
                n.cancel_scope().cancel();
                Ok(())
            });
            n.spawn(async move { do_receive_some(r, 1).await.map(drop) });
            Ok(())
        })
        .await?;

        // Closing the receiving end makes sends fail with Broken
        // (eventually)...
        open_nursery(async |n| {
            n.spawn(send_until_broken(s));
            n.spawn(do_aclose(r));
            Ok(())
        })
        .await?;
        // ... and once that was seen, the stream stays broken.
        expect_err(do_send_all(s, &[b'x'; 100]).await, "send_all on a broken stream", "Broken", is_broken)?;

        // The closed end fails with Closed.
        expect_err(do_receive_some(r, 4096).await, "receive_some after aclose", "Closed", is_closed)?;

        // Closing again is fine.
        do_aclose(r).await?;
        do_aclose(r).await?;

        // Closing the sending end: every send operation fails with Closed.
        do_aclose(s).await?;
        expect_err(do_send_all(s, &[b'x'; 100]).await, "send_all after aclose", "Closed", is_closed)?;
        expect_err(do_send_all(s, b"").await, "empty send_all after aclose", "Closed", is_closed)?;
        expect_err(
            s.wait_send_all_might_not_block().await,
            "wait_send_all_might_not_block after aclose",
            "Closed",
            is_closed,
        )?;
        do_aclose(s).await?;
        do_aclose(s).await
    })
    .await
}

/// What the receiver sees when the sender closes (gracefully or not), and
/// what the sender sees when the receiver closes.
async fn check_closing<S, R, M>(maker: &mut M) -> Result<()>
where
    S: SendStream,
    R: ReceiveStream,
    M: AsyncFnMut() -> Result<(S, R)>,
{
    // Send, then close gracefully: the receiver gets the data, then EOF (for
    // good).
    with_pair(maker, async |s: &S, r: &R| {
        open_nursery(async |n| {
            n.spawn(async move {
                do_send_all(s, b"y").await?;
                do_aclose(s).await
            });
            n.spawn(async move {
                // Let the sender get as far as it can (an unbuffered stream
                // blocks in send_all), then receive.
                idle().await?;
                checked_receive_1(r, b"y").await?;
                checked_receive_1(r, b"").await?;
                checked_receive_1(r, b"").await?;
                do_receive_some(r, 4096).await.map(|v| assert!(v.is_empty(), "data after EOF"))?;
                do_aclose(r).await
            });
            Ok(())
        })
        .await
        .map(drop)
    })
    .await?;

    // A receiver blocked on an empty stream wakes with EOF when the sender
    // closes.
    with_pair(maker, async |s: &S, r: &R| {
        open_nursery(async |n| {
            n.spawn(checked_receive_1(r, b""));
            idle().await?;
            do_aclose(s).await
        })
        .await
        .map(drop)
    })
    .await?;

    // The receiver closed (forcefully) first: sends fail with Broken, the
    // receiver with Closed.
    with_pair(maker, async |s: &S, r: &R| {
        aclose_forcefully(r).await?;
        send_until_broken(s).await?;
        expect_err(do_receive_some(r, 4096).await, "receive_some after aclose", "Closed", is_closed)
    })
    .await?;

    // The sender closed forcefully: it fails with Closed; the receiver sees
    // EOF or Broken, but neither data nor a hang.
    with_pair(maker, async |s: &S, r: &R| {
        aclose_forcefully(s).await?;
        expect_err(do_send_all(s, b"123").await, "send_all after aclose", "Closed", is_closed)?;
        match do_receive_some(r, 1).await {
            Ok(data) => assert!(data.is_empty(), "receive_some returned data after a forceful close of the sender"),
            Err(e) => ok_or_broken(Err(e), "receive_some after the sender closed forcefully")?,
        }
        Ok(())
    })
    .await?;

    // A cancelled aclose still closes.
    with_pair(maker, async |s: &S, r: &R| {
        let scope = CancelScope::new();
        scope.cancel();
        scope.run(r.aclose()).await?;
        let scope = CancelScope::new();
        scope.cancel();
        scope.run(s.aclose()).await?;
        expect_err(do_send_all(s, b"123").await, "send_all after a cancelled aclose", "Closed", is_closed)?;
        expect_err(do_receive_some(r, 4096).await, "receive_some after a cancelled aclose", "Closed", is_closed)
    })
    .await?;

    // A task blocked in receive_some wakes with Closed when its own end is
    // closed.
    with_pair(maker, async |_s: &S, r: &R| {
        open_nursery(async |n| {
            n.spawn(async move {
                let res = r.receive_some(&mut [0; 10]).await;
                expect_err(res, "a blocked receive_some when its stream is closed", "Closed", is_closed)
            });
            idle().await?;
            aclose_forcefully(r).await
        })
        .await
        .map(drop)
    })
    .await
}

/// Cancelled operations, and that the stream can still be closed gracefully
/// (or, after a cancelled receive, still be used).
async fn check_cancellation<S, R, M>(maker: &mut M) -> Result<()>
where
    S: SendStream,
    R: ReceiveStream,
    M: AsyncFnMut() -> Result<(S, R)>,
{
    // Operations in a cancelled scope fail with Cancelled; afterwards the
    // stream can still be closed gracefully.
    with_pair(maker, async |s: &S, r: &R| {
        let scope = CancelScope::new();
        scope.cancel();
        scope
            .run(open_nursery(async |n| {
                n.spawn(async move {
                    let res = do_send_all(s, b"x").await;
                    expect_err(res, "send_all in a cancelled scope", "Cancelled", Error::is_cancelled)
                });
                n.spawn(async move {
                    let res = do_receive_some(r, 1).await;
                    expect_err(res, "receive_some in a cancelled scope", "Cancelled", Error::is_cancelled)
                });
                Ok(())
            }))
            .await?;
        open_nursery(async |n| {
            n.spawn(do_aclose(s));
            n.spawn(do_aclose(r));
            Ok(())
        })
        .await
        .map(drop)
    })
    .await?;

    // A blocked receive_some can be cancelled, and the stream still works.
    with_pair(maker, async |s: &S, r: &R| {
        let scope = CancelScope::new();
        open_nursery(async |n| {
            let scope2 = scope.clone();
            n.spawn(async move {
                let out = scope2.run(do_receive_some(r, 1)).await?;
                assert!(out.is_none(), "a cancelled receive_some returned data: {out:?}");
                Ok(())
            });
            idle().await?;
            scope.cancel();
            Ok(())
        })
        .await?;
        assert!(scope.cancelled_caught(), "the blocked receive_some did not report Cancelled");
        open_nursery(async |n| {
            n.spawn(do_send_all(s, b"z"));
            n.spawn(checked_receive_1(r, b"z"));
            Ok(())
        })
        .await
        .map(drop)
    })
    .await
}

/// The checks that need a clogged stream (Trio's second half of
/// `check_one_way_stream`, plus a blocked sender meeting a closed receiver
/// and a cancelled blocked sender).
async fn check_clogged<S, R, C>(clogged: &mut C) -> Result<()>
where
    S: SendStream,
    R: ReceiveStream,
    C: AsyncFnMut() -> Result<(S, R)>,
{
    // wait_send_all_might_not_block blocks until the receiver reads.
    with_pair(clogged, async |s: &S, r: &R| {
        let record = RefCell::new(Vec::new());
        let record = &record;
        open_nursery(async |n| {
            n.spawn(async move {
                record.borrow_mut().push("waiter sleeping");
                cp("wait_send_all_might_not_block", s.wait_send_all_might_not_block()).await?;
                record.borrow_mut().push("waiter wokeup");
                n.cancel_scope().cancel();
                Ok(())
            });
            idle().await?;
            n.spawn(async move {
                idle().await?;
                record.borrow_mut().push("receiver starting");
                let mut buf = vec![0; 16834];
                for _ in 0..DRAIN_BOUND {
                    let k = r.receive_some(&mut buf).await?;
                    assert!(k > 0, "receive_some returned EOF on a stream whose sender is open");
                }
                panic!("wait_send_all_might_not_block never woke while the receiver kept reading");
            });
            Ok(())
        })
        .await?;
        assert_eq!(*record.borrow(), ["waiter sleeping", "receiver starting", "waiter wokeup"]);
        Ok(())
    })
    .await?;

    // Simultaneous wait_send_all_might_not_block calls, or one with a
    // send_all, fail with Busy.
    with_pair(clogged, async |s: &S, _r: &R| {
        let res = open_nursery(async |n| {
            n.spawn(s.wait_send_all_might_not_block());
            n.spawn(s.wait_send_all_might_not_block());
            Ok(())
        })
        .await;
        expect_err(res, "two concurrent wait_send_all_might_not_block", "Busy", is_busy)?;
        // (This may break the stream, since a send_all gets cancelled.)
        let res = open_nursery(async |n| {
            n.spawn(s.wait_send_all_might_not_block());
            n.spawn(s.send_all(b"123"));
            Ok(())
        })
        .await;
        expect_err(res, "wait_send_all_might_not_block concurrent with send_all", "Busy", is_busy)
    })
    .await?;

    // Simultaneous blocked send_all calls fail with Busy.
    with_pair(clogged, async |s: &S, _r: &R| {
        let res = open_nursery(async |n| {
            n.spawn(s.send_all(b"123"));
            n.spawn(s.send_all(b"123"));
            Ok(())
        })
        .await;
        expect_err(res, "two concurrent send_all", "Busy", is_busy)
    })
    .await?;

    // Closing the receiver wakes a blocked wait_send_all_might_not_block
    // (with or without an error)...
    with_pair(clogged, async |s: &S, r: &R| {
        open_nursery(async |n| {
            n.spawn(async move {
                let res = cp("wait_send_all_might_not_block", s.wait_send_all_might_not_block()).await;
                ok_or_broken(res, "wait_send_all_might_not_block when the receiver closes")
            });
            n.spawn(async move {
                idle().await?;
                aclose_forcefully(r).await
            });
            Ok(())
        })
        .await
        .map(drop)
    })
    .await?;

    // ... and one that starts after the close returns too.
    with_pair(clogged, async |s: &S, r: &R| {
        aclose_forcefully(r).await?;
        let res = cp("wait_send_all_might_not_block", s.wait_send_all_might_not_block()).await;
        ok_or_broken(res, "wait_send_all_might_not_block after the receiver closed")
    })
    .await?;

    // Closing the sender wakes its own blocked send_all and
    // wait_send_all_might_not_block with Closed.
    with_pair(clogged, async |s: &S, _r: &R| {
        open_nursery(async |n| {
            n.spawn(async move {
                idle().await?;
                aclose_forcefully(s).await
            });
            let res = s.send_all(b"xyzzy").await;
            expect_err(res, "a blocked send_all when its stream is closed", "Closed", is_closed)
        })
        .await
        .map(drop)
    })
    .await?;
    with_pair(clogged, async |s: &S, _r: &R| {
        open_nursery(async |n| {
            n.spawn(async move {
                idle().await?;
                aclose_forcefully(s).await
            });
            let res = s.wait_send_all_might_not_block().await;
            expect_err(res, "a blocked wait_send_all_might_not_block when its stream is closed", "Closed", is_closed)
        })
        .await
        .map(drop)
    })
    .await?;

    // Closing the receiver makes a blocked send_all fail with Broken.
    with_pair(clogged, async |s: &S, r: &R| {
        let closing = Cell::new(false);
        let closing = &closing;
        open_nursery(async |n| {
            n.spawn(async move {
                idle().await?;
                closing.set(true);
                aclose_forcefully(r).await
            });
            let res = s.send_all(b"xyzzy").await;
            assert!(
                res.is_err() || closing.get(),
                "send_all on a clogged stream returned before anything was received (the clogged maker must \
                 return a stream whose send_all blocks)"
            );
            expect_err(res, "a blocked send_all when the receiver closes", "Broken", is_broken)
        })
        .await
        .map(drop)
    })
    .await?;

    // A blocked send_all and a blocked wait_send_all_might_not_block can be
    // cancelled; the stream can still be closed gracefully.
    with_pair(clogged, async |s: &S, r: &R| {
        for op in 0..2 {
            let scope = CancelScope::new();
            open_nursery(async |n| {
                let scope2 = scope.clone();
                n.spawn(async move {
                    let out = if op == 0 {
                        scope2.run(s.wait_send_all_might_not_block()).await?
                    } else {
                        scope2.run(s.send_all(b"xyzzy")).await?
                    };
                    assert!(out.is_none(), "a blocked send operation finished on a clogged stream");
                    Ok(())
                });
                idle().await?;
                scope.cancel();
                Ok(())
            })
            .await?;
            assert!(scope.cancelled_caught(), "a blocked send operation did not report Cancelled");
        }
        open_nursery(async |n| {
            n.spawn(do_aclose(s));
            n.spawn(do_aclose(r));
            Ok(())
        })
        .await
        .map(drop)
    })
    .await
}

// ---------------------------------------------------------------------------
// Two-way
// ---------------------------------------------------------------------------

/// Puts a bidirectional stream implementation through the checks of
/// [`check_one_way_stream`] in both directions, then a full-duplex transfer
/// of 1 MiB each way in random-sized chunks, and closing one end while the
/// other waits for data (Trio's `check_two_way_stream`); panics on a
/// contract violation. The makers return connected `(A, B)` pairs.
///
/// ```
/// use trio::testing::{check_two_way_stream, lockstep_stream_pair};
///
/// trio::run(async {
///     let maker = async || Ok(lockstep_stream_pair());
///     check_two_way_stream(maker, Some(maker)).await
/// })
/// .unwrap();
/// ```
///
/// # Errors
/// What the makers return, and errors of the runtime itself. Contract
/// violations panic.
pub async fn check_two_way_stream<A, B, M, C>(mut stream_maker: M, mut clogged_stream_maker: Option<C>) -> Result<()>
where
    A: Stream,
    B: Stream,
    M: AsyncFnMut() -> Result<(A, B)>,
    C: AsyncFnMut() -> Result<(A, B)>,
{
    check_one_way_stream(&mut stream_maker, clogged_stream_maker.as_mut()).await?;

    let flipped = async || {
        let (a, b) = stream_maker().await?;
        Ok((b, a))
    };
    let flipped_clogged = clogged_stream_maker.as_mut().map(|c| {
        async move || {
            let (a, b) = c().await?;
            Ok((b, a))
        }
    });
    check_one_way_stream(flipped, flipped_clogged).await?;

    // Full duplex: both directions at once, in random chunks.
    with_pair(&mut stream_maker, async |s1: &A, s2: &B| {
        let data = Rng(0).bytes(DUPLEX_TEST_SIZE);
        let reversed: Vec<u8> = data.iter().rev().copied().collect();
        let (data, reversed) = (&data[..], &reversed[..]);
        open_nursery(async |n| {
            n.spawn(duplex_sender(s1, data, 1));
            n.spawn(duplex_sender(s2, reversed, 2));
            n.spawn(duplex_receiver(s1, reversed, 3));
            n.spawn(duplex_receiver(s2, data, 4));
            Ok(())
        })
        .await?;

        // Closing one end: the other, waiting for data, sees EOF.
        open_nursery(async |n| {
            n.spawn(async move {
                let got = do_receive_some(s2, 10).await?;
                assert!(got.is_empty(), "expected EOF after the peer closed, got {got:?}");
                do_aclose(s2).await
            });
            n.spawn(do_aclose(s1));
            Ok(())
        })
        .await
        .map(drop)
    })
    .await
}

async fn duplex_sender<S: SendStream>(s: &S, data: &[u8], seed: u64) -> Result<()> {
    let mut rng = Rng(seed);
    let mut rest = data;
    // Each round sends at least one byte.
    while !rest.is_empty() {
        let k = rng.chunk(CHUNK_SIZE_MAX).min(rest.len());
        s.send_all(&rest[..k]).await?;
        rest = &rest[k..];
    }
    Ok(())
}

async fn duplex_receiver<R: ReceiveStream>(r: &R, expected: &[u8], seed: u64) -> Result<()> {
    let mut rng = Rng(seed);
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = vec![0; CHUNK_SIZE_MAX];
    // Each round receives at least one byte (EOF fails the check).
    while got.len() < expected.len() {
        let max = rng.chunk(CHUNK_SIZE_MAX);
        let k = r.receive_some(&mut buf[..max]).await?;
        assert!(k > 0, "EOF after {} of {} bytes in the duplex transfer", got.len(), expected.len());
        assert!(k <= max, "receive_some reported {k} bytes into a buffer of {max}");
        got.extend_from_slice(&buf[..k]);
    }
    assert!(got == expected, "the duplex transfer corrupted the data");
    Ok(())
}

// ---------------------------------------------------------------------------
// Half-closeable
// ---------------------------------------------------------------------------

/// Puts a half-closeable stream implementation through the checks of
/// [`check_two_way_stream`], then checks `send_eof`: the peer reads the data
/// and then EOF, this end can no longer send but can still receive, and
/// `send_eof` is idempotent. With a clogged maker, `send_eof` concurrent with
/// a blocked `send_all` or `wait_send_all_might_not_block` must fail with
/// `Busy` (Trio's `check_half_closeable_stream`). Panics on a contract
/// violation.
///
/// ```
/// use trio::testing::{check_half_closeable_stream, memory_stream_pair, NoStreamMaker};
///
/// trio::run(async {
///     check_half_closeable_stream(async || Ok(memory_stream_pair()), None::<NoStreamMaker<_, _>>).await
/// })
/// .unwrap();
/// ```
///
/// # Errors
/// What the makers return, and errors of the runtime itself. Contract
/// violations panic.
pub async fn check_half_closeable_stream<A, B, M, C>(
    mut stream_maker: M,
    mut clogged_stream_maker: Option<C>,
) -> Result<()>
where
    A: HalfCloseableStream,
    B: HalfCloseableStream,
    M: AsyncFnMut() -> Result<(A, B)>,
    C: AsyncFnMut() -> Result<(A, B)>,
{
    check_two_way_stream(&mut stream_maker, clogged_stream_maker.as_mut()).await?;

    with_pair(&mut stream_maker, async |s1: &A, s2: &B| {
        open_nursery(async |n| {
            n.spawn(send_x_then_eof(s1));
            n.spawn(expect_x_then_eof(s2));
            Ok(())
        })
        .await?;

        // Sending is over for s1...
        expect_err(s1.send_all(b"y").await, "send_all after send_eof", "Closed", is_closed)?;
        // ... but send_eof again is fine...
        cp("send_eof", s1.send_eof()).await?;
        // ... also when generic code asks for it through `SendStream`
        // (what `StapledStream::send_eof` does with its send half)...
        match s1.send_eof_if_supported().await {
            Some(r) => assert!(r.is_ok(), "send_eof_if_supported after send_eof: {r:?}"),
            None => panic!("a HalfCloseableStream must override SendStream::send_eof_if_supported"),
        }
        // ... and the other direction still works.
        open_nursery(async |n| {
            n.spawn(send_x_then_eof(s2));
            n.spawn(expect_x_then_eof(s1));
            Ok(())
        })
        .await
        .map(drop)
    })
    .await?;

    if let Some(clogged) = clogged_stream_maker.as_mut() {
        // send_eof while a send_all is blocked: Busy.
        with_pair(clogged, async |s1: &A, _s2: &B| {
            let res = open_nursery(async |n| {
                n.spawn(s1.send_all(b"x"));
                idle().await?;
                n.spawn(s1.send_eof());
                Ok(())
            })
            .await;
            expect_err(res, "send_eof concurrent with a blocked send_all", "Busy", is_busy)
        })
        .await?;

        // send_eof while wait_send_all_might_not_block is blocked: Busy.
        with_pair(clogged, async |s1: &A, _s2: &B| {
            let res = open_nursery(async |n| {
                n.spawn(s1.wait_send_all_might_not_block());
                idle().await?;
                n.spawn(s1.send_eof());
                Ok(())
            })
            .await;
            expect_err(res, "send_eof concurrent with a blocked wait_send_all_might_not_block", "Busy", is_busy)
        })
        .await?;
    }
    Ok(())
}

async fn send_x_then_eof<S: HalfCloseableStream>(s: &S) -> Result<()> {
    s.send_all(b"x").await?;
    cp("send_eof", s.send_eof()).await
}

async fn expect_x_then_eof<R: HalfCloseableStream>(r: &R) -> Result<()> {
    idle().await?;
    assert_eq!(do_receive_some(r, 10).await?, b"x", "the data before send_eof");
    assert!(do_receive_some(r, 10).await?.is_empty(), "expected EOF after send_eof");
    assert!(do_receive_some(r, 10).await?.is_empty(), "EOF after send_eof must be repeatable");
    Ok(())
}
