//! Fuzzes libtrio's C ABI: the input is a program of C API calls, run by
//! C tasks (C-ABI callbacks written in Rust) inside `trio_run`.
//!
//! Byte 0 holds flags (mock or real clock, a run before the main one whose
//! handles are then used as foreign handles); the rest is the main task's
//! script. A script is a sequence of ops, each an opcode byte and its
//! argument bytes; `spawn` and `start` take the next N bytes as the
//! child's script. Handle arguments are picked from every handle made so
//! far (live or closed, of any kind), or are handles of the wrong kind,
//! random numbers, 0 or handles of an earlier run.
//!
//! Checked (a failure aborts, so libFuzzer reports it):
//! - every return code is in the set the header documents for that call
//!   (`TRIO_EPANIC` never is);
//! - a handle known to be stale, of the wrong kind, random or of another
//!   run gives exactly `TRIO_EBADHANDLE`;
//! - `trio_last_error` and `trio_strerror` give sane strings;
//! - the run ends (everything runs under a deadline; libFuzzer's
//!   `-timeout` catches a hang), every spawned task ran and returned, the
//!   handles made in the run are all stale afterwards, and no file
//!   descriptor is left open;
//! - ASan/LSan: memory errors and leaks.
//!
//! The paths that found the issue-17 bugs (all fixed) are driven by
//! default; `TRIO_FUZZ_OFF=tag,...` turns some off: see `known()`. The
//! inputs that found them are in `artifacts-known/` and in the corpus, so
//! every CI run replays them.

#![no_main]

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use libfuzzer_sys::fuzz_target;
use trio_ffi::api_core::*;
use trio_ffi::api_net::*;
use trio_ffi::api_sync::*;
use trio_ffi::api_thread::*;
use trio_ffi::error::*;
use trio_ffi::handle::trio_handle_t;

// ------------------------------------------------------------ bookkeeping

/// Handle kinds, as encoded in a handle's top 8 bits (ffi/src/handle.rs).
const K_NURSERY: u8 = 1;
const K_SCOPE: u8 = 2;
const K_EVENT: u8 = 3;
const K_LOCK: u8 = 4;
const K_SEM: u8 = 5;
const K_SENDER: u8 = 8;
const K_RECEIVER: u8 = 9;
const K_TCP_STREAM: u8 = 10;
const K_TCP_LISTENER: u8 = 11;
const K_UNIX_STREAM: u8 = 12;
const K_UNIX_LISTENER: u8 = 13;

fn kind_of(h: u64) -> u8 {
    (h >> 56) as u8
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Made and not closed (as far as we know).
    Live,
    /// Closed successfully, or of an earlier run: stale forever.
    Stale,
    /// A close failed in a way that leaves its state open to doubt.
    Unknown,
}

#[derive(Default)]
struct RunState {
    /// Every handle made in this run (and earlier runs' handles), with
    /// what we know of it.
    pool: Vec<(u64, St)>,
    /// Codes C tasks returned (they may come back from nursery_close etc.).
    task_codes: HashSet<c_int>,
    value_counter: usize,
    /// Handles of a run going on on another thread now.
    foreign: Vec<u64>,
    /// Every child's script, alive until the run has ended.
    scripts: Vec<Box<Script>>,
    unix_paths: Vec<std::ffi::CString>,
    unix_seq: usize,
}

thread_local! {
    static RS: RefCell<RunState> = RefCell::new(RunState::default());
    static LOG: Cell<bool> = const { Cell::new(false) };
}

fn log_on() -> bool {
    LOG.with(Cell::get)
}

/// Whether the paths that once found the bugs of issue 17 are driven (sem,
/// stack, send, serve, alias): all of them are fixed, so they are on; a
/// comma-separated list in `TRIO_FUZZ_OFF` turns some off (to bisect).
fn known(tag: &str) -> bool {
    !std::env::var("TRIO_FUZZ_OFF").is_ok_and(|v| v.split(',').any(|t| t == tag))
}

fn add(h: u64) {
    RS.with(|r| {
        let mut r = r.borrow_mut();
        if r.foreign.contains(&h) {
            fail(format!("new handle {h:#x} has the value of a live handle of the run on another thread"));
        }
        r.pool.push((h, St::Live))
    });
}

fn set_state(h: u64, st: St) {
    RS.with(|r| {
        for e in r.borrow_mut().pool.iter_mut() {
            if e.0 == h {
                e.1 = st;
            }
        }
    });
}

fn state_of(h: u64) -> Option<St> {
    RS.with(|r| r.borrow().pool.iter().rev().find(|e| e.0 == h).map(|e| e.1))
}

fn fail(msg: String) -> ! {
    let mut buf = [0 as c_char; 512];
    let n = unsafe { trio_last_error(buf.as_mut_ptr(), buf.len()) };
    let detail = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    eprintln!("FUZZ FINDING: {msg}\n  last error ({n} bytes): {detail}");
    std::process::abort();
}

fn name(c: c_int) -> String {
    let s = unsafe { CStr::from_ptr(trio_strerror(c)) }.to_string_lossy().into_owned();
    format!("{c} ({s})")
}

/// What a handle argument is expected to do with a call taking `kinds`.
fn must_be_bad(h: u64, kinds: &[u8]) -> bool {
    if h == 0 || !kinds.contains(&kind_of(h)) {
        return true;
    }
    match state_of(h) {
        Some(St::Stale) => true,
        Some(_) => false,
        // Not a handle we were given: random, or a kind-swapped one.
        None => true,
    }
}

/// What `pick` knew of the handle it chose: the handle, whether it had to
/// be bad, whether it was in doubt. Taken before the call, since another
/// task may close the handle while the call waits.
type Picked = Option<(u64, bool, bool)>;

fn picked(h: u64, kinds: &[u8]) -> Picked {
    Some((h, must_be_bad(h, kinds), state_of(h) == Some(St::Unknown)))
}

/// Checks `rc` of call `what`: in `ok` (the documented set, successes
/// included), or (if `pos`) any positive count; EBADHANDLE only for a
/// handle argument that may be bad, and always for one that must be.
fn check(what: &str, rc: c_int, ok: &[c_int], pos: bool, handle: Option<(u64, &[u8])>) -> c_int {
    check_p(None, what, rc, ok, pos, handle)
}

