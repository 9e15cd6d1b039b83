//! The io_uring backend (Linux): readiness through the ring for every
//! source, and the byte-stream sockets' receives and sends as completions.
//!
//! # Readiness
//!
//! It keeps the readiness contract of `mod.rs` exactly, so the engine and
//! whatever waits for readiness (`wait_readable`, accept, connect, pipes,
//! datagrams) is the same as on epoll: `arm`
//! queues a one-shot `IORING_OP_POLL_ADD` per direction not already
//! watched, and `poll` submits everything queued and waits for completions
//! in one `io_uring_enter` (with the engine's timeout as the wait's
//! timespec). A completed poll is reported as the direction's event, and
//! the direction stays quiet until it is armed again (the one-shot rule the
//! contract allows). The wake handle is an `eventfd` watched by the same
//! ring.
//!
//! Completions are matched to sources by their user data: the engine's
//! token (32 bits), the source's registration generation (30 bits), and
//! the direction (2 bits); a completion from an earlier registration of a
//! reused token is dropped. `deregister` cancels the source's polls in the
//! kernel at once, since a pending poll holds a reference to the file and
//! would keep the socket open after the engine closes it.
//!
//! # Completions (`ops.rs`)
//!
//! A stream socket's `receive_some` and `send_all` are `IORING_OP_RECV`
//! and `IORING_OP_SEND` on buffers this backend owns (an [`Op`] in
//! `ops`): the task's buffer lives only as long as its future, and a
//! cancelled or dropped future cannot take a buffer back from the kernel.
//! Each source has at most one receive and one send in the ring (the
//! stream's conflict detectors see to the rest). What a receive got goes to
//! the source's stash first and is copied out from there, so a receive
//! whose future went away (cancelled, dropped) loses nothing: the next one
//! starts from the stash (or waits for the receive still in the ring). An
//! op whose waiter left is cancelled in the ring (`IORING_OP_ASYNC_CANCEL`)
//! and its buffer kept until the kernel reports it done; `deregister`
//! cancels the source's ops likewise, and dropping the driver waits for
//! every op still in the ring (bounded; a buffer the kernel never gives
//! back is leaked rather than freed under it).
//!
//! The engine learns of completed ops from [`UringDriver::done`]: the
//! park records (key and generation) of the tasks waiting on them, which it
//! wakes after each `poll`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use super::{Backend, Event, Events, Interest, RawSource, WakeHandle};

pub(crate) mod ops;

/// "No op", "no park record".
pub(crate) const NONE: usize = usize::MAX;
/// The most one receive or send op moves (larger buffers take several).
pub(crate) const CHUNK: usize = 64 * 1024;
/// Bytes of free buffers kept per size class (4, 8, 16, 32, 64 KiB): a
/// burst of completions (1,000 connections' receives in one pass) gives
/// back that many buffers at once, and freeing them only to allocate and
/// zero them again on the next pass cost more than keeping them.
const POOL_KEEP_BYTES: usize = 16 << 20;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19), in an entry's `ioprio`.
const RECVSEND_POLL_FIRST: u16 = 1;
/// Low two bits of an op's user data (polls use 0 and 1).
const OP_TAG: u64 = 2;

/// Submission queue entries (the completion queue is twice as long).
const ENTRIES: u32 = 256;

/// User data of the wake handle's poll.
const WAKE: u64 = u64::MAX;
/// User data of cancellations (their completions are not events).
const CANCEL: u64 = u64::MAX - 1;

const READ: u64 = 0;
const WRITE: u64 = 1;
const GEN_MASK: u32 = (1 << 30) - 1;

fn user_data(token: usize, generation: u32, dir: u64) -> u64 {
    ((token as u64) << 32) | (u64::from(generation & GEN_MASK) << 2) | dir
}

fn decode(ud: u64) -> (usize, u32, u64) {
    ((ud >> 32) as usize, ((ud >> 2) as u32) & GEN_MASK, ud & 3)
}

