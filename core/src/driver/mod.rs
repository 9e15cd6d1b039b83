//! The I/O driver boundary: the only place that names an OS facility.
//!
//! The engine (`runtime/`) owns tasks, scopes, timers, wakeups and the
//! table of I/O sources with their waiters. A driver turns "wait for these
//! sources, or until this much time passed" into readiness events, and
//! never reads the engine's tables: the engine tells it what to watch.
//!
//! # The contract
//!
//! Every backend implements [`Backend`]:
//!
//! - **Sources and tokens.** `register(source, token, interest)` once per
//!   source (a socket, a descriptor, a WASI source number), with the token
//!   the engine chose (its record key, small and dense; `usize::MAX` is
//!   reserved); `deregister(source)` before the source is closed, after
//!   which no event for it is reported. Registering a source twice is an
//!   error.
//! - **Arming, one-shot per direction.** Before a task parks waiting on a
//!   direction of a source, the engine calls `arm(source, token, interest)`
//!   with every direction now waited on. After `arm`, the backend reports
//!   an event for each armed direction that is ready or becomes ready; a
//!   direction it reported may stay quiet until it is armed again. When a
//!   waiter leaves without an event (cancelled, dropped), the engine calls
//!   `disarm`. Edge-triggered backends (epoll, kqueue) may report more
//!   than asked and ignore both calls; mio's IOCP/AFD emulation on Windows
//!   re-arms in `arm`; the stateless WASI backends subscribe exactly the
//!   armed directions (`driver/armed.rs`).
//! - **Readiness, not completion.** An event means "the operation may
//!   succeed now": the engine then tries the non-blocking call, and on
//!   `WouldBlock` marks the direction not ready and parks again. Spurious
//!   events are allowed and cost one retry. An event carries `error` (wake
//!   both directions; the call reports the error) and the sticky
//!   `read_closed`/`write_closed` hang-ups (no edge follows a hang-up, so
//!   the direction stays ready for good). A completion backend (io_uring,
//!   IOCP proper) fits behind the same engine by reporting a direction
//!   ready when its submitted operation completed.
//! - **Waiting.** `poll(events, timeout)` blocks until an event, a
//!   [`WakeHandle`] wake or the timeout (`None` = forever, `Some(ZERO)` =
//!   just look; deadlines are the engine's, which passes the nearest one as
//!   the timeout), then appends what happened. An interrupted wait
//!   (`EINTR`) returns with no events. A backend that can never be woken
//!   (WASI: no threads, no signals) returns `Deadlock` for a wait with
//!   nothing armed and no timeout instead of hanging.
//! - **Wake handle.** `wake_handle()` gives a thread-safe handle that ends
//!   a blocking `poll` from any thread (`None` where there are no
//!   threads); a wake is not reported as an event.
//! - **Close.** The engine wakes every waiter of a released source itself
//!   (with `Closed`, Trio's `notify_closing`), then deregisters it.
//! - **Level questions.** [`ready_now`] asks the OS whether a source is
//!   ready right now, without waiting, for Trio's level-triggered
//!   `wait_readable`/`wait_writable`.
//!
//! The conformance suite `core/tests/driver_conformance.rs` holds every
//! backend to this: it runs natively (epoll), on Windows under Wine (AFD),
//! and on WASI preview 1 and 2 in the project's host.
//!
//! - **Sockets.** Each backend owns its sockets' operations (create,
//!   bind, listen, accept, connect, read, write, shutdown, close) behind
//!   the traits of `socket.rs`, which `net/` is written once over; the
//!   readiness backends share their "try the call, wait for readiness"
//!   loop (`readiness.rs`), a completion backend would submit and wait for
//!   the completion instead.
//!
//! Backends, one directory each: `native/` (mio: epoll, kqueue, IOCP/AFD)
//! on every OS mio supports; `wasi_p1/` (`poll_oneoff`) on `wasm32-wasip1`;
//! `wasi_p2/` (`wasi:io/poll`, `wasi:sockets`) on `wasm32-wasip2`. Each
//! has its poller in `mod.rs` and its sockets in `socket.rs`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

