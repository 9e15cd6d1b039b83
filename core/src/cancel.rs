//! Cancel scopes: the user-facing handle and the future that enters one.
//!
//! A [`CancelScope`] is a cheap handle (clone it to cancel from elsewhere).
//! [`CancelScope::run`] enters it around a future: while that future is being
//! polled, the scope is the innermost one, so every checkpoint inside checks
//! it. When the future finishes with `Err(Cancelled)` and this scope is the
//! outermost cancelled one, the scope catches it and `run` returns `Ok(None)`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::error::{CancelReason, CancelSource, Error, Result};
use crate::runtime::{self, NONE, ScopeStateRef};
use crate::time::Instant;

/// The state a scope handle shares with the runtime.
#[derive(Debug)]
pub(crate) struct ScopeState {
    pub(crate) cancel_called: Cell<bool>,
    pub(crate) shield: Cell<bool>,
    pub(crate) deadline: Cell<Instant>,
    /// A deadline relative to entry, resolved when the scope is entered:
    /// whole seconds and nanoseconds, `u32::MAX` nanoseconds for none (an
    /// `Option<Duration>` would take 8 bytes more in every scope record; see
    /// [`relative`](ScopeState::relative)).
    relative_secs: Cell<u64>,
    relative_nanos: Cell<u32>,
    pub(crate) cancelled_caught: Cell<bool>,
    /// The runtime record while entered, else `NONE`.
    pub(crate) entered: Cell<usize>,
    pub(crate) used: Cell<bool>,
    /// Why the scope was cancelled (the first reason wins).
    pub(crate) cancel_reason: RefCell<Option<CancelReason>>,
}

/// `ScopeState::relative_nanos` when there is no relative deadline.
const NO_NANOS: u32 = u32::MAX;

impl ScopeState {
    /// The relative deadline still to be resolved at entry, if any.
    pub(crate) fn relative(&self) -> Option<Duration> {
        let nanos = self.relative_nanos.get();
        (nanos != NO_NANOS).then(|| Duration::new(self.relative_secs.get(), nanos))
    }

    /// Sets (or clears) the relative deadline.
    pub(crate) fn set_relative(&self, rel: Option<Duration>) {
        match rel {
            Some(d) => {
                self.relative_secs.set(d.as_secs());
                self.relative_nanos.set(d.subsec_nanos());
            }
            None => self.relative_nanos.set(NO_NANOS),
        }
    }

    pub(crate) fn new() -> ScopeState {
        ScopeState {
            cancel_called: Cell::new(false),
            shield: Cell::new(false),
            deadline: Cell::new(Instant::MAX),
            relative_secs: Cell::new(0),
            relative_nanos: Cell::new(NO_NANOS),
            cancelled_caught: Cell::new(false),
            entered: Cell::new(NONE),
            used: Cell::new(false),
            cancel_reason: RefCell::new(None),
        }
    }
}

/// A region of code that can be cancelled as a unit, with an optional
/// deadline and an optional shield against outer cancellation.
///
/// Handles are cheap to clone; all clones name the same scope. A scope can be
/// entered once ([`CancelScope::run`]). Cancellation is level-triggered: once
/// cancelled, every checkpoint inside fails with [`Error::Cancelled`] until
/// the code leaves the scope.
///
/// # What a scope catches
/// When the code inside returns an error, the scope catches it (and `run`
/// returns `Ok(None)`) if the scope is the outermost cancelled one and the
/// error is a cancellation: [`Error::Cancelled`] itself, a group holding
/// it, or an error that carries it in its `source()` chain (see
/// [`Error::is_cancellation`]). A group with other errors propagates
/// without its cancellations.
///
/// # Foreign I/O and dropped futures
/// Code that is not trio's own (hyper, tungstenite, `futures-lite`'s
/// `BufReader::lines()`, ...) reads and writes trio streams through
/// `futures-io` (`AsyncRead`/`AsyncWrite` on the sockets, pipes and TLS
/// streams, and `abc::Compat` for any other stream).
/// Cancellation reaches it the same way as trio's own operations:
///
/// - A task parked in `poll_read`, `poll_write` or `poll_close` of a trio
///   stream is woken when its scope is cancelled (by `cancel()`, a
///   deadline or Ctrl-C), and the poll returns an `io::Error` of kind
///   `Other` that wraps `Error::Cancelled`; a poll made inside an already
///   cancelled scope returns it at once. (Inside a shield nothing changes.)
/// - The foreign code passes that error up in its own way, usually wrapped
///   in its own error type. `?` on the `io::Error` itself gives back
///   `Error::Cancelled` (`From<io::Error>` unwraps trio errors), and
///   [`Error::user`] of the foreign error keeps the chain, so either way
///   the scope recognises its cancellation and catches it:
///   `move_on_after(d, async { conn.await.map_err(Error::user) })`
///   returns `Ok(None)` at the deadline.
/// - Nothing is lost by a cancelled poll: a read that fails with
///   `Cancelled` consumed no data, and the stream stays usable. A write
///   that was cancelled (or abandoned) partway may have sent part of its
///   data, as a cancelled `send_all`.
///
/// Dropping a future is different from cancelling it: a dropped future
/// simply stops (nothing is reported, the scope does not record a catch),
/// and what it was doing is abandoned where it stood. Dropping a trio
/// operation's future is always safe (its waiter is removed, nothing is
/// received into a buffer that is gone), but a partial `send_all` leaves
/// the stream broken. Prefer cancel scopes to `select!`-style dropping:
/// the cancelled code then gets to run its own clean-up, as Trio's does.
///
/// ```
/// # use std::time::Duration;
/// # use trio::{CancelScope, sleep, testing::MockClock, RunOptions};
/// let clock = MockClock::new();
/// clock.set_autojump_threshold(Some(Duration::ZERO));
/// RunOptions::new().clock(clock).run(async {
///     let scope = CancelScope::with_timeout(Duration::from_secs(1));
///     let out = scope.run(async { sleep(Duration::from_secs(10)).await }).await?;
///     assert!(out.is_none());
///     assert!(scope.cancelled_caught());
///     Ok(())
/// }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct CancelScope {
    pub(crate) state: Rc<ScopeState>,
}

