//! Time: the runtime's [`Instant`], the [`Clock`] trait, sleeping, and the
//! deadline helpers built on cancel scopes.
//!
//! Time is read from the run's clock, never from the OS directly, so a test can
//! run under [`MockClock`](crate::testing::MockClock) and finish a one-hour
//! timeout in microseconds. As in Trio, sleeping is a cancel scope with a
//! deadline around [`sleep_forever`]: deadlines are the one timer mechanism.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::time::Duration;

use crate::cancel::Scoped;
use crate::error::{Error, Result};
use crate::runtime;

/// A point in time on the run's clock, with nanosecond resolution.
///
/// Only differences between instants of the same clock mean anything; the
/// system clock starts at an arbitrary offset so that code cannot depend on
/// absolute values. [`Instant::MAX`] stands for "never" (no deadline).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The earliest instant (useful as "a deadline already in the past").
    pub const ZERO: Instant = Instant { nanos: 0 };
    /// "Never": the deadline of a scope without one.
    pub const MAX: Instant = Instant { nanos: u64::MAX };

    /// An instant `nanos` nanoseconds after the clock's zero.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant { nanos }
    }

    /// Nanoseconds since the clock's zero.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    #[inline]
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant { nanos: self.nanos.saturating_add(duration_nanos(d)) }
    }

    /// `self - d`, saturating at [`Instant::ZERO`].
    #[inline]
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant { nanos: self.nanos.saturating_sub(duration_nanos(d)) }
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years), in u64
/// arithmetic.
#[inline]
fn duration_nanos(d: Duration) -> u64 {
    d.as_secs().checked_mul(1_000_000_000).and_then(|n| n.checked_add(u64::from(d.subsec_nanos()))).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Instant::MAX {
            f.write_str("Instant::MAX")
        } else {
            write!(f, "Instant({:?})", Duration::from_nanos(self.nanos))
        }
    }
}

/// A source of time for one run.
///
/// The runtime asks the clock what time it is and how long to block the OS
/// poll for until a deadline. [`SystemClock`] is the default;
/// [`MockClock`](crate::testing::MockClock) is the one for tests.
pub trait Clock {
    /// Called once when the run starts.
    fn start_clock(&self) {}
    /// The current time.
    fn current_time(&self) -> Instant;
    /// How long the OS may block, in real time, before `deadline` is reached.
    /// `None` means "forever" (the clock will never get there by itself).
    fn deadline_to_sleep_time(&self, deadline: Instant) -> Option<Duration>;
    /// If every task has been blocked for this long in real time, the runtime
    /// calls [`Clock::autojump`] with the next deadline. `None` disables it.
    fn autojump_threshold(&self) -> Option<Duration> {
        None
    }
    /// Moves a virtual clock forward to `deadline` (see
    /// [`Clock::autojump_threshold`]). Real clocks ignore it.
    fn autojump(&self, deadline: Instant) {
        let _ = deadline;
    }
}

/// The default clock: the OS monotonic clock, with an arbitrary offset.
#[derive(Debug, Clone)]
pub struct SystemClock {
    /// The OS monotonic clock's reading (ns) at this clock's zero plus
    /// the offset.
    base: u64,
}

/// Where the system clock's reading starts, so that subtracting small
/// durations from `current_time()` stays meaningful (and nobody relies on 0).
const SYSTEM_CLOCK_OFFSET: Duration = Duration::from_secs(100_000);

