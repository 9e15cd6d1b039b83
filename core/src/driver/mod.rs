//! The I/O driver boundary: the only place that names an OS facility.
//!
//! The engine owns tasks, scopes, timers and wakeups. A driver only turns
//! "wait for these sources, or until this much time passed" into readiness
//! events. Every backend provides:
//!
//! - `register`/`deregister` of a [`RawSource`] under a `token`
//!   with an [`Interest`];
//! - `poll(events, timeout)`: block until an event, a [`WakeHandle`] wake, or
//!   the timeout (`None` = forever; `Some(ZERO)` = just look);
//! - `wake_handle()`: a thread-safe handle that interrupts `poll`, where the
//!   platform has threads.
//!
//! Backends: `native` (mio: epoll, kqueue, IOCP) on every OS mio supports;
//! `wasi_p1` (`poll_oneoff`) on `wasm32-wasip1`; `wasi_p2` (`wasi:io/poll`)
//! on `wasm32-wasip2`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::io::IoTable;

#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(unix)]
pub(crate) mod signals;
#[cfg(windows)]
#[path = "signals_windows.rs"]
pub(crate) mod signals;
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) mod wasi_p1;
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) mod wasi_p2;

/// The OS handle of an I/O source: a file descriptor on Unix, a socket on
/// Windows.
#[cfg(unix)]
pub type RawSource = std::os::fd::RawFd;
/// The OS handle of an I/O source: a file descriptor on Unix, a socket on
/// Windows.
#[cfg(windows)]
pub type RawSource = std::os::windows::io::RawSocket;
/// The OS handle of an I/O source.
#[cfg(not(any(unix, windows)))]
pub type RawSource = u32;

/// Which readiness a source is registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

#[allow(dead_code)] // used by the networking layer and the driver tests
impl Interest {
    pub(crate) const READABLE: Interest = Interest { readable: true, writable: false };
    pub(crate) const WRITABLE: Interest = Interest { readable: false, writable: true };
    pub(crate) const BOTH: Interest = Interest { readable: true, writable: true };
}

/// One readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) token: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// Error: wake both directions, the operation will report it.
    pub(crate) error: bool,
    /// The peer will send nothing more (EOF or hang-up). Sticky: no new
    /// edge will follow, so reads must keep trying.
    pub(crate) read_closed: bool,
    /// Writing can no longer succeed (hang-up). Sticky as `read_closed`.
    pub(crate) write_closed: bool,
}

/// The buffer `poll` fills.
pub(crate) type Events = Vec<Event>;

/// Interrupts a driver's blocking `poll` from any thread.
pub(crate) trait WakeHandle: Send + Sync {
    fn wake(&self);
}

/// What every backend provides (see the module docs).
pub(crate) trait Driver {
    fn register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, source: RawSource) -> io::Result<()>;
    /// Called each time a task is about to park waiting on `source`, with
    /// `interest` the directions somebody now waits on (the new waiter's
    /// included). After it, the backend reports an event for each of those
    /// directions that is ready or becomes ready. A backend whose
    /// registration keeps reporting edges (epoll, kqueue) does nothing; a
    /// one-shot backend (mio's IOCP/AFD emulation on Windows, which stops
    /// watching a direction once it reported it) watches again.
    fn arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()>;
    /// `io` is the runtime's table of sources and their waiters: drivers
    /// over a level-triggered, stateless poll (WASI) subscribe only the
    /// directions somebody waits on; the native driver ignores it.
    fn poll(&mut self, io: &IoTable, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;
    fn wake_handle(&self) -> Option<Arc<dyn WakeHandle>>;
}

/// Whether `source` is ready for `interest` right now, asked of the OS
/// without waiting (level-triggered, for `wait_readable`/`wait_writable`):
/// `poll(2)` on Unix, `WSAPoll` on Windows. An error or a hang-up counts as
/// ready (the operation will report it), and so does a failed question.
#[cfg(not(target_os = "wasi"))]
pub(crate) fn ready_now(source: RawSource, interest: Interest) -> bool {
    native::ready_now(source, interest)
}

#[cfg(windows)]
pub(crate) use native::exclusive_address_use;

/// Whether `source` is ready right now: WASI has no non-blocking question,
/// so the readiness bit is trusted (a spurious wakeup at worst).
#[cfg(target_os = "wasi")]
pub(crate) fn ready_now(_source: RawSource, _interest: Interest) -> bool {
    true
}

/// The driver of this platform.
#[cfg(not(target_os = "wasi"))]
pub(crate) type PlatformDriver = native::NativeDriver;

/// The driver for this platform.
#[cfg(not(target_os = "wasi"))]
pub(crate) fn new_driver() -> io::Result<PlatformDriver> {
    native::NativeDriver::new()
}

/// The driver of this platform.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) type PlatformDriver = wasi_p1::WasiP1Driver;

/// The driver for this platform.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) fn new_driver() -> io::Result<PlatformDriver> {
    wasi_p1::WasiP1Driver::new()
}

/// The driver of this platform.
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) type PlatformDriver = wasi_p2::WasiP2Driver;

/// The driver for this platform.
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) fn new_driver() -> io::Result<PlatformDriver> {
    wasi_p2::WasiP2Driver::new()
}
