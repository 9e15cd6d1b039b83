//! In-memory streams for tests (Trio's `trio.testing._memory_streams`).
//!
//! Two families:
//!
//! - **Buffered**: [`MemorySendStream`] and [`MemoryReceiveStream`] each hold
//!   an unbounded buffer. [`memory_stream_one_way_pair`] connects the two with
//!   hooks that call [`memory_stream_pump`], so data flows from one to the
//!   other as soon as it is sent; [`memory_stream_pair`] staples two one-way
//!   pairs into a bidirectional [`MemoryStream`]. The hooks are public and can
//!   be replaced at any time, to stall the flow, trickle it byte by byte, or
//!   inject failures.
//! - **Lockstep**: [`lockstep_stream_one_way_pair`] and
//!   [`lockstep_stream_pair`] have no buffer at all: `send_all` returns only
//!   once a receiver has taken every byte. Useful for flow-control tests and
//!   as the "clogged" streams of the conformance checks.
//!
//! All of these follow the [`abc`](crate::abc) contract: concurrent sends (or
//! receives) on one stream fail with [`Error::Busy`], every operation after
//! `aclose` fails with [`Error::Closed`], receiving after the peer closed
//! returns `Ok(0)`, sending after the receiver closed fails with
//! [`Error::Broken`], and every operation is a checkpoint (also when it fails).
//!
//! # Hooks
//!
//! An [`AsyncHook`] wraps an async closure that receives the stream it is
//! installed on, for example
//! `AsyncHook::new(async |s: &MemorySendStream| { ...; Ok(()) })`; a
//! [`SyncHook`] wraps a plain closure of the same shape. Passing the stream to
//! the hook (rather than letting the hook capture it) keeps hooks from owning
//! their own stream. Hooks are `Fn`: keep mutable state in a `Cell` or
//! `RefCell`. An error from an async hook is returned by the operation that
//! called it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::rc::Rc;

use crate::abc::{AsyncResource, ReceiveStream, SendStream, StapledStream, empty_buffer_error};
use crate::error::{Error, Result};
use crate::lowlevel::{cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled};
use crate::sync::ParkingLot;

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;
type HookFn<S> = dyn for<'a> Fn(&'a S) -> HookFuture<'a>;

/// An async callback installed on a memory stream (`send_all_hook`,
/// `wait_send_all_might_not_block_hook`, `receive_some_hook`). It is called
/// with the stream it is installed on; its error, if any, becomes the error
/// of the operation that called it. Clones share the callback.
pub struct AsyncHook<S> {
    f: Rc<HookFn<S>>,
}

impl<S: 'static> AsyncHook<S> {
    /// Wraps an async closure, for example
    /// `AsyncHook::new(async |s: &MemorySendStream| { ...; Ok(()) })`.
    pub fn new<F>(f: F) -> AsyncHook<S>
    where
        F: AsyncFn(&S) -> Result<()> + 'static,
    {
        let f = Rc::new(f);
        AsyncHook {
            f: Rc::new(move |s: &S| -> HookFuture<'_> {
                let f = f.clone();
                Box::pin(async move { (*f)(s).await })
            }),
        }
    }
}

impl<S> AsyncHook<S> {
    async fn call(&self, stream: &S) -> Result<()> {
        (self.f)(stream).await
    }
}

impl<S> Clone for AsyncHook<S> {
    fn clone(&self) -> AsyncHook<S> {
        AsyncHook { f: self.f.clone() }
    }
}

impl<S> fmt::Debug for AsyncHook<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncHook(..)")
    }
}

/// A synchronous callback installed on a memory stream (`close_hook`). It is
/// called with the stream it is installed on. Clones share the callback.
pub struct SyncHook<S> {
    f: Rc<dyn Fn(&S)>,
}

impl<S> SyncHook<S> {
    /// Wraps a closure, for example `SyncHook::new(|s: &MemorySendStream| ...)`.
    pub fn new<F>(f: F) -> SyncHook<S>
    where
        F: Fn(&S) + 'static,
    {
        SyncHook { f: Rc::new(f) }
    }

    fn call(&self, stream: &S) {
        (self.f)(stream)
    }
}

