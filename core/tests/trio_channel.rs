//! Ports of Python Trio's `src/trio/_tests/test_channel.py` that
//! `core/tests/channel.rs` does not cover already, see
//! `docs/TRIO_CONFORMANCE.md` (section test_channel.py).

mod util;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{Error, Result, Sender, open_memory_channel, open_nursery};
use util::*;

async fn idle() -> Result<()> {
    wait_all_tasks_blocked(Duration::ZERO).await
}

fn try_send<T>(s: &Sender<T>, v: T) -> Result<()> {
    s.try_send(v).map_err(Error::from)
}

// trio: test_channel.py::test_channel (and the bad input: sending,
// receiving and cloning on closed ends is a clear error, no value lost)
#[test]
fn channel_basics_and_use_of_closed_ends() {
    mock_run(async {
        let (s, r) = open_memory_channel::<&str>(2);
        try_send(&s, "1")?;
        assert_checkpoints(s.send("2")).await?;
        assert!(matches!(s.try_send("3").map_err(|e| e.error), Err(Error::WouldBlock)));
        assert_eq!(assert_checkpoints(r.receive()).await?, "1");
        assert_eq!(r.try_receive()?, "2");
        assert!(matches!(r.try_receive(), Err(Error::WouldBlock)));

        try_send(&s, "last")?;
        s.close();
        assert!(matches!(s.send("too late").await, Err(Error::Closed)));
        let e = s.try_send("too late").unwrap_err();
        assert!(matches!(e.error, Error::Closed));
        assert_eq!(e.value, "too late", "the refused value comes back");
        assert!(matches!(s.try_clone(), Err(Error::Closed)));
        s.close(); // again: fine

        // The value sent before the close is still delivered, then the end.
        assert_eq!(r.try_receive()?, "last");
        assert!(matches!(r.receive().await, Err(Error::EndOfChannel)));
        r.close();
        assert!(matches!(r.receive().await, Err(Error::Closed)));
        assert!(matches!(r.try_receive(), Err(Error::Closed)));
        assert!(matches!(r.try_clone(), Err(Error::Closed)));
        r.close();
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_channel_multiple_producers
#[test]
fn many_producers_on_clones_then_the_end() {
    mock_run(async {
        let (s, r) = open_memory_channel::<u32>(0);
        let mut got = Vec::new();
        open_nursery(async |n| {
            for i in 0..10 {
                // Each producer owns a clone and closes it (by drop) when done.
                let s = s.try_clone()?;
                n.spawn(async move {
                    for j in 3 * i..3 * (i + 1) {
                        s.send(j).await?;
                    }
                    Ok(())
                });
            }
            s.close();
            while let Some(v) = r.recv().await? {
                got.push(v);
            }
            Ok(())
        })
        .await?;
        got.sort();
        assert_eq!(got, (0..30).collect::<Vec<_>>());
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_channel_multiple_consumers
#[test]
fn many_consumers_share_the_values() {
    let receivers = RefCell::new(BTreeSet::new());
    let received = RefCell::new(Vec::new());
    mock_run(async {
        let (s, r) = open_memory_channel::<u32>(1);
        open_nursery(async |n| {
            for i in 0..5 {
                let (r, receivers, received) = (&r, &receivers, &received);
                n.spawn(async move {
                    while let Some(v) = r.recv().await? {
                        receivers.borrow_mut().insert(i);
                        received.borrow_mut().push(v);
                    }
                    Ok(())
                });
            }
            idle().await?;
            for i in 0..10 {
                s.send(i).await?;
            }
            s.close();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    assert_eq!(receivers.take(), (0..5).collect());
    let mut got = received.take();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

async fn send_blocks_then<T: 'static>(s: &Sender<T>, v: T, expect: fn(&Error) -> bool) -> Result<()> {
    let r = s.send(v).await;
    assert!(r.as_ref().is_err_and(expect), "{r:?}");
    Ok(())
}

// trio: test_channel.py::test_close_basics and test_close_sync (Rust has
// only the sync `close()`, and drop)
#[test]
fn closing_wakes_the_blocked_and_stays_closed() {
    mock_run(async {
        // Closing the sender: its blocked send gets Closed...
        let (s, r) = open_memory_channel::<()>(0);
        open_nursery(async |n| {
            n.spawn(send_blocks_then(&s, (), |e| matches!(e, Error::Closed)));
            idle().await?;
            s.close();
            Ok(())
        })
        .await?;
        // ... persistently, and the receiver sees the end.
        assert!(matches!(s.try_send(()).map_err(|e| e.error), Err(Error::Closed)));
        assert!(matches!(s.send(()).await, Err(Error::Closed)));
        assert!(matches!(r.try_receive(), Err(Error::EndOfChannel)));
        assert!(matches!(r.receive().await, Err(Error::EndOfChannel)));

        // Closing the receiver: a blocked send gets Broken, persistently.
        let (s, r) = open_memory_channel::<()>(0);
        open_nursery(async |n| {
            n.spawn(send_blocks_then(&s, (), |e| matches!(e, Error::Broken)));
            idle().await?;
            r.close();
            Ok(())
        })
        .await?;
        assert!(matches!(s.try_send(()).map_err(|e| e.error), Err(Error::Broken)));
        assert!(matches!(s.send(()).await, Err(Error::Broken)));

        // Closing the receiver: its own blocked receive gets Closed.
        let (_s, r) = open_memory_channel::<()>(0);
        open_nursery(async |n| {
            n.spawn(async {
                assert!(matches!(r.receive().await, Err(Error::Closed)));
                Ok(())
            });
            idle().await?;
            r.close();
            Ok(())
        })
        .await?;
        assert!(matches!(r.try_receive(), Err(Error::Closed)));
        assert!(matches!(r.receive().await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_receive_channel_clone_and_close
#[test]
fn a_channel_breaks_only_when_its_last_receiver_closes() {
    mock_run(async {
        let (s, r) = open_memory_channel::<()>(10);
        let r2 = r.try_clone()?;
        let r3 = r.try_clone()?;
        try_send(&s, ())?;
        r.close();
        drop(r2);
        assert!(matches!(r.try_clone(), Err(Error::Closed)));
        // Still open through r3.
        try_send(&s, ())?;
        r3.close();
        assert!(matches!(s.try_send(()).map_err(|e| e.error), Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_close_multiple_send_handles
#[test]
fn closing_one_sender_wakes_only_its_own_blocked_send() {
    mock_run(async {
        let (s1, r) = open_memory_channel::<&str>(0);
        let s2 = s1.try_clone()?;
        open_nursery(async |n| {
            n.spawn(send_blocks_then(&s1, "nope", |e| matches!(e, Error::Closed)));
            n.spawn(s2.send("ok"));
            idle().await?;
            s1.close();
            assert_eq!(r.receive().await?, "ok");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_statistics
#[test]
fn channel_statistics_follow_handles_buffer_and_waiters() {
    mock_run(async {
        let (s, r) = open_memory_channel::<()>(2);
        let st = s.statistics();
        assert_eq!(st, r.statistics());
        assert_eq!((st.current_buffer_used, st.max_buffer_size), (0, 2));
        assert_eq!((st.open_send_channels, st.open_receive_channels), (1, 1));
        assert_eq!((st.tasks_waiting_send, st.tasks_waiting_receive), (0, 0));
        assert_eq!(st.peak_buffer_used, 0);
        try_send(&s, ())?;
        assert_eq!(s.statistics().current_buffer_used, 1);
        assert_eq!(s.statistics().peak_buffer_used, 1);
        let s2 = s.try_clone()?;
        assert_eq!(s.statistics().open_send_channels, 2);
        s.close();
        assert_eq!(s2.statistics().open_send_channels, 1);
        let r2 = r.try_clone()?;
        assert_eq!(s2.statistics().open_receive_channels, 2);
        r2.close();
        assert_eq!(s2.statistics().open_receive_channels, 1);

        open_nursery(async |n| {
            try_send(&s2, ())?;
            assert_eq!(s.statistics().current_buffer_used, 2);
            assert_eq!(s.statistics().peak_buffer_used, 2);
            n.spawn(s2.send(()));
            n.spawn(s2.send(()));
            idle().await?;
            assert_eq!(s.statistics().tasks_waiting_send, 2);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert_eq!(s.statistics().tasks_waiting_send, 0);
        for _ in 0..10 {
            if r.try_receive().is_err() {
                break;
            }
        }
        // Draining the buffer does not lower the high-water mark.
        assert_eq!(s.statistics().current_buffer_used, 0);
        assert_eq!(s.statistics().peak_buffer_used, 2);
        open_nursery(async |n| {
            n.spawn(async {
                r.receive().await?;
                Ok(())
            });
            idle().await?;
            assert_eq!(s.statistics().tasks_waiting_receive, 1);
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        assert_eq!(s.statistics().tasks_waiting_receive, 0);
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_statistics (`peak_buffer_used` counts what
// the buffer held: not values handed straight to a waiting receiver, and
// not a blocked sender's value passing through a full buffer; it rises
// only past its old mark)
#[test]
fn the_buffer_high_water_mark_counts_only_buffered_values() {
    mock_run(async {
        let (s, r) = open_memory_channel::<u32>(3);
        open_nursery(async |n| {
            n.spawn(async {
                assert_eq!(r.receive().await?, 1);
                Ok(())
            });
            idle().await?;
            try_send(&s, 1)?;
            Ok(())
        })
        .await?;
        assert_eq!(s.statistics().peak_buffer_used, 0, "the value went straight to the receiver");

        try_send(&s, 2)?;
        try_send(&s, 3)?;
        assert_eq!((r.try_receive()?, r.try_receive()?), (2, 3));
        try_send(&s, 4)?;
        assert_eq!(r.statistics().peak_buffer_used, 2, "one value after a drain does not lower or raise it");
        try_send(&s, 5)?;
        try_send(&s, 6)?;
        assert_eq!(r.statistics().peak_buffer_used, 3);

        open_nursery(async |n| {
            n.spawn(s.send(7));
            idle().await?;
            assert_eq!(s.statistics().tasks_waiting_send, 1);
            // The blocked sender's value joins the full buffer as the
            // front value leaves: never more than 3 held at once.
            assert_eq!(r.try_receive()?, 4);
            Ok(())
        })
        .await?;
        let st = s.statistics();
        assert_eq!((st.current_buffer_used, st.peak_buffer_used), (3, 3));

        let (s0, r0) = open_memory_channel::<u32>(0);
        open_nursery(async |n| {
            n.spawn(s0.send(8));
            idle().await?;
            assert_eq!(r0.try_receive()?, 8);
            Ok(())
        })
        .await?;
        assert_eq!(s0.statistics().peak_buffer_used, 0, "an unbuffered channel never buffers");
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_channel_fairness
#[test]
fn a_waiting_task_owns_the_value_or_the_space() {
    mock_run(async {
        let (s, r) = open_memory_channel::<u32>(1);
        try_send(&s, 1)?;
        assert_eq!(r.try_receive()?, 1);
        try_send(&s, 2)?;
        assert_eq!(r.try_receive()?, 2);

        // A waiting receiver owns what is sent, though we run first.
        let result = Cell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                result.set(Some(r.receive().await?));
                Ok(())
            });
            idle().await?;
            try_send(&s, 2)?;
            assert!(matches!(r.try_receive(), Err(Error::WouldBlock)));
            Ok(())
        })
        .await?;
        assert_eq!(result.get(), Some(2));

        // A waiting sender owns the space we free.
        let (s, r) = open_memory_channel::<u32>(1);
        try_send(&s, 1)?;
        assert!(matches!(s.try_send(0).map_err(|e| e.error), Err(Error::WouldBlock)));
        open_nursery(async |n| {
            n.spawn(s.send(2));
            idle().await?;
            assert_eq!(r.try_receive()?, 1);
            assert!(matches!(s.try_send(3).map_err(|e| e.error), Err(Error::WouldBlock)));
            assert_eq!(r.receive().await?, 2);
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// trio: test_channel.py::test_unbuffered
#[test]
fn an_unbuffered_channel_hands_over_between_checkpoints() {
    mock_run(async {
        let (s, r) = open_memory_channel::<u32>(0);
        assert!(matches!(r.try_receive(), Err(Error::WouldBlock)));
        assert!(matches!(s.try_send(1).map_err(|e| e.error), Err(Error::WouldBlock)));
        open_nursery(async |n| {
            n.spawn(assert_checkpoints(s.send(1)));
            assert_eq!(assert_checkpoints(r.receive()).await?, 1);
            Ok(())
        })
        .await?;
        assert!(matches!(r.try_receive(), Err(Error::WouldBlock)));
        Ok(())
    })
    .unwrap();
}
