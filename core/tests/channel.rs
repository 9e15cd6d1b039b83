//! Memory channels (Trio's `test_channel.py`, without `as_safe_channel`).

mod util;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures_lite::StreamExt;
use trio::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trio::{
    CancelScope, Error, Result, current_time, open_memory_channel, open_nursery, open_unbounded_memory_channel, sleep,
};
use util::*;

fn idle() -> impl std::future::Future<Output = Result<()>> {
    wait_all_tasks_blocked(Duration::ZERO)
}

#[test]
fn buffered_channel_basics() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(2);
        tx.send(1).await?;
        tx.try_send(2).map_err(Error::from)?;
        let e = tx.try_send(3).unwrap_err();
        assert!(matches!(e.error, Error::WouldBlock));
        assert_eq!(e.value, 3, "the value comes back");
        let st = tx.statistics();
        assert_eq!((st.current_buffer_used, st.max_buffer_size), (2, 2));
        assert_eq!(rx.receive().await?, 1);
        assert_eq!(rx.try_receive()?, 2);
        assert!(matches!(rx.try_receive(), Err(Error::WouldBlock)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn values_come_out_in_order_across_blocking() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(1);
        let got = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                for i in 0..20 {
                    tx.send(i).await?;
                }
                Ok(())
            });
            n.spawn(async {
                for _ in 0..20 {
                    let v = rx.receive().await?;
                    got.borrow_mut().push(v);
                }
                Ok(())
            });
            Ok(())
        })
        .await?;
        assert_eq!(*got.borrow(), (0..20).collect::<Vec<_>>());
        Ok(())
    })
    .unwrap();
}

#[test]
fn zero_capacity_is_a_rendezvous() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<&str>(0);
        assert!(matches!(tx.try_send("x").map_err(|e| e.error), Err(Error::WouldBlock)));
        let sent_at = Cell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                tx.send("hello").await?;
                sent_at.set(Some(current_time()?));
                Ok(())
            });
            sleep(secs(5)).await?;
            assert!(sent_at.get().is_none(), "send waits for a receiver");
            assert_eq!(tx.statistics().tasks_waiting_send, 1);
            assert_eq!(rx.receive().await?, "hello");
            Ok(())
        })
        .await?;
        assert_eq!(sent_at.get(), Some(at(5)));
        // A waiting receiver takes a send directly.
        open_nursery(async |n| {
            n.spawn(async {
                assert_eq!(rx.receive().await?, "direct");
                Ok(())
            });
            idle().await?;
            tx.try_send("direct").map_err(Error::from)?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn unbounded_never_blocks_senders() {
    mock_run(async {
        let (tx, rx) = open_unbounded_memory_channel::<usize>();
        for i in 0..10_000 {
            tx.try_send(i).map_err(Error::from)?;
        }
        assert_eq!(tx.statistics().current_buffer_used, 10_000);
        assert_eq!(tx.statistics().max_buffer_size, usize::MAX);
        for i in 0..10_000 {
            assert_eq!(rx.try_receive()?, i);
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn end_of_channel_after_the_buffer_drains() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(5);
        let tx2 = tx.clone();
        tx.send(1).await?;
        tx2.send(2).await?;
        drop(tx);
        assert_eq!(rx.statistics().open_send_channels, 1);
        tx2.close();
        tx2.close(); // idempotent
        assert!(tx2.is_closed());
        assert_eq!(rx.receive().await?, 1);
        assert_eq!(rx.receive().await?, 2);
        assert!(matches!(rx.receive().await, Err(Error::EndOfChannel)));
        assert!(matches!(rx.try_receive(), Err(Error::EndOfChannel)));
        assert_eq!(rx.recv().await?, None);
        Ok(())
    })
    .unwrap();
}

#[test]
fn closing_the_last_sender_wakes_blocked_receivers() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(0);
        let rx2 = rx.clone();
        open_nursery(async |n| {
            for r in [&rx, &rx2] {
                n.spawn(async move {
                    assert!(matches!(r.receive().await, Err(Error::EndOfChannel)));
                    Ok(())
                });
            }
            idle().await?;
            assert_eq!(rx.statistics().tasks_waiting_receive, 2);
            drop(tx);
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn closing_every_receiver_breaks_senders() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(1);
        tx.send(1).await?;
        open_nursery(async |n| {
            n.spawn(async {
                assert!(matches!(tx.send(2).await, Err(Error::Broken)));
                Ok(())
            });
            idle().await?;
            drop(rx);
            Ok(())
        })
        .await?;
        assert!(matches!(tx.send(3).await, Err(Error::Broken)));
        assert!(matches!(tx.try_send(4).map_err(|e| e.error), Err(Error::Broken)));
        assert_eq!(tx.statistics().current_buffer_used, 0, "the buffer was dropped");
        Ok(())
    })
    .unwrap();
}

#[test]
fn use_after_close_is_closed() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(1);
        let tx2 = tx.clone();
        let rx2 = rx.clone();
        tx.close();
        assert!(matches!(tx.send(1).await, Err(Error::Closed)));
        assert!(matches!(tx.try_send(1).map_err(|e| e.error), Err(Error::Closed)));
        tx2.send(5).await?; // the other clone is still open
        rx.close();
        assert!(matches!(rx.receive().await, Err(Error::Closed)));
        assert!(matches!(rx.try_receive(), Err(Error::Closed)));
        assert_eq!(rx2.receive().await?, 5);
        Ok(())
    })
    .unwrap();
}

