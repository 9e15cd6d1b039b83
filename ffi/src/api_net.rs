//! Sockets: TCP and Unix-domain streams and listeners over `trio::net`.
//!
//! A stream handle is a TCP stream or a Unix stream; every stream function
//! takes either. A listener handle is a TCP or a Unix listener;
//! `trio_accept` takes either and gives a stream of the matching kind.
//! `trio_close` closes any of the four.

use std::ffi::{CStr, OsStr, c_char, c_void};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::error::{self, guard, set_error};
use crate::handle::{self, Kind, trio_handle_t};
use crate::task;

/// The kind bits of a handle (its top 8 bits, see `handle`).
fn kind_bits(h: trio_handle_t) -> u8 {
    (h >> 56) as u8
}

/// A stream handle's object.
enum Stream {
    Tcp(Rc<TcpStream>),
    Unix(Rc<UnixStream>),
}

/// The stream `h` names (TCP or Unix), or `TRIO_EBADHANDLE`.
fn lookup_stream(h: trio_handle_t) -> Result<Stream, i32> {
    if kind_bits(h) == Kind::UnixStream as u8 {
        handle::get::<UnixStream>(h, Kind::UnixStream).map(Stream::Unix)
    } else {
        handle::get::<TcpStream>(h, Kind::TcpStream).map(Stream::Tcp)
    }
}

/// 0 for `Ok(())`, the code otherwise.
fn status(r: Result<(), i32>) -> i32 {
    r.map_or_else(|c| c, |()| 0)
}

/// A C string argument as UTF-8, or `TRIO_EINVAL` naming `what`.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the result.
unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a CStr, i32> {
    if p.is_null() {
        return Err(set_error(error::TRIO_EINVAL, format_args!("{what} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated, as the caller promised.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// Writes `h` to `*out` and returns 0.
///
/// # Safety
/// `out` is non-null and writable.
unsafe fn put(out: *mut trio_handle_t, h: trio_handle_t) -> i32 {
    // SAFETY: as the caller promised.
    unsafe { *out = h };
    0
}

/// Starts listening for TCP connections on `host`:`port` and writes the
/// listener's handle to `*out`.
///
/// `host` is a numeric IPv4 or IPv6 address (`"0.0.0.0"` for every IPv4
/// interface, `"::"` for every IPv6 one) or `"localhost"`; NULL means
/// `"127.0.0.1"` (loopback only). Names are not looked up. Port 0 lets the
/// OS choose one (read it with `trio_listener_port`). `SO_REUSEADDR` is set.
/// Does not block, but needs a run.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL or `host` is not an address;
/// `TRIO_EIO` if the OS refuses (the port is in use, ...; the detail has
/// the OS message); `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `host` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_tcp_listen(host: *const c_char, port: u16, out: *mut trio_handle_t) -> i32 {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        let ip = if host.is_null() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            // SAFETY: non-null and NUL-terminated, as the caller promised.
            let host = unsafe { CStr::from_ptr(host) }.to_string_lossy();
            match host.as_ref() {
                "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                h => match h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        return set_error(
                            error::TRIO_EINVAL,
                            format_args!("host {h:?} is not a numeric IP address (nor \"localhost\")"),
                        );
                    }
                },
            }
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        match TcpListener::bind(SocketAddr::new(ip, port)) {
            // SAFETY: non-null, and the caller promised it is writable.
            Ok(l) => unsafe { put(out, handle::insert(Kind::TcpListener, l)) },
            Err(e) => error::from_error(&e),
        }
    })
}

/// Writes the local port of the TCP listener `listener` to `*out` (the one
/// the OS chose if it was opened with port 0). Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE` if
/// `listener` is not an open TCP listener; `TRIO_EIO` from the OS.
///
/// # Safety
/// `out` is NULL or points to a writable `uint16_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_listener_port(listener: trio_handle_t, out: *mut u16) -> i32 {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        let l = match handle::get::<TcpListener>(listener, Kind::TcpListener) {
            Ok(l) => l,
            Err(c) => return c,
        };
        match l.local_addr() {
            Ok(a) => {
                // SAFETY: non-null, and the caller promised it is writable.
                unsafe { *out = a.port() };
                0
            }
            Err(e) => error::from_error(&e),
        }
    })
}

/// Waits for a connection on `listener` (TCP or Unix) and writes the new
/// stream's handle (of the same family) to `*stream_out`.
///
/// Suspends the calling C task until a peer connects. Cancellation: returns
/// `TRIO_ECANCELED` and no connection is taken.
///
/// Returns 0; `TRIO_EINVAL` if `stream_out` is NULL; `TRIO_EBADHANDLE` if
/// `listener` is not an open listener; `TRIO_EBUSY` if another task is
/// already accepting on it; `TRIO_ECLOSED` if it was closed meanwhile;
/// `TRIO_EIO` from the OS (for example out of descriptors: retry later);
/// `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `stream_out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_accept(listener: trio_handle_t, stream_out: *mut trio_handle_t) -> i32 {
    guard(|| {
        if stream_out.is_null() {
            return set_error(error::TRIO_EINVAL, "stream_out is NULL");
        }
        let h = if kind_bits(listener) == Kind::UnixListener as u8 {
            let l = match handle::get::<UnixListener>(listener, Kind::UnixListener) {
                Ok(l) => l,
                Err(c) => return c,
            };
            match task::wait(l.accept()) {
                Ok(s) => handle::insert(Kind::UnixStream, s),
                Err(c) => return c,
            }
        } else {
            let l = match handle::get::<TcpListener>(listener, Kind::TcpListener) {
                Ok(l) => l,
                Err(c) => return c,
            };
            match task::wait(l.accept()) {
                Ok(s) => handle::insert(Kind::TcpStream, s),
                Err(c) => return c,
            }
        };
        // SAFETY: non-null, and the caller promised it is writable.
        unsafe { put(stream_out, h) }
    })
}

