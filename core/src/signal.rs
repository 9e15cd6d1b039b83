//! Receiving OS signals as an async stream (Trio's `open_signal_receiver`).
//!
//! While a receiver is open, the signals it names are caught instead of
//! taking their usual action, queued (coalesced: each signal at most once
//! until it is read, in order of first arrival), and handed out by
//! [`SignalReceiver::receive`]. Dropping the receiver restores the previous
//! handlers and re-raises any signal it never read, so none is lost (also
//! one caught just before the drop and not yet passed on). A handler that
//! the program installed itself while the receiver was open is left in
//! place (only what the receiver changed is restored).
//! Unix; on Windows only `Signal::SIGINT` (Ctrl-C and Ctrl-Break), and an
//! unread one is dropped rather than re-raised; elsewhere
//! `open_signal_receiver` fails with `Unsupported`.
#![cfg_attr(not(any(unix, windows)), allow(unused_imports, dead_code))]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use crate::error::Result;
use crate::io::BusyGuard;
use crate::lowlevel::{ParkingLot, checkpointed, current_trio_token};

/// A signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

#[cfg(any(unix, windows))]
use crate::driver::signals::numbers as n;

#[cfg(windows)]
impl Signal {
    /// Ctrl-C or Ctrl-Break.
    pub const SIGINT: Signal = Signal(n::SIGINT);
}

#[cfg(unix)]
impl Signal {
    /// Hang-up.
    pub const SIGHUP: Signal = Signal(n::SIGHUP);
    /// Interrupt (Ctrl-C).
    pub const SIGINT: Signal = Signal(n::SIGINT);
    /// Quit.
    pub const SIGQUIT: Signal = Signal(n::SIGQUIT);
    /// Termination request.
    pub const SIGTERM: Signal = Signal(n::SIGTERM);
    /// User signal 1.
    pub const SIGUSR1: Signal = Signal(n::SIGUSR1);
    /// User signal 2.
    pub const SIGUSR2: Signal = Signal(n::SIGUSR2);
    /// Terminal window size change.
    pub const SIGWINCH: Signal = Signal(n::SIGWINCH);
    /// Child status change.
    pub const SIGCHLD: Signal = Signal(n::SIGCHLD);
    /// Broken pipe.
    pub const SIGPIPE: Signal = Signal(n::SIGPIPE);
    /// Alarm clock.
    pub const SIGALRM: Signal = Signal(n::SIGALRM);
}

impl Signal {
    /// The signal with this OS number.
    pub fn from_raw(number: i32) -> Signal {
        Signal(number)
    }

    /// The OS number.
    pub fn as_raw(self) -> i32 {
        self.0
    }
}

/// The runtime's `run_sync_soon` keys used by signal delivery (distinct
/// from `to_thread` call ids, which count up from 1, their completion keys
/// and Ctrl-C's).
pub(crate) const SIGNAL_KEY_BASE: u64 = 1 << 62;

thread_local! {
    /// The lots of the open receivers on this (run) thread, by id.
    static RECEIVERS: RefCell<HashMap<u64, Rc<ParkingLot>>> = RefCell::new(HashMap::new());
}

static NEXT_RECEIVER: AtomicU64 = AtomicU64::new(1);

/// An open signal receiver (see the module docs). Not `Send`: it belongs to
/// the run that opened it.
pub struct SignalReceiver {
    id: u64,
    queue: Arc<Mutex<VecDeque<i32>>>,
    lot: Rc<ParkingLot>,
    /// Set while a task receives (a second one gets `Busy`, as in Trio).
    receiving: Rc<Cell<bool>>,
    #[cfg(any(unix, windows))]
    registration: Option<crate::driver::signals::Registration>,
    pending: Option<Pin<Box<dyn Future<Output = Result<Signal>>>>>,
}

impl fmt::Debug for SignalReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalReceiver").field("pending", &self.pending_signal_count()).finish_non_exhaustive()
    }
}

