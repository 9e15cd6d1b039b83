//! In-memory streams and the generic stream checks (Trio's
//! `test_testing.py`, memory-stream part).

mod util;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use trio::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream};
use trio::testing::{
    AsyncHook, MemoryReceiveStream, MemorySendStream, NoStreamMaker, SyncHook, assert_checkpoints,
    check_half_closeable_stream, check_one_way_stream, check_two_way_stream, lockstep_stream_one_way_pair,
    lockstep_stream_pair, memory_stream_one_way_pair, memory_stream_pair, memory_stream_pump, wait_all_tasks_blocked,
};
use trio::{CancelScope, Error, Result, current_time, open_nursery, sleep};
use util::*;

fn idle() -> impl std::future::Future<Output = Result<()>> {
    wait_all_tasks_blocked(Duration::ZERO)
}

async fn recv<R: ReceiveStream>(r: &R, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; max];
    let n = r.receive_some(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

fn is_invalid_input(r: &Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput)
}

// ---- The generic checks ----

#[test]
fn generic_checks_pass_on_memory_one_way_pairs() {
    mock_run(check_one_way_stream(async || Ok(memory_stream_one_way_pair()), None::<NoStreamMaker<_, _>>)).unwrap();
}

#[test]
fn generic_two_way_checks_pass_on_memory_stream_pairs() {
    mock_run(check_two_way_stream(async || Ok(memory_stream_pair()), None::<NoStreamMaker<_, _>>)).unwrap();
}

#[test]
fn generic_half_close_checks_pass_on_memory_stream_pairs() {
    mock_run(check_half_closeable_stream(async || Ok(memory_stream_pair()), None::<NoStreamMaker<_, _>>)).unwrap();
}

#[test]
fn generic_checks_pass_on_lockstep_one_way_pairs_also_clogged() {
    let maker = async || Ok(lockstep_stream_one_way_pair());
    mock_run(check_one_way_stream(maker, Some(maker))).unwrap();
}

#[test]
fn generic_two_way_checks_pass_on_lockstep_pairs_also_clogged() {
    let maker = async || Ok(lockstep_stream_pair());
    mock_run(check_two_way_stream(maker, Some(maker))).unwrap();
}

#[test]
fn generic_half_close_checks_pass_on_lockstep_pairs() {
    // StapledStream's send_eof closes the send half, which cannot report
    // Busy, so the clogged half-close checks do not apply (as in Trio).
    mock_run(check_half_closeable_stream(async || Ok(lockstep_stream_pair()), None::<NoStreamMaker<_, _>>)).unwrap();
}

// Not on WASI: panics abort there (wasm32-wasip1 has no unwinding), so a
// caught panic cannot be observed.
#[cfg(not(target_os = "wasi"))]
#[test]
fn generic_checks_catch_a_stream_that_corrupts_data() {
    // A receive hook that injects a byte before every read: the checks must
    // notice that the received data is not what was sent.
    let maker = async || {
        let (s, r) = memory_stream_one_way_pair();
        r.set_receive_some_hook(Some(AsyncHook::new(async |r: &MemoryReceiveStream| r.put_data(b"!"))));
        Ok((s, r))
    };
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mock_run(check_one_way_stream(maker, None::<NoStreamMaker<_, _>>))
    }));
    assert!(out.is_err(), "the check accepted a stream that corrupts data");
}

// ---- MemorySendStream ----

