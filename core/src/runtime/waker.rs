//! Wakers that cost nothing to clone and can be woken from any thread.
//!
//! A waker's data word packs the run it belongs to and the task node it wakes
//! (`[run id | node generation | node key]`), so cloning and dropping are plain
//! copies: no allocation and no reference count per task. Waking on the run's
//! own thread marks the node ready directly. Waking from another thread (or
//! while the run's state is busy) finds the run's shared half through a small
//! global registry, queues the word, and wakes the driver; the run loop drains
//! that queue. A stale word (node gone, generation changed, run over) is
//! ignored, which at worst is a spurious wakeup, which futures must tolerate.
//! The word travels in the waker's data pointer as an address without
//! provenance: it is never dereferenced.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::inject::Inject;
use crate::driver::WakeHandle;

/// Bits of the packed word, chosen by pointer width.
#[cfg(target_pointer_width = "64")]
mod layout {
    pub(super) const KEY_BITS: u32 = 32;
    pub(super) const GEN_BITS: u32 = 16;
    pub(super) const RUN_BITS: u32 = 16;
    pub(super) const RUN_SLOT_BITS: u32 = 10;
}
#[cfg(target_pointer_width = "32")]
mod layout {
    pub(super) const KEY_BITS: u32 = 20;
    pub(super) const GEN_BITS: u32 = 6;
    pub(super) const RUN_BITS: u32 = 6;
    pub(super) const RUN_SLOT_BITS: u32 = 4;
}
use layout::*;

/// Largest node key a waker can name.
pub(crate) const MAX_KEY: usize = (1usize << KEY_BITS) - 1;
const GEN_MASK: usize = (1usize << GEN_BITS) - 1;
const RUN_MASK: usize = (1usize << RUN_BITS) - 1;
const RUN_SLOT_MASK: usize = (1usize << RUN_SLOT_BITS) - 1;
const MAX_RUNS: usize = 1usize << RUN_SLOT_BITS;

/// A run's identity inside packed wakers: slot in the registry plus the
/// slot's generation.
pub(crate) type RunId = usize;

/// Truncates a node generation to what fits in a waker.
pub(crate) fn gen_bits(generation: u32) -> usize {
    generation as usize & GEN_MASK
}

pub(crate) fn pack(run: RunId, key: usize, generation: u32) -> usize {
    debug_assert!(key <= MAX_KEY);
    (run << (KEY_BITS + GEN_BITS)) | (gen_bits(generation) << KEY_BITS) | key
}

pub(crate) fn unpack(word: usize) -> (RunId, usize, usize) {
    let key = word & MAX_KEY;
    let generation = (word >> KEY_BITS) & GEN_MASK;
    let run = (word >> (KEY_BITS + GEN_BITS)) & RUN_MASK;
    (run, key, generation)
}

/// The half of a run that other threads may touch.
pub(crate) struct Shared {
    /// Packed words woken from elsewhere, drained by the run loop.
    injected: Inject<Vec<usize>>,
    /// Callbacks queued by `TrioToken::run_sync_soon`, run by the loop.
    entries: Inject<EntryQueue>,
    /// Wakes the driver's blocking poll.
    wake: Option<Arc<dyn WakeHandle>>,
}

impl Shared {
    pub(crate) fn new(wake: Option<Arc<dyn WakeHandle>>) -> Shared {
        Shared { injected: Inject::new(Vec::new()), entries: Inject::new(EntryQueue::default()), wake }
    }

    /// Queues `f` to run on the run's thread (FIFO). With a key, a call
    /// whose key is already pending is dropped (the idempotent variant).
    /// Returns false if the run has finished.
    pub(crate) fn push_entry(&self, key: Option<EntryKey>, f: Entry) -> bool {
        let mut accepted = true;
        let queued = self.entries.push(|q| {
            if q.finished {
                accepted = false;
                return false;
            }
            if let Some(k) = key
                && !q.keys.insert(k)
            {
                return false;
            }
            q.queue.push_back((key, f));
            true
        });
        if queued && let Some(w) = &self.wake {
            w.wake();
        }
        accepted
    }

    /// Marks the run finished: later `push_entry` calls fail; queued
    /// callbacks that never ran are dropped.
    pub(crate) fn finish(&self) {
        let dropped = self.entries.with(|q| {
            q.finished = true;
            std::mem::take(&mut q.queue)
        });
        drop(dropped);
    }