/// Starts catching `signals` for this run. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`;
/// [`Error::Io`](crate::Error::Io) for a signal that
/// cannot be caught (`SIGKILL`, `SIGSTOP`, out of range) or on platforms
/// without signal support yet (Windows); `Io(InvalidInput)` for an empty
/// list (as Trio, which refuses a receiver for no signals).
pub fn open_signal_receiver(signals: &[Signal]) -> Result<SignalReceiver> {
    if signals.is_empty() {
        return Err(crate::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "open_signal_receiver: no signals were given",
        )));
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = signals;
        Err(crate::Error::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "signal receivers are not supported on this platform (WASI has no signals)",
        )))
    }
    #[cfg(any(unix, windows))]
    {
        let token = current_trio_token()?;
        let id = NEXT_RECEIVER.fetch_add(1, Ordering::Relaxed);
        let queue: Arc<Mutex<VecDeque<i32>>> = Arc::default();
        let lot = Rc::new(ParkingLot::new());
        let q = queue.clone();
        let deliver = move |sig: i32| {
            {
                let mut q = q.lock().unwrap_or_else(PoisonError::into_inner);
                if !q.contains(&sig) {
                    q.push_back(sig);
                }
            }
            let _ = token.run_sync_soon_runtime(SIGNAL_KEY_BASE | id, move || {
                let lot = RECEIVERS.with_borrow(|r| r.get(&id).cloned());
                if let Some(lot) = lot {
                    lot.unpark_all();
                }
            });
        };
        let raw: Vec<i32> = signals.iter().map(|s| s.0).collect();
        let registration = Some(crate::driver::signals::listen(&raw, Arc::new(deliver))?);
        RECEIVERS.with_borrow_mut(|r| r.insert(id, lot.clone()));
        Ok(SignalReceiver { id, queue, lot, receiving: Rc::default(), registration, pending: None })
    }
}

fn pop(queue: &Mutex<VecDeque<i32>>) -> Option<i32> {
    queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
}

async fn receive(queue: Arc<Mutex<VecDeque<i32>>>, lot: Rc<ParkingLot>, receiving: Rc<Cell<bool>>) -> Result<Signal> {
    let _busy = BusyGuard::claim(&receiving)?;
    loop {
        let now = checkpointed(|| match pop(&queue) {
            Some(sig) => ControlFlow::Break(sig),
            None => ControlFlow::Continue(()),
        })
        .await?;
        if let ControlFlow::Break(sig) = now {
            return Ok(Signal(sig));
        }
        lot.park().await?;
    }
}

impl SignalReceiver {
    /// Waits for the next signal.
    ///
    /// # Checkpoint
    /// Always a checkpoint.
    /// # Cancellation
    /// Returns `Err(Error::Cancelled)`; no signal was taken.
    /// # Errors
    /// [`Error::Runtime`](crate::Error::Runtime) outside `trio::run`;
    /// [`Error::Busy`](crate::Error::Busy) if another task is receiving
    /// from this receiver (or its stream has a receive pending).
    pub async fn receive(&self) -> Result<Signal> {
        receive(self.queue.clone(), self.lot.clone(), self.receiving.clone()).await
    }

    /// Signals received but not read yet.
    pub fn pending_signal_count(&self) -> usize {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl futures_core::Stream for SignalReceiver {
    /// Each received signal; the stream never ends by itself.
    type Item = Result<Signal>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Signal>>> {
        let this = &mut *self;
        if this.pending.is_none() {
            this.pending = Some(Box::pin(receive(this.queue.clone(), this.lot.clone(), this.receiving.clone())));
        }
        let Some(fut) = this.pending.as_mut() else { return Poll::Ready(None) };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(out) => {
                this.pending = None;
                Poll::Ready(Some(out))
            }
        }
    }
}

impl Drop for SignalReceiver {
    fn drop(&mut self) {
        self.pending = None;
        let id = self.id;
        let _ = RECEIVERS.try_with(|r| r.borrow_mut().remove(&id));
        #[cfg(any(unix, windows))]
        {
            // Restore the previous handlers first, then hand back what was
            // never read, so it takes its usual course.
            drop(self.registration.take());
            let unread = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
            for sig in unread {
                crate::driver::signals::raise(sig);
            }
        }
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}
