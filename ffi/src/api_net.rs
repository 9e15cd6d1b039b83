//! Sockets: TCP and Unix-domain streams and listeners, and `serve_tcp`.
//!
//! A connected socket is a stream handle (`Kind::TcpStream` or
//! `Kind::UnixStream`), a listening one a listener handle
//! (`Kind::TcpListener` or `Kind::UnixListener`); the table holds the trio
//! object in an `Rc`, so a call that waits keeps the socket alive even if
//! another task closes the handle meanwhile (that task's `trio_close`
//! closes the socket itself at once, and the waiting call returns
//! `TRIO_ECLOSED`). The stream calls take either kind of stream, the
//! listener calls either kind of listener, `trio_close` any of the four.
//!
//! `trio_serve_tcp` and `trio_serve_listener` run a C handler per
//! connection as a C task (a [`CTask`] over a small trampoline) in the
//! server's own handler nursery; the connection's stream handle is made for
//! the handler and closed after it returns.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Waker};

use trio::Error;
use trio::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream};
use trio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use trio::net::{UnixListener, UnixStream};

use crate::error::{self, TRIO_EBADHANDLE, TRIO_EBUSY, TRIO_EINVAL, TRIO_ENOMEM, guard, set_error};
use crate::handle::{self, Kind, trio_handle_t};
use crate::task::{self, CTask, TaskFailed};

/// A connection handler for `trio_serve_tcp` and `trio_serve_listener`:
/// runs as a C task of its own for each connection, with `stream` (a stream
/// handle for the connection) and the `arg` given to the serve call.
/// Returns 0 (or a positive value) when done, `TRIO_ECANCELED` when a call
/// in it was cancelled, or a negative code to stop the whole server (see
/// `trio_serve_tcp`). The stream is closed and its handle freed after the
/// handler returns (the handler may also close it itself with
/// `trio_close`).
#[allow(non_camel_case_types, reason = "named as C code spells it, like the rest of the header")]
pub type trio_handler_fn = Option<unsafe extern "C" fn(stream: trio_handle_t, arg: *mut c_void) -> c_int>;

/// Called by `trio_serve_tcp` once it listens, before it serves, with the
/// port it listens on (the one the OS chose if 0 was asked for) and the
/// serve call's `arg`. It runs in the serving C task, so it may call
/// anything a C task may (spawn the clients of a test, set an event).
#[allow(non_camel_case_types, reason = "named as C code spells it, like the rest of the header")]
pub type trio_started_fn = Option<unsafe extern "C" fn(port: u16, arg: *mut c_void)>;

/// A socket found through a handle.
enum Sock {
    TcpStream(Rc<TcpStream>),
    #[cfg(unix)]
    UnixStream(Rc<UnixStream>),
    TcpListener(Rc<TcpListener>),
    #[cfg(unix)]
    UnixListener(Rc<UnixListener>),
}

const STREAMS: &[Kind] = &[Kind::TcpStream, Kind::UnixStream];
const LISTENERS: &[Kind] = &[Kind::TcpListener, Kind::UnixListener];
const SOCKETS: &[Kind] = &[Kind::TcpStream, Kind::UnixStream, Kind::TcpListener, Kind::UnixListener];

/// The socket `h` names if it is of one of `kinds` (`what` names them for
/// the error detail).
///
/// # Errors
/// `TRIO_EBADHANDLE` for 0, stale, foreign and other-kind handles, with
/// the handle table's detail (reworded to name every accepted kind).
fn lookup(h: trio_handle_t, kinds: &[Kind], what: &str) -> Result<Sock, c_int> {
    // The kind is the handle's top byte (see the layout in handle.rs).
    let byte = (h >> 56) as u8;
    match kinds.iter().copied().find(|k| *k as u8 == byte) {
        Some(Kind::TcpStream) => handle::get(h, Kind::TcpStream).map(Sock::TcpStream),
        #[cfg(unix)]
        Some(Kind::UnixStream) => handle::get(h, Kind::UnixStream).map(Sock::UnixStream),
        Some(Kind::TcpListener) => handle::get(h, Kind::TcpListener).map(Sock::TcpListener),
        #[cfg(unix)]
        Some(Kind::UnixListener) => handle::get(h, Kind::UnixListener).map(Sock::UnixListener),
        _ => {
            // Not one of `kinds`: the table says why (0, not a handle, which
            // kind it is); it names the first kind, we name them all.
            let code = handle::get::<()>(h, kinds[0]).err().unwrap_or(TRIO_EBADHANDLE);
            let detail = last_detail();
            let expected = format!("expected {}", kinds[0]);
            let detail = if detail.contains(&expected) {
                detail.replace(&expected, &format!("expected {what}"))
            } else {
                format!("handle {h:#x} is not {what}")
            };
            Err(set_error(code, detail))
        }
    }
}

