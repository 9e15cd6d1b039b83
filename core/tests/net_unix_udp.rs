//! UDP and Unix-domain sockets on loopback / in a temporary directory.
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::net::SocketAddr;

#[cfg(unix)]
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::UdpSocket;
use trio::{Error, open_nursery};
use util::mock_run;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn udp_send_to_and_recv_from() {
    mock_run(async {
        let a = UdpSocket::bind(loopback())?;
        let b = UdpSocket::bind(loopback())?;
        let (aa, ba) = (a.local_addr()?, b.local_addr()?);
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 64];
                for i in 0..5u8 {
                    let (k, from) = b.recv_from(&mut buf).await?;
                    assert_eq!(from, aa);
                    assert_eq!(&buf[..k], &[i; 3]);
                    b.send_to(&buf[..k], from).await?;
                }
                Ok(())
            });
            let mut buf = [0u8; 64];
            for i in 0..5u8 {
                a.send_to(&[i; 3], ba).await?;
                let (k, from) = a.recv_from(&mut buf).await?;
                assert_eq!((k, from), (3, ba));
            }
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn udp_connected_send_and_recv() {
    mock_run(async {
        let a = UdpSocket::bind(loopback())?;
        let b = UdpSocket::bind(loopback())?;
        a.connect(b.local_addr()?)?;
        b.connect(a.local_addr()?)?;
        a.send(b"one datagram").await?;
        let mut buf = [0u8; 4];
        // Truncated to the buffer, as recv(2) does; Windows' recv fills the
        // buffer too but reports WSAEMSGSIZE (10040).
        let got = b.recv(&mut buf).await;
        #[cfg(not(windows))]
        assert_eq!(got?, 4);
        #[cfg(windows)]
        assert!(matches!(&got, Err(trio::Error::Io(e)) if e.raw_os_error() == Some(10040)), "{got:?}");
        assert_eq!(&buf, b"one ");
        Ok(())
    })
    .unwrap();
}

#[test]
fn udp_recv_blocks_until_cancelled_then_closed_errors() {
    mock_run(async {
        let a = UdpSocket::bind(loopback())?;
        let mut buf = [0u8; 4];
        let r = trio::move_on_after(util::secs(3), a.recv_from(&mut buf)).await?;
        assert!(r.is_none());
        a.aclose().await?;
        assert!(matches!(a.recv(&mut buf).await, Err(Error::Closed)));
        assert!(matches!(a.local_addr(), Err(Error::Closed)));
        Ok(())
    })
    .unwrap();
}

#[test]
fn udp_bind_conflict_is_addr_in_use() {
    mock_run(async {
        let a = UdpSocket::bind(loopback())?;
        match UdpSocket::bind(a.local_addr()?) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
            other => panic!("{other:?}"),
        }
        Ok(())
    })
    .unwrap();
}

#[cfg(unix)]
mod unix {
    use super::*;
    use trio::net::{UnixDatagram, UnixListener, UnixStream, open_unix_listener, open_unix_socket};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("trio-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn unix_stream_echo_and_half_close() {
        let dir = temp_dir("echo");
        let path = dir.join("sock");
        mock_run(async {
            let listener = UnixListener::bind(&path)?;
            assert_eq!(listener.local_path()?.as_deref(), Some(path.as_path()));
            open_nursery(async |n| {
                n.spawn(async {
                    let conn = listener.accept().await?;
                    let mut buf = [0u8; 256];
                    loop {
                        let k = conn.receive_some(&mut buf).await?;
                        if k == 0 {
                            break;
                        }
                        conn.send_all(&buf[..k]).await?;
                    }
                    conn.send_all(b"bye").await?;
                    conn.aclose().await
                });
                let c = open_unix_socket(&path).await?;
                c.send_all(b"hello").await?;
                let mut buf = [0u8; 5];
                let mut got = 0;
                while got < 5 {
                    got += c.receive_some(&mut buf[got..]).await?;
                }
                assert_eq!(&buf, b"hello");
                c.send_eof().await?;
                let mut rest = [0u8; 8];
                let k = c.receive_some(&mut rest).await?;
                assert_eq!(&rest[..k], b"bye");
                assert_eq!(c.receive_some(&mut rest).await?, 0);
                Ok(())
            })
            .await?;
            Ok(())
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unix_pair_and_connect_errors() {
        let dir = temp_dir("errors");
        mock_run(async {
            let (a, b) = UnixStream::pair()?;
            a.send_all(b"x").await?;
            let mut buf = [0u8; 1];
            assert_eq!(b.receive_some(&mut buf).await?, 1);
            match UnixStream::connect(dir.join("nobody-here")).await {
                Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                other => panic!("{other:?}"),
            }
            let long = dir.join("x".repeat(200));
            assert!(matches!(UnixStream::connect(&long).await, Err(Error::Io(_))), "a path too long is an error");
            Ok(())
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn open_unix_listener_replaces_only_stale_sockets() {
        let dir = temp_dir("stale");
        let path = dir.join("sock");
        mock_run(async {
            {
                let l = UnixListener::bind(&path)?;
                l.aclose().await?;
            }
            // The file is left behind, and nobody listens: it is replaced.
            assert!(path.exists());
            let live = open_unix_listener(&path).await?;
            // A live listener is not replaced.
            match open_unix_listener(&path).await {
                Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
                other => panic!("{other:?}"),
            }
            // A regular file is never removed.
            let file = dir.join("file");
            std::fs::write(&file, b"keep me").unwrap();
            assert!(open_unix_listener(&file).await.is_err());
            assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
            live.aclose().await?;
            Ok(())
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unix_datagrams() {
        let dir = temp_dir("dgram");
        mock_run(async {
            let a = UnixDatagram::bind(dir.join("a"))?;
            let b = UnixDatagram::bind(dir.join("b"))?;
            a.send_to(b"to b", dir.join("b")).await?;
            let mut buf = [0u8; 16];
            let (k, from) = b.recv_from(&mut buf).await?;
            assert_eq!(&buf[..k], b"to b");
            assert_eq!(from.as_deref(), Some(dir.join("a").as_path()));
            let (p, q) = UnixDatagram::pair()?;
            p.send(b"pair").await?;
            assert_eq!(q.recv(&mut buf).await?, 4);
            b.connect(dir.join("a"))?;
            b.send(b"back").await?;
            assert_eq!(a.recv(&mut buf).await?, 4);
            let u = UnixDatagram::unbound()?;
            u.send_to(b"anon", dir.join("a")).await?;
            let (_, from) = a.recv_from(&mut buf).await?;
            assert_eq!(from, None, "an unbound sender has no path");
            Ok(())
        })
        .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
