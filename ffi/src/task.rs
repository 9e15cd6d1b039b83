//! C tasks: stackful coroutines that the engine polls as futures.
//!
//! A C task runs its function on its own stack (a corosensei coroutine,
//! pooled stacks over a guard region: see `stack.rs`). When the C code calls something that
//! waits (`trio_sleep`, a socket receive, closing a nursery, ...), that call
//! builds the Rust future for the operation *on the coroutine's stack* and
//! polls it there, with the waker of the task's future (a [`Pump`]) that
//! resumed the coroutine ([`block_on`]). While the operation is pending the
//! coroutine suspends; each time the pump is polled again it resumes the
//! coroutine, which polls the operation again; once it is ready the C call
//! returns with the result. Only that C task waits; the run goes on. (The
//! operation is polled where it lives, so a C call that waits costs the two
//! stack switches of its one suspension and nothing more.)
//!
//! # Layers: nurseries and cancel scopes
//! C opens a nursery or a cancel scope with one call and closes it with
//! another, with arbitrary C code between. Everything the C code waits on
//! in between must run *inside* that nursery's or scope's future, as the
//! body of a Rust `open_nursery` or `CancelScope::run` would. So opening
//! one suspends the coroutine with [`Ask::Open`]; the current pump then
//! polls a new layer future (`open_nursery(|n| pump)` or
//! `scope.run(pump)`) whose own, inner pump takes over the coroutine's next
//! requests. Closing suspends with [`Ask::Close`]: the inner pump finishes,
//! the layer future finishes as Rust's would (a nursery waits for its
//! children), and the outer pump resumes the coroutine with the layer's
//! result. A nursery's children therefore run whenever the C task waits on
//! anything, not only while it closes the nursery.
//!
//! A cancellation delivered to a C call inside a layer is remembered by that
//! layer's pump, which then ends with `Err(Cancelled)` when the layer closes,
//! so the scope that caused it catches it (`cancelled_caught`) and any other
//! passes it on outward, as in Trio.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use corosensei::stack::Stack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use trio::{CancelScope, Error, Result};

use crate::error;
use crate::stack::{self, TaskStack};

/// AddressSanitizer's fiber-switch annotations, used when the program is
/// built with ASan (its runtime is then loaded and exports them; they are
/// looked up once with `dlsym`, so libtrio needs no ASan build of its own).
/// Without them ASan takes a C task's stack for a giant frame of the
/// thread's stack and reports false errors when C++ throws on it.
mod asan {
    use std::cell::Cell;
    use std::ffi::c_void;
    use std::ptr;

    type StartFn = unsafe extern "C" fn(*mut *mut c_void, *const c_void, usize);
    type FinishFn = unsafe extern "C" fn(*mut c_void, *mut *const c_void, *mut usize);

    #[derive(Clone, Copy)]
    struct Hooks {
        start: StartFn,
        finish: FinishFn,
    }

    #[cfg(unix)]
    fn hooks() -> Option<Hooks> {
        static HOOKS: std::sync::OnceLock<Option<Hooks>> = std::sync::OnceLock::new();
        *HOOKS.get_or_init(|| {
            // SAFETY: dlsym with static NUL-terminated names; the symbols,
            // when present, are ASan's functions with these signatures.
            unsafe {
                let start = libc::dlsym(libc::RTLD_DEFAULT, c"__sanitizer_start_switch_fiber".as_ptr());
                let finish = libc::dlsym(libc::RTLD_DEFAULT, c"__sanitizer_finish_switch_fiber".as_ptr());
                if start.is_null() || finish.is_null() {
                    return None;
                }
                Some(Hooks {
                    start: std::mem::transmute::<*mut c_void, StartFn>(start),
                    finish: std::mem::transmute::<*mut c_void, FinishFn>(finish),
                })
            }
        })
    }

    #[cfg(not(unix))]
    fn hooks() -> Option<Hooks> {
        None
    }

