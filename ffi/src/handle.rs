//! Generational handles: how C names trio objects.
//!
//! C never holds a pointer to a Rust object. It holds a [`trio_handle_t`], a
//! 64-bit number that names a slot in the table of the run that made it,
//! and every call looks the handle up again. A handle packs
//!
//! ```text
//!  63      56 55          40 39          24 23                0
//! +----------+--------------+--------------+-------------------+
//! |   kind   |     run      |  generation  |       index       |
//! +----------+--------------+--------------+-------------------+
//! ```
//!
//! so a handle of the wrong kind (a lock passed as a nursery) is told apart
//! from a stale one, and closing a handle bumps its slot's generation: the
//! old number, used again (a double close, a use after close), no longer
//! matches and is reported as `TRIO_EBADHANDLE` instead of reaching a freed
//! or reused object. Kinds start at 1, so 0 is never a handle and C code can
//! use it as "none". A slot whose generation would wrap is retired rather
//! than reused, so a stale handle can never come back to life within its
//! run; a run has room for 2^24 live handles.
//!
//! The table is per thread and per run: each `trio_run` takes a run tag
//! (16 bits, never 0) that no other live run of the process holds, starts
//! an empty table with it, and gives its tag back when it ends. Every
//! lookup compares the handle's tag with the table's, so a handle of
//! another thread's live run is always refused (the detail says it belongs
//! to another run), and so is one of a run that has ended, unless 65,535
//! runs have started since and one of them reuses its tag with a live slot
//! of the same kind, index and generation. Entries are `Rc`s, so a call can
//! keep using an object while it waits even if another task closes the
//! handle meanwhile; the object goes when the last user lets go.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ffi::c_int;
use std::fmt;
use std::rc::Rc;
use std::sync::Mutex;

use crate::error::{TRIO_EBADHANDLE, TRIO_ENOMEM, set_error};

/// A handle to a trio object (a nursery, a cancel scope, a socket, ...).
/// 0 is never a valid handle. A handle is valid in the run that made it
/// (on that run's thread) until it is closed or the run ends; after that,
/// and in any other run, every call given it returns `TRIO_EBADHANDLE`.
#[allow(non_camel_case_types, reason = "named as C code spells it, like the rest of the header")]
pub type trio_handle_t = u64;

/// What a handle names. Encoded in its top 8 bits.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An open nursery.
    Nursery = 1,
    /// A cancel scope.
    CancelScope,
    /// An event.
    Event,
    /// A lock.
    Lock,
    /// A semaphore.
    Semaphore,
    /// A condition variable.
    Condition,
    /// A capacity limiter.
    CapacityLimiter,
    /// The sending end of a channel.
    ChannelSender,
    /// The receiving end of a channel.
    ChannelReceiver,
    /// A connected TCP socket.
    TcpStream,
    /// A listening TCP socket.
    TcpListener,
    /// A connected Unix-domain socket.
    UnixStream,
    /// A listening Unix-domain socket.
    UnixListener,
    /// A token for calling into a run from other threads.
    Token,
    /// A `start`ed task's status (to report its started value).
    TaskStatus,
}

impl Kind {
    const ALL: [Kind; 15] = [
        Kind::Nursery,
        Kind::CancelScope,
        Kind::Event,
        Kind::Lock,
        Kind::Semaphore,
        Kind::Condition,
        Kind::CapacityLimiter,
        Kind::ChannelSender,
        Kind::ChannelReceiver,
        Kind::TcpStream,
        Kind::TcpListener,
        Kind::UnixStream,
        Kind::UnixListener,
        Kind::Token,
        Kind::TaskStatus,
    ];

