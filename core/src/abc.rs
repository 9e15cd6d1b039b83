//! The stream and listener traits, after Trio's `trio.abc`.
//!
//! Every byte stream in `trio` (TCP, Unix sockets, subprocess pipes, the
//! in-memory streams of [`testing`](crate::testing), TLS) implements these, so
//! protocol code written against them runs over any of them, and the
//! conformance checks in `testing` hold every implementation to the same
//! contract.
//!
//! # The contract
//!
//! - Methods take `&self`: one task may send while another receives on the
//!   same stream. Two tasks sending at once (or receiving at once) is a bug;
//!   the second gets [`Error::Busy`](crate::Error::Busy) instead of a garbled
//!   stream.
//! - Every method is a checkpoint (it checks cancellation and yields), also
//!   when it could finish at once.
//! - After [`aclose`](AsyncResource::aclose) every operation on this side
//!   fails with [`Error::Closed`](crate::Error::Closed); a task blocked in one
//!   when another task closes the stream wakes with `Closed` too. Closing
//!   twice is fine.
//! - When the peer is gone (reset, closed its receiving side while we send),
//!   operations fail with [`Error::Broken`](crate::Error::Broken) or an
//!   [`Error::Io`](crate::Error::Io) naming the OS error.
//! - A cancelled [`send_all`](SendStream::send_all) leaves the stream in an
//!   unknown state (some of the data may have been sent): the stream is then
//!   broken and later sends fail with `Broken`; close it.

use crate::error::Result;

#[cfg(feature = "futures-io")]
pub use crate::compat::Compat;

/// Something that must be closed: sockets, streams, listeners.
#[allow(async_fn_in_trait)] // single-threaded runtime: futures need not be `Send`
pub trait AsyncResource {
    /// Closes this resource. Idempotent. Tasks blocked on it wake with
    /// `Closed`. Even when cancelled (or when it reports an error), the
    /// resource is closed when this returns. A checkpoint.
    async fn aclose(&self) -> Result<()>;
}

/// The sending half of a byte stream.
#[allow(async_fn_in_trait)]
pub trait SendStream: AsyncResource {
    /// Sends all of `data`; returns when it is handed to the transport (not
    /// when the peer has it). Sending an empty slice is a checkpoint and
    /// nothing else.
    ///
    /// # Errors
    /// `Busy` if another task is sending; `Closed` after `aclose`; `Broken`
    /// if the peer is gone or an earlier `send_all` was cancelled midway;
    /// `Cancelled` (the stream is then broken if some bytes went out).
    async fn send_all(&self, data: &[u8]) -> Result<()>;

    /// Waits until a `send_all` would probably not block, without sending.
    /// For flow control: wait, then compute the freshest data and send it.
    ///
    /// # Errors
    /// As [`send_all`](SendStream::send_all) (`Busy` if a send is running).
    async fn wait_send_all_might_not_block(&self) -> Result<()>;

    /// Closes only the sending side, if this stream can: a
    /// [`HalfCloseableStream`] does its
    /// [`send_eof`](HalfCloseableStream::send_eof) and returns `Some` of its
    /// result; a stream that cannot half-close returns `None` and does
    /// nothing (not even a checkpoint).
    ///
    /// This is how generic code that only knows it has a `SendStream` asks
    /// "are you half-closeable?" (Rust has no specialization and no
    /// `isinstance`): [`StapledStream::send_eof`] calls it and closes the
    /// send half with `aclose` only when it returns `None`, as Trio's
    /// `StapledStream.send_eof` does.
    ///
    /// **Every [`HalfCloseableStream`] must override it** as
    /// `Some(self.send_eof().await)`; the default (`None`) is for streams
    /// that cannot half-close. The conformance check
    /// [`check_half_closeable_stream`](crate::testing::check_half_closeable_stream)
    /// fails for a half-closeable stream that forgot to.
    ///
    /// # Errors
    /// Inside `Some`: as [`HalfCloseableStream::send_eof`].
    async fn send_eof_if_supported(&self) -> Option<Result<()>> {
        None
    }
}

