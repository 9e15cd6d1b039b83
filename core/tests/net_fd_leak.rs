//! Nothing leaks a file descriptor: the process's descriptor count returns
//! to where it started after a run full of sockets, errors and
//! cancellations. (Its own test binary: other tests would open descriptors
//! concurrently.)
#![cfg(target_os = "linux")]
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::net::SocketAddr;

use trio::abc::{AsyncResource, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use trio::{CancelScope, open_nursery};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn no_descriptor_leaks() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let dir = std::env::temp_dir().join(format!("trio-fdleak-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // Warm up once (lazily opened process-wide descriptors, if any).
    util::mock_run(async { Ok(()) }).unwrap();
    let before = fd_count();
    util::mock_run(async {
        for round in 0..10 {
            let listener = TcpListener::bind(loopback)?;
            let addr = listener.local_addr()?;
            open_nursery(async |n| {
                n.spawn(async {
                    // Accepted streams dropped without aclose.
                    for _ in 0..3 {
                        let s = listener.accept().await?;
                        let mut b = [0u8; 8];
                        let _ = s.receive_some(&mut b).await;
                    }
                    Ok(())
                });
                for i in 0..3 {
                    let c = TcpStream::connect(addr).await?;
                    if i % 2 == 0 {
                        c.send_all(b"x").await?;
                        c.aclose().await?;
                    }
                }
                Ok(())
            })
            .await?;
            // Refused connects.
            let dead = {
                let l = TcpListener::bind(loopback)?;
                l.local_addr()?
            };
            assert!(TcpStream::connect(dead).await.is_err());
            // Cancelled operations: a receive, an accept, a connect.
            let (a, _b) = UnixStream::pair()?;
            let scope = CancelScope::new();
            scope.cancel();
            let mut buf = [0u8; 4];
            assert!(scope.run(a.receive_some(&mut buf)).await?.is_none());
            assert!(trio::move_on_after(util::secs(1), listener.accept()).await?.is_none());
            let scope = CancelScope::new();
            scope.cancel();
            assert!(scope.run(TcpStream::connect(addr)).await?.is_none());
            // UDP and Unix listeners, closed and dropped.
            let u = UdpSocket::bind(loopback)?;
            if round % 2 == 0 {
                u.aclose().await?;
            }
            let path = dir.join(format!("s{round}"));
            let ul = UnixListener::bind(&path)?;
            let uc = UnixStream::connect(&path).await?;
            let us = ul.accept().await?;
            drop((uc, us, ul));
            let _ = std::fs::remove_file(&path);
            listener.aclose().await?;
        }
        Ok(())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(fd_count(), before, "descriptors leaked");
}
