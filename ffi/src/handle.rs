//! Generational handles: how C names trio objects.
//!
//! C never holds a pointer to a Rust object. It holds a [`trio_handle_t`], a
//! 64-bit number that names a slot in this thread's table, and every call
//! looks the handle up again. A handle packs
//!
//! ```text
//!  63      56 55            32 31                0
//! +----------+----------------+-------------------+
//! |   kind   |   generation   |       index       |
//! +----------+----------------+-------------------+
//! ```
//!
//! so a handle of the wrong kind (a lock passed as a nursery) is told apart
//! from a stale one, and closing a handle bumps its slot's generation: the
//! old number, used again (a double close, a use after close), no longer
//! matches and is reported as `TRIO_EBADHANDLE` instead of reaching a freed
//! or reused object. Kinds start at 1, so 0 is never a handle and C code can
//! use it as "none". A slot whose generation would wrap is retired rather
//! than reused, so a stale handle can never come back to life.
//!
//! The table is per thread: trio objects are tied to the run on the thread
//! that made them, and a handle used from another thread is not found there
//! (reported as made on another thread). Entries are `Rc`s, so a call can
//! keep using an object while it waits even if another task closes the
//! handle meanwhile; the object goes when the last user lets go.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_int;
use std::fmt;
use std::rc::Rc;

use crate::error::{TRIO_EBADHANDLE, set_error};

/// A handle to a trio object (a nursery, a cancel scope, a socket, ...).
/// 0 is never a valid handle. A handle is valid on the thread that made it
/// until it is closed; after that every call given it returns
/// `TRIO_EBADHANDLE`.
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

const INDEX_BITS: u32 = 32;
const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

fn encode(kind: Kind, generation: u32, index: u32) -> trio_handle_t {
    (u64::from(kind as u8) << (INDEX_BITS + GEN_BITS)) | (u64::from(generation) << INDEX_BITS) | u64::from(index)
}