impl<S> Clone for SyncHook<S> {
    fn clone(&self) -> SyncHook<S> {
        SyncHook { f: self.f.clone() }
    }
}

impl<S> fmt::Debug for SyncHook<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncHook(..)")
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A raised flag that is lowered when dropped: the conflict detector of
/// Trio (`Busy` for a second concurrent user), and `receiver_waiting`.
struct Flag<'a>(&'a Cell<bool>);

impl<'a> Flag<'a> {
    /// Raises the flag, or `None` if it is already up.
    fn raise(cell: &'a Cell<bool>) -> Option<Flag<'a>> {
        if cell.replace(true) { None } else { Some(Flag(cell)) }
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Fails with `err` after a full checkpoint (so that failing operations are
/// checkpoints too; a cancellation takes precedence).
async fn fail<T>(err: Error) -> Result<T> {
    checkpoint().await?;
    Err(err)
}

fn invalid_max_bytes() -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "max_bytes must be at least 1"))
}

// ---------------------------------------------------------------------------
// The unbounded byte queue
// ---------------------------------------------------------------------------

/// An unbounded byte buffer with a "closed" mark. Closing is like closing the
/// sending side of a channel: `put` then fails with `Closed`, and the getters
/// drain what is left and then report end of data (an empty result).
#[derive(Default)]
struct ByteQueue {
    data: RefCell<VecDeque<u8>>,
    closed: Cell<bool>,
    lot: ParkingLot,
    fetching: Cell<bool>,
}

impl ByteQueue {
    fn close(&self) {
        self.closed.set(true);
        self.lot.unpark_all();
    }

    fn close_and_wipe(&self) {
        self.data.borrow_mut().clear();
        self.close();
    }

    fn put(&self, data: &[u8]) -> Result<()> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        if !data.is_empty() {
            self.data.borrow_mut().extend(data);
            self.lot.unpark_all();
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.data.borrow().len()
    }

    fn ready(&self) -> bool {
        self.closed.get() || !self.data.borrow().is_empty()
    }

    /// Takes up to `max` bytes (all with `None`); empty at end of data.
    fn take_vec(&self, max: Option<usize>) -> Vec<u8> {
        let mut data = self.data.borrow_mut();
        let n = max.map_or(data.len(), |m| m.min(data.len()));
        data.drain(..n).collect()
    }

    /// Copies up to `buf.len()` bytes into `buf`; 0 at end of data.
    fn take_into(&self, buf: &mut [u8]) -> usize {
        // `Read` for `VecDeque<u8>` consumes from the front and never fails.
        self.data.borrow_mut().read(buf).unwrap_or(0)
    }

    /// Parks until there is data or the queue is closed; a checkpoint either
    /// way.
    async fn wait_ready(&self) -> Result<()> {
        if self.ready() {
            return checkpoint().await;
        }
        // Every wakeup comes from `put` or `close`; the loop re-checks in
        // case the data was taken meanwhile.
        while !self.ready() {
            self.lot.park().await?;
        }
        Ok(())
    }

    fn get_nowait(&self, max: Option<usize>) -> Result<Vec<u8>> {
        if max == Some(0) {
            return Err(invalid_max_bytes());
        }
        let Some(_fetch) = Flag::raise(&self.fetching) else {
            return Err(Error::Busy);
        };
        if !self.ready() {
            return Err(Error::WouldBlock);
        }
        Ok(self.take_vec(max))
    }

