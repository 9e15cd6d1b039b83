//! The WASI preview 1 driver: `poll_oneoff`.
//!
//! `poll_oneoff` is level-triggered and keeps no state between calls, so
//! each `poll` builds one `fd_read`/`fd_write` subscription per source and
//! direction that is armed (a task is waiting on it: the runtime's `arm`
//! and `disarm` calls, kept in [`Armed`]; a direction reported once is
//! disarmed until the next `arm`), plus one clock subscription for the
//! nearest deadline. A subscription's userdata is
//! `record key * 2 + direction`, so each event maps straight back to its
//! waiter. An event that carries an error wakes its direction with `error`
//! set; the woken operation retries its call and reports what the OS says.
//! A host that fails the whole call for one bad subscription instead
//! (wasmtime does, with `EBADF`) gets each subscription probed alone, so the
//! failure lands on its own waiter and not on the run (`probe`).
//!
//! Operations try their call first and wait only after `EAGAIN`, so a
//! direction is subscribed only while somebody is parked on it: a readable
//! socket that nobody reads does not make `poll_oneoff` return at once
//! forever.
//!
//! There are no threads on `wasm32-wasip1`, hence no wake handle. A poll with
//! no subscription and no deadline could never end: it is reported as an
//! error instead of hanging (WASI also rejects an empty subscription list).

pub(crate) mod socket;

use std::io;
use std::time::Duration;

use super::armed::{Armed, Level, LevelPoll, nothing_to_wait_for};
use super::{Event, Events, RawSource};

/// Userdata of the clock subscription (record keys are `< usize::MAX / 2`).
const CLOCK_USERDATA: u64 = u64::MAX;

/// The preview 1 driver (see the module docs).
pub(crate) type WasiP1Driver = Level<WasiP1Poll>;

/// `poll_oneoff`'s buffers, reused across polls.
pub(crate) struct WasiP1Poll {
    subs: Vec<wasi::Subscription>,
    out: Vec<wasi::Event>,
}

/// The preview 1 driver.
pub(crate) fn new_driver() -> io::Result<WasiP1Driver> {
    Ok(Level::new(WasiP1Poll { subs: Vec::new(), out: Vec::new() }))
}

/// `Errno` as `io::Error` (WASI's errno values are the guest's OS errors).
pub(crate) fn errno(e: wasi::Errno) -> io::Error {
    io::Error::from_raw_os_error(i32::from(e.raw()))
}

fn fd_subscription(userdata: u64, fd: RawSource, write: bool) -> wasi::Subscription {
    let rw = wasi::SubscriptionFdReadwrite { file_descriptor: fd };
    let (tag, u) = if write {
        (wasi::EVENTTYPE_FD_WRITE, wasi::SubscriptionUU { fd_write: rw })
    } else {
        (wasi::EVENTTYPE_FD_READ, wasi::SubscriptionUU { fd_read: rw })
    };
    wasi::Subscription { userdata, u: wasi::SubscriptionU { tag: tag.raw(), u } }
}

fn clock_subscription(timeout: Duration) -> wasi::Subscription {
    let clock = wasi::SubscriptionClock {
        id: wasi::CLOCKID_MONOTONIC,
        timeout: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        precision: 0,
        flags: 0,
    };
    wasi::Subscription {
        userdata: CLOCK_USERDATA,
        u: wasi::SubscriptionU { tag: wasi::EVENTTYPE_CLOCK.raw(), u: wasi::SubscriptionUU { clock } },
    }
}

/// `poll_oneoff` over `subs` into `out`'s spare room, retrying `EINTR`.
fn poll_oneoff(subs: &[wasi::Subscription], out: &mut Vec<wasi::Event>) -> Result<usize, wasi::Errno> {
    out.reserve(subs.len());
    loop {
        // SAFETY: `subs` holds `subs.len()` initialised subscriptions and
        // `out` has room for as many events; WASI writes at most that many
        // and returns how many it wrote.
        match unsafe { wasi::poll_oneoff(subs.as_ptr(), out.as_mut_ptr(), subs.len()) } {
            Ok(n) => return Ok(n),
            Err(wasi::ERRNO_INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Turns one WASI event into a runtime event (clock events are dropped).
fn push_event(events: &mut Events, ev: &wasi::Event) {
    if ev.userdata == CLOCK_USERDATA {
        return;
    }
    let key = (ev.userdata / 2) as usize;
    let write = ev.userdata % 2 == 1;
    let error = ev.error != wasi::ERRNO_SUCCESS;
    let hangup = ev.fd_readwrite.flags & wasi::EVENTRWFLAGS_FD_READWRITE_HANGUP != 0;
    events.push(Event {
        token: key,
        readable: !write,
        writable: write,
        error,
        read_closed: hangup && !write,
        write_closed: hangup && write,
    });
}

impl WasiP1Poll {
    /// `poll_oneoff` failed as a whole with `err`: a host may fail the call
    /// when one subscription fails instead of reporting the error in its
    /// event (both of wasmtime 46's preview 1 implementations answer `EBADF`
    /// for the whole call if one descriptor is not open). Each subscription
    /// is then polled alone, without waiting: one that fails alone is
    /// reported as an error event for its direction (the woken operation
    /// retries its call and reports what the OS says), the others as they
    /// are now. If none fails alone, the failure is the driver's own and is
    /// returned.
    fn probe(&mut self, err: wasi::Errno, events: &mut Events) -> io::Result<()> {
        let mut failed_alone = false;
        let mut one = Vec::with_capacity(2);
        let mut out = Vec::with_capacity(2);
        for sub in &self.subs {
            if sub.userdata == CLOCK_USERDATA {
                continue;
            }
            one.clear();
            one.push(*sub);
            one.push(clock_subscription(Duration::ZERO));
            out.clear();
            match poll_oneoff(&one, &mut out) {
                Ok(n) => {
                    // SAFETY: the first `n` events were written by `poll_oneoff`.
                    unsafe { out.set_len(n.min(one.len())) };
                    for ev in &out {
                        push_event(events, ev);
                    }
                }
                Err(_) => {
                    failed_alone = true;
                    let write = sub.userdata % 2 == 1;
                    events.push(Event {
                        token: (sub.userdata / 2) as usize,
                        readable: !write,
                        writable: write,
                        error: true,
                        read_closed: false,
                        write_closed: false,
                    });
                }
            }
        }
        if failed_alone { Ok(()) } else { Err(errno(err)) }
    }
}

impl LevelPoll for WasiP1Poll {
    fn check_source(&self, _source: RawSource) -> io::Result<()> {
        // Any descriptor: `poll_oneoff` reports a bad one in its event.
        Ok(())
    }

    fn source_gone(&mut self, _source: RawSource) {}

    fn poll_armed(&mut self, armed: &Armed, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        self.subs.clear();
        for (token, fd, write) in armed.iter() {
            self.subs.push(fd_subscription((token * 2 + usize::from(write)) as u64, fd, write));
        }
        match timeout {
            Some(t) if t.is_zero() && self.subs.is_empty() => return Ok(()),
            Some(t) => self.subs.push(clock_subscription(t)),
            None if self.subs.is_empty() => return Err(nothing_to_wait_for()),
            None => {}
        }
        self.out.clear();
        self.out.reserve(self.subs.len());
        let n = match poll_oneoff(&self.subs, &mut self.out) {
            Ok(n) => n,
            Err(e) => return self.probe(e, events),
        };
        // SAFETY: the first `n` events were written by `poll_oneoff`.
        unsafe { self.out.set_len(n.min(self.subs.len())) };
        for ev in &self.out {
            push_event(events, ev);
        }
        Ok(())
    }
}