    fn from_bits(bits: u8) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u8 == bits)
    }

    /// The name used in error details ("a nursery").
    fn name(self) -> &'static str {
        match self {
            Kind::Nursery => "a nursery",
            Kind::CancelScope => "a cancel scope",
            Kind::Event => "an event",
            Kind::Lock => "a lock",
            Kind::Semaphore => "a semaphore",
            Kind::Condition => "a condition",
            Kind::CapacityLimiter => "a capacity limiter",
            Kind::ChannelSender => "a channel sender",
            Kind::ChannelReceiver => "a channel receiver",
            Kind::TcpStream => "a TCP stream",
            Kind::TcpListener => "a TCP listener",
            Kind::UnixStream => "a Unix stream",
            Kind::UnixListener => "a Unix listener",
            Kind::Token => "a trio token",
            Kind::TaskStatus => "a task status",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const INDEX_BITS: u32 = 24;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GEN_BITS: u32 = 16;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const RUN_BITS: u32 = 16;
const KIND_SHIFT: u32 = INDEX_BITS + GEN_BITS + RUN_BITS;

fn encode(kind: Kind, run: u16, generation: u32, index: u32) -> trio_handle_t {
    debug_assert!(generation <= GEN_MASK && index <= INDEX_MASK);
    (u64::from(kind as u8) << KIND_SHIFT)
        | (u64::from(run) << (INDEX_BITS + GEN_BITS))
        | (u64::from(generation) << INDEX_BITS)
        | u64::from(index)
}

/// A handle's parts (kind, run, generation, index); `kind` as found,
/// possibly not a [`Kind`].
fn decode(h: trio_handle_t) -> (u8, u16, u32, u32) {
    (
        (h >> KIND_SHIFT) as u8,
        (h >> (INDEX_BITS + GEN_BITS)) as u16,
        (h >> INDEX_BITS) as u32 & GEN_MASK,
        h as u32 & INDEX_MASK,
    )
}

/// The tags of the live runs of the process, and the last one handed out.
struct Runs {
    last: u16,
    live: BTreeSet<u16>,
}

impl Runs {
    /// The next tag after the last one handed out that is neither 0 nor
    /// live, now marked live; `None` if every tag is live.
    fn take(&mut self) -> Option<u16> {
        // Bounded: one pass over every tag.
        for _ in 0..=u16::MAX {
            self.last = self.last.wrapping_add(1);
            if self.last != 0 && self.live.insert(self.last) {
                return Some(self.last);
            }
        }
        None
    }
}

static RUNS: Mutex<Runs> = Mutex::new(Runs { last: 0, live: BTreeSet::new() });

fn runs() -> std::sync::MutexGuard<'static, Runs> {
    // The set stays consistent even if a holder panicked: each change is
    // one insert or remove.
    RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether run tag `run` belongs to a live run (of any thread).
fn run_is_live(run: u16) -> bool {
    runs().live.contains(&run)
}

/// One slot of the table.
///
/// # Invariant
/// `entry` is `Some` exactly when the slot is live; a free slot's index is
/// in `Handles::free` unless its generation is exhausted.
struct Slot {
    generation: u32,
    entry: Option<(Kind, Rc<dyn Any>)>,
}

/// A table of handles (one per thread and run, see [`insert`], [`get`],
/// [`remove`]).
#[derive(Default)]
pub(crate) struct Handles {
    /// The tag of the run the table belongs to (0: none, as in unit tests).
    run: u16,
    slots: Vec<Slot>,
    /// Indices of free slots, reused last-freed first.
    free: Vec<u32>,
    live: usize,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handles").field("slots", &self.slots.len()).field("live", &self.live).finish()
    }
}

