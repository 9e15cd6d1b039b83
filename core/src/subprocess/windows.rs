//! The Windows parts of `subprocess`: named pipes whose parent's end is
//! read and written through the run's I/O completion port (the driver's
//! [`WinPipe`]), and waiting for a child through the system thread pool
//! (`RegisterWaitForSingleObject`), which wakes the waiting task through
//! the run's cross-thread queue.

use std::collections::hash_map::RandomState;
use std::ffi::c_void;
use std::hash::BuildHasher;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_PIPE_BUSY, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, PIPE_ACCESS_INBOUND,
    PIPE_ACCESS_OUTBOUND,
};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{
    INFINITE, RegisterWaitForSingleObject, UnregisterWaitEx, WT_EXECUTEONLYONCE,
};

use crate::driver::{RawSource, WinPipe};
use crate::error::{Error, Result};
use crate::io::IoHandle;
use crate::lowlevel::{self, Abort, WakeToken};
use crate::runtime;
use crate::thread::{TrioToken, current_trio_token};

/// What a child's standard stream can be given as (see `Redirect::Handle`).
pub(super) type OwnedStdio = OwnedHandle;

/// The parent's end of a pipe: a named pipe opened for overlapped I/O.
/// Dropping it drops the stream's hold on it (see the driver's `WinPipe`).
#[derive(Debug)]
pub(super) struct PipeHandle(WinPipe);

impl PipeHandle {
    fn new(handle: OwnedHandle) -> PipeHandle {
        PipeHandle(WinPipe::new(handle))
    }

    pub(super) fn raw(&self) -> RawHandle {
        self.0.raw_handle()
    }

    /// Hands the pipe to the current run's driver and registers it.
    pub(super) fn register(&self) -> Result<IoHandle> {
        let source: RawSource = self.0.source();
        runtime::with(|rt| rt.driver.adopt_pipe(&self.0))?;
        IoHandle::new(source).inspect_err(|_| {
            let _ = runtime::with(|rt| rt.driver.forget_pipe(source));
        })
    }
}

/// Takes what the pipe's completed read holds (`Ok(0)` at end of stream).
pub(super) fn read(h: &PipeHandle, buf: &mut [u8]) -> io::Result<usize> {
    h.0.read(buf)
}

/// Starts writing (part of) `buf`.
pub(super) fn write(h: &PipeHandle, buf: &[u8]) -> io::Result<usize> {
    h.0.write(buf)
}

/// A pipe for `open_pipe`: `(read, write)`, both ends overlapped.
pub(super) fn anonymous_pipe() -> io::Result<(PipeHandle, PipeHandle)> {
    let (server, client) = named_pipe(true, true)?;
    Ok((PipeHandle::new(server), PipeHandle::new(client)))
}

/// A pipe between the parent and a child: `(child's end, parent's end)`
/// (`parent_reads`: the child writes into it). The child's end is
/// synchronous and not inheritable: `std` gives the child an inheritable
/// duplicate of it.
pub(super) fn pipe_for_child(parent_reads: bool) -> io::Result<(OwnedStdio, PipeHandle)> {
    let (server, client) = named_pipe(parent_reads, false)?;
    Ok((client, PipeHandle::new(server)))
}

/// A duplicate of the parent's stdout (for `stderr = Redirect::Stdout`
/// with stdout inherited); `None` if the parent has none.
pub(super) fn dup_parent_stdout() -> io::Result<Option<OwnedStdio>> {
    let out = std::io::stdout();
    let h = out.as_handle();
    let raw = h.as_raw_handle();
    if raw.is_null() || raw == INVALID_HANDLE_VALUE {
        return Ok(None);
    }
    h.try_clone_to_owned().map(Some)
}

/// Pipes made by this process so far (part of each pipe's name).
static PIPES_MADE: AtomicU64 = AtomicU64::new(0);

/// How many names are tried before giving up, should each be taken.
const NAME_ATTEMPTS: usize = 8;

/// A named pipe with a unique name, one instance: `(server, client)`. The
/// server end (made with `CreateNamedPipeW`) is overlapped, inbound if
/// `server_reads`, else outbound; the client end (opened with
/// `CreateFileW`, which connects it) goes the other way, overlapped if
/// `client_overlapped`. Neither is inheritable.
fn named_pipe(server_reads: bool, client_overlapped: bool) -> io::Result<(OwnedHandle, OwnedHandle)> {
    let (open_mode, client_access) =
        if server_reads { (PIPE_ACCESS_INBOUND, GENERIC_WRITE) } else { (PIPE_ACCESS_OUTBOUND, GENERIC_READ) };
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..NAME_ATTEMPTS {
        let counter = PIPES_MADE.fetch_add(1, Ordering::Relaxed);
        // A fresh random key per call (std's hash keys are seeded from the
        // OS's random source), so that another process cannot guess the
        // name and take it first.
        let random = RandomState::new().hash_one(counter);
        let name = format!(r"\\.\pipe\trio-{}-{counter}-{random:016x}", std::process::id());
        let wide: Vec<u16> = name.encode_utf16().chain(Some(0)).collect();
        // SAFETY: a NUL-terminated name; no security attributes (default
        // security, not inheritable).
        let server = unsafe {
            CreateNamedPipeW(
                wide.as_ptr(),
                open_mode | FILE_FLAG_FIRST_PIPE_INSTANCE | FILE_FLAG_OVERLAPPED,
                PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                1,
                PIPE_BUFFER,
                PIPE_BUFFER,
                0,
                std::ptr::null(),
            )
        };
        if server == INVALID_HANDLE_VALUE {
            let e = io::Error::last_os_error();
            // The name exists already: try another one.
            if matches!(e.raw_os_error(), Some(c) if c == ERROR_ACCESS_DENIED as i32 || c == ERROR_PIPE_BUSY as i32) {
                last = e;
                continue;
            }
            return Err(e);
        }
        // SAFETY: a handle just made, owned by nobody else.
        let server = unsafe { OwnedHandle::from_raw_handle(server as RawHandle) };
        let flags = if client_overlapped { FILE_FLAG_OVERLAPPED } else { 0 };
        // SAFETY: the same name; no security attributes (not inheritable);
        // opening the one listening instance connects it.
        let client = unsafe {
            CreateFileW(wide.as_ptr(), client_access, 0, std::ptr::null(), OPEN_EXISTING, flags, std::ptr::null_mut())
        };
        if client == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a handle just opened, owned by nobody else.
        let client = unsafe { OwnedHandle::from_raw_handle(client as RawHandle) };
        return Ok((server, client));
    }
    Err(last)
}

