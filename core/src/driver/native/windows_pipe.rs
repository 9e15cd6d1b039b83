//! Named pipes on the native backend's Windows side (the parent's ends of
//! a child's stdin, stdout and stderr).
//!
//! mio turns a named pipe's overlapped I/O into readiness with buffers of
//! its own: a read is always in flight (its completion makes the pipe
//! readable, and `read` then copies from mio's buffer), and `write` copies
//! the data into a buffer, starts an overlapped write and returns at once
//! (its completion makes the pipe writable again; an error is reported by
//! the next write). Every completion comes as an event through the port,
//! so a pipe needs no re-arming: `arm` does nothing for it.
//!
//! The pipe is shared: the driver holds it from [`NativeDriver::adopt_pipe`]
//! until the engine deregisters it (mio's registration needs the pipe
//! itself), the stream holds it to read and write. Dropping the last holder
//! cancels mio's pending read; mio keeps its buffers alive until the
//! cancelled operations complete through the port, and the handle is closed
//! then.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::windows::io::{AsRawHandle, FromRawHandle, IntoRawHandle, OwnedHandle};
use std::rc::Rc;

use mio::Token;
use mio::windows::NamedPipe;

use super::NativeDriver;
use crate::driver::RawSource;

/// The most one `write` hands to mio: it copies what it is given into a
/// buffer of its own, so an unbounded write would copy all of a large
/// `send_all` at once.
const MAX_WRITE: usize = 64 * 1024;

/// One end of a named pipe opened for overlapped I/O, watched by the
/// run's driver once registered (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct WinPipe(Rc<RefCell<NamedPipe>>);

impl WinPipe {
    /// Takes over `handle`: an end of a named pipe opened with
    /// `FILE_FLAG_OVERLAPPED`, associated with no completion port yet.
    pub(crate) fn new(handle: OwnedHandle) -> WinPipe {
        // SAFETY: the handle is open and ours (we consume its ownership),
        // and, as documented, overlapped and not associated with a port.
        let pipe = unsafe { NamedPipe::from_raw_handle(handle.into_raw_handle()) };
        WinPipe(Rc::new(RefCell::new(pipe)))
    }

    /// The handle, as the engine's source number.
    pub(crate) fn source(&self) -> RawSource {
        self.0.borrow().as_raw_handle() as usize as RawSource
    }

    /// The raw handle.
    pub(crate) fn raw_handle(&self) -> std::os::windows::io::RawHandle {
        self.0.borrow().as_raw_handle()
    }

    /// Reads what mio's completed read holds: `Ok(0)` at end of stream,
    /// `WouldBlock` while the read is in flight.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0.borrow()).read(buf)
    }

    /// Starts writing up to [`MAX_WRITE`] bytes of `buf` (all of them are
    /// taken if `Ok`); `WouldBlock` while the previous write is in flight.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_WRITE);
        (&*self.0.borrow()).write(&buf[..n])
    }
}

impl NativeDriver {
    /// Holds `pipe` for the registration of its source that follows (the
    /// engine's `register`). Forgotten again by `deregister`, or by
    /// [`forget_pipe`](Self::forget_pipe) if the registration never came.
    pub(crate) fn adopt_pipe(&mut self, pipe: &WinPipe) {
        self.pipes.insert(pipe.source(), pipe.clone());
    }

    /// Drops a pipe adopted but never registered.
    pub(crate) fn forget_pipe(&mut self, source: RawSource) {
        self.pipes.remove(&source);
    }

    /// `register` for an adopted pipe; `None` if `source` is not one.
    pub(super) fn pipe_register(&mut self, source: RawSource, token: usize) -> Option<io::Result<()>> {
        let pipe = self.pipes.get(&source)?;
        let Ok(mut pipe) = pipe.0.try_borrow_mut() else {
            return Some(Err(io::Error::other("the pipe is in use")));
        };
        let r =
            self.poll.registry().register(&mut *pipe, Token(token), mio::Interest::READABLE | mio::Interest::WRITABLE);
        drop(pipe);
        if r.is_err() {
            self.pipes.remove(&source);
        }
        Some(r)
    }

    /// `deregister` for an adopted pipe; `None` if `source` is not one.
    pub(super) fn pipe_deregister(&mut self, source: RawSource) -> Option<io::Result<()>> {
        let pipe = self.pipes.remove(&source)?;
        let r = match pipe.0.try_borrow_mut() {
            Ok(mut p) => self.poll.registry().deregister(&mut *p),
            Err(_) => Err(io::Error::other("the pipe is in use")),
        };
        Some(r)
    }

    /// Whether `source` is an adopted pipe (which `arm` leaves alone).
    pub(super) fn is_pipe(&self, source: RawSource) -> bool {
        !self.pipes.is_empty() && self.pipes.contains_key(&source)
    }
}