/// [`check`] with what `pick` knew of the handle.
fn check_p(pk: Picked, what: &str, rc: c_int, ok: &[c_int], pos: bool, handle: Option<(u64, &[u8])>) -> c_int {
    let bad_before = |h: u64, kinds: &[u8]| match pk {
        Some((ph, bad, _)) if ph == h => bad,
        _ => must_be_bad(h, kinds),
    };
    let unknown_before =
        |h: u64| pk.is_some_and(|(ph, _, unknown)| ph == h && unknown) || state_of(h) == Some(St::Unknown);
    if log_on() {
        eprintln!("  {what} -> {}", name(rc));
    }
    if let Some((h, kinds)) = handle
        && bad_before(h, kinds)
    {
        if rc != TRIO_EBADHANDLE {
            fail(format!("{what}: handle {h:#x} must be TRIO_EBADHANDLE, got {}", name(rc)));
        }
        return rc;
    }
    if ok.contains(&rc) || (pos && rc > 0) {
        if rc < 0 && rc != TRIO_EBADHANDLE {
            check_last_error(what, rc);
        }
        return rc;
    }
    if rc == TRIO_EBADHANDLE
        && let Some((h, _)) = handle
        && unknown_before(h)
    {
        return rc;
    }
    fail(format!("{what}: undocumented return code {}", name(rc)))
}

/// After a failure the thread's last error code is that failure.
fn check_last_error(what: &str, rc: c_int) {
    let code = trio_last_error_code();
    if code != rc {
        fail(format!("{what} returned {} but trio_last_error_code() is {}", name(rc), name(code)));
    }
}

fn task_code(c: c_int) {
    RS.with(|r| {
        r.borrow_mut().task_codes.insert(c);
    });
}

fn task_codes() -> Vec<c_int> {
    RS.with(|r| r.borrow().task_codes.iter().copied().collect())
}

// ------------------------------------------------------------ the scripts

struct Src<'a> {
    d: &'a [u8],
    pos: usize,
    /// The last handle `pick` chose (see [`Picked`]).
    picked: Picked,
}

impl Src<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.d.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |a, _| (a << 8) | u64::from(self.u8()))
    }
    fn done(&self) -> bool {
        self.pos >= self.d.len()
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let start = self.pos.min(self.d.len());
        let end = (start + n).min(self.d.len());
        self.pos = end;
        self.d[start..end].to_vec()
    }
}

/// A C task's program.
struct Script {
    bytes: Vec<u8>,
    depth: u32,
    /// Started by `trio_nursery_start`.
    started: bool,
    /// The spawn or start call said the task was started: it must run.
    must_run: Cell<bool>,
    /// Its function ran to the end.
    ran: Cell<bool>,
}

/// Picks a handle argument of (preferably) `kinds`.
fn pick(s: &mut Src<'_>, kinds: &[u8]) -> u64 {
    let h = pick_inner(s, kinds);
    s.picked = picked(h, kinds);
    h
}

fn pick_inner(s: &mut Src<'_>, kinds: &[u8]) -> u64 {
    let sel = s.u8();
    let pool: Vec<(u64, St)> = RS.with(|r| r.borrow().pool.clone());
    match sel {
        0..=0x9f => {
            // Of the right kind, any state.
            let right: Vec<u64> = pool.iter().filter(|e| kinds.contains(&kind_of(e.0))).map(|e| e.0).collect();
            if right.is_empty() { 0 } else { right[usize::from(sel) % right.len()] }
        }
        0xa0..=0xcf => {
            if pool.is_empty() {
                0
            } else {
                pool[usize::from(sel) % pool.len()].0
            }
        }
        0xd0..=0xdf => {
            // Another kind's bits on one of ours.
            if pool.is_empty() {
                return 0;
            }
            let h = pool[usize::from(sel) % pool.len()].0;
            let k = (kind_of(h) ^ (sel & 0x0f).max(1)) as u64;
            (h & 0x00ff_ffff_ffff_ffff) | (k << 56)
        }
        0xe0..=0xef => {
            let h = s.u64();
            if pool.iter().any(|e| e.0 == h) { 0 } else { h }
        }
        0xf0..=0xf7 => {
            // Generation bumped: what a stale handle of the same slot
            // would look like later.
            if pool.is_empty() {
                return 0;
            }
            let h = pool[usize::from(sel) % pool.len()].0;
            let h2 = h.wrapping_add(1 << 32);
            if pool.iter().any(|e| e.0 == h2) { 0 } else { h2 }
        }
        0xf8..=0xfb => u64::MAX,
        _ => 0,
    }
}

unsafe extern "C" fn task_main(arg: *mut c_void) -> c_int {
    let script = unsafe { &*arg.cast::<Script>() };
    let code = run_script(script);
    script.ran.set(true);
    task_code(code);
    code
}

unsafe extern "C" fn thread_fn(arg: *mut c_void) -> c_int {
    arg as usize as u8 as i8 as c_int
}

unsafe extern "C" fn sync_noop(_arg: *mut c_void) {}

unsafe extern "C" fn nested_main(_arg: *mut c_void) -> c_int {
    0
}

unsafe extern "C" fn serve_handler(stream: trio_handle_t, _arg: *mut c_void) -> c_int {
    let mut buf = [0u8; 64];
    let rc = unsafe { trio_receive_some(stream, buf.as_mut_ptr().cast(), buf.len()) };
    let allowed = [TRIO_EBADHANDLE, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EBROKEN, TRIO_EIO, TRIO_ECANCELED, 0];
    check("trio_receive_some(handler)", rc, &allowed, true, None);
    if rc > 0 {
        let rc2 = unsafe { trio_send_all(stream, buf.as_ptr().cast(), rc as usize) };
        let allowed = [0, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EBROKEN, TRIO_EIO, TRIO_ECANCELED];
        check("trio_send_all(handler)", rc2, &allowed, false, None);
    }
    if rc == TRIO_ECANCELED { rc } else { 0 }
}

const SEND_BUF: [u8; 300] = [0x5a; 300];

fn spawn_child(s: &mut Src<'_>, depth: u32, started: bool) -> (u64, *const Script) {
    let n = s.u8();
    let h = pick(s, &[K_NURSERY]);
    let bytes = s.take(usize::from(n));
    let too_many = RS.with(|r| r.borrow().scripts.len() >= 48);
    let bytes = if depth >= 4 || too_many { Vec::new() } else { bytes };
    let script =
        Box::new(Script { bytes, depth: depth + 1, started, must_run: Cell::new(false), ran: Cell::new(false) });
    let p: *const Script = &*script;
    RS.with(|r| r.borrow_mut().scripts.push(script));
    (h, p)
}

