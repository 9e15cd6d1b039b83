//! `serve_listeners` and `serve_tcp`, after Trio's: accept connections on
//! listeners forever and run a handler task for each; and their `_with`
//! forms, which take [`ServeOptions`] (a per-connection handshake timeout,
//! which Trio leaves to the handler).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::{TcpListener, TcpStream};
use crate::abc::Listener;
use crate::error::{Error, Result};
use crate::nursery::{Nursery, TaskStatus};

/// How long the accept loop sleeps after an accept error that says the
/// system is out of resources (see [`serve_listeners`]): 100 ms, as Trio.
pub const ACCEPT_CAPACITY_ERROR_SLEEP: Duration = Duration::from_millis(100);

/// What a stream must show, in its connection's task, before
/// [`serve_listeners_with`] (and [`serve_tcp_with`],
/// `trio::tls::serve_tls_with` (feature `tls`)) hands it to the handler,
/// when [`ServeOptions::handshake_timeout`] is set.
///
/// - `trio::tls::TlsStream` (feature `tls`): the whole TLS handshake
///   (`TlsStream::do_handshake`).
/// - [`TcpStream`] and, on Unix, `UnixStream` (plain streams): the
///   client's first byte, with a readiness wait (level-triggered, as
///   Trio's `wait_readable`): nothing is read, so the handler receives
///   everything the client sent. The end of stream or a socket error also
///   ends the wait (the handler then sees them). On WASI, where the driver
///   cannot ask whether a socket is ready now, a stale readiness event may
///   end it early: the handler is then called sooner, never later.
///
/// Implement it for a stream type of your own to serve it with a timeout.
///
/// # Checkpoint
/// Implementations are checkpoints (they wait for the peer).
/// # Cancellation
/// Returns `Err(Cancelled)`; for the plain streams nothing happened, for a
/// `TlsStream` see `TlsStream::do_handshake`
/// (the serve functions drop the stream anyway).
#[allow(async_fn_in_trait)] // single-threaded runtime: futures need not be `Send`
pub trait ServeHandshake {
    /// Waits for the handshake (see the trait's documentation).
    ///
    /// # Errors
    /// Whatever says that this connection is not worth serving: a TLS
    /// error, `Broken`, an I/O error. `Busy` if another task receives on
    /// the stream meanwhile.
    async fn serve_handshake(&self) -> Result<()>;
}

/// A report of a failed handshake: the stream (still open) and the error.
type HandshakeReport<'a, S> = Rc<dyn Fn(&S, &Error) + 'a>;

/// Options for [`serve_listeners_with`], [`serve_tcp_with`] and
/// `trio::tls::serve_tls_with` (feature `tls`): a builder,
/// `ServeOptions::new().handshake_timeout(Duration::from_secs(10))`.
/// `ServeOptions::new()` (also `Default`) serves exactly as
/// [`serve_listeners`]: no timeout.
///
/// `S` is the stream type the listeners accept (inferred from the call it
/// is passed to); `'a` is how long the error report may borrow from.
///
/// ```
/// # use std::io::Write;
/// # use std::time::Duration;
/// # use trio::abc::SendStream;
/// # use trio::net::{ServeOptions, TcpStream, serve_tcp_with};
/// trio::run(async {
///     trio::open_nursery(async |n| {
///         let hello = async |stream: TcpStream| stream.send_all(b"hello\n").await;
///         // A client that has sent nothing within 10 s is dropped (and
///         // logged; not with `eprintln!`, which panics if stderr fails).
///         let options = ServeOptions::new()
///             .handshake_timeout(Duration::from_secs(10))
///             .on_handshake_error(|s: &TcpStream, e| {
///                 let _ = writeln!(std::io::stderr(), "{:?}: dropped: {e}", s.peer_addr());
///             });
///         let addrs = n
///             .start(async move |status| {
///                 match serve_tcp_with(hello, 0, Some("127.0.0.1"), options, Some(status)).await? {}
///             })
///             .await?;
///         # let _ = addrs;
///         n.cancel_scope().cancel();
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct ServeOptions<'a, S> {
    handshake_timeout: Option<Duration>,
    on_handshake_error: Option<HandshakeReport<'a, S>>,
}

impl<'a, S> ServeOptions<'a, S> {
    /// No handshake timeout, no report: as [`serve_listeners`].
    pub fn new() -> Self {
        ServeOptions { handshake_timeout: None, on_handshake_error: None }
    }