impl Handles {
    /// Stores `value` and returns a new handle of `kind` for it.
    ///
    /// # Errors
    /// `TRIO_ENOMEM` if the run's table has no index left (2^24 handles
    /// open, or slots retired after 2^16 uses each); `value` is dropped.
    pub(crate) fn insert<T: 'static>(&mut self, kind: Kind, value: Rc<T>) -> Result<trio_handle_t, c_int> {
        let entry: Rc<dyn Any> = value;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = match u32::try_from(self.slots.len()) {
                    Ok(i) if i <= INDEX_MASK => i,
                    _ => {
                        return Err(set_error(
                            TRIO_ENOMEM,
                            format_args!("no handle left for {kind}: this run's handle table is full (2^24 slots)"),
                        ));
                    }
                };
                self.slots.push(Slot { generation: 0, entry: None });
                i
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some((kind, entry));
        self.live += 1;
        Ok(encode(kind, self.run, slot.generation, index))
    }

    /// The live slot `h` names, checked to be of `kind`, or the error code
    /// after recording which check failed.
    #[inline]
    fn slot(&self, h: trio_handle_t, kind: Kind) -> Result<&Slot, c_int> {
        // The common case (a live handle of `kind` from this run) in one
        // pass; why any other handle is refused is worked out out of line.
        let (bits, run, generation, index) = decode(h);
        if bits == kind as u8
            && run == self.run
            && h != 0
            && let Some(slot) = self.slots.get(index as usize)
            && slot.generation == generation
            && matches!(slot.entry, Some((k, _)) if k == kind)
        {
            return Ok(slot);
        }
        Err(self.refuse(h, kind))
    }

    /// Why `h` is not a live handle of `kind` (recorded as the error
    /// detail), and the code.
    #[cold]
    #[inline(never)]
    fn refuse(&self, h: trio_handle_t, kind: Kind) -> c_int {
        match self.slot_checked(h, kind) {
            Ok(_) => set_error(TRIO_EBADHANDLE, format_args!("handle {h:#x} ({kind}) was refused")),
            Err(code) => code,
        }
    }

    /// [`slot`](Self::slot), every check in turn with its own detail.
    fn slot_checked(&self, h: trio_handle_t, kind: Kind) -> Result<&Slot, c_int> {
        if h == 0 {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("handle is 0, expected {kind}")));
        }
        let (bits, run, generation, index) = decode(h);
        let Some(found) = Kind::from_bits(bits) else {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("{h:#x} is not a trio handle, expected {kind}")));
        };
        if found != kind {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("handle {h:#x} is {found}, expected {kind}")));
        }
        if run != self.run {
            return Err(if run_is_live(run) {
                set_error(
                    TRIO_EBADHANDLE,
                    format_args!(
                        "handle {h:#x} ({kind}) belongs to another run (run {run}, on another thread), not to this thread's {}",
                        self.run_name()
                    ),
                )
            } else {
                set_error(
                    TRIO_EBADHANDLE,
                    format_args!(
                        "handle {h:#x} ({kind}) is stale: it belongs to a run that has ended (run {run}; or it is not a trio handle)"
                    ),
                )
            });
        }
        let Some(slot) = self.slots.get(index as usize) else {
            return Err(set_error(
                TRIO_EBADHANDLE,
                format_args!("handle {h:#x} ({kind}) was not made in this run (or is not a trio handle)"),
            ));
        };
        match &slot.entry {
            Some((k, _)) if slot.generation == generation && *k == kind => Ok(slot),
            _ => Err(set_error(TRIO_EBADHANDLE, format_args!("handle {h:#x} ({kind}) is stale: it was closed"))),
        }
    }

    /// The object `h` names, if it is a live handle of `kind` holding a `T`.
    ///
    /// # Errors
    /// `TRIO_EBADHANDLE` (with a detail saying which) if `h` is 0, stale,
    /// of another kind, from another thread, or holds another type.
    pub(crate) fn get<T: 'static>(&self, h: trio_handle_t, kind: Kind) -> Result<Rc<T>, c_int> {
        let (_, value) = self.slot(h, kind)?.entry.as_ref().expect("slot() returns live slots");
        value.clone().downcast::<T>().map_err(|_| type_mismatch::<T>(h, kind))
    }

    /// This table's run, for error details.
    fn run_name(&self) -> String {
        if self.run == 0 { String::from("(no run)") } else { format!("run {}", self.run) }
    }

    /// Whether `h` is a live handle (records no error).
    pub(crate) fn is_live(&self, h: trio_handle_t) -> bool {
        let (bits, run, generation, index) = decode(h);
        h != 0
            && Kind::from_bits(bits).is_some()
            && run == self.run
            && self.slots.get(index as usize).is_some_and(|s| s.generation == generation && s.entry.is_some())
    }

    /// Closes `h` and returns its object: from now on `h` is stale.
    ///
    /// # Errors
    /// As [`get`](Self::get); on error nothing is removed.
    pub(crate) fn remove<T: 'static>(&mut self, h: trio_handle_t, kind: Kind) -> Result<Rc<T>, c_int> {
        let (_, value) = self.slot(h, kind)?.entry.as_ref().expect("slot() returns live slots");
        if !value.is::<T>() {
            return Err(type_mismatch::<T>(h, kind));
        }
        let index = decode(h).3;
        let (_, value) = self.vacate(index).expect("checked live above");
        Ok(value.downcast::<T>().unwrap_or_else(|_| unreachable!("type checked above")))
    }

    /// Empties a live slot, bumps its generation and frees it (or retires it
    /// if its generation is exhausted).
    fn vacate(&mut self, index: u32) -> Option<(Kind, Rc<dyn Any>)> {
        let slot = &mut self.slots[index as usize];
        let entry = slot.entry.take()?;
        self.live -= 1;
        slot.generation += 1;
        if slot.generation <= GEN_MASK {
            self.free.push(index);
        }
        Some(entry)
    }

    /// Closes every handle (all become stale) and returns their objects, to
    /// be dropped by the caller outside any borrow of the table.
    pub(crate) fn clear(&mut self) -> Vec<Rc<dyn Any>> {
        (0..self.slots.len() as u32).filter_map(|i| self.vacate(i)).map(|(_, v)| v).collect()
    }

    #[allow(dead_code, reason = "for tests and leak checks")]
    /// How many handles are live.
    pub(crate) fn live(&self) -> usize {
        self.live
    }
}

