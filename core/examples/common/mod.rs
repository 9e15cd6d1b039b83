//! Status lines for the example servers that can neither kill nor stall
//! them (stdout through [`say`], stderr through [`warn`]).
//!
//! `println!` panics when stdout is gone (`server | head -1`: "failed
//! printing to stdout: Broken pipe", which would end the whole run) and
//! blocks the thread, so every connection, when stdout is a pipe nobody
//! reads and its buffer is full (`eprintln!` likewise). [`say`] and
//! [`warn`] instead hand the line to one
//! writer thread through a bounded queue of [`QUEUE`] lines: when the queue
//! is full the line is dropped and counted ([`dropped`]), and the writer
//! ignores write errors (EPIPE, ENOSPC, ...; Rust ignores SIGPIPE, so a
//! closed pipe is an error, not a signal). stdout itself is left as it is
//! (neither is made non-blocking: that would change the parent's pipe too).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How many lines may wait for the writer thread.
pub(crate) const QUEUE: usize = 1024;

/// The queue's sending side (`None` once closed, or if no thread could
/// start); each line with `true` for stderr.
type Queue = Mutex<Option<SyncSender<(bool, String)>>>;

static SENDER: OnceLock<Queue> = OnceLock::new();
static DONE: OnceLock<Mutex<Receiver<()>>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn sender() -> &'static Queue {
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<(bool, String)>(QUEUE);
        let (done_tx, done_rx) = sync_channel(1);
        let _ = DONE.set(Mutex::new(done_rx));
        let spawned = std::thread::Builder::new().name("stdout".into()).spawn(move || {
            for (to_stderr, line) in rx {
                // Errors are ignored: the server goes on without its log.
                let _ = if to_stderr {
                    writeln!(std::io::stderr().lock(), "{line}")
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").and_then(|()| out.flush())
                };
            }
            let _ = done_tx.send(());
        });
        Mutex::new(spawned.ok().map(|_| tx))
    })
}

/// Queues `line` for stdout; never blocks, never panics. A line that does
/// not fit in the queue is dropped and counted.
pub(crate) fn say(line: impl Into<String>) {
    queue(false, line.into());
}

/// [`say`] for stderr (same queue, so the order of the two is kept).
pub(crate) fn warn(line: impl Into<String>) {
    queue(true, line.into());
}

fn queue(to_stderr: bool, line: String) {
    let guard = sender().lock().unwrap_or_else(|e| e.into_inner());
    let sent = match guard.as_ref() {
        Some(tx) => match tx.try_send((to_stderr, line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        },
        None => false,
    };
    if !sent {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many lines [`say`] has dropped so far.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Closes the queue and waits up to `limit` for the writer to print what
/// is in it (it may be stuck on a full pipe: then the rest is lost).
pub(crate) fn finish(limit: Duration) {
    let tx = sender().lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(tx);
    if let Some(done) = DONE.get() {
        let _ = done.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(limit);
    }
}