    thread_local! {
        /// The stack a running C task switches back to: (bottom, size).
        static HOST: Cell<(*const c_void, usize)> = const { Cell::new((ptr::null(), 0)) };
    }

    /// What [`after_resume`] needs: the resumer's fake-stack token, and
    /// the stack the resumer itself goes back to when it is a task (a task
    /// can resume another one: an operation it polls may poll a child task,
    /// as `Nursery::start` does until the child has started).
    pub(super) struct Resuming {
        fake: *mut c_void,
        host: (*const c_void, usize),
    }

    /// On the host, before resuming a task whose stack is
    /// `[bottom, bottom + size)`.
    pub(super) fn before_resume(bottom: usize, size: usize) -> Resuming {
        let mut fake = ptr::null_mut();
        let mut host = (ptr::null(), 0);
        if let Some(h) = hooks() {
            host = HOST.with(Cell::get);
            // SAFETY: ASan's documented protocol for a switch to a fiber.
            unsafe { (h.start)(&mut fake, bottom as *const c_void, size) };
        }
        Resuming { fake, host }
    }

    /// On the host, once the task has suspended or returned: the task
    /// recorded its host (this stack) in `HOST`; the resumer's own host is
    /// put back.
    pub(super) fn after_resume(r: Resuming) {
        if let Some(h) = hooks() {
            // SAFETY: as above; the host's bounds are known to ASan.
            unsafe { (h.finish)(r.fake, ptr::null_mut(), ptr::null_mut()) };
            HOST.with(|c| c.set(r.host));
        }
    }

    /// On the task's stack, first thing after control arrived (`fake` is
    /// the token from [`before_suspend`], null on the first entry).
    pub(super) fn entered(fake: *mut c_void) {
        if let Some(h) = hooks() {
            let (mut bottom, mut size) = (ptr::null(), 0);
            // SAFETY: as above; records the stack we came from.
            unsafe { (h.finish)(fake, &mut bottom, &mut size) };
            HOST.with(|c| c.set((bottom, size)));
        }
    }

    /// On the task's stack, just before switching back to the host; `last`
    /// when the task's function has returned (its stack is done with).
    pub(super) fn before_suspend(last: bool) -> *mut c_void {
        let mut fake = ptr::null_mut();
        if let Some(h) = hooks() {
            let (bottom, size) = HOST.with(Cell::get);
            let save = if last { ptr::null_mut() } else { &mut fake as *mut *mut c_void };
            // SAFETY: as above.
            unsafe { (h.start)(save, bottom, size) };
        }
        fake
    }
}

/// A C task's function: returns 0 (or a positive value) on success, a
/// negative `TRIO_E*` code (or any negative value of its own) on failure.
pub type TrioTaskFn = Option<unsafe extern "C" fn(arg: *mut c_void) -> c_int>;

thread_local! {
    /// The yielder of the coroutine running now (null outside C tasks).
    static CURRENT: Cell<*const Yielder<Resumed, Ask>> = const { Cell::new(std::ptr::null()) };
}

/// What a coroutine asks its pump for.
pub(crate) enum Ask {
    /// The operation it polled is pending: resume it when the task is
    /// polled again (its waker has been registered).
    Pending,
    /// Open a layer (with this id) around everything that follows; resume
    /// once it is open.
    Open(Layer, usize),
    /// Close the innermost layer; resume with its result.
    Close,
}

/// What a coroutine is resumed with.
pub(crate) enum Resumed {
    /// The task was polled again: poll the pending operation again.
    Poll,
    /// The layer it asked for is open.
    Opened,
    /// The innermost layer closed with this result.
    Closed(Result<()>),
}

/// A layer a C task opens (see the module docs).
pub(crate) enum Layer {
    /// A nursery; its state is shared with the C handle.
    Nursery(Rc<NurseryState>),
    /// A cancel scope.
    Scope(CancelScope),
}

