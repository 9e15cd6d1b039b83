//! I/O sources registered with the driver, and the tasks waiting on them.
//!
//! # Readiness contract
//!
//! The native driver is edge-triggered: the OS reports a source when it
//! *becomes* readable or writable. Each record keeps one "maybe ready" bit
//! per direction, set by events and cleared by the owner when an operation
//! hits `WouldBlock` (or a short read shows the buffer was drained). An
//! operation with the bit set tries the system call first; with the bit
//! clear it parks until the next event. Nothing runs between an operation's
//! `WouldBlock` and its park (one thread, events are only taken between
//! passes), so no edge can be lost in between.
//!
//! Sockets register once, for both directions, when they are created, and
//! stay registered until they are closed. `wait_readable`/`wait_writable` on
//! a descriptor nobody registered add a temporary registration for the
//! length of the wait.

use std::collections::HashMap;
use std::io;
use std::task::Waker;

use super::ParkState;

use slab::Slab;

use super::Runtime;
use crate::driver::{Backend, Event, Interest, RawSource};

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read = 0,
    Write = 1,
}

impl Dir {
    /// This direction alone, as an [`Interest`].
    pub(crate) fn interest(self) -> Interest {
        match self {
            Dir::Read => Interest::READABLE,
            Dir::Write => Interest::WRITABLE,
        }
    }
}

/// Who waits on one direction of a source.
#[derive(Debug, Default)]
pub(crate) enum IoWaiter {
    #[default]
    None,
    /// A parked task (park record key).
    Park(usize),
    /// A poll-style waiter (`AsyncRead`/`AsyncWrite`): a park record
    /// linked into the poller's cancel scope, so that cancelling the scope
    /// wakes the poller (see [`Runtime::io_poll_park`]). Owned by the slot:
    /// removed when the waiter is woken, replaced or given up.
    Poll(usize),
}

pub(crate) struct IoRec {
    pub(crate) fd: RawSource,
    pub(crate) generation: u32,
    /// "Maybe ready" per direction (see the module docs).
    pub(crate) ready: [bool; 2],
    /// Hang-up, EOF or error seen per direction: no further edge will come,
    /// so the direction stays ready for good.
    pub(crate) closed: [bool; 2],
    pub(crate) waiters: [IoWaiter; 2],
    /// Registered by a `wait_*` call on a foreign descriptor: removed when
    /// its last waiter leaves.
    pub(crate) temporary: bool,
}

/// Another task waits in the same direction with a task-style operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Busy;

/// The I/O half of the runtime's state.
pub(crate) struct IoTable {
    pub(crate) recs: Slab<IoRec>,
    pub(crate) by_fd: HashMap<RawSource, usize>,
}

impl IoTable {
    pub(crate) fn new() -> IoTable {
        IoTable { recs: Slab::new(), by_fd: HashMap::new() }
    }
}

