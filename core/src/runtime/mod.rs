//! The run loop and the state of one run.
//!
//! One `trio::run` owns one [`Runtime`], reachable from the running thread
//! through a thread-local pointer. Everything here is single-threaded; only
//! [`waker::Shared`] is touched from other threads.
//!
//! # Scheduling model
//!
//! A *node* is something the scheduler can mark ready: the root future, each
//! nursery child, and each nursery body. Nodes are not polled by the run loop
//! directly: a child is polled by its nursery's future, which is polled by the
//! node that hosts the nursery, and so on up to the root. Waking a node marks
//! it scheduled, pushes it on its nursery's ready list, and wakes the nursery's
//! host in turn, stopping at the first node already scheduled. One pass of the
//! loop polls the root once; each nursery polled in that pass runs the batch
//! of children that was ready when its poll began. A task that wakes itself
//! therefore runs again in the next pass, after timers and I/O were looked at.
//!
//! Invariant: no user code (futures, drops, callbacks) ever runs while the
//! `RefCell<Runtime>` is borrowed. Internal wake-ups of our own wakers are done
//! in place; foreign wakers are collected and woken after the borrow ends.

mod inject;
pub(crate) mod io;
mod park;
mod scopes;
mod tasks;
pub(crate) mod waker;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slab::Slab;

use crate::cancel::ScopeState;
use crate::driver::{self, Backend, Events, PlatformDriver};
use crate::error::{CancelReason, CancelSource, Error, Result};
use crate::time::{Clock, Instant, SystemClock};

pub(crate) use park::{AbortFn, LotCore, ParkRec, ParkState, run_pending_aborts};
pub(crate) use scopes::{CancelFlag, ScopeRec, ScopeStateRef};
pub(crate) use tasks::{NodeKind, NurseryRec, TaskRec};
use waker::{RunId, Shared};

/// Marks an absent link in the intrusive lists.
pub(crate) const NONE: usize = usize::MAX;

/// How many task polls may run back to back before the loop looks at I/O
/// again (a zero-timeout poll of the OS when work is still ready). Counted
/// in polls, not passes or batches, so that neither a long batch nor nested
/// nurseries can stretch it: a nursery stops its batch loop, even in the
/// middle of a batch, once the budget is spent (see `Runtime::budget_spent`).
/// tokio's current-thread scheduler looks at I/O every 61 polls too.
pub(crate) const POLL_BUDGET: u32 = 61;

pub(crate) struct Runtime {
    pub(crate) run_id: RunId,
    /// Unique for the life of the process (run ids are reused).
    pub(crate) serial: u64,
    /// The half other threads see (wakes, `run_sync_soon`).
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: Slab<TaskRec>,
    pub(crate) nurseries: Slab<NurseryRec>,
    pub(crate) scopes: Slab<ScopeRec>,
    pub(crate) parks: Slab<ParkRec>,
    /// Registered I/O sources and their waiters.
    pub(crate) io: io::IoTable,
    /// The OS poller.
    pub(crate) driver: PlatformDriver,
    /// Which driver the run got, and why (`lowlevel::current_driver`).
    pub(crate) driver_info: crate::driver::DriverInfo,
    /// Scope deadlines: (deadline, scope key).
    pub(crate) timers: BTreeMap<(Instant, usize), ()>,
    /// `wait_all_tasks_blocked` waiters: (cushion, sequence) → park key.
    pub(crate) idle_waiters: BTreeMap<(Duration, u64), usize>,
    pub(crate) root: usize,
    pub(crate) root_scope: usize,
    pub(crate) root_ready: bool,
    /// The node being polled (a child, a body or the root). Private to
    /// `runtime/`, like the two below: other modules switch it with
    /// [`enter_node`](Runtime::enter_node) and read it through accessors.
    current_node: usize,
    /// The innermost cancel scope of the code being polled.
    current_scope: usize,
    pub(crate) next_gen: u32,
    pub(crate) seq: u64,
    pub(crate) clock: Rc<dyn Clock>,
    pub(crate) rng: Option<u64>,
    /// How many Ctrl-Cs arrived during the run.
    pub(crate) keyboard_interrupts: u32,
    /// Foreign wakers to wake once the borrow ends.
    pub(crate) deferred: Vec<Waker>,
    /// System tasks waiting to be picked up by the run loop.
    pub(crate) new_system_tasks: Vec<SystemTask>,
    /// Reused buffers.
    pub(crate) spare_batches: Vec<Vec<usize>>,
    pub(crate) dfs: Vec<usize>,
    /// Task polls since the loop last looked at I/O (see [`POLL_BUDGET`]).
    pub(crate) polls_since_io: u32,
    /// Waiters whose abort callbacks must run (see `park::run_pending_aborts`).
    pub(crate) pending_aborts: Vec<(usize, u32)>,
    /// Lot breakers: task key → (its generation, the lots it breaks when it
    /// exits), see `lowlevel::add_parking_lot_breaker`.
    pub(crate) lot_breakers: std::collections::HashMap<usize, (u32, Vec<Rc<LotCore>>), KeyHash>,
}

