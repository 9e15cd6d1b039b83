//! TCP sockets on loopback.
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::net::SocketAddr;

use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::{Error, open_nursery};
use util::mock_run;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn echo_round_trip() {
    mock_run(async {
        let listener = TcpListener::bind(loopback())?;
        let addr = listener.local_addr()?;
        open_nursery(async |n| {
            n.spawn(async {
                let conn = listener.accept().await?;
                let mut buf = [0u8; 1024];
                loop {
                    let k = conn.receive_some(&mut buf).await?;
                    if k == 0 {
                        break;
                    }
                    conn.send_all(&buf[..k]).await?;
                }
                conn.aclose().await
            });
            let client = TcpStream::connect(addr).await?;
            assert_eq!(client.peer_addr()?, addr);
            for i in 0..20u8 {
                let msg = vec![i; 1 + i as usize * 10];
                client.send_all(&msg).await?;
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while got.len() < msg.len() {
                    let k = client.receive_some(&mut buf).await?;
                    assert!(k > 0);
                    got.extend_from_slice(&buf[..k]);
                }
                assert_eq!(got, msg);
            }
            client.send_eof().await?;
            let mut buf = [0u8; 16];
            assert_eq!(client.receive_some(&mut buf).await?, 0);
            assert_eq!(client.receive_some(&mut buf).await?, 0, "EOF repeats");
            client.aclose().await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn connect_refused_is_an_io_error() {
    mock_run(async {
        let addr = {
            let l = TcpListener::bind(loopback())?;
            l.local_addr()?
        };
        match TcpStream::connect(addr).await {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
            other => panic!("expected refused, got {other:?}"),
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn closed_stream_operations_fail_closed() {
    mock_run(async {
        let listener = TcpListener::bind(loopback())?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let _server = listener.accept().await?;
        client.aclose().await?;
        client.aclose().await?;
        let mut buf = [0u8; 4];
        assert!(matches!(client.send_all(b"x").await, Err(Error::Closed)));
        assert!(matches!(client.receive_some(&mut buf).await, Err(Error::Closed)));
        assert!(matches!(client.send_eof().await, Err(Error::Closed)));
        listener.aclose().await?;
        assert!(matches!(listener.accept().await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

/// A connected pair over loopback (client, server side).
async fn tcp_pair() -> trio::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(loopback())?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let server = listener.accept().await?;
    Ok((client, server))
}

#[test]
fn reset_by_peer_is_broken() {
    // Wine 8.0 closes a socket with SO_LINGER 0 gracefully (checked: the
    // peer reads the data, then EOF, never a reset), so there is no reset
    // to read; real Windows sends one.
    if std::env::var_os("TRIO_UNDER_WINE").is_some() {
        eprintln!("SKIPPED under Wine: its linger-0 close sends FIN, not RST");
        return;
    }
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        server.with_socket(|s| s.set_linger(Some(std::time::Duration::ZERO)))?;
        server.send_all(b"unread").await?;
        // The client has unread data... and the server leaves with a RST.
        drop(server);
        let mut buf = [0u8; 64];
        let mut saw_broken = false;
        for _ in 0..10 {
            match client.receive_some(&mut buf).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(Error::Broken) => {
                    saw_broken = true;
                    break;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(saw_broken, "a reset reads as Broken");
        Ok(())
    })
    .unwrap();
}

#[test]
fn sending_to_a_closed_peer_becomes_broken() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        server.aclose().await?;
        let chunk = [7u8; 4096];
        let mut result = Ok(());
        for _ in 0..100 {
            result = client.send_all(&chunk).await;
            if result.is_err() {
                break;
            }
            trio::sleep(std::time::Duration::from_millis(1)).await?;
        }
        assert!(matches!(result, Err(Error::Broken)), "got {result:?}");
        // And it stays broken.
        assert!(matches!(client.send_all(b"x").await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn half_closed_peer_can_still_send() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        client.send_eof().await?;
        client.send_eof().await?; // idempotent
        let mut buf = [0u8; 16];
        assert_eq!(server.receive_some(&mut buf).await?, 0);
        server.send_all(b"still here").await?;
        let k = client.receive_some(&mut buf).await?;
        assert_eq!(&buf[..k], b"still here");
        assert!(client.send_all(b"x").await.is_err(), "sending after send_eof fails");
        Ok(())
    })
    .unwrap();
}

#[test]
fn cancelled_send_all_breaks_the_stream() {
    mock_run(async {
        let (client, _server) = tcp_pair().await?;
        // Nobody reads: the buffers fill and send_all blocks until the
        // deadline cancels it midway.
        let big = vec![1u8; 64 << 20];
        let r = trio::move_on_after(util::secs(5), client.send_all(&big)).await?;
        assert!(r.is_none(), "the send cannot finish");
        assert!(matches!(client.send_all(b"more").await, Err(Error::Broken)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn concurrent_sends_or_receives_are_busy() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 8];
                let k = client.receive_some(&mut buf).await?;
                assert_eq!(&buf[..k], b"hi");
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(std::time::Duration::ZERO).await?;
            let mut buf = [0u8; 8];
            assert!(matches!(client.receive_some(&mut buf).await, Err(Error::Busy)));
            // Sending on the same stream while another task receives is fine.
            client.send_all(b"ping").await?;
            let k = server.receive_some(&mut buf).await?;
            assert_eq!(&buf[..k], b"ping");
            server.send_all(b"hi").await?;
            Ok(())
        })
        .await?;
        let big = vec![0u8; 64 << 20];
        open_nursery(async |n| {
            n.cancel_scope().set_deadline(trio::current_time()? + util::secs(1));
            n.spawn(async {
                let _ = client.send_all(&big).await;
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(std::time::Duration::ZERO).await?;
            assert!(matches!(client.send_all(b"x").await, Err(Error::Busy)));
            assert!(matches!(client.wait_send_all_might_not_block().await, Err(Error::Busy)));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn closing_wakes_a_blocked_receiver_with_closed() {
    mock_run(async {
        let (client, _server) = tcp_pair().await?;
        let got = std::cell::RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 8];
                *got.borrow_mut() = Some(client.receive_some(&mut buf).await);
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(std::time::Duration::ZERO).await?;
            client.aclose().await?;
            Ok(())
        })
        .await?;
        assert!(matches!(got.take(), Some(Err(Error::Closed))), "{:?}", got.borrow());
        Ok(())
    })
    .unwrap();
}

#[test]
fn empty_buffer_and_empty_send() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        match client.receive_some(&mut []).await {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
            other => panic!("{other:?}"),
        }
        trio::testing::assert_checkpoints(client.send_all(b"")).await?;
        server.send_all(b"z").await?;
        let mut b = [0u8; 1];
        assert_eq!(client.receive_some(&mut b).await?, 1);
        Ok(())
    })
    .unwrap();
}

#[test]
fn operations_are_checkpoints() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        trio::testing::assert_checkpoints(client.send_all(b"abc")).await?;
        let mut b = [0u8; 8];
        trio::testing::assert_checkpoints(server.receive_some(&mut b)).await?;
        trio::testing::assert_checkpoints(client.wait_send_all_might_not_block()).await?;
        // Cancelled before it starts: nothing is sent.
        let scope = trio::CancelScope::new();
        scope.cancel();
        assert!(scope.run(client.send_all(b"never")).await?.is_none());
        client.send_all(b"after").await?;
        let k = server.receive_some(&mut b).await?;
        assert_eq!(&b[..k], b"after");
        Ok(())
    })
    .unwrap();
}

#[test]
fn large_transfer_both_ways_at_once() {
    mock_run(async {
        let (a, b) = tcp_pair().await?;
        let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
        let pump = async |from: &TcpStream, to: &TcpStream| -> trio::Result<()> {
            open_nursery(async |n| {
                n.spawn(async {
                    from.send_all(&data).await?;
                    from.send_eof().await
                });
                let mut got = Vec::with_capacity(data.len());
                let mut buf = vec![0u8; 65536];
                for _ in 0..1_000_000 {
                    let k = to.receive_some(&mut buf).await?;
                    if k == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..k]);
                }
                assert!(got == data, "the bytes arrive intact and in order");
                Ok(())
            })
            .await?;
            Ok(())
        };
        open_nursery(async |n| {
            n.spawn(pump(&a, &b));
            n.spawn(pump(&b, &a));
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[cfg(feature = "futures-io")]
#[test]
fn futures_io_traits() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    mock_run(async {
        let (mut client, mut server) = tcp_pair().await?;
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = vec![0u8; 100_000];
                server.read_exact(&mut buf).await?;
                assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 7) as u8));
                server.write_all(b"done").await?;
                server.close().await?;
                Ok(())
            });
            let data: Vec<u8> = (0..100_000).map(|i| (i % 7) as u8).collect();
            client.write_all(&data).await?;
            let mut reply = Vec::new();
            client.read_to_end(&mut reply).await?;
            assert_eq!(reply, b"done");
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn ipv6_loopback_when_available() {
    mock_run(async {
        let Ok(listener) = TcpListener::bind("[::1]:0".parse().unwrap()) else {
            return Ok(()); // no IPv6 on this machine
        };
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let server = listener.accept().await?;
        client.send_all(b"v6").await?;
        let mut b = [0u8; 2];
        assert_eq!(server.receive_some(&mut b).await?, 2);
        assert!(server.peer_addr()?.is_ipv6());
        Ok(())
    })
    .unwrap();
}

#[test]
fn socket_used_in_another_run_is_a_clear_error() {
    // Sockets belong to the run that made them.
    let listener = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = listener.local_addr().unwrap();
    let std_client = std::net::TcpStream::connect(addr).unwrap();
    let stream = std::cell::RefCell::new(None);
    mock_run(async {
        *stream.borrow_mut() = Some(TcpStream::from_std(std_client)?);
        Ok(())
    })
    .unwrap();
    let s = stream.take().unwrap();
    let r = mock_run(async { s.send_all(b"x").await });
    assert!(matches!(r, Err(Error::Runtime(_)) | Err(Error::Closed)), "{r:?}");
}

#[test]
fn closing_a_listener_wakes_its_acceptor_with_closed() {
    mock_run(async {
        let listener = TcpListener::bind(loopback())?;
        let got = std::cell::RefCell::new(None);
        open_nursery(async |n| {
            n.spawn(async {
                *got.borrow_mut() = Some(listener.accept().await.map(|_| ()));
                Ok(())
            });
            trio::testing::wait_all_tasks_blocked(std::time::Duration::ZERO).await?;
            assert!(matches!(listener.accept().await, Err(Error::Busy)));
            listener.aclose().await?;
            Ok(())
        })
        .await?;
        assert!(matches!(got.take(), Some(Err(Error::Closed))));
        Ok(())
    })
    .unwrap();
}

/// As Trio's: `accept` on a closed listener checks cancellation first, so a
/// cancelled caller sees `Cancelled` (which its scope catches), not
/// `Closed`; an uncancelled one gets `Closed`.
#[test]
fn accept_on_a_closed_listener_in_a_cancelled_scope_is_cancelled() {
    mock_run(async {
        let listener = TcpListener::bind(loopback())?;
        listener.aclose().await?;
        let scope = trio::CancelScope::new();
        scope.cancel();
        let out = scope.run(async { listener.accept().await.map(|_| ()) }).await;
        assert!(matches!(out, Ok(None)), "{out:?}");
        assert!(scope.cancelled_caught());
        assert!(matches!(listener.accept().await, Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn stream_works_when_peer_already_sent_and_closed() {
    let l = std::net::TcpListener::bind(loopback()).unwrap();
    let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    std::io::Write::write_all(&mut peer, b"parting words").unwrap();
    drop(peer);
    mock_run(async {
        let s = TcpStream::from_std(ours)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        for _ in 0..100 {
            let k = s.receive_some(&mut buf).await?;
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got, b"parting words");
        Ok(())
    })
    .unwrap();
}

#[test]
fn socket_options() {
    mock_run(async {
        let listener = TcpListener::bind(loopback())?;
        // On Windows SO_REUSEADDR lets another socket take the port over:
        // listeners claim it exclusively there instead (as Trio's).
        assert_eq!(listener.with_socket(|s| s.reuse_address())?, cfg!(not(windows)), "listeners reuse addresses");
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let server = listener.accept().await?;
        assert!(client.with_socket(|s| s.tcp_nodelay())?, "nodelay on connected streams");
        assert!(server.with_socket(|s| s.tcp_nodelay())?, "nodelay on accepted streams");
        client.set_nodelay(false)?;
        assert!(!client.with_socket(|s| s.tcp_nodelay())?);
        assert_eq!(server.local_addr()?, listener.local_addr()?);
        assert_eq!(server.peer_addr()?, client.local_addr()?);
        Ok(())
    })
    .unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn reuse_port_is_opt_in() {
    use trio::net::ListenOptions;
    mock_run(async {
        let opts = ListenOptions { reuse_port: true, ..ListenOptions::default() };
        let a = TcpListener::bind_with(loopback(), opts)?;
        let addr = a.local_addr()?;
        let b = TcpListener::bind_with(addr, opts)?;
        assert_eq!(b.local_addr()?, addr);
        match TcpListener::bind(addr) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
            other => panic!("without SO_REUSEPORT the port is taken: {other:?}"),
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn open_tcp_listeners_and_getaddrinfo() {
    mock_run(async {
        let ls = trio::net::open_tcp_listeners(0, Some("127.0.0.1")).await?;
        assert_eq!(ls.len(), 1);
        assert!(ls[0].local_addr()?.ip().is_loopback());
        let all = trio::net::open_tcp_listeners(0, None).await?;
        assert!(!all.is_empty());
        assert!(all.iter().all(|l| l.local_addr().unwrap().ip().is_unspecified()));
        let addrs = trio::net::getaddrinfo("localhost", 80).await?;
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80), "{addrs:?}");
        assert_eq!(trio::net::getaddrinfo("[::1]", 7).await?, vec!["[::1]:7".parse().unwrap()]);
        assert!(matches!(trio::net::getaddrinfo("", 1).await, Err(Error::Io(_))));
        let busy = ls[0].local_addr()?;
        assert!(trio::net::open_tcp_listeners(busy.port(), Some("127.0.0.1")).await.is_err());
        Ok(())
    })
    .unwrap();
}