impl Runtime {
    /// Registers `fd` for both directions. `Err(AlreadyExists)` if it is
    /// registered already.
    pub(crate) fn io_register(&mut self, fd: RawSource, temporary: bool) -> io::Result<(usize, u32)> {
        if self.io.by_fd.contains_key(&fd) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this descriptor is already registered with trio",
            ));
        }
        let generation = self.next_generation();
        let entry = self.io.recs.vacant_entry();
        let key = entry.key();
        self.driver.register(fd, key, Interest::BOTH)?;
        entry.insert(IoRec {
            fd,
            generation,
            ready: [false; 2],
            closed: [false; 2],
            waiters: Default::default(),
            temporary,
        });
        self.io.by_fd.insert(fd, key);
        Ok((key, generation))
    }

    /// The record `key` if it is still generation `generation`.
    pub(crate) fn io_rec(&mut self, key: usize, generation: u32) -> Option<&mut IoRec> {
        self.io.recs.get_mut(key).filter(|r| r.generation == generation)
    }

    /// Forgets a source: deregisters it (while its descriptor is still
    /// open) and wakes its waiters, who find it gone and report `Closed`.
    pub(crate) fn io_release(&mut self, key: usize, generation: u32) {
        let Some(rec) = self.io_rec(key, generation) else { return };
        let fd = rec.fd;
        let waiters = std::mem::take(&mut rec.waiters);
        self.io.recs.remove(key);
        self.io.by_fd.remove(&fd);
        // It may already be closed by its owner; then the OS forgot it.
        let _ = self.driver.deregister(fd);
        for w in waiters {
            self.io_wake(w);
        }
    }

    /// `notify_closing`: forget `fd` if it is registered. True if it was.
    pub(crate) fn io_notify_closing(&mut self, fd: RawSource) -> bool {
        let Some(&key) = self.io.by_fd.get(&fd) else { return false };
        let generation = self.io.recs[key].generation;
        self.io_release(key, generation);
        true
    }

    fn io_wake(&mut self, w: IoWaiter) {
        match w {
            IoWaiter::None => {}
            IoWaiter::Park(park) => {
                self.unpark_key(park);
            }
            IoWaiter::Poll(park) => {
                if self.parks.contains(park) {
                    let rec = self.remove_park(park);
                    self.wake_waker(&rec.waker);
                }
            }
        }
    }

    /// Parks a poll-style waiter (`poll_read`/`poll_write`) in slot `dir`
    /// of record `key`: `waker` is woken by the next event of that
    /// direction, by the source's release, and by a cancellation of the
    /// current cancel scope. The record stays in the slot across polls (a
    /// re-poll refreshes it and moves it to the current scope). `Busy` if a
    /// task-style operation waits in that direction already.
    pub(crate) fn io_poll_park(&mut self, key: usize, generation: u32, dir: Dir, waker: &Waker) -> Result<(), Busy> {
        if self.io_poll_park_unarmed(key, generation, dir, waker)? != super::NONE {
            self.io_arm(key);
        }
        Ok(())
    }

    /// [`io_poll_park`](Self::io_poll_park) without telling the driver to
    /// watch the direction (for a waiter that waits for a ring op instead):
    /// returns the park record (`NONE` if the source is gone).
    pub(crate) fn io_poll_park_unarmed(
        &mut self,
        key: usize,
        generation: u32,
        dir: Dir,
        waker: &Waker,
    ) -> Result<usize, Busy> {
        let d = dir as usize;
        let Some(rec) = self.io_rec(key, generation) else { return Ok(super::NONE) };
        let current = match rec.waiters[d] {
            IoWaiter::Park(_) => return Err(Busy),
            IoWaiter::Poll(park) => Some(park),
            IoWaiter::None => None,
        };
        match current {
            Some(park) if self.parks.contains(park) => {
                let scope = self.current_scope;
                if self.parks[park].scope != scope {
                    self.unlink_park(park);
                    if scope != super::NONE {
                        self.link_park(park, scope);
                    }
                }
                let p = &mut self.parks[park];
                if !p.waker.will_wake(waker) {
                    p.waker = waker.clone();
                }
                p.state = ParkState::Waiting;
                Ok(park)
            }
            _ => {
                let (park, _) = self.insert_park(waker.clone());
                if let Some(rec) = self.io_rec(key, generation) {
                    rec.waiters[d] = IoWaiter::Poll(park);
                }
                Ok(park)
            }
        }
    }

    /// The poll-style waiter's park record in slot `dir` of record `key`.
    #[cfg(all(target_os = "linux", feature = "futures-io"))]
    pub(crate) fn io_poll_waiter(&mut self, key: usize, generation: u32, dir: Dir) -> Option<usize> {
        match self.io_rec(key, generation)?.waiters[dir as usize] {
            IoWaiter::Poll(park) => Some(park),
            _ => None,
        }
    }

    /// Wakes the tasks whose io_uring ops completed in the last `poll`
    /// (park records that are still the ones that waited). True if there
    /// were any.
    #[cfg(target_os = "linux")]
    pub(crate) fn io_wake_completed(&mut self) -> bool {
        let Some(u) = self.driver.uring() else { return false };
        if u.done.is_empty() {
            return false;
        }
        let mut done = std::mem::take(&mut u.done);
        for &(park, generation) in &done {
            if self.parks.get(park).is_some_and(|p| p.generation == generation) {
                self.unpark_key(park);
            }
        }
        done.clear();
        if let Some(u) = self.driver.uring() {
            u.done = done;
        }
        true
    }

    /// Tells the driver which directions of record `key` are waited on
    /// (see `Backend::arm`). Should the driver refuse, the waiters are woken
    /// and the record marked closed, so that the next attempt of each
    /// operation meets the socket's own error instead of waiting forever.
    #[inline]
    fn io_arm(&mut self, key: usize) {
        let Some(rec) = self.io.recs.get(key) else { return };
        let interest = Interest {
            readable: !matches!(rec.waiters[Dir::Read as usize], IoWaiter::None),
            writable: !matches!(rec.waiters[Dir::Write as usize], IoWaiter::None),
        };
        if interest.readable || interest.writable {
            let fd = rec.fd;
            if self.driver.arm(fd, key, interest).is_err() {
                let ev = Event {
                    token: key,
                    readable: true,
                    writable: true,
                    error: true,
                    read_closed: false,
                    write_closed: false,
                };
                self.io_dispatch(&[ev]);
            }
        }
    }

    /// Gives up the poll-style waiter in slot `dir` of record `key`, if
    /// there is one (its poller was cancelled).
    pub(crate) fn io_drop_poll_waiter(&mut self, key: usize, generation: u32, dir: Dir) {
        let Some(rec) = self.io_rec(key, generation) else { return };
        if let IoWaiter::Poll(park) = rec.waiters[dir as usize] {
            rec.waiters[dir as usize] = IoWaiter::None;
            let fd = rec.fd;
            self.driver.disarm(fd, key, dir.interest());
            if self.parks.contains(park) {
                self.remove_park(park);
            }
        }
    }

    /// Puts task-style waiter `park` in slot `dir` of record `key`; a
    /// poll-style waiter that was there is given up.
    pub(crate) fn io_set_park(&mut self, key: usize, generation: u32, dir: Dir, park: usize) {
        self.io_drop_poll_waiter(key, generation, dir);
        if let Some(rec) = self.io_rec(key, generation) {
            rec.waiters[dir as usize] = IoWaiter::Park(park);
            self.io_arm(key);
        }
    }

    /// Applies the driver's events: set the readiness bits, wake waiters.
    pub(crate) fn io_dispatch(&mut self, events: &[Event]) {
        for ev in events {
            let Some(rec) = self.io.recs.get_mut(ev.token) else { continue };
            let mut woken: [IoWaiter; 2] = Default::default();
            if ev.read_closed || ev.error {
                rec.closed[Dir::Read as usize] = true;
            }
            if ev.write_closed || ev.error {
                rec.closed[Dir::Write as usize] = true;
            }
            if ev.readable || ev.read_closed || ev.error {
                rec.ready[Dir::Read as usize] = true;
                woken[0] = std::mem::take(&mut rec.waiters[Dir::Read as usize]);
            }
            if ev.writable || ev.write_closed || ev.error {
                rec.ready[Dir::Write as usize] = true;
                woken[1] = std::mem::take(&mut rec.waiters[Dir::Write as usize]);
            }
            for w in woken {
                self.io_wake(w);
            }
        }
    }

    /// Marks `dir` of record `key` not ready, unless it is closed for good.
    pub(crate) fn io_clear_ready(&mut self, key: usize, generation: u32, dir: Dir) {
        if let Some(rec) = self.io_rec(key, generation)
            && !rec.closed[dir as usize]
        {
            rec.ready[dir as usize] = false;
        }
    }

    /// Empties waiter slot `dir` of record `key` if park record `park`
    /// holds it (a waiter that was cancelled or dropped).
    pub(crate) fn io_clear_waiter(&mut self, key: usize, generation: u32, dir: Dir, park: usize) {
        if let Some(rec) = self.io_rec(key, generation)
            && matches!(rec.waiters[dir as usize], IoWaiter::Park(k) if k == park)
        {
            rec.waiters[dir as usize] = IoWaiter::None;
            let fd = rec.fd;
            self.driver.disarm(fd, key, dir.interest());
        }
    }

    /// A temporary registration whose waiters are gone is removed.
    pub(crate) fn io_temp_done(&mut self, key: usize, generation: u32) {
        if let Some(rec) = self.io_rec(key, generation)
            && rec.temporary
            && rec.waiters.iter().all(|w| matches!(w, IoWaiter::None))
        {
            self.io_release(key, generation);
        }
    }
}
