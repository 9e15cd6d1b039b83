//! Cancellation reaches code that does I/O through `futures-io`: a task
//! parked in `poll_read`/`poll_write` of a socket, a pipe, a `Compat` or a
//! TLS stream wakes when its scope is cancelled, the poll fails with an
//! `io::Error` that wraps `Cancelled`, `Error::from` recovers it, and cancel
//! scopes catch errors whose source chain holds it.
//!
//! Each test that waits has a sibling that, long after the deadline (on the
//! mock clock), gives the reader what it waits for: without the fix the
//! read would return data late instead of hanging, and the test fails on
//! the time or the result rather than blocking forever.
#![cfg(all(not(target_os = "wasi"), feature = "futures-io"))]

mod util;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::time::Duration;

use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use trio::abc::{AsyncResource, Compat, ReceiveStream, SendStream};
use trio::testing::{memory_stream_pair, wait_all_tasks_blocked};
use trio::{CancelScope, Error, current_time, move_on_after, open_nursery, sleep};
use util::{at, mock_run, secs, tcp_pair};

/// An error type of "another library" that wraps an `io::Error`, as
/// hyper's and tungstenite's do.
#[derive(Debug)]
struct Wrapper(io::Error);

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for Wrapper {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Is `e` the `io::Error` a cancelled `futures-io` poll returns?
fn is_cancelled_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other
        && e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()).is_some_and(Error::is_cancelled)
}

/// Runs `op` under `move_on_after(5 s)` while `late` waits 100 s and then
/// gives `op` what it waits for (data, or a peer that went away): asserts
/// that the deadline, not `late`, ended `op`, and that the scope caught it.
async fn ends_at_the_deadline(
    late: impl std::future::Future<Output = trio::Result<()>>,
    op: impl std::future::Future<Output = trio::Result<()>>,
) -> trio::Result<()> {
    open_nursery(async |n| {
        n.spawn(async {
            sleep(secs(100)).await?;
            late.await
        });
        let out = move_on_after(secs(5), op).await;
        assert!(matches!(out, Ok(None)), "not cancelled at the deadline: {out:?}");
        assert_eq!(current_time()?, at(5));
        n.cancel_scope().cancel();
        Ok(())
    })
    .await?;
    Ok(())
}

#[test]
fn futures_io_read_on_an_idle_socket_ends_at_the_deadline() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        ends_at_the_deadline(
            async {
                (&client).write_all(b"late").await?;
                Ok(())
            },
            async {
                let mut buf = [0u8; 16];
                (&server).read(&mut buf).await?;
                Ok(())
            },
        )
        .await
    })
    .unwrap();
}