fn lookup_stream(h: trio_handle_t) -> Result<Sock, c_int> {
    lookup(h, STREAMS, "a stream (TCP or Unix)")
}

/// This thread's last error detail.
fn last_detail() -> String {
    // SAFETY: NULL with length 0 asks for the length only.
    let n = unsafe { error::trio_last_error(std::ptr::null_mut(), 0) };
    let mut buf = vec![0_u8; usize::try_from(n).unwrap_or(0) + 1];
    // SAFETY: `buf` has `buf.len()` writable bytes.
    unsafe { error::trio_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Closes `r` now, without waiting: `aclose` closes the resource on its
/// first poll (waking every task blocked on it with `Closed`) and then
/// yields once for its checkpoint, which we do not need.
fn close_now(r: &impl AsyncResource) {
    let mut fut = pin!(r.aclose());
    let _ = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
}

impl Sock {
    /// Closes the socket now (see [`close_now`]).
    fn close_now(&self) {
        match self {
            Sock::TcpStream(s) => close_now(&**s),
            #[cfg(unix)]
            Sock::UnixStream(s) => close_now(&**s),
            Sock::TcpListener(s) => close_now(&**s),
            #[cfg(unix)]
            Sock::UnixListener(s) => close_now(&**s),
        }
    }

    /// Frees the handle `h` of this socket.
    fn remove(&self, h: trio_handle_t) -> Result<(), c_int> {
        match self {
            Sock::TcpStream(_) => handle::remove::<TcpStream>(h, Kind::TcpStream).map(drop),
            #[cfg(unix)]
            Sock::UnixStream(_) => handle::remove::<UnixStream>(h, Kind::UnixStream).map(drop),
            Sock::TcpListener(_) => handle::remove::<TcpListener>(h, Kind::TcpListener).map(drop),
            #[cfg(unix)]
            Sock::UnixListener(_) => handle::remove::<UnixListener>(h, Kind::UnixListener).map(drop),
        }
    }

    /// The local address as text: `IP:PORT` (`[IPv6]:PORT`) or a path.
    fn local_address(&self) -> trio::Result<String> {
        match self {
            Sock::TcpStream(s) => Ok(s.local_addr()?.to_string()),
            Sock::TcpListener(s) => Ok(s.local_addr()?.to_string()),
            #[cfg(unix)]
            Sock::UnixStream(s) => {
                Ok(s.with_socket(|s| s.local_addr())?.as_pathname().map(path_text).unwrap_or_default())
            }
            #[cfg(unix)]
            Sock::UnixListener(s) => Ok(s.local_path()?.as_deref().map(path_text).unwrap_or_default()),
        }
    }

    /// The peer's address as text, for streams.
    fn peer_address(&self) -> trio::Result<String> {
        match self {
            Sock::TcpStream(s) => Ok(s.peer_addr()?.to_string()),
            #[cfg(unix)]
            Sock::UnixStream(s) => Ok(s.peer_path()?.as_deref().map(path_text).unwrap_or_default()),
            Sock::TcpListener(_) => Err(no_peer()),
            #[cfg(unix)]
            Sock::UnixListener(_) => Err(no_peer()),
        }
    }
}

/// Where there are no Unix-domain sockets: the call's checkpoint (so
/// `TRIO_ENORUN` and `TRIO_ECANCELED` come first, as on Unix), then
/// `TRIO_EUNSUPPORTED`.
#[cfg(not(unix))]
fn unix_unsupported() -> Result<c_int, c_int> {
    wait_net(trio::checkpoint())?;
    Err(set_error(error::TRIO_EUNSUPPORTED, "Unix-domain sockets are not supported on this platform"))
}

fn no_peer() -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, "a listener has no peer"))
}

#[cfg(unix)]
fn path_text(p: &std::path::Path) -> String {
    String::from_utf8_lossy(p.as_os_str().as_bytes()).into_owned()
}

/// One status from a body that returns its error code as `Err`.
fn status(r: Result<c_int, c_int>) -> c_int {
    r.unwrap_or_else(|c| c)
}

/// Waits for a network operation from the calling C task, as
/// [`task::wait`], but reports a group made only of OS errors (every
/// address of a host refused the connection) as one `TRIO_EIO` whose
/// detail lists them.
fn wait_net<T>(fut: impl Future<Output = trio::Result<T>>) -> Result<T, c_int> {
    match task::block_on(fut)? {
        Ok(v) => Ok(v),
        Err(Error::Group(v)) if v.iter().all(|e| matches!(e, Error::Io(_))) => {
            let kind = match &v[0] {
                Error::Io(io) => io.kind(),
                _ => io::ErrorKind::Other,
            };
            let e = Error::Group(v);
            Err(task::note_error(&Error::Io(io::Error::new(kind, e.to_string()))))
        }
        Err(e) => Err(task::note_error(&e)),
    }
}

