//! The directions tasks wait on, per source: what a level-triggered,
//! stateless backend (WASI's `poll_oneoff` and `wasi:io/poll`) subscribes
//! on each `poll`. Kept from the runtime's `arm`/`disarm` calls, so the
//! backend never reads the runtime's tables; one-shot per direction, as the
//! contract says (`take` after reporting an event).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Events, Interest, RawSource, WakeHandle};

/// A stateless, level-triggered backend (WASI), driven by [`Level`].
pub(crate) trait LevelPoll {
    /// Whether `source` may be registered.
    fn check_source(&self, source: RawSource) -> io::Result<()>;
    /// `source` was deregistered: forget what the backend keeps for it.
    fn source_gone(&mut self, source: RawSource);
    /// Waits (at most `timeout`) for the `armed` directions, appending an
    /// event per ready one.
    fn poll_armed(&mut self, armed: &Armed, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;
}

/// The [`Backend`] of a [`LevelPoll`] backend: keeps what the runtime armed
/// and disarms each direction it reported (one-shot, as the contract says).
/// No threads on WASI, hence no wake handle.
pub(crate) struct Level<B> {
    armed: Armed,
    /// The backend, for its own calls (preview 2's sources).
    pub(crate) backend: B,
}

impl<B> Level<B> {
    pub(crate) fn new(backend: B) -> Level<B> {
        Level { armed: Armed::default(), backend }
    }
}

impl<B: LevelPoll> Backend for Level<B> {
    fn register(&mut self, source: RawSource, _token: usize, _interest: Interest) -> io::Result<()> {
        // Nothing is watched until it is armed.
        self.backend.check_source(source)
    }

    fn deregister(&mut self, source: RawSource) -> io::Result<()> {
        self.armed.forget(source);
        self.backend.source_gone(source);
        Ok(())
    }

    fn arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        self.armed.arm(source, token, interest);
        Ok(())
    }

    fn disarm(&mut self, _source: RawSource, token: usize, interest: Interest) {
        self.armed.disarm(token, interest);
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let first = events.len();
        let r = self.backend.poll_armed(&self.armed, events, timeout);
        for ev in &events[first..] {
            self.armed.take(ev.token, ev.writable);
        }
        r
    }

    fn wake_handle(&self) -> Option<Arc<dyn WakeHandle>> {
        None
    }
}

/// The error of a wait that could never end: nothing armed, no deadline,
/// and no other thread or signal to wake it (WASI).
pub(crate) fn nothing_to_wait_for() -> io::Error {
    io::Error::new(
        io::ErrorKind::Deadlock,
        "every task is blocked with no I/O to wait for and no deadline; \
         nothing can wake them on WASI (there are no threads or signals)",
    )
}

/// Armed directions by token (tokens are small, dense record keys).
#[derive(Debug, Default)]
pub(crate) struct Armed {
    slots: Vec<Option<Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    source: RawSource,
    /// Read, write.
    dirs: [bool; 2],
}

impl Armed {
    /// Watches exactly the directions in `interest` for `token` from now on.
    pub(crate) fn arm(&mut self, source: RawSource, token: usize, interest: Interest) {
        if self.slots.len() <= token {
            self.slots.resize(token + 1, None);
        }
        self.slots[token] = Some(Slot { source, dirs: [interest.readable, interest.writable] });
        self.tidy(token);
    }

    /// Stops watching the directions in `interest` for `token`.
    pub(crate) fn disarm(&mut self, token: usize, interest: Interest) {
        if let Some(Some(slot)) = self.slots.get_mut(token) {
            if interest.readable {
                slot.dirs[0] = false;
            }
            if interest.writable {
                slot.dirs[1] = false;
            }
            self.tidy(token);
        }
    }

    /// Forgets every direction of `source` (deregistered).
    pub(crate) fn forget(&mut self, source: RawSource) {
        for slot in &mut self.slots {
            if slot.is_some_and(|s| s.source == source) {
                *slot = None;
            }
        }
        self.trim();
    }

    /// Disarms direction `write` of `token` after an event was reported
    /// for it (one-shot).
    pub(crate) fn take(&mut self, token: usize, write: bool) {
        self.disarm(token, Interest { readable: !write, writable: write });
    }

    /// `(token, source, write)` of every armed direction, in token order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, RawSource, bool)> + '_ {
        self.slots.iter().enumerate().flat_map(|(token, slot)| {
            let s = *slot;
            [false, true]
                .into_iter()
                .filter(move |&write| s.is_some_and(|s| s.dirs[usize::from(write)]))
                .map(move |write| (token, s.map_or(0, |s| s.source), write))
        })
    }

    /// Whether no direction is armed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn tidy(&mut self, token: usize) {
        if self.slots[token].is_some_and(|s| !s.dirs[0] && !s.dirs[1]) {
            self.slots[token] = None;
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_take_disarm_forget() {
        let mut a = Armed::default();
        assert!(a.is_empty());
        a.arm(30, 3, Interest::READABLE);
        a.arm(10, 1, Interest::BOTH);
        assert_eq!(a.iter().collect::<Vec<_>>(), [(1, 10, false), (1, 10, true), (3, 30, false)]);
        // One-shot: a reported direction is no longer watched.
        a.take(1, false);
        assert_eq!(a.iter().collect::<Vec<_>>(), [(1, 10, true), (3, 30, false)]);
        // Arming sets exactly the directions waited on now.
        a.arm(30, 3, Interest::WRITABLE);
        assert_eq!(a.iter().collect::<Vec<_>>(), [(1, 10, true), (3, 30, true)]);
        a.disarm(3, Interest::WRITABLE);
        a.disarm(7, Interest::BOTH);
        assert_eq!(a.iter().collect::<Vec<_>>(), [(1, 10, true)]);
        a.forget(10);
        assert!(a.is_empty());
        assert_eq!(a.iter().count(), 0);
    }
}