#[test]
fn send_stream_buffers_until_get_data() {
    mock_run(async {
        let s = MemorySendStream::new();
        assert!(matches!(s.get_data_nowait(None), Err(Error::WouldBlock)));
        assert_checkpoints(s.send_all(b"abc")).await?;
        assert_checkpoints(s.send_all(b"")).await?;
        s.send_all(b"def").await?;
        assert_eq!(s.buffered_len(), 6);
        assert_eq!(s.get_data_nowait(Some(2))?, b"ab");
        assert_eq!(assert_checkpoints(s.get_data(None)).await?, b"cdef");
        assert!(matches!(s.get_data_nowait(None), Err(Error::WouldBlock)));
        assert!(is_invalid_input(&s.get_data_nowait(Some(0))));
        assert!(is_invalid_input(&s.get_data(Some(0)).await));
        // After close: what is left, then end of data (empty), for good.
        s.send_all(b"g").await?;
        s.aclose().await?;
        assert_eq!(s.get_data(None).await?, b"g");
        assert!(s.get_data(None).await?.is_empty());
        assert!(s.get_data_nowait(None)?.is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn get_data_waits_for_data_and_is_busy_for_a_second_getter() {
    mock_run(async {
        let s = MemorySendStream::new();
        let got = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                let data = s.get_data(None).await?;
                got.borrow_mut().extend(data);
                Ok(())
            });
            idle().await?;
            assert!(matches!(s.get_data(None).await, Err(Error::Busy)));
            assert!(matches!(s.get_data_nowait(None), Err(Error::Busy)));
            s.send_all(b"hi").await?;
            Ok(())
        })
        .await?;
        assert_eq!(*got.borrow(), b"hi");
        // A cancelled get_data takes nothing.
        let r = trio::move_on_after(secs(1), s.get_data(None)).await?;
        assert!(r.is_none());
        s.send_all(b"x").await?;
        assert_eq!(s.get_data_nowait(None)?, b"x");
        Ok(())
    })
    .unwrap();
}