fn type_mismatch<T>(h: trio_handle_t, kind: Kind) -> c_int {
    set_error(
        TRIO_EBADHANDLE,
        format_args!("handle {h:#x} ({kind}) does not hold a {} (a bug in libtrio)", std::any::type_name::<T>()),
    )
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Runs `f` on this thread's table. Objects are never dropped inside `f`
/// (they are returned), so a destructor that uses handles cannot re-enter.
fn with<R>(f: impl FnOnce(&mut Handles) -> Result<R, c_int>) -> Result<R, c_int> {
    HANDLES
        .try_with(|t| f(&mut t.borrow_mut()))
        .unwrap_or_else(|_| Err(set_error(TRIO_EBADHANDLE, "handles are gone: the thread is exiting")))
}

/// Stores `value` in this thread's table and returns a new handle for it.
///
/// # Errors
/// As [`Handles::insert`]; `TRIO_EBADHANDLE` if the thread is exiting.
pub(crate) fn insert<T: 'static>(kind: Kind, value: T) -> Result<trio_handle_t, c_int> {
    insert_rc(kind, Rc::new(value))
}

/// [`insert`] for an object already shared with Rust code.
pub(crate) fn insert_rc<T: 'static>(kind: Kind, value: Rc<T>) -> Result<trio_handle_t, c_int> {
    with(|t| t.insert(kind, value))
}

/// Starts this thread's table for a new run: takes a run tag no live run
/// holds and empties the table (dropping what a previous run left, if
/// anything).
///
/// # Errors
/// `TRIO_ENOMEM` if 65,535 runs are live at once (no tag is free).
pub(crate) fn begin_run() -> Result<(), c_int> {
    let tag = {
        let Some(tag) = runs().take() else {
            return Err(set_error(TRIO_ENOMEM, "65535 trio runs are live at once: no run tag is free"));
        };
        tag
    };
    let old = HANDLES.try_with(|t| std::mem::replace(&mut *t.borrow_mut(), Handles { run: tag, ..Handles::default() }));
    match old {
        Ok(old) => {
            drop(old);
            Ok(())
        }
        Err(_) => {
            runs().live.remove(&tag);
            Err(set_error(TRIO_EBADHANDLE, "handles are gone: the thread is exiting"))
        }
    }
}

/// Ends this thread's run: closes every handle (see [`clear`]), gives the
/// run tag back and leaves an empty table with no run, so the finished
/// run's handles are reported as such. Returns how many handles were open.
pub(crate) fn end_run() -> usize {
    let n = clear();
    let old = HANDLES.try_with(|t| std::mem::take(&mut *t.borrow_mut()));
    if let Ok(old) = old {
        if old.run != 0 {
            runs().live.remove(&old.run);
        }
        drop(old);
    }
    n
}

/// The object `h` names in this thread's table (see [`Handles::get`]).
pub(crate) fn get<T: 'static>(h: trio_handle_t, kind: Kind) -> Result<Rc<T>, c_int> {
    with(|t| t.get(h, kind))
}