thread_local! {
    /// The run on this thread, or null.
    static CURRENT: Cell<*const RefCell<Runtime>> = const { Cell::new(std::ptr::null()) };
    /// The run id on this thread (`usize::MAX` when none), for local wakes.
    static CURRENT_ID: Cell<RunId> = const { Cell::new(usize::MAX) };
    /// The task the node being polled acts as (key, generation; `NONE`
    /// outside a run): kept by `Runtime::enter_node` beside `current_node`
    /// so that asking for the current task costs neither a borrow nor a
    /// lookup.
    static CURRENT_TASK: Cell<(usize, u32)> = const { Cell::new((NONE, 0)) };
}

/// The current task (key, generation), if a run is polling one on this
/// thread. No borrow of the runtime.
#[inline]
pub(crate) fn current_task() -> Option<(usize, u32)> {
    let task = CURRENT_TASK.with(Cell::get);
    (task.0 != NONE).then_some(task)
}

const OUTSIDE: &str = "called outside trio::run";

/// A hasher for slab keys (small integers, not chosen by an attacker): one
/// multiplication, where SipHash would cost more than the map operation.
pub(crate) type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

/// See [`KeyHash`].
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The `Cancelled` a checkpoint of the code running now reports (with the
/// reason of its scope's cancellation).
pub(crate) fn cancelled_error() -> Error {
    with(|rt| rt.cancelled_error()).unwrap_or_else(|_| Error::cancelled())
}

/// Runs `f` on this thread's runtime.
///
/// # Errors
/// [`Error::Runtime`] if no run is active on this thread.
pub(crate) fn with<R>(f: impl FnOnce(&mut Runtime) -> R) -> Result<R> {
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return Err(Error::Runtime(OUTSIDE));
    }
    // SAFETY: `CURRENT` is non-null only while `RunOptions::run` is on this
    // thread's stack holding the `RefCell` it points to; its guard resets the
    // pointer before that frame goes away, also when unwinding.
    let cell = unsafe { &*ptr };
    let mut rt = cell.borrow_mut();
    let r = f(&mut rt);
    let deferred = if rt.deferred.is_empty() { None } else { Some(std::mem::take(&mut rt.deferred)) };
    drop(rt);
    if let Some(wakers) = deferred {
        for w in wakers {
            w.wake();
        }
    }
    Ok(r)
}

/// Is a run active on this thread?
pub(crate) fn in_run() -> bool {
    !CURRENT.with(Cell::get).is_null()
}

/// Wakes `word` directly if its run is this thread's and not busy.
pub(crate) fn wake_local(run: RunId, word: usize) -> bool {
    if CURRENT_ID.with(Cell::get) != run {
        return false;
    }
    let ptr = CURRENT.with(Cell::get);
    if ptr.is_null() {
        return false;
    }
    // SAFETY: as in `with`.
    let cell = unsafe { &*ptr };
    match cell.try_borrow_mut() {
        Ok(mut rt) => {
            rt.wake_word(word);
            let deferred = if rt.deferred.is_empty() { None } else { Some(std::mem::take(&mut rt.deferred)) };
            drop(rt);
            for w in deferred.into_iter().flatten() {
                w.wake();
            }
            true
        }
        // Busy: fall back to the injection queue, drained by the loop.
        Err(_) => false,
    }
}

