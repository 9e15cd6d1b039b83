#![cfg_attr(target_os = "wasi", allow(dead_code, unused_imports))]
//! The worker-thread pool behind `to_thread`: idle threads are reused, and
//! a thread idle for `IDLE_TIMEOUT` exits.
//!
//! When the last `trio::run` of the process ends, its idle workers are told
//! to exit and joined (so a program ends with no worker thread alive, which
//! is what valgrind and leak checkers want). A worker goes back on the idle
//! list as soon as its work is done and before it tells the run, so every
//! result a run has seen came from a worker already on the list (joined
//! once it has finished telling: no user code). A worker still running an abandoned call
//! cannot be joined: when it is done and no run is alive it exits on its own
//! (detached). Within one run, and across overlapping runs, workers are
//! reused as before; only a process that runs `trio::run` again and again
//! starts new threads for each run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for a job before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a worker that just went idle polls for its next job before it
/// sleeps. A caller that runs `to_thread` calls back to back sends the next
/// one within a few microseconds of hearing of the last; a worker still
/// awake takes it without a wake-up, and a wake-up across CPUs costs
/// 10–20 µs (and more CPU time than this spin) on a virtual machine. See
/// `docs/PERFORMANCE.md`.
const SPIN: Duration = Duration::from_micros(20);

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
}

static POOL: Mutex<Pool> = Mutex::new(Pool { idle: Vec::new(), threads: Vec::new(), live_runs: 0 });
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a worker: its id and the sender of its job channel, for
    /// [`idle_now`].
    static WORKER: std::cell::RefCell<Option<Idle>> = const { std::cell::RefCell::new(None) };
    /// On a worker: its current job called [`idle_now`] (the worker is on
    /// the idle list, or detached, already).
    static WENT_IDLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
/// it tells the run: puts the worker back on the idle list now, so that the
/// run's next job goes to this thread, still awake, rather than waking
/// another one (or detaches the worker if no run is alive). From here to the
/// worker's wait for its next job no user code runs, so the end of the last
/// run, which joins idle workers, waits at most for the rest of this job's
/// report. Without this call the worker goes idle when the job returns.
pub(crate) fn idle_now() {
    if WENT_IDLE.try_with(|w| w.replace(true)) == Ok(false) {
        let _ = WORKER.try_with(|w| {
            if let Some(me) = w.borrow().as_ref() {
                go_idle(&mut pool(), me);
            }
        });
    }
}

/// Puts worker `me` on the idle list, or, after every run ended (an
/// abandoned call finishing), detaches it: nobody will give it a job nor
/// join it. Says whether it is on the list.
fn go_idle(p: &mut Pool, me: &Idle) -> bool {
    if p.live_runs == 0 {
        detach(p, me.id);
        return false;
    }
    p.idle.push(Idle { id: me.id, tx: me.tx.clone() });
    true
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
        WORKER.with_borrow_mut(|w| *w = Some(Idle { id, tx: tx.clone() }));
        let mut next = Some(first);
        while let Some(job) = next.take() {
            // Jobs catch their own panics; a panic here would only end this
            // worker, never the pool.
            job();
            let idle = if WENT_IDLE.with(|w| w.replace(false)) {
                // `idle_now` put it on the list (or detached it).
                pool().threads.iter().any(|t| t.0 == id)
            } else {
                go_idle(&mut pool(), &Idle { id, tx: tx.clone() })
            };
            if !idle {
                return;
            }
            next = match spin_for_job(&rx).unwrap_or_else(|| rx.recv_timeout(IDLE_TIMEOUT)) {
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

/// Polls `rx` for up to [`SPIN`] (not at all with a single CPU, where the
/// spin would only hold back the thread that sends the job): the message,
/// or `None` to go to sleep on it.
fn spin_for_job(rx: &mpsc::Receiver<Msg>) -> Option<Result<Msg, RecvTimeoutError>> {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from)) < 2 {
        return None;
    }
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(msg) => return Some(Ok(msg)),
            Err(mpsc::TryRecvError::Disconnected) => return Some(Err(RecvTimeoutError::Disconnected)),
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < SPIN => {
                for _ in 0..4 {
                    std::hint::spin_loop();
                }
            }
            Err(mpsc::TryRecvError::Empty) => return None,
        }
    }
}

/// Drops the handle of worker `id` (which is exiting on its own).
fn detach(p: &mut Pool, id: u64) {
    if let Some(i) = p.threads.iter().position(|t| t.0 == id) {
        drop(p.threads.swap_remove(i).1);
    }
}