    async fn get(&self, max: Option<usize>) -> Result<Vec<u8>> {
        if max == Some(0) {
            return fail(invalid_max_bytes()).await;
        }
        let Some(_fetch) = Flag::raise(&self.fetching) else {
            return fail(Error::Busy).await;
        };
        self.wait_ready().await?;
        Ok(self.take_vec(max))
    }
}

// ---------------------------------------------------------------------------
// MemorySendStream
// ---------------------------------------------------------------------------

struct SendInner {
    outgoing: ByteQueue,
    sending: Cell<bool>,
    send_all_hook: RefCell<Option<AsyncHook<MemorySendStream>>>,
    wait_send_all_might_not_block_hook: RefCell<Option<AsyncHook<MemorySendStream>>>,
    close_hook: RefCell<Option<SyncHook<MemorySendStream>>>,
}

/// An in-memory [`SendStream`] (Trio's `MemorySendStream`): `send_all` appends
/// to an unbounded outgoing buffer, which the test (or a hook) drains with
/// [`get_data`](MemorySendStream::get_data) or
/// [`memory_stream_pump`].
///
/// Three optional hooks customize it: the `send_all_hook` runs at the end of
/// every `send_all` (after the data is buffered), the
/// `wait_send_all_might_not_block_hook` at the end of every
/// `wait_send_all_might_not_block`, and the `close_hook` when the stream is
/// closed. The hooks can be changed at any time.
///
/// A handle: clones name the same stream. Not `Send`.
#[derive(Clone)]
pub struct MemorySendStream {
    inner: Rc<SendInner>,
}

impl fmt::Debug for MemorySendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("MemorySendStream")
            .field("buffered", &i.outgoing.len())
            .field("closed", &i.outgoing.closed.get())
            .field("send_all_hook", &i.send_all_hook.borrow().is_some())
            .field("wait_send_all_might_not_block_hook", &i.wait_send_all_might_not_block_hook.borrow().is_some())
            .field("close_hook", &i.close_hook.borrow().is_some())
            .finish()
    }
}

impl Default for MemorySendStream {
    fn default() -> MemorySendStream {
        MemorySendStream::new()
    }
}

impl MemorySendStream {
    /// A stream with an empty buffer and no hooks.
    pub fn new() -> MemorySendStream {
        MemorySendStream {
            inner: Rc::new(SendInner {
                outgoing: ByteQueue::default(),
                sending: Cell::new(false),
                send_all_hook: RefCell::new(None),
                wait_send_all_might_not_block_hook: RefCell::new(None),
                close_hook: RefCell::new(None),
            }),
        }
    }

    /// The `send_all_hook`, if any.
    pub fn send_all_hook(&self) -> Option<AsyncHook<MemorySendStream>> {
        self.inner.send_all_hook.borrow().clone()
    }

    /// Installs (or with `None` removes) the `send_all_hook`; returns the
    /// previous one.
    pub fn set_send_all_hook(&self, hook: Option<AsyncHook<MemorySendStream>>) -> Option<AsyncHook<MemorySendStream>> {
        self.inner.send_all_hook.replace(hook)
    }

    /// The `wait_send_all_might_not_block_hook`, if any.
    pub fn wait_send_all_might_not_block_hook(&self) -> Option<AsyncHook<MemorySendStream>> {
        self.inner.wait_send_all_might_not_block_hook.borrow().clone()
    }

    /// Installs (or with `None` removes) the
    /// `wait_send_all_might_not_block_hook`; returns the previous one.
    pub fn set_wait_send_all_might_not_block_hook(
        &self,
        hook: Option<AsyncHook<MemorySendStream>>,
    ) -> Option<AsyncHook<MemorySendStream>> {
        self.inner.wait_send_all_might_not_block_hook.replace(hook)
    }

    /// The `close_hook`, if any.
    pub fn close_hook(&self) -> Option<SyncHook<MemorySendStream>> {
        self.inner.close_hook.borrow().clone()
    }

    /// Installs (or with `None` removes) the `close_hook`; returns the
    /// previous one.
    pub fn set_close_hook(&self, hook: Option<SyncHook<MemorySendStream>>) -> Option<SyncHook<MemorySendStream>> {
        self.inner.close_hook.replace(hook)
    }

    /// Marks the stream closed (later sends fail with `Closed`; the buffered
    /// data can still be drained, then the getters report end of data), then
    /// calls the `close_hook`. Idempotent (the hook runs every time). Not a
    /// checkpoint.
    pub fn close(&self) {
        self.inner.outgoing.close();
        let hook = self.close_hook();
        if let Some(hook) = hook {
            hook.call(self);
        }
    }

    /// Takes data out of the outgoing buffer, waiting until there is some:
    /// at most `max_bytes` bytes, or everything buffered with `None`. After
    /// the stream is closed and drained it returns an empty vector.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Errors
    /// `Busy` if another task is getting data; `Io(InvalidInput)` if
    /// `max_bytes` is `Some(0)`; `Cancelled` (nothing was taken).
    pub async fn get_data(&self, max_bytes: Option<usize>) -> Result<Vec<u8>> {
        self.inner.outgoing.get(max_bytes).await
    }