/// Runs a script in the calling C task; returns the task's code.
fn run_script(script: &Script) -> c_int {
    let mut s = Src { d: &script.bytes, pos: 0, picked: None };
    // This task's open nurseries and scopes, innermost last.
    let mut layers: Vec<u64> = Vec::new();
    let mut last_rc: c_int = 0;
    let mut called_started = false;
    let depth = script.depth;
    use std::ptr::null_mut;
    while !s.done() {
        let op = s.u8() % 60;
        s.picked = None;
        if log_on() {
            eprintln!("[d{depth}] op {op}");
        }
        let rc = match op {
            0 => check_p(s.picked, "trio_checkpoint", trio_checkpoint(), &[0, TRIO_ECANCELED], false, None),
            1 => {
                let b = s.u8();
                let secs = match b {
                    255 => f64::INFINITY,
                    254 => -1.0,
                    253 => f64::NAN,
                    252 => 1e300,
                    _ => f64::from(b) * 0.001,
                };
                check_p(s.picked, "trio_sleep", trio_sleep(secs), &[0, TRIO_ECANCELED, TRIO_EINVAL], false, None)
            }
            2 => {
                let mut t = -1.0;
                let rc = check_p(s.picked, "trio_now", unsafe { trio_now(&mut t) }, &[0], false, None);
                if !(t >= 0.0) {
                    fail(format!("trio_now gave {t}"));
                }
                rc
            }
            3 => {
                let mut h = 0;
                let rc =
                    check_p(s.picked, "trio_nursery_open", unsafe { trio_nursery_open(&mut h) }, &[0], false, None);
                add(h);
                layers.push(h);
                rc
            }
            4 | 11 => {
                let innermost = s.u8() & 3 != 0;
                let h =
                    if innermost { layers.last().copied().unwrap_or(0) } else { pick(&mut s, &[K_NURSERY, K_SCOPE]) };
                close_layer(h, &mut layers)
            }
            5 | 6 => {
                let started = op == 6;
                let (h, child) = spawn_child(&mut s, depth, started);
                let arg = child as *mut c_void;
                // SAFETY: the scripts live until the run has ended.
                let child = unsafe { &*child };
                let f: unsafe extern "C" fn(*mut c_void) -> c_int = task_main;
                if started {
                    let mut v: *mut c_void = ptr::dangling_mut();
                    let rc = unsafe { trio_nursery_start(h, Some(f), arg, &mut v) };
                    // trio_nursery_start runs the child: it owns `arg` once
                    // the call got as far as spawning it.
                    let mut ok = vec![
                        0,
                        TRIO_EMISUSE,
                        TRIO_ECANCELED,
                        TRIO_EINVAL,
                        TRIO_EBADHANDLE,
                        TRIO_ECLOSED,
                        TRIO_ENORUN,
                        TRIO_ENOMEM,
                    ];
                    ok.extend(task_codes());
                    let rc = check_p(s.picked, "trio_nursery_start", rc, &ok, false, Some((h, &[K_NURSERY])));
                    if rc == 0 || rc == TRIO_EMISUSE {
                        child.must_run.set(true);
                        if !child.ran.get() && rc == TRIO_EMISUSE {
                            fail("trio_nursery_start: EMISUSE, but the task has not returned".into());
                        }
                    }
                    if rc == 0 && v as usize != 0x5157 {
                        fail(format!("trio_nursery_start: started value {v:?}, expected 0x5157"));
                    }
                    rc
                } else {
                    let rc = trio_nursery_spawn(h, Some(f), arg);
                    let ok = [0, TRIO_EINVAL, TRIO_EBADHANDLE, TRIO_ECLOSED, TRIO_ENOMEM];
                    let rc = check_p(s.picked, "trio_nursery_spawn", rc, &ok, false, Some((h, &[K_NURSERY])));
                    if rc == 0 {
                        child.must_run.set(true);
                    }
                    rc
                }
            }
            7 => {
                let rc = trio_task_started(0x5157 as *mut c_void);
                let expect_ok = script.started && !called_started;
                if rc == 0 {
                    called_started = true;
                }
                if (rc == 0) != expect_ok || (rc != 0 && rc != TRIO_EMISUSE) {
                    fail(format!(
                        "trio_task_started: {} (started task: {}, called: {called_started})",
                        name(rc),
                        script.started
                    ));
                }
                rc
            }
            8 => {
                let h = pick(&mut s, &[K_NURSERY]);
                // ECLOSED: the header says 0 or EBADHANDLE only.
                check_p(s.picked, "trio_nursery_cancel", trio_nursery_cancel(h), &[0], false, Some((h, &[K_NURSERY])))
            }
            9 => {
                let b = s.u8();
                let shield = s.u8() & 1;
                let timeout = match b {
                    0 => -1.0,
                    1 => f64::INFINITY,
                    2 => f64::NAN,
                    _ => f64::from(b) * 0.01,
                };
                // A shielded scope always has a deadline, so nothing waits forever.
                let timeout = if shield == 1 && !(0.0..1e6).contains(&timeout) { 0.5 } else { timeout };
                let mut h = 0;
                let rc = unsafe { trio_cancel_scope_open(timeout, c_int::from(shield), &mut h) };
                let rc = check_p(s.picked, "trio_cancel_scope_open", rc, &[0, TRIO_EINVAL], false, None);
                if rc == 0 {
                    add(h);
                    layers.push(h);
                } else if !timeout.is_nan() {
                    fail("trio_cancel_scope_open refused a non-NaN timeout".into());
                }
                rc
            }
            10 => {
                let h = pick(&mut s, &[K_SCOPE]);
                check_p(
                    s.picked,
                    "trio_cancel_scope_cancel",
                    trio_cancel_scope_cancel(h),
                    &[0],
                    false,
                    Some((h, &[K_SCOPE])),
                )
            }
            12 => {
                let mut h = 0;
                let rc = check_p(s.picked, "trio_event_new", unsafe { trio_event_new(&mut h) }, &[0], false, None);
                add(h);
                rc
            }
            13 => {
                let h = pick(&mut s, &[K_EVENT]);
                check_p(s.picked, "trio_event_set", trio_event_set(h), &[0], false, Some((h, &[K_EVENT])))
            }
            14 => {
                let h = pick(&mut s, &[K_EVENT]);
                check_p(s.picked, "trio_event_is_set", trio_event_is_set(h), &[0, 1], false, Some((h, &[K_EVENT])))
            }
            15 => {
                let h = pick(&mut s, &[K_EVENT]);
                let ok = [0, TRIO_ECANCELED, TRIO_ECLOSED];
                check_p(s.picked, "trio_event_wait", trio_event_wait(h), &ok, false, Some((h, &[K_EVENT])))
            }
            16 => {
                let h = pick(&mut s, &[K_EVENT]);
                let rc = check_p(s.picked, "trio_event_close", trio_event_close(h), &[0], false, Some((h, &[K_EVENT])));
                if rc == 0 {
                    set_state(h, St::Stale);
                }
                rc
            }
            17 => {
                let cap = match s.u8() % 4 {
                    0 => 0,
                    1 => 1,
                    2 => 3,
                    _ => usize::MAX,
                };
                let (mut tx, mut rx) = (0, 0);
                let rc = unsafe { trio_channel_open(cap, &mut tx, &mut rx) };
                let rc = check_p(s.picked, "trio_channel_open", rc, &[0], false, None);
                add(tx);
                add(rx);
                rc
            }
            18 | 19 => {
                let (k, what) = if op == 18 {
                    (K_SENDER, "trio_channel_clone_sender")
                } else {
                    (K_RECEIVER, "trio_channel_clone_receiver")
                };
                let h = pick(&mut s, &[k]);
                let mut out = 0;
                let rc = unsafe {
                    if op == 18 {
                        trio_channel_clone_sender(h, &mut out)
                    } else {
                        trio_channel_clone_receiver(h, &mut out)
                    }
                };
                let rc = check_p(s.picked, what, rc, &[0], false, Some((h, &[k])));
                if rc == 0 {
                    add(out);
                }
                rc
            }
            20 | 22 => {
                let h = pick(&mut s, &[K_SENDER]);
                let v = RS.with(|r| {
                    let mut r = r.borrow_mut();
                    r.value_counter += 1;
                    r.value_counter
                });
                if op == 20 {
                    let ok = [0, TRIO_ECANCELED, TRIO_EBROKEN, TRIO_ECLOSED];
                    check_p(
                        s.picked,
                        "trio_channel_send",
                        trio_channel_send(h, v as *mut c_void),
                        &ok,
                        false,
                        Some((h, &[K_SENDER])),
                    )
                } else {
                    let ok = [0, TRIO_EWOULDBLOCK, TRIO_EBROKEN];
                    let rc = trio_channel_try_send(h, v as *mut c_void);
                    check_p(s.picked, "trio_channel_try_send", rc, &ok, false, Some((h, &[K_SENDER])))
                }
            }
            21 | 23 => {
                let h = pick(&mut s, &[K_RECEIVER]);
                let mut out: *mut c_void = ptr::dangling_mut();
                let rc = if op == 21 {
                    let ok = [0, TRIO_EENDOFCHANNEL, TRIO_ECANCELED, TRIO_ECLOSED];
                    let rc = unsafe { trio_channel_receive(h, &mut out) };
                    check_p(s.picked, "trio_channel_receive", rc, &ok, false, Some((h, &[K_RECEIVER])))
                } else {
                    let ok = [0, TRIO_EWOULDBLOCK, TRIO_EENDOFCHANNEL];
                    let rc = unsafe { trio_channel_try_receive(h, &mut out) };
                    check_p(s.picked, "trio_channel_try_receive", rc, &ok, false, Some((h, &[K_RECEIVER])))
                };
                let max = RS.with(|r| r.borrow().value_counter);
                if rc == 0 && (out as usize == 0 || out as usize > max) {
                    fail(format!("channel receive: value {out:?} was never sent (max {max})"));
                }
                if rc != 0 && out as usize != ptr::dangling_mut::<c_void>() as usize {
                    fail("channel receive wrote *out on failure".into());
                }
                rc
            }
            24 | 25 => {
                let (k, what) = if op == 24 {
                    (K_SENDER, "trio_channel_close_sender")
                } else {
                    (K_RECEIVER, "trio_channel_close_receiver")
                };
                let h = pick(&mut s, &[k]);
                let rc = if op == 24 { trio_channel_close_sender(h) } else { trio_channel_close_receiver(h) };
                let rc = check_p(s.picked, what, rc, &[0], false, Some((h, &[k])));
                if rc == 0 {
                    set_state(h, St::Stale);
                }
                rc
            }
            26 => {
                let mut h = 0;
                let rc = check_p(s.picked, "trio_lock_new", unsafe { trio_lock_new(&mut h) }, &[0], false, None);
                add(h);
                rc
            }
            27 => {
                let h = pick(&mut s, &[K_LOCK]);
                // EBROKEN: the holder exited without releasing (as Trio's
                // BrokenResourceError; found here first, now documented).
                let ok = [0, TRIO_ECANCELED, TRIO_EMISUSE, TRIO_ECLOSED, TRIO_EBROKEN];
                check_p(s.picked, "trio_lock_acquire", trio_lock_acquire(h), &ok, false, Some((h, &[K_LOCK])))
            }
            28 => {
                let h = pick(&mut s, &[K_LOCK]);
                let ok = [0, TRIO_EWOULDBLOCK, TRIO_EMISUSE];
                check_p(s.picked, "trio_lock_try_acquire", trio_lock_try_acquire(h), &ok, false, Some((h, &[K_LOCK])))
            }
            29 => {
                let h = pick(&mut s, &[K_LOCK]);
                check_p(
                    s.picked,
                    "trio_lock_release",
                    trio_lock_release(h),
                    &[0, TRIO_EMISUSE],
                    false,
                    Some((h, &[K_LOCK])),
                )
            }
            30 => {
                let h = pick(&mut s, &[K_LOCK]);
                let rc = check_p(s.picked, "trio_lock_close", trio_lock_close(h), &[0], false, Some((h, &[K_LOCK])));
                if rc == 0 {
                    set_state(h, St::Stale);
                }
                rc
            }
            31 => {
                let initial = match s.u8() % 5 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => 1000,
                    _ if known("sem") => usize::MAX,
                    _ => usize::MAX / 2,
                };
                let mut h = 0;
                let rc = unsafe { trio_semaphore_new(initial, &mut h) };
                let rc = check_p(s.picked, "trio_semaphore_new", rc, &[0, TRIO_EINVAL], false, None);
                if rc == 0 {
                    add(h);
                }
                rc
            }
            32 => {
                let h = pick(&mut s, &[K_SEM]);
                let ok = [0, TRIO_ECANCELED, TRIO_ECLOSED];
                check_p(s.picked, "trio_semaphore_acquire", trio_semaphore_acquire(h), &ok, false, Some((h, &[K_SEM])))
            }
            33 => {
                let h = pick(&mut s, &[K_SEM]);
                let ok = [0, TRIO_EWOULDBLOCK];
                check_p(
                    s.picked,
                    "trio_semaphore_try_acquire",
                    trio_semaphore_try_acquire(h),
                    &ok,
                    false,
                    Some((h, &[K_SEM])),
                )
            }
            34 => {
                let h = pick(&mut s, &[K_SEM]);
                let mut before = 0usize;
                let had = unsafe { trio_semaphore_value(h, &mut before) } == 0;
                // Issue 17 item 2 may make an overflowing release EINVAL.
                let rc = trio_semaphore_release(h);
                let rc = check_p(
                    s.picked,
                    "trio_semaphore_release",
                    rc,
                    &[0, TRIO_EINVAL, TRIO_EMISUSE],
                    false,
                    Some((h, &[K_SEM])),
                );
                let mut after = 0usize;
                if had && rc == 0 && unsafe { trio_semaphore_value(h, &mut after) } == 0 && after < before {
                    fail(format!("trio_semaphore_release: value went from {before} to {after}"));
                }
                rc
            }
            35 => {
                let h = pick(&mut s, &[K_SEM]);
                let mut v = 0usize;
                check_p(
                    s.picked,
                    "trio_semaphore_value",
                    unsafe { trio_semaphore_value(h, &mut v) },
                    &[0],
                    false,
                    Some((h, &[K_SEM])),
                )
            }
            36 => {
                let h = pick(&mut s, &[K_SEM]);
                let rc = check_p(
                    s.picked,
                    "trio_semaphore_close",
                    trio_semaphore_close(h),
                    &[0],
                    false,
                    Some((h, &[K_SEM])),
                );
                if rc == 0 {
                    set_state(h, St::Stale);
                }
                rc
            }
            37 => {
                let mut h = 0;
                let rc = unsafe { trio_tcp_listen(c"127.0.0.1".as_ptr(), 0, &mut h) };
                let rc = check_p(s.picked, "trio_tcp_listen", rc, &[0, TRIO_EIO, TRIO_ECANCELED], false, None);
                if rc == 0 {
                    add(h);
                }
                rc
            }
            38 => {
                let l = pick(&mut s, &[K_TCP_LISTENER]);
                let mut port = 1u16;
                if l != 0 {
                    let _ = unsafe { trio_listener_port(l, &mut port) };
                }
                let mut h = 0;
                let rc = unsafe { trio_tcp_connect(c"127.0.0.1".as_ptr(), port, &mut h) };
                let rc = check_p(s.picked, "trio_tcp_connect", rc, &[0, TRIO_EIO, TRIO_ECANCELED], false, None);
                if rc == 0 {
                    add(h);
                }
                rc
            }
            39 => {
                let l = pick(&mut s, &[K_TCP_LISTENER, K_UNIX_LISTENER]);
                let mut h = 0;
                let ok = [0, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EIO, TRIO_ECANCELED];
                let rc = unsafe { trio_accept(l, &mut h) };
                let rc =
                    check_p(s.picked, "trio_accept", rc, &ok, false, Some((l, &[K_TCP_LISTENER, K_UNIX_LISTENER])));
                if rc == 0 {
                    add(h);
                }
                rc
            }
            40 => {
                let h = pick(&mut s, &[K_TCP_STREAM, K_UNIX_STREAM]);
                let len = usize::from(s.u8()).min(SEND_BUF.len());
                let buf = if len == 0 && s.u8() & 1 == 1 { ptr::null() } else { SEND_BUF.as_ptr() };
                let ok = [0, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EBROKEN, TRIO_EIO, TRIO_ECANCELED];
                let rc = unsafe { trio_send_all(h, buf.cast(), len) };
                check_p(s.picked, "trio_send_all", rc, &ok, false, Some((h, &[K_TCP_STREAM, K_UNIX_STREAM])))
            }
            41 => {
                let h = pick(&mut s, &[K_TCP_STREAM, K_UNIX_STREAM]);
                let len = usize::from(s.u8());
                let mut buf = vec![0u8; len.max(1)];
                let ok = [0, TRIO_EINVAL, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EBROKEN, TRIO_EIO, TRIO_ECANCELED];
                let rc = unsafe { trio_receive_some(h, buf.as_mut_ptr().cast(), len) };
                let rc = if len == 0 {
                    // Two bad arguments: either may be reported.
                    if rc != TRIO_EINVAL && rc != TRIO_EBADHANDLE {
                        fail(format!("trio_receive_some(len 0): {}", name(rc)));
                    }
                    rc
                } else {
                    check_p(s.picked, "trio_receive_some", rc, &ok, true, Some((h, &[K_TCP_STREAM, K_UNIX_STREAM])))
                };
                if rc == TRIO_EINVAL && len != 0 {
                    fail(format!("trio_receive_some: EINVAL for len {len}"));
                }
                if rc > 0 && rc as usize > len {
                    fail(format!("trio_receive_some: {rc} bytes into {len}"));
                }
                rc
            }
            42 => {
                let h = pick(&mut s, &[K_TCP_STREAM, K_UNIX_STREAM]);
                let ok = [0, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EIO, TRIO_ECANCELED];
                check_p(
                    s.picked,
                    "trio_send_eof",
                    trio_send_eof(h),
                    &ok,
                    false,
                    Some((h, &[K_TCP_STREAM, K_UNIX_STREAM])),
                )
            }
            43 => {
                let ks = [K_TCP_STREAM, K_UNIX_STREAM, K_TCP_LISTENER, K_UNIX_LISTENER];
                let h = pick(&mut s, &ks);
                let rc = check_p(s.picked, "trio_close", trio_close(h), &[0], false, Some((h, &ks)));
                if rc == 0 {
                    set_state(h, St::Stale);
                }
                rc
            }
            44 => {
                let h = pick(&mut s, &[K_TCP_LISTENER]);
                let mut port = 0u16;
                let rc = unsafe { trio_listener_port(h, &mut port) };
                let rc = check_p(
                    s.picked,
                    "trio_listener_port",
                    rc,
                    &[0, TRIO_ECLOSED, TRIO_EIO],
                    false,
                    Some((h, &[K_TCP_LISTENER])),
                );
                if rc == 0 && port == 0 {
                    fail("trio_listener_port gave port 0".into());
                }
                rc
            }
            45 | 46 => {
                let peer = op == 46;
                let ks: &[u8] = if peer {
                    &[K_TCP_STREAM, K_UNIX_STREAM]
                } else {
                    &[K_TCP_STREAM, K_UNIX_STREAM, K_TCP_LISTENER, K_UNIX_LISTENER]
                };
                let h = pick(&mut s, ks);
                let len = usize::from(s.u8() % 40);
                let null = len == 0 && s.u8() & 1 == 1;
                let mut buf = vec![0x7fu8 as c_char; len + 8];
                let p = if null { ptr::null_mut() } else { buf.as_mut_ptr() };
                let rc = unsafe { if peer { trio_peer_address(h, p, len) } else { trio_local_address(h, p, len) } };
                let what = if peer { "trio_peer_address" } else { "trio_local_address" };
                let rc = check_p(s.picked, what, rc, &[0, TRIO_ECLOSED, TRIO_EIO], true, Some((h, ks)));
                if rc >= 0 {
                    check_snprintf(what, &buf, len, null, rc);
                }
                rc
            }
            47 | 48 => unix_op(&mut s, op == 47),
            49 => {
                let len = match s.u8() % 6 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => 7,
                    4 => 64,
                    _ => 1000,
                };
                let null = len == 0 || s.u8() & 7 == 0;
                let mut buf = vec![0x7fu8 as c_char; len + 8];
                let p = if null { ptr::null_mut() } else { buf.as_mut_ptr() };
                let rc = unsafe { trio_last_error(p, len) };
                if null && len != 0 {
                    if rc != TRIO_EINVAL {
                        fail(format!("trio_last_error(NULL, {len}) gave {rc}"));
                    }
                } else if rc < 0 {
                    fail(format!("trio_last_error gave {rc}"));
                } else {
                    check_snprintf("trio_last_error", &buf, len, null, rc);
                }
                let code = trio_last_error_code();
                if code > 0 {
                    fail(format!("trio_last_error_code() is positive: {code}"));
                }
                let _ = trio_last_os_error();
                let c = i32::from_be_bytes([s.u8(), s.u8(), s.u8(), s.u8()]);
                let p = trio_strerror(c);
                if p.is_null() {
                    fail(format!("trio_strerror({c}) is NULL"));
                }
                let _ = unsafe { CStr::from_ptr(p) }.to_str().unwrap_or_else(|_| fail("strerror not UTF-8".into()));
                0
            }
            50 => {
                let v = s.u8();
                let abandon = c_int::from(s.u8() & 1);
                let rc = trio_to_thread(Some(thread_fn), usize::from(v) as *mut c_void, abandon);
                let expect = c_int::from(v as i8);
                if rc != expect && !matches!(rc, TRIO_ECANCELED | TRIO_EIO) {
                    fail(format!("trio_to_thread: {} instead of the function's {expect}", name(rc)));
                }
                rc
            }
            51 => {
                let mut tok: *mut trio_token = ptr::null_mut();
                let rc = check_p(s.picked, "trio_token_get", unsafe { trio_token_get(&mut tok) }, &[0], false, None);
                let rc2 = unsafe { trio_token_run_sync_soon(tok, Some(sync_noop), null_mut()) };
                check_p(s.picked, "trio_token_run_sync_soon", rc2, &[0], false, None);
                let rc3 = unsafe { trio_token_free(tok) };
                check_p(s.picked, "trio_token_free", rc3, &[0], false, None);
                rc
            }
            52 => {
                let rc = if s.u8() & 1 == 0 {
                    trio_run(Some(nested_main), null_mut())
                } else {
                    trio_run_mock_clock(Some(nested_main), null_mut())
                };
                check_p(s.picked, "trio_run (nested)", rc, &[TRIO_ENORUN], false, None)
            }
            53 => null_outs(&mut s),
            54 => {
                let code = match s.u8() % 6 {
                    0 => 0,
                    1 => 1,
                    2 => -1,
                    3 => -77,
                    4 => TRIO_ECANCELED,
                    _ => last_rc,
                };
                if log_on() {
                    eprintln!("[d{depth}] return {code} with {} layers open", layers.len());
                }
                if depth == 0 {
                    // The main task closes its layers (its deadline scope is outside them).
                    while let Some(h) = layers.last().copied() {
                        close_layer(h, &mut layers);
                    }
                }
                return code;
            }
            55 => {
                let size = match s.u8() % 4 {
                    0 => 64 * 1024,
                    1 => 1024,
                    // Issue 17 item 3: sizes that used to panic the next
                    // spawn, or (SIZE_MAX / 4) leave a connection's handler
                    // without a stack (artifacts-known/serve_enomem): now
                    // refused with EINVAL.
                    2 if known("stack") => usize::MAX >> (s.u8() & 2),
                    2 => 1024 * 1024,
                    _ => 256 * 1024,
                };
                let rc = check_p(
                    s.picked,
                    "trio_set_stack_size",
                    trio_set_stack_size(size),
                    &[0, TRIO_EINVAL, TRIO_ENOMEM],
                    false,
                    None,
                );
                if size < 16 * 1024 && rc != TRIO_EINVAL {
                    fail(format!("trio_set_stack_size({size}) gave {rc}"));
                }
                rc
            }
            56 => {
                let ks = [K_TCP_LISTENER, K_UNIX_LISTENER];
                let h = pick(&mut s, &ks);
                let rc = unsafe { trio_serve_listener(h, Some(serve_handler), null_mut()) };
                // A second server on a listener in use gets EBUSY (found
                // here first: its refusal used to close the listener under
                // the first server, artifacts-known/serve_busy).
                let mut ok = vec![TRIO_ECANCELED, TRIO_EGROUP, TRIO_EIO, TRIO_ECLOSED, TRIO_EINVAL, TRIO_EBUSY];
                ok.extend(task_codes());
                let rc = check_p(s.picked, "trio_serve_listener", rc, &ok, false, Some((h, &ks)));
                if rc == TRIO_EBUSY && kind_of(h) == K_TCP_LISTENER && known("serve") {
                    let mut port = 0u16;
                    let rc2 = unsafe { trio_listener_port(h, &mut port) };
                    if rc2 == TRIO_ECLOSED {
                        fail("trio_serve_listener refused with EBUSY closed the listener in use".into());
                    }
                }
                rc
            }
            57 => {
                // A big send (fills the socket buffers: the sender waits).
                let h = pick(&mut s, &[K_TCP_STREAM, K_UNIX_STREAM]);
                let big = vec![1u8; 4 << 20];
                let ok = [0, TRIO_EBUSY, TRIO_ECLOSED, TRIO_EBROKEN, TRIO_EIO, TRIO_ECANCELED];
                let rc = unsafe { trio_send_all(h, big.as_ptr().cast(), big.len()) };
                check_p(s.picked, "trio_send_all(4 MiB)", rc, &ok, false, Some((h, &[K_TCP_STREAM, K_UNIX_STREAM])))
            }
            58 => {
                if known("send") {
                    // Issue 17 item 4: a length that cannot be a buffer.
                    let h = pick(&mut s, &[K_TCP_STREAM, K_UNIX_STREAM]);
                    // The length is checked before the handle (no slice is
                    // ever made of it): EINVAL whatever the handle is.
                    let rc = unsafe { trio_send_all(h, SEND_BUF.as_ptr().cast(), usize::MAX) };
                    check_p(s.picked, "trio_send_all(SIZE_MAX)", rc, &[TRIO_EINVAL], false, None)
                } else {
                    0
                }
            }
            _ => {
                // Several cancellations at once.
                for l in layers.clone() {
                    let _ = trio_cancel_scope_cancel(l);
                    let _ = trio_nursery_cancel(l);
                }
                0
            }
        };
        last_rc = rc;
    }
    while let Some(h) = layers.last().copied() {
        close_layer(h, &mut layers);
    }
    if last_rc == TRIO_ECANCELED { TRIO_ECANCELED } else { 0 }
}