/// Where the code being polled runs: its node, its innermost cancel scope
/// and the task it acts as. Saved with [`Runtime::here`] and put back with
/// [`Runtime::go_back`] around code that runs something else in between.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Here {
    node: usize,
    scope: usize,
    task: (usize, u32),
}

impl Runtime {
    /// The node being polled.
    #[inline]
    pub(crate) fn current_node(&self) -> usize {
        self.current_node
    }

    /// The innermost cancel scope of the code being polled.
    #[inline]
    pub(crate) fn current_scope(&self) -> usize {
        self.current_scope
    }

    /// The task the code being polled belongs to: (key, generation).
    #[inline]
    pub(crate) fn current_task(&self) -> (usize, u32) {
        CURRENT_TASK.with(Cell::get)
    }

    /// The one way the current node changes: polling `node` (a child, a
    /// body or the root) starts, inside cancel scope `scope`.
    #[inline]
    pub(crate) fn enter_node(&mut self, node: usize, scope: usize) {
        self.current_node = node;
        self.current_scope = scope;
        let task = match self.tasks.get(node) {
            Some(t) if t.identity as usize == node => (node, t.generation),
            // A nursery body: it acts as the task that opened the nursery.
            Some(t) => {
                let id = t.identity as usize;
                (id, self.tasks.get(id).map_or(0, |host| host.generation))
            }
            None => (NONE, 0),
        };
        CURRENT_TASK.with(|c| c.set(task));
    }

    /// Enters cancel scope `scope` in the current node; returns the scope
    /// it replaces (to give back to `enter_scope` when leaving).
    #[inline]
    pub(crate) fn enter_scope(&mut self, scope: usize) -> usize {
        std::mem::replace(&mut self.current_scope, scope)
    }

    /// Where the code being polled runs now.
    #[inline]
    pub(crate) fn here(&self) -> Here {
        Here { node: self.current_node, scope: self.current_scope, task: self.current_task() }
    }

    /// Goes back to what [`here`](Runtime::here) saved.
    #[inline]
    pub(crate) fn go_back(&mut self, here: Here) {
        self.current_node = here.node;
        self.current_scope = here.scope;
        CURRENT_TASK.with(|c| c.set(here.task));
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.current_time()
    }