    /// Like [`get_data`](MemorySendStream::get_data), without waiting. Not a
    /// checkpoint.
    ///
    /// # Errors
    /// `WouldBlock` if the buffer is empty and the stream is not closed;
    /// `Busy` if another task is in `get_data`; `Io(InvalidInput)` if
    /// `max_bytes` is `Some(0)`.
    pub fn get_data_nowait(&self, max_bytes: Option<usize>) -> Result<Vec<u8>> {
        self.inner.outgoing.get_nowait(max_bytes)
    }

    /// How many bytes are buffered (sent, not yet taken out).
    pub fn buffered_len(&self) -> usize {
        self.inner.outgoing.len()
    }
}

impl AsyncResource for MemorySendStream {
    /// [`close`](MemorySendStream::close), then a checkpoint (the stream is
    /// closed even if that reports `Cancelled`).
    async fn aclose(&self) -> Result<()> {
        self.close();
        checkpoint().await
    }
}

impl SendStream for MemorySendStream {
    /// Appends `data` to the outgoing buffer, then runs the `send_all_hook`
    /// (whose error is returned). `Busy` if another task is in `send_all` or
    /// `wait_send_all_might_not_block`, `Closed` after `close`. A
    /// cancellation at the initial checkpoint buffers nothing (the stream
    /// stays usable); once buffered, the data stays sent even if the hook is
    /// cancelled.
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        let Some(_sending) = Flag::raise(&self.inner.sending) else {
            return fail(Error::Busy).await;
        };
        checkpoint().await?;
        self.inner.outgoing.put(data)?;
        let hook = self.send_all_hook();
        if let Some(hook) = hook {
            hook.call(self).await?;
        }
        Ok(())
    }

    /// Runs the `wait_send_all_might_not_block_hook`, if any, and returns.
    /// `Busy` and `Closed` as `send_all`.
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let Some(_sending) = Flag::raise(&self.inner.sending) else {
            return fail(Error::Busy).await;
        };
        checkpoint().await?;
        if self.inner.outgoing.closed.get() {
            return Err(Error::Closed);
        }
        let hook = self.wait_send_all_might_not_block_hook();
        if let Some(hook) = hook {
            hook.call(self).await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// MemoryReceiveStream
// ---------------------------------------------------------------------------

struct ReceiveInner {
    incoming: ByteQueue,
    closed: Cell<bool>,
    receiving: Cell<bool>,
    receive_some_hook: RefCell<Option<AsyncHook<MemoryReceiveStream>>>,
    close_hook: RefCell<Option<SyncHook<MemoryReceiveStream>>>,
}

/// An in-memory [`ReceiveStream`] (Trio's `MemoryReceiveStream`): the test
/// (or a hook, or [`memory_stream_pump`]) feeds it with
/// [`put_data`](MemoryReceiveStream::put_data) and
/// [`put_eof`](MemoryReceiveStream::put_eof), and `receive_some` takes from
/// its unbounded buffer.
///
/// Two optional hooks: the `receive_some_hook` runs at the start of every
/// `receive_some` (before it looks at the buffer, so it can put data there),
/// and the `close_hook` when the stream is closed. They can be changed at any
/// time.
///
/// A handle: clones name the same stream. Not `Send`.
#[derive(Clone)]
pub struct MemoryReceiveStream {
    inner: Rc<ReceiveInner>,
}

impl fmt::Debug for MemoryReceiveStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("MemoryReceiveStream")
            .field("buffered", &i.incoming.len())
            .field("eof", &i.incoming.closed.get())
            .field("closed", &i.closed.get())
            .field("receive_some_hook", &i.receive_some_hook.borrow().is_some())
            .field("close_hook", &i.close_hook.borrow().is_some())
            .finish()
    }
}

impl Default for MemoryReceiveStream {
    fn default() -> MemoryReceiveStream {
        MemoryReceiveStream::new()
    }
}