    /// How long each connection gets for its handshake (see
    /// [`ServeHandshake`]: the TLS handshake, or a plain stream's first
    /// byte), counted from when its task starts (right after `accept`; not
    /// while it waited in the listener's queue), before the handler is
    /// called. `None` (the default) calls the handler at once, as
    /// [`serve_listeners`].
    ///
    /// With a timeout, the handshake runs in the connection's own task
    /// under [`fail_after`](crate::fail_after), so a slow client holds up
    /// neither `accept` nor other connections. A connection whose handshake
    /// fails or does not finish in time is reported to
    /// [`on_handshake_error`](Self::on_handshake_error) (if set), dropped
    /// (closing it; no TLS `close_notify`: the handshake did not finish)
    /// and its task ends with `Ok`: one bad client never stops the server,
    /// and the handler never sees it. Cancelling the server (or the handler
    /// nursery) during a handshake ends the task with `Err(Cancelled)`, not
    /// a report.
    ///
    /// For plain TCP this waits for the client to speak first: do not set
    /// it for protocols where the server speaks first (SMTP, FTP, a
    /// greeting), or every connection waits for a byte that never comes
    /// and is dropped.
    ///
    /// It bounds only the handshake: a client that completes it and then
    /// goes quiet is the handler's business (a [`fail_after`](crate::fail_after)
    /// or [`move_on_after`](crate::move_on_after) around its reads).
    pub fn handshake_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.handshake_timeout = timeout.into();
        self
    }

    /// Called, in the connection's task, for each connection whose
    /// handshake fails or times out, with the stream (still open: read its
    /// peer address, for example; for TLS the alert, if any, was already
    /// sent) and the error: [`Error::TooSlow`] for the timeout, else the
    /// handshake's error (a TLS `Io(InvalidData)`, `Broken`, ...). Not
    /// called for a cancellation. It must not block (it is not async);
    /// a panic in it is the connection task's panic. Without it failures
    /// are silent (nothing is printed).
    pub fn on_handshake_error(mut self, report: impl Fn(&S, &Error) + 'a) -> Self {
        self.on_handshake_error = Some(Rc::new(report));
        self
    }
}

impl<S> Default for ServeOptions<'_, S> {
    fn default() -> Self {
        ServeOptions::new()
    }
}

impl<S> Clone for ServeOptions<'_, S> {
    fn clone(&self) -> Self {
        ServeOptions { handshake_timeout: self.handshake_timeout, on_handshake_error: self.on_handshake_error.clone() }
    }
}

impl<S> std::fmt::Debug for ServeOptions<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("on_handshake_error", &self.on_handshake_error.as_ref().map(|_| "Fn(&S, &Error)"))
            .finish()
    }
}

/// `handler`, preceded in each connection's task by the handshake that
/// `options` asks for (see [`ServeOptions::handshake_timeout`]).
fn with_handshake<'a, S, H>(handler: H, options: ServeOptions<'a, S>) -> impl AsyncFn(S) -> Result<()> + 'a
where
    S: ServeHandshake + 'a,
    H: AsyncFn(S) -> Result<()> + 'a,
{
    async move |stream: S| {
        if let Some(timeout) = options.handshake_timeout {
            match crate::fail_after(timeout, stream.serve_handshake()).await {
                Ok(()) => {}
                Err(e @ Error::Cancelled(_)) => return Err(e),
                Err(e) => {
                    if let Some(report) = &options.on_handshake_error {
                        report(&stream, &e);
                    }
                    drop(stream);
                    return Ok(());
                }
            }
        }
        handler(stream).await
    }
}

