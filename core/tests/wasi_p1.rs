//! `trio::net` and `trio::stdio` on WASI preview 1, as a `wasm32-wasip1`
//! test binary (empty elsewhere): what works without a peer.
//!
//! Run it under a host that preopens a listener to test the listener too:
//! `examples/wasi/tests/p1_sockets.rs` runs it under wasmtime 46 with
//! `-Spreview2=n -Stcplisten=127.0.0.1:PORT` (nobody connects). Without a
//! preopened listener that test only says so and passes. The echo tests
//! with real connections are in `examples/wasi/tests/p1_sockets.rs`.

#![cfg(all(target_os = "wasi", target_env = "p1"))]

use std::io::ErrorKind;
use std::time::Duration;

use trio::abc::{AsyncResource, Listener, SendStream};
use trio::net::{TcpListener, TcpStream, preopened_listeners};
use trio::{CancelScope, Error, open_nursery};

fn unsupported<T: std::fmt::Debug>(r: trio::Result<T>) {
    match r {
        Err(Error::Io(e)) if e.kind() == ErrorKind::Unsupported => {}
        other => panic!("expected Io(Unsupported), got {other:?}"),
    }
}

#[test]
fn opening_sockets_is_unsupported() {
    trio::run(async {
        let addr = "127.0.0.1:8080".parse().unwrap();
        unsupported(TcpListener::bind(addr));
        unsupported(TcpStream::connect(addr).await);
        unsupported(trio::net::open_tcp_listeners(0, Some("127.0.0.1")).await);
        unsupported(trio::net::open_tcp_stream("127.0.0.1", 8080).await);
        unsupported(trio::net::getaddrinfo("localhost", 80).await);
        // A cancelled connect reports the cancellation, as natively.
        let cs = CancelScope::new();
        cs.cancel();
        assert!(cs.run(TcpStream::connect(addr)).await?.is_none());
        Ok(())
    })
    .unwrap();
}

#[test]
fn stdout_stream() {
    assert!(matches!(preopened_listeners(), Err(Error::Runtime(_))), "outside a run");
    trio::run(async {
        let out = trio::stdio::stdout();
        out.send_all(b"trio::stdio::stdout works\n").await?;
        out.send_all(b"").await?;
        // A cancelled send sends nothing and reports the cancellation.
        let cs = CancelScope::new();
        cs.cancel();
        assert!(cs.run(out.send_all(b"never\n")).await?.is_none());
        out.wait_send_all_might_not_block().await?;
        out.aclose().await?;
        assert!(matches!(out.send_all(b"x").await, Err(Error::Closed)));
        out.aclose().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn preopened_listener() {
    trio::run(async {
        let listeners = preopened_listeners()?;
        let Some(l) = listeners.first() else {
            println!("no preopened listener (run with wasmtime -Spreview2=n -Stcplisten=ADDR to test one)");
            return Ok(());
        };
        println!("preopened listeners: {}", listeners.len());
        // A second call does not wrap the same descriptors again.
        assert!(preopened_listeners()?.is_empty());
        unsupported(l.local_addr());
        // A cancelled accept reports the cancellation.
        let cs = CancelScope::new();
        cs.cancel();
        assert!(cs.run(l.accept()).await?.is_none());
        // A second accepting task gets `Busy`; closing wakes the first with
        // `Closed`.
        open_nursery(async |n| {
            n.spawn(async {
                match l.accept().await {
                    Err(Error::Closed) => Ok(()),
                    other => panic!("expected Closed, got {other:?}"),
                }
            });
            trio::testing::wait_all_tasks_blocked(Duration::ZERO).await?;
            assert!(matches!(l.accept().await, Err(Error::Busy)));
            l.aclose().await
        })
        .await?;
        assert!(matches!(l.accept().await, Err(Error::Closed)));
        assert!(matches!(l.local_addr(), Err(Error::Closed)));
        l.aclose().await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn waiting_on_a_bad_descriptor_ends() {
    // The host fails the whole `poll_oneoff` for a descriptor that is not
    // open; the driver finds the failing subscription and wakes its waiter
    // (whose call would then report `EBADF`) instead of failing the run,
    // and the timer beside it keeps working.
    trio::run(async {
        trio::fail_after(Duration::from_secs(10), async {
            open_nursery(async |n| {
                n.spawn(async { trio::sleep(Duration::from_millis(5)).await });
                let _ = trio::lowlevel::wait_readable(1000).await;
                Ok(())
            })
            .await
        })
        .await
    })
    .unwrap();
}