/// The receiving half of a byte stream.
#[allow(async_fn_in_trait)]
pub trait ReceiveStream: AsyncResource {
    /// Waits for data and copies some of it (at least one byte, at most
    /// `buf.len()`) into `buf`; returns how many. `Ok(0)` means end of
    /// stream: the peer will send nothing more (every later call returns
    /// `Ok(0)` too).
    ///
    /// # Errors
    /// `Io(InvalidInput)` if `buf` is empty; `Busy` if another task is
    /// receiving; `Closed` after `aclose`; `Broken` or `Io` if the
    /// transport failed.
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize>;
}

/// A bidirectional byte stream.
pub trait Stream: SendStream + ReceiveStream {}

impl<T: SendStream + ReceiveStream> Stream for T {}

/// A stream whose sending side can be closed on its own.
#[allow(async_fn_in_trait)]
pub trait HalfCloseableStream: Stream {
    /// Tells the peer that we will send nothing more (its `receive_some`
    /// then returns `Ok(0)`), while we can still receive. Idempotent.
    ///
    /// # Errors
    /// `Busy` if a send is running; `Closed` after `aclose`.
    async fn send_eof(&self) -> Result<()>;
}

/// Something that accepts incoming connections.
#[allow(async_fn_in_trait)]
pub trait Listener: AsyncResource {
    /// What `accept` returns.
    type Stream;

    /// Waits for the next connection.
    ///
    /// # Errors
    /// `Busy` if another task is accepting; `Closed` after `aclose`; `Io`
    /// with the OS error (for example `EMFILE`, out of file descriptors).
    async fn accept(&self) -> Result<Self::Stream>;
}

/// The error of an empty receive buffer (see [`ReceiveStream::receive_some`]).
pub(crate) fn empty_buffer_error() -> crate::Error {
    crate::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "receive_some needs a non-empty buffer"))
}

/// A [`SendStream`] and a [`ReceiveStream`] joined into one [`Stream`], like
/// Trio's `StapledStream` (for example a subprocess's stdin and stdout).
/// `send_eof` calls the send half's own `send_eof` when it is
/// half-closeable (see [`SendStream::send_eof_if_supported`]), and
/// otherwise closes the send half with `aclose`; `aclose` closes both
/// halves (the receive half also when closing the send half failed; if both
/// fail, the error is an [`Error::Group`](crate::Error::Group) of the two).
#[derive(Debug)]
pub struct StapledStream<S, R> {
    /// The half that sends.
    pub send_stream: S,
    /// The half that receives.
    pub receive_stream: R,
}

impl<S: SendStream, R: ReceiveStream> StapledStream<S, R> {
    /// Joins the two halves.
    pub fn new(send_stream: S, receive_stream: R) -> StapledStream<S, R> {
        StapledStream { send_stream, receive_stream }
    }
}

impl<S: SendStream, R: ReceiveStream> AsyncResource for StapledStream<S, R> {
    async fn aclose(&self) -> Result<()> {
        // Both halves are closed even if the first fails; if both fail,
        // both errors are reported (as a group), not just one.
        let a = self.send_stream.aclose().await;
        let b = self.receive_stream.aclose().await;
        crate::Error::combine(a.err().into_iter().chain(b.err()).collect()).map_or(Ok(()), Err)
    }
}

impl<S: SendStream, R: ReceiveStream> SendStream for StapledStream<S, R> {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.send_stream.send_all(data).await
    }

    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.send_stream.wait_send_all_might_not_block().await
    }

    /// A stapled stream is half-closeable: see
    /// [`send_eof`](StapledStream::send_eof).
    async fn send_eof_if_supported(&self) -> Option<Result<()>> {
        Some(HalfCloseableStream::send_eof(self).await)
    }
}

impl<S: SendStream, R: ReceiveStream> ReceiveStream for StapledStream<S, R> {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.receive_stream.receive_some(buf).await
    }
}

impl<S: SendStream, R: ReceiveStream> HalfCloseableStream for StapledStream<S, R> {
    /// The send half's own `send_eof` if it is half-closeable (it reports
    /// that through [`SendStream::send_eof_if_supported`]); otherwise closes
    /// the send half with `aclose`, as Trio does.
    ///
    /// # Errors
    /// Whatever the send half's `send_eof` or `aclose` returns.
    async fn send_eof(&self) -> Result<()> {
        match self.send_stream.send_eof_if_supported().await {
            Some(r) => r,
            None => self.send_stream.aclose().await,
        }
    }
}