    pub(crate) fn next_generation(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    /// Wakes a waker while the runtime is borrowed.
    #[inline]
    pub(crate) fn wake_waker(&mut self, w: &Waker) {
        match waker::word_of(w) {
            Some(word) => self.wake_word(word),
            None => self.deferred.push(w.clone()),
        }
    }

    #[inline]
    pub(crate) fn wake_word(&mut self, word: usize) {
        let (run, key, generation) = waker::unpack(word);
        if run != self.run_id {
            // A waker of another run: hand it over through its own path later.
            self.deferred.push(waker::make_waker(word));
            return;
        }
        if let Some(t) = self.tasks.get(key)
            && waker::gen_bits(t.generation) == generation
        {
            self.wake_node(key);
        }
    }

    /// The waker of node `key`.
    pub(crate) fn node_waker(&self, key: usize) -> Waker {
        waker::make_waker(waker::pack(self.run_id, key, self.tasks[key].generation))
    }

    fn take_rng(&mut self) -> Option<u64> {
        let x = self.rng.as_mut()?;
        // xorshift64*
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        Some(x.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    /// Shuffles a batch when the run was given a seed.
    pub(crate) fn maybe_shuffle(&mut self, batch: &mut [usize]) {
        if self.rng.is_none() || batch.len() < 2 {
            return;
        }
        for i in (1..batch.len()).rev() {
            let r = self.take_rng().unwrap_or(0);
            let j = (r % (i as u64 + 1)) as usize;
            batch.swap(i, j);
        }
    }

    /// Counts one task poll against the I/O budget.
    #[inline]
    pub(crate) fn count_poll(&mut self) {
        self.polls_since_io = self.polls_since_io.saturating_add(1);
    }

    /// Has the I/O budget been spent? Then nurseries stop polling children
    /// and return to the run loop, which looks at I/O before going on.
    #[inline]
    pub(crate) fn budget_spent(&self) -> bool {
        self.polls_since_io >= POLL_BUDGET
    }

    /// Fires every deadline that has passed. Called by the run loop on
    /// every pass and by nurseries before every batch, so that a runnable
    /// task sees a passed deadline at its next checkpoint (as in Trio,
    /// which checks deadlines between batches).
    #[inline]
    pub(crate) fn fire_timers(&mut self) {
        if !self.timers.is_empty() {
            self.fire_passed_timers();
        }
    }

    fn fire_passed_timers(&mut self) {
        let now = self.now();
        while let Some((&(deadline, key), _)) = self.timers.first_key_value() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            self.scopes[key].take_timer();
            self.cancel_scope(key, CancelReason::new(CancelSource::Deadline));
        }
    }

    fn anything_ready(&self) -> bool {
        self.root_ready
    }
}

/// How a run is set up: the clock and, for tests, a seed that shuffles the
/// order of every scheduling batch.
pub struct RunOptions {
    clock: Rc<dyn Clock>,
    seed: Option<u64>,
    ctrl_c: bool,
    driver: Option<crate::Driver>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("seed", &self.seed).finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions::new()
    }
}

impl RunOptions {
    /// The defaults: the system clock, no shuffling.
    pub fn new() -> RunOptions {
        RunOptions { clock: Rc::new(SystemClock::new()), seed: None, ctrl_c: true, driver: None }
    }

    /// Uses `clock` for all time in the run (for example a
    /// [`MockClock`](crate::testing::MockClock)).
    pub fn clock(mut self, clock: impl Clock + 'static) -> RunOptions {
        self.clock = Rc::new(clock);
        self
    }

    /// Shuffles the order in which the tasks of one batch run, from `seed`,
    /// so that tests cannot depend on it.
    pub fn shuffle_seed(mut self, seed: u64) -> RunOptions {
        self.seed = Some(seed | 1);
        self
    }

    /// Whether Ctrl-C (SIGINT) is handled by the run (the default): the first
    /// one cancels every task, the run waits for their clean-up and returns
    /// [`Error::KeyboardInterrupt`]; a second one during clean-up cancels
    /// shielded scopes too. With `false`, SIGINT is left alone. (Unix, and
    /// Ctrl-C/Ctrl-Break on Windows.)
    pub fn handle_ctrl_c(mut self, handle: bool) -> RunOptions {
        self.ctrl_c = handle;
        self
    }

    /// The I/O driver of the run (see [`Driver`](crate::Driver)); without
    /// this, `TRIO_DRIVER` decides, and without that epoll.
    pub fn driver(mut self, driver: crate::Driver) -> RunOptions {
        self.driver = Some(driver);
        self
    }