/// Accepts connections on every listener of `listeners`, forever, and runs
/// `handler(stream)` in a new task for each.
///
/// A client that connects and sends nothing keeps its task (and its
/// descriptor) until the handler gives up on it: for a server facing the
/// internet, set a handshake timeout with [`serve_listeners_with`], or
/// bound the handler's reads.
///
/// ```no_run
/// use trio::abc::{ReceiveStream, SendStream};
/// use trio::net::{TcpStream, open_tcp_listeners, serve_listeners};
///
/// trio::run(async {
///     let listeners = open_tcp_listeners(8080, Some("127.0.0.1")).await?;
///     // An echo server; it runs until cancelled.
///     let echo = async |stream: TcpStream| {
///         let mut buf = [0u8; 4096];
///         loop {
///             let n = stream.receive_some(&mut buf).await?;
///             if n == 0 {
///                 return Ok(());
///             }
///             stream.send_all(&buf[..n]).await?;
///         }
///     };
///     match serve_listeners(echo, listeners, None, None).await? {}
/// })
/// .unwrap_or_else(|e| eprintln!("server stopped: {e}"));
/// ```
///
/// # The handler
/// Any `AsyncFn(L::Stream) -> Result<()>`: an async closure, or a closure
/// returning a future (`|stream| async move { ... }`). It may borrow from
/// the caller's frame for as long as the handler nursery lives (when the
/// handler is a local of the nursery body that `start`s the server, move it
/// in: `n.start(async move |status| ...)`). Each connection's task owns its
/// stream: the stream is dropped, which closes a socket, when the handler
/// returns or fails (or is cancelled); a handler that wants the checkpoint
/// of [`aclose`](crate::abc::AsyncResource::aclose) or its error calls it
/// itself.
///
/// The handler tasks run in `handler_nursery`, or, with `None`, in a
/// nursery of this call. As in Trio, nothing catches a handler's error: it
/// cancels the handler nursery and comes out of it, so by default it stops
/// the server and comes out of this call. Catch errors in the handler to
/// keep serving, or pass a nursery of your own. Handlers in a nursery of
/// your own also outlive the server: cancelling the server alone leaves
/// them running.
///
/// # Starting
/// With `task_status` (from [`Nursery::start`]) it reports, once every
/// accept loop is running, shared handles (`Rc`) to the listeners, as Trio
/// reports the listeners, for example to read their addresses; pass `None`
/// when the caller does not need them.
/// The listeners were already queueing connections before this call, so
/// nothing is lost meanwhile.
///
/// ```
/// # use trio::net::{TcpStream, open_tcp_listeners, serve_listeners};
/// trio::run(async {
///     let listeners = open_tcp_listeners(0, Some("127.0.0.1")).await?;
///     trio::open_nursery(async |n| {
///         let handler = async |_stream: TcpStream| Ok(());
///         let listeners = n
///             .start(async move |status| match serve_listeners(handler, listeners, None, Some(status)).await? {})
///             .await?;
///         let addr = listeners[0].local_addr()?;
///         let _client = TcpStream::connect(addr).await?;
///         n.cancel_scope().cancel();
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// .unwrap();
/// ```
///
/// # Accept errors
/// An accept error that says the system is out of resources (`EMFILE`,
/// `ENFILE`, `ENOMEM`, `ENOBUFS`; on Windows `WSAEMFILE`, `WSAENOBUFS`) is
/// written to standard error and the loop sleeps
/// [`ACCEPT_CAPACITY_ERROR_SLEEP`] (on the run's clock) before accepting
/// again, in the hope that connections close meanwhile (on Linux the
/// connection that could not be accepted stays queued meanwhile). Every other accept error stops the
/// server and comes out of this call.
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// The only way this returns without an error in a handler or listener:
/// every accept loop stops, every listener is closed (also those whose
/// handles were reported: their operations fail with `Closed`), the handler
/// tasks of the internal nursery are cancelled and waited for; returns
/// `Err(Cancelled)`.
/// # Errors
/// `Io(InvalidInput)` if `listeners` is empty; a handler's error (several
/// come as a [`Error::Group`]); an accept error other than the ones above.
/// It never returns `Ok` (`Infallible`), so `match serve_listeners(..).await? {}`
/// has any type.
pub async fn serve_listeners<'s, 'e, L, H>(
    handler: H,
    listeners: Vec<L>,
    handler_nursery: Option<&'s Nursery<'s, 'e>>,
    task_status: Option<TaskStatus<Vec<Rc<L>>>>,
) -> Result<Infallible>
where
    L: Listener + 's,
    L::Stream: 's,
    H: AsyncFn(L::Stream) -> Result<()> + 's,
{
    serve(handler, listeners, handler_nursery, |handles: &[Rc<L>]| {
        if let Some(status) = task_status {
            status.started(handles.to_vec());
        }
    })
    .await
}

