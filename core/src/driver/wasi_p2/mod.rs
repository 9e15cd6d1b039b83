//! The WASI preview 2 driver: `wasi:io/poll` over pollables.
//!
//! Preview 2 has no file descriptors: a socket is a resource whose
//! readiness comes as `pollable`s (its input stream's for reading, its output
//! stream's for writing, the socket's own while an accept or a connect is
//! pending). The socket types hand their pollables to this driver
//! ([`WasiP2Driver::add_source`]), which gives back a [`RawSource`] number;
//! that number is what the runtime's I/O table registers, exactly as a file
//! descriptor natively.
//!
//! `wasi:io/poll.poll` is level-triggered and stateless, like preview 1's
//! `poll_oneoff`: each `poll` passes the pollables of the armed directions
//! (a task waits on them: the runtime's `arm`/`disarm` calls, kept in
//! [`Armed`]; one-shot, as the contract says), plus a `wasi:clocks` pollable for the nearest
//! deadline, and maps the ready indices back to `(record, direction)`.
//! There are no threads, hence no wake handle; a poll with nothing to wait
//! for and no deadline is an error instead of a hang (`poll` traps on an
//! empty list).

pub(crate) mod socket;

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use wasip2::io::poll::{Pollable, poll};

use super::armed::{Armed, Level, LevelPoll, nothing_to_wait_for};
use super::{Event, Events, RawSource};

/// The pollables of one source, per direction.
#[derive(Debug, Default)]
struct Pollables {
    read: Option<Pollable>,
    write: Option<Pollable>,
}

/// The preview 2 driver (see the module docs).
pub(crate) type WasiP2Driver = Level<WasiP2Poll>;

/// The preview 2 driver.
pub(crate) fn new_driver() -> io::Result<WasiP2Driver> {
    Ok(Level::new(WasiP2Poll { sources: HashMap::new(), next_source: 1, order: Vec::new() }))
}

/// The sources' pollables, and what a poll passed.
pub(crate) struct WasiP2Poll {
    sources: HashMap<RawSource, Pollables>,
    next_source: RawSource,
    /// `(record key, direction)` of each pollable passed to `poll`.
    order: Vec<(usize, bool)>,
}

impl WasiP2Poll {
    /// Stores the pollables of a new source and returns its number, to be
    /// registered with the runtime's I/O table. The driver owns the
    /// pollables until the driver's `deregister` drops them, which must happen
    /// before the resources they came from are dropped.
    pub(crate) fn add_source(&mut self, read: Option<Pollable>, write: Option<Pollable>) -> RawSource {
        let mut id = self.next_source;
        while self.sources.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        self.next_source = id.wrapping_add(1).max(1);
        self.sources.insert(id, Pollables { read, write });
        id
    }

    /// Replaces the pollables of `source` (a connect or accept finished and
    /// the streams took over), dropping the old ones first.
    pub(crate) fn set_pollables(&mut self, source: RawSource, read: Option<Pollable>, write: Option<Pollable>) {
        if let Some(p) = self.sources.get_mut(&source) {
            p.read = None;
            p.write = None;
            p.read = read;
            p.write = write;
        }
    }
}

impl LevelPoll for WasiP2Poll {
    fn check_source(&self, source: RawSource) -> io::Result<()> {
        if self.sources.contains_key(&source) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::InvalidInput, "not a WASI preview 2 source of this run"))
        }
    }

    fn source_gone(&mut self, source: RawSource) {
        self.sources.remove(&source);
    }

    fn poll_armed(&mut self, armed: &Armed, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.order.clear();
        let mut list: Vec<&Pollable> = Vec::new();
        for (key, source, write) in armed.iter() {
            let Some(p) = self.sources.get(&source) else { continue };
            let pollable = if write { p.write.as_ref() } else { p.read.as_ref() };
            match pollable {
                Some(pollable) => {
                    list.push(pollable);
                    self.order.push((key, write));
                }
                // Nothing to wait for in this direction: report it ready,
                // the operation will say why it cannot proceed.
                None => events.push(Event::ready(key, write)),
            }
        }
        if !events.is_empty() {
            return Ok(());
        }
        let clock;
        match timeout {
            Some(t) if t.is_zero() && list.is_empty() => return Ok(()),
            Some(t) => {
                clock = wasip2::clocks::monotonic_clock::subscribe_duration(
                    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX),
                );
                list.push(&clock);
            }
            None if list.is_empty() => return Err(nothing_to_wait_for()),
            None => {}
        }
        for i in poll(&list) {
            if let Some(&(key, write)) = self.order.get(i as usize) {
                events.push(Event::ready(key, write));
            }
        }
        Ok(())
    }
}