    /// Runs `fut` to completion on this thread and returns its result.
    ///
    /// # Errors
    /// [`Error::Runtime`] if a run is already active on this thread (runs do
    /// not nest) or too many runs are alive in the process; [`Error::Io`] if
    /// the OS poller cannot be created, the driver asked for cannot be used
    /// here, or `TRIO_DRIVER` names no driver; otherwise whatever `fut`
    /// returns.
    /// # Panics
    /// A panic in `fut` (or one that a nursery carried up to it) continues
    /// out of `run` after the run's state was torn down.
    pub fn run<T, F>(self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if in_run() {
            return Err(Error::Runtime("trio::run cannot nest inside another trio::run on the same thread"));
        }
        // Dropped last: the end of the last run joins the idle workers.
        let _workers = crate::thread::pool::RunGuard::enter();
        let choice = match self.driver {
            Some(d) => d,
            None => crate::Driver::from_env()?.unwrap_or(crate::Driver::Epoll),
        };
        let (driver, driver_info) = driver::new_driver(choice)?;
        let shared = Arc::new(Shared::new(driver.wake_handle()));
        let run_id = waker::register(shared.clone()).ok_or(Error::Runtime("too many trio runs alive at once"))?;
        let finish_shared = shared.clone();
        let _unregister = Defer(Some(move || {
            finish_shared.finish();
            waker::unregister(run_id);
        }));
        self.clock.start_clock();
        let cell = RefCell::new(Runtime::new(run_id, shared.clone(), driver, driver_info, self.clock, self.seed));

        CURRENT.with(|c| c.set(&cell));
        CURRENT_ID.with(|c| c.set(run_id));
        let _clear = Defer(Some(|| {
            CURRENT.with(|c| c.set(std::ptr::null()));
            CURRENT_ID.with(|c| c.set(usize::MAX));
            CURRENT_TASK.with(|c| c.set((NONE, 0)));
        }));

        #[cfg(any(unix, windows))]
        let ctrl_c = if self.ctrl_c { listen_ctrl_c(&shared) } else { None };
        #[cfg(not(any(unix, windows)))]
        let ctrl_c = {
            let _ = self.ctrl_c;
            None
        };
        // Declared after the runtime and its guards, so dropped before them:
        // the future's drop may still use the run.
        let fut = pin!(fut);
        Loop::new(&cell, &shared, ctrl_c).run(fut)
    }
}

impl Runtime {
    /// The state of a new run, with its root task and root scope.
    fn new(
        run_id: RunId,
        shared: Arc<Shared>,
        driver: PlatformDriver,
        driver_info: crate::driver::DriverInfo,
        clock: Rc<dyn Clock>,
        seed: Option<u64>,
    ) -> Runtime {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut rt = Runtime {
            run_id,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            shared,
            tasks: Slab::new(),
            nurseries: Slab::new(),
            scopes: Slab::new(),
            parks: Slab::new(),
            io: io::IoTable::new(),
            driver,
            driver_info,
            timers: BTreeMap::new(),
            idle_waiters: BTreeMap::new(),
            root: NONE,
            root_scope: NONE,
            root_ready: true,
            current_node: NONE,
            current_scope: NONE,
            next_gen: 0,
            seq: 0,
            clock,
            rng: seed,
            keyboard_interrupts: 0,
            deferred: Vec::new(),
            new_system_tasks: Vec::new(),
            spare_batches: Vec::new(),
            dfs: Vec::new(),
            polls_since_io: 0,
            pending_aborts: Vec::new(),
            lot_breakers: std::collections::HashMap::default(),
        };
        rt.root = rt.insert_root("<main>");
        rt.root_scope = rt.insert_scope(ScopeStateRef::Inline(ScopeState::new()), NONE, false, None);
        rt
    }
}

/// The run loop of one run: what it owns besides the runtime (the reused
/// buffers, the system tasks, the Ctrl-C registration). One pass polls the
/// root if it is ready, runs the callbacks other threads queued, fires
/// deadlines, and looks at I/O when nothing is ready or the poll budget is
/// spent.
struct Loop<'a> {
    cell: &'a RefCell<Runtime>,
    shared: &'a Arc<Shared>,
    root: usize,
    events: Events,
    injected: Vec<usize>,
    entries: std::collections::VecDeque<(Option<waker::EntryKey>, waker::Entry)>,
    /// System tasks (see `spawn_system_task`), owned here so they are
    /// dropped, and so cancelled, when the run ends.
    system: Vec<SystemTask>,
    #[cfg(any(unix, windows))]
    ctrl_c: Option<CtrlC>,
}