// Natively only its unit tests use it.
#[cfg(any(target_os = "wasi", test))]
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
mod armed;
#[cfg(not(target_os = "wasi"))]
mod native;
pub(crate) mod os;
pub(crate) mod readiness;
#[cfg(unix)]
pub(crate) mod signals;
#[cfg(windows)]
#[path = "signals_windows.rs"]
pub(crate) mod signals;
pub(crate) mod socket;
pub(crate) mod thread_name;
#[cfg(target_os = "linux")]
pub(crate) mod uring;
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) mod wasi_p1;
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) mod wasi_p2;

/// The OS handle of an I/O source: a file descriptor on Unix, a socket on
/// Windows.
#[cfg(unix)]
pub type RawSource = std::os::fd::RawFd;
/// The OS handle of an I/O source: a file descriptor on Unix, a socket
/// (or, for `subprocess`, a named pipe's handle) on Windows.
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

impl Event {
    /// One direction ready (`write`: writable, else readable), nothing else.
    #[cfg(all(target_os = "wasi", not(target_env = "p1")))]
    pub(crate) fn ready(token: usize, write: bool) -> Event {
        Event { token, readable: !write, writable: write, error: false, read_closed: false, write_closed: false }
    }
}

/// The buffer `poll` fills.
pub(crate) type Events = Vec<Event>;

/// Interrupts a driver's blocking `poll` from any thread.
pub(crate) trait WakeHandle: Send + Sync {
    fn wake(&self);
}

/// What every backend provides (see the module docs).
pub(crate) trait Backend {
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
    /// Nobody waits on the directions in `interest` of `source` any more
    /// (the waiter was cancelled or dropped before an event came). A
    /// backend that subscribes only armed directions stops subscribing
    /// them; others do nothing (one spurious event at worst).
    fn disarm(&mut self, source: RawSource, token: usize, interest: Interest);
    /// Waits for events of armed sources, a wake, or `timeout`, and appends
    /// what happened to `events` (see the module docs).
    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;
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
pub(crate) use native::WinPipe;

/// Whether `source` is ready right now: WASI has no non-blocking question,
/// so the readiness bit is trusted (a spurious wakeup at worst).
#[cfg(target_os = "wasi")]
pub(crate) fn ready_now(_source: RawSource, _interest: Interest) -> bool {
    true
}

/// Which I/O driver a run uses ([`RunOptions::driver`](crate::RunOptions::driver)).
///
/// Without a choice in `RunOptions`, the environment variable
/// `TRIO_DRIVER` (`epoll`, `uring` or `auto`) decides, and without it
/// [`Driver::Epoll`]. [`lowlevel::current_driver`](crate::lowlevel::current_driver)
/// tells which one a run got and, after a fallback, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Driver {
    /// The readiness poller of the platform: epoll on Linux, kqueue on the
    /// BSDs and macOS, IOCP/AFD on Windows, `poll_oneoff` or
    /// `wasi:io/poll` on WASI.
    Epoll,
    /// io_uring (Linux only). A run asking for it fails with
    /// [`Error::Io`](crate::Error::Io) where the kernel does not offer it.
    /// TCP and Unix-domain stream sockets receive and send through the
    /// ring (completions on buffers the driver owns, one `io_uring_enter`
    /// submitting a pass's operations and reaping what completed: about
    /// 0.1 system calls per echoed message at 100 connections, against 2
    /// on epoll); everything else waits for readiness through the ring.
    /// Trio's semantics are the same as on epoll (every operation a
    /// checkpoint; a cancelled receive takes nothing, a cancelled partial
    /// `send_all` breaks the stream).
    Uring,
    /// io_uring where the kernel offers what the backend needs, else the
    /// readiness poller, with the reason in
    /// [`DriverInfo::fallback`].
    Auto,
}

impl Driver {
    /// The choice `TRIO_DRIVER` names (`None` if unset).
    ///
    /// # Errors
    /// A value other than `epoll`, `uring` or `auto`.
    pub(crate) fn from_env() -> io::Result<Option<Driver>> {
        match std::env::var("TRIO_DRIVER") {
            Err(_) => Ok(None),
            Ok(v) => Driver::parse(&v).map(Some),
        }
    }