impl MemoryReceiveStream {
    /// A stream with an empty buffer and no hooks.
    pub fn new() -> MemoryReceiveStream {
        MemoryReceiveStream {
            inner: Rc::new(ReceiveInner {
                incoming: ByteQueue::default(),
                closed: Cell::new(false),
                receiving: Cell::new(false),
                receive_some_hook: RefCell::new(None),
                close_hook: RefCell::new(None),
            }),
        }
    }

    /// The `receive_some_hook`, if any.
    pub fn receive_some_hook(&self) -> Option<AsyncHook<MemoryReceiveStream>> {
        self.inner.receive_some_hook.borrow().clone()
    }

    /// Installs (or with `None` removes) the `receive_some_hook`; returns the
    /// previous one.
    pub fn set_receive_some_hook(
        &self,
        hook: Option<AsyncHook<MemoryReceiveStream>>,
    ) -> Option<AsyncHook<MemoryReceiveStream>> {
        self.inner.receive_some_hook.replace(hook)
    }

    /// The `close_hook`, if any.
    pub fn close_hook(&self) -> Option<SyncHook<MemoryReceiveStream>> {
        self.inner.close_hook.borrow().clone()
    }

    /// Installs (or with `None` removes) the `close_hook`; returns the
    /// previous one.
    pub fn set_close_hook(&self, hook: Option<SyncHook<MemoryReceiveStream>>) -> Option<SyncHook<MemoryReceiveStream>> {
        self.inner.close_hook.replace(hook)
    }

    /// Appends `data` to the buffer (waking a blocked `receive_some`). Not a
    /// checkpoint.
    ///
    /// # Errors
    /// `Closed` after [`put_eof`](MemoryReceiveStream::put_eof) or after this
    /// stream was closed.
    pub fn put_data(&self, data: &[u8]) -> Result<()> {
        self.inner.incoming.put(data)
    }

    /// Marks the end of the data: once the buffer is drained, `receive_some`
    /// returns `Ok(0)`. Idempotent. Not a checkpoint.
    pub fn put_eof(&self) {
        self.inner.incoming.close();
    }

    /// How many bytes are buffered (put, not yet received).
    pub fn buffered_len(&self) -> usize {
        self.inner.incoming.len()
    }

    /// Discards the buffered data and marks the stream closed (a blocked
    /// `receive_some` wakes with `Closed`, later calls fail with `Closed`,
    /// `put_data` fails with `Closed`), then calls the `close_hook`.
    /// Idempotent (the hook runs every time). Not a checkpoint.
    pub fn close(&self) {
        self.inner.closed.set(true);
        self.inner.incoming.close_and_wipe();
        let hook = self.close_hook();
        if let Some(hook) = hook {
            hook.call(self);
        }
    }
}

impl AsyncResource for MemoryReceiveStream {
    /// [`close`](MemoryReceiveStream::close), then a checkpoint (the stream
    /// is closed even if that reports `Cancelled`).
    async fn aclose(&self) -> Result<()> {
        self.close();
        checkpoint().await
    }
}

impl ReceiveStream for MemoryReceiveStream {
    /// Runs the `receive_some_hook` (whose error is returned), then takes
    /// data from the buffer, waiting if it is empty; `Ok(0)` after
    /// `put_eof` once the buffer is drained.
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return fail(empty_buffer_error()).await;
        }
        let Some(_receiving) = Flag::raise(&self.inner.receiving) else {
            return fail(Error::Busy).await;
        };
        checkpoint().await?;
        if self.inner.closed.get() {
            return Err(Error::Closed);
        }
        let hook = self.receive_some_hook();
        if let Some(hook) = hook {
            hook.call(self).await?;
        }
        // `incoming` being closed means EOF; `closed` means we were closed
        // (which also closes `incoming`, to wake us), so check it again.
        self.inner.incoming.wait_ready().await?;
        if self.inner.closed.get() {
            return Err(Error::Closed);
        }
        Ok(self.inner.incoming.take_into(buf))
    }
}

// ---------------------------------------------------------------------------
// Pump and pairs
// ---------------------------------------------------------------------------

