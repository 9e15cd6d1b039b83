//! The native backend's Windows parts: mio polls sockets through AFD and
//! registers only its own socket types, so each socket is watched through a
//! never-dropped mio view of its handle, re-armed in `arm` (AFD reports a
//! direction once); plus the level question (`WSAPoll`) and
//! `SO_EXCLUSIVEADDRUSE`.

use std::io;

use mio::Token;

use super::{NativeDriver, mio_interest};
use crate::driver::{Event, Interest, RawSource};

/// On Windows mio polls sockets through AFD, registered as mio's own
/// socket types. Every socket (stream, listener, UDP) is watched through a
/// `mio::net::TcpStream` view of its handle: AFD polls any socket the same
/// way, and the view is never dropped (the socket's owner closes it).
pub(super) type WinSource = std::mem::ManuallyDrop<mio::net::TcpStream>;

impl NativeDriver {
    pub(super) fn do_register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        use std::os::windows::io::FromRawSocket;
        let interest = mio_interest(interest)?;
        if let Some(r) = self.pipe_register(source, token) {
            return r;
        }
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

    pub(super) fn do_deregister(&mut self, source: RawSource) -> io::Result<()> {
        if let Some(r) = self.pipe_deregister(source) {
            return r;
        }
        match self.sources.remove(&source) {
            Some(mut view) => self.poll.registry().deregister(&mut *view),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "this socket is not registered")),
        }
    }

    pub(super) fn do_arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        let mio_int = mio_interest(interest)?;
        if self.is_pipe(source) {
            // A named pipe reports every completion by itself.
            return Ok(());
        }
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

/// One `WSAPoll` of `source` for `interest` without waiting: the
/// `revents`, or `None` if the call failed.
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

/// See [`crate::driver::ready_now`].
pub(crate) fn ready_now(source: RawSource, interest: Interest) -> bool {
    wsa_poll(source, interest).is_none_or(|revents| revents != 0)
}

/// `SO_EXCLUSIVEADDRUSE`: on Windows, where `SO_REUSEADDR` would let
/// another socket steal the port, listeners claim it for themselves (as
/// Trio's).
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