impl<'a> Loop<'a> {
    #[cfg(any(unix, windows))]
    fn new(cell: &'a RefCell<Runtime>, shared: &'a Arc<Shared>, ctrl_c: Option<CtrlC>) -> Loop<'a> {
        Loop { ctrl_c, ..Loop::bare(cell, shared) }
    }

    #[cfg(not(any(unix, windows)))]
    fn new(cell: &'a RefCell<Runtime>, shared: &'a Arc<Shared>, _ctrl_c: Option<()>) -> Loop<'a> {
        Loop::bare(cell, shared)
    }

    fn bare(cell: &'a RefCell<Runtime>, shared: &'a Arc<Shared>) -> Loop<'a> {
        Loop {
            cell,
            shared,
            root: cell.borrow().root,
            events: Events::with_capacity(256),
            injected: Vec::new(),
            entries: std::collections::VecDeque::new(),
            system: Vec::new(),
            #[cfg(any(unix, windows))]
            ctrl_c: None,
        }
    }

    /// Runs passes until the main future returns.
    fn run<T>(mut self, mut fut: std::pin::Pin<&mut impl Future<Output = Result<T>>>) -> Result<T> {
        let root_waker = self.cell.borrow().node_waker(self.root);
        let mut cx = Context::from_waker(&root_waker);
        loop {
            if self.take_root_ready() {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return self.finish(out);
                }
                if !self.system.is_empty() {
                    poll_system_tasks(self.cell, &mut cx, &mut self.system);
                }
            }
            self.run_callbacks();
            let (ready, timeout, idle, budget_spent) = self.after_pass();
            if ready && !budget_spent {
                continue;
            }
            self.look_at_io(ready, timeout, idle)?;
        }
    }

    /// Is the root ready? Then it is entered, to be polled now.
    #[inline(always)]
    fn take_root_ready(&self) -> bool {
        let mut rt = self.cell.borrow_mut();
        if !rt.root_ready {
            return false;
        }
        rt.root_ready = false;
        rt.tasks[self.root].scheduled = false;
        let scope = rt.root_scope;
        rt.enter_node(self.root, scope);
        rt.count_poll();
        true
    }

    /// Callbacks from `run_sync_soon`, in order, with the root as the
    /// current task. A panic in one is a bug and ends the run.
    #[inline(always)]
    fn run_callbacks(&mut self) {
        self.shared.drain_into(&mut self.injected, &mut self.entries);
        if !self.entries.is_empty() {
            self.run_entries();
        }
    }

    #[cold]
    fn run_entries(&mut self) {
        {
            let mut rt = self.cell.borrow_mut();
            let scope = rt.root_scope;
            rt.enter_node(self.root, scope);
        }
        while let Some((_, f)) = self.entries.pop_front() {
            f();
        }
    }

    /// Wakes from other threads, expired deadlines, and the plan for the
    /// driver (is work ready, how long may it block, what to do when idle),
    /// in one borrow; then the wakers and abort callbacks that must run
    /// outside it. Also says whether the poll budget is spent.
    #[inline(always)]
    fn after_pass(&mut self) -> (bool, Option<Duration>, Idle, bool) {
        let (deferred, plan, budget_spent, aborts) = {
            let mut rt = self.cell.borrow_mut();
            for word in self.injected.drain(..) {
                rt.wake_word(word);
            }
            rt.fire_timers();
            if !rt.new_system_tasks.is_empty() {
                // Polled from the next pass on (they woke the root).
                self.system.append(&mut rt.new_system_tasks);
            }
            if rt.root_ready && !rt.budget_spent() && rt.deferred.is_empty() && rt.pending_aborts.is_empty() {
                // The common case: go on polling.
                return (true, Some(Duration::ZERO), Idle::No, false);
            }
            let deferred = std::mem::take(&mut rt.deferred);
            (deferred, rt.plan(), rt.budget_spent(), !rt.pending_aborts.is_empty())
        };
        let (ready, timeout, idle) =
            if !deferred.is_empty() || aborts { self.wake_deferred(deferred, aborts) } else { plan };
        (ready, timeout, idle, budget_spent)
    }

    /// The part of [`after_pass`](Loop::after_pass) that runs code outside
    /// the borrow: abort callbacks of waiters whose deadlines fired, and
    /// foreign wakers; then the plan again (they may have woken one of
    /// ours).
    #[cold]
    fn wake_deferred(&self, deferred: Vec<Waker>, aborts: bool) -> (bool, Option<Duration>, Idle) {
        if aborts {
            run_pending_aborts();
        }
        for w in deferred {
            w.wake();
        }
        self.cell.borrow().plan()
    }

    /// Polls the OS (without blocking if work is `ready`, else up to
    /// `timeout`) and dispatches its events; when nothing happened and
    /// nothing is ready, does what `idle` says.
    fn look_at_io(&mut self, ready: bool, timeout: Option<Duration>, idle: Idle) -> Result<()> {
        self.events.clear();
        // Blocking in the poller with the runtime borrowed is fine: no code
        // of this thread runs meanwhile, and other threads reach the loop
        // only through `shared` and the driver's wake handle.
        let deferred = {
            let mut rt = self.cell.borrow_mut();
            let rt = &mut *rt;
            rt.polls_since_io = 0;
            rt.driver.poll(&mut self.events, timeout)?;
            #[cfg(target_os = "linux")]
            let completed = rt.io_wake_completed();
            #[cfg(not(target_os = "linux"))]
            let completed = false;
            if !self.events.is_empty() {
                rt.io_dispatch(&self.events);
            } else if !ready && !completed && !self.shared.has_pending() {
                rt.on_idle(idle);
            }
            std::mem::take(&mut rt.deferred)
        };
        for w in deferred {
            w.wake();
        }
        Ok(())
    }

    /// The main future returned `out`: callbacks accepted before the run
    /// ended still run (as Trio guarantees), with the root as the current
    /// task; from here on new ones are refused with `RunFinished`. A Ctrl-C
    /// among them, or one caught but not delivered yet, still counts: the
    /// run then reports `KeyboardInterrupt`.
    fn finish<T>(&mut self, out: Result<T>) -> Result<T> {
        let late = self.shared.close_entries();
        if !late.is_empty() {
            {
                let mut rt = self.cell.borrow_mut();
                let scope = rt.root_scope;
                rt.enter_node(self.root, scope);
            }
            for (_, f) in late {
                f();
            }
        }
        // Stop listening (which hands over what the handler caught) and
        // look.
        #[cfg(any(unix, windows))]
        let late_ctrl_c = self.ctrl_c.take().is_some_and(CtrlC::finish);
        #[cfg(not(any(unix, windows)))]
        let late_ctrl_c = false;
        if self.cell.borrow().keyboard_interrupts > 0 || late_ctrl_c {
            return Err(Error::KeyboardInterrupt);
        }
        out
    }
}