/// A C nursery while it is open: what `trio_nursery_spawn` needs.
pub(crate) struct NurseryState {
    /// Its layer id (for the close-in-order check).
    layer: usize,
    /// The nursery, from its body's start until it has finished (erased
    /// lifetime; see `spawn`).
    nursery: Cell<Option<*const trio::Nursery<'static, 'static>>>,
    /// Its cancel scope, once open.
    scope: RefCell<Option<CancelScope>>,
}

impl NurseryState {
    /// The state of a nursery about to open as layer `layer`.
    pub(crate) fn new(layer: usize) -> NurseryState {
        NurseryState { layer, nursery: Cell::new(None), scope: RefCell::new(None) }
    }

    /// Its layer id.
    pub(crate) fn layer(&self) -> usize {
        self.layer
    }

    /// Starts `func(arg)` as a child C task of this nursery.
    pub(crate) fn spawn(&self, func: TrioTaskFn, arg: *mut c_void) -> i32 {
        let Some(n) = self.nursery.get() else {
            return error::set_error(error::TRIO_ECLOSED, "the nursery is closing or closed");
        };
        let task = match CTask::new(func, arg) {
            Ok(t) => t,
            Err(code) => return code,
        };
        // SAFETY: `nursery` is set when the nursery's body starts and cleared
        // as soon as `open_nursery` returns (`open_layer`), so the nursery is
        // alive;
        // the child is 'static.
        unsafe { (*n).spawn(async move { task.await.map(|_| ()) }) };
        0
    }

    /// Starts `func(arg)` as a child C task of this nursery and waits (in
    /// the calling C task) until it calls `trio_task_started`; returns the
    /// value it passed.
    pub(crate) fn start(&self, func: TrioTaskFn, arg: *mut c_void) -> std::result::Result<usize, i32> {
        current_task()?;
        let Some(n) = self.nursery.get() else {
            return Err(error::set_error(error::TRIO_ECLOSED, "the nursery is closing or closed"));
        };
        let task = CTask::new(func, arg)?;
        // SAFETY: as in `spawn`; the nursery cannot finish while the
        // started child is one of its tasks, and after spawning it `start`
        // only waits on state shared with the child.
        let fut = unsafe {
            (*n).start(async move |status: trio::TaskStatus<usize>| {
                task.set_status(status);
                task.await.map(|_| ())
            })
        };
        wait(fut)
    }

    /// Cancels the nursery's scope (children and the body's region).
    pub(crate) fn cancel(&self) -> i32 {
        match self.scope.borrow().as_ref() {
            Some(s) => {
                s.cancel();
                0
            }
            None => error::set_error(error::TRIO_ECLOSED, "the nursery is closed"),
        }
    }
}

/// The coroutine of a C task.
type Co = Coroutine<Resumed, Ask, i32, TaskStack>;

/// The state a task's coroutine and its pumps share.
pub(crate) struct Core {
    /// `None` once finished and its stack went back to the pool.
    co: RefCell<Option<Co>>,
    /// The coroutine's yielder, once it started.
    yielder: Cell<*const Yielder<Resumed, Ask>>,
    /// While the coroutine runs: the waker of the pump's poll that resumed
    /// it, for the operations it polls ([`block_on`]).
    waker: Cell<*const std::task::Waker>,
    /// The C function's return value, once it returned.
    finished: Cell<Option<i32>>,
    /// Per open layer, outermost first: its id and whether a C call in it
    /// was cancelled.
    layers: RefCell<Vec<(usize, Rc<Cell<bool>>)>>,
    /// Set for a task started by `trio_nursery_start` until it calls
    /// `trio_task_started`.
    status: RefCell<Option<trio::TaskStatus<usize>>>,
    /// The detail of the task's own last failure, if its function returned
    /// that failure's code (see `error::own_detail`).
    failure: RefCell<Option<String>>,
    id: usize,
    /// The coroutine's stack: lowest address and size (for ASan).
    stack_bottom: usize,
    stack_size: usize,
    /// Its guard region and size, for the stack-overflow handler.
    running: stack::Running,
}

