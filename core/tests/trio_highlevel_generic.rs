//! Ports of Python Trio's `src/trio/_tests/test_highlevel_generic.py`
//! (`StapledStream`), see `docs/TRIO_CONFORMANCE.md` (section test_highlevel_generic.py).

mod util;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use trio::abc::{AsyncResource, HalfCloseableStream, ReceiveStream, SendStream};
use trio::testing::memory_stream_pair;
use trio::{Error, Result, StapledStream, checkpoint};
use util::*;

/// What a record stream saw, shared with the test.
type Record = Rc<RefCell<Vec<String>>>;

fn take(r: &Record) -> Vec<String> {
    std::mem::take(&mut r.borrow_mut())
}

/// A send stream that cannot half-close: it records each call.
struct RecordSendStream {
    record: Record,
    close_error: Option<u32>,
}

impl AsyncResource for RecordSendStream {
    async fn aclose(&self) -> Result<()> {
        self.record.borrow_mut().push("aclose".into());
        checkpoint().await?;
        self.close_error.map_or(Ok(()), |n| Err(boom(n)))
    }
}

impl SendStream for RecordSendStream {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.record.borrow_mut().push(format!("send_all {}", String::from_utf8_lossy(data)));
        checkpoint().await
    }
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.record.borrow_mut().push("wait_send_all_might_not_block".into());
        checkpoint().await
    }
}

/// A receive stream that records each call and is always at end of stream.
struct RecordReceiveStream {
    record: Record,
    close_error: Option<u32>,
}

impl AsyncResource for RecordReceiveStream {
    async fn aclose(&self) -> Result<()> {
        self.record.borrow_mut().push("aclose".into());
        checkpoint().await?;
        self.close_error.map_or(Ok(()), |n| Err(boom(n)))
    }
}

impl ReceiveStream for RecordReceiveStream {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.record.borrow_mut().push(format!("receive_some {}", buf.len()));
        checkpoint().await?;
        Ok(0)
    }
}

/// A half-closeable stream used as a send half: it records `send_eof` (the
/// Python test monkeypatches a `send_eof` onto its record stream).
struct RecordHalfCloseable {
    record: Record,
}

impl AsyncResource for RecordHalfCloseable {
    async fn aclose(&self) -> Result<()> {
        self.record.borrow_mut().push("aclose".into());
        checkpoint().await
    }
}

impl SendStream for RecordHalfCloseable {
    async fn send_all(&self, _data: &[u8]) -> Result<()> {
        checkpoint().await
    }
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        checkpoint().await
    }
    async fn send_eof_if_supported(&self) -> Option<Result<()>> {
        Some(self.send_eof().await)
    }
}

impl ReceiveStream for RecordHalfCloseable {
    async fn receive_some(&self, _buf: &mut [u8]) -> Result<usize> {
        checkpoint().await?;
        Ok(0)
    }
}

impl HalfCloseableStream for RecordHalfCloseable {
    async fn send_eof(&self) -> Result<()> {
        self.record.borrow_mut().push("send_eof".into());
        checkpoint().await
    }
}

impl fmt::Debug for RecordHalfCloseable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordHalfCloseable")
    }
}

// trio: test_highlevel_generic.py::test_StapledStream
#[test]
fn stapled_stream_forwards_each_call_to_its_half() {
    mock_run(async {
        let (sr, rr) = (Record::default(), Record::default());
        let stapled = StapledStream::new(
            RecordSendStream { record: sr.clone(), close_error: None },
            RecordReceiveStream { record: rr.clone(), close_error: None },
        );
        // The halves are reachable as fields (Python's `stapled.send_stream is ...`).
        assert!(Rc::ptr_eq(&stapled.send_stream.record, &sr));
        assert!(Rc::ptr_eq(&stapled.receive_stream.record, &rr));

        stapled.send_all(b"foo").await?;
        stapled.wait_send_all_might_not_block().await?;
        assert_eq!(take(&sr), ["send_all foo", "wait_send_all_might_not_block"]);

        // A send half that cannot half-close is closed by send_eof.
        stapled.send_eof().await?;
        assert_eq!(take(&sr), ["aclose"]);
        assert!(take(&rr).is_empty());

        let mut buf = [0u8; 1234];
        assert_eq!(stapled.receive_some(&mut buf).await?, 0);
        assert_eq!(take(&rr), ["receive_some 1234"]);
        assert!(take(&sr).is_empty());

        stapled.aclose().await?;
        assert_eq!(take(&rr), ["aclose"]);
        assert_eq!(take(&sr), ["aclose"]);
        Ok(())
    })
    .unwrap();
}