/// A task the runtime runs beside the main future (for
/// `from_thread::run_with_token`). It runs as part of the root task, in the
/// root scope; it is dropped (cancelled) when the main future finishes.
pub(crate) type SystemTask = std::pin::Pin<Box<dyn Future<Output = ()>>>;

/// Starts a system task. Not a checkpoint.
pub(crate) fn spawn_system_task(task: SystemTask) -> Result<()> {
    with(|rt| {
        rt.new_system_tasks.push(task);
        let root = rt.root;
        rt.wake_node(root);
    })
}

/// Polls every system task once (they share the root's waker; they are
/// rare, so a root wakeup polls them all).
fn poll_system_tasks(cell: &RefCell<Runtime>, cx: &mut Context<'_>, system: &mut Vec<SystemTask>) {
    {
        let mut rt = cell.borrow_mut();
        let (root, scope) = (rt.root, rt.root_scope);
        rt.enter_node(root, scope);
    }
    system.retain_mut(|t| t.as_mut().poll(cx).is_pending());
}

/// The `run_sync_soon` key of Ctrl-C delivery.
#[cfg(any(unix, windows))]
const CTRL_C_KEY: u64 = 1 << 61;

/// A run's SIGINT handling: the registration, and a flag that says a
/// Ctrl-C was caught (set even when the run can no longer take callbacks).
#[cfg(any(unix, windows))]
struct CtrlC {
    registration: crate::driver::signals::Registration,
    caught: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(any(unix, windows))]