/// The text of a C string argument, or `TRIO_EINVAL` (NULL, not UTF-8).
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char, name: &str) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(set_error(TRIO_EINVAL, format_args!("{name} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated (the caller's promise).
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| set_error(TRIO_EINVAL, format_args!("{name} is not valid UTF-8")))
}

/// A path argument, or `TRIO_EINVAL` (NULL or empty).
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
unsafe fn path<'a>(s: *const c_char) -> Result<&'a std::path::Path, c_int> {
    if s.is_null() {
        return Err(set_error(TRIO_EINVAL, "path is NULL"));
    }
    // SAFETY: non-null and NUL-terminated (the caller's promise).
    let bytes = unsafe { CStr::from_ptr(s) }.to_bytes();
    if bytes.is_empty() {
        return Err(set_error(TRIO_EINVAL, "path is empty"));
    }
    #[cfg(unix)]
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
    #[cfg(not(unix))]
    let path = std::path::Path::new(
        std::str::from_utf8(bytes).map_err(|_| set_error(TRIO_EINVAL, "path is not valid UTF-8"))?,
    );
    Ok(path)
}

/// Writes `h` to `*out` (checked non-null by the caller) and returns 0.
///
/// # Safety
/// `out` points to a writable `trio_handle_t`.
unsafe fn put(out: *mut trio_handle_t, h: trio_handle_t) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { *out = h };
    0
}

fn null_out<T>(out: *const T) -> Result<(), c_int> {
    if out.is_null() { Err(set_error(TRIO_EINVAL, "out is NULL")) } else { Ok(()) }
}

/// Connects to `host` (an IP address or a name to resolve) on TCP port
/// `port` and writes the new stream's handle to `*out`. With several
/// addresses it uses happy eyeballs (attempts staggered by 250 ms, the
/// first to connect wins, as Trio's `open_tcp_stream`).
///
/// Suspends the calling C task until connected or failed. Cancellation
/// closes every attempt's socket and returns `TRIO_ECANCELED`.
///
/// Returns 0; `TRIO_EIO` if the name could not be resolved or no address
/// accepted the connection (`trio_last_error` has the OS messages, for
/// example "connecting to 127.0.0.1:1: Connection refused"); `TRIO_EINVAL`
/// if `host` or `out` is NULL or `host` is not UTF-8; `TRIO_ECANCELED`;
/// `TRIO_ENORUN` outside a C task. `*out` is written only on success.
///
/// # Safety
/// `host` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_tcp_connect(host: *const c_char, port: u16, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            // SAFETY: the caller's promise.
            let host = unsafe { text(host, "host") }?;
            null_out(out)?;
            let stream = wait_net(trio::net::open_tcp_stream(host, port))?;
            // SAFETY: checked non-null; the caller's promise.
            Ok(unsafe { put(out, handle::insert(Kind::TcpStream, stream)?) })
        })())
    })
}

/// Listens on one TCP address, `host`:`port`, and writes the listener's
/// handle to `*out`. `host` is an IP address or a name (the first of its
/// addresses that can be bound is used); NULL means every IPv4 address
/// (`0.0.0.0`; pass `"::"` for every IPv6 one). Port 0 lets the OS choose
/// (see `trio_listener_port`). `SO_REUSEADDR` is set; an IPv6 listener
/// is IPv6-only. (Trio's `open_tcp_listeners` may open several listeners;
/// this opens exactly one. `trio_serve_tcp` opens them all.)
///
/// Suspends the calling C task briefly (a checkpoint; name resolution).
///
/// Returns 0; `TRIO_EIO` (address in use, name not found, ...);
/// `TRIO_EINVAL` if `out` is NULL or `host` is not UTF-8; `TRIO_ECANCELED`;
/// `TRIO_ENORUN` outside a C task. `*out` is written only on success.
///
/// # Safety
/// `host` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_tcp_listen(host: *const c_char, port: u16, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            let host = if host.is_null() {
                None
            } else {
                // SAFETY: the caller's promise.
                Some(unsafe { text(host, "host") }?)
            };
            null_out(out)?;
            let addrs = match host {
                Some(h) => wait_net(trio::net::getaddrinfo(h, port))?,
                None => {
                    task::wait(trio::checkpoint())?;
                    vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)]
                }
            };
            let mut first_err = None;
            for addr in addrs {
                match TcpListener::bind(addr) {
                    // SAFETY: checked non-null; the caller's promise.
                    Ok(l) => return Ok(unsafe { put(out, handle::insert(Kind::TcpListener, l)?) }),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            let e = first_err.unwrap_or_else(|| Error::Io(io::Error::other("no address to listen on")));
            Err(task::note_error(&e))
        })())
    })
}