impl SystemClock {
    /// A system clock whose zero is now minus an arbitrary offset.
    pub fn new() -> SystemClock {
        SystemClock { base: crate::driver::os::monotonic_nanos() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn current_time(&self) -> Instant {
        const OFFSET: u64 = SYSTEM_CLOCK_OFFSET.as_nanos() as u64;
        Instant::from_nanos(OFFSET + crate::driver::os::monotonic_nanos().saturating_sub(self.base))
    }

    fn deadline_to_sleep_time(&self, deadline: Instant) -> Option<Duration> {
        if deadline == Instant::MAX { None } else { Some(deadline.saturating_duration_since(self.current_time())) }
    }
}

/// The current time on the run's clock. Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_time() -> Result<Instant> {
    runtime::with(|rt| rt.now())
}

/// Sleeps until the run's clock reaches `deadline`.
///
/// # Checkpoint
/// Always a checkpoint: checks cancellation first and yields to the scheduler,
/// even when the deadline has already passed.
/// # Cancellation
/// If cancelled, returns `Err(Error::Cancelled)`; nothing else happened.
pub async fn sleep_until(deadline: Instant) -> Result<()> {
    move_on_at(deadline, async {
        sleep_forever().await?;
        Ok(())
    })
    .await
    .map(|_| ())
}

/// Sleeps for `duration` on the run's clock. `sleep(Duration::ZERO)` is a
/// plain checkpoint.
///
/// # Checkpoint
/// Always a checkpoint: checks cancellation first and yields to the scheduler.
/// # Cancellation
/// If cancelled, returns `Err(Error::Cancelled)`; nothing else happened.
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub async fn sleep(duration: Duration) -> Result<()> {
    let now = current_time()?;
    sleep_until(now + duration).await
}

/// Sleeps until cancelled; the only way out is `Err(Error::Cancelled)`.
///
/// # Checkpoint
/// Always a checkpoint (it parks until cancelled).
/// # Cancellation
/// Returns `Err(Error::Cancelled)` when its scope is cancelled.
pub async fn sleep_forever() -> Result<Infallible> {
    crate::lowlevel::park(|_token| {}, || crate::lowlevel::Abort::Succeeded).await?;
    Err(Error::Runtime("sleep_forever was woken without being cancelled"))
}

/// Runs `fut` inside a cancel scope whose deadline is `deadline`. Returns
/// `Ok(None)` if the deadline expired and cancelled it, `Ok(Some(v))` if it
/// finished first.
///
/// # Checkpoint
/// Only as much as `fut` is.
/// # Cancellation
/// Outer cancellation passes through as `Err(Error::Cancelled)`.
pub async fn move_on_at<T, F>(deadline: Instant, fut: F) -> Result<Option<T>>
where
    F: Future<Output = Result<T>>,
{
    Scoped::private(deadline, None, fut).await
}

/// Like [`move_on_at`], with the deadline `duration` from now.
///
/// # Checkpoint
/// Only as much as `fut` is.
/// # Cancellation
/// Outer cancellation passes through as `Err(Error::Cancelled)`.
pub async fn move_on_after<T, F>(duration: Duration, fut: F) -> Result<Option<T>>
where
    F: Future<Output = Result<T>>,
{
    Scoped::private(Instant::MAX, Some(duration), fut).await
}

/// Runs `fut` with a deadline; if the deadline cancels it, fails with
/// [`Error::TooSlow`].
///
/// # Checkpoint
/// Only as much as `fut` is.
/// # Cancellation
/// Outer cancellation passes through as `Err(Error::Cancelled)`.
/// # Errors
/// [`Error::TooSlow`] if the deadline expired and cancelled `fut`.
pub async fn fail_at<T, F>(deadline: Instant, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    Scoped::private(deadline, None, fut).await?.ok_or(Error::TooSlow)
}

/// Like [`fail_at`], with the deadline `duration` from now.
///
/// # Checkpoint
/// Only as much as `fut` is.
/// # Cancellation
/// Outer cancellation passes through as `Err(Error::Cancelled)`.
/// # Errors
/// [`Error::TooSlow`] if the deadline expired and cancelled `fut`.
pub async fn fail_after<T, F>(duration: Duration, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    Scoped::private(Instant::MAX, Some(duration), fut).await?.ok_or(Error::TooSlow)
}

/// The deadline that applies at this point: the earliest deadline of the
/// enclosing cancel scopes up to (and including) the first shielded one, or
/// `Instant::MAX` if there is none. If the code is already cancelled, it is
/// `Instant::ZERO` (Trio's "minus infinity"). Not a checkpoint.
///
/// # Errors
/// [`Error::Runtime`] outside `trio::run`.
pub fn current_effective_deadline() -> Result<Instant> {
    runtime::with(|rt| rt.effective_deadline())
}
