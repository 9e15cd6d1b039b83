//! The stacks of C tasks: sizes, the guard region below each stack, the
//! budget of memory mappings they may hold, and the stack-overflow handler.
//!
//! A stack is one anonymous mapping: `guard` bytes of `PROT_NONE` at the
//! bottom (address space only: no memory, no commit charge) and `size`
//! bytes of read-write stack above it, so two kernel mappings (VMAs). The
//! guard is 1 MiB by default, so that a frame with a large local array
//! (which moves the stack pointer past the whole guard at once when the
//! C code was built without `-fstack-clash-protection`) faults in the
//! guard instead of writing into whatever lies below it, such as another
//! task's stack.
//!
//! The mappings held by stacks are counted: spawning refuses with
//! `TRIO_ENOMEM` once they would leave fewer than a reserve of
//! `vm.max_map_count` to the rest of the program (malloc, threads, ...),
//! which otherwise aborts when the kernel refuses it a mapping.
//!
//! On Unix, while a run is on a thread, a `SIGSEGV`/`SIGBUS` handler on an
//! alternate signal stack tells a fault in the running C task's guard
//! region (a stack overflow) from any other: it writes one line naming the
//! task and its stack size and aborts; other faults go to the handler that
//! was there before (or the default action).

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error;

/// The default size of a C task's stack.
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// The smallest stack `trio_set_stack_size` accepts.
pub(crate) const MIN_STACK_SIZE: usize = 16 * 1024;
/// The largest stack (and guard region) accepted: 1 GiB (64 MiB on 32-bit
/// systems, whose address space is small).
pub(crate) const MAX_STACK_SIZE: usize = if cfg!(target_pointer_width = "64") { 1 << 30 } else { 64 << 20 };
/// The default guard region below each stack: 1 MiB (64 KiB on 32-bit
/// systems).
pub(crate) const DEFAULT_GUARD_SIZE: usize = if cfg!(target_pointer_width = "64") { 1 << 20 } else { 64 << 10 };
/// The smallest guard region accepted (one page).
pub(crate) const MIN_GUARD_SIZE: usize = 4096;
/// The largest guard region accepted.
pub(crate) const MAX_GUARD_SIZE: usize = MAX_STACK_SIZE;

/// The kernel mappings (VMAs) one stack takes: its guard and its stack.
const MAPPINGS_PER_STACK: usize = 2;

/// How many stacks a thread's pool keeps for reuse (creating one costs
/// ~9 µs, reusing ~13 ns).
const POOL_MAX: usize = 1024;

thread_local! {
    /// Stack size for new tasks on this thread.
    static STACK_SIZE: Cell<usize> = const { Cell::new(DEFAULT_STACK_SIZE) };
    /// Guard region size for new tasks on this thread.
    static GUARD_SIZE: Cell<usize> = const { Cell::new(DEFAULT_GUARD_SIZE) };
    /// Finished tasks' stacks, reused.
    static POOL: RefCell<Vec<TaskStack>> = const { RefCell::new(Vec::new()) };
}

/// `Err(TRIO_EINVAL)` (with a detail naming the argument `arg` and the
/// range) unless `min <= value <= max`.
fn check_range(arg: &str, what: &str, value: usize, min: usize, max: usize) -> Result<(), i32> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(error::set_error(
        error::TRIO_EINVAL,
        format_args!(
            "{arg} ({what}) is {value} bytes; it must be between {min} ({}) and {max} ({}) bytes",
            human(min),
            human(max)
        ),
    ))
}

/// `n` bytes in KiB, MiB or GiB, for details.
fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n => format!("{} KiB", n / 1024),
    }
}

/// Sets the stack size of C tasks created from now on, on this thread.
/// `Err(TRIO_EINVAL)` out of range.
pub(crate) fn set_stack_size(size: usize) -> Result<(), i32> {
    check_range("size", "the stack size", size, MIN_STACK_SIZE, MAX_STACK_SIZE)?;
    STACK_SIZE.with(|s| s.set(size));
    POOL.with(|p| p.borrow_mut().clear());
    Ok(())
}

/// Sets the guard region size of C tasks created from now on, on this
/// thread. `Err(TRIO_EINVAL)` out of range.
pub(crate) fn set_guard_size(size: usize) -> Result<(), i32> {
    check_range("size", "the guard region size", size, MIN_GUARD_SIZE, MAX_GUARD_SIZE)?;
    GUARD_SIZE.with(|s| s.set(size));
    POOL.with(|p| p.borrow_mut().clear());
    Ok(())
}

