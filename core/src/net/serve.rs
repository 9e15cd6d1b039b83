//! `serve_listeners` and `serve_tcp`, after Trio's: accept connections on
//! listeners forever and run a handler task for each.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::TcpListener;
use crate::abc::Listener;
use crate::error::{Error, Result};
use crate::nursery::{Nursery, TaskStatus};

/// How long the accept loop sleeps after an accept error that says the
/// system is out of resources (see [`serve_listeners`]): 100 ms, as Trio.
pub const ACCEPT_CAPACITY_ERROR_SLEEP: Duration = Duration::from_millis(100);

/// Accepts connections on every listener of `listeners`, forever, and runs
/// `handler(stream)` in a new task for each.
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
    H: AsyncFn(super::TcpStream) -> Result<()>,
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