/// Connects to `host`:`port` over TCP and writes the stream's handle to
/// `*out`. `host` is a name or a numeric address; every address it resolves
/// to is tried, IPv6 and IPv4 interleaved, a new attempt starting every
/// 250 ms while earlier ones are pending ("happy eyeballs", RFC 8305); the
/// first to connect wins. `TCP_NODELAY` is on.
///
/// Suspends the calling C task (name lookup and connecting). Cancellation:
/// every attempt is abandoned and closed; returns `TRIO_ECANCELED`.
///
/// Returns 0; `TRIO_EINVAL` if `host` or `out` is NULL; `TRIO_EIO` if the
/// connection failed (refused, unreachable, unknown name; the detail has
/// the OS message); `TRIO_EGROUP` if several addresses were tried and all
/// failed (the detail lists them); `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `host` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_tcp_connect(host: *const c_char, port: u16, out: *mut trio_handle_t) -> i32 {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        // SAFETY: NULL or NUL-terminated, as the caller promised.
        let host = match unsafe { c_str(host, "host") } {
            Ok(h) => h.to_string_lossy().into_owned(),
            Err(c) => return c,
        };
        match task::wait(trio::net::open_tcp_stream(&host, port)) {
            // SAFETY: non-null, and the caller promised it is writable.
            Ok(s) => unsafe { put(out, handle::insert(Kind::TcpStream, s)) },
            Err(c) => c,
        }
    })
}

/// Starts listening for Unix-domain stream connections at the filesystem
/// path `path` (which must not exist yet; it is not removed on close) and
/// writes the listener's handle to `*out`. Does not block, but needs a run.
///
/// Returns 0; `TRIO_EINVAL` if `path` or `out` is NULL; `TRIO_EIO` from the
/// OS (the path exists, is too long, ...); `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_unix_listen(path: *const c_char, out: *mut trio_handle_t) -> i32 {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        // SAFETY: NULL or NUL-terminated, as the caller promised.
        let path = match unsafe { c_str(path, "path") } {
            Ok(p) => Path::new(OsStr::from_bytes(p.to_bytes())),
            Err(c) => return c,
        };
        if let Err(c) = task::current_task() {
            return c;
        }
        match UnixListener::bind(path) {
            // SAFETY: non-null, and the caller promised it is writable.
            Ok(l) => unsafe { put(out, handle::insert(Kind::UnixListener, l)) },
            Err(e) => error::from_error(&e),
        }
    })
}

/// Connects to the Unix-domain stream socket at `path` and writes the
/// stream's handle to `*out`.
///
/// Suspends the calling C task (rarely for long). Cancellation: the
/// half-made socket is closed; returns `TRIO_ECANCELED`.
///
/// Returns 0; `TRIO_EINVAL` if `path` or `out` is NULL; `TRIO_EIO` if the
/// connection failed (no such socket, refused; the detail has the OS
/// message); `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_unix_connect(path: *const c_char, out: *mut trio_handle_t) -> i32 {
    guard(|| {
        if out.is_null() {
            return set_error(error::TRIO_EINVAL, "out is NULL");
        }
        // SAFETY: NULL or NUL-terminated, as the caller promised.
        let path = match unsafe { c_str(path, "path") } {
            Ok(p) => Path::new(OsStr::from_bytes(p.to_bytes())).to_path_buf(),
            Err(c) => return c,
        };
        match task::wait(UnixStream::connect(path)) {
            // SAFETY: non-null, and the caller promised it is writable.
            Ok(s) => unsafe { put(out, handle::insert(Kind::UnixStream, s)) },
            Err(c) => c,
        }
    })
}