/// Writes the port a TCP listener listens on to `*port` (useful after
/// listening on port 0). Does not block.
///
/// Returns 0; `TRIO_EINVAL` if `port` is NULL; `TRIO_EBADHANDLE` if
/// `listener` is not a TCP listener; `TRIO_ECLOSED` if it was closed by a
/// server that used it; `TRIO_EIO`. `*port` is written only on success.
///
/// # Safety
/// `port` is NULL or points to a writable `uint16_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_listener_port(listener: trio_handle_t, port: *mut u16) -> c_int {
    guard(|| {
        if port.is_null() {
            return set_error(TRIO_EINVAL, "port is NULL");
        }
        let l = match handle::get::<TcpListener>(listener, Kind::TcpListener) {
            Ok(l) => l,
            Err(c) => return c,
        };
        match l.local_addr() {
            Ok(a) => {
                // SAFETY: non-null; the caller's promise.
                unsafe { *port = a.port() };
                0
            }
            Err(e) => error::from_error(&e),
        }
    })
}

/// Copies `s` into `buf` like `snprintf` and returns its whole length.
///
/// # Safety
/// `buf` is NULL with `len` 0, or points to `len` writable bytes.
unsafe fn copy_out(s: &str, buf: *mut c_char, len: usize) -> c_int {
    let bytes = s.as_bytes();
    if len > 0 {
        let n = bytes.len().min(len - 1);
        // SAFETY: `buf` has `len >= n + 1` writable bytes; `bytes` is a
        // separate allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    c_int::try_from(bytes.len()).unwrap_or(c_int::MAX)
}

fn address_into(h: trio_handle_t, buf: *mut c_char, len: usize, peer: bool) -> c_int {
    let func = if peer { "trio_peer_address" } else { "trio_local_address" };
    if let Err(c) = crate::buf::check(func, buf, "buf", len, "len") {
        return c;
    }
    let (kinds, what) = if peer { (STREAMS, "a stream (TCP or Unix)") } else { (SOCKETS, "a socket") };
    let sock = match lookup(h, kinds, what) {
        Ok(s) => s,
        Err(c) => return c,
    };
    match if peer { sock.peer_address() } else { sock.local_address() } {
        // SAFETY: checked above; the caller's promise.
        Ok(text) => unsafe { copy_out(&text, buf, len) },
        Err(e) => error::from_error(&e),
    }
}

/// Copies the local address of any socket into `buf` as text,
/// NUL-terminated and truncated to `len` bytes including the NUL:
/// `"127.0.0.1:9000"`, `"[::1]:9000"`, or a Unix socket's path (empty for
/// an unnamed one). Does not block.
///
/// Returns the length of the whole text without the NUL, like `snprintf`
/// (if it is `>= len` the copy was truncated; `buf` may be NULL when `len`
/// is 0); `TRIO_EINVAL` if `buf` is NULL and `len` is not 0, or `len` is
/// more than `PTRDIFF_MAX`; `TRIO_EBADHANDLE` if `sock` is not a socket;
/// `TRIO_ECLOSED` if it was closed by a server that used it; `TRIO_EIO`.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_local_address(sock: trio_handle_t, buf: *mut c_char, len: usize) -> c_int {
    guard(|| address_into(sock, buf, len, false))
}

/// As `trio_local_address`, for the address of a stream's peer (a Unix
/// peer usually has none: empty text). Does not block.
///
/// Returns as `trio_local_address`; `TRIO_EBADHANDLE` if `stream` is not
/// a stream.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_peer_address(stream: trio_handle_t, buf: *mut c_char, len: usize) -> c_int {
    guard(|| address_into(stream, buf, len, true))
}

/// Waits for the next connection on a listener (TCP or Unix) and writes
/// the new stream's handle to `*out`.
///
/// Suspends the calling C task. Cancellation returns `TRIO_ECANCELED`
/// (no connection is taken).
///
/// Returns 0; `TRIO_EINVAL` if `out` is NULL; `TRIO_EBADHANDLE` if
/// `listener` is not a listener; `TRIO_EBUSY` if another task is accepting
/// on it; `TRIO_ECLOSED` if it was closed meanwhile; `TRIO_EIO` (for
/// example out of file descriptors: `trio_last_os_error` gives `EMFILE`);
/// `TRIO_ECANCELED`; `TRIO_ENORUN` outside a C task. `*out` is written only
/// on success.
///
/// # Safety
/// `out` is NULL or points to a writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_accept(listener: trio_handle_t, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            null_out(out)?;
            let h = match lookup(listener, LISTENERS, "a listener (TCP or Unix)")? {
                Sock::TcpListener(l) => handle::insert(Kind::TcpStream, task::wait(l.accept())?)?,
                #[cfg(unix)]
                Sock::UnixListener(l) => handle::insert(Kind::UnixStream, task::wait(l.accept())?)?,
                _ => unreachable!("lookup returns listeners only"),
            };
            // SAFETY: checked non-null; the caller's promise.
            Ok(unsafe { put(out, h) })
        })())
    })
}