thread_local! {
    /// The task whose coroutine runs now (null outside C tasks).
    static CURRENT_CORE: Cell<*const Core> = const { Cell::new(std::ptr::null()) };
}

static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// A fresh id for a task or a layer.
pub(crate) fn next_id() -> usize {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Core {
    /// Resumes the coroutine with `r` and returns what it asks next, or
    /// `None` if its function returned. The operations it polls meanwhile
    /// register `waker`.
    fn resume(&self, r: Resumed, waker: &std::task::Waker) -> Option<Ask> {
        let prev_waker = self.waker.replace(waker);
        let prev = CURRENT.with(|c| c.replace(self.yielder.get()));
        let prev_core = CURRENT_CORE.with(|c| c.replace(self));
        let result = match self.co.borrow_mut().as_mut() {
            Some(co) => {
                let prev_running = stack::enter(self.running);
                let fake = asan::before_resume(self.stack_bottom, self.stack_size);
                let r = co.resume(r);
                asan::after_resume(fake);
                stack::leave(prev_running);
                r
            }
            None => CoroutineResult::Return(self.finished.get().unwrap_or(0)),
        };
        if self.yielder.get().is_null() {
            // The first resume: the coroutine stored its yielder on start.
            self.yielder.set(CURRENT.with(Cell::get));
        }
        CURRENT.with(|c| c.set(prev));
        CURRENT_CORE.with(|c| c.set(prev_core));
        self.waker.set(prev_waker);
        match result {
            CoroutineResult::Yield(ask) => Some(ask),
            CoroutineResult::Return(code) => {
                self.finished.set(Some(code));
                if code < 0 {
                    *self.failure.borrow_mut() = error::own_detail(code, self.id);
                }
                // The stack goes back to the pool.
                if let Some(co) = self.co.borrow_mut().take() {
                    stack::give_back(co.into_stack());
                }
                None
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(co) = self.co.get_mut()
            && co.started()
            && !co.done()
        {
            // Dropped while suspended (the run is being torn down): C frames
            // must not be unwound (undefined behaviour through C), so the
            // stack is reset without running them; what they and the
            // operation they waited on held is leaked, not freed.
            // SAFETY: nothing on the coroutine's stack is used again.
            unsafe { co.force_reset() };
        }
    }
}

/// The C task running now, if any.
fn with_current<R>(f: impl FnOnce(&Core) -> R) -> std::result::Result<R, i32> {
    let core = CURRENT_CORE.with(Cell::get);
    if core.is_null() {
        return Err(error::set_error(error::TRIO_ENORUN, "not called from a C task inside trio_run"));
    }
    // SAFETY: set only while `resume` runs, with the `Core` borrowed by it.
    Ok(f(unsafe { &*core }))
}

/// The id of the C task running now, 0 outside C tasks (records nothing).
pub(crate) fn running_task_id() -> usize {
    let core = CURRENT_CORE.with(Cell::get);
    // SAFETY: as in `with_current`.
    if core.is_null() { 0 } else { unsafe { (*core).id } }
}

/// The id of the C task running now.
pub(crate) fn current_task() -> std::result::Result<usize, i32> {
    with_current(|c| c.id)
}

/// The id of the calling task's innermost open layer (0 if none).
pub(crate) fn innermost_layer() -> std::result::Result<usize, i32> {
    with_current(|c| c.layers.borrow().last().map_or(0, |l| l.0))
}

/// A C task as a future: resolves when its function has returned and its
/// open layers have closed.
pub(crate) struct CTask {
    pump: Pump,
}

impl CTask {
    /// A task that will run `func(arg)`. `Err(code)` if `func` is NULL or no
    /// stack could be made.
    pub(crate) fn new(func: TrioTaskFn, arg: *mut c_void) -> std::result::Result<CTask, i32> {
        let Some(func) = func else {
            return Err(error::set_error(error::TRIO_EINVAL, "the task function is NULL"));
        };
        let stack = stack::take()?;
        let arg = arg as usize;
        let stack_bottom = stack.limit().get();
        let stack_size = stack.base().get() - stack_bottom;
        let (guard_start, guard_end) = stack.guard_range();
        let id = next_id();
        let running = stack::Running {
            guard_start,
            guard_end,
            top: stack.base().get(),
            size: stack.usable(),
            id,
            func: func as usize,
        };
        let co = Coroutine::with_stack(stack, move |y: &Yielder<Resumed, Ask>, _first: Resumed| {
            asan::entered(std::ptr::null_mut());
            CURRENT.with(|c| c.set(y));
            // SAFETY: the C function with the argument the C caller gave.
            // It is C, and every Rust function it calls catches its panics,
            // so nothing unwinds out of it.
            let code = unsafe { func(arg as *mut c_void) };
            asan::before_suspend(true);
            code
        });
        let core = Rc::new(Core {
            co: RefCell::new(Some(co)),
            yielder: Cell::new(std::ptr::null()),
            waker: Cell::new(std::ptr::null()),
            finished: Cell::new(None),
            failure: RefCell::new(None),
            layers: RefCell::new(Vec::new()),
            status: RefCell::new(None),
            id,
            stack_bottom,
            stack_size,
            running,
        });
        let pump = Pump::new(core, PumpState::Resume(Resumed::Opened));
        // The task's own level counts as its outermost layer (id 0).
        pump.core.layers.borrow_mut().push((0, pump.saw_cancel.clone()));
        Ok(CTask { pump })
    }
}

impl CTask {
    /// Gives the task the status it reports `trio_task_started` to.
    pub(crate) fn set_status(&self, status: trio::TaskStatus<usize>) {
        *self.pump.core.status.borrow_mut() = Some(status);
    }
}

/// Reports that the calling C task has started, with `value` (see
/// `trio_task_started`).
pub(crate) fn started(value: usize) -> std::result::Result<(), i32> {
    let status = with_current(|c| c.status.borrow_mut().take())?;
    match status {
        Some(s) => {
            s.started(value);
            Ok(())
        }
        None => Err(error::set_error(
            error::TRIO_EMISUSE,
            "the calling task was not started by trio_nursery_start, or it already called trio_task_started",
        )),
    }
}

impl Future for CTask {
    /// The C function's return value (0 or more), or its error.
    type Output = Result<i32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<i32>> {
        match Pin::new(&mut self.pump).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                let code = self.pump.core.finished.get().unwrap_or(0);
                let failure = self.pump.core.failure.take();
                Poll::Ready(r.and_then(|()| task_result(code, failure)))
            }
        }
    }
}

enum PumpState {
    /// Resume the coroutine with this.
    Resume(Resumed),
    /// Polling a layer the coroutine opened.
    Child(Pin<Box<dyn Future<Output = Result<()>>>>),
    /// Finished.
    Done,
}

/// Drives a task's coroutine for one layer (see the module docs).
struct Pump {
    core: Rc<Core>,
    state: PumpState,
    /// A C call in this layer was cancelled: the layer ends with
    /// `Err(Cancelled)`.
    saw_cancel: Rc<Cell<bool>>,
}

impl Pump {
    fn new(core: Rc<Core>, state: PumpState) -> Pump {
        Pump { core, state, saw_cancel: Rc::new(Cell::new(false)) }
    }

    /// The layer's result: `Err(Cancelled)` if a C call in it was cancelled.
    fn finish(&mut self) -> Result<()> {
        self.state = PumpState::Done;
        if self.saw_cancel.get() { Err(Error::cancelled()) } else { Ok(()) }
    }
}

impl Future for Pump {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        loop {
            let ask = match std::mem::replace(&mut this.state, PumpState::Done) {
                PumpState::Done => {
                    return Poll::Ready(Err(Error::Runtime("a C task's pump was polled after it finished")));
                }
                PumpState::Resume(r) => this.core.resume(r, cx.waker()),
                PumpState::Child(mut layer) => match layer.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = PumpState::Child(layer);
                        return Poll::Pending;
                    }
                    Poll::Ready(r) => {
                        this.core.layers.borrow_mut().pop();
                        if matches!(r, Err(Error::Cancelled(_))) {
                            this.saw_cancel.set(true);
                        }
                        if this.core.finished.get().is_some() {
                            // The function returned with layers open: they
                            // close one by one, this one too.
                            return Poll::Ready(this.finish());
                        }
                        this.core.resume(Resumed::Closed(r), cx.waker())
                    }
                },
            };
            match ask {
                None | Some(Ask::Close) => return Poll::Ready(this.finish()),
                Some(Ask::Pending) => {
                    this.state = PumpState::Resume(Resumed::Poll);
                    return Poll::Pending;
                }
                Some(Ask::Open(layer, id)) => {
                    let inner = Pump::new(this.core.clone(), PumpState::Resume(Resumed::Opened));
                    this.core.layers.borrow_mut().push((id, inner.saw_cancel.clone()));
                    this.state = PumpState::Child(open_layer(layer, inner));
                }
            }
        }
    }
}

