//! Synchronization between C tasks: events, memory channels of `void *`,
//! locks, semaphores, condition variables and capacity limiters, over
//! trio's own types (`trio::sync`, `trio::open_memory_channel`).
//!
//! Every object is a handle holding an `Rc`, so a call that waits keeps the
//! object alive even if another task closes the handle meanwhile. Closing an
//! event, lock or semaphore handle wakes the tasks blocked on it with
//! `TRIO_ECLOSED` (a trio `Event` per object, set on close, is raced against
//! the wait); closing a channel end is trio's own `close` of that end, with
//! trio's semantics for blocked senders and receivers.

use std::ffi::{c_int, c_void};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use trio::sync::{CapacityLimiter, Condition, Event, Lock, Semaphore};
use trio::{Receiver, Sender};

use crate::error::{self, guard, set_error};
use crate::handle::{self, Kind, trio_handle_t};
use crate::task;

/// An object behind a handle, with the event that its close sets.
struct Closable<T> {
    inner: T,
    closed: Event,
}

impl<T> Closable<T> {
    fn new(inner: T) -> Closable<T> {
        Closable { inner, closed: Event::new() }
    }

    /// Marks the object closed and wakes every task waiting on it.
    fn close(&self) {
        self.closed.set();
    }

    /// Waits for `op` from the calling C task, unless the handle is closed
    /// first: then `op` is dropped (giving back anything handed to it) and
    /// the result is `TRIO_ECLOSED` with a detail naming `what`.
    fn wait<R>(&self, what: &str, op: impl Future<Output = trio::Result<R>>) -> Result<R, c_int> {
        let closed = &self.closed;
        let fut = async move {
            let mut op = pin!(op);
            let mut on_close = pin!(closed.wait());
            let mut watching = true;
            poll_fn(|cx| {
                if closed.is_set() {
                    return Poll::Ready(None);
                }
                if let Poll::Ready(r) = op.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                // A cancelled watch ends with an error; `op` then reports
                // the cancellation itself.
                if watching && on_close.as_mut().poll(cx).is_ready() {
                    watching = false;
                    if closed.is_set() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await
        };
        match task::block_on(fut)? {
            Some(r) => r.map_err(|e| task::note_error(&e)),
            None => Err(set_error(error::TRIO_ECLOSED, format_args!("{what} was closed while this task waited on it"))),
        }
    }
}

/// Writes `value` through `out` (checked non-null by the caller).
///
/// # Safety
/// `out` points to a writable `T`.
unsafe fn put<T>(out: *mut T, value: T) {
    // SAFETY: the caller's promise.
    unsafe { *out = value };
}

fn status(r: Result<(), c_int>) -> c_int {
    r.map_or_else(|c| c, |()| 0)
}

// ---------------------------------------------------------------- events

type EventState = Closable<Event>;

/// Makes a new event, not set, and writes its handle to `*out`. An event is
/// a one-shot flag: `trio_event_set` wakes every waiter and it stays set.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_event_new(out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let h = match handle::insert(Kind::Event, EventState::new(Event::new())) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Sets `event` and wakes every task waiting for it. Idempotent. Does not
/// block and is not a checkpoint.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_event_set(event: trio_handle_t) -> c_int {
    guard(|| match handle::get::<EventState>(event, Kind::Event) {
        Ok(e) => {
            e.inner.set();
            0
        }
        Err(c) => c,
    })
}

/// Is `event` set? Does not block.
///
/// Returns 1 if set, 0 if not, or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_event_is_set(event: trio_handle_t) -> c_int {
    guard(|| match handle::get::<EventState>(event, Kind::Event) {
        Ok(e) => c_int::from(e.inner.is_set()),
        Err(c) => c,
    })
}

/// Waits until `event` is set (at once, after a checkpoint, if it is).
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled (the event is unaffected); `TRIO_ECLOSED`
/// if another task closed the handle meanwhile; `TRIO_EBADHANDLE`;
/// `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_event_wait(event: trio_handle_t) -> c_int {
    guard(|| match handle::get::<EventState>(event, Kind::Event) {
        Ok(e) => status(e.wait("the event", e.inner.wait())),
        Err(c) => c,
    })
}