impl Default for CancelScope {
    fn default() -> CancelScope {
        CancelScope::new()
    }
}

impl CancelScope {
    /// A scope with no deadline and no shield.
    pub fn new() -> CancelScope {
        CancelScope { state: Rc::new(ScopeState::new()) }
    }

    /// A scope whose deadline is `deadline`.
    pub fn with_deadline(deadline: Instant) -> CancelScope {
        let s = CancelScope::new();
        s.state.deadline.set(deadline);
        s
    }

    /// A scope whose deadline is `timeout` after the moment it is entered.
    pub fn with_timeout(timeout: Duration) -> CancelScope {
        let s = CancelScope::new();
        s.state.set_relative(Some(timeout));
        s
    }

    /// A shielded scope: outer cancellation does not reach inside, so cleanup
    /// code can await. Its own `cancel()` and deadline still work.
    pub fn shielded() -> CancelScope {
        let s = CancelScope::new();
        s.state.shield.set(true);
        s
    }

    /// Cancels the scope: every checkpoint inside it fails with `Cancelled`
    /// from now on. Idempotent; works before, during and after the scope is
    /// entered. Not a checkpoint.
    ///
    /// As in Trio, a task parked inside the scope is aborted before
    /// `cancel()` returns: it leaves the lock's, channel's or lot's queue at
    /// once (so a `release()` or `send_nowait()` right after cannot hand
    /// anything to it), and the abort callback of a
    /// [`lowlevel::park`](crate::lowlevel::park) has run.
    ///
    /// The `Cancelled` errors it causes carry a [`CancelReason`] with source
    /// [`CancelSource::Explicit`] and the name of the calling task.
    pub fn cancel(&self) {
        self.cancel_because(None);
    }

    /// [`cancel`](CancelScope::cancel) with a message, kept in the
    /// [`CancelReason`] of the `Cancelled` errors it causes (Trio's
    /// `cancel(reason=...)`). Only the first cancellation's reason is kept.
    pub fn cancel_with_reason(&self, reason: impl Into<String>) {
        self.cancel_because(Some(reason.into()));
    }

    fn cancel_because(&self, reason: Option<String>) {
        if self.state.cancel_called.get() {
            return;
        }
        let task = crate::lowlevel::current_task().ok().and_then(|t| t.name());
        self.cancel_for(CancelReason::with_detail(CancelSource::Explicit, reason, task));
    }

    /// Cancels with a given reason (the runtime's own cancellations).
    pub(crate) fn cancel_for(&self, reason: CancelReason) {
        self.state.cancel_called.set(true);
        self.state.cancel_reason.borrow_mut().get_or_insert(reason.clone());
        let key = self.state.entered.get();
        if key != NONE {
            let _ = runtime::with(|rt| rt.cancel_scope(key, reason));
            runtime::run_pending_aborts();
        }
    }