/// A stack for a new task: from this thread's pool, or a new one of this
/// thread's sizes. `Err(TRIO_ENOMEM)` (detail recorded) if none can be made.
pub(crate) fn take() -> Result<TaskStack, i32> {
    if let Some(s) = POOL.with(|p| p.borrow_mut().pop()) {
        return Ok(s);
    }
    TaskStack::new(STACK_SIZE.with(Cell::get), GUARD_SIZE.with(Cell::get))
}

/// Gives a finished task's stack back to this thread's pool.
pub(crate) fn give_back(stack: TaskStack) {
    // During thread teardown the pool may be gone: the stack is then freed.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(stack);
        }
    });
}

// ---------------------------------------------------------------------------
// The mapping budget.

/// Mappings held by all stacks of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// The process's mapping limit as libtrio assumes it: `vm.max_map_count`
/// (read once; 65530, Linux's default, where it cannot be read), lowered
/// by the environment variable `TRIO_MAX_MAP_COUNT` if set (for tests).
fn map_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let sys = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(65530);
        let env = std::env::var("TRIO_MAX_MAP_COUNT").ok().and_then(|s| s.trim().parse::<usize>().ok());
        env.map_or(sys, |e| e.min(sys))
    })
}

/// The mappings left to the rest of the program: a tenth of the limit, at
/// least 1000, at most half.
fn reserve(limit: usize) -> usize {
    (limit / 10).max(1000).min(limit / 2)
}

/// Counts one more stack's mappings, or refuses with `TRIO_ENOMEM`.
fn acquire_mappings() -> Result<(), i32> {
    let limit = map_limit();
    let budget = limit - reserve(limit);
    let mut held = HELD.load(Ordering::Relaxed);
    loop {
        let next = held.saturating_add(MAPPINGS_PER_STACK);
        if next > budget {
            return Err(error::set_error(
                error::TRIO_ENOMEM,
                format_args!(
                    "cannot make a task stack: task stacks hold {held} memory mappings ({MAPPINGS_PER_STACK} each) and \
                     the process may have {limit} (vm.max_map_count); the last {} are kept for malloc and the rest of \
                     the program",
                    reserve(limit)
                ),
            ));
        }
        match HELD.compare_exchange_weak(held, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(h) => held = h,
        }
    }
}

fn release_mappings() {
    HELD.fetch_sub(MAPPINGS_PER_STACK, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------
// The stack.

/// The page size.
#[cfg(unix)]
fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
    })
}

/// `n` rounded up to a multiple of `page` (a power of two); `None` on
/// overflow.
#[cfg(unix)]
fn round_up(n: usize, page: usize) -> Option<usize> {
    Some(n.checked_add(page - 1)? & !(page - 1))
}

/// A C task's stack: `guard` bytes of `PROT_NONE` at the bottom, `size`
/// bytes of read-write stack above.
#[cfg(unix)]
pub(crate) struct TaskStack {
    /// The lowest address of the mapping (the guard's bottom).
    low: usize,
    /// The whole mapping's length.
    len: usize,
    /// The guard region's length (page multiple).
    guard: usize,
    valgrind: std::mem::ManuallyDrop<corosensei::stack::valgrind::ValgrindStackRegistration>,
}