/// The future of a layer: a nursery or a scope around `inner`.
fn open_layer(layer: Layer, inner: Pump) -> Pin<Box<dyn Future<Output = Result<()>>>> {
    match layer {
        Layer::Scope(scope) => Box::pin(async move { scope.run(inner).await.map(|_| ()) }),
        Layer::Nursery(state) => Box::pin(async move {
            let r = trio::open_nursery(async |n| {
                let erased: *const trio::Nursery<'_, '_> = n;
                state.nursery.set(Some(erased.cast()));
                *state.scope.borrow_mut() = Some(n.cancel_scope().clone());
                // Children may still spawn siblings after the body ended,
                // while the nursery waits for them (as in Trio).
                inner.await
            })
            .await;
            state.nursery.set(None);
            r.map(|_| ())
        }),
    }
}

/// Suspends the running coroutine with `ask` (telling ASan about both
/// switches).
///
/// # Safety
/// `y` is the running coroutine's yielder.
unsafe fn suspend(y: *const Yielder<Resumed, Ask>, ask: Ask) -> Resumed {
    let fake = asan::before_suspend(false);
    // SAFETY: the caller's promise.
    let r = unsafe { (*y).suspend(ask) };
    asan::entered(fake);
    r
}

/// Runs `fut` to completion from inside a C task: polls it here, on the
/// coroutine's stack, with the waker of the pump that resumed the
/// coroutine, and suspends the coroutine while it is pending (see the
/// module docs). `Err(TRIO_ENORUN)` outside a C task.
pub(crate) fn block_on<F: Future>(fut: F) -> std::result::Result<F::Output, i32> {
    let y = CURRENT.with(Cell::get);
    let core = CURRENT_CORE.with(Cell::get);
    if y.is_null() || core.is_null() {
        return Err(error::set_error(error::TRIO_ENORUN, "not called from a C task inside trio_run"));
    }
    let mut fut = std::pin::pin!(fut);
    loop {
        // SAFETY: `core` is the running task's (set by `resume`, which is
        // on the host's stack below this frame while this code runs), and
        // its waker is the one `resume` was given, alive for that call.
        let waker = unsafe { (*core).waker.get() };
        if waker.is_null() {
            return Err(error::set_error(error::TRIO_EPANIC, "a C task runs outside its pump"));
        }
        // SAFETY: as above.
        let mut cx = Context::from_waker(unsafe { &*waker });
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        // SAFETY: `y` is the running coroutine's yielder (set on every
        // resume). The future stays pinned in this frame, which does not
        // move while suspended; a task dropped while suspended never runs
        // this frame again (its stack is reset, see `Core`'s drop).
        match unsafe { suspend(y, Ask::Pending) } {
            Resumed::Poll => {}
            _ => return Err(error::set_error(error::TRIO_EPANIC, "a C task was resumed out of order")),
        }
    }
}