/// Closes `event`'s handle: from now on it is stale. Tasks blocked in
/// `trio_event_wait` on it return `TRIO_ECLOSED`. Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_event_close(event: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<EventState>(event, Kind::Event) {
        Ok(e) => {
            e.close();
            0
        }
        Err(c) => c,
    })
}

// -------------------------------------------------------------- channels

/// A channel end's handle state.
struct End<T> {
    end: T,
}

type SendState = End<Sender<*mut c_void>>;
type RecvState = End<Receiver<*mut c_void>>;

/// Opens a memory channel of `void *` values and writes its two ends'
/// handles to `*send_out` and `*recv_out`.
///
/// `capacity` is how many values it buffers: 0 makes every send wait for a
/// receiver (a rendezvous), `SIZE_MAX` means no limit. The channel only
/// moves the pointers: the C code owns what they point to (values still in
/// the channel when its last receiver closes are dropped without notice).
///
/// Does not block. Returns 0; `TRIO_EINVAL` if an out pointer is NULL;
/// `TRIO_ENORUN` outside a C task. The outputs are written only on
/// success.
///
/// # Safety
/// `send_out` and `recv_out` are NULL or point to writable
/// `trio_handle_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_channel_open(
    capacity: usize,
    send_out: *mut trio_handle_t,
    recv_out: *mut trio_handle_t,
) -> c_int {
    guard(|| {
        if send_out.is_null() || recv_out.is_null() {
            return set_error(error::TRIO_EINVAL, "send_out or recv_out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let (s, r) = trio::open_memory_channel::<*mut c_void>(capacity);
        let hs = match handle::insert(Kind::ChannelSender, End { end: s }) {
            Ok(h) => h,
            Err(c) => return c,
        };
        let hr = match handle::insert(Kind::ChannelReceiver, End { end: r }) {
            Ok(h) => h,
            Err(c) => {
                let _ = handle::remove::<SendState>(hs, Kind::ChannelSender);
                return c;
            }
        };
        // SAFETY: non-null, and the caller promised they are writable.
        unsafe {
            put(send_out, hs);
            put(recv_out, hr);
        }
        0
    })
}

/// Makes another sending end of the same channel as `sender` and writes
/// its handle to `*out`. Each end closes on its own; receivers see the end
/// of the channel once every sending end is closed.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_EBADHANDLE` (also for an end already closed: its handle is stale).
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_channel_clone_sender(sender: trio_handle_t, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        let s = match handle::get::<SendState>(sender, Kind::ChannelSender) {
            Ok(s) => s,
            Err(c) => return c,
        };
        let h = match handle::insert(Kind::ChannelSender, End { end: s.end.clone() }) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Makes another receiving end of the same channel as `receiver` and
/// writes its handle to `*out`. Each value goes to one of the receivers;
/// senders see `TRIO_EBROKEN` once every receiving end is closed.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_EBADHANDLE`.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_channel_clone_receiver(receiver: trio_handle_t, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        let r = match handle::get::<RecvState>(receiver, Kind::ChannelReceiver) {
            Ok(r) => r,
            Err(c) => return c,
        };
        let h = match handle::insert(Kind::ChannelReceiver, End { end: r.end.clone() }) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Sends `value` (any pointer, NULL included) on the channel: to a waiting
/// receiver, or into the buffer; waits while the buffer is full. A
/// checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled (the value was **not** sent);
/// `TRIO_EBROKEN` if every receiving end is (or gets) closed;
/// `TRIO_ECLOSED` if this end's handle is closed by another task
/// meanwhile; `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_channel_send(sender: trio_handle_t, value: *mut c_void) -> c_int {
    guard(|| match handle::get::<SendState>(sender, Kind::ChannelSender) {
        Ok(s) => status(task::wait(s.end.send(value))),
        Err(c) => c,
    })
}

/// Receives the next value into `*out`, waiting for one. A checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_EENDOFCHANNEL` once every
/// sending end is closed and the buffer is empty; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled (no value was taken); `TRIO_ECLOSED` if
/// this end's handle is closed by another task meanwhile; `TRIO_EINVAL` if
/// `out` is NULL; `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
/// `*out` is written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `void *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_channel_receive(receiver: trio_handle_t, out: *mut *mut c_void) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        let r = match handle::get::<RecvState>(receiver, Kind::ChannelReceiver) {
            Ok(r) => r,
            Err(c) => return c,
        };
        match task::wait(r.end.receive()) {
            Ok(v) => {
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { put(out, v) };
                0
            }
            Err(c) => c,
        }
    })
}