#[cfg(unix)]
impl TaskStack {
    /// A new stack of at least `size` usable bytes over a guard region of at
    /// least `guard` bytes. `Err(TRIO_ENOMEM)` (detail recorded) if the
    /// mapping budget is spent or the kernel refuses.
    pub(crate) fn new(size: usize, guard: usize) -> Result<TaskStack, i32> {
        let page = page_size();
        let sizes = round_up(size.max(MIN_STACK_SIZE), page)
            .zip(round_up(guard.max(page), page))
            .and_then(|(s, g)| Some((s, g, s.checked_add(g)?)));
        let Some((size, guard, len)) = sizes else {
            return Err(error::set_error(
                error::TRIO_ENOMEM,
                format_args!("cannot make a task stack of {size} bytes with a {guard}-byte guard: too large"),
            ));
        };
        acquire_mappings()?;
        let fail = |what: &str| {
            let e = std::io::Error::last_os_error();
            release_mappings();
            error::set_error(
                error::TRIO_ENOMEM,
                format_args!("cannot make a task stack of {size} bytes with a {guard}-byte guard ({what}: {e})"),
            )
        };
        // SAFETY: a fresh private anonymous mapping; only its own pages are
        // reprotected.
        unsafe {
            let mem = libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANON, -1, 0);
            if mem == libc::MAP_FAILED {
                return Err(fail("mmap"));
            }
            if libc::mprotect(mem.cast::<u8>().add(guard).cast(), size, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                let err = fail("mprotect");
                libc::munmap(mem, len);
                return Err(err);
            }
            let valgrind = std::mem::ManuallyDrop::new(corosensei::stack::valgrind::ValgrindStackRegistration::new(
                mem.cast(),
                len,
            ));
            Ok(TaskStack { low: mem as usize, len, guard, valgrind })
        }
    }

    /// The guard region: `[start, end)`.
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.low, self.low + self.guard)
    }

    /// The usable stack's size.
    pub(crate) fn usable(&self) -> usize {
        self.len - self.guard
    }
}

#[cfg(unix)]
impl Drop for TaskStack {
    fn drop(&mut self) {
        // SAFETY: the registration is dropped once, here; the mapping is
        // ours and no coroutine runs on it any more.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.valgrind);
            libc::munmap(self.low as *mut libc::c_void, self.len);
        }
        release_mappings();
    }
}

// SAFETY: `base` is the mapping's top (page aligned), `limit` its bottom,
// guard included; the usable part is at least `MIN_STACK_SIZE`.
#[cfg(unix)]
unsafe impl corosensei::stack::Stack for TaskStack {
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.low + self.len).expect("a mapping is not at address 0")
    }

    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.low).expect("a mapping is not at address 0")
    }
}

/// Elsewhere (Windows): corosensei's stack, whose guard is the system's.
#[cfg(not(unix))]
pub(crate) struct TaskStack(corosensei::stack::DefaultStack);

#[cfg(not(unix))]
impl TaskStack {
    pub(crate) fn new(size: usize, _guard: usize) -> Result<TaskStack, i32> {
        acquire_mappings()?;
        corosensei::stack::DefaultStack::new(size).map(TaskStack).map_err(|e| {
            release_mappings();
            error::set_error(error::TRIO_ENOMEM, format_args!("cannot make a task stack: {e}"))
        })
    }

    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (0, 0)
    }

    pub(crate) fn usable(&self) -> usize {
        use corosensei::stack::Stack;
        self.0.base().get() - self.0.limit().get()
    }
}

#[cfg(not(unix))]
impl Drop for TaskStack {
    fn drop(&mut self) {
        release_mappings();
    }
}

// SAFETY: forwards to the stack it wraps.
#[cfg(not(unix))]
unsafe impl corosensei::stack::Stack for TaskStack {
    fn base(&self) -> corosensei::stack::StackPointer {
        self.0.base()
    }

    fn limit(&self) -> corosensei::stack::StackPointer {
        self.0.limit()
    }

    fn teb_fields(&self) -> corosensei::stack::StackTebFields {
        self.0.teb_fields()
    }

    fn update_teb_fields(&mut self, stack_limit: usize, guaranteed_stack_bytes: usize) {
        self.0.update_teb_fields(stack_limit, guaranteed_stack_bytes)
    }
}

// ---------------------------------------------------------------------------
// The overflow handler.

/// What the fault handler knows of the C task running on this thread.
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) struct Running {
    /// Its guard region, `[guard_start, guard_end)`; empty when no C task
    /// runs.
    pub(crate) guard_start: usize,
    pub(crate) guard_end: usize,
    /// Its usable stack size.
    pub(crate) size: usize,
    /// Its id and its function's address.
    pub(crate) id: usize,
    pub(crate) func: usize,
}

thread_local! {
    /// The C task running on this thread (read by the fault handler).
    static RUNNING: Cell<Running> = const {
        Cell::new(Running { guard_start: 0, guard_end: 0, size: 0, id: 0, func: 0 })
    };
}

/// Notes that the C task `r` runs on this thread from now on; returns what
/// ran before, for [`leave`].
pub(crate) fn enter(r: Running) -> Running {
    RUNNING.with(|c| c.replace(r))
}