/// Connects to the Unix-domain socket at `path` and writes the new
/// stream's handle to `*out`.
///
/// Suspends the calling C task until connected or failed; cancellation
/// returns `TRIO_ECANCELED`.
///
/// Returns 0; `TRIO_EIO` (no such file, connection refused, path too long,
/// ...); `TRIO_EINVAL` if `path` or `out` is NULL or `path` is empty;
/// `TRIO_ECANCELED`; `TRIO_ENORUN` outside a C task; `TRIO_EUNSUPPORTED`
/// on Windows (no Unix-domain sockets there). `*out` is written only on
/// success.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_unix_connect(path: *const c_char, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            // SAFETY: the caller's promise.
            let path = unsafe { self::path(path) }?;
            null_out(out)?;
            #[cfg(unix)]
            {
                let stream = wait_net(trio::net::open_unix_socket(path))?;
                // SAFETY: checked non-null; the caller's promise.
                Ok(unsafe { put(out, handle::insert(Kind::UnixStream, stream)?) })
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                unix_unsupported()
            }
        })())
    })
}

/// Listens on a Unix-domain socket at `path` and writes the listener's
/// handle to `*out`. A stale socket file at `path` (one nobody listens on)
/// is removed first; anything else there gives `TRIO_EIO` (address in
/// use). Closing the listener does not remove the file: unlink it
/// yourself.
///
/// Suspends the calling C task briefly (a checkpoint).
///
/// Returns 0; `TRIO_EIO`; `TRIO_EINVAL` if `path` or `out` is NULL or
/// `path` is empty; `TRIO_ECANCELED`; `TRIO_ENORUN` outside a C task;
/// `TRIO_EUNSUPPORTED` on Windows (no Unix-domain sockets there).
/// `*out` is written only on success.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to a
/// writable `trio_handle_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_unix_listen(path: *const c_char, out: *mut trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            // SAFETY: the caller's promise.
            let path = unsafe { self::path(path) }?;
            null_out(out)?;
            #[cfg(unix)]
            {
                let listener = wait_net(trio::net::open_unix_listener(path))?;
                // SAFETY: checked non-null; the caller's promise.
                Ok(unsafe { put(out, handle::insert(Kind::UnixListener, listener)?) })
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                unix_unsupported()
            }
        })())
    })
}

/// Sends all `len` bytes at `buf` on a stream (TCP or Unix); returns when
/// they are all handed to the OS (not when the peer has them). `len` 0 is
/// just a checkpoint. The buffer must stay untouched until the call
/// returns.
///
/// Suspends the calling C task while the socket's send buffer is full.
/// Cancellation returns `TRIO_ECANCELED`; if some bytes were sent already,
/// the stream is broken (later sends return `TRIO_EBROKEN`; receiving still
/// works), as in Trio.
///
/// Returns 0; `TRIO_EINVAL` if `buf` is NULL and `len` is not 0, or `len`
/// is more than `PTRDIFF_MAX` (nothing is sent); `TRIO_EBADHANDLE` if
/// `stream` is not a stream; `TRIO_EBUSY` if another task is sending on
/// it; `TRIO_ECLOSED` after `trio_send_eof` or if it was closed meanwhile;
/// `TRIO_EBROKEN` if the peer is gone (connection reset, broken pipe) or
/// an earlier send was cancelled midway; `TRIO_EIO`;
/// `TRIO_ECANCELED`; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `buf` is NULL (only with `len` 0) or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_send_all(stream: trio_handle_t, buf: *const c_void, len: usize) -> c_int {
    guard(|| {
        status((|| {
            crate::buf::check("trio_send_all", buf, "buf", len, "len")?;
            let data: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: non-null with `len` readable bytes (the caller's
                // promise), left alone until we return.
                unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
            };
            match lookup_stream(stream)? {
                Sock::TcpStream(s) => task::wait(s.send_all(data))?,
                #[cfg(unix)]
                Sock::UnixStream(s) => task::wait(s.send_all(data))?,
                _ => unreachable!("lookup_stream returns streams only"),
            }
            Ok(0)
        })())
    })
}

