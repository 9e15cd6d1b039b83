#![cfg_attr(target_os = "wasi", allow(dead_code, unused_imports))]
//! The worker-thread pool behind `to_thread`: idle threads are reused, and
//! a thread idle for `IDLE_TIMEOUT` exits.
//!
//! When the last `trio::run` of the process ends, its idle workers are told
//! to exit and joined (so a program ends with no worker thread alive, which
//! is what valgrind and leak checkers want). A worker still reporting a
//! result to a run (between storing it and going back to the idle list: no
//! user code) is waited for first. A worker still running an abandoned call
//! cannot be joined: when it is done and no run is alive it exits on its own
//! (detached). Within one run, and across overlapping runs, workers are
//! reused as before; only a process that runs `trio::run` again and again
//! starts new threads for each run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for a job before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an idle worker is sent: a job, or `None` to exit.
type Msg = Option<Job>;

struct Idle {
    id: u64,
    tx: mpsc::Sender<Msg>,
}

struct Pool {
    /// Idle workers, most recently idle last.
    idle: Vec<Idle>,
    /// Every worker thread that may be joined, by id. A worker that exits
    /// on its own (timeout, or done after every run ended) takes its handle
    /// out and drops it (detaches).
    threads: Vec<(u64, JoinHandle<()>)>,
    /// Live `trio::run`s in the process.
    live_runs: usize,
    /// Workers between `reporting()` and being back on the idle list.
    reporting: usize,
    /// The end of the last run is waiting for `reporting` to reach 0: a
    /// worker done reporting goes idle (to be joined) even with no run
    /// alive.
    draining: bool,
}

static POOL: Mutex<Pool> =
    Mutex::new(Pool { idle: Vec::new(), threads: Vec::new(), live_runs: 0, reporting: 0, draining: false });
/// Signalled when `reporting` goes down.
static REPORTED: Condvar = Condvar::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a worker: its current job called `reporting()`.
    static IS_REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `job` on a worker thread: an idle one if there is one (most recently
/// idle first, as its cache is warm), else a new one.
///
/// # Errors
/// The OS error if a new thread cannot be started; `job` is dropped.
pub(crate) fn spawn_job(job: Job) -> std::io::Result<()> {
    let mut job = job;
    loop {
        let Some(worker) = pool().idle.pop() else { break };
        match worker.tx.send(Some(job)) {
            // The worker exited meanwhile; try the next one.
            Err(mpsc::SendError(Some(j))) => job = j,
            _ => return Ok(()),
        }
    }
    start_worker(job)
}

/// How many idle workers there are (for tests and statistics).
pub(crate) fn idle_workers() -> usize {
    pool().idle.len()
}

/// Called by a job on its worker thread once its work is done and before
/// it tells the run (so before the run can end because of it): from here
/// until the worker is back on the idle list, the end of the last run waits
/// for it, so that it can be joined.
pub(crate) fn reporting() {
    if IS_REPORTING.try_with(|r| r.replace(true)) == Ok(false) {
        pool().reporting += 1;
    }
}

/// Counts a live run from `enter` until it is dropped; the drop of the last
/// one joins the idle workers.
pub(crate) struct RunGuard(());

impl RunGuard {
    pub(crate) fn enter() -> RunGuard {
        pool().live_runs += 1;
        RunGuard(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut p = pool();
        p.live_runs -= 1;
        if p.live_runs > 0 {
            return;
        }
        // Bounded: a reporting worker runs no user code before it is back.
        p.draining = true;
        while p.reporting > 0 && p.live_runs == 0 {
            p = REPORTED.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        p.draining = false;
        if p.live_runs > 0 {
            // A new run started meanwhile: it may use them.
            return;
        }
        let idle = std::mem::take(&mut p.idle);
        let mut handles = Vec::with_capacity(idle.len());
        for w in &idle {
            if let Some(i) = p.threads.iter().position(|t| t.0 == w.id) {
                handles.push(p.threads.swap_remove(i).1);
            }
        }
        drop(p);
        for w in idle {
            // A worker that timed out meanwhile is gone already: fine.
            let _ = w.tx.send(None);
        }
        for h in handles {
            // Jobs catch their own panics; a join error has nothing to report.
            let _ = h.join();
        }
    }
}

/// WASI has no threads: `to_thread` reports it instead of std's generic
/// "unsupported" from `thread::spawn`.
#[cfg(target_os = "wasi")]
fn start_worker(_first: Job) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "to_thread: WASI has no threads to run blocking work on"))
}

#[cfg(not(target_os = "wasi"))]
fn start_worker(first: Job) -> std::io::Result<()> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Msg>();
    // Held while spawning, so the handle is listed before the worker could
    // look for it.
    let mut p = pool();
    let handle = std::thread::Builder::new().name(format!("trio-worker-{id}")).spawn(move || {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            // Jobs catch their own panics; a panic here would only end this
            // worker, never the pool.
            job();
            {
                let mut p = pool();
                if IS_REPORTING.with(|r| r.replace(false)) {
                    p.reporting -= 1;
                    REPORTED.notify_all();
                }
                if p.live_runs == 0 && !p.draining {
                    // Done after every run ended (an abandoned call): nobody
                    // will give this worker a job nor join it.
                    detach(&mut p, id);
                    return;
                }
                p.idle.push(Idle { id, tx: tx.clone() });
            }
            next = match rx.recv_timeout(IDLE_TIMEOUT) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    let mut p = pool();
                    if let Some(i) = p.idle.iter().position(|w| w.id == id) {
                        p.idle.swap_remove(i);
                        detach(&mut p, id);
                        None
                    } else {
                        // Someone took us off the list: a job (or the
                        // request to exit, with a join) is on its way.
                        drop(p);
                        rx.recv().ok().flatten()
                    }
                }
                Err(RecvTimeoutError::Disconnected) => None,
            };
        }
    })?;
    p.threads.push((id, handle));
    Ok(())
}

/// Drops the handle of worker `id` (which is exiting on its own).
fn detach(p: &mut Pool, id: u64) {
    if let Some(i) = p.threads.iter().position(|t| t.0 == id) {
        drop(p.threads.swap_remove(i).1);
    }
}
