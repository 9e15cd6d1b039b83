//! TCP sockets on loopback.

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
