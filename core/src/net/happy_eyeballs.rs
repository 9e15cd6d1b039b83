//! `open_tcp_stream` with happy eyeballs (RFC 6555/8305), after Trio's
//! `open_tcp_stream`.
//!
//! When a host name has several addresses, some may be unreachable (an IPv6
//! address on a network that drops IPv6, a mirror whose route is down), and a
//! TCP connect to a black hole can take tens of seconds to fail. So the
//! attempts are staggered: the first address is tried; if it has neither
//! connected nor failed after the *happy eyeballs delay* (250 ms by
//! default), the next one starts alongside it, and so on; an attempt that
//! fails starts the next one at once. The first attempt to connect wins, the
//! others are cancelled and their sockets closed.
//!
//! The algorithm itself is [`open_stream_happy_eyeballs`], generic over the
//! connect function (the tests drive it with a scripted fake under the mock
//! clock); [`open_tcp_stream`] and [`OpenTcpStream`] run it with real TCP
//! connects to the addresses of [`getaddrinfo`](super::getaddrinfo).

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::TcpStream;
use crate::abc::AsyncResource;
use crate::error::{Error, Result};
use crate::sync::Event;

/// The default [happy eyeballs delay](OpenTcpStream::happy_eyeballs_delay):
/// 250 ms, as Trio (RFC 6555 reports 150-250 ms in browsers).
pub const DEFAULT_HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(250);

/// Connects to `host` (an IP literal or a name to resolve) on `port` over
/// TCP, with happy eyeballs and the default options; see [`OpenTcpStream`]
/// for the options and the details.
///
/// ```no_run
/// # use trio::abc::SendStream;
/// trio::run(async {
///     let stream = trio::net::open_tcp_stream("example.com", 80).await?;
///     stream.send_all(b"GET / HTTP/1.0\r\n\r\n").await?;
///     Ok(())
/// })
/// .unwrap();
/// ```
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// Every attempt is cancelled and its socket closed; returns
/// `Err(Cancelled)`.
/// # Errors
/// As [`OpenTcpStream::connect`].
pub async fn open_tcp_stream(host: &str, port: u16) -> Result<TcpStream> {
    OpenTcpStream::new().connect(host, port).await
}

/// How [`open_tcp_stream`] connects: a builder of its options (Trio's
/// keyword arguments), ending in [`connect`](OpenTcpStream::connect).
///
/// ```no_run
/// # use std::time::Duration;
/// # use trio::net::OpenTcpStream;
/// trio::run(async {
///     let stream = OpenTcpStream::new()
///         .happy_eyeballs_delay(Some(Duration::from_millis(100)))
///         .local_address("0.0.0.0".parse()?)
///         .connect("example.com", 80)
///         .await?;
///     # drop(stream);
///     Ok(())
/// })
/// .unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTcpStream {
    happy_eyeballs_delay: Option<Duration>,
    local_address: Option<IpAddr>,
}

impl Default for OpenTcpStream {
    fn default() -> OpenTcpStream {
        OpenTcpStream::new()
    }
}

impl OpenTcpStream {
    /// The defaults: a delay of [`DEFAULT_HAPPY_EYEBALLS_DELAY`], no local
    /// address.
    pub fn new() -> OpenTcpStream {
        OpenTcpStream { happy_eyeballs_delay: Some(DEFAULT_HAPPY_EYEBALLS_DELAY), local_address: None }
    }

    /// How long an attempt may run without connecting or failing before the
    /// next one starts alongside it. `None`: one attempt at a time, the next
    /// one starting only when the previous one failed (like the standard
    /// library's `TcpStream::connect`). `Some(Duration::ZERO)` starts every
    /// attempt at once.
    ///
    /// (Trio's own code treats `None` as "the default delay", although its
    /// documentation says "one at a time"; this follows the documentation.)
    pub fn happy_eyeballs_delay(mut self, delay: Option<Duration>) -> OpenTcpStream {
        self.happy_eyeballs_delay = delay;
        self
    }

    /// The local IP address to connect from (the port is left to the OS;
    /// on Linux `IP_BIND_ADDRESS_NO_PORT` lets it pick one per
    /// destination). An IPv4 address cannot reach IPv6 hosts nor the other
    /// way round: those attempts fail, so the wildcard `0.0.0.0` or `::`
    /// restricts the connection to one family. Default: none (the OS
    /// chooses).
    pub fn local_address(mut self, address: IpAddr) -> OpenTcpStream {
        self.local_address = Some(address);
        self
    }

    /// Resolves `host` with [`getaddrinfo`](super::getaddrinfo), reorders
    /// the addresses as [`reorder_for_rfc_6555_section_5_4`] and connects
    /// with [`open_stream_happy_eyeballs`].
    ///
    /// # Checkpoint
    /// Always.
    /// # Cancellation
    /// Every attempt is cancelled and its socket closed (also a socket that
    /// connected at the moment of the cancellation); returns
    /// `Err(Cancelled)`.
    /// # Errors
    /// Resolver errors as [`getaddrinfo`](super::getaddrinfo). If every
    /// attempt failed: with one address its error, with several an
    /// [`Error::Group`] of every attempt's error in the order the addresses
    /// were tried. Each is an [`Error::Io`] of the OS error's kind
    /// (`ConnectionRefused`, ...) whose message names the address (the
    /// original `io::Error` is its
    /// [`source`](std::error::Error::source)).
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream> {
        let targets = super::getaddrinfo(host, port).await?;
        let local = self.local_address;
        open_stream_happy_eyeballs(&targets, self.happy_eyeballs_delay, async |addr| {
            let r = match local {
                None => TcpStream::connect(addr).await,
                Some(local) => TcpStream::connect_from(local, addr).await,
            };
            r.map_err(|e| annotate(e, addr))
        })
        .await
    }
}