/// Moves data from `send`'s outgoing buffer into `recv`'s buffer: at most
/// `max_bytes` bytes, or all of it with `None`. If `send` is closed and
/// drained, puts an EOF into `recv` instead. Returns whether it did something
/// (false: nothing was buffered). Not a checkpoint.
///
/// This is what the hooks of [`memory_stream_one_way_pair`] call; call it
/// yourself to move data on your own schedule:
///
/// ```
/// use trio::abc::{ReceiveStream, SendStream};
/// use trio::testing::{memory_stream_pump, MemoryReceiveStream, MemorySendStream};
///
/// trio::run(async {
///     let (s, r) = (MemorySendStream::new(), MemoryReceiveStream::new());
///     s.send_all(b"abc").await?;
///     assert!(memory_stream_pump(&s, &r, Some(2))?);
///     let mut buf = [0; 8];
///     assert_eq!(r.receive_some(&mut buf).await?, 2);
///     assert_eq!(&buf[..2], b"ab");
///     Ok(())
/// })
/// .unwrap();
/// ```
///
/// # Errors
/// `Broken` if `recv` is closed (or already got its EOF); `Busy` if a task is
/// in `send.get_data`; `Io(InvalidInput)` if `max_bytes` is `Some(0)`.
pub fn memory_stream_pump(
    send: &MemorySendStream,
    recv: &MemoryReceiveStream,
    max_bytes: Option<usize>,
) -> Result<bool> {
    let data = match send.get_data_nowait(max_bytes) {
        Ok(data) => data,
        Err(Error::WouldBlock) => return Ok(false),
        Err(e) => return Err(e),
    };
    if data.is_empty() {
        recv.put_eof();
    } else {
        recv.put_data(&data).map_err(|e| match e {
            Error::Closed => Error::Broken,
            e => e,
        })?;
    }
    Ok(true)
}

/// A connected one-way pair of buffered memory streams (Trio's
/// `memory_stream_one_way_pair`): the send stream's `send_all_hook` and
/// `close_hook` call [`memory_stream_pump`], so data flows to the receive
/// stream as soon as it is sent, and closing the sender delivers an EOF.
/// Replace the hooks to change that (remove the `send_all_hook` to simulate a
/// stall; install a pump with `max_bytes` to trickle).
pub fn memory_stream_one_way_pair() -> (MemorySendStream, MemoryReceiveStream) {
    let send = MemorySendStream::new();
    let recv = MemoryReceiveStream::new();
    let r = recv.clone();
    send.set_send_all_hook(Some(AsyncHook::new(async move |s: &MemorySendStream| {
        memory_stream_pump(s, &r, None).map(drop)
    })));
    let r = recv.clone();
    send.set_close_hook(Some(SyncHook::new(move |s: &MemorySendStream| {
        // The first pump may move leftover data (if the send hook was
        // removed); the next delivers the EOF. Closing never fails, so a
        // closed receiver is ignored here.
        for _ in 0..2 {
            match memory_stream_pump(s, &r, None) {
                Ok(true) if r.inner.incoming.closed.get() => break,
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
    })));
    (send, recv)
}

/// One end of a [`memory_stream_pair`]: a [`StapledStream`] of a
/// [`MemorySendStream`] and a [`MemoryReceiveStream`] (reach them, and their
/// hooks, through the `send_stream` and `receive_stream` fields).
/// `send_eof` closes the send half.
pub type MemoryStream = StapledStream<MemorySendStream, MemoryReceiveStream>;

/// A connected pair of bidirectional buffered memory streams (Trio's
/// `memory_stream_pair`, an in-memory `socketpair`): two
/// [`memory_stream_one_way_pair`]s stapled together.
///
/// ```
/// use trio::abc::{HalfCloseableStream, ReceiveStream, SendStream};
///
/// trio::run(async {
///     let (left, right) = trio::testing::memory_stream_pair();
///     left.send_all(b"123").await?;
///     let mut buf = [0; 8];
///     assert_eq!(right.receive_some(&mut buf).await?, 3);
///     left.send_eof().await?;
///     assert_eq!(right.receive_some(&mut buf).await?, 0);
///     right.send_all(b"456").await?;
///     assert_eq!(left.receive_some(&mut buf).await?, 3);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn memory_stream_pair() -> (MemoryStream, MemoryStream) {
    let (s1, r1) = memory_stream_one_way_pair();
    let (s2, r2) = memory_stream_one_way_pair();
    (StapledStream::new(s1, r2), StapledStream::new(s2, r1))
}

// ---------------------------------------------------------------------------
// Lockstep streams
// ---------------------------------------------------------------------------

/// The shared state of a lockstep pair. The sender offers its data here and
/// waits until the receiver has taken all of it.
#[derive(Default)]
struct Lockstep {
    data: RefCell<VecDeque<u8>>,
    sender_closed: Cell<bool>,
    receiver_closed: Cell<bool>,
    receiver_waiting: Cell<bool>,
    /// A `send_all` was cancelled after the receiver took part of its data.
    broken: Cell<bool>,
    sending: Cell<bool>,
    receiving: Cell<bool>,
    lot: ParkingLot,
}

/// Withdraws what is left of a `send_all`'s data when that call ends (done,
/// failed, cancelled or dropped). If the receiver took part of it, the
/// stream is broken from now on.
struct Offer<'a> {
    q: &'a Lockstep,
    len: usize,
}