/// Sends all `len` bytes of `buf` on the stream `stream` (TCP or Unix).
///
/// Suspends the calling C task until everything is handed to the OS (a
/// checkpoint even when nothing needs to wait). Cancellation: returns
/// `TRIO_ECANCELED`; if part of the data was already sent the stream is
/// broken (as in Trio: further sends return `TRIO_EBROKEN`) since the peer
/// cannot know where the message was cut.
///
/// Returns 0; `TRIO_EINVAL` if `buf` is NULL and `len` is not 0;
/// `TRIO_EBADHANDLE` if `stream` is not an open stream (a listener, ...);
/// `TRIO_EBROKEN` if the peer is gone (reset) or an earlier send was cut
/// short; `TRIO_ECLOSED` after `trio_send_eof` or if the stream was closed
/// meanwhile; `TRIO_EBUSY` if another task is sending on it; `TRIO_EIO`
/// from the OS; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `buf` is NULL (only with `len` 0) or points to `len` readable bytes that
/// stay valid and unchanged until the call returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_send_all(stream: trio_handle_t, buf: *const c_void, len: usize) -> i32 {
    guard(|| {
        if buf.is_null() && len != 0 {
            return set_error(error::TRIO_EINVAL, "buf is NULL");
        }
        let data: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: non-null and `len` readable bytes, as the caller promised.
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
        };
        status(match lookup_stream(stream) {
            Ok(Stream::Tcp(s)) => task::wait(s.send_all(data)),
            Ok(Stream::Unix(s)) => task::wait(s.send_all(data)),
            Err(c) => Err(c),
        })
    })
}

/// Receives at most `len` bytes (and at most `INT_MAX`) from the stream
/// `stream` into `buf`.
///
/// Suspends the calling C task until some data arrives (or the peer sends
/// EOF). Cancellation: returns `TRIO_ECANCELED` and nothing was received.
///
/// Returns the number of bytes received (at least 1), or 0 once the peer
/// has sent EOF (closed or `trio_send_eof`); `TRIO_EINVAL` if `buf` is NULL
/// or `len` is 0; `TRIO_EBADHANDLE` if `stream` is not an open stream;
/// `TRIO_EBROKEN` if the peer reset the connection; `TRIO_ECLOSED` if the
/// stream was closed meanwhile; `TRIO_EBUSY` if another task is receiving
/// on it; `TRIO_EIO` from the OS; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes that stay valid until
/// the call returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_receive_some(stream: trio_handle_t, buf: *mut c_void, len: usize) -> i32 {
    guard(|| {
        if buf.is_null() {
            return set_error(error::TRIO_EINVAL, "buf is NULL");
        }
        if len == 0 {
            return set_error(error::TRIO_EINVAL, "len is 0");
        }
        let len = len.min(i32::MAX as usize);
        // SAFETY: non-null and `len` writable bytes, as the caller promised.
        let data = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        let r = match lookup_stream(stream) {
            Ok(Stream::Tcp(s)) => task::wait(s.receive_some(data)),
            Ok(Stream::Unix(s)) => task::wait(s.receive_some(data)),
            Err(c) => Err(c),
        };
        // At most `len`, which fits an i32.
        r.map_or_else(|c| c, |n| n as i32)
    })
}

/// Sends EOF on the stream `stream` (shuts down its sending side): the
/// peer's `trio_receive_some` returns 0 once it has read everything sent
/// before. Receiving still works. Sending EOF twice is allowed.
///
/// A checkpoint: may suspend the calling C task briefly. Cancellation:
/// returns `TRIO_ECANCELED` (EOF was sent anyway).
///
/// Returns 0; `TRIO_EBADHANDLE` if `stream` is not an open stream;
/// `TRIO_EBUSY` if another task is sending on it; `TRIO_ECLOSED` if it was
/// closed; `TRIO_EIO` from the OS; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_send_eof(stream: trio_handle_t) -> i32 {
    guard(|| {
        status(match lookup_stream(stream) {
            Ok(Stream::Tcp(s)) => task::wait(s.send_eof()),
            Ok(Stream::Unix(s)) => task::wait(s.send_eof()),
            Err(c) => Err(c),
        })
    })
}

/// Closes the socket `h` (a TCP or Unix stream or listener) and frees the
/// handle: from now on `h` is stale (`TRIO_EBADHANDLE`). Other tasks
/// blocked on the socket wake with `TRIO_ECLOSED`.
///
/// Inside a C task it is a checkpoint; the socket is closed and the handle
/// freed even if it returns `TRIO_ECANCELED`. Outside a run (or outside a C
/// task) it closes without waiting.
///
/// Returns 0; `TRIO_EBADHANDLE` if `h` is not an open socket (a double
/// close); `TRIO_ECANCELED` as above.
#[unsafe(no_mangle)]
pub extern "C" fn trio_close(h: trio_handle_t) -> i32 {
    guard(|| {
        let bits = kind_bits(h);
        let in_task = task::current_task().is_ok();
        macro_rules! close {
            ($ty:ty, $kind:expr) => {
                match handle::remove::<$ty>(h, $kind) {
                    Ok(obj) if in_task => status(task::wait(obj.aclose())),
                    // No run to wait in: dropping the last user closes it.
                    Ok(obj) => {
                        drop(obj);
                        0
                    }
                    Err(c) => c,
                }
            };
        }
        if bits == Kind::TcpListener as u8 {
            close!(TcpListener, Kind::TcpListener)
        } else if bits == Kind::UnixStream as u8 {
            close!(UnixStream, Kind::UnixStream)
        } else if bits == Kind::UnixListener as u8 {
            close!(UnixListener, Kind::UnixListener)
        } else {
            close!(TcpStream, Kind::TcpStream)
        }
    })
}