/// Notes that `prev` (from [`enter`]) runs again.
pub(crate) fn leave(prev: Running) {
    RUNNING.with(|c| c.set(prev));
}

/// Makes the calling thread ready to run C tasks: installs the process's
/// fault handler (once) and, if the thread has none, an alternate signal
/// stack (removed again when the returned value is dropped).
pub(crate) fn prepare_thread() -> AltStack {
    #[cfg(unix)]
    {
        handler::install();
        handler::alt_stack()
    }
    #[cfg(not(unix))]
    AltStack
}

/// The alternate signal stack this thread got from [`prepare_thread`].
#[cfg(not(unix))]
pub(crate) struct AltStack;

#[cfg(unix)]
pub(crate) use handler::AltStack;

#[cfg(unix)]
mod handler {
    use std::ffi::{c_int, c_void};
    use std::sync::OnceLock;

    use super::{HELD, RUNNING, Running};

    /// The handlers that were there before ours (for `SIGSEGV`, `SIGBUS`).
    static PREV: [OnceLock<libc::sigaction>; 2] = [OnceLock::new(), OnceLock::new()];
    const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

    /// The size of the alternate signal stack (plus a guard page).
    const ALT_SIZE: usize = 64 * 1024;

    /// Installs the handler for `SIGSEGV` and `SIGBUS`, once per process.
    pub(super) fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            for (i, &sig) in SIGNALS.iter().enumerate() {
                // SAFETY: a zeroed sigaction is valid; the handler has the
                // SA_SIGINFO signature.
                unsafe {
                    let mut new: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction = on_fault as *const () as libc::sighandler_t;
                    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                    libc::sigemptyset(&mut new.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, &new, &mut old) == 0 {
                        let _ = PREV[i].set(old);
                    }
                }
            }
        });
    }

    /// An alternate signal stack this thread got, removed on drop.
    pub(crate) struct AltStack {
        /// The mapping (guard page included), or null if the thread
        /// already had an alternate stack.
        mem: *mut c_void,
        len: usize,
    }

    /// Gives the calling thread an alternate signal stack unless it has one.
    pub(super) fn alt_stack() -> AltStack {
        let none = AltStack { mem: std::ptr::null_mut(), len: 0 };
        let page = super::page_size();
        let len = ALT_SIZE + page;
        // SAFETY: querying and setting this thread's alternate stack with a
        // fresh mapping of ours.
        unsafe {
            let mut old: libc::stack_t = std::mem::zeroed();
            if libc::sigaltstack(std::ptr::null(), &mut old) != 0 || old.ss_flags & libc::SS_DISABLE == 0 {
                return none;
            }
            let mem = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON,
                -1,
                0,
            );
            if mem == libc::MAP_FAILED {
                return none;
            }
            // Its lowest page is a guard.
            libc::mprotect(mem, page, libc::PROT_NONE);
            let new = libc::stack_t { ss_sp: mem.cast::<u8>().add(page).cast(), ss_flags: 0, ss_size: ALT_SIZE };
            if libc::sigaltstack(&new, std::ptr::null_mut()) != 0 {
                libc::munmap(mem, len);
                return none;
            }
            AltStack { mem, len }
        }
    }

    impl Drop for AltStack {
        fn drop(&mut self) {
            if self.mem.is_null() {
                return;
            }
            // SAFETY: removes our alternate stack (only if it is still the
            // thread's) and unmaps it; no handler runs on it now.
            unsafe {
                let mut cur: libc::stack_t = std::mem::zeroed();
                if libc::sigaltstack(std::ptr::null(), &mut cur) == 0
                    && cur.ss_flags & libc::SS_DISABLE == 0
                    && cur.ss_sp as usize == self.mem as usize + super::page_size()
                {
                    let off = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
                    libc::sigaltstack(&off, std::ptr::null_mut());
                    libc::munmap(self.mem, self.len);
                }
                // Still in use by someone else's setup: left mapped.
            }
        }
    }

    /// A line in a fixed buffer (no allocation: this runs in a signal
    /// handler).
    struct Line {
        buf: [u8; 320],
        len: usize,
    }

    impl Line {
        fn byte(&mut self, b: u8) {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }

        fn text(&mut self, s: &str) {
            for &b in s.as_bytes() {
                self.byte(b);
            }
        }

        fn num(&mut self, mut n: usize) {
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for &d in &digits[i..] {
                self.byte(d);
            }
        }

        fn hex(&mut self, n: usize) {
            self.text("0x");
            let mut started = false;
            for shift in (0..usize::BITS).step_by(4).rev() {
                let d = (n >> shift) & 0xf;
                if d != 0 || started || shift == 0 {
                    started = true;
                    self.byte(b"0123456789abcdef"[d]);
                }
            }
        }
    }

    /// The fault handler: a fault in the running C task's guard region is
    /// its stack overflowing (one line on stderr, then abort); any other
    /// goes to the previous handler.
    extern "C" fn on_fault(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        // The thread-local is read only if libtrio made stacks at all (it is
        // then allocated for any thread that ran a C task).
        let running =
            if HELD.load(std::sync::atomic::Ordering::Relaxed) > 0 { RUNNING.try_with(|c| c.get()).ok() } else { None };
        if let Some(r) = running.filter(|r: &Running| (r.guard_start..r.guard_end).contains(&addr)) {
            let mut line = Line { buf: [0; 320], len: 0 };
            line.text("trio: stack overflow in C task ");
            line.num(r.id);
            line.text(" (function ");
            line.hex(r.func);
            line.text("): its stack is ");
            line.num(r.size);
            line.text(" bytes (trio_set_stack_size), the fault at ");
            line.hex(addr);
            line.text(" is in the ");
            line.num(r.guard_end - r.guard_start);
            line.text("-byte guard region below it; aborting\n");
            // SAFETY: write(2) and abort(3) are async-signal-safe.
            unsafe {
                libc::write(2, line.buf.as_ptr().cast(), line.len);
                libc::abort();
            }
        }
        chain(sig, info, ctx);
    }

    /// Passes a fault that is not ours to the handler that was there before.
    fn chain(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let i = if sig == libc::SIGSEGV { 0 } else { 1 };
        // SAFETY: calls the previous handler as it was installed, or puts
        // the previous disposition back; all async-signal-safe.
        unsafe {
            let old = match PREV[i].get() {
                Some(old) => *old,
                None => {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    dfl
                }
            };
            let handler = old.sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = std::mem::transmute(handler);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(c_int) = std::mem::transmute(handler);
                    f(sig);
                }
                return;
            }
            // The default action (or ignoring): put it back. A fault happens
            // again when the instruction is retried, now with that action; a
            // signal sent with kill(2) is sent again.
            libc::sigaction(sig, &old, std::ptr::null_mut());
            if handler == libc::SIG_DFL && (*info).si_code <= 0 {
                libc::raise(sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_size_can_overflow_the_arithmetic() {
        // Bypassing the bounds of the C API: still an error, never a panic.
        for (size, guard) in [(usize::MAX, 4096), (4096, usize::MAX), (usize::MAX / 2 + 1, usize::MAX / 2 + 1)] {
            assert_eq!(TaskStack::new(size, guard).err(), Some(error::TRIO_ENOMEM));
        }
        assert_eq!(set_stack_size(usize::MAX), Err(error::TRIO_EINVAL));
        assert_eq!(set_guard_size(usize::MAX), Err(error::TRIO_EINVAL));
        assert_eq!(set_stack_size(MIN_STACK_SIZE - 1), Err(error::TRIO_EINVAL));
        assert_eq!(set_guard_size(MIN_GUARD_SIZE - 1), Err(error::TRIO_EINVAL));
    }

    #[test]
    fn a_stack_has_its_guard_below() {
        let s = TaskStack::new(MIN_STACK_SIZE, DEFAULT_GUARD_SIZE).expect("a stack");
        let (g0, g1) = s.guard_range();
        if cfg!(unix) {
            assert_eq!(g1 - g0, DEFAULT_GUARD_SIZE);
            assert_eq!(s.usable(), MIN_STACK_SIZE);
            use corosensei::stack::Stack;
            assert_eq!(s.limit().get(), g0);
            assert_eq!(s.base().get(), g1 + MIN_STACK_SIZE);
        }
        drop(s);
    }

    #[test]
    fn the_reserve_is_a_tenth_at_least_1000_at_most_half() {
        assert_eq!(reserve(65530), 6553);
        assert_eq!(reserve(3000), 1000);
        assert_eq!(reserve(1000), 500);
    }
}