    /// Why the scope was cancelled: the reason of its first cancellation
    /// (`cancel()`, its deadline, a failing nursery child, Ctrl-C), or of
    /// the enclosing scope whose cancellation reached it. `None` while it
    /// is not cancelled.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.state.cancel_reason.borrow().clone()
    }

    /// Has `cancel()` been called or the deadline expired?
    ///
    /// As in Trio, a scope that is active or not entered yet whose deadline
    /// has passed on the run's clock counts as cancelled (and is cancelled
    /// now), even before the run loop got to fire its deadline; a scope
    /// that was left keeps the answer it had. Outside a run only `cancel()`
    /// counts.
    pub fn cancel_called(&self) -> bool {
        let s = &self.state;
        if !s.cancel_called.get()
            && s.deadline.get() != Instant::MAX
            && (s.entered.get() != NONE || !s.used.get())
            && crate::time::current_time().is_ok_and(|now| now >= s.deadline.get())
        {
            self.cancel();
        }
        s.cancel_called.get()
    }

    /// Did this scope catch a `Cancelled` when its code finished?
    pub fn cancelled_caught(&self) -> bool {
        self.state.cancelled_caught.get()
    }

    /// The absolute deadline (`Instant::MAX` for none). Before a relative
    /// timeout scope is entered this is `Instant::MAX`; see
    /// [`CancelScope::relative_deadline`].
    pub fn deadline(&self) -> Instant {
        self.state.deadline.get()
    }

    /// The relative timeout still waiting to be resolved at entry, if any.
    pub fn relative_deadline(&self) -> Option<Duration> {
        self.state.relative()
    }

    /// Sets the absolute deadline; works while the scope is entered (a
    /// deadline already past cancels it at once). Clears a relative timeout.
    pub fn set_deadline(&self, deadline: Instant) {
        self.state.set_relative(None);
        self.state.deadline.set(deadline);
        let key = self.state.entered.get();
        if key != NONE {
            let _ = runtime::with(|rt| rt.sync_deadline(key));
            runtime::run_pending_aborts();
        }
    }

    /// Sets the deadline to `timeout` from now if the scope is entered, or
    /// from the moment it is entered otherwise.
    pub fn set_relative_deadline(&self, timeout: Duration) {
        if self.state.entered.get() != NONE
            && let Ok(now) = crate::time::current_time()
        {
            self.set_deadline(now + timeout);
        } else {
            self.state.set_relative(Some(timeout));
        }
    }

    /// Is the scope shielded?
    pub fn shield(&self) -> bool {
        self.state.shield.get()
    }

    /// Turns the shield on or off, also while inside (a scope whose outer
    /// scope is cancelled becomes cancelled the moment its shield drops).
    pub fn set_shield(&self, shield: bool) {
        self.state.shield.set(shield);
        let key = self.state.entered.get();
        if key != NONE {
            let _ = runtime::with(|rt| rt.recompute(key));
            runtime::run_pending_aborts();
        }
    }

    /// Is the scope entered right now?
    pub fn is_entered(&self) -> bool {
        self.state.entered.get() != NONE
    }

    /// Runs `fut` inside this scope. `Ok(Some(v))` if it finished, `Ok(None)`
    /// if it was cancelled by this scope (see
    /// [`cancelled_caught`](CancelScope::cancelled_caught)), `Err(e)` for any
    /// other error, including a cancellation of an outer scope.
    ///
    /// # Checkpoint
    /// Only as much as `fut` is.
    /// # Cancellation
    /// Cancellation of this scope ends `fut` at its next checkpoint and is
    /// caught here; outer cancellation passes through as `Err(Cancelled)`.
    /// # Errors
    /// [`Error::Runtime`] if the scope was entered before (a scope is used
    /// once) or outside `trio::run`; otherwise what `fut` returns.
    pub fn run<T, F>(&self, fut: F) -> Scoped<F>
    where
        F: Future<Output = Result<T>>,
    {
        Scoped { scope: ScopeSource::Handle(self.clone()), key: NONE, done: false, inner: Some(fut) }
    }

    /// Enters the scope under `parent` without a future around it (the
    /// runtime's own uses: nurseries and `start`). Returns the record key.
    pub(crate) fn enter_raw(&self, rt: &mut runtime::Runtime, parent: usize) -> Result<usize> {
        self.enter(rt, parent, false)
    }

    /// As [`enter_raw`](Self::enter_raw); with `lazy`, a future deadline is
    /// not put in the timer map yet: the caller promises to call
    /// `Runtime::arm_timer` before anything inside the scope waits (the
    /// `Scoped` future does, when its inner future returns `Pending`). A
    /// scope whose body finishes without waiting (the common case of a
    /// timeout around a fast operation) then never touches the timer map.
    fn enter(&self, rt: &mut runtime::Runtime, parent: usize, lazy: bool) -> Result<usize> {
        if self.state.used.replace(true) {
            return Err(Error::Runtime("a CancelScope can be entered only once"));
        }
        let mut now = None;
        if let Some(rel) = self.state.relative() {
            self.state.set_relative(None);
            let t = rt.now();
            now = Some(t);
            self.state.deadline.set(t + rel);
        }
        let key = rt.insert_scope(ScopeStateRef::Shared(self.state.clone()), parent, lazy, now);
        self.state.entered.set(key);
        Ok(key)
    }
}