/// Closes nursery or scope `h` from the calling task.
fn close_layer(h: u64, layers: &mut Vec<u64>) -> c_int {
    let innermost = layers.last() == Some(&h) && h != 0;
    let pk = picked(h, &[K_NURSERY, K_SCOPE]);
    let (rc, what) = match kind_of(h) {
        K_SCOPE => (trio_cancel_scope_close(h), "trio_cancel_scope_close"),
        _ => (trio_nursery_close(h), "trio_nursery_close"),
    };
    let mut ok = vec![0, TRIO_ECANCELED, TRIO_EINVAL];
    if kind_of(h) == K_SCOPE {
        ok.push(1);
    } else {
        ok.push(TRIO_EGROUP);
        ok.extend(task_codes());
    }
    let rc = check_p(pk, what, rc, &ok, false, Some((h, &[K_NURSERY, K_SCOPE])));
    if innermost {
        // A child's own return value is passed on as it is, so a child that
        // returned TRIO_EBADHANDLE or TRIO_EINVAL makes the close look like
        // a bad call (reported).
        if (rc == TRIO_EINVAL || rc == TRIO_EBADHANDLE) && !task_codes().contains(&rc) {
            fail(format!("{what}: the innermost layer {h:#x} could not be closed: {}", name(rc)));
        }
        layers.pop();
        set_state(h, St::Stale);
    } else if rc != TRIO_EINVAL && rc != TRIO_EBADHANDLE {
        fail(format!("{what}: closed {h:#x}, not the calling task's innermost layer ({:?})", layers.last()));
    }
    rc
}