    /// Refuses further callbacks (as [`finish`](Shared::finish)) and hands
    /// back the ones already accepted, so that the run can still run them.
    pub(crate) fn close_entries(&self) -> VecDeque<(Option<EntryKey>, Entry)> {
        self.entries.with(|q| {
            q.finished = true;
            q.keys.clear();
            std::mem::take(&mut q.queue)
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.entries.with(|q| q.finished)
    }

    pub(crate) fn inject(&self, word: usize) {
        self.injected.push(|v| {
            v.push(word);
            true
        });
        if let Some(w) = &self.wake {
            w.wake();
        }
    }

    /// Was anything queued that the loop has not taken yet?
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.injected.has_pending() || self.entries.has_pending()
    }

    /// Moves queued wake words into `words` and queued callbacks into
    /// `entries` (both reused by the caller). Keys of taken callbacks are
    /// forgotten, so an idempotent call made while they run is queued again.
    #[inline]
    pub(crate) fn drain_into(&self, words: &mut Vec<usize>, entries: &mut VecDeque<(Option<EntryKey>, Entry)>) {
        self.injected.drain(|v| words.append(v));
        self.entries.drain(|q| {
            std::mem::swap(&mut q.queue, entries);
            q.keys.clear();
        });
    }
}

/// A callback queued from any thread.
pub(crate) type Entry = Box<dyn FnOnce() + Send + 'static>;

/// The key of an idempotent callback. The runtime's own keys (Ctrl-C,
/// signal delivery, thread calls) live apart from the keys users pass to
/// `run_sync_soon_idempotent`, so a user's key can never swallow one of
/// the runtime's wakeups, or the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EntryKey {
    /// A key given to `TrioToken::run_sync_soon_idempotent`.
    User(u64),
    /// A key of the runtime's own.
    Runtime(u64),
}

#[derive(Default)]
pub(crate) struct EntryQueue {
    queue: VecDeque<(Option<EntryKey>, Entry)>,
    keys: HashSet<EntryKey>,
    finished: bool,
}

struct Registry {
    slots: Vec<(u8, Option<Arc<Shared>>)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { slots: Vec::new() });

/// Registers a run; `None` if `MAX_RUNS` runs are alive at once.
pub(crate) fn register(shared: Arc<Shared>) -> Option<RunId> {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let slot = match reg.slots.iter().position(|(_, s)| s.is_none()) {
        Some(i) => i,
        None if reg.slots.len() < MAX_RUNS => {
            reg.slots.push((0, None));
            reg.slots.len() - 1
        }
        None => return None,
    };
    let entry = &mut reg.slots[slot];
    entry.0 = entry.0.wrapping_add(1);
    entry.1 = Some(shared);
    let generation = entry.0 as usize & (RUN_MASK >> RUN_SLOT_BITS);
    Some((generation << RUN_SLOT_BITS) | slot)
}

pub(crate) fn unregister(run: RunId) {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = reg.slots.get_mut(run & RUN_SLOT_MASK) {
        entry.1 = None;
    }
}

fn lookup(run: RunId) -> Option<Arc<Shared>> {
    let reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let (generation, shared) = reg.slots.get(run & RUN_SLOT_MASK)?;
    let want = run >> RUN_SLOT_BITS;
    if (*generation as usize & (RUN_MASK >> RUN_SLOT_BITS)) != want {
        return None;
    }
    shared.clone()
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn clone_raw(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_raw(data: *const ()) {
    wake_word(data.addr());
}

fn drop_raw(_: *const ()) {}

/// Builds the waker for a packed word.
pub(crate) fn make_waker(word: usize) -> Waker {
    // SAFETY: the vtable functions treat the data pointer as a plain integer
    // and never dereference it; clone and drop have no resources to manage,
    // and every function is safe to call from any thread.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(word), &VTABLE)) }
}

/// The packed word of one of our wakers, or `None` for a foreign waker.
pub(crate) fn word_of(waker: &Waker) -> Option<usize> {
    if std::ptr::eq(waker.vtable(), &VTABLE) { Some(waker.data().addr()) } else { None }
}

/// Wakes the node named by `word`, on this thread if its run is here and
/// idle, otherwise through the run's injection queue.
pub(crate) fn wake_word(word: usize) {
    let (run, _, _) = unpack(word);
    if super::wake_local(run, word) {
        return;
    }
    if let Some(shared) = lookup(run) {
        shared.inject(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip() {
        let w = pack(5, 1234, 77);
        assert_eq!(unpack(w), (5, 1234, 77));
        let w = pack(RUN_MASK, MAX_KEY, u32::MAX);
        assert_eq!(unpack(w), (RUN_MASK, MAX_KEY, GEN_MASK));
    }
}
