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
/// adapter: a cancelled poll fails with an `io::Error` that wraps
/// [`Error::Cancelled`], which `?` turns back into `Cancelled` and which
/// the scope catches even when the foreign code wrapped it (see
/// [`CancelScope`](crate::CancelScope#foreign-io-and-dropped-futures)). A write is complete once `poll_write` returned `Ready`; a write
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
    ops: Ops,
}

/// The operations in flight of a `futures-io` adapter over a trio stream
/// (shared by [`Compat`] and the TLS stream's own impl): each poll-style
/// call drives the stream's own (checkpointing, cancellable) operation,
/// kept between polls.
#[derive(Default)]
pub(crate) struct Ops {
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

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("reading", &self.read.is_some())
            .field("writing", &self.write.as_ref().map(|w| w.1))
            .finish_non_exhaustive()
    }
}

impl<S> std::fmt::Debug for Compat<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compat").field("ops", &self.ops).finish_non_exhaustive()
    }
}

impl<S> Compat<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> Compat<S> {
        Compat { stream: Rc::new(stream), ops: Ops::default() }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

/// The most a read asks the stream for at once.
const READ_CHUNK: usize = 64 * 1024;

impl Ops {
    /// `poll_read` over `stream`.
    pub(crate) fn poll_read<S: ReceiveStream + 'static>(
        &mut self,
        stream: &Rc<S>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.leftover_pos < self.leftover.len() {
            let n = (self.leftover.len() - self.leftover_pos).min(buf.len());
            buf[..n].copy_from_slice(&self.leftover[self.leftover_pos..self.leftover_pos + n]);
            self.leftover_pos += n;
            return Poll::Ready(Ok(n));
        }
        if self.read.is_none() {
            let mut space = std::mem::take(&mut self.leftover);
            space.clear();
            space.resize(buf.len().min(READ_CHUNK), 0);
            let stream = stream.clone();
            self.read = Some(Box::pin(async move {
                let r = stream.receive_some(&mut space).await;
                (r, space)
            }));
        }
        let Some(op) = self.read.as_mut() else { return Poll::Ready(Ok(0)) };
        let (r, got) = std::task::ready!(op.as_mut().poll(cx));
        self.read = None;
        let n = r.map_err(Error::into_io)?;
        let k = n.min(buf.len());
        buf[..k].copy_from_slice(&got[..k]);
        // Keep the rest (the caller's buffer shrank since the read began),
        // and the allocation for the next read.
        self.leftover = got;
        self.leftover.truncate(n);
        self.leftover_pos = k;
        Poll::Ready(Ok(k))
    }

    /// Drives the send in flight, if any, to its end.
    fn poll_pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((op, len)) = self.write.as_mut() else { return Poll::Ready(Ok(0)) };
        let r = std::task::ready!(op.as_mut().poll(cx));
        let len = *len;
        self.write = None;
        Poll::Ready(r.map(|()| len).map_err(Error::into_io))
    }

    /// `poll_write` over `stream`.
    pub(crate) fn poll_write<S: SendStream + 'static>(
        &mut self,
        stream: &Rc<S>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write.is_none() {
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let owned = data.to_vec();
            let stream = stream.clone();
            self.write = Some((Box::pin(async move { stream.send_all(&owned).await }), data.len()));
        }
        // A write already in flight carries the data of the call that
        // started it (callers repeat the same data after `Pending`).
        self.poll_pending_write(cx)
    }

    /// `poll_flush`: the send in flight, if any, to its end.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_pending_write(cx).map_ok(drop)
    }

    /// `poll_close` over `stream`: the send in flight, then `aclose`.
    pub(crate) fn poll_close<S: SendStream + 'static>(
        &mut self,
        stream: &Rc<S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending_write(cx))?;
        if self.close.is_none() {
            let stream = stream.clone();
            self.close = Some(Box::pin(async move { stream.aclose().await }));
        }
        let Some(op) = self.close.as_mut() else { return Poll::Ready(Ok(())) };
        let r = std::task::ready!(op.as_mut().poll(cx));
        self.close = None;
        Poll::Ready(r.map_err(Error::into_io))
    }
}

impl<S: ReceiveStream + 'static> futures_io::AsyncRead for Compat<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.ops.poll_read(&this.stream, cx, buf)
    }
}

impl<S: SendStream + 'static> futures_io::AsyncWrite for Compat<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.ops.poll_write(&this.stream, cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ops.poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.ops.poll_close(&this.stream, cx)
    }
}
