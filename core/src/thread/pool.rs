#![cfg_attr(target_os = "wasi", allow(dead_code, unused_imports))]
//! The worker-thread pool behind `to_thread`: idle threads are reused, and
//! a thread idle for `IDLE_TIMEOUT` exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle worker waits for a job before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

struct Idle {
    id: u64,
    tx: mpsc::Sender<Job>,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    IDLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `job` on a worker thread: an idle one if there is one (most recently
/// idle first, as its cache is warm), else a new one.
///
/// # Errors
/// The OS error if a new thread cannot be started; `job` is dropped.
pub(crate) fn spawn_job(job: Job) -> std::io::Result<()> {
    let mut job = job;
    loop {
        let Some(worker) = idle().pop() else { break };
        match worker.tx.send(job) {
            Ok(()) => return Ok(()),
            // The worker exited meanwhile; try the next one.
            Err(mpsc::SendError(j)) => job = j,
        }
    }
    start_worker(job)
}

/// How many idle workers there are (for tests and statistics).
pub(crate) fn idle_workers() -> usize {
    idle().len()
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
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new().name(format!("trio-worker-{id}")).spawn(move || {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            // Jobs catch their own panics; a panic here would only end this
            // worker, never the pool.
            job();
            idle().push(Idle { id, tx: tx.clone() });
            next = match rx.recv_timeout(IDLE_TIMEOUT) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    let mut list = idle();
                    if let Some(i) = list.iter().position(|w| w.id == id) {
                        list.swap_remove(i);
                        None
                    } else {
                        // Someone took us off the list: a job is on its way.
                        drop(list);
                        rx.recv().ok()
                    }
                }
                Err(RecvTimeoutError::Disconnected) => None,
            };
        }
    })?;
    Ok(())
}
