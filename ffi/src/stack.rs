//! The stacks of C tasks: sizes, the guard region below each stack, the
//! budget of memory mappings they may hold, and the stack-overflow handler.
//!
//! On Unix a stack is one anonymous mapping: `guard` bytes of `PROT_NONE`
//! at the bottom (address space only: no memory, no commit charge) and
//! `size` bytes of read-write stack above it, so two kernel mappings
//! (VMAs). The guard is 1 MiB by default, so that a frame with a large
//! local array (which moves the stack pointer past the whole guard at once
//! when the C code was built without `-fstack-clash-protection`) faults in
//! the guard instead of writing into whatever lies below it, such as
//! another task's stack.
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
//!
//! On Windows a stack is one `VirtualAlloc` reservation: the guard region
//! (reserved, never committed) at the bottom, then the stack laid out as
//! Windows lays out a thread's (hard guard page, guarantee, `PAGE_GUARD`
//! pages, committed top; see [`TaskStack`]), so it grows as a thread's
//! stack does and its end raises `EXCEPTION_STACK_OVERFLOW` with the
//! guarantee left to the handlers. A vectored exception handler tells an
//! overflow of the running C task's stack (or an access violation in its
//! guard region) from any other exception: it writes the same line and
//! ends the process with `STATUS_STACK_OVERFLOW` (0xC00000FD); other
//! exceptions go on to the other handlers. The compilers for Windows probe
//! every frame larger than a page, so large frames reach the guard pages;
//! the guard region keeps frames built without probes from writing below
//! the stack (the process then dies without the line: no handler can run
//! on a stack pointer in uncommitted memory).

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

/// The bytes of stack a stack overflow leaves to the exception handlers on
/// Windows (each task stack's `TEB.GuaranteedStackBytes`; more if the
/// thread's `SetThreadStackGuarantee` asks more): room for the exception
/// dispatch and libtrio's handler, which writes the overflow line.
#[cfg(windows)]
const GUARANTEE: usize = 16 * 1024;

/// The page size.
#[cfg(windows)]
fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
        // SAFETY: GetSystemInfo fills the struct it is given.
        let info = unsafe {
            let mut info: SYSTEM_INFO = std::mem::zeroed();
            GetSystemInfo(&mut info);
            info
        };
        usize::try_from(info.dwPageSize).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
    })
}

/// A C task's stack on Windows: one `VirtualAlloc` reservation, laid out
/// (low to high) as
///
/// - `guard` bytes of guard region: reserved, never committed (no memory,
///   no commit charge; any access faults);
/// - one reserved page, Windows' "hard guard page" (`TEB.DeallocationStack`
///   points at it);
/// - the guarantee ([`GUARANTEE`]) and two pages: committed as
///   `PAGE_GUARD` when the stack is new;
/// - `size` bytes of stack, of which the top page is committed.
///
/// The stack grows as Windows grows a thread's stack: touching the
/// `PAGE_GUARD` page below the committed part commits it and moves the
/// guard page down (the TEB fields are the task's while it runs; corosensei
/// switches them). When the stack has grown down to the guarantee, the
/// system raises `EXCEPTION_STACK_OVERFLOW` and commits the guarantee for
/// the handlers: libtrio's writes the line (see [`prepare_thread`]). Frames
/// larger than a page are probed page by page by the compilers
/// (`__chkstk` / `___chkstk_ms`, always on for Windows targets), so a large
/// frame reaches the guard page instead of jumping past it; code built
/// without the probes (`-mno-stack-arg-probe`) that jumps past the guard
/// page lands in reserved memory (the rest of the stack's reservation or
/// the guard region) and faults instead of writing into another task's
/// stack.
#[cfg(windows)]
pub(crate) struct TaskStack {
    /// The reservation's lowest address (the guard region's bottom).
    low: usize,
    /// The whole reservation's length.
    len: usize,
    /// The guard region's length (page multiple).
    guard: usize,
    /// The usable stack's size (page multiple).
    size: usize,
    /// `TEB.StackLimit`: the lowest committed page (not counting the guard
    /// pages) as the stack has grown; corosensei updates it.
    stack_limit: usize,
    /// `TEB.GuaranteedStackBytes`.
    guarantee: usize,
}