/// Opens `layer` (id `id`) around the rest of the calling C task's code.
pub(crate) fn open(layer: Layer, id: usize) -> std::result::Result<(), i32> {
    let y = CURRENT.with(Cell::get);
    if y.is_null() {
        return Err(error::set_error(error::TRIO_ENORUN, "not called from a C task inside trio_run"));
    }
    // SAFETY: as in `block_on`.
    match unsafe { suspend(y, Ask::Open(layer, id)) } {
        Resumed::Opened => Ok(()),
        _ => Err(error::set_error(error::TRIO_EPANIC, "a C task was resumed out of order")),
    }
}

/// Closes the calling task's innermost layer and returns its result.
pub(crate) fn close() -> std::result::Result<Result<()>, i32> {
    let y = CURRENT.with(Cell::get);
    if y.is_null() {
        return Err(error::set_error(error::TRIO_ENORUN, "not called from a C task inside trio_run"));
    }
    // SAFETY: as in `block_on`.
    match unsafe { suspend(y, Ask::Close) } {
        Resumed::Closed(r) => Ok(r),
        _ => Err(error::set_error(error::TRIO_EPANIC, "a C task was resumed out of order")),
    }
}

/// Waits for `fut` from inside a C task and maps its error to a status
/// code (recording the detail). A cancellation is also noted in the
/// innermost layer, which then ends with `Cancelled` (see the module docs).
pub(crate) fn wait<T>(fut: impl Future<Output = Result<T>>) -> std::result::Result<T, i32> {
    block_on(fut)?.map_err(|e| note_error(&e))
}