impl CtrlC {
    /// Stops listening (a SIGINT the handler caught but had not passed on
    /// yet is delivered now) and says whether any Ctrl-C was caught.
    fn finish(self) -> bool {
        drop(self.registration);
        self.caught.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Catches SIGINT for this run: each one cancels the run (see
/// `RunOptions::handle_ctrl_c`). `None` if SIGINT cannot be caught.
#[cfg(any(unix, windows))]
fn listen_ctrl_c(shared: &Arc<Shared>) -> Option<CtrlC> {
    if cfg!(miri) {
        // Miri cannot install signal handlers; runs under it leave SIGINT be.
        return None;
    }
    let token = crate::lowlevel::TrioToken { shared: shared.clone() };
    let caught = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = caught.clone();
    let deliver = move |_sig: i32| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = token.run_sync_soon_runtime(CTRL_C_KEY, || {
            let _ = with(|rt| rt.keyboard_interrupt());
            run_pending_aborts();
        });
    };
    let registration =
        crate::driver::signals::listen(&[crate::driver::signals::numbers::SIGINT], Arc::new(deliver)).ok()?;
    Some(CtrlC { registration, caught })
}

#[cfg(any(unix, windows))]
impl Runtime {
    /// Ctrl-C: the first cancels the root scope (every task, except inside
    /// shields); later ones cancel every scope, shielded or not.
    pub(crate) fn keyboard_interrupt(&mut self) {
        self.keyboard_interrupts += 1;
        if self.keyboard_interrupts == 1 {
            let root = self.root_scope;
            self.cancel_scope(root, CancelReason::new(CancelSource::KeyboardInterrupt));
        } else {
            let keys: Vec<usize> = self.scopes.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.cancel_scope(k, CancelReason::new(CancelSource::KeyboardInterrupt));
            }
        }
    }
}

/// What to do when the loop blocked with nothing ready and nothing happened.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Idle {
    No,
    /// Wake the `wait_all_tasks_blocked` waiters with this cushion.
    WakeIdleWaiters(Duration),
    /// Jump the clock to this deadline.
    Autojump(Instant),
}

impl Runtime {
    /// Whether work is ready; if not, how long to block and what to do if
    /// nothing happens meanwhile.
    fn plan(&self) -> (bool, Option<Duration>, Idle) {
        if self.anything_ready() { (true, Some(Duration::ZERO), Idle::No) } else { self.idle_plan() }
    }

    /// How long to block, and what to do if nothing happens meanwhile.
    fn idle_plan(&self) -> (bool, Option<Duration>, Idle) {
        let next_deadline = self.timers.first_key_value().map(|(&(d, _), _)| d);
        let mut timeout = next_deadline.and_then(|d| self.clock.deadline_to_sleep_time(d));
        let mut idle = Idle::No;
        if let Some((&(cushion, _), _)) = self.idle_waiters.first_key_value()
            && timeout.is_none_or(|t| cushion <= t)
        {
            timeout = Some(cushion);
            idle = Idle::WakeIdleWaiters(cushion);
        }
        if matches!(idle, Idle::No)
            && let (Some(threshold), Some(deadline)) = (self.clock.autojump_threshold(), next_deadline)
            && timeout.is_none_or(|t| threshold < t)
        {
            timeout = Some(threshold);
            idle = Idle::Autojump(deadline);
        }
        (false, timeout, idle)
    }

    fn on_idle(&mut self, idle: Idle) {
        match idle {
            Idle::No => {}
            Idle::WakeIdleWaiters(cushion) => {
                while let Some((&(c, s), &park)) = self.idle_waiters.first_key_value() {
                    if c != cushion {
                        break;
                    }
                    self.idle_waiters.remove(&(c, s));
                    self.unpark_key(park);
                }
            }
            Idle::Autojump(deadline) => {
                self.clock.autojump(deadline);
                self.fire_timers();
            }
        }
    }
}

/// Runs a closure on drop (clean-up that must happen while unwinding too).
struct Defer<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Defer<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Runs `fut` to completion in a new run with the default options
/// (system clock, no shuffling): the entry point of every trio program.
///
/// # Errors
/// See [`RunOptions::run`].
pub fn run<T, F>(fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    RunOptions::new().run(fut)
}
