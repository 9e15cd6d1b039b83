//! Standard input and output as trio streams, on WASI preview 1 only
//! (`wasm32-wasip1`): [`stdin`] is a [`ReceiveStream`] and [`stdout`] a
//! [`SendStream`]. Waiting for them parks the task in the run's
//! `poll_oneoff` (an `fd_read`/`fd_write` subscription on descriptor 0 or
//! 1), so other tasks and timers keep running meanwhile, where a plain
//! `std::io::stdin().read` would stop the whole guest.
//!
//! # How it works, and why
//!
//! The descriptors are not made non-blocking: hosts need not support it
//! (wasmtime 46 answers `fd_fdstat_set_flags` on descriptors 0 to 2 with
//! `EBADF`, in both of its preview 1 implementations), and where they do, the flag belongs to the open file the
//! host shares with its parent (a terminal, say) and would make `std`'s own
//! `println!` fail with `WouldBlock`. So every operation first waits until
//! `poll_oneoff` reports the descriptor ready (the wait is the checkpoint),
//! then makes a single call that the readiness report says will not block:
//!
//! - a read of at least 16 KiB (bytes beyond the caller's buffer are kept
//!   for the next `receive_some`): wasmtime's legacy preview 1 (`wasi-common`)
//!   reads the guest's stdin through Rust's `std::io::stdin()`, whose 8 KiB
//!   buffer would otherwise keep bytes that the host's `poll(2)` cannot
//!   see, and the guest would wait for them; reads this large bypass that
//!   buffer;
//! - a write of at most 4096 bytes (`PIPE_BUF`: a pipe that polls writable
//!   has room for that much), until all the data is written.
//!
//! A readiness report can still be spurious on some hosts; a descriptor
//! that turns out non-blocking and answers `EAGAIN` just waits again.
//!
//! Under wasmtime 46 both preview 1 implementations work with pipes,
//! regular files and terminals. One exception: the legacy one
//! (`-Spreview2=n`) asks the host for the number of readable bytes
//! (`FIONREAD`) when stdin polls ready, which fails for `/dev/null` and
//! makes wasmtime trap (it kills the guest); nothing in the guest can tell
//! `/dev/null` from a pipe there. The default implementation reads
//! `/dev/null` as an empty input.
//!
//! These streams write and read the descriptors directly: bytes that `std`
//! buffered (`print!` without a newline, a `std::io::stdin()` reader) are
//! not seen; flush or avoid mixing them. Closing a stream ends its use by
//! this object only: the descriptor stays open (`std`'s stdio keeps
//! working; the reader of stdout sees end of file when the guest exits).

use std::cell::{Cell, RefCell};
use std::io;

use crate::abc::{AsyncResource, ReceiveStream, SendStream};
use crate::driver::wasi_p1::errno;
use crate::error::{Error, Result};
use crate::io::{BusyGuard, check_send, note_broken, notify_closing, to_broken, wait_readable, wait_writable};
use crate::lowlevel;

const STDIN: u32 = 0;
const STDOUT: u32 = 1;
/// The smallest read from stdin (see the module docs).
const MIN_READ: usize = 16 * 1024;
/// The largest write to stdout after one readiness report (`PIPE_BUF`).
const MAX_WRITE: usize = 4096;

/// Standard input (descriptor 0) as a [`ReceiveStream`]; see the module
/// docs. Use it inside `trio::run`. Several `Stdin` values may exist, but
/// only one task at a time may receive from standard input (another gets
/// `Busy`).
pub fn stdin() -> Stdin {
    Stdin {
        receiving: Cell::new(false),
        closed: Cell::new(false),
        eof: Cell::new(false),
        pending: RefCell::new(Vec::new()),
        pending_pos: Cell::new(0),
    }
}

/// Standard output (descriptor 1) as a [`SendStream`]; see the module docs.
/// Use it inside `trio::run`.
pub fn stdout() -> Stdout {
    Stdout { sending: Cell::new(false), closed: Cell::new(false), broken: Cell::new(false) }
}

/// Standard input: see [`stdin`].
#[derive(Debug)]
pub struct Stdin {
    receiving: Cell<bool>,
    closed: Cell<bool>,
    /// End of file was seen: every later receive returns 0.
    eof: Cell<bool>,
    /// Bytes read beyond a caller's buffer, from `pending_pos` on.
    pending: RefCell<Vec<u8>>,
    pending_pos: Cell<usize>,
}