/// Sends `value` without waiting: to a waiting receiver, or into the
/// buffer if there is room. Does not block and is not a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK` if it would have to wait; `TRIO_EBROKEN`
/// if every receiving end is closed; `TRIO_EBADHANDLE`. On failure the
/// value was not sent.
#[unsafe(no_mangle)]
pub extern "C" fn trio_channel_try_send(sender: trio_handle_t, value: *mut c_void) -> c_int {
    guard(|| match handle::get::<SendState>(sender, Kind::ChannelSender) {
        Ok(s) => s.end.try_send(value).map_or_else(|e| error::from_error(&e.error), |()| 0),
        Err(c) => c,
    })
}

/// Takes the next value into `*out` without waiting. Does not block and is
/// not a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK` if none is ready; `TRIO_EENDOFCHANNEL` if
/// every sending end is closed and the buffer is empty; `TRIO_EINVAL` if
/// `out` is NULL; `TRIO_EBADHANDLE`. `*out` is written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `void *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_channel_try_receive(receiver: trio_handle_t, out: *mut *mut c_void) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match handle::get::<RecvState>(receiver, Kind::ChannelReceiver) {
            Ok(r) => match r.end.try_receive() {
                Ok(v) => {
                    // SAFETY: non-null, and the caller promised it is writable.
                    unsafe { put(out, v) };
                    0
                }
                Err(e) => error::from_error(&e),
            },
            Err(c) => c,
        }
    })
}

/// Closes this sending end and its handle (now stale). Tasks blocked in
/// `trio_channel_send` on it return `TRIO_ECLOSED`; if it was the last
/// sending end, receivers get `TRIO_EENDOFCHANNEL` once the buffer is
/// empty. Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_channel_close_sender(sender: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<SendState>(sender, Kind::ChannelSender) {
        Ok(s) => {
            s.end.close();
            0
        }
        Err(c) => c,
    })
}

/// Closes this receiving end and its handle (now stale). Tasks blocked in
/// `trio_channel_receive` on it return `TRIO_ECLOSED`; if it was the last
/// receiving end, senders get `TRIO_EBROKEN` and values still buffered are
/// dropped (the C code still owns what they point to). Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_channel_close_receiver(receiver: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<RecvState>(receiver, Kind::ChannelReceiver) {
        Ok(r) => {
            r.end.close();
            0
        }
        Err(c) => c,
    })
}

// ----------------------------------------------------------------- locks

/// A lock's handle state. trio's `Lock` records its owning task itself
/// (`acquire`/`release` without a guard), so nothing else is kept.
type LockState = Closable<Lock>;

/// Makes a new, unlocked lock and writes its handle to `*out`. A lock is
/// owned by the C task that acquired it; waiters get it in FIFO order.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_lock_new(out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let h = match handle::insert(Kind::Lock, LockState::new(Lock::new())) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Waits for `lock` and takes it for the calling C task. A checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled (the lock was not taken); `TRIO_EBROKEN`
/// if the task holding the lock ended without releasing it (as in Trio: the
/// lock can never be taken again; every waiter and later acquirer gets
/// this); `TRIO_EMISUSE` if the calling task already holds it;
/// `TRIO_ECLOSED` if another task closed the handle meanwhile;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_lock_acquire(lock: trio_handle_t) -> c_int {
    guard(|| match handle::get::<LockState>(lock, Kind::Lock) {
        Ok(l) => status(l.wait("the lock", l.inner.acquire())),
        Err(c) => c,
    })
}