/// One registered source, by token.
struct Slot {
    fd: RawFd,
    live: bool,
    generation: u32,
    /// A poll is in the kernel for reading / writing.
    reading: bool,
    writing: bool,
    /// The receive and the send op in the ring for this source (`NONE`).
    recv: usize,
    send: usize,
    /// What a receive got that nobody has taken yet.
    stash: Stash,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            fd: -1,
            live: false,
            generation: 0,
            reading: false,
            writing: false,
            recv: NONE,
            send: NONE,
            stash: Stash::Empty,
        }
    }
}

/// A completed receive's outcome, kept for the next receiver.
#[derive(Debug, Default)]
pub(crate) enum Stash {
    #[default]
    Empty,
    /// Bytes `buf[pos..]`.
    Data(Vec<u8>, usize),
    /// The end of the stream.
    Eof,
    /// The receive failed with this `errno`.
    Error(i32),
}

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Recv,
    Send,
}

/// One receive or send in the ring, with the buffer the kernel uses.
pub(crate) struct Op {
    kind: OpKind,
    /// The source (token and driver generation) it belongs to.
    token: usize,
    generation: u32,
    /// Its buffer: the kernel reads or writes it until the op completes,
    /// so it is only freed (or reused) after that.
    buf: Vec<u8>,
    /// The result, once completed.
    res: Option<i32>,
    /// The park record (key, generation) of the task waiting for it; `NONE`
    /// when nobody waits (the op is settled as soon as it completes).
    park: (usize, u32),
    /// An `ASYNC_CANCEL` for it was queued.
    cancelled: bool,
}

pub(crate) struct UringDriver {
    ring: IoUring,
    /// Set up with `IORING_SETUP_DEFER_TASKRUN`: completions are posted
    /// only inside an `io_uring_enter` that asks for events.
    deferred: bool,
    slots: Vec<Slot>,
    /// Registered descriptors and their tokens (registering one twice is
    /// an error).
    fds: std::collections::HashMap<RawFd, usize>,
    /// Completions taken from the ring in one `poll` (kept for its
    /// capacity).
    reaped: Vec<(u64, i32)>,
    wake: Arc<EventFdWake>,
    /// The wake handle's poll is in the kernel.
    wake_armed: bool,
    /// Receives and sends in the ring (or completed and not yet taken).
    ops: Slab<Op>,
    /// Park records of tasks whose op completed, for the engine to wake
    /// (`Runtime::io_wake_completed`).
    pub(crate) done: Vec<(usize, u32)>,
    /// Free buffers by size class.
    pool: [Vec<Vec<u8>>; 5],
    /// Buffers of this ring not freed (in ops, stashes and the pool).
    held: usize,
}

/// The wake handle: an eventfd the ring watches.
struct EventFdWake(OwnedFd);