impl Drop for Offer<'_> {
    fn drop(&mut self) {
        let mut left = self.q.data.borrow_mut();
        if !left.is_empty() {
            if left.len() < self.len {
                self.q.broken.set(true);
            }
            left.clear();
        }
    }
}

impl Lockstep {
    fn something_happened(&self) {
        self.lot.unpark_all();
    }

    fn has_data(&self) -> bool {
        !self.data.borrow().is_empty()
    }

    /// Parks until `ready()` holds or either side is closed (everybody reacts
    /// to a close). Returns whether it parked.
    async fn wait_for(&self, ready: impl Fn() -> bool) -> Result<bool> {
        let mut parked = false;
        while !ready() && !self.sender_closed.get() && !self.receiver_closed.get() {
            self.lot.park().await?;
            parked = true;
        }
        Ok(parked)
    }

    fn close_sender(&self) {
        self.sender_closed.set(true);
        // Whatever an interrupted send_all offered is withdrawn.
        self.data.borrow_mut().clear();
        self.something_happened();
    }

    fn close_receiver(&self) {
        self.receiver_closed.set(true);
        self.something_happened();
    }

    async fn send_all(&self, data: &[u8]) -> Result<()> {
        let Some(_sending) = Flag::raise(&self.sending) else {
            return fail(Error::Busy).await;
        };
        if self.sender_closed.get() {
            return fail(Error::Closed).await;
        }
        if self.receiver_closed.get() || self.broken.get() {
            return fail(Error::Broken).await;
        }
        if data.is_empty() {
            return checkpoint().await;
        }
        checkpoint_if_cancelled().await?;
        self.data.borrow_mut().extend(data);
        let _offer = Offer { q: self, len: data.len() };
        self.something_happened();
        let parked = self.wait_for(|| !self.has_data()).await?;
        if !parked {
            cancel_shielded_checkpoint().await?;
        }
        if self.sender_closed.get() {
            return Err(Error::Closed);
        }
        if self.has_data() {
            // The receiver was closed before it took everything.
            return Err(Error::Broken);
        }
        Ok(())
    }

    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let Some(_sending) = Flag::raise(&self.sending) else {
            return fail(Error::Busy).await;
        };
        if self.sender_closed.get() {
            return fail(Error::Closed).await;
        }
        if self.receiver_closed.get() {
            // send_all would not block: it would fail at once.
            return checkpoint().await;
        }
        checkpoint_if_cancelled().await?;
        let parked = self.wait_for(|| self.receiver_waiting.get()).await?;
        if !parked {
            cancel_shielded_checkpoint().await?;
        }
        if self.sender_closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return fail(empty_buffer_error()).await;
        }
        let Some(_receiving) = Flag::raise(&self.receiving) else {
            return fail(Error::Busy).await;
        };
        if self.receiver_closed.get() {
            return fail(Error::Closed).await;
        }
        checkpoint_if_cancelled().await?;
        let parked = {
            // Wakes a blocked wait_send_all_might_not_block.
            self.receiver_waiting.set(true);
            let _waiting = Flag(&self.receiver_waiting);
            self.something_happened();
            self.wait_for(|| self.has_data()).await?
        };
        let out = if self.receiver_closed.get() {
            Err(Error::Closed)
        } else if self.has_data() {
            let n = self.data.borrow_mut().read(buf).unwrap_or(0);
            // Possibly wakes send_all.
            self.something_happened();
            Ok(n)
        } else {
            // The sender closed.
            Ok(0)
        };
        if !parked {
            cancel_shielded_checkpoint().await?;
        }
        out
    }
}