/// Takes `lock` if it is free and nobody waits for it. Does not block and
/// is not a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK` if it is held or others wait for it;
/// `TRIO_EMISUSE` if the calling task already holds it; `TRIO_EBADHANDLE`;
/// `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_lock_try_acquire(lock: trio_handle_t) -> c_int {
    guard(|| {
        let l = match handle::get::<LockState>(lock, Kind::Lock) {
            Ok(l) => l,
            Err(c) => return c,
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        l.inner.try_acquire().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Releases `lock`, handing it to the first waiter if any. Does not block.
///
/// Returns 0; `TRIO_EMISUSE` if the calling task does not hold it;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_lock_release(lock: trio_handle_t) -> c_int {
    guard(|| {
        let l = match handle::get::<LockState>(lock, Kind::Lock) {
            Ok(l) => l,
            Err(c) => return c,
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        l.inner.release().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Closes `lock`'s handle: from now on it is stale. Tasks blocked in
/// `trio_lock_acquire` on it return `TRIO_ECLOSED`. Closing a held lock is
/// allowed (the lock is gone). Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_lock_close(lock: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<LockState>(lock, Kind::Lock) {
        Ok(l) => {
            l.close();
            0
        }
        Err(c) => c,
    })
}

// ------------------------------------------------------------ semaphores

type SemaphoreState = Closable<Semaphore>;

/// Makes a new semaphore holding `initial` permits (no maximum) and writes
/// its handle to `*out`. Permits are not tied to tasks; waiters get them in
/// FIFO order.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_semaphore_new(initial: usize, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let h = match handle::insert(Kind::Semaphore, SemaphoreState::new(Semaphore::new(initial))) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Waits for a permit of `sem` and takes it. A checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` if an
/// enclosing scope was cancelled (no permit taken); `TRIO_ECLOSED` if
/// another task closed the handle meanwhile; `TRIO_EBADHANDLE`;
/// `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_semaphore_acquire(sem: trio_handle_t) -> c_int {
    guard(|| match handle::get::<SemaphoreState>(sem, Kind::Semaphore) {
        Ok(s) => status(s.wait("the semaphore", s.inner.acquire())),
        Err(c) => c,
    })
}

/// Takes a permit of `sem` if one is available. Does not block and is not
/// a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK` if none is; `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_semaphore_try_acquire(sem: trio_handle_t) -> c_int {
    guard(|| match handle::get::<SemaphoreState>(sem, Kind::Semaphore) {
        Ok(s) => s.inner.try_acquire().map_or_else(|e| error::from_error(&e), |()| 0),
        Err(c) => c,
    })
}

/// Returns a permit to `sem`: to the first waiter if any, else to the
/// pool. Does not block.
///
/// Returns 0; `TRIO_EMISUSE` (nothing done) if `sem` has a maximum
/// (`trio_semaphore_new_bounded`) and already holds it, which catches a
/// double release; `TRIO_EINVAL` (nothing done) if it has no maximum and
/// already holds `SIZE_MAX` permits (its value never wraps around to 0);
/// `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_semaphore_release(sem: trio_handle_t) -> c_int {
    guard(|| match handle::get::<SemaphoreState>(sem, Kind::Semaphore) {
        Ok(s) => {
            let st = s.inner.statistics();
            if st.tasks_waiting == 0 && s.inner.value() == usize::MAX && s.inner.max_value().is_none() {
                // An overflow of the value (a size check, as the header's
                // TRIO_EINVAL): the value never wraps around to 0.
                return set_error(
                    error::TRIO_EINVAL,
                    "sem: its value is SIZE_MAX already; one more release would overflow it (nothing done)",
                );
            }
            s.inner.release().map_or_else(|e| error::from_error(&e), |()| 0)
        }
        Err(c) => c,
    })
}

/// Writes the number of permits `sem` holds now to `*out`. Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE`. `*out` is
/// written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_semaphore_value(sem: trio_handle_t, out: *mut usize) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match handle::get::<SemaphoreState>(sem, Kind::Semaphore) {
            Ok(s) => {
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { put(out, s.inner.value()) };
                0
            }
            Err(c) => c,
        }
    })
}