/// Receives some bytes from a stream (TCP or Unix) into `buf`: waits until
/// at least one byte is there (or the end of the stream), then copies what
/// is there, at most `len` bytes (at most `INT_MAX`).
///
/// Suspends the calling C task until data or the end arrives.
/// Cancellation returns `TRIO_ECANCELED` with nothing received (the stream
/// stays usable).
///
/// Returns the number of bytes received (1 or more), or 0 at the end of
/// the stream (the peer sent EOF or closed; every later call returns 0
/// too); `TRIO_EINVAL` if `buf` is NULL, `len` is 0 or `len` is more
/// than `PTRDIFF_MAX`; `TRIO_EBADHANDLE` if `stream` is not a stream;
/// `TRIO_EBUSY` if another task is receiving on it; `TRIO_ECLOSED` if it
/// was closed meanwhile; `TRIO_EBROKEN` if the peer reset the connection;
/// `TRIO_EIO`; `TRIO_ECANCELED`; `TRIO_ENORUN`
/// outside a C task.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes, which no one else uses
/// until the call returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_receive_some(stream: trio_handle_t, buf: *mut c_void, len: usize) -> c_int {
    guard(|| {
        status((|| {
            crate::buf::check("trio_receive_some", buf, "buf", len, "len")?;
            if buf.is_null() {
                return Err(set_error(TRIO_EINVAL, "trio_receive_some: buf is NULL"));
            }
            if len == 0 {
                return Err(set_error(TRIO_EINVAL, "len is 0: there is no room to receive into"));
            }
            let len = len.min(c_int::MAX as usize);
            // SAFETY: non-null with `len` writable bytes that nobody else
            // uses until we return (the caller's promise).
            let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
            let n = match lookup_stream(stream)? {
                Sock::TcpStream(s) => task::wait(s.receive_some(buf))?,
                #[cfg(unix)]
                Sock::UnixStream(s) => task::wait(s.receive_some(buf))?,
                _ => unreachable!("lookup_stream returns streams only"),
            };
            Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
        })())
    })
}

/// Sends EOF on a stream (TCP or Unix): the peer's `trio_receive_some`
/// returns 0 once it has read everything before it. This side can still
/// receive; sending again returns `TRIO_ECLOSED`. Calling it again does
/// nothing.
///
/// A checkpoint: suspends the calling C task briefly. Cancellation returns
/// `TRIO_ECANCELED` (the EOF was sent anyway).
///
/// Returns 0; `TRIO_EBADHANDLE` if `stream` is not a stream; `TRIO_EBUSY`
/// if another task is sending; `TRIO_ECLOSED` if it was closed; `TRIO_EIO`;
/// `TRIO_ECANCELED`; `TRIO_ENORUN` outside a C task.
#[unsafe(no_mangle)]
pub extern "C" fn trio_send_eof(stream: trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            match lookup_stream(stream)? {
                Sock::TcpStream(s) => task::wait(s.send_eof())?,
                #[cfg(unix)]
                Sock::UnixStream(s) => task::wait(s.send_eof())?,
                _ => unreachable!("lookup_stream returns streams only"),
            }
            Ok(0)
        })())
    })
}

/// Closes any socket (a TCP or Unix stream or listener) and frees its
/// handle. A task blocked on the socket (receiving, sending, accepting)
/// wakes with `TRIO_ECLOSED`; any later use of the handle, and closing it
/// again, returns `TRIO_EBADHANDLE`. Closing a stream without
/// `trio_send_eof` first is fine (the peer sees the end of the stream, or
/// a reset if data was left unread).
///
/// Does not block and is not a checkpoint; works in any C task, also a
/// cancelled one (handy in cleanup code). Sockets left open are closed
/// when `trio_run` returns.
///
/// Returns 0, or `TRIO_EBADHANDLE` if `sock` is not a live socket handle.
#[unsafe(no_mangle)]
pub extern "C" fn trio_close(sock: trio_handle_t) -> c_int {
    guard(|| {
        status((|| {
            let s = lookup(sock, SOCKETS, "a socket (TCP or Unix, stream or listener)")?;
            s.remove(sock)?;
            s.close_now();
            Ok(0)
        })())
    })
}

/// A connected stream type a handler can get.
trait NetStream: HalfCloseableStream + 'static {
    const KIND: Kind;
}

impl NetStream for TcpStream {
    const KIND: Kind = Kind::TcpStream;
}

#[cfg(unix)]
impl NetStream for UnixStream {
    const KIND: Kind = Kind::UnixStream;
}

/// A non-NULL handler.
type Handler = unsafe extern "C" fn(trio_handle_t, *mut c_void) -> c_int;

/// What a connection's trampoline needs, on the heap while its task runs.
struct Conn {
    handler: Handler,
    arg: *mut c_void,
    stream: trio_handle_t,
}

/// The C function of a connection's task: calls the handler.
///
/// # Safety
/// `conn` points to a live [`Conn`].
unsafe extern "C" fn conn_trampoline(conn: *mut c_void) -> c_int {
    // SAFETY: `handle_conn` keeps the `Conn` alive while the task runs.
    let conn = unsafe { &*conn.cast::<Conn>() };
    // SAFETY: the handler and argument the C caller gave.
    unsafe { (conn.handler)(conn.stream, conn.arg) }
}