impl Stdin {
    /// Copies kept bytes into `buf`; how many (0 if none are kept).
    fn take_pending(&self, buf: &mut [u8]) -> usize {
        let pending = self.pending.borrow();
        let pos = self.pending_pos.get();
        let n = (pending.len() - pos).min(buf.len());
        buf[..n].copy_from_slice(&pending[pos..pos + n]);
        self.pending_pos.set(pos + n);
        n
    }

    /// One `fd_read` into `buf`, or into the keep buffer if `buf` is small.
    fn read_once(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() >= MIN_READ {
            return fd_read(STDIN, buf);
        }
        let n = {
            let mut pending = self.pending.borrow_mut();
            pending.resize(MIN_READ, 0);
            let n = fd_read(STDIN, &mut pending)?;
            pending.truncate(n);
            n
        };
        self.pending_pos.set(0);
        if n == 0 {
            return Ok(0);
        }
        Ok(self.take_pending(buf))
    }
}

impl AsyncResource for Stdin {
    /// Stops using standard input through this object (a task waiting in
    /// `receive_some` wakes with `Closed`); the descriptor stays open.
    async fn aclose(&self) -> Result<()> {
        if !self.closed.replace(true) {
            self.pending.borrow_mut().clear();
            self.pending_pos.set(0);
            // Wakes a waiter of ours; nobody else should wait on stdin.
            notify_closing(STDIN)?;
        }
        lowlevel::checkpoint().await
    }
}

impl ReceiveStream for Stdin {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        if self.closed.get() {
            return Err(Error::Closed);
        }
        if buf.is_empty() {
            return Err(crate::abc::empty_buffer_error());
        }
        if self.pending_pos.get() < self.pending.borrow().len() || self.eof.get() {
            lowlevel::checkpoint().await?;
            if self.closed.get() {
                return Err(Error::Closed);
            }
            return Ok(self.take_pending(buf));
        }
        loop {
            wait_readable(STDIN).await?;
            if self.closed.get() {
                return Err(Error::Closed);
            }
            match self.read_once(buf) {
                Ok(0) => {
                    self.eof.set(true);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
                // A spurious report (on a non-blocking descriptor): wait again.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(to_broken(Error::Io(e))),
            }
        }
    }
}

/// Standard output: see [`stdout`].
#[derive(Debug)]
pub struct Stdout {
    sending: Cell<bool>,
    closed: Cell<bool>,
    /// A `send_all` was cancelled midway, or the reader is gone.
    broken: Cell<bool>,
}

impl AsyncResource for Stdout {
    /// Stops using standard output through this object (a task waiting in
    /// `send_all` wakes with `Closed`); the descriptor stays open.
    async fn aclose(&self) -> Result<()> {
        if !self.closed.replace(true) {
            notify_closing(STDOUT)?;
        }
        lowlevel::checkpoint().await
    }
}

impl SendStream for Stdout {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        check_send(self.closed.get(), &self.broken)?;
        if data.is_empty() {
            return lowlevel::checkpoint().await;
        }
        let mut sent = 0;
        while sent < data.len() {
            if let Err(e) = wait_writable(STDOUT).await {
                return Err(note_broken(e, sent, &self.broken));
            }
            if self.closed.get() {
                return Err(Error::Closed);
            }
            let end = data.len().min(sent + MAX_WRITE);
            match fd_write(STDOUT, &data[sent..end]) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(note_broken(Error::Io(e), sent, &self.broken)),
            }
        }
        Ok(())
    }

    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        if self.closed.get() {
            return Err(Error::Closed);
        }
        wait_writable(STDOUT).await
    }
}

fn fd_read(fd: u32, buf: &mut [u8]) -> io::Result<usize> {
    let iov = wasi::Iovec { buf: buf.as_mut_ptr(), buf_len: buf.len() };
    // SAFETY: one iovec over a live, writable buffer.
    unsafe { wasi::fd_read(fd, &[iov]) }.map_err(errno)
}

fn fd_write(fd: u32, buf: &[u8]) -> io::Result<usize> {
    let iov = wasi::Ciovec { buf: buf.as_ptr(), buf_len: buf.len() };
    // SAFETY: one iovec over a live buffer.
    unsafe { wasi::fd_write(fd, &[iov]) }.map_err(errno)
}