/// The sending half of a [`lockstep_stream_one_way_pair`]: `send_all`
/// returns only once the receiver has taken all of the data.
pub struct LockstepSendStream {
    q: Rc<Lockstep>,
}

/// The receiving half of a [`lockstep_stream_one_way_pair`].
pub struct LockstepReceiveStream {
    q: Rc<Lockstep>,
}

impl fmt::Debug for LockstepSendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockstepSendStream")
            .field("offered", &self.q.data.borrow().len())
            .field("closed", &self.q.sender_closed.get())
            .field("peer_closed", &self.q.receiver_closed.get())
            .finish()
    }
}

impl fmt::Debug for LockstepReceiveStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockstepReceiveStream")
            .field("closed", &self.q.receiver_closed.get())
            .field("peer_closed", &self.q.sender_closed.get())
            .finish()
    }
}

impl LockstepSendStream {
    /// Closes the sending side (a blocked `send_all` or
    /// `wait_send_all_might_not_block` wakes with `Closed`; the receiver sees
    /// EOF). Idempotent. Not a checkpoint.
    pub fn close(&self) {
        self.q.close_sender();
    }
}

impl LockstepReceiveStream {
    /// Closes the receiving side (a blocked `receive_some` wakes with
    /// `Closed`; the sender gets `Broken`). Idempotent. Not a checkpoint.
    pub fn close(&self) {
        self.q.close_receiver();
    }
}

impl AsyncResource for LockstepSendStream {
    async fn aclose(&self) -> Result<()> {
        self.close();
        checkpoint().await
    }
}

impl SendStream for LockstepSendStream {
    /// Offers `data` and waits until the receiver has taken all of it. If
    /// cancelled before the receiver took anything, the stream stays usable;
    /// if cancelled midway, later sends fail with `Broken`.
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.q.send_all(data).await
    }

    /// Waits until a task is blocked in `receive_some` (or either side is
    /// closed: after the receiver closed this returns `Ok`, and `send_all`
    /// fails at once with `Broken`).
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.q.wait_send_all_might_not_block().await
    }
}

impl AsyncResource for LockstepReceiveStream {
    async fn aclose(&self) -> Result<()> {
        self.close();
        checkpoint().await
    }
}

impl ReceiveStream for LockstepReceiveStream {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.q.receive_some(buf).await
    }
}

/// A connected one-way pair of streams with no buffering at all (Trio's
/// `lockstep_stream_one_way_pair`): every `send_all` blocks until
/// `receive_some` calls have taken all of its data, and
/// `wait_send_all_might_not_block` blocks until a task is waiting in
/// `receive_some`. For testing flow control in the extreme case, and as the
/// "clogged" streams of [`check_one_way_stream`](super::check_one_way_stream).
pub fn lockstep_stream_one_way_pair() -> (LockstepSendStream, LockstepReceiveStream) {
    let q = Rc::new(Lockstep::default());
    (LockstepSendStream { q: q.clone() }, LockstepReceiveStream { q })
}

/// One end of a [`lockstep_stream_pair`]. `send_eof` closes the send half.
pub type LockstepStream = StapledStream<LockstepSendStream, LockstepReceiveStream>;

/// A connected pair of bidirectional lockstep streams (Trio's
/// `lockstep_stream_pair`): two [`lockstep_stream_one_way_pair`]s stapled
/// together.
pub fn lockstep_stream_pair() -> (LockstepStream, LockstepStream) {
    let (s1, r1) = lockstep_stream_one_way_pair();
    let (s2, r2) = lockstep_stream_one_way_pair();
    (StapledStream::new(s1, r2), StapledStream::new(s2, r1))
}