// trio: test_highlevel_generic.py::test_StapledStream (the send half that
// has its own send_eof: it is called, the half is not closed)
#[test]
fn stapled_send_eof_uses_the_send_halfs_own_send_eof() {
    mock_run(async {
        let (sr, rr) = (Record::default(), Record::default());
        let stapled = StapledStream::new(
            RecordHalfCloseable { record: sr.clone() },
            RecordReceiveStream { record: rr.clone(), close_error: None },
        );
        stapled.send_eof().await?;
        assert_eq!(take(&sr), ["send_eof"], "send_eof reaches the half's own send_eof, no aclose");
        assert!(take(&rr).is_empty());
        // A stapled stream is itself half-closeable to generic code.
        assert!(matches!(stapled.send_eof_if_supported().await, Some(Ok(()))));
        assert_eq!(take(&sr), ["send_eof"]);
        Ok(())
    })
    .unwrap();
}

// trio: test_highlevel_generic.py::test_StapledStream (nested: a stapled
// stream as the send half of another keeps half-closing, not closing)
#[test]
fn nested_stapled_send_eof_half_closes_the_innermost_stream() {
    mock_run(async {
        let (sr, rr) = (Record::default(), Record::default());
        let inner = StapledStream::new(
            RecordHalfCloseable { record: sr.clone() },
            RecordReceiveStream { record: rr.clone(), close_error: None },
        );
        let (_a, b) = memory_stream_pair();
        let outer = StapledStream::new(inner, b);
        outer.send_eof().await?;
        assert_eq!(take(&sr), ["send_eof"]);
        assert!(take(&rr).is_empty(), "the inner receive half stays open");
        Ok(())
    })
    .unwrap();
}

// trio: test_highlevel_generic.py::test_StapledStream (with a real
// half-closeable send half: a TCP stream stays readable after send_eof)
#[cfg(not(target_os = "wasi"))]
#[test]
fn stapled_send_eof_on_a_tcp_send_half_keeps_it_readable() {
    mock_run(async {
        let (client, server) = tcp_pair().await?;
        let (_a, b) = memory_stream_pair();
        let stapled = StapledStream::new(client, b);
        stapled.send_eof().await?;
        let mut buf = [0u8; 8];
        assert_eq!(server.receive_some(&mut buf).await?, 0, "the peer sees EOF");
        server.send_all(b"hi").await?;
        // The client was half-closed, not closed: it still receives.
        let n = stapled.send_stream.receive_some(&mut buf).await?;
        assert_eq!(&buf[..n], b"hi");
        Ok(())
    })
    .unwrap();
}

// trio: test_highlevel_generic.py::test_StapledStream_with_erroring_close
#[test]
fn stapled_aclose_closes_both_halves_even_if_one_fails() {
    mock_run(async {
        let (sr, rr) = (Record::default(), Record::default());
        let stapled = StapledStream::new(
            RecordSendStream { record: sr.clone(), close_error: Some(1) },
            RecordReceiveStream { record: rr.clone(), close_error: Some(2) },
        );
        let e = stapled.aclose().await.unwrap_err();
        // Neither error is lost (Trio chains them through `__context__`).
        assert!(matches!(e, Error::Group(_)), "{e:?}");
        assert_eq!(booms(&e), [1, 2]);
        assert_eq!(take(&sr), ["aclose"]);
        assert_eq!(take(&rr), ["aclose"]);

        // Only the send half failing: the receive half is still closed.
        let stapled = StapledStream::new(
            RecordSendStream { record: sr.clone(), close_error: Some(3) },
            RecordReceiveStream { record: rr.clone(), close_error: None },
        );
        let e = stapled.aclose().await.unwrap_err();
        assert_eq!(booms(&e), [3]);
        assert!(!matches!(e, Error::Group(_)));
        assert_eq!(take(&rr), ["aclose"]);
        Ok(())
    })
    .unwrap();
}