#[test]
fn send_stream_hooks_are_called() {
    mock_run(async {
        let s = MemorySendStream::new();
        let log = Rc::new(Log::default());
        let l = log.clone();
        s.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
            l.push(format!("send {}", s.buffered_len()));
            trio::checkpoint().await
        })));
        let l = log.clone();
        s.set_wait_send_all_might_not_block_hook(Some(AsyncHook::new(async move |_: &MemorySendStream| {
            l.push("wait");
            Ok(())
        })));
        let l = log.clone();
        s.set_close_hook(Some(SyncHook::new(move |_: &MemorySendStream| l.push("close"))));
        assert!(s.send_all_hook().is_some() && s.close_hook().is_some());
        s.send_all(b"abc").await?;
        s.wait_send_all_might_not_block().await?;
        s.aclose().await?;
        assert_eq!(log.take(), ["send 3", "wait", "close"]);
        // Hooks can be removed and swapped; set returns the old one.
        let old = s.set_close_hook(None);
        assert!(old.is_some());
        s.close();
        assert!(log.take().is_empty());
        assert!(format!("{s:?}").contains("MemorySendStream"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_failing_hook_fails_the_operation() {
    mock_run(async {
        let (s, r) = memory_stream_one_way_pair();
        s.set_send_all_hook(Some(AsyncHook::new(async |_: &MemorySendStream| Err(boom(1)))));
        let e = s.send_all(b"x").await.unwrap_err();
        assert_eq!(booms(&e), [1]);
        // The data was buffered before the hook ran; nothing was pumped.
        assert_eq!(s.buffered_len(), 1);
        assert_eq!(r.buffered_len(), 0);
        r.set_receive_some_hook(Some(AsyncHook::new(async |_: &MemoryReceiveStream| Err(boom(2)))));
        assert_eq!(booms(&recv(&r, 10).await.unwrap_err()), [2]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn concurrent_sends_are_busy_and_sending_is_busy_for_wait() {
    mock_run(async {
        let s = MemorySendStream::new();
        let gate = trio::sync::Event::new();
        let gate2 = Rc::new(trio::sync::Event::new());
        let g = gate2.clone();
        // A hook that blocks keeps send_all running.
        s.set_send_all_hook(Some(AsyncHook::new(async move |_: &MemorySendStream| g.wait().await)));
        open_nursery(async |n| {
            n.spawn(async { s.send_all(b"1").await });
            idle().await?;
            assert!(matches!(assert_checkpoints(s.send_all(b"2")).await, Err(Error::Busy)));
            assert!(matches!(s.wait_send_all_might_not_block().await, Err(Error::Busy)));
            gate.set();
            gate2.set();
            Ok(())
        })
        .await?;
        gate.wait().await?;
        assert_eq!(s.get_data_nowait(None)?, b"1");
        Ok(())
    })
    .unwrap();
}

#[test]
fn send_stream_after_close_is_closed() {
    mock_run(async {
        let s = MemorySendStream::new();
        s.aclose().await?;
        s.aclose().await?;
        assert!(matches!(assert_checkpoints(s.send_all(b"x")).await, Err(Error::Closed)));
        assert!(matches!(s.send_all(b"").await, Err(Error::Closed)));
        assert!(matches!(assert_checkpoints(s.wait_send_all_might_not_block()).await, Err(Error::Closed)));
        // A cancelled aclose closes too.
        let s2 = MemorySendStream::new();
        let scope = CancelScope::new();
        scope.cancel();
        assert!(scope.run(s2.aclose()).await?.is_none());
        assert!(matches!(s2.send_all(b"x").await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

// ---- MemoryReceiveStream ----

#[test]
fn receive_stream_put_data_then_eof() {
    mock_run(async {
        let r = MemoryReceiveStream::new();
        r.put_data(b"hello")?;
        assert_eq!(r.buffered_len(), 5);
        assert_eq!(assert_checkpoints(recv(&r, 2)).await?, b"he");
        assert_eq!(recv(&r, 100).await?, b"llo");
        r.put_eof();
        r.put_eof();
        assert!(matches!(r.put_data(b"more"), Err(Error::Closed)));
        for _ in 0..3 {
            assert_eq!(assert_checkpoints(r.receive_some(&mut [0; 4])).await?, 0);
        }
        assert!(is_invalid_input(&r.receive_some(&mut []).await));
        Ok(())
    })
    .unwrap();
}

#[test]
fn receive_waits_for_put_data_and_a_second_receiver_is_busy() {
    mock_run(async {
        let r = MemoryReceiveStream::new();
        let got = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                let data = recv(&r, 10).await?;
                got.borrow_mut().extend(data);
                Ok(())
            });
            idle().await?;
            assert!(matches!(assert_checkpoints(recv(&r, 10)).await, Err(Error::Busy)));
            r.put_data(b"abc")?;
            Ok(())
        })
        .await?;
        assert_eq!(*got.borrow(), b"abc");
        Ok(())
    })
    .unwrap();
}

#[test]
fn receive_hook_runs_before_reading_and_can_feed_data() {
    mock_run(async {
        let r = MemoryReceiveStream::new();
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        r.set_receive_some_hook(Some(AsyncHook::new(async move |r: &MemoryReceiveStream| {
            c.set(c.get() + 1);
            r.put_data(format!("#{}", c.get()).as_bytes())
        })));
        assert_eq!(recv(&r, 10).await?, b"#1");
        assert_eq!(recv(&r, 10).await?, b"#2");
        let closed = Rc::new(Cell::new(false));
        let cl = closed.clone();
        r.set_close_hook(Some(SyncHook::new(move |_: &MemoryReceiveStream| cl.set(true))));
        r.aclose().await?;
        assert!(closed.get());
        assert_eq!(calls.get(), 2);
        assert!(format!("{r:?}").contains("closed: true"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn closing_the_receive_stream_wakes_a_blocked_receiver_with_closed() {
    mock_run(async {
        let r = MemoryReceiveStream::new();
        r.put_data(b"discarded")?;
        r.close();
        assert!(matches!(recv(&r, 10).await, Err(Error::Closed)));
        assert!(matches!(r.put_data(b"x"), Err(Error::Closed)));
        let r = MemoryReceiveStream::new();
        open_nursery(async |n| {
            n.spawn(async {
                assert!(matches!(recv(&r, 10).await, Err(Error::Closed)));
                Ok(())
            });
            idle().await?;
            r.aclose().await
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// ---- Pump and pairs ----

#[test]
fn pump_moves_data_then_eof_and_reports_broken() {
    mock_run(async {
        let (s, r) = (MemorySendStream::new(), MemoryReceiveStream::new());
        assert!(!memory_stream_pump(&s, &r, None)?);
        s.send_all(b"abcdef").await?;
        assert!(memory_stream_pump(&s, &r, Some(4))?);
        assert_eq!(r.buffered_len(), 4);
        assert!(memory_stream_pump(&s, &r, None)?);
        assert!(!memory_stream_pump(&s, &r, None)?);
        assert_eq!(recv(&r, 100).await?, b"abcdef");
        s.close();
        assert!(memory_stream_pump(&s, &r, None)?, "a closed sender pumps an EOF");
        assert_eq!(recv(&r, 100).await?, b"");
        // Into a closed receiver: Broken.
        let (s, r) = (MemorySendStream::new(), MemoryReceiveStream::new());
        r.close();
        s.send_all(b"x").await?;
        assert!(matches!(memory_stream_pump(&s, &r, None), Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn one_way_pair_flows_and_breaks_when_the_receiver_closes() {
    mock_run(async {
        let (s, r) = memory_stream_one_way_pair();
        s.send_all(b"abc").await?;
        assert_eq!(r.buffered_len(), 3, "the send hook pumps at once");
        assert_eq!(recv(&r, 10).await?, b"abc");
        r.aclose().await?;
        assert!(matches!(assert_checkpoints(s.send_all(b"x")).await, Err(Error::Broken)));
        assert!(matches!(s.send_all(b"x").await, Err(Error::Broken)), "stays broken");
        // Empty sends carry no data, so they do not notice.
        s.send_all(b"").await?;
        // Closing the sender is still fine.
        s.aclose().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_stalled_one_way_pair_resumes_when_the_hook_is_restored() {
    mock_run(async {
        let (s, r) = memory_stream_one_way_pair();
        let pump = s.set_send_all_hook(None);
        assert!(pump.is_some());
        s.send_all(b"stuck").await?;
        assert_eq!(r.buffered_len(), 0);
        let got = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                let data = recv(&r, 100).await?;
                got.borrow_mut().extend(data);
                Ok(())
            });
            idle().await?;
            assert!(got.borrow().is_empty(), "the receiver waits while the pipe is stalled");
            s.set_send_all_hook(pump);
            s.send_all(b"!").await?;
            Ok(())
        })
        .await?;
        assert_eq!(*got.borrow(), b"stuck!");
        // Closing with data still stuck in the send buffer delivers it and
        // then the EOF.
        s.set_send_all_hook(None);
        s.send_all(b"tail").await?;
        s.aclose().await?;
        assert_eq!(recv(&r, 100).await?, b"tail");
        assert_eq!(recv(&r, 100).await?, b"");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_trickling_pair_delivers_one_byte_per_second() {
    mock_run(async {
        let (left, right) = memory_stream_pair();
        let to = right.receive_stream.clone();
        left.send_stream.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
            // Bounded: each round moves one byte out of a finite buffer.
            while memory_stream_pump(s, &to, Some(1))? {
                sleep(secs(1)).await?;
            }
            Ok(())
        })));
        let start = current_time()?;
        let got = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                left.send_all(b"12345").await?;
                left.send_eof().await
            });
            n.spawn(async {
                for _ in 0..10 {
                    let chunk = recv(&right, 100).await?;
                    if chunk.is_empty() {
                        break;
                    }
                    assert_eq!(chunk.len(), 1);
                    got.borrow_mut().extend(chunk);
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        assert_eq!(*got.borrow(), b"12345");
        assert_eq!(current_time()? - start, secs(5));
        // The other direction is untouched.
        right.send_all(b"fast").await?;
        assert_eq!(recv(&left, 100).await?, b"fast");
        Ok(())
    })
    .unwrap();
}

#[test]
fn memory_pair_half_close_keeps_the_other_direction() {
    mock_run(async {
        let (a, b) = memory_stream_pair();
        a.send_all(b"ping").await?;
        assert_checkpoints(a.send_eof()).await?;
        assert_eq!(recv(&b, 100).await?, b"ping");
        assert_eq!(recv(&b, 100).await?, b"");
        assert!(matches!(a.send_all(b"x").await, Err(Error::Closed)));
        b.send_all(b"pong").await?;
        assert_eq!(recv(&a, 100).await?, b"pong");
        b.aclose().await?;
        assert_eq!(recv(&a, 100).await?, b"");
        assert!(matches!(recv(&b, 100).await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

// ---- Lockstep ----

#[test]
fn lockstep_send_all_returns_only_when_everything_was_received() {
    let log = Log::default();
    mock_run(async {
        let (s, r) = lockstep_stream_one_way_pair();
        open_nursery(async |n| {
            n.spawn(async {
                s.send_all(b"abcdef").await?;
                log.push("sent");
                Ok(())
            });
            idle().await?;
            log.push("blocked");
            assert_eq!(recv(&r, 4).await?, b"abcd");
            idle().await?;
            log.push("took 4");
            assert_eq!(recv(&r, 4).await?, b"ef");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["blocked", "took 4", "sent"]);
}

#[test]
fn lockstep_wait_send_all_might_not_block_waits_for_a_receiver() {
    let log = Log::default();
    mock_run(async {
        let (s, r) = lockstep_stream_one_way_pair();
        open_nursery(async |n| {
            n.spawn(async {
                assert_checkpoints(s.wait_send_all_might_not_block()).await?;
                log.push("writable");
                s.send_all(b"x").await
            });
            idle().await?;
            log.push("receiving");
            assert_eq!(recv(&r, 4).await?, b"x");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(log.take(), ["receiving", "writable"]);
}

#[test]
fn lockstep_cancelled_send_is_clean_before_any_read_and_breaks_after_one() {
    mock_run(async {
        let (s, r) = lockstep_stream_one_way_pair();
        // Nothing taken: withdrawn, stream still usable.
        assert!(trio::move_on_after(secs(1), s.send_all(b"lost")).await?.is_none());
        open_nursery(async |n| {
            n.spawn(async { s.send_all(b"ok").await });
            assert_eq!(recv(&r, 10).await?, b"ok");
            Ok(())
        })
        .await?;
        // Part taken, then cancelled: the stream is broken.
        let scope = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                scope.run(s.send_all(b"abc")).await?;
                Ok(())
            });
            idle().await?;
            assert_eq!(recv(&r, 1).await?, b"a");
            idle().await?;
            scope.cancel();
            Ok(())
        })
        .await?;
        assert!(scope.cancelled_caught());
        assert!(matches!(s.send_all(b"x").await, Err(Error::Broken)));
        assert!(format!("{s:?} {r:?}").contains("Lockstep"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn lockstep_close_semantics() {
    mock_run(async {
        let (s, r) = lockstep_stream_one_way_pair();
        s.close();
        assert_eq!(assert_checkpoints(r.receive_some(&mut [0; 4])).await?, 0);
        assert_eq!(r.receive_some(&mut [0; 4]).await?, 0);
        assert!(matches!(assert_checkpoints(s.send_all(b"x")).await, Err(Error::Closed)));
        r.close();
        assert!(matches!(recv(&r, 4).await, Err(Error::Closed)));
        let (s, r) = lockstep_stream_one_way_pair();
        r.aclose().await?;
        assert!(matches!(assert_checkpoints(s.send_all(b"x")).await, Err(Error::Broken)));
        // The receiver is gone, so a send would not block (it fails).
        assert_checkpoints(s.wait_send_all_might_not_block()).await?;
        // Two-way lockstep pairs close per direction.
        let (a, b) = lockstep_stream_pair();
        a.send_eof().await?;
        assert_eq!(recv(&b, 4).await?, b"");
        open_nursery(async |n| {
            n.spawn(async { b.send_all(b"back").await });
            assert_eq!(recv(&a, 4).await?, b"back");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}