/// The status code of `e`, with its detail recorded; a cancellation is
/// also noted in the calling task's innermost layer.
pub(crate) fn note_error(e: &Error) -> i32 {
    if matches!(e, Error::Cancelled(_)) {
        let _ = with_current(|c| {
            if let Some(l) = c.layers.borrow().last() {
                l.1.set(true);
            }
        });
    }
    match task_code(e) {
        // The C task's own code, passed on as it is.
        Some(code) => error::set_error(code, e),
        None => error::from_error(e),
    }
}

/// A C task's return value as a result: 0 or more is success,
/// `TRIO_ECANCELED` a cancellation (caught by the scope that caused it),
/// anything else an error naming the code (with `failure`, the detail of
/// the task's own failure with that code, if it had one).
fn task_result(code: i32, failure: Option<String>) -> Result<i32> {
    match code {
        0.. => Ok(code),
        error::TRIO_ECANCELED => Err(Error::cancelled()),
        _ => Err(Error::User(Box::new(TaskFailed(code, failure)))),
    }
}

/// A C task returned this negative value (its own code, or one of ours),
/// with the detail of that failure if the task had one: the detail of its
/// last failed libtrio call with that code, or what it gave
/// `trio_set_last_error`. So the detail of a group lists every child's
/// message.
#[derive(Debug)]
pub(crate) struct TaskFailed(pub(crate) i32, pub(crate) Option<String>);

impl std::fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a C task returned {}", self.0)?;
        match (&self.1, error::code_name(self.0)) {
            (Some(d), Some(name)) => write!(f, " ({name}: {d})"),
            (Some(d), None) => write!(f, " ({d})"),
            (None, Some(name)) => write!(f, " ({name})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for TaskFailed {}

/// The code a C task failed with, if `e` is exactly that.
fn task_code(e: &Error) -> Option<i32> {
    match e {
        Error::User(b) => b.downcast_ref::<TaskFailed>().map(|t| t.0),
        _ => None,
    }
}