/// Makes a new semaphore holding `initial` permits that can never hold more
/// than `max` (releasing beyond it is `TRIO_EMISUSE`), and writes its handle
/// to `*out`. Otherwise as `trio_semaphore_new`.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL or `initial`
/// is above `max`; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_semaphore_new_bounded(initial: usize, max: usize, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if initial > max {
            return set_error(error::TRIO_EINVAL, format_args!("initial ({initial}) is above max ({max})"));
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let sem = match Semaphore::with_max(initial, max) {
            Ok(s) => s,
            Err(e) => return error::from_error(&e),
        };
        let h = match handle::insert(Kind::Semaphore, SemaphoreState::new(sem)) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// A snapshot of a semaphore (`trio_semaphore_statistics`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct trio_semaphore_stats {
    /// Permits available now.
    pub value: usize,
    /// 1 if the semaphore has a maximum (`max_value`), else 0.
    pub has_max: c_int,
    /// The maximum if `has_max`, else 0.
    pub max_value: usize,
    /// Tasks blocked in `trio_semaphore_acquire`.
    pub tasks_waiting: usize,
}

/// Writes a snapshot of `sem` to `*out`. Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE`. `*out` is
/// written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_semaphore_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_semaphore_statistics(sem: trio_handle_t, out: *mut trio_semaphore_stats) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match handle::get::<SemaphoreState>(sem, Kind::Semaphore) {
            Ok(s) => {
                let st = s.inner.statistics();
                let v = trio_semaphore_stats {
                    value: st.value,
                    has_max: c_int::from(st.max_value.is_some()),
                    max_value: st.max_value.unwrap_or(0),
                    tasks_waiting: st.tasks_waiting,
                };
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { put(out, v) };
                0
            }
            Err(c) => c,
        }
    })
}

/// Closes `sem`'s handle: from now on it is stale. Tasks blocked in
/// `trio_semaphore_acquire` on it return `TRIO_ECLOSED`. Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_semaphore_close(sem: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<SemaphoreState>(sem, Kind::Semaphore) {
        Ok(s) => {
            s.close();
            0
        }
        Err(c) => c,
    })
}

// ------------------------------------------------------------ conditions

type ConditionState = Closable<Condition>;

/// Makes a new condition variable (with its own lock) and writes its handle
/// to `*out`. The lock is acquired and released with
/// `trio_condition_acquire` / `trio_condition_release`; `trio_condition_wait`
/// and `trio_condition_notify` need it held by the calling task.
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_condition_new(out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let h = match handle::insert(Kind::Condition, ConditionState::new(Condition::new())) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Waits for the lock of `cond` and takes it for the calling C task, as
/// `trio_lock_acquire`. A checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` (the lock was
/// not taken); `TRIO_EBROKEN` if the task holding the lock ended without
/// releasing it; `TRIO_EMISUSE` if the calling task already holds it;
/// `TRIO_ECLOSED` if another task closed the handle meanwhile;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_acquire(cond: trio_handle_t) -> c_int {
    guard(|| match handle::get::<ConditionState>(cond, Kind::Condition) {
        Ok(c) => status(c.wait("the condition", c.inner.acquire())),
        Err(c) => c,
    })
}