#[test]
fn futures_io_write_to_a_full_socket_ends_at_the_deadline() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        let big = vec![7u8; 64 << 20];
        ends_at_the_deadline(server.aclose(), async {
            (&client).write_all(&big).await?;
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn explicit_cancel_wakes_a_futures_io_reader_with_a_cancelled_io_error() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        let scope = CancelScope::new();
        let seen: RefCell<Option<io::Error>> = RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(100)).await?;
                (&client).write_all(b"late").await?;
                Ok(())
            });
            n.spawn(async {
                wait_all_tasks_blocked(Duration::ZERO).await?;
                scope.cancel();
                Ok(())
            });
            let out = scope
                .run(async {
                    let mut buf = [0u8; 16];
                    match (&server).read(&mut buf).await {
                        Ok(n) => Ok(n),
                        Err(e) => {
                            let back = Error::from(io::Error::new(e.kind(), e.to_string()));
                            assert!(matches!(back, Error::Io(_)), "a plain io::Error stays Io");
                            let kind = e.kind();
                            let msg = e.to_string();
                            seen.replace(Some(io::Error::new(kind, msg)));
                            assert!(is_cancelled_io(&e), "{e:?}");
                            // `?` turns it back into `Cancelled`.
                            Err(Error::from(e))
                        }
                    }
                })
                .await?;
            assert!(out.is_none());
            assert!(scope.cancelled_caught());
            assert_eq!(current_time()?, at(0), "the cancel, not a deadline, ended the read");
            assert!(seen.borrow().is_some());
            n.cancel_scope().cancel();
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_socket_still_works_after_a_cancelled_futures_io_read() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        // Cancelled twice while parked, then a real read.
        for _ in 0..2 {
            let out = move_on_after(secs(1), async {
                let mut buf = [0u8; 4];
                (&server).read(&mut buf).await?;
                Ok(())
            })
            .await?;
            assert!(out.is_none());
        }
        (&client).write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        (&server).read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        // A read future dropped while parked (a foreign select/timeout)
        // leaves nothing behind either.
        let raced = futures_lite::future::or(
            async {
                let mut b = [0u8; 4];
                (&server).read(&mut b).await.map(Some)
            },
            async {
                sleep(secs(1)).await.map_err(io::Error::other)?;
                Ok(None)
            },
        )
        .await
        .map_err(Error::from)?;
        assert_eq!(raced, None);
        (&client).write_all(b"pong").await?;
        (&server).read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_futures_io_read_beside_a_waiting_receive_is_busy() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 4];
                let k = server.receive_some(&mut buf).await?;
                assert_eq!(&buf[..k], b"mine");
                Ok(())
            });
            wait_all_tasks_blocked(Duration::ZERO).await?;
            let mut buf = [0u8; 4];
            let e = (&server).read(&mut buf).await.unwrap_err();
            assert!(matches!(Error::from(e), Error::Busy));
            // The waiting receive was not displaced: it still gets its data.
            client.send_all(b"mine").await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_shielded_futures_io_read_is_not_cancelled() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        let outer = CancelScope::new();
        open_nursery(async |n| {
            n.spawn(async {
                sleep(secs(10)).await?;
                (&client).write_all(b"data").await?;
                Ok(())
            });
            outer
                .run(async {
                    outer.cancel();
                    let inner = CancelScope::new();
                    inner.set_shield(true);
                    inner
                        .run(async {
                            let mut buf = [0u8; 4];
                            (&server).read_exact(&mut buf).await?;
                            assert_eq!(&buf, b"data");
                            Ok(())
                        })
                        .await?;
                    Ok(())
                })
                .await?;
            assert_eq!(current_time()?, at(10));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

// `trio::subprocess` (and its pipes) exists on Unix only so far.
#[cfg(unix)]
#[test]
fn futures_io_read_of_an_idle_pipe_ends_at_the_deadline() {
    mock_run(async {
        let (tx, mut rx) = trio::subprocess::open_pipe()?;
        ends_at_the_deadline(tx.send_all(b"late"), async {
            let mut buf = [0u8; 4];
            rx.read(&mut buf).await?;
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn compat_read_cancellation_is_caught_by_the_scope() {
    mock_run(async {
        let (a, b) = memory_stream_pair();
        let mut reader = Compat::new(b);
        let out = move_on_after(secs(5), async {
            let mut buf = [0u8; 4];
            // `?` on the io::Error: `Cancelled` again, which the scope
            // catches (before, `Io(Other)` escaped as an ordinary error).
            reader.read(&mut buf).await?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert_eq!(current_time()?, at(5));
        // Nothing was lost: data sent now is read.
        a.send_all(b"abcd").await?;
        let mut buf = [0u8; 4];
        reader.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"abcd");
        Ok(())
    })
    .unwrap();
}

#[test]
fn scopes_catch_a_cancellation_wrapped_in_another_error() {
    mock_run(async {
        let (_client, server) = tcp_pair().await?;
        // As hyper or tungstenite would report it.
        let out = move_on_after(secs(5), async {
            let mut buf = [0u8; 4];
            (&server).read(&mut buf).await.map_err(|e| Error::user(Wrapper(e)))?;
            Ok(())
        })
        .await;
        assert!(matches!(out, Ok(None)), "{out:?}");

        // In a nursery: one child reports a wrapped cancellation, another a
        // plain one; the cancelled scope around it catches both.
        let scope = CancelScope::with_timeout(secs(5));
        let out = scope
            .run(open_nursery(async |n| {
                n.spawn(async {
                    let mut buf = [0u8; 4];
                    (&server).read(&mut buf).await.map_err(|e| Error::user(Wrapper(e)))?;
                    Ok(())
                });
                n.spawn(async { trio::sleep_forever().await.map(|_| ()) });
                Ok(())
            }))
            .await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(scope.cancelled_caught());

        // A scope that was not cancelled lets such an error through as it
        // is (it is not its cancellation).
        let out =
            move_on_after(secs(5), async { Err::<(), _>(Error::user(Wrapper(io::Error::other(Error::cancelled())))) })
                .await;
        match out {
            Err(e @ Error::User(_)) => assert!(e.is_cancellation()),
            other => panic!("{other:?}"),
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn is_cancellation_looks_through_source_chains_and_io_errors() {
    let wrapped = || io::Error::other(Error::cancelled());
    assert!(Error::cancelled().is_cancellation());
    assert!(Error::Io(wrapped()).is_cancellation());
    assert!(Error::user(Wrapper(wrapped())).is_cancellation());
    assert!(Error::user(Wrapper(io::Error::other(Error::user(Wrapper(wrapped()))))).is_cancellation());
    assert!(!Error::user(Wrapper(io::Error::other("no"))).is_cancellation());
    assert!(!Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)).is_cancellation());
    assert!(!Error::Busy.is_cancellation());
    // Groups: `contains_cancelled` looks at the members.
    let g = Error::Group(vec![Error::Busy, Error::user(Wrapper(wrapped()))]);
    assert!(!g.is_cancellation());
    assert!(g.contains_cancelled());
    // `From<io::Error>` gives back the trio error an io::Error carries.
    assert!(Error::from(wrapped()).is_cancelled());
    assert!(matches!(Error::from(io::Error::new(io::ErrorKind::NotConnected, Error::Closed)), Error::Closed));
    assert!(matches!(Error::from(io::Error::other("x")), Error::Io(_)));
    // A very deep chain is not followed forever.
    let mut deep = Error::cancelled();
    for _ in 0..200 {
        deep = Error::user(Wrapper(io::Error::other(deep)));
    }
    assert!(!deep.is_cancellation());
}

#[cfg(feature = "tls")]
#[test]
fn futures_io_on_tls_reads_writes_and_ends_at_the_deadline() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    use trio::tls::{TlsStream, client_config_with_roots, server_config};

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let server_cfg = Arc::new(server_config(vec![cert], key).unwrap());
    let client_cfg = Arc::new(client_config_with_roots(roots));

    mock_run(async {
        let (a, b) = tcp_pair().await?;
        let mut client = TlsStream::client(a, "localhost", client_cfg)?;
        let mut server = TlsStream::server(b, server_cfg)?;
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 5];
                server.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"hello");
                server.write_all(b"world").await?;
                server.flush().await?;
                // Then the client idles: a read ends at the deadline.
                let out = move_on_after(secs(5), async {
                    server.read(&mut buf).await?;
                    Ok(())
                })
                .await?;
                assert!(out.is_none());
                assert_eq!(current_time()?, at(5));
                // Still usable afterwards: the client's close arrives.
                assert_eq!(server.read(&mut buf).await?, 0);
                Ok(())
            });
            client.write_all(b"hello").await?;
            let mut buf = [0u8; 5];
            client.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"world");
            sleep(secs(10)).await?;
            client.close().await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_deadline_ends_a_bufreader_lines_loop() {
    use futures_lite::StreamExt;
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        (&client).write_all(b"one\ntwo\n").await?;
        let seen = RefCell::new(Vec::new());
        let out = move_on_after(Duration::from_secs(30), async {
            let mut lines = futures_lite::io::BufReader::new(&server).lines();
            while let Some(line) = lines.next().await {
                seen.borrow_mut().push(line?);
            }
            Ok(())
        })
        .await?;
        assert!(out.is_none());
        assert_eq!(*seen.borrow(), ["one", "two"]);
        assert_eq!(current_time()?, at(30));
        drop(client);
        Ok(())
    })
    .unwrap();
}