/// What a [`Scoped`] future enters.
#[derive(Debug)]
enum ScopeSource {
    /// A handle's scope.
    Handle(CancelScope),
    /// A fresh scope that no handle can reach (the deadline helpers:
    /// `move_on_after` and co.), with its deadline, absolute or relative to
    /// the moment it is entered. Its state lives in the runtime's record
    /// (`ScopeStateRef::Inline`): nothing is allocated.
    Private { deadline: Instant, relative: Option<Duration> },
}

impl ScopeSource {
    /// Enters the scope under `parent`, lazily (see `CancelScope::enter`).
    fn enter(&self, rt: &mut runtime::Runtime, parent: usize) -> Result<usize> {
        match self {
            ScopeSource::Handle(scope) => scope.enter(rt, parent, true),
            ScopeSource::Private { deadline, relative } => Ok(match relative {
                Some(rel) => {
                    let now = rt.now();
                    rt.insert_private_scope(now + *rel, parent, now)
                }
                None => {
                    let now = if *deadline == Instant::MAX { Instant::ZERO } else { rt.now() };
                    rt.insert_private_scope(*deadline, parent, now)
                }
            }),
        }
    }
}

impl<F> Scoped<F> {
    /// A [`Scoped`] future for a fresh scope no handle can reach, with a
    /// deadline (`relative`: from the moment it is entered).
    pub(crate) fn private(deadline: Instant, relative: Option<Duration>, fut: F) -> Scoped<F> {
        Scoped { scope: ScopeSource::Private { deadline, relative }, key: NONE, done: false, inner: Some(fut) }
    }
}

pin_project! {
    /// The future returned by [`CancelScope::run`].
    ///
    /// Dropping it before it finished drops the inner future (inside the
    /// scope, so its clean-up still sees the scope) and then leaves the scope.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Scoped<F> {
        scope: ScopeSource,
        key: usize,
        done: bool,
        #[pin]
        inner: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if *this.key != NONE && !*this.done {
                let key = *this.key;
                let prev = runtime::with(|rt| rt.enter_scope(key));
                this.inner.set(None);
                let _ = runtime::with(|rt| {
                    if let Ok(prev) = prev {
                        rt.enter_scope(prev);
                    }
                    rt.remove_scope(key);
                });
            }
        }
    }
}

impl<T, F> Future for Scoped<F>
where
    F: Future<Output = Result<T>>,
{
    type Output = Result<Option<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(Err(Error::Runtime("Scoped future polled after completion")));
        }
        let entered = runtime::with(|rt| {
            if *this.key == NONE {
                let parent = rt.current_scope();
                *this.key = this.scope.enter(rt, parent)?;
            }
            Ok(rt.enter_scope(*this.key))
        });
        let prev = match entered {
            Ok(Ok(prev)) => prev,
            Ok(Err(e)) | Err(e) => {
                *this.done = true;
                return Poll::Ready(Err(e));
            }
        };
        let key = *this.key;
        let restore = RestoreScope(prev);
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Error::Runtime("Scoped future polled after completion")));
        };
        let out = inner.poll(cx);
        let Poll::Ready(out) = out else {
            // Something inside waits: the deadline must be in the timer map
            // now (see `CancelScope::enter`).
            let back = runtime::with(|rt| {
                rt.arm_timer(key);
                rt.enter_scope(prev);
            });
            if back.is_ok() {
                std::mem::forget(restore);
            }
            return Poll::Pending;
        };
        *this.done = true;
        // Drop the inner future inside the scope (still the current one)
        // before leaving it; `restore` goes back to `prev` if that unwinds.
        this.inner.set(None);
        let result = runtime::with(|rt| {
            rt.enter_scope(prev);
            let r = match out {
                Ok(v) => Ok(Some(v)),
                Err(e) => match rt.filter_exit_error(key, e) {
                    None => Ok(None),
                    Some(e) => Err(e),
                },
            };
            rt.remove_scope(key);
            r
        });
        if result.is_ok() {
            std::mem::forget(restore);
        }
        Poll::Ready(result.unwrap_or_else(Err))
    }
}

/// Restores the runtime's current scope when dropped, also on unwinding.
struct RestoreScope(usize);

impl Drop for RestoreScope {
    fn drop(&mut self) {
        let prev = self.0;
        let _ = runtime::with(|rt| rt.enter_scope(prev));
    }
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped").field("scope", &self.scope).field("done", &self.done).finish_non_exhaustive()
    }
}