#[cfg(windows)]
impl TaskStack {
    /// A new stack of at least `size` usable bytes over a guard region of at
    /// least `guard` bytes. `Err(TRIO_ENOMEM)` (detail recorded) if the
    /// mapping budget is spent or the system refuses.
    pub(crate) fn new(size: usize, guard: usize) -> Result<TaskStack, i32> {
        use windows_sys::Win32::System::Memory::{
            MEM_COMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_GUARD, PAGE_READWRITE, VirtualAlloc, VirtualFree,
        };
        let page = page_size();
        let guarantee = round_up(thread_guarantee().max(GUARANTEE), page).unwrap_or(GUARANTEE);
        // Windows' hard guard page, the guarantee and two guard pages.
        let extra = page + guarantee + 2 * page;
        let sizes = round_up(size.max(MIN_STACK_SIZE), page)
            .zip(round_up(guard.max(page), page))
            .and_then(|(s, g)| Some((s, g, s.checked_add(g)?.checked_add(extra)?)));
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
        // SAFETY: a fresh reservation; only its own pages are committed.
        unsafe {
            // Reserved read-write, as Windows reserves a thread's stack:
            // Wine commits the pages the stack grows into with the
            // reservation's protection (`PAGE_NOACCESS` would make the
            // grown pages fault). Reserved memory is not accessible
            // either way until committed, and the guard region never is.
            let mem = VirtualAlloc(std::ptr::null(), len, MEM_RESERVE, PAGE_READWRITE);
            if mem.is_null() {
                return Err(fail("VirtualAlloc"));
            }
            let top = mem as usize + len;
            let stack_limit = top - page;
            let soft = 2 * page + guarantee;
            if VirtualAlloc(stack_limit as *const _, page, MEM_COMMIT, PAGE_READWRITE).is_null()
                || VirtualAlloc((stack_limit - soft) as *const _, soft, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD)
                    .is_null()
            {
                let err = fail("VirtualAlloc (commit)");
                VirtualFree(mem, 0, MEM_RELEASE);
                return Err(err);
            }
            Ok(TaskStack { low: mem as usize, len, guard, size, stack_limit, guarantee })
        }
    }

    /// The guard region: `[start, end)` (Windows' hard guard page lies just
    /// above it).
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.low, self.low + self.guard)
    }

    /// The usable stack's size.
    pub(crate) fn usable(&self) -> usize {
        self.size
    }
}

/// The calling thread's stack guarantee (`SetThreadStackGuarantee`).
#[cfg(windows)]
fn thread_guarantee() -> usize {
    let mut bytes: u32 = 0;
    // SAFETY: with 0 it only reads the thread's value.
    unsafe { windows_sys::Win32::System::Threading::SetThreadStackGuarantee(&mut bytes) };
    bytes as usize
}

#[cfg(windows)]
impl Drop for TaskStack {
    fn drop(&mut self) {
        use windows_sys::Win32::System::Memory::{MEM_RELEASE, VirtualFree};
        // SAFETY: the reservation is ours and no coroutine runs on it any
        // more.
        unsafe { VirtualFree(self.low as *mut _, 0, MEM_RELEASE) };
        release_mappings();
    }
}

// SAFETY: `base` is the reservation's top (page aligned), `limit` its
// bottom, guard included; the usable part is at least `MIN_STACK_SIZE`. The
// TEB fields describe the stack above the guard region as Windows describes
// a thread's stack.
#[cfg(windows)]
unsafe impl corosensei::stack::Stack for TaskStack {
    fn base(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.low + self.len).expect("a reservation is not at address 0")
    }

    fn limit(&self) -> corosensei::stack::StackPointer {
        corosensei::stack::StackPointer::new(self.low).expect("a reservation is not at address 0")
    }

    fn teb_fields(&self) -> corosensei::stack::StackTebFields {
        corosensei::stack::StackTebFields {
            StackBase: self.low + self.len,
            StackLimit: self.stack_limit,
            DeallocationStack: self.low + self.guard,
            GuaranteedStackBytes: self.guarantee,
        }
    }

    fn update_teb_fields(&mut self, stack_limit: usize, guaranteed_stack_bytes: usize) {
        self.stack_limit = stack_limit;
        self.guarantee = guaranteed_stack_bytes;
    }
}

// ---------------------------------------------------------------------------
// The overflow handler.