/// The buffer size asked for each direction of a pipe (the OS treats it
/// as a hint).
const PIPE_BUFFER: u32 = 64 * 1024;

/// A [`WakeToken`] that may travel through the thread pool. It is plain
/// data (record indices and generations), and it is used only on the run's
/// thread: the callback queued by [`TrioToken::run_sync_soon`] unparks it
/// there.
struct SendToken(WakeToken);

// SAFETY: see the type's docs: only carried across threads, used on the
// run's thread.
unsafe impl Send for SendToken {}

/// What a thread-pool wait shares with the task waiting.
struct Shared {
    trio: TrioToken,
    state: Mutex<WaitState>,
}

#[derive(Default)]
struct WaitState {
    /// The process has exited (the thread pool's callback ran).
    exited: bool,
    /// The parked task, once it parked and until it is woken.
    waiter: Option<SendToken>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes `t` on the run's thread soon. A run that has finished has
    /// nobody left to wake.
    fn wake(&self, t: SendToken) {
        let _ = self.trio.run_sync_soon(move || {
            let t = t;
            lowlevel::unpark(t.0);
        });
    }
}

/// The thread pool's callback: the process has exited.
///
/// # Safety
/// `ctx` is the `Shared` of a live [`PoolWait`] (which unregisters the
/// wait, waiting for this callback, before it lets the `Shared` go).
unsafe extern "system" fn exited(ctx: *mut c_void, _timed_out: bool) {
    // SAFETY: see the function's docs.
    let shared = unsafe { &*(ctx as *const Shared) };
    let waiter = {
        let mut st = shared.lock();
        st.exited = true;
        st.waiter.take()
    };
    if let Some(t) = waiter {
        shared.wake(t);
    }
}

/// One registration of a process handle with the thread pool's waits.
struct PoolWait {
    wait: HANDLE,
    shared: Arc<Shared>,
}

impl PoolWait {
    fn new(process: HANDLE, trio: TrioToken) -> io::Result<PoolWait> {
        let shared = Arc::new(Shared { trio, state: Mutex::new(WaitState::default()) });
        let mut wait: HANDLE = std::ptr::null_mut();
        // SAFETY: `process` is the live handle of our child (its `Child`
        // outlives this wait); `ctx` stays valid until `Drop` has
        // unregistered the wait and waited for the callback.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                process,
                Some(exited),
                Arc::as_ptr(&shared).cast(),
                INFINITE,
                WT_EXECUTEONLYONCE,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PoolWait { wait, shared })
    }
}

impl Drop for PoolWait {
    fn drop(&mut self) {
        // SAFETY: a wait we registered and have not unregistered;
        // INVALID_HANDLE_VALUE makes the call wait for a running callback,
        // so none touches `shared` after this.
        unsafe { UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE) };
    }
}

/// What `Process::wait` waits with: the child's process handle (owned by
/// its `Child`, which outlives every wait).
#[derive(Debug)]
pub(super) struct ExitWaiter {
    process: usize,
}

impl ExitWaiter {
    pub(super) fn new(child: &Child) -> ExitWaiter {
        ExitWaiter { process: child.as_raw_handle() as usize }
    }

    /// Waits until the child has exited: `Ok(true)`. A checkpoint.
    pub(super) async fn wait_exit(&self) -> Result<bool> {
        let trio = current_trio_token()?;
        let pool = PoolWait::new(self.process as HANDLE, trio).map_err(Error::Io)?;
        let shared = pool.shared.clone();
        lowlevel::park(
            |token| {
                let mut st = shared.lock();
                if st.exited {
                    // Exited before we parked: the callback found nobody
                    // to wake, so wake ourselves (on the run's thread,
                    // after this registration).
                    drop(st);
                    shared.wake(SendToken(token));
                } else {
                    st.waiter = Some(SendToken(token));
                }
            },
            // Dropping `pool` (below, or with this future) unregisters the
            // wait; a wakeup queued meanwhile finds the token stale.
            || Abort::Succeeded,
        )
        .await?;
        drop(pool);
        Ok(true)
    }

    /// Nothing to release: the wait is unregistered when it ends.
    pub(super) fn reaped(&self) {}
}

/// The end of a `Process` dropped while its child runs: `TerminateProcess`,
/// and the handle is closed (Windows keeps no zombie to reap).
pub(super) fn kill_and_reap_in_background(mut child: Child) {
    let _ = child.kill();
    drop(child);
}