impl WakeHandle for EventFdWake {
    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. A full
        // counter (EAGAIN) means a wake is pending already.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

impl UringDriver {
    /// Sets up a ring, checking that the kernel has what this backend
    /// uses (poll add and remove, and a timeout on the wait).
    ///
    /// # Errors
    /// The reason io_uring cannot be used here: not in the kernel
    /// (`ENOSYS`), disabled (`/proc/sys/kernel/io_uring_disabled`) or
    /// refused by a seccomp filter (`EPERM`), or an operation missing.
    pub(crate) fn new() -> io::Result<UringDriver> {
        // One thread submits (the run's), and completions are processed
        // only when it asks for them (Linux 6.1): no task-work interrupts
        // while the run's code runs. Older kernels get a plain ring.
        let (ring, deferred) = match IoUring::builder()
            .setup_cqsize(ENTRIES * 2)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES)
        {
            Ok(ring) => (ring, true),
            Err(_) => (IoUring::builder().setup_cqsize(ENTRIES * 2).build(ENTRIES)?, false),
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (Linux 5.11)",
            ));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::PollAdd::CODE, "POLL_ADD"),
            (opcode::PollRemove::CODE, "POLL_REMOVE"),
            (opcode::Recv::CODE, "RECV"),
            (opcode::Send::CODE, "SEND"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring without {name}")));
            }
        }
        // SAFETY: plain eventfd creation; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let wake = Arc::new(EventFdWake(unsafe { OwnedFd::from_raw_fd(fd) }));
        Ok(UringDriver {
            ring,
            deferred,
            slots: Vec::new(),
            fds: std::collections::HashMap::new(),
            reaped: Vec::new(),
            wake,
            wake_armed: false,
            ops: Slab::new(),
            done: Vec::new(),
            pool: Default::default(),
            held: 0,
        })
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the memory an entry names (an op's buffer) is owned by
            // the op, which is freed only once the kernel reported it done
            // (or leaked if it never does; see `Drop`). Polls, removals and
            // cancellations name no memory.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits what is queued and, on a deferred ring, runs the kernel's
    /// completion work now (a cancelled poll or op lets go of its file
    /// only then), without waiting.
    fn submit_now(&mut self) -> io::Result<usize> {
        if !self.deferred {
            return self.ring.submit();
        }
        let queued = self.ring.submission().len() as u32;
        // SAFETY: no argument is passed; the flag only asks the kernel to
        // process completions.
        unsafe { self.ring.submitter().enter::<libc::sigset_t>(queued, 0, ENTER_GETEVENTS, None) }
    }

    fn watch(&mut self, fd: RawFd, token: usize, generation: u32, dir: u64) -> io::Result<()> {
        let mask = if dir == READ { libc::POLLIN | libc::POLLRDHUP } else { libc::POLLOUT };
        // One-shot: a multishot poll (armed once, a completion per wake-up)
        // lost a wake-up under load in the pipe test
        // `run_process_feeds_large_input_through_cat_while_draining_output`
        // (2 runs in 40 with both CPUs busy; none in 40 one-shot), not yet
        // understood.
        let entry =
            opcode::PollAdd::new(types::Fd(fd), mask as u32).build().user_data(user_data(token, generation, dir));
        self.push(&entry)
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        self.push(&opcode::PollRemove::new(target).build().user_data(CANCEL))
    }

    /// Turns one completion into an event (or nothing).
    fn complete(&mut self, ud: u64, res: i32, events: &mut Events) {
        if ud == WAKE {
            self.wake_armed = false;
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN
            // (nothing to read) is fine.
            let _ = unsafe { libc::read(self.wake.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            return;
        }
        if ud == CANCEL {
            return;
        }
        if ud & 3 == OP_TAG {
            self.op_completed((ud >> 2) as usize, res);
            return;
        }
        let (token, generation, dir) = decode(ud);
        let Some(slot) = self.slots.get_mut(token) else { return };
        if !slot.live || slot.generation & GEN_MASK != generation {
            return;
        }
        // A one-shot poll is done: the next `arm` submits it again.
        if dir == READ {
            slot.reading = false;
        } else {
            slot.writing = false;
        }
        if res == -libc::ECANCELED {
            return;
        }
        if res < 0 {
            // The poll itself failed (a closed descriptor, say): both
            // directions wake and the operation reports the error.
            events.push(Event {
                token,
                readable: true,
                writable: true,
                error: true,
                read_closed: false,
                write_closed: false,
            });
            return;
        }
        let m = res as libc::c_short;
        let hup = m & libc::POLLHUP != 0;
        let err = m & libc::POLLERR != 0;
        let read_closed = hup || m & libc::POLLRDHUP != 0;
        let write_closed = hup || err;
        events.push(Event {
            token,
            readable: dir == READ || read_closed || err,
            writable: dir == WRITE || write_closed,
            error: err,
            read_closed,
            write_closed,
        });
    }
}

/// The ops: the socket side of the backend (see the module docs). Called
/// by `ops.rs` inside the engine's borrow.
impl UringDriver {
    /// Whether `token` is a live source.
    fn live(&self, token: usize) -> Option<&Slot> {
        self.slots.get(token).filter(|s| s.live)
    }

    /// The receive op of source `token` in the ring, if any.
    pub(crate) fn recv_op(&self, token: usize) -> Option<usize> {
        self.live(token).map(|s| s.recv).filter(|&op| op != NONE)
    }

    /// The send op of source `token` in the ring, if any.
    pub(crate) fn send_op(&self, token: usize) -> Option<usize> {
        self.live(token).map(|s| s.send).filter(|&op| op != NONE)
    }

    /// Whether source `token` has a receive's outcome waiting.
    pub(crate) fn has_stash(&self, token: usize) -> bool {
        self.live(token).is_some_and(|s| !matches!(s.stash, Stash::Empty))
    }

    /// Takes what is stashed for source `token` into `out`: `Some(Ok(n))`
    /// bytes (the rest stays), `Some(Ok(0))` the end of the stream,
    /// `Some(Err)` the receive's error; `None` if nothing is stashed.
    pub(crate) fn take_stash(&mut self, token: usize, out: &mut [u8]) -> Option<io::Result<usize>> {
        let slot = self.slots.get_mut(token).filter(|s| s.live)?;
        match std::mem::take(&mut slot.stash) {
            Stash::Empty => None,
            Stash::Eof => Some(Ok(0)),
            Stash::Error(errno) => Some(Err(io::Error::from_raw_os_error(errno))),
            Stash::Data(buf, pos) => {
                let n = out.len().min(buf.len() - pos);
                out[..n].copy_from_slice(&buf[pos..pos + n]);
                if pos + n < buf.len() {
                    slot.stash = Stash::Data(buf, pos + n);
                } else {
                    self.give_buf(buf);
                }
                Some(Ok(n))
            }
        }
    }

    /// Submits a receive of up to `len` bytes (at most [`CHUNK`]) for
    /// source `token`, which has none in the ring; returns the op.
    pub(crate) fn start_recv(&mut self, token: usize, len: usize) -> io::Result<usize> {
        let buf = self.take_buf(len.clamp(1, CHUNK));
        self.start(token, OpKind::Recv, buf)
    }

    /// Submits a send of the start of `data` (at most [`CHUNK`] bytes,
    /// copied) for source `token`, which has none in the ring; returns the
    /// op.
    pub(crate) fn start_send(&mut self, token: usize, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK);
        let mut buf = self.take_buf(n);
        buf.extend_from_slice(&data[..n]);
        self.start(token, OpKind::Send, buf)
    }

    fn start(&mut self, token: usize, kind: OpKind, mut buf: Vec<u8>) -> io::Result<usize> {
        let Some(slot) = self.slots.get(token).filter(|s| s.live) else {
            self.give_buf(buf);
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let (fd, generation) = (slot.fd, slot.generation);
        let key = self.ops.vacant_entry().key();
        let ud = ((key as u64) << 2) | OP_TAG;
        let entry = match kind {
            OpKind::Recv => {
                let cap = buf.capacity();
                // The kernel writes into the spare capacity; `len` is set
                // from the result.
                opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), cap as u32).build()
            }
            // Poll first: the send starts when the socket is writable as
            // epoll means it (a third of the send buffer free), as it would
            // on epoll after a send that would block, not as soon as a
            // few bytes fit.
            OpKind::Send => opcode::Send::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
                .flags(crate::driver::os::SEND_FLAGS)
                .ioprio(RECVSEND_POLL_FIRST)
                .build(),
        };
        // The op owns the buffer before the entry naming it is queued.
        self.ops.insert(Op { kind, token, generation, buf, res: None, park: (NONE, 0), cancelled: false });
        if let Err(e) = self.push(&entry.user_data(ud)) {
            let op = self.ops.remove(key);
            self.give_buf(op.buf);
            return Err(e);
        }
        let slot = &mut self.slots[token];
        match kind {
            OpKind::Recv => slot.recv = key,
            OpKind::Send => slot.send = key,
        }
        Ok(key)
    }

    /// Whether op `op` has completed.
    pub(crate) fn completed(&self, op: usize) -> bool {
        self.ops.get(op).is_some_and(|o| o.res.is_some())
    }

    /// Whether op `op` exists (in the ring, or completed and not settled).
    pub(crate) fn exists(&self, op: usize) -> bool {
        self.ops.contains(op)
    }

    /// The task waiting in park record `park` (key, generation) waits for
    /// `op`. False if another record waits for it already.
    pub(crate) fn wait_on(&mut self, op: usize, park: (usize, u32)) -> bool {
        let Some(o) = self.ops.get_mut(op) else { return false };
        if o.park.0 != NONE && o.park != park {
            return false;
        }
        o.park = park;
        true
    }

    /// Park record `park` no longer waits for `op` (if it did).
    pub(crate) fn unwait(&mut self, op: usize, park: usize) {
        if let Some(o) = self.ops.get_mut(op)
            && o.park.0 == park
        {
            o.park = (NONE, 0);
        }
    }

    /// Cancels op `op` in the ring (once); its completion still comes.
    pub(crate) fn cancel_op(&mut self, op: usize) {
        let Some(o) = self.ops.get_mut(op) else { return };
        if o.res.is_some() || o.cancelled {
            return;
        }
        o.cancelled = true;
        let entry = opcode::AsyncCancel::new(((op as u64) << 2) | OP_TAG).build().user_data(CANCEL);
        // A full queue that cannot be submitted leaves the op to complete
        // on its own (or at `deregister`/`Drop`).
        let _ = self.push(&entry);
    }

    /// Nobody waits for op `op` any more: settled now if it completed,
    /// else cancelled in the ring and settled when it completes.
    pub(crate) fn abandon(&mut self, op: usize) {
        let Some(o) = self.ops.get_mut(op) else { return };
        o.park = (NONE, 0);
        if o.res.is_some() {
            self.settle(op);
        } else {
            self.cancel_op(op);
        }
    }

    /// Takes a completed op out: a receive's outcome goes to its source's
    /// stash (if the source is still the same), a send's result is
    /// returned (`None` for a receive, or an op not completed).
    pub(crate) fn settle(&mut self, op: usize) -> Option<i32> {
        let res = self.ops.get(op)?.res?;
        let o = self.ops.remove(op);
        let slot = self.slots.get_mut(o.token).filter(|s| s.live && s.generation == o.generation);
        match o.kind {
            OpKind::Recv => {
                let mut buf = o.buf;
                if let Some(slot) = slot
                    && slot.recv == op
                {
                    slot.recv = NONE;
                    if res > 0 {
                        // SAFETY: the kernel initialised `res` bytes (at
                        // most the capacity it was given).
                        unsafe { buf.set_len((res as usize).min(buf.capacity())) };
                        slot.stash = Stash::Data(buf, 0);
                        return None;
                    }
                    slot.stash = match res {
                        0 => Stash::Eof,
                        e if e == -libc::ECANCELED => Stash::Empty,
                        e => Stash::Error(-e),
                    };
                }
                self.give_buf(buf);
                None
            }
            OpKind::Send => {
                if let Some(slot) = slot
                    && slot.send == op
                {
                    slot.send = NONE;
                }
                self.give_buf(o.buf);
                Some(res)
            }
        }
    }

    /// A completion of op `key`.
    fn op_completed(&mut self, key: usize, res: i32) {
        let Some(op) = self.ops.get_mut(key) else { return };
        op.res = Some(res);
        if op.park.0 != NONE {
            self.done.push(op.park);
        } else {
            self.settle(key);
        }
    }

    /// Cancels the ops of the source in `token` (it is going away).
    fn cancel_ops_of(&mut self, token: usize) {
        let slot = &mut self.slots[token];
        let (recv, send) = (slot.recv, slot.send);
        slot.recv = NONE;
        slot.send = NONE;
        if let Stash::Data(buf, _) = std::mem::take(&mut slot.stash) {
            self.give_buf(buf);
        }
        for op in [recv, send] {
            if op != NONE {
                self.cancel_op(op);
            }
        }
    }

    /// A buffer with room for `len` bytes, empty.
    fn take_buf(&mut self, len: usize) -> Vec<u8> {
        let class = size_class(len);
        match self.pool[class].pop() {
            Some(b) => b,
            None => {
                self.held += 1;
                BUFFERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Zeroed once (then emptied): the kernel writes into it
                // behind the back of memory checkers such as valgrind,
                // which would otherwise call what a receive got undefined.
                let mut buf = vec![0u8; 4096 << class];
                buf.clear();
                buf
            }
        }
    }

    /// Gives a buffer back to the pool (or frees it).
    fn give_buf(&mut self, mut buf: Vec<u8>) {
        let class = size_class(buf.capacity());
        if buf.capacity() == 4096 << class && self.pool[class].len() < POOL_KEEP_BYTES / (4096 << class) {
            buf.clear();
            self.pool[class].push(buf);
        } else {
            drop(buf);
            self.freed(1);
        }
    }

    /// `n` of this ring's buffers were freed.
    fn freed(&mut self, n: usize) {
        self.held -= n;
        BUFFERS.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Buffers of every ring in the process that are not freed (in ops, in
/// stashes, in pools): tests check that a run gives all of them back.
pub(crate) static BUFFERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The pool's size class for `len` bytes: 4 KiB << class, at most 64 KiB.
fn size_class(len: usize) -> usize {
    let pages = len.div_ceil(4096).max(1);
    (pages.next_power_of_two().trailing_zeros() as usize).min(4)
}

impl UringDriver {
    /// The end of the ring: cancels the ops still in it and waits for the
    /// kernel to report them done (the kernel may write into a receive's
    /// buffer until then), bounded (about a second), then frees every
    /// buffer. Returns how many the kernel never gave back: those are
    /// leaked rather than freed under it.
    fn shut_down(&mut self) -> usize {
        let keys: Vec<usize> = self.ops.iter().filter(|(_, o)| o.res.is_none()).map(|(k, _)| k).collect();
        for &k in &keys {
            self.cancel_op(k);
        }
        let mut rounds = 0;
        while self.ops.iter().any(|(_, o)| o.res.is_none()) && rounds < 100 {
            rounds += 1;
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let reaped: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
            for (ud, res) in reaped {
                if ud & 3 == OP_TAG
                    && let Some(o) = self.ops.get_mut((ud >> 2) as usize)
                {
                    o.res = Some(res);
                }
            }
        }
        let mut leaked = 0;
        for (_, op) in std::mem::take(&mut self.ops) {
            if op.res.is_some() {
                drop(op.buf);
                self.freed(1);
            } else {
                // The kernel may still use it: never free it.
                std::mem::forget(op.buf);
                leaked += 1;
            }
        }
        for i in 0..self.slots.len() {
            if let Stash::Data(buf, _) = std::mem::take(&mut self.slots[i].stash) {
                drop(buf);
                self.freed(1);
            }
        }
        for class in 0..self.pool.len() {
            let n = self.pool[class].len();
            self.pool[class].clear();
            self.freed(n);
        }
        leaked
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Regular files and directories are refused with `EPERM`, as epoll
/// refuses them (they are always "ready"; waiting on one is a mistake the
/// caller should hear of), so both drivers answer the same.
fn refuse_files(fd: RawFd) -> io::Result<()> {
    // SAFETY: `stat` is plain data, written by fstat before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer; a bad descriptor gives an error.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => Err(io::Error::from_raw_os_error(libc::EPERM)),
        _ => Ok(()),
    }
}

impl Backend for UringDriver {
    fn register(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        if !interest.readable && !interest.writable {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty interest"));
        }
        if u32::try_from(token).is_err() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "token too large for the io_uring backend"));
        }
        if self.fds.contains_key(&source) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        refuse_files(source)?;
        self.fds.insert(source, token);
        if self.slots.len() <= token {
            self.slots.resize_with(token + 1, Slot::default);
        }
        let slot = &mut self.slots[token];
        slot.fd = source;
        slot.live = true;
        slot.reading = false;
        slot.writing = false;
        slot.recv = NONE;
        slot.send = NONE;
        slot.stash = Stash::Empty;
        Ok(())
    }

    fn deregister(&mut self, source: RawSource) -> io::Result<()> {
        let Some(token) = self.fds.remove(&source) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let Some(slot) = self.slots.get_mut(token).filter(|s| s.live && s.fd == source) else { return Ok(()) };
        let (generation, reading, writing) = (slot.generation, slot.reading, slot.writing);
        let ops = slot.recv != NONE || slot.send != NONE;
        self.cancel_ops_of(token);
        let slot = &mut self.slots[token];
        slot.live = false;
        slot.reading = false;
        slot.writing = false;
        slot.generation = slot.generation.wrapping_add(1);
        if reading {
            self.cancel(user_data(token, generation, READ))?;
        }
        if writing {
            self.cancel(user_data(token, generation, WRITE))?;
        }
        if reading || writing || ops {
            // Now: a pending poll or op keeps the file open after the
            // engine closes its descriptor.
            self.submit_now()?;
        }
        Ok(())
    }

    fn arm(&mut self, source: RawSource, token: usize, interest: Interest) -> io::Result<()> {
        let Some(slot) = self.slots.get(token).filter(|s| s.live && s.fd == source) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let (generation, read, write) =
            (slot.generation, interest.readable && !slot.reading, interest.writable && !slot.writing);
        if read {
            self.watch(source, token, generation, READ)?;
            self.slots[token].reading = true;
        }
        if write {
            self.watch(source, token, generation, WRITE)?;
            self.slots[token].writing = true;
        }
        Ok(())
    }

    fn disarm(&mut self, _source: RawSource, _token: usize, _interest: Interest) {
        // The poll stays in the kernel: its completion is at worst one
        // spurious event, and a later `arm` needs no new submission.
    }

    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        if !self.wake_armed {
            let fd = self.wake.0.as_raw_fd();
            self.push(&opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build().user_data(WAKE))?;
            self.wake_armed = true;
        }
        let waited = match timeout {
            Some(d) if d.is_zero() => self.submit_now(),
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::from(d);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match waited {
            Ok(_) => {}
            // Timed out, interrupted, or completions waiting to be reaped.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &reaped {
            self.complete(ud, res, events);
        }
        reaped.clear();
        self.reaped = reaped;
        Ok(())
    }

    fn wake_handle(&self) -> Option<Arc<dyn WakeHandle>> {
        Some(self.wake.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring dropped with a receive and a send in it (no engine around:
    /// nobody takes their results) cancels them, waits for the kernel, and
    /// frees every buffer; the socket pair then really closes.
    #[test]
    fn the_end_of_a_ring_waits_for_its_ops_and_frees_their_buffers() {
        let Ok(mut u) = UringDriver::new() else { return };
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        u.register(fd, 0, Interest::BOTH).unwrap();
        let recv = u.start_recv(0, 100).unwrap();
        // Fill `a`'s buffers so a send waits too.
        a.set_nonblocking(true).unwrap();
        let fill = vec![1u8; 4096];
        while std::io::Write::write(&mut &a, &fill).is_ok() {}
        let send = u.start_send(0, &fill).unwrap();
        u.poll(&mut Vec::new(), Some(Duration::ZERO)).unwrap();
        assert!(!u.completed(recv) && !u.completed(send), "both wait in the ring");
        assert_eq!(u.held, 2);
        assert_eq!(u.shut_down(), 0, "the kernel gave every buffer back");
        assert_eq!(u.held, 0);
        drop(b);
    }

    #[test]
    fn user_data_round_trips() {
        for (token, generation, dir) in [(0, 0, READ), (7, 5, WRITE), (u32::MAX as usize, GEN_MASK, WRITE)] {
            let ud = user_data(token, generation, dir);
            assert_ne!(ud, WAKE);
            assert_eq!(decode(ud), (token, generation, dir));
        }
        // A generation past the mask wraps into it, as the slot's does.
        assert_eq!(decode(user_data(3, GEN_MASK + 1, READ)), (3, 0, READ));
    }
}
