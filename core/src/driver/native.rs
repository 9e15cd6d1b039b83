//! The native backend on mio (epoll on Linux, kqueue on the BSDs and macOS,
//! IOCP on Windows).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::{Poll, Token, Waker};

use super::{Driver, Event, Events, Interest, RawSource, WakeHandle};

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
    sources: std::collections::HashMap<RawSource, WinSource>,
    /// Directions found ready when they were armed, reported by the next
    /// `poll` (see `do_arm`).
    #[cfg(windows)]
    ready_at_arm: Vec<Event>,
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
        })
    }
}

fn mio_interest(i: Interest) -> io::Result<mio::Interest> {
    match (i.readable, i.writable) {
        (true, true) => Ok(mio::Interest::READABLE | mio::Interest::WRITABLE),
        (true, false) => Ok(mio::Interest::READABLE),
        (false, true) => Ok(mio::Interest::WRITABLE),
        (false, false) => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty interest")),
    }
}

#[cfg(unix)]
impl NativeDriver {
    fn do_register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        let interest = mio_interest(interest)?;
        self.poll.registry().register(&mut mio::unix::SourceFd(&source), Token(token), interest)
    }

    fn do_deregister(&mut self, source: RawSource) -> io::Result<()> {
        self.poll.registry().deregister(&mut mio::unix::SourceFd(&source))
    }
}

/// On Windows mio polls sockets through AFD, registered as mio's own
/// socket types. Every socket (stream, listener, UDP) is watched through a
/// `mio::net::TcpStream` view of its handle: AFD polls any socket the same
/// way, and the view is never dropped (the socket's owner closes it).
#[cfg(windows)]
type WinSource = std::mem::ManuallyDrop<mio::net::TcpStream>;

#[cfg(windows)]
impl NativeDriver {
    fn do_register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        use std::os::windows::io::FromRawSocket;
        let interest = mio_interest(interest)?;
        if self.sources.contains_key(&source) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "this socket is already registered"));
        }
        // SAFETY: `source` is an open socket handle owned by the caller
        // until it deregisters it; the view never closes it (ManuallyDrop).
        let mut view: WinSource = std::mem::ManuallyDrop::new(unsafe { mio::net::TcpStream::from_raw_socket(source) });
        self.poll.registry().register(&mut *view, Token(token), interest)?;
        self.sources.insert(source, view);
        Ok(())
    }

    fn do_deregister(&mut self, source: RawSource) -> io::Result<()> {
        match self.sources.remove(&source) {
            Some(mut view) => self.poll.registry().deregister(&mut *view),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "this socket is not registered")),
        }
    }

    fn do_arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        let mio_int = mio_interest(interest)?;
        match self.sources.get_mut(&source) {
            // AFD reports each direction once; asking again re-arms it.
            Some(view) => self.poll.registry().reregister(&mut **view, Token(token), mio_int)?,
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "this socket is not registered")),
        }
        // The re-armed AFD poll is submitted by the next `poll` and answered
        // through the completion port later, even for a condition that holds
        // already (an EOF that came while nobody watched): a `poll` that only
        // looks (timeout zero, as the mock clock's autojump does before
        // jumping) would miss it. So what is true now is asked at once and
        // reported by the next `poll`, level-triggered as epoll would.
        if let Some(ev) = ready_event(source, token, interest) {
            self.ready_at_arm.push(ev);
        }
        Ok(())
    }
}

/// See [`super::ready_now`].
#[cfg(unix)]
pub(crate) fn ready_now(source: RawSource, interest: Interest) -> bool {
    let mut events = 0;
    if interest.readable {
        events |= libc::POLLIN;
    }
    if interest.writable {
        events |= libc::POLLOUT;
    }
    let mut p = libc::pollfd { fd: source, events, revents: 0 };
    // SAFETY: one valid pollfd, count 1, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

/// One `WSAPoll` of `source` for `interest` without waiting: the
/// `revents`, or `None` if the call failed.
#[cfg(windows)]
fn wsa_poll(source: RawSource, interest: Interest) -> Option<i16> {
    use windows_sys::Win32::Networking::WinSock::{POLLRDNORM, POLLWRNORM, WSAPOLLFD, WSAPoll};
    let mut events = 0;
    if interest.readable {
        events |= POLLRDNORM;
    }
    if interest.writable {
        events |= POLLWRNORM;
    }
    let mut p = WSAPOLLFD { fd: source as usize, events, revents: 0 };
    // SAFETY: one valid WSAPOLLFD, count 1, no timeout.
    let n = unsafe { WSAPoll(&mut p, 1, 0) };
    (n >= 0).then_some(p.revents)
}

/// The directions of `interest` that `source` is ready for now, as an
/// event, or `None`.
#[cfg(windows)]
fn ready_event(source: RawSource, token: usize, interest: Interest) -> Option<Event> {
    use windows_sys::Win32::Networking::WinSock::{POLLERR, POLLHUP, POLLRDNORM, POLLWRNORM};
    let r = wsa_poll(source, interest)?;
    let error = r & POLLERR != 0;
    let hup = r & POLLHUP != 0;
    let readable = interest.readable && (r & POLLRDNORM != 0 || hup || error);
    let writable = interest.writable && (r & POLLWRNORM != 0 || error);
    (readable || writable).then_some(Event {
        token,
        readable,
        writable,
        error,
        read_closed: hup && interest.readable,
        write_closed: false,
    })
}

/// See [`super::ready_now`].
#[cfg(windows)]
pub(crate) fn ready_now(source: RawSource, interest: Interest) -> bool {
    wsa_poll(source, interest).is_none_or(|revents| revents != 0)
}

/// `SO_EXCLUSIVEADDRUSE`: on Windows, where `SO_REUSEADDR` would let
/// another socket steal the port, listeners claim it for themselves (as
/// Trio's).
#[cfg(windows)]
pub(crate) fn exclusive_address_use(source: RawSource) -> io::Result<()> {
    use windows_sys::Win32::Networking::WinSock::{SO_EXCLUSIVEADDRUSE, SOL_SOCKET, WSAGetLastError, setsockopt};
    let on: i32 = 1;
    // SAFETY: an open socket and a pointer to an int of the given length.
    let rc = unsafe {
        setsockopt(
            source as usize,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            size_of::<i32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: no arguments; reads this thread's last socket error.
        Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }))
    }
}

impl Driver for NativeDriver {
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
