//! The stream conformance checks (`trio::testing::check_*`) on real
//! transports: TCP over loopback and Unix socket pairs.
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use std::net::SocketAddr;

use trio::abc::{Listener, SendStream};
use trio::net::{TcpListener, TcpStream};
use trio::open_nursery;
use trio::testing::wait_all_tasks_blocked;
use trio::testing::{check_half_closeable_stream, check_one_way_stream, check_two_way_stream};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn tcp_pair() -> trio::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(loopback())?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let server = listener.accept().await?;
    Ok((client, server))
}

/// Fills a socket's send path (its send buffer and the peer's receive
/// buffer) so that the next `send_all` blocks until the peer reads: raw
/// non-blocking sends of shrinking chunks until even one byte would block
/// (a 4 KiB send can fail while a small one still fits), then, as Trio's
/// `fill_stream`, one-byte `send_all`s until one blocks, which is then
/// cancelled (a one-byte send cannot be cut in half, so the stream is not
/// broken by it). Small buffers keep it quick. Bounded.
async fn clog<S: SendStream>(
    stream: &S,
    sock: impl Fn(&dyn Fn(socket2::SockRef<'_>) -> std::io::Result<()>) -> trio::Result<()>,
) -> trio::Result<()> {
    sock(&|s| {
        s.set_send_buffer_size(4096)?;
        for size in [4096, 1024, 256, 64, 16, 4, 1] {
            let chunk = vec![b'x'; size];
            for _ in 0..100_000 {
                match s.send(&chunk) {
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    })?;
    open_nursery(async |n| {
        n.spawn(async {
            for _ in 0..1_000_000 {
                stream.send_all(b"x").await?;
            }
            panic!("the stream never clogged");
        });
        wait_all_tasks_blocked(std::time::Duration::ZERO).await?;
        n.cancel_scope().cancel();
        Ok(())
    })
    .await?;
    Ok(())
}

async fn clogged_tcp_pair() -> trio::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(loopback())?;
    // Small receive buffers, set before the connection exists so the
    // window is small from the start.
    listener.with_socket(|s| s.set_recv_buffer_size(4096))?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let server = listener.accept().await?;
    client.with_socket(|s| s.set_recv_buffer_size(4096))?;
    clog(&client, |f| client.with_socket(f)).await?;
    clog(&server, |f| server.with_socket(f)).await?;
    Ok((client, server))
}

#[test]
fn tcp_one_way() {
    util::mock_run(async { check_one_way_stream(tcp_pair, Some(clogged_tcp_pair)).await }).unwrap();
}

#[test]
fn tcp_two_way() {
    util::mock_run(async { check_two_way_stream(tcp_pair, Some(clogged_tcp_pair)).await }).unwrap();
}

#[test]
fn tcp_half_closeable() {
    util::mock_run(async { check_half_closeable_stream(tcp_pair, Some(clogged_tcp_pair)).await }).unwrap();
}

#[test]
fn tcp_checks_under_the_system_clock() {
    trio::run(async { check_half_closeable_stream(tcp_pair, Some(clogged_tcp_pair)).await }).unwrap();
}

#[cfg(unix)]
mod unix {
    use super::*;
    use trio::net::UnixStream;

    async fn unix_pair() -> trio::Result<(UnixStream, UnixStream)> {
        UnixStream::pair()
    }

    async fn clogged_unix_pair() -> trio::Result<(UnixStream, UnixStream)> {
        let (a, b) = UnixStream::pair()?;
        clog(&a, |f| a.with_socket(f)).await?;
        clog(&b, |f| b.with_socket(f)).await?;
        Ok((a, b))
    }

    #[test]
    fn unix_half_closeable() {
        util::mock_run(async { check_half_closeable_stream(unix_pair, Some(clogged_unix_pair)).await }).unwrap();
    }

    #[test]
    fn unix_one_way() {
        util::mock_run(async { check_one_way_stream(unix_pair, Some(clogged_unix_pair)).await }).unwrap();
    }
}