/// [`serve_listeners`] with [`ServeOptions`]: with a
/// [`handshake_timeout`](ServeOptions::handshake_timeout), each
/// connection's task first waits for its handshake ([`ServeHandshake`]:
/// the TLS handshake for a `trio::tls::TlsListener`'s
/// streams, the first byte for plain TCP or Unix streams), within the
/// timeout, and calls `handler` only if it succeeded; a connection that
/// fails it or runs out of time is reported to
/// [`on_handshake_error`](ServeOptions::on_handshake_error) and dropped,
/// and the server goes on. This is what keeps clients that connect and
/// send nothing from holding descriptors (and, once the process is out of
/// them, locking every other client out) forever. With
/// `ServeOptions::new()` it is exactly [`serve_listeners`].
///
/// ```no_run
/// use std::time::Duration;
/// use trio::abc::{ReceiveStream, SendStream};
/// use trio::net::{ServeOptions, TcpStream, open_tcp_listeners, serve_listeners_with};
///
/// trio::run(async {
///     let listeners = open_tcp_listeners(8080, None).await?;
///     // An echo server; a client that sends nothing within 10 s is dropped
///     // without reaching it (a `TlsListener`'s clients: that finish no TLS
///     // handshake within 10 s).
///     let echo = async |stream: TcpStream| {
///         let mut buf = [0u8; 4096];
///         loop {
///             let n = stream.receive_some(&mut buf).await?;
///             if n == 0 {
///                 return Ok(());
///             }
///             stream.send_all(&buf[..n]).await?;
///         }
///     };
///     let options = ServeOptions::new().handshake_timeout(Duration::from_secs(10));
///     match serve_listeners_with(echo, listeners, None, options, None).await? {}
/// })
/// .unwrap_or_else(|e| eprintln!("server stopped: {e}"));
/// ```
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// As [`serve_listeners`]; a connection cancelled during its handshake is
/// dropped without a report.
/// # Errors
/// As [`serve_listeners`]; a failed or timed-out handshake is never an
/// error of this call.
pub async fn serve_listeners_with<'s, 'e, L, H>(
    handler: H,
    listeners: Vec<L>,
    handler_nursery: Option<&'s Nursery<'s, 'e>>,
    options: ServeOptions<'s, L::Stream>,
    task_status: Option<TaskStatus<Vec<Rc<L>>>>,
) -> Result<Infallible>
where
    L: Listener + 's,
    L::Stream: ServeHandshake + 's,
    H: AsyncFn(L::Stream) -> Result<()> + 's,
{
    serve(with_handshake(handler, options), listeners, handler_nursery, |handles: &[Rc<L>]| {
        if let Some(status) = task_status {
            status.started(handles.to_vec());
        }
    })
    .await
}

/// Trio's `serve_tcp`: [`open_tcp_listeners`](super::open_tcp_listeners)
/// on `port` and `host`, then [`serve_listeners`] with its own handler
/// nursery. With `task_status` it reports the listeners' bound addresses
/// (with the ports the OS chose for port 0; with `host` `None` there is an
/// IPv4 and, if the system has it, an IPv6 listener, each with its own
/// port).
///
/// ```
/// # use trio::abc::SendStream;
/// # use trio::net::{TcpStream, serve_tcp};
/// trio::run(async {
///     trio::open_nursery(async |n| {
///         let hello = async |stream: TcpStream| stream.send_all(b"hello\n").await;
///         let addrs = n
///             .start(async move |status| match serve_tcp(hello, 0, Some("127.0.0.1"), Some(status)).await? {})
///             .await?;
///         let _client = TcpStream::connect(addrs[0]).await?;
///         n.cancel_scope().cancel();
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// .unwrap();
/// ```
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// As [`serve_listeners`]: the listeners are closed; returns
/// `Err(Cancelled)`.
/// # Errors
/// Those of [`open_tcp_listeners`](super::open_tcp_listeners) (before
/// `started`) and of [`serve_listeners`].
pub async fn serve_tcp<H>(
    handler: H,
    port: u16,
    host: Option<&str>,
    task_status: Option<TaskStatus<Vec<SocketAddr>>>,
) -> Result<Infallible>
where
    H: AsyncFn(TcpStream) -> Result<()>,
{
    let listeners = super::open_tcp_listeners(port, host).await?;
    let addrs = listeners.iter().map(TcpListener::local_addr).collect::<Result<Vec<_>>>()?;
    serve(handler, listeners, None, |_: &[Rc<TcpListener>]| {
        if let Some(status) = task_status {
            status.started(addrs);
        }
    })
    .await
}