    /// The driver `TRIO_DRIVER=name` asks for.
    fn parse(name: &str) -> io::Result<Driver> {
        match name {
            "epoll" => Ok(Driver::Epoll),
            "uring" => Ok(Driver::Uring),
            "auto" => Ok(Driver::Auto),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TRIO_DRIVER={other:?}: expected epoll, uring or auto"),
            )),
        }
    }
}

/// The driver a run got (see
/// [`lowlevel::current_driver`](crate::lowlevel::current_driver)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    driver: Driver,
    fallback: Option<String>,
}

impl DriverInfo {
    /// [`Driver::Epoll`] or [`Driver::Uring`] (never `Auto`).
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// For a run that asked for [`Driver::Auto`] and got epoll: why
    /// io_uring was not used, in one line (for example "io_uring:
    /// Operation not permitted (os error 1)" where a seccomp filter or
    /// `/proc/sys/kernel/io_uring_disabled` refuses it).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

/// The driver of this platform.
#[cfg(all(not(target_os = "wasi"), not(target_os = "linux")))]
pub(crate) type PlatformDriver = native::NativeDriver;

/// The driver for this platform, as chosen.
///
/// # Errors
/// The poller cannot be made; [`Driver::Uring`] off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn new_driver(choice: Driver) -> io::Result<(PlatformDriver, DriverInfo)> {
    let fallback = match choice {
        Driver::Uring => return Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring is Linux only")),
        Driver::Epoll => None,
        Driver::Auto => Some("io_uring is Linux only".to_owned()),
    };
    Ok((new_platform_driver()?, DriverInfo { driver: Driver::Epoll, fallback }))
}

#[cfg(all(not(target_os = "wasi"), not(target_os = "linux")))]
fn new_platform_driver() -> io::Result<PlatformDriver> {
    native::NativeDriver::new()
}

/// The driver of this platform: epoll or io_uring, chosen per run.
#[cfg(target_os = "linux")]
pub(crate) enum PlatformDriver {
    Epoll(native::NativeDriver),
    /// Boxed: the ring's state is large, and epoll is the default.
    Uring(Box<uring::UringDriver>),
}

#[cfg(target_os = "linux")]
impl PlatformDriver {
    /// The ring, when the run uses io_uring.
    #[inline]
    pub(crate) fn uring(&mut self) -> Option<&mut uring::UringDriver> {
        match self {
            PlatformDriver::Uring(u) => Some(u),
            PlatformDriver::Epoll(_) => None,
        }
    }
}

/// The driver for this platform, as chosen (see [`Driver`]).
///
/// # Errors
/// The poller cannot be made; for [`Driver::Uring`], why io_uring cannot
/// be used.
#[cfg(target_os = "linux")]
pub(crate) fn new_driver(choice: Driver) -> io::Result<(PlatformDriver, DriverInfo)> {
    choose(choice, uring::UringDriver::new)
}

/// [`new_driver`] with the io_uring set-up given (so that tests can make
/// it fail).
#[cfg(target_os = "linux")]
fn choose(
    choice: Driver,
    uring: impl FnOnce() -> io::Result<uring::UringDriver>,
) -> io::Result<(PlatformDriver, DriverInfo)> {
    let epoll = || native::NativeDriver::new().map(PlatformDriver::Epoll);
    match choice {
        Driver::Epoll => Ok((epoll()?, DriverInfo { driver: Driver::Epoll, fallback: None })),
        Driver::Uring => match uring() {
            Ok(d) => Ok((PlatformDriver::Uring(Box::new(d)), DriverInfo { driver: Driver::Uring, fallback: None })),
            Err(e) => Err(io::Error::new(e.kind(), format!("io_uring cannot be used here: {e}"))),
        },
        Driver::Auto => match uring() {
            Ok(d) => Ok((PlatformDriver::Uring(Box::new(d)), DriverInfo { driver: Driver::Uring, fallback: None })),
            Err(e) => Ok((epoll()?, DriverInfo { driver: Driver::Epoll, fallback: Some(format!("io_uring: {e}")) })),
        },
    }
}