#[test]
fn closing_a_handle_wakes_only_its_own_waiters_with_closed() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(0);
        let rx2 = rx.clone();
        let outcomes = RefCell::new(Vec::new());
        open_nursery(async |n| {
            n.spawn(async {
                let r = rx.receive().await;
                outcomes
                    .borrow_mut()
                    .push(format!("rx: {}", r.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string())));
                Ok(())
            });
            n.spawn(async {
                let r = rx2.receive().await;
                outcomes
                    .borrow_mut()
                    .push(format!("rx2: {}", r.map(|v| v.to_string()).unwrap_or_else(|e| e.to_string())));
                Ok(())
            });
            idle().await?;
            rx.close();
            idle().await?;
            tx.send(9).await?;
            Ok(())
        })
        .await?;
        assert_eq!(*outcomes.borrow(), ["rx: resource closed", "rx2: 9"]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_cancelled_send_did_not_send() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(0);
        let r = trio::move_on_after(secs(1), tx.send(1)).await?;
        assert!(r.is_none());
        assert_eq!(tx.statistics().tasks_waiting_send, 0);
        assert!(matches!(rx.try_receive(), Err(Error::WouldBlock)), "nothing arrived");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_send_dropped_while_parked_leaves_nothing_behind() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<std::rc::Rc<u8>>(0);
        let value = std::rc::Rc::new(5);
        let mut send = Box::pin(tx.send(value.clone()));
        poll_once_pending(send.as_mut(), "no receiver: parks").await;
        assert_eq!(tx.statistics().tasks_waiting_send, 1);
        drop(send);
        assert_eq!(tx.statistics().tasks_waiting_send, 0, "left the queue");
        assert_eq!(std::rc::Rc::strong_count(&value), 1, "the value was dropped with the future");
        assert!(matches!(rx.try_receive(), Err(Error::WouldBlock)), "and never delivered");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_cancelled_receive_did_not_receive() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u8>(1);
        let r = trio::move_on_after(secs(1), rx.receive()).await?;
        assert!(r.is_none());
        tx.send(7).await?;
        assert_eq!(rx.receive().await?, 7, "the next value is still there");
        Ok(())
    })
    .unwrap();
}