/// [`serve_tcp`] with [`ServeOptions`] (as [`serve_listeners_with`]): with
/// a [`handshake_timeout`](ServeOptions::handshake_timeout), a client
/// that has not sent its first byte within the timeout is dropped without
/// reaching the handler (a readiness wait: the handler still receives
/// every byte). Only for protocols where the client speaks first (see
/// [`ServeOptions::handshake_timeout`]). With `ServeOptions::new()` it is
/// exactly [`serve_tcp`].
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// As [`serve_tcp`].
/// # Errors
/// As [`serve_tcp`]; a client that sends nothing in time is never an
/// error of this call.
pub async fn serve_tcp_with<H>(
    handler: H,
    port: u16,
    host: Option<&str>,
    options: ServeOptions<'_, TcpStream>,
    task_status: Option<TaskStatus<Vec<SocketAddr>>>,
) -> Result<Infallible>
where
    H: AsyncFn(TcpStream) -> Result<()>,
{
    serve_tcp(with_handshake(handler, options), port, host, task_status).await
}

/// [`serve_listeners`], calling `on_started` once every accept loop runs.
async fn serve<'s, 'e, L, H>(
    handler: H,
    listeners: Vec<L>,
    handler_nursery: Option<&'s Nursery<'s, 'e>>,
    on_started: impl FnOnce(&[Rc<L>]),
) -> Result<Infallible>
where
    L: Listener + 's,
    L::Stream: 's,
    H: AsyncFn(L::Stream) -> Result<()> + 's,
{
    if listeners.is_empty() {
        return Err(Error::Io(io::Error::new(io::ErrorKind::InvalidInput, "serve_listeners needs a listener")));
    }
    let listeners: Vec<Rc<L>> = listeners.into_iter().map(Rc::new).collect();
    let handler = Rc::new(handler);
    let (handler, listeners) = (&handler, &listeners);
    crate::open_nursery(async |n| {
        for listener in listeners {
            let listener = listener.clone();
            match handler_nursery {
                Some(hn) => n.spawn_named("serve_listeners accept loop", accept_loop(listener, hn, handler.clone())),
                None => n.spawn_named("serve_listeners accept loop", accept_loop(listener, n, handler.clone())),
            }
        }
        on_started(listeners);
        Ok(())
    })
    .await?;
    // Every accept loop ends with an error, and nobody else can cancel the
    // nursery's own scope: unreachable in practice.
    Err(Error::Runtime("serve_listeners: the accept loops ended"))
}

/// One listener's accept loop; closes the listener when it ends.
async fn accept_loop<'s, 'e, L, H>(listener: Rc<L>, handler_nursery: &'s Nursery<'s, 'e>, handler: Rc<H>) -> Result<()>
where
    L: Listener + 's,
    L::Stream: 's,
    H: AsyncFn(L::Stream) -> Result<()> + 's,
{
    let r = accept_forever(&*listener, handler_nursery, &handler).await;
    // Closes even when cancelled.
    let _ = listener.aclose().await;
    match r? {}
}

async fn accept_forever<'s, 'e, L, H>(
    listener: &L,
    handler_nursery: &'s Nursery<'s, 'e>,
    handler: &Rc<H>,
) -> Result<Infallible>
where
    L: Listener,
    L::Stream: 's,
    H: AsyncFn(L::Stream) -> Result<()> + 's,
{
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let handler = handler.clone();
                handler_nursery.spawn_named("serve_listeners handler", async move { handler(stream).await });
            }
            Err(Error::Io(e)) if is_capacity_error(&e) => {
                eprintln!(
                    "trio::net::serve_listeners: accept returned {} ({e}); retrying in {:?}",
                    errno_name(&e),
                    ACCEPT_CAPACITY_ERROR_SLEEP
                );
                crate::sleep(ACCEPT_CAPACITY_ERROR_SLEEP).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

use crate::driver::os::capacity_errors as capacity_errnos;

fn is_capacity_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| capacity_errnos().iter().any(|&(c, _)| c == code))
}

fn errno_name(e: &io::Error) -> &'static str {
    let code = e.raw_os_error();
    capacity_errnos().iter().find(|&&(c, _)| Some(c) == code).map_or("an error", |&(_, name)| name)
}