#[cfg(target_os = "linux")]
impl Backend for PlatformDriver {
    fn register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        match self {
            PlatformDriver::Epoll(d) => d.register(source, token, interest),
            PlatformDriver::Uring(d) => d.register(source, token, interest),
        }
    }

    fn deregister(&mut self, source: RawSource) -> io::Result<()> {
        match self {
            PlatformDriver::Epoll(d) => d.deregister(source),
            PlatformDriver::Uring(d) => d.deregister(source),
        }
    }

    #[inline]
    fn arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        match self {
            PlatformDriver::Epoll(d) => d.arm(source, token, interest),
            PlatformDriver::Uring(d) => d.arm(source, token, interest),
        }
    }

    #[inline]
    fn disarm(&mut self, source: RawSource, token: usize, interest: Interest) {
        match self {
            PlatformDriver::Epoll(d) => d.disarm(source, token, interest),
            PlatformDriver::Uring(d) => d.disarm(source, token, interest),
        }
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            PlatformDriver::Epoll(d) => d.poll(events, timeout),
            PlatformDriver::Uring(d) => d.poll(events, timeout),
        }
    }

    fn wake_handle(&self) -> Option<Arc<dyn WakeHandle>> {
        match self {
            PlatformDriver::Epoll(d) => d.wake_handle(),
            PlatformDriver::Uring(d) => d.wake_handle(),
        }
    }
}

/// The driver of this platform.
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub(crate) type PlatformDriver = wasi_p1::WasiP1Driver;

#[cfg(all(target_os = "wasi", target_env = "p1"))]
fn new_platform_driver() -> io::Result<PlatformDriver> {
    wasi_p1::new_driver()
}

/// The driver of this platform.
#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
pub(crate) type PlatformDriver = wasi_p2::WasiP2Driver;

#[cfg(all(target_os = "wasi", not(target_env = "p1")))]
fn new_platform_driver() -> io::Result<PlatformDriver> {
    wasi_p2::new_driver()
}

#[cfg(test)]
mod choice_tests {
    use super::*;

    #[test]
    fn trio_driver_names() {
        assert_eq!(Driver::parse("epoll").unwrap(), Driver::Epoll);
        assert_eq!(Driver::parse("uring").unwrap(), Driver::Uring);
        assert_eq!(Driver::parse("auto").unwrap(), Driver::Auto);
        let e = Driver::parse("kqueue").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("expected epoll, uring or auto"), "{e}");
    }

    /// `Auto` falls back to epoll with the reason when io_uring cannot be
    /// set up (forced here: the set-up fails as under a seccomp filter or
    /// `io_uring_disabled`); `Uring` fails with it; `Epoll` never tries.
    #[cfg(target_os = "linux")]
    #[test]
    fn auto_falls_back_when_uring_fails() {
        let refused = || Err(io::Error::from_raw_os_error(libc::EPERM));
        let (d, info) = choose(Driver::Auto, refused).unwrap();
        assert!(matches!(d, PlatformDriver::Epoll(_)));
        assert_eq!(info.driver(), Driver::Epoll);
        let why = info.fallback().unwrap();
        assert!(why.starts_with("io_uring: ") && why.contains("not permitted"), "{why}");

        let Err(e) = choose(Driver::Uring, refused) else { panic!("Uring without io_uring") };
        assert!(e.to_string().contains("io_uring cannot be used here"), "{e}");

        let (d, info) = choose(Driver::Epoll, || panic!("Epoll must not try io_uring")).unwrap();
        assert!(matches!(d, PlatformDriver::Epoll(_)));
        assert_eq!(info.fallback(), None);
    }

    /// Off Linux, `Auto` is the platform's poller with the reason.
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn auto_is_the_platform_poller_off_linux() {
        let (_, info) = new_driver(Driver::Auto).unwrap();
        assert_eq!(info.driver(), Driver::Epoll);
        assert_eq!(info.fallback(), Some("io_uring is Linux only"));
        assert!(new_driver(Driver::Uring).is_err());
    }
}