#[test]
fn waiting_receivers_are_served_in_fifo_order() {
    let log = Log::default();
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(0);
        open_nursery(async |n| {
            for i in 0..4 {
                let (rx, log) = (&rx, &log);
                n.spawn(async move {
                    sleep(Duration::from_millis(i)).await?;
                    let v = rx.receive().await?;
                    log.push(format!("r{i}={v}"));
                    Ok(())
                });
            }
            sleep(secs(1)).await?;
            for v in 10..14 {
                tx.send(v).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
    let mut got = log.take();
    got.sort();
    assert_eq!(got, ["r0=10", "r1=11", "r2=12", "r3=13"]);
}

#[test]
fn waiting_senders_are_served_in_fifo_order() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(0);
        open_nursery(async |n| {
            for i in 0..4 {
                let tx = &tx;
                n.spawn(async move {
                    sleep(Duration::from_millis(i as u64)).await?;
                    tx.send(i).await
                });
            }
            sleep(secs(1)).await?;
            for want in 0..4 {
                assert_eq!(rx.receive().await?, want);
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_receive_dropped_after_the_hand_off_puts_the_value_back() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(0);
        let handed = trio::sync::Event::new();
        open_nursery(async |n| {
            n.spawn(async {
                let mut recv = Box::pin(rx.receive());
                poll_once_pending(recv.as_mut(), "pending after its first poll").await;
                handed.wait().await?;
                drop(recv);
                Ok(())
            });
            idle().await?;
            tx.try_send(99).map_err(Error::from)?;
            handed.set();
            Ok(())
        })
        .await?;
        assert_eq!(rx.try_receive()?, 99, "not lost");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_receive_dropped_after_it_took_a_buffered_value_puts_it_back() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(2);
        tx.send(1).await?;
        tx.send(2).await?;
        // Takes 1 on its first poll (and yields, as every receive does),
        // then is dropped before it returns it.
        let mut receive = Box::pin(rx.receive());
        poll_once_pending(receive.as_mut(), "pending after its first poll").await;
        assert_eq!(rx.statistics().current_buffer_used, 1, "taken on the first poll");
        drop(receive);
        assert_eq!(rx.receive().await?, 1, "put back in front");
        assert_eq!(rx.receive().await?, 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn no_value_is_lost_when_a_receiver_is_cancelled_as_it_is_woken() {
    for cancel_first in [true, false] {
        mock_run(async {
            let (tx, rx) = open_memory_channel::<u32>(0);
            let s = CancelScope::new();
            let got = Cell::new(None);
            open_nursery(async |n| {
                n.spawn(async {
                    let r = s.run(rx.receive()).await?;
                    got.set(r);
                    Ok(())
                });
                idle().await?;
                if cancel_first {
                    // As in Trio, the cancelled receiver left the queue
                    // inside cancel(): nobody is waiting, the rendezvous
                    // send would block, and the value comes back.
                    s.cancel();
                    assert_eq!(rx.statistics().tasks_waiting_receive, 0);
                    match tx.try_send(5) {
                        Err(e) if matches!(e.error, Error::WouldBlock) && e.value == 5 => {}
                        other => panic!("expected WouldBlock with the value back, got {other:?}"),
                    }
                } else {
                    tx.try_send(5).map_err(Error::from)?;
                    s.cancel();
                }
                Ok(())
            })
            .await?;
            // The receiver got it iff the send came first, and nothing is
            // left behind in the channel.
            let left = rx.try_receive().ok();
            assert_eq!(got.get(), (!cancel_first).then_some(5), "cancel_first={cancel_first}");
            assert_eq!(left, None, "received once");
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn receivers_are_streams_and_recv_loops() {
    mock_run(async {
        let (tx, mut rx) = open_memory_channel::<u32>(1);
        let rx2 = rx.clone();
        let mut total = 0;
        open_nursery(async |n| {
            n.spawn(async move {
                for i in 1..=5 {
                    tx.send(i).await?;
                }
                Ok(())
            });
            while let Some(v) = rx.next().await {
                total += v?;
            }
            Ok(())
        })
        .await?;
        assert_eq!(total, 15);
        assert_eq!(rx2.recv().await?, None);
        let (tx, rx) = open_memory_channel::<u32>(3);
        for i in 0..3 {
            tx.send(i).await?;
        }
        drop(tx);
        let mut seen = Vec::new();
        while let Some(v) = rx.recv().await? {
            seen.push(v);
        }
        assert_eq!(seen, [0, 1, 2]);
        Ok(())
    })
    .unwrap();
}

#[test]
fn channel_operations_are_checkpoints() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(1);
        assert_checkpoints(tx.send(1)).await?;
        assert_checkpoints(rx.receive()).await?;
        let s = CancelScope::new();
        s.cancel();
        let r = s.run(tx.send(2)).await?;
        assert!(r.is_none(), "send checks cancellation even when it could complete");
        assert_eq!(tx.statistics().current_buffer_used, 0, "and then did not send");
        Ok(())
    })
    .unwrap();
}

#[test]
fn statistics_count_handles_and_waiters() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(0);
        let (tx2, rx2) = (tx.clone(), rx.clone());
        let st = tx.statistics();
        assert_eq!((st.open_send_channels, st.open_receive_channels), (2, 2));
        drop((tx2, rx2));
        let st = rx.statistics();
        assert_eq!((st.open_send_channels, st.open_receive_channels), (1, 1));
        assert!(format!("{tx:?}").contains("Sender"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn channels_carry_non_copy_values_and_drop_them_on_close() {
    let drops = std::rc::Rc::new(Cell::new(0));
    struct D(std::rc::Rc<Cell<u32>>);
    impl Drop for D {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    mock_run(async {
        let (tx, rx) = open_memory_channel::<D>(4);
        for _ in 0..3 {
            tx.send(D(drops.clone())).await?;
        }
        let one = rx.receive().await?;
        drop(one);
        assert_eq!(drops.get(), 1);
        drop(rx);
        assert_eq!(drops.get(), 3, "closing the last receiver drops the buffer");
        Ok(())
    })
    .unwrap();
}

/// As Trio's: a closed channel end cannot be cloned back into an open one.
/// `try_clone` says `Closed`; `clone` gives a closed handle, so the channel
/// stays ended for its receivers (and broken for its senders).
#[test]
fn clones_of_closed_ends_are_closed() {
    mock_run(async {
        let (tx, rx) = open_memory_channel::<u32>(1);
        tx.close();
        assert!(matches!(tx.try_clone(), Err(Error::Closed)));
        let again = tx.clone();
        assert!(again.is_closed());
        assert!(matches!(again.send(1).await, Err(Error::Closed)));
        assert!(matches!(rx.try_receive(), Err(Error::EndOfChannel)));
        assert!(matches!(rx.receive().await, Err(Error::EndOfChannel)));
        drop(again);
        assert_eq!(rx.statistics().open_send_channels, 0);

        let (tx, rx) = open_memory_channel::<u32>(1);
        rx.close();
        assert!(matches!(rx.try_clone(), Err(Error::Closed)));
        let again = rx.clone();
        assert!(again.is_closed());
        assert!(matches!(again.try_receive(), Err(Error::Closed)));
        assert!(matches!(tx.send(1).await, Err(Error::Broken)));
        assert_eq!(tx.statistics().open_receive_channels, 0);

        // Open ends still clone as before.
        let (tx, rx) = open_memory_channel::<u32>(1);
        let tx2 = tx.try_clone()?;
        tx.close();
        tx2.send(5).await?;
        assert_eq!(rx.try_clone()?.receive().await?, 5);
        Ok(())
    })
    .unwrap();
}