/// Takes the lock of `cond` if it is free and nobody waits for it. Does not
/// block and is not a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK`; `TRIO_EMISUSE` if the calling task
/// already holds it; `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_try_acquire(cond: trio_handle_t) -> c_int {
    guard(|| {
        let c = match handle::get::<ConditionState>(cond, Kind::Condition) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if let Err(code) = task::current_task() {
            return code;
        }
        c.inner.lock().try_acquire().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Releases the lock of `cond`, handing it to the first waiter if any.
/// Does not block.
///
/// Returns 0; `TRIO_EMISUSE` if the calling task does not hold it;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_release(cond: trio_handle_t) -> c_int {
    guard(|| {
        let c = match handle::get::<ConditionState>(cond, Kind::Condition) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if let Err(code) = task::current_task() {
            return code;
        }
        c.inner.release().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Releases the lock of `cond` (which the calling task must hold), waits to
/// be notified, and takes the lock again before returning. A checkpoint.
/// Waiters are woken in FIFO order, each holding the lock in turn.
///
/// Suspends the calling C task. Returns 0 (holding the lock);
/// `TRIO_ECANCELED` (holding the lock again: it is re-acquired, shielded
/// from the cancellation); `TRIO_EBROKEN` if the lock cannot be re-acquired
/// because a task ended holding it (the calling task does not hold it
/// then); `TRIO_EMISUSE` if the calling task does not hold
/// the lock (nothing done); `TRIO_ECLOSED` if another task closed the handle
/// meanwhile (the condition and its lock are gone); `TRIO_EBADHANDLE`;
/// `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_wait(cond: trio_handle_t) -> c_int {
    guard(|| match handle::get::<ConditionState>(cond, Kind::Condition) {
        Ok(c) => status(c.wait("the condition", c.inner.wait())),
        Err(c) => c,
    })
}

/// Wakes up to `n` tasks waiting in `trio_condition_wait` on `cond` (each
/// returns holding the lock, in turn, once the caller released it). The
/// calling task must hold the lock. Does not block; not a checkpoint.
///
/// Returns how many were woken (at most `INT_MAX`); `TRIO_EMISUSE` if the
/// calling task does not hold the lock; `TRIO_EBADHANDLE`; `TRIO_ENORUN`
/// outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_notify(cond: trio_handle_t, n: usize) -> c_int {
    guard(|| notify(cond, n))
}

/// Wakes every task waiting on `cond`, as `trio_condition_notify`.
///
/// Returns how many were woken (at most `INT_MAX`); `TRIO_EMISUSE` if the
/// calling task does not hold the lock; `TRIO_EBADHANDLE`; `TRIO_ENORUN`
/// outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_notify_all(cond: trio_handle_t) -> c_int {
    guard(|| notify(cond, usize::MAX))
}

fn notify(cond: trio_handle_t, n: usize) -> c_int {
    let c = match handle::get::<ConditionState>(cond, Kind::Condition) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = task::current_task() {
        return code;
    }
    match c.inner.notify(n) {
        Ok(moved) => c_int::try_from(moved).unwrap_or(c_int::MAX),
        Err(e) => error::from_error(&e),
    }
}

/// A snapshot of a condition variable (`trio_condition_statistics`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct trio_condition_stats {
    /// Tasks waiting in `trio_condition_wait` to be notified.
    pub tasks_waiting: usize,
    /// 1 if the lock is held, else 0.
    pub lock_locked: c_int,
    /// Tasks waiting to take the lock (in `trio_condition_acquire`, or
    /// notified and waiting for it).
    pub lock_tasks_waiting: usize,
}

/// Writes a snapshot of `cond` to `*out`. Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE`. `*out` is
/// written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_condition_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_condition_statistics(cond: trio_handle_t, out: *mut trio_condition_stats) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match handle::get::<ConditionState>(cond, Kind::Condition) {
            Ok(c) => {
                let st = c.inner.statistics();
                let v = trio_condition_stats {
                    tasks_waiting: st.tasks_waiting,
                    lock_locked: c_int::from(st.lock_statistics.locked),
                    lock_tasks_waiting: st.lock_statistics.tasks_waiting,
                };
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { put(out, v) };
                0
            }
            Err(c) => c,
        }
    })
}

/// Closes `cond`'s handle: from now on it is stale. Tasks blocked on it (in
/// `trio_condition_acquire` or `trio_condition_wait`) return `TRIO_ECLOSED`.
/// Does not block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_condition_close(cond: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<ConditionState>(cond, Kind::Condition) {
        Ok(c) => {
            c.close();
            0
        }
        Err(c) => c,
    })
}

// ------------------------------------------------------------ capacity limiters

type LimiterState = Closable<CapacityLimiter>;

/// Makes a new capacity limiter with `total_tokens` tokens and writes its
/// handle to `*out`. A token is borrowed by the C task that acquired it
/// (one per task at most) until it releases it; waiters get tokens in FIFO
/// order. With 0 tokens every acquire waits (until the total is raised).
///
/// Does not block. Returns 0; `TRIO_EINVAL` if `out` is NULL;
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_capacity_limiter_new(total_tokens: usize, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        if let Err(c) = task::current_task() {
            return c;
        }
        let h = match handle::insert(Kind::CapacityLimiter, LimiterState::new(CapacityLimiter::new(total_tokens))) {
            Ok(h) => h,
            Err(c) => return c,
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(out, h) };
        0
    })
}