fn check_snprintf(what: &str, buf: &[c_char], len: usize, null: bool, rc: c_int) {
    if null || len == 0 {
        if buf.iter().any(|&c| c != 0x7f) {
            fail(format!("{what}: wrote into a buffer of length 0"));
        }
        return;
    }
    let Some(nul) = buf[..len].iter().position(|&c| c == 0) else {
        fail(format!("{what}: no NUL within {len} bytes"));
    };
    if buf[len..].iter().any(|&c| c != 0x7f) {
        fail(format!("{what}: wrote past {len} bytes"));
    }
    let expect = (rc as usize).min(len - 1);
    if nul != expect {
        fail(format!("{what}: returned {rc} for len {len} but the text is {nul} bytes"));
    }
}

fn unix_op(s: &mut Src<'_>, listen: bool) -> c_int {
    let dir = std::env::temp_dir().join(format!("trio-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sel = s.u8();
    let path = RS.with(|r| {
        let mut r = r.borrow_mut();
        if !listen && !r.unix_paths.is_empty() && sel & 1 == 0 {
            return r.unix_paths[usize::from(sel) % r.unix_paths.len()].clone();
        }
        r.unix_seq += 1;
        let p = std::ffi::CString::new(dir.join(format!("s{}", r.unix_seq)).into_os_string().into_encoded_bytes())
            .expect("no NUL");
        r.unix_paths.push(p.clone());
        p
    });
    let path_ptr = if sel == 0xff { c"".as_ptr() } else { path.as_ptr() };
    let mut h = 0;
    let rc = unsafe { if listen { trio_unix_listen(path_ptr, &mut h) } else { trio_unix_connect(path_ptr, &mut h) } };
    let what = if listen { "trio_unix_listen" } else { "trio_unix_connect" };
    let rc = check(what, rc, &[0, TRIO_EIO, TRIO_ECANCELED, TRIO_EINVAL], false, None);
    if rc == TRIO_EINVAL && sel != 0xff {
        fail(format!("{what}: EINVAL for a good path"));
    }
    if rc == 0 {
        add(h);
    }
    rc
}

/// Calls with a NULL out pointer: `TRIO_EINVAL` (or `TRIO_EBADHANDLE` when
/// the handle is checked first).
fn null_outs(s: &mut Src<'_>) -> c_int {
    let which = s.u8() % 12;
    let h = pick(s, &[K_SENDER, K_RECEIVER, K_SEM, K_TCP_LISTENER]);
    let rc = unsafe {
        match which {
            0 => trio_now(ptr::null_mut()),
            1 => trio_nursery_open(ptr::null_mut()),
            2 => trio_cancel_scope_open(1.0, 0, ptr::null_mut()),
            3 => trio_event_new(ptr::null_mut()),
            4 => trio_channel_open(1, ptr::null_mut(), ptr::null_mut()),
            5 => trio_lock_new(ptr::null_mut()),
            6 => trio_semaphore_new(1, ptr::null_mut()),
            7 => trio_channel_clone_sender(h, ptr::null_mut()),
            8 => trio_channel_try_receive(h, ptr::null_mut()),
            9 => trio_semaphore_value(h, ptr::null_mut()),
            10 => trio_listener_port(h, ptr::null_mut()),
            _ => trio_tcp_connect(ptr::null(), 80, ptr::null_mut()),
        }
    };
    if rc != TRIO_EINVAL && !(which >= 7 && which <= 10 && rc == TRIO_EBADHANDLE) {
        fail(format!("NULL out pointer (case {which}): {} instead of TRIO_EINVAL", name(rc)));
    }
    rc
}

// ------------------------------------------------------------ the runs

struct Main {
    script: Script,
    deadline: f64,
}

unsafe extern "C" fn main_task(arg: *mut c_void) -> c_int {
    let m = unsafe { &*arg.cast::<Main>() };
    let mut scope = 0;
    let rc = unsafe { trio_cancel_scope_open(m.deadline, 0, &mut scope) };
    if rc != 0 {
        fail(format!("trio_cancel_scope_open for the deadline: {}", name(rc)));
    }
    let code = run_script(&m.script);
    let rc = trio_cancel_scope_close(scope);
    if ![0, 1].contains(&rc) {
        // The main task's own script may have left it cancelled only
        // through this scope; nothing outside it can cancel.
        fail(format!("closing the deadline scope: {}", name(rc)));
    }
    task_code(code);
    code
}

/// The open file descriptors, by what they are, without eventfds: an idle
/// worker thread of `trio_to_thread` keeps the waker (an eventfd) of the
/// last run it worked for until it gets another job or exits (see the
/// report of the fuzzer's first runs).
/// A run on another thread that makes some handles and waits (in a
/// `trio_to_thread` worker) until told to finish.
struct ForeignRun {
    handles: Vec<u64>,
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

struct ForeignShared {
    handles: std::sync::mpsc::Sender<Vec<u64>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

unsafe extern "C" fn foreign_wait(arg: *mut c_void) -> c_int {
    let sh = unsafe { &*arg.cast::<ForeignShared>() };
    let _ = sh.done.lock().unwrap().recv();
    0
}

unsafe extern "C" fn foreign_main(arg: *mut c_void) -> c_int {
    let sh = unsafe { &*arg.cast::<ForeignShared>() };
    let (mut ev, mut lk, mut tx, mut rx, mut sem, mut n, mut l) = (0, 0, 0, 0, 0, 0, 0);
    // Made in the order a fuzz run makes its first handles (its deadline
    // scope first), so that aliasing values would meet.
    let mut scope = 0;
    unsafe {
        trio_cancel_scope_open(-1.0, 0, &mut scope);
        trio_event_new(&mut ev);
        trio_lock_new(&mut lk);
        trio_channel_open(1, &mut tx, &mut rx);
        trio_semaphore_new(1, &mut sem);
        trio_nursery_open(&mut n);
        trio_tcp_listen(c"127.0.0.1".as_ptr(), 0, &mut l);
    }
    let _ = sh.handles.send(vec![ev, lk, tx, rx, sem, n, l]);
    let rc = trio_to_thread(Some(foreign_wait), arg, 0);
    trio_nursery_close(n);
    trio_cancel_scope_close(scope);
    rc
}

impl ForeignRun {
    fn start() -> ForeignRun {
        let (htx, hrx) = std::sync::mpsc::channel();
        let (dtx, drx) = std::sync::mpsc::channel();
        let sh = ForeignShared { handles: htx, done: std::sync::Mutex::new(drx) };
        let thread = std::thread::spawn(move || {
            let rc = trio_run(Some(foreign_main), &sh as *const ForeignShared as *mut c_void);
            if rc != 0 {
                fail(format!("the run on another thread: {}", name(rc)));
            }
        });
        let handles = hrx.recv().unwrap_or_default();
        ForeignRun { handles, done: dtx, thread }
    }

    fn finish(self) {
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

fn open_fds() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .map(|t| if t.starts_with("socket:") { "socket".to_owned() } else { t })
                .filter(|t| t != "anon_inode:[eventfd]" && !t.starts_with("/proc/"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn one_run(script: Vec<u8>, mock: bool) -> c_int {
    let script = Script { bytes: script, depth: 0, started: false, must_run: Cell::new(true), ran: Cell::new(false) };
    let m = Main { script, deadline: if mock { 100.0 } else { 0.3 } };
    let arg = &m as *const Main as *mut c_void;
    if mock { trio_run_mock_clock(Some(main_task), arg) } else { trio_run(Some(main_task), arg) }
}

fn fuzz_one(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        // The thread pool keeps a descriptor of its own once it was used.
        one_run(vec![50, 1, 0], true);
        RS.with(|r| *r.borrow_mut() = RunState::default());
    });
    if data[0] & 4 != 0 && known("alias") {
        // On a fresh thread, as the other run: two threads' first runs are
        // where their handles would have the same values.
        std::thread::scope(|s| {
            s.spawn(|| fuzz_thread(data));
        });
    } else {
        fuzz_thread(data);
    }
}

fn fuzz_thread(data: &[u8]) {
    LOG.with(|l| l.set(std::env::var_os("TRIO_FUZZ_LOG").is_some()));
    let flags = data[0];
    let mock = flags & 1 == 0;
    RS.with(|r| *r.borrow_mut() = RunState::default());
    let fds_before = open_fds();
    if flags & 2 != 0 {
        // An earlier run: its handles are stale in the main run.
        one_run(vec![12, 26, 17, 0, 31, 1, 3, 9, 5, 0, 37], true);
        RS.with(|r| {
            let mut r = r.borrow_mut();
            for e in r.pool.iter_mut() {
                e.1 = St::Stale;
            }
            r.scripts.clear();
        });
    }
    // Handles of a run going on on another thread at the same time (issue
    // 17 item 1: they alias this thread's handles until it is fixed).
    let foreign = if flags & 4 != 0 && known("alias") { Some(ForeignRun::start()) } else { None };
    if let Some(f) = &foreign {
        RS.with(|r| {
            let mut r = r.borrow_mut();
            r.foreign = f.handles.clone();
            r.pool.extend(f.handles.iter().map(|h| (*h, St::Stale)));
        });
    }
    let rc = one_run(data[1..].to_vec(), mock);
    if let Some(f) = foreign {
        f.finish();
    }
    let (pool, codes, paths) = RS.with(|r| {
        let r = r.borrow();
        (r.pool.clone(), r.task_codes.clone(), r.unix_paths.clone())
    });
    let documented = [TRIO_ECANCELED, TRIO_EGROUP, TRIO_ENORUN];
    if !codes.contains(&rc) && !documented.contains(&rc) {
        fail(format!("trio_run returned {}, which no task returned", name(rc)));
    }
    let lost = RS.with(|r| r.borrow().scripts.iter().filter(|s| s.must_run.get() && !s.ran.get()).count());
    if lost != 0 {
        fail(format!("{lost} spawned tasks never ran to the end"));
    }
    RS.with(|r| r.borrow_mut().scripts.clear());
    for (h, _) in &pool {
        let rc = match kind_of(*h) {
            K_NURSERY => trio_nursery_cancel(*h),
            K_SCOPE => trio_cancel_scope_cancel(*h),
            K_EVENT => trio_event_is_set(*h),
            K_LOCK => trio_lock_close(*h),
            K_SEM => trio_semaphore_close(*h),
            K_SENDER => trio_channel_close_sender(*h),
            K_RECEIVER => trio_channel_close_receiver(*h),
            K_TCP_STREAM | K_TCP_LISTENER | K_UNIX_STREAM | K_UNIX_LISTENER => trio_close(*h),
            _ => TRIO_EBADHANDLE,
        };
        if rc != TRIO_EBADHANDLE {
            fail(format!("handle {h:#x} still works after its run ended: {}", name(rc)));
        }
    }
    for p in &paths {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) };
    }
    trio_set_stack_size(256 * 1024);
    let fds_after = open_fds();
    if fds_after != fds_before {
        fail(format!("file descriptors before the run: {fds_before:?}, after: {fds_after:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    fuzz_one(data);
});