/// A handle's parts; `kind` as found, possibly not a [`Kind`].
fn decode(h: trio_handle_t) -> (u8, u32, u32) {
    ((h >> (INDEX_BITS + GEN_BITS)) as u8, (h >> INDEX_BITS) as u32 & GEN_MASK, h as u32)
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

/// A table of handles (one per thread, see [`insert`], [`get`], [`remove`]).
#[derive(Default)]
pub(crate) struct Handles {
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
    pub(crate) fn insert<T: 'static>(&mut self, kind: Kind, value: Rc<T>) -> trio_handle_t {
        let entry: Rc<dyn Any> = value;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                // 2^32 live objects would exhaust memory long before this.
                let i = u32::try_from(self.slots.len()).expect("handle table is full");
                self.slots.push(Slot { generation: 0, entry: None });
                i
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.entry = Some((kind, entry));
        self.live += 1;
        encode(kind, slot.generation, index)
    }

    /// The live slot `h` names, checked to be of `kind`, or the error code
    /// after recording which check failed.
    fn slot(&self, h: trio_handle_t, kind: Kind) -> Result<&Slot, c_int> {
        if h == 0 {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("handle is 0, expected {kind}")));
        }
        let (bits, generation, index) = decode(h);
        let Some(found) = Kind::from_bits(bits) else {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("{h:#x} is not a trio handle, expected {kind}")));
        };
        if found != kind {
            return Err(set_error(TRIO_EBADHANDLE, format_args!("handle {h:#x} is {found}, expected {kind}")));
        }
        let Some(slot) = self.slots.get(index as usize) else {
            return Err(set_error(
                TRIO_EBADHANDLE,
                format_args!("handle {h:#x} ({kind}) was not made on this thread (or is not a trio handle)"),
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

    /// Whether `h` is a live handle (records no error).
    pub(crate) fn is_live(&self, h: trio_handle_t) -> bool {
        let (bits, generation, index) = decode(h);
        h != 0
            && Kind::from_bits(bits).is_some()
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
        let index = decode(h).2;
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
pub(crate) fn insert<T: 'static>(kind: Kind, value: T) -> trio_handle_t {
    insert_rc(kind, Rc::new(value))
}

/// [`insert`] for an object already shared with Rust code.
pub(crate) fn insert_rc<T: 'static>(kind: Kind, value: Rc<T>) -> trio_handle_t {
    // A thread that is exiting runs no C code that could insert.
    with(|t| Ok(t.insert(kind, value))).unwrap_or(0)
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

    fn detail() -> String {
        let mut buf = [0 as std::ffi::c_char; 256];
        unsafe { trio_last_error(buf.as_mut_ptr(), buf.len()) };
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn insert_get_remove() {
        let mut t = Handles::default();
        let h = t.insert(Kind::Lock, Rc::new(7_u32));
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
        t.insert(Kind::Nursery, Rc::new(()));
        assert_eq!(t.get::<()>(0, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(detail(), "handle is 0, expected a nursery");
        assert_eq!(t.remove::<()>(0, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn double_close_is_detected_and_stale_handles_stay_stale() {
        let mut t = Handles::default();
        let h = t.insert(Kind::Nursery, Rc::new(1_i32));
        t.remove::<i32>(h, Kind::Nursery).unwrap();
        assert_eq!(t.remove::<i32>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("is stale: it was closed"), "{}", detail());
        // The slot is reused with a new generation: the old handle does not
        // reach the new object.
        let h2 = t.insert(Kind::Nursery, Rc::new(2_i32));
        assert_eq!(decode(h2).2, decode(h).2);
        assert_ne!(h2, h);
        assert_eq!(t.get::<i32>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(*t.get::<i32>(h2, Kind::Nursery).unwrap(), 2);
    }

    #[test]
    fn wrong_kind_is_detected() {
        let mut t = Handles::default();
        let h = t.insert(Kind::Lock, Rc::new(()));
        assert_eq!(t.get::<()>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().ends_with("is a lock, expected a nursery"), "{}", detail());
        assert_eq!(t.remove::<()>(h, Kind::Nursery).unwrap_err(), TRIO_EBADHANDLE);
        // A forged kind byte over a live slot of another kind.
        let forged = encode(Kind::Event, decode(h).1, decode(h).2);
        assert_eq!(t.get::<()>(forged, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(t.get::<()>(h, Kind::Lock).is_ok());
    }

    #[test]
    fn garbage_and_out_of_range_handles() {
        let t = Handles::default();
        assert_eq!(t.get::<()>(0xff00_0000_0000_0001, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("is not a trio handle"));
        assert_eq!(t.get::<()>(encode(Kind::Event, 0, 5), Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert!(detail().contains("not made on this thread"));
    }

    #[test]
    fn wrong_type_is_reported_not_transmuted() {
        let mut t = Handles::default();
        let h = t.insert(Kind::Event, Rc::new(1_u8));
        assert_eq!(t.get::<u64>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.remove::<u64>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn exhausted_slots_are_retired() {
        let mut t = Handles::default();
        let h = t.insert(Kind::Event, Rc::new(()));
        t.slots[0].generation = GEN_MASK;
        let h = encode(Kind::Event, GEN_MASK, decode(h).2);
        t.remove::<()>(h, Kind::Event).unwrap();
        assert!(t.free.is_empty());
        let h2 = t.insert(Kind::Event, Rc::new(()));
        assert_eq!(decode(h2).2, 1);
        assert_eq!(t.get::<()>(h, Kind::Event).unwrap_err(), TRIO_EBADHANDLE);
    }

    #[test]
    fn handles_are_per_thread() {
        let h = insert(Kind::Semaphore, 3_usize);
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
        let h = insert(Kind::Event, String::from("in use"));
        let held = get::<String>(h, Kind::Event).unwrap();
        let removed = remove::<String>(h, Kind::Event).unwrap();
        assert!(Rc::ptr_eq(&held, &removed));
        assert_eq!(*held, "in use");
    }
}