/// Waits for a token of `limiter` and borrows it for the calling C task. A
/// checkpoint.
///
/// Suspends the calling C task. Returns 0; `TRIO_ECANCELED` (no token
/// taken); `TRIO_EMISUSE` if the calling task already holds one;
/// `TRIO_ECLOSED` if another task closed the handle meanwhile;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_capacity_limiter_acquire(limiter: trio_handle_t) -> c_int {
    guard(|| match handle::get::<LimiterState>(limiter, Kind::CapacityLimiter) {
        Ok(l) => status(l.wait("the capacity limiter", l.inner.acquire())),
        Err(c) => c,
    })
}

/// Borrows a token of `limiter` for the calling C task if one is free and
/// nobody waits. Does not block and is not a checkpoint.
///
/// Returns 0; `TRIO_EWOULDBLOCK`; `TRIO_EMISUSE` if the calling task
/// already holds one; `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_capacity_limiter_try_acquire(limiter: trio_handle_t) -> c_int {
    guard(|| {
        let l = match handle::get::<LimiterState>(limiter, Kind::CapacityLimiter) {
            Ok(l) => l,
            Err(c) => return c,
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        l.inner.try_acquire().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Gives back the calling C task's token of `limiter` (the first waiter
/// gets it). Does not block.
///
/// Returns 0; `TRIO_EMISUSE` if the calling task holds none;
/// `TRIO_EBADHANDLE`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_capacity_limiter_release(limiter: trio_handle_t) -> c_int {
    guard(|| {
        let l = match handle::get::<LimiterState>(limiter, Kind::CapacityLimiter) {
            Ok(l) => l,
            Err(c) => return c,
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        l.inner.release().map_or_else(|e| error::from_error(&e), |()| 0)
    })
}

/// Changes the number of tokens of `limiter`, also while tokens are out:
/// raising it wakes waiters at once; lowering it below what is borrowed
/// takes effect as tokens come back. Does not block; not a checkpoint.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_capacity_limiter_set_total_tokens(limiter: trio_handle_t, total_tokens: usize) -> c_int {
    guard(|| match handle::get::<LimiterState>(limiter, Kind::CapacityLimiter) {
        Ok(l) => {
            l.inner.set_total_tokens(total_tokens);
            0
        }
        Err(c) => c,
    })
}

/// A snapshot of a capacity limiter (`trio_capacity_limiter_statistics`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct trio_capacity_limiter_stats {
    /// The number of tokens (the limit).
    pub total_tokens: usize,
    /// Tokens borrowed now.
    pub borrowed_tokens: usize,
    /// Tokens free now (0 if more are borrowed than the limit).
    pub available_tokens: usize,
    /// Tasks waiting for a token.
    pub tasks_waiting: usize,
}

/// Writes a snapshot of `limiter` to `*out`. Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE`. `*out` is
/// written only on success.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_capacity_limiter_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_capacity_limiter_statistics(
    limiter: trio_handle_t,
    out: *mut trio_capacity_limiter_stats,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        match handle::get::<LimiterState>(limiter, Kind::CapacityLimiter) {
            Ok(l) => {
                let st = l.inner.statistics();
                let v = trio_capacity_limiter_stats {
                    total_tokens: st.total_tokens,
                    borrowed_tokens: st.borrowed_tokens,
                    available_tokens: l.inner.available_tokens(),
                    tasks_waiting: st.tasks_waiting,
                };
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { put(out, v) };
                0
            }
            Err(c) => c,
        }
    })
}

/// Closes `limiter`'s handle: from now on it is stale. Tasks blocked in
/// `trio_capacity_limiter_acquire` on it return `TRIO_ECLOSED`. Does not
/// block.
///
/// Returns 0 or `TRIO_EBADHANDLE`.
#[unsafe(no_mangle)]
pub extern "C" fn trio_capacity_limiter_close(limiter: trio_handle_t) -> c_int {
    guard(|| match handle::remove::<LimiterState>(limiter, Kind::CapacityLimiter) {
        Ok(l) => {
            l.close();
            0
        }
        Err(c) => c,
    })
}