/// Reorders `targets` in place so that, if they contain more than one
/// address family, the second one differs from the first (RFC 6555 section
/// 5.4): the first address of another family than the first address moves
/// to the second place; the rest keep their order. As Trio's
/// `reorder_for_rfc_6555_section_5_4`.
///
/// ```
/// # use std::net::SocketAddr;
/// let a = |s: &str| s.parse::<SocketAddr>().unwrap();
/// let mut v = vec![a("10.0.0.1:80"), a("10.0.0.2:80"), a("[::1]:80"), a("[::2]:80")];
/// trio::net::reorder_for_rfc_6555_section_5_4(&mut v);
/// assert_eq!(v, [a("10.0.0.1:80"), a("[::1]:80"), a("10.0.0.2:80"), a("[::2]:80")]);
/// ```
pub fn reorder_for_rfc_6555_section_5_4(targets: &mut [SocketAddr]) {
    let Some(first) = targets.first() else { return };
    let family = first.is_ipv4();
    if let Some(i) = targets.iter().position(|a| a.is_ipv4() != family) {
        // Move the entry at `i` to index 1, shifting 1..i one place right.
        targets[1..=i].rotate_right(1);
    }
}

/// The happy eyeballs algorithm over any connect function: tries
/// `targets`, reordered as [`reorder_for_rfc_6555_section_5_4`], with
/// `connect(addr)`, starting the attempts one after another, and returns the
/// first stream that connected.
///
/// - Attempt *k+1* starts when attempt *k* failed or when `delay` has
///   passed since attempt *k* started, whichever comes first (with `delay`
///   `None`: only when it failed, so one attempt runs at a time).
/// - The first attempt to succeed wins: the others are cancelled (their
///   `connect` futures see `Cancelled` and must close what they opened), and
///   a stream that connected too late (in the same scheduling pass) is
///   closed with [`aclose`](AsyncResource::aclose).
/// - An error from `connect` that contains `Cancelled` ends the whole
///   operation (it is how an outer cancellation arrives); every other error
///   is recorded as that attempt's failure.
///
/// [`OpenTcpStream`] uses it with real TCP connects; it is public for other
/// transports and for tests, which drive it with scripted fake connects
/// under the mock clock.
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// Every running attempt is cancelled; a stream that had connected is
/// closed; returns `Err(Cancelled)`.
/// # Errors
/// `Io(InvalidInput)` if `targets` is empty. If every attempt failed: with
/// one target its error, with several an [`Error::Group`] of every
/// attempt's error, in the order the targets were tried (after the
/// reordering).
pub async fn open_stream_happy_eyeballs<S, C>(targets: &[SocketAddr], delay: Option<Duration>, connect: C) -> Result<S>
where
    S: AsyncResource,
    C: AsyncFn(SocketAddr) -> Result<S>,
{
    if targets.is_empty() {
        return Err(Error::Io(io::Error::new(io::ErrorKind::InvalidInput, "no addresses to connect to")));
    }
    let mut order = targets.to_vec();
    reorder_for_rfc_6555_section_5_4(&mut order);
    let failed: Vec<Event> = order.iter().map(|_| Event::new()).collect();
    let errors: RefCell<Vec<Option<Error>>> = RefCell::new(order.iter().map(|_| None).collect());
    let winner: RefCell<Option<S>> = RefCell::new(None);
    let (connect, failed, errors, winner) = (&connect, &failed, &errors, &winner);
    let outcome = crate::open_nursery(async |n| {
        for (i, &addr) in order.iter().enumerate() {
            n.spawn_named("happy eyeballs attempt", async move {
                match connect(addr).await {
                    Ok(stream) => {
                        let won = winner.borrow().is_none();
                        if won {
                            *winner.borrow_mut() = Some(stream);
                            n.cancel_scope().cancel();
                        } else {
                            // Connected in the same pass as the winner.
                            let _ = stream.aclose().await;
                        }
                        Ok(())
                    }
                    Err(e) if e.contains_cancelled() => Err(e),
                    Err(e) => {
                        errors.borrow_mut()[i] = Some(e);
                        failed[i].set();
                        Ok(())
                    }
                }
            });
            if i + 1 < order.len() {
                match delay {
                    Some(d) => {
                        crate::move_on_after(d, failed[i].wait()).await?;
                    }
                    None => failed[i].wait().await?,
                }
            }
        }
        Ok(())
    })
    .await;
    let won = winner.borrow_mut().take();
    match (outcome, won) {
        (Ok(_), Some(stream)) => Ok(stream),
        (Err(e), Some(stream)) => {
            // Connected, but the caller was cancelled (or something broke)
            // at the same time: do not leak the stream.
            let _ = stream.aclose().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
        (Ok(_), None) => {
            let errors: Vec<Error> = errors.take().into_iter().flatten().collect();
            Err(Error::combine(errors).unwrap_or(Error::Runtime("happy eyeballs ended without an outcome")))
        }
    }
}

/// A connect attempt's OS error, naming the address it was for. The
/// original error is its `source`.
#[derive(Debug)]
struct ConnectError {
    addr: SocketAddr,
    source: io::Error,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connecting to {}: {}", self.addr, self.source)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn annotate(e: Error, addr: SocketAddr) -> Error {
    match e {
        Error::Io(source) => Error::Io(io::Error::new(source.kind(), ConnectError { addr, source })),
        other => other,
    }
}
