//! `trio::abc::Compat`: futures-io over any stream.
#![cfg(feature = "futures-io")]
// Native only: WASI has its own socket tests (examples/wasi/tests).
#![cfg(not(target_os = "wasi"))]

mod util;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use trio::abc::{AsyncResource, Compat, ReceiveStream, SendStream};
use trio::open_nursery;
use trio::testing::{lockstep_stream_pair, memory_stream_pair};
use util::mock_run;

#[test]
fn large_transfer_both_ways_over_memory_streams() {
    mock_run(async {
        let (a, b) = memory_stream_pair();
        let (mut a, mut b) = (Compat::new(a), Compat::new(b));
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        open_nursery(async |n| {
            n.spawn(async {
                a.write_all(&data).await?;
                a.flush().await?;
                let mut back = Vec::new();
                a.read_to_end(&mut back).await?;
                assert!(back == data);
                Ok(())
            });
            let mut got = vec![0u8; data.len()];
            b.read_exact(&mut got).await?;
            assert!(got == data);
            b.write_all(&got).await?;
            b.close().await?;
            Ok(())
        })
        .await?;
        Ok(())
    })
    .unwrap();
}

#[test]
fn small_reads_get_every_byte_in_order() {
    mock_run(async {
        let (a, b) = memory_stream_pair();
        let mut b = Compat::new(b);
        a.send_all(b"abcdefghij").await?;
        a.aclose().await?;
        let mut out = Vec::new();
        let mut one = [0u8; 3];
        for _ in 0..100 {
            let k = b.read(&mut one).await?;
            if k == 0 {
                break;
            }
            out.extend_from_slice(&one[..k]);
        }
        assert_eq!(out, b"abcdefghij");
        Ok(())
    })
    .unwrap();
}

#[test]
fn lockstep_streams_and_errors_map_to_io_errors() {
    mock_run(async {
        let (a, b) = lockstep_stream_pair();
        let (mut a, b) = (Compat::new(a), Compat::new(b));
        open_nursery(async |n| {
            n.spawn(async {
                let mut buf = [0u8; 5];
                let k = b.get_ref().receive_some(&mut buf).await?;
                assert_eq!(&buf[..k], b"hello");
                Ok(())
            });
            a.write_all(b"hello").await?;
            Ok(())
        })
        .await?;
        a.close().await?;
        let e = a.write_all(b"after close").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
        Ok(())
    })
    .unwrap();
}

#[test]
fn over_tcp_too() {
    mock_run(async {
        let l = trio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
        let c = trio::net::TcpStream::connect(l.local_addr()?).await?;
        let s = trio::abc::Listener::accept(&l).await?;
        let (mut c, mut s) = (Compat::new(c), Compat::new(s));
        c.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await?;
        assert_eq!(&b, b"ping");
        Ok(())
    })
    .unwrap();
}
