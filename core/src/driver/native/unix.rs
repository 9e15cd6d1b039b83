//! The native backend's Unix parts: raw descriptors registered as they
//! are (`SourceFd`), and the level question through `poll(2)`.

use std::io;

use mio::Token;

use super::{NativeDriver, mio_interest};
use crate::driver::{Interest, RawSource};

impl NativeDriver {
    pub(super) fn do_register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        let interest = mio_interest(interest)?;
        self.poll.registry().register(&mut mio::unix::SourceFd(&source), Token(token), interest)
    }

    pub(super) fn do_deregister(&mut self, source: RawSource) -> io::Result<()> {
        self.poll.registry().deregister(&mut mio::unix::SourceFd(&source))
    }
}

/// See [`crate::driver::ready_now`].
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