/// What the fault handler knows of the C task running on this thread.
#[derive(Clone, Copy, Default)]
pub(crate) struct Running {
    /// Its guard region, `[guard_start, guard_end)`; empty when no C task
    /// runs.
    pub(crate) guard_start: usize,
    pub(crate) guard_end: usize,
    /// The top of its stack (Windows tells an overflow by the stack it
    /// happened on).
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) top: usize,
    /// Its usable stack size.
    pub(crate) size: usize,
    /// Its id and its function's address.
    pub(crate) id: usize,
    pub(crate) func: usize,
}

thread_local! {
    /// The C task running on this thread (read by the fault handler).
    static RUNNING: Cell<Running> = const {
        Cell::new(Running { guard_start: 0, guard_end: 0, top: 0, size: 0, id: 0, func: 0 })
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
///
/// On Windows the handler is a vectored exception handler, added once per
/// process (first in the list) by the first run; there is no alternate
/// stack (the system leaves the stack's guarantee to handlers: see
/// [`TaskStack`]).
pub(crate) fn prepare_thread() -> AltStack {
    #[cfg(unix)]
    {
        handler::install();
        handler::alt_stack()
    }
    #[cfg(windows)]
    {
        win_handler::install();
        AltStack
    }
}

/// Windows has no alternate signal stack: nothing to undo.
#[cfg(windows)]
pub(crate) struct AltStack;

#[cfg(unix)]
pub(crate) use handler::AltStack;

/// A line in a fixed buffer (no allocation: it is written from a signal or
/// exception handler, on what is left of a stack).
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

/// The overflow line up to the fault's place: "trio: stack overflow in C
/// task ID (function 0x...): its stack is N bytes (trio_set_stack_size),
/// the fault at 0x... ".
fn overflow_line(r: &Running, addr: usize) -> Line {
    let mut line = Line { buf: [0; 320], len: 0 };
    line.text("trio: stack overflow in C task ");
    line.num(r.id);
    line.text(" (function ");
    line.hex(r.func);
    line.text("): its stack is ");
    line.num(r.size);
    line.text(" bytes (trio_set_stack_size), the fault at ");
    line.hex(addr);
    line
}

#[cfg(unix)]
mod handler {
    use std::ffi::{c_int, c_void};
    use std::sync::OnceLock;

    use super::{HELD, RUNNING, Running, overflow_line};

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
            let mut line = overflow_line(&r, addr);
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

#[cfg(windows)]
mod win_handler {
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    use windows_sys::Win32::Foundation::{EXCEPTION_ACCESS_VIOLATION, EXCEPTION_STACK_OVERFLOW};
    use windows_sys::Win32::Storage::FileSystem::WriteFile;
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
    use windows_sys::Win32::System::Diagnostics::Debug::{
        AddVectoredExceptionHandler, CONTEXT, EXCEPTION_CONTINUE_SEARCH, EXCEPTION_POINTERS,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};

    use super::{HELD, RUNNING, Running, overflow_line, page_size};

    /// The exit status of a process a C task's stack overflow ends:
    /// `STATUS_STACK_OVERFLOW`, as for any unhandled stack overflow.
    pub(super) const EXIT_STATUS: u32 = 0xC000_00FD;

    /// Adds the handler, once per process, first in the list.
    pub(super) fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // The page size is read now, not in the handler.
            let _ = page_size();
            // SAFETY: the handler has the PVECTORED_EXCEPTION_HANDLER
            // signature and lives as long as the process; it is never
            // removed.
            unsafe { AddVectoredExceptionHandler(1, Some(on_exception)) };
        });
    }

    /// The stack pointer when the exception happened.
    fn stack_pointer(ctx: &CONTEXT) -> usize {
        #[cfg(target_arch = "x86_64")]
        return ctx.Rsp as usize;
        #[cfg(target_arch = "aarch64")]
        return ctx.Sp as usize;
        #[cfg(target_arch = "x86")]
        return ctx.Esp as usize;
    }

    /// The handler: `EXCEPTION_STACK_OVERFLOW` on the running C task's
    /// stack, or an access violation in its guard region (or the hard
    /// guard page above it), is its stack overflowing: one line on stderr,
    /// then the process ends with `STATUS_STACK_OVERFLOW`. Anything else
    /// goes on to the other handlers.
    unsafe extern "system" fn on_exception(info: *mut EXCEPTION_POINTERS) -> i32 {
        // SAFETY: the system passes a valid record and context.
        let (rec, ctx) = unsafe { (&*(*info).ExceptionRecord, &*(*info).ContextRecord) };
        let code = rec.ExceptionCode;
        if (code != EXCEPTION_STACK_OVERFLOW && code != EXCEPTION_ACCESS_VIOLATION) || HELD.load(Ordering::Relaxed) == 0
        {
            return EXCEPTION_CONTINUE_SEARCH;
        }
        let Some(r) = RUNNING.try_with(Cell::get).ok().filter(|r: &Running| r.func != 0) else {
            return EXCEPTION_CONTINUE_SEARCH;
        };
        // The address accessed (both codes carry it).
        let addr = if rec.NumberParameters >= 2 { rec.ExceptionInformation[1] } else { 0 };
        let sp = stack_pointer(ctx);
        let on_its_stack = |a: usize| (r.guard_start..r.top).contains(&a);
        let in_guard = (r.guard_start..r.guard_end + page_size()).contains(&addr);
        let mut line = if code == EXCEPTION_STACK_OVERFLOW && (on_its_stack(addr) || on_its_stack(sp)) {
            let mut line = overflow_line(&r, if on_its_stack(addr) { addr } else { sp });
            line.text(" is at its end, above its ");
            line.num(r.guard_end - r.guard_start);
            line.text("-byte guard region");
            line
        } else if code == EXCEPTION_ACCESS_VIOLATION && in_guard {
            let mut line = overflow_line(&r, addr);
            line.text(" is in the ");
            line.num(r.guard_end - r.guard_start);
            line.text("-byte guard region below it");
            line
        } else {
            return EXCEPTION_CONTINUE_SEARCH;
        };
        line.text("; ending the process with status 0xc00000fd (STATUS_STACK_OVERFLOW)\n");
        // SAFETY: plain calls on the process's own handles; the line is
        // written whole or not at all, and the process ends here.
        unsafe {
            let err = GetStdHandle(STD_ERROR_HANDLE);
            let mut written = 0u32;
            if !err.is_null() {
                WriteFile(err, line.buf.as_ptr(), line.len as u32, &mut written, std::ptr::null_mut());
            }
            TerminateProcess(GetCurrentProcess(), EXIT_STATUS);
        }
        EXCEPTION_CONTINUE_SEARCH
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
        use corosensei::stack::Stack;
        let s = TaskStack::new(MIN_STACK_SIZE, DEFAULT_GUARD_SIZE).expect("a stack");
        let (g0, g1) = s.guard_range();
        assert_eq!(g1 - g0, DEFAULT_GUARD_SIZE);
        assert_eq!(s.usable(), MIN_STACK_SIZE);
        assert_eq!(s.limit().get(), g0);
        #[cfg(unix)]
        assert_eq!(s.base().get(), g1 + MIN_STACK_SIZE);
        #[cfg(windows)]
        {
            use windows_sys::Win32::System::Memory::{MEM_RESERVE, MEMORY_BASIC_INFORMATION, VirtualQuery};
            let page = page_size();
            let teb = s.teb_fields();
            // Windows' hard guard page, the guarantee and two guard pages
            // lie between the guard region and the usable stack.
            assert_eq!(teb.DeallocationStack, g1);
            assert_eq!(teb.StackBase, s.base().get());
            assert!(teb.GuaranteedStackBytes >= GUARANTEE);
            assert_eq!(teb.StackBase - g1 - page - teb.GuaranteedStackBytes - 2 * page, MIN_STACK_SIZE);
            assert_eq!(teb.StackLimit, teb.StackBase - page);
            // The guard region and the hard guard page are reserved, never
            // committed: one reserved region from the bottom.
            // SAFETY: VirtualQuery only writes the struct it is given.
            let info = unsafe {
                let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
                let n = VirtualQuery(g0 as *const _, &mut info, std::mem::size_of::<MEMORY_BASIC_INFORMATION>());
                assert_ne!(n, 0);
                info
            };
            assert_eq!(info.BaseAddress as usize, g0);
            assert_eq!(info.State, MEM_RESERVE);
            assert!(info.RegionSize >= DEFAULT_GUARD_SIZE + page, "{} bytes reserved", info.RegionSize);
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
