//! The native backend on mio (epoll on Linux, kqueue on the BSDs and macOS,
//! IOCP/AFD on Windows): what every OS shares is here; `unix.rs` registers
//! raw descriptors, `windows.rs` watches sockets through mio's views and
//! re-arms them.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::{Poll, Token, Waker};

use super::{Backend, Event, Events, Interest, RawSource, WakeHandle};

pub(crate) mod socket;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::ready_now;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::exclusive_address_use;
#[cfg(windows)]
pub(crate) use windows::ready_now;
#[cfg(windows)]
mod windows_pipe;
#[cfg(windows)]
pub(crate) use windows_pipe::WinPipe;

/// Events taken per `epoll_wait`/`kevent` (the tasks they wake form one
/// batch). 64 instead was tried for cache locality and made no measurable
/// difference on the echo benchmark.
const EVENTS_PER_POLL: usize = 256;

/// Reserved for the wake handle; sources use smaller tokens.
const WAKE_TOKEN: Token = Token(usize::MAX);

pub(crate) struct NativeDriver {
    poll: Poll,
    events: mio::Events,
    waker: Arc<MioWake>,
    /// The registered sockets' mio views, by handle.
    #[cfg(windows)]
    sources: std::collections::HashMap<RawSource, windows::WinSource>,
    /// Directions found ready when they were armed, reported by the next
    /// `poll` (see `do_arm`).
    #[cfg(windows)]
    ready_at_arm: Vec<Event>,
    /// Named pipes adopted or registered, by handle (`windows_pipe.rs`).
    #[cfg(windows)]
    pipes: std::collections::HashMap<RawSource, WinPipe>,
}

struct MioWake(Waker);

impl WakeHandle for MioWake {
    fn wake(&self) {
        // A failed wake means the poller is gone (the run is over); there is
        // nobody left to tell.
        let _ = self.0.wake();
    }
}

impl NativeDriver {
    pub(crate) fn new() -> io::Result<NativeDriver> {
        let poll = Poll::new()?;
        let waker = Arc::new(MioWake(Waker::new(poll.registry(), WAKE_TOKEN)?));
        Ok(NativeDriver {
            poll,
            events: mio::Events::with_capacity(EVENTS_PER_POLL),
            waker,
            #[cfg(windows)]
            sources: std::collections::HashMap::new(),
            #[cfg(windows)]
            ready_at_arm: Vec::new(),
            #[cfg(windows)]
            pipes: std::collections::HashMap::new(),
        })
    }
}

pub(super) fn mio_interest(i: Interest) -> io::Result<mio::Interest> {
    match (i.readable, i.writable) {
        (true, true) => Ok(mio::Interest::READABLE | mio::Interest::WRITABLE),
        (true, false) => Ok(mio::Interest::READABLE),
        (false, true) => Ok(mio::Interest::WRITABLE),
        (false, false) => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty interest")),
    }
}

impl Backend for NativeDriver {
    fn register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        assert_ne!(token, WAKE_TOKEN.0, "token reserved for the wake handle");
        self.do_register(source, token, interest)
    }

    fn deregister(&mut self, source: RawSource) -> io::Result<()> {
        self.do_deregister(source)
    }

    #[inline]
    fn arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        #[cfg(windows)]
        return self.do_arm(source, token, interest);
        // epoll and kqueue registrations (edge-triggered) report every new
        // edge without being asked again.
        #[cfg(not(windows))]
        {
            let _ = (source, token, interest);
            Ok(())
        }
    }

    #[inline]
    fn disarm(&mut self, _source: RawSource, _token: usize, _interest: Interest) {
        // epoll/kqueue: an unwanted edge costs one spurious event; AFD
        // reports an armed direction once and then stops by itself.
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        #[cfg(windows)]
        let timeout = if self.ready_at_arm.is_empty() {
            timeout
        } else {
            events.append(&mut self.ready_at_arm);
            Some(Duration::ZERO)
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in self.events.iter() {
            if ev.token() == WAKE_TOKEN {
                continue;
            }
            events.push(Event {
                token: ev.token().0,
                readable: ev.is_readable() || ev.is_read_closed(),
                writable: ev.is_writable() || ev.is_write_closed(),
                error: ev.is_error(),
                read_closed: ev.is_read_closed(),
                write_closed: ev.is_write_closed(),
            });
        }
        Ok(())
    }

    fn wake_handle(&self) -> Option<Arc<dyn WakeHandle>> {
        Some(self.waker.clone())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn pipe_readiness_and_cross_thread_wake() {
        let mut d = NativeDriver::new().unwrap();
        let (mut tx, rx) = mio::unix::pipe::new().unwrap();
        d.register(rx.as_raw_fd(), 7, Interest::READABLE).unwrap();
        let mut events = Events::new();
        d.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "nothing written yet: {events:?}");
        tx.write_all(b"x").unwrap();
        d.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 7);
        assert!(events[0].readable);
        d.deregister(rx.as_raw_fd()).unwrap();

        // A wake from another thread ends a poll that would block forever.
        let handle = d.wake_handle().unwrap();
        let t = std::thread::spawn(move || handle.wake());
        events.clear();
        d.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
        assert!(events.is_empty(), "wakes are not reported as source events");
        t.join().unwrap();
    }

    #[test]
    fn empty_interest_is_an_error() {
        let mut d = NativeDriver::new().unwrap();
        let (_tx, rx) = mio::unix::pipe::new().unwrap();
        let none = Interest { readable: false, writable: false };
        assert!(d.register(rx.as_raw_fd(), 1, none).is_err());
    }
}