/// A connection's stream while its handler runs: when dropped (the handler
/// returned, or its task is dropped) the stream is closed and its handle
/// freed, unless the handler closed it already.
struct OwnedStream<S: NetStream> {
    h: trio_handle_t,
    stream: Rc<S>,
}

impl<S: NetStream> Drop for OwnedStream<S> {
    fn drop(&mut self) {
        // `trio_close` frees the handle, then closes: a socket still open
        // has its handle still live.
        if handle::is_live(self.h) {
            let _ = handle::remove::<S>(self.h, S::KIND);
            close_now(&*self.stream);
        }
    }
}

/// Runs the C handler on one connection, as a C task. A connection that
/// cannot get a handle or a stack (`TRIO_ENOMEM`: the handle table, memory
/// or the mapping limit) is dropped with one line on stderr, as running out
/// of file descriptors is: the server and its other connections go on.
async fn handle_conn<S: NetStream>(handler: Handler, arg: usize, stream: S) -> trio::Result<()> {
    let stream = Rc::new(stream);
    let h = match handle::insert_rc(S::KIND, stream.clone()) {
        Ok(h) => h,
        Err(code) => return drop_connection(code, "a handle", Some(&*stream)),
    };
    let _owned = OwnedStream { h, stream };
    let conn = Box::new(Conn { handler, arg: arg as *mut c_void, stream: h });
    let task = match CTask::new(Some(conn_trampoline), std::ptr::from_ref(&*conn).cast_mut().cast()) {
        Ok(t) => t,
        // `_owned` closes the stream as it goes.
        Err(code) => return drop_connection::<S>(code, "a stack for its handler", None),
    };
    task.await.map(drop)
}

/// See `handle_conn`: `TRIO_ENOMEM` drops the connection; any other code
/// (a bug) stops the server as a handler's failure would.
fn drop_connection<S: NetStream>(code: c_int, what: &str, close: Option<&S>) -> trio::Result<()> {
    if code != TRIO_ENOMEM {
        return Err(Error::user(TaskFailed(code, None)));
    }
    if let Some(stream) = close {
        close_now(stream);
    }
    use std::io::Write;
    // Never panics (a closed stderr is fine): `writeln!` on a locked handle.
    let _ =
        writeln!(std::io::stderr().lock(), "trio_serve: no memory for {what} of a new connection; connection dropped");
    Ok(())
}

/// Serves `listeners` with `handler` until cancelled or a handler fails.
fn serve<L>(listeners: Vec<L>, handler: Handler, arg: *mut c_void) -> c_int
where
    L: Listener,
    L::Stream: NetStream,
{
    let arg = arg as usize;
    let h = move |stream: L::Stream| handle_conn(handler, arg, stream);
    match task::block_on(trio::net::serve_listeners(h, listeners, None, None)) {
        Err(code) => code,
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => task::note_error(&e),
    }
}

fn handler_of(handler: trio_handler_fn) -> Result<Handler, c_int> {
    handler.ok_or_else(|| set_error(TRIO_EINVAL, "handler is NULL"))
}

/// Trio's `serve_tcp`: listens on TCP `port` on every address of `host`
/// (NULL: every local IPv4 and IPv6 address, one listener each), then
/// accepts connections forever and runs `handler(stream, arg)` as a new C
/// task for each, in a nursery of the server's own.
///
/// Once listening, and before serving, it calls `on_started(port, arg)`
/// (if not NULL) in the calling task with the port it listens on: the one
/// the OS chose when `port` is 0. (With several listeners and port 0 each
/// gets its own port; the first one's, IPv4 if any, is reported: pass a
/// `host` such as `"127.0.0.1"` to have exactly one.) Connections that
/// arrive meanwhile wait in the queue.
///
/// The handler's stream handle is closed after the handler returns (the
/// handler may close it earlier with `trio_close`; it must not use it after
/// returning, nor pass it to a task that outlives it). As in Trio, nothing
/// catches a handler's failure: a handler returning a negative value other
/// than `TRIO_ECANCELED` cancels every other connection, closes the
/// listeners and makes `trio_serve_tcp` return that value. A handler that
/// should only end its own connection on an error (a peer that went away:
/// `TRIO_EBROKEN`) returns 0. Running out of file descriptors while
/// accepting is not fatal: the server writes a line to stderr and retries
/// 100 ms later.
///
/// Suspends the calling C task until the server stops: it never returns
/// 0. Cancelling it (cancel the nursery or scope around it) closes the
/// listeners, cancels the handlers, waits for them and returns
/// `TRIO_ECANCELED`.
///
/// Returns `TRIO_ECANCELED`; a handler's code (`TRIO_EGROUP` if several
/// failed at once); `TRIO_EIO` if it could not listen (address in use,
/// ...) or accepting failed; `TRIO_EINVAL` if `handler` is NULL or `host`
/// is not UTF-8; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `host` is NULL or a NUL-terminated string. `handler` and `on_started`
/// are called with `arg`, which must stay valid until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_serve_tcp(
    port: u16,
    host: *const c_char,
    handler: trio_handler_fn,
    arg: *mut c_void,
    on_started: trio_started_fn,
) -> c_int {
    guard(|| {
        status((|| {
            let handler = handler_of(handler)?;
            let host = if host.is_null() {
                None
            } else {
                // SAFETY: the caller's promise.
                Some(unsafe { text(host, "host") }?)
            };
            let listeners = wait_net(trio::net::open_tcp_listeners(port, host))?;
            let bound = listeners[0].local_addr().map_err(|e| error::from_error(&e))?.port();
            if let Some(f) = on_started {
                // SAFETY: the C caller's callback and argument; we are in
                // the calling C task, as it may expect.
                unsafe { f(bound, arg) };
            }
            Ok(serve(listeners, handler, arg))
        })())
    })
}