/// Whether `h` is live in this thread's table (records no error).
pub(crate) fn is_live(h: trio_handle_t) -> bool {
    with(|t| Ok(t.is_live(h))).unwrap_or(false)
}

/// Closes `h` in this thread's table and returns its object (see
/// [`Handles::remove`]).
pub(crate) fn remove<T: 'static>(h: trio_handle_t, kind: Kind) -> Result<Rc<T>, c_int> {
    with(|t| t.remove(h, kind))
}

/// Closes every handle of this thread (at the end of a run) and drops their
/// objects. Returns how many there were.
pub(crate) fn clear() -> usize {
    let objects = with(|t| Ok(t.clear())).unwrap_or_default();
    objects.len()
}

#[allow(dead_code, reason = "for tests and leak checks")]
/// How many handles are live on this thread.
pub(crate) fn live() -> usize {
    with(|t| Ok(t.live())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::trio_last_error;

    impl Handles {
        fn insert_ok<T: 'static>(&mut self, kind: Kind, value: Rc<T>) -> trio_handle_t {
            self.insert(kind, value).unwrap()
        }
    }

    fn detail() -> String {
        let mut buf = [0 as std::ffi::c_char; 256];
        unsafe { trio_last_error(buf.as_mut_ptr(), buf.len()) };
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn insert_get_remove() {
        let mut t = Handles::default();
        let h = t.insert_ok(Kind::Lock, Rc::new(7_u32));
        assert_ne!(h, 0);
        assert_eq!(decode(h).0, Kind::Lock as u8);
        assert_eq!(*t.get::<u32>(h, Kind::Lock).unwrap(), 7);
        assert_eq!(t.live(), 1);
        assert_eq!(*t.remove::<u32>(h, Kind::Lock).unwrap(), 7);
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn zero_is_never_a_handle() {
        let mut t = Handles::default();
        t.insert_ok(Kind::Nursery, Rc::new(()));
        assert_eq!(t.get::<()>(0, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(detail(), "handle is 0, expected a nursery");
        assert_eq!(t.remove::<()>(0, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn double_close_is_detected_and_stale_handles_stay_stale() {
        let mut t = Handles::default();
        let h = t.insert_ok(Kind::Nursery, Rc::new(1_i32));
        t.remove::<i32>(h, Kind::Nursery).unwrap();
        assert_eq!(t.remove::<i32>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("is stale: it was closed"), "{}", detail());
        // The slot is reused with a new generation: the old handle does not
        // reach the new object.
        let h2 = t.insert_ok(Kind::Nursery, Rc::new(2_i32));
        assert_eq!(decode(h2).3, decode(h).3);
        assert_ne!(h2, h);
        assert_eq!(t.get::<i32>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(*t.get::<i32>(h2, Kind::Nursery).unwrap(), 2);
    }

    #[test]
    fn wrong_kind_is_detected() {
        let mut t = Handles::default();
        let h = t.insert_ok(Kind::Lock, Rc::new(()));
        assert_eq!(t.get::<()>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().ends_with("is a lock, expected a nursery"), "{}", detail());
        assert_eq!(t.remove::<()>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        // A forged kind byte over a live slot of another kind.
        let forged = encode(Kind::Event, 0, decode(h).2, decode(h).3);
        assert_eq!(t.get::<()>(forged, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(t.get::<()>(h, Kind::Lock).is_ok());
    }

    #[test]
    fn garbage_and_out_of_range_handles() {
        let t = Handles::default();
        assert_eq!(t.get::<()>(0xff00_0000_0000_0001, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("is not a trio handle"));
        assert_eq!(t.get::<()>(encode(Kind::Event, 0, 0, 5), Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("not made in this run"));
    }

    #[test]
    fn wrong_type_is_reported_not_transmuted() {
        let mut t = Handles::default();
        let h = t.insert_ok(Kind::Event, Rc::new(1_u8));
        assert_eq!(t.get::<u64>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.remove::<u64>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn exhausted_slots_are_retired() {
        let mut t = Handles::default();
        let h = t.insert_ok(Kind::Event, Rc::new(()));
        t.slots[0].generation = GEN_MASK;
        let h = encode(Kind::Event, 0, GEN_MASK, decode(h).3);
        t.remove::<()>(h, Kind::Event).unwrap();
        assert!(t.free.is_empty());
        let h2 = t.insert_ok(Kind::Event, Rc::new(()));
        assert_eq!(decode(h2).3, 1);
        assert_eq!(t.get::<()>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
    }

    #[test]
    fn handles_are_per_thread() {
        let h = insert(Kind::Semaphore, 3_usize).unwrap();
        assert_eq!(*get::<usize>(h, Kind::Semaphore).unwrap(), 3);
        let code = std::thread::spawn(move || get::<usize>(h, Kind::Semaphore).unwrap_err()).join().unwrap();
        assert_eq!(code, TRIO_EBADHANDLE);
        assert_eq!(live(), 1);
        assert_eq!(clear(), 1);
        assert_eq!(live(), 0);
        assert_eq!(remove::<usize>(h, Kind::Semaphore).unwrap_err(), TRIO_EBADHANDLE);
    }

    #[test]
    fn an_object_outlives_its_handle_while_in_use() {
        let h = insert(Kind::Event, String::from("in use")).unwrap();
        let held = get::<String>(h, Kind::Event).unwrap();
        let removed = remove::<String>(h, Kind::Event).unwrap();
        assert!(Rc::ptr_eq(&held, &removed));
        assert_eq!(*held, "in use");
    }

    #[test]
    fn handles_of_other_runs_and_of_ended_runs_are_refused() {
        // Two live runs on two threads make the same first handle but for
        // the run tag; each refuses the other's.
        let (tx, rx) = std::sync::mpsc::channel();
        let (back_tx, back_rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            begin_run().unwrap();
            let h = insert(Kind::Event, 1_u8).unwrap();
            tx.send(h).unwrap();
            // Keep the run live until the main thread has tried.
            let theirs: trio_handle_t = back_rx.recv().unwrap();
            let code = get::<u8>(theirs, Kind::Event).unwrap_err();
            let d = detail();
            assert_eq!(end_run(), 1);
            (code, d, h)
        });
        begin_run().unwrap();
        let mine = insert(Kind::Event, 2_u8).unwrap();
        let theirs = rx.recv().unwrap();
        assert_eq!(decode(mine).3, decode(theirs).3, "same index and generation");
        assert_ne!(mine, theirs);
        assert_eq!(get::<u8>(theirs, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("belongs to another run"), "{}", detail());
        assert!(!is_live(theirs));
        assert_eq!(remove::<u8>(theirs, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        back_tx.send(mine).unwrap();
        let (code, d, theirs) = other.join().unwrap();
        assert_eq!(code, TRIO_EBADHANDLE);
        assert!(d.contains("belongs to another run"), "{d}");
        // Their run has ended now.
        assert_eq!(get::<u8>(theirs, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("belongs to a run that has ended"), "{}", detail());
        assert_eq!(*get::<u8>(mine, Kind::Event).unwrap(), 2);
        assert_eq!(end_run(), 1);
        // A later run on this thread refuses the handles of this one.
        begin_run().unwrap();
        assert_eq!(get::<u8>(mine, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("belongs to a run that has ended"), "{}", detail());
        let again = insert(Kind::Event, 3_u8).unwrap();
        assert_ne!(again, mine);
        assert_eq!(end_run(), 1);
    }

    #[test]
    fn live_runs_never_share_a_tag() {
        let mut runs = Runs { last: 4, live: BTreeSet::from([5, 6, 9]) };
        assert_eq!(runs.take(), Some(7));
        assert_eq!(runs.take(), Some(8));
        assert_eq!(runs.take(), Some(10));
        // The counter wraps around, skipping 0 and the live tags.
        let mut runs = Runs { last: u16::MAX - 1, live: BTreeSet::from([u16::MAX, 1]) };
        assert_eq!(runs.take(), Some(2));
        // Every tag live: none to give.
        let mut runs = Runs { last: 0, live: (1..=u16::MAX).collect() };
        assert_eq!(runs.take(), None);
        runs.live.remove(&300);
        assert_eq!(runs.take(), Some(300));
    }
}
