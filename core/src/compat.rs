//! `futures-io` for any of our streams: [`Compat`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::abc::{ReceiveStream, SendStream};
use crate::error::Error;

type Op<T> = Pin<Box<dyn Future<Output = T>>>;

/// `futures-io`'s `AsyncRead` and `AsyncWrite` over any [`ReceiveStream`] /
/// [`SendStream`] (memory streams, stapled streams, TLS, ...), so that the
/// ecosystem's codecs and protocols run over them. The socket and pipe types
/// implement the traits directly (without the allocation per operation this
/// adapter makes); use this for the others.
///
/// Reads and writes are the streams' own operations, so they are
/// checkpoints and cancellation works as usual for the task that polls the
/// adapter. A write is complete once `poll_write` returned `Ready`; a write
/// that was started and then abandoned (its future dropped while `Pending`)
/// may or may not have been sent: as with a cancelled `send_all`, treat the
/// stream as broken. `poll_close` closes the whole stream.
///
/// ```
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use trio::abc::Compat;
/// use trio::testing::memory_stream_pair;
///
/// trio::run(async {
///     let (a, b) = memory_stream_pair();
///     let (mut a, mut b) = (Compat::new(a), Compat::new(b));
///     a.write_all(b"hello").await?;
///     a.close().await?;
///     let mut got = String::new();
///     b.read_to_string(&mut got).await?;
///     assert_eq!(got, "hello");
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct Compat<S> {
    stream: Rc<S>,
    /// A receive in flight, with the buffer it fills.
    read: Option<Op<(crate::Result<usize>, Vec<u8>)>>,
    /// Bytes received but not yet handed out (when the caller's buffer was
    /// smaller than what arrived), and how far they were handed out.
    leftover: Vec<u8>,
    leftover_pos: usize,
    /// A send in flight, and how many bytes of the caller's data it carries.
    write: Option<(Op<crate::Result<()>>, usize)>,
    close: Option<Op<crate::Result<()>>>,
}

impl<S> std::fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compat")
            .field("reading", &self.read.is_some())
            .field("writing", &self.write.as_ref().map(|w| w.1))
            .finish_non_exhaustive()
    }
}

impl<S> Compat<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Compat<S> {
        Compat { stream: Rc::new(stream), read: None, leftover: Vec::new(), leftover_pos: 0, write: None, close: None }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// The most a read asks the stream for at once.
const READ_CHUNK: usize = 64 * 1024;

impl<S: ReceiveStream + 'static> futures_io::AsyncRead for Compat<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.leftover_pos < this.leftover.len() {
            let n = (this.leftover.len() - this.leftover_pos).min(buf.len());
            buf[..n].copy_from_slice(&this.leftover[this.leftover_pos..this.leftover_pos + n]);
            this.leftover_pos += n;
            return Poll::Ready(Ok(n));
        }
        if this.read.is_none() {
            let mut space = std::mem::take(&mut this.leftover);
            space.clear();
            space.resize(buf.len().min(READ_CHUNK), 0);
            let stream = this.stream.clone();
            this.read = Some(Box::pin(async move {
                let r = stream.receive_some(&mut space).await;
                (r, space)
            }));
        }
        let Some(op) = this.read.as_mut() else { return Poll::Ready(Ok(0)) };
        let (r, got) = std::task::ready!(op.as_mut().poll(cx));
        this.read = None;
        let n = r.map_err(Error::into_io)?;
        let k = n.min(buf.len());
        buf[..k].copy_from_slice(&got[..k]);
        // Keep the rest (the caller's buffer shrank since the read began),
        // and the allocation for the next read.
        this.leftover = got;
        this.leftover.truncate(n);
        this.leftover_pos = k;
        Poll::Ready(Ok(k))
    }
}

impl<S: SendStream + 'static> Compat<S> {
    /// Drives the send in flight, if any, to its end.
    fn poll_pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((op, len)) = self.write.as_mut() else { return Poll::Ready(Ok(0)) };
        let r = std::task::ready!(op.as_mut().poll(cx));
        let len = *len;
        self.write = None;
        Poll::Ready(r.map(|()| len).map_err(Error::into_io))
    }
}

impl<S: SendStream + 'static> futures_io::AsyncWrite for Compat<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write.is_none() {
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let owned = data.to_vec();
            let stream = this.stream.clone();
            this.write = Some((Box::pin(async move { stream.send_all(&owned).await }), data.len()));
        }
        // A write already in flight carries the data of the call that
        // started it (callers repeat the same data after `Pending`).
        this.poll_pending_write(cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_pending_write(cx).map_ok(drop)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending_write(cx))?;
        if this.close.is_none() {
            let stream = this.stream.clone();
            this.close = Some(Box::pin(async move { stream.aclose().await }));
        }
        let Some(op) = this.close.as_mut() else { return Poll::Ready(Ok(())) };
        let r = std::task::ready!(op.as_mut().poll(cx));
        this.close = None;
        Poll::Ready(r.map_err(Error::into_io))
    }
}