/// A listener shared with its handle, as `serve_listeners` wants it owned.
/// A server whose accept finds another task accepting on the listener
/// (`Busy`) stops with `TRIO_EBUSY` and leaves the listener open: it is
/// that other task's (a server's end closes only a listener it served).
struct Shared<L> {
    listener: Rc<L>,
    busy: std::cell::Cell<bool>,
}

impl<L> Shared<L> {
    fn new(listener: Rc<L>) -> Shared<L> {
        Shared { listener, busy: std::cell::Cell::new(false) }
    }
}

impl<L: AsyncResource> AsyncResource for Shared<L> {
    async fn aclose(&self) -> trio::Result<()> {
        if self.busy.get() {
            return Ok(());
        }
        self.listener.aclose().await
    }
}

impl<L: Listener> Listener for Shared<L> {
    type Stream = L::Stream;

    async fn accept(&self) -> trio::Result<L::Stream> {
        let r = self.listener.accept().await;
        if matches!(r, Err(Error::Busy)) {
            self.busy.set(true);
        }
        r
    }
}

/// Trio's `serve_listeners` for one listener you opened (TCP or Unix): as
/// `trio_serve_tcp`, without the listening part. Each connection's
/// `handler(stream, arg)` gets a stream of the listener's kind.
///
/// When the server stops (cancelled, or a handler failed) the listener is
/// closed, as in Trio; its handle stays valid until you `trio_close` it
/// (other calls then return `TRIO_ECLOSED`). No other task may accept on
/// it meanwhile (`TRIO_EBUSY` for that task).
///
/// Suspends the calling C task until the server stops; never returns 0.
///
/// Returns `TRIO_ECANCELED`; a handler's code (`TRIO_EGROUP` for several);
/// `TRIO_EIO`; `TRIO_ECLOSED` if the listener was closed, or closed
/// meanwhile; `TRIO_EBUSY` if another task serves it already (that server
/// goes on undisturbed); `TRIO_EBADHANDLE` if `listener` is not a listener;
/// `TRIO_EINVAL` if `handler` is NULL; `TRIO_ENORUN` outside a C task.
///
/// # Safety
/// `handler` is called with `arg`, which must stay valid until this
/// returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trio_serve_listener(
    listener: trio_handle_t,
    handler: trio_handler_fn,
    arg: *mut c_void,
) -> c_int {
    guard(|| {
        status((|| {
            let handler = handler_of(handler)?;
            let sock = lookup(listener, LISTENERS, "a listener (TCP or Unix)")?;
            // A second server on a listener in use is refused before it
            // accepts (its failing accept would otherwise end it, and its
            // end would close the listener under the first server).
            let _serving = Serving::claim(listener)?;
            Ok(match sock {
                Sock::TcpListener(l) => serve(vec![Shared::new(l)], handler, arg),
                #[cfg(unix)]
                Sock::UnixListener(l) => serve(vec![Shared::new(l)], handler, arg),
                _ => unreachable!("lookup returns listeners only"),
            })
        })())
    })
}

thread_local! {
    /// Listeners a `trio_serve_listener` of this thread's run is serving.
    static SERVING: std::cell::RefCell<Vec<trio_handle_t>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks a listener as served until dropped.
struct Serving(trio_handle_t);

impl Serving {
    fn claim(listener: trio_handle_t) -> Result<Serving, c_int> {
        SERVING.with_borrow_mut(|s| {
            if s.contains(&listener) {
                return Err(set_error(TRIO_EBUSY, "listener: another task is serving it already"));
            }
            s.push(listener);
            Ok(Serving(listener))
        })
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.with_borrow_mut(|s| s.retain(|&h| h != self.0));
    }
}
