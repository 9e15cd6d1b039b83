//! Networking: TCP, UDP and Unix-domain sockets on the run's I/O driver,
//! name resolution on a worker thread, and Trio's high-level helpers
//! (`open_tcp_stream` with happy eyeballs, `open_tcp_listeners`,
//! `serve_tcp`, `serve_listeners`).
//!
//! Every socket is non-blocking and registered with the driver once, when
//! it is made; operations try the system call first and wait for readiness
//! only when it would block. Every operation is a checkpoint.

//!
//! On WASI the same names are backed by the platform's sockets:
//! preview 1 (`wasm32-wasip1`) has only the listeners the host preopened
//! (`preopened_listeners`) and the streams they accept; preview 2
//! (`wasm32-wasip2`) binds, listens, accepts and connects through
//! `wasi:sockets`, as far as the host's network policy allows.

mod happy_eyeballs;
mod serve;
mod stream;
mod tcp;
#[cfg(not(target_os = "wasi"))]
mod udp;
#[cfg(unix)]
mod unix;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use happy_eyeballs::*;
pub use serve::*;
#[cfg(all(target_os = "wasi", target_env = "p1"))]
pub use tcp::preopened_listeners;
pub use tcp::{ListenOptions, TcpListener, TcpStream};
#[cfg(not(target_os = "wasi"))]
pub use udp::UdpSocket;
#[cfg(unix)]
pub use unix::{UnixDatagram, UnixListener, UnixStream, open_unix_listener, open_unix_socket};

use crate::error::{Error, Result};

/// Resolves `host` to socket addresses with port `port`, through the
/// system's `getaddrinfo` on a worker thread (the default thread limiter
/// bounds how many run at once). IP literals are parsed without a thread.
/// The order is the resolver's (it already sorts by RFC 6724 preference).
/// On WASI preview 2 names go to `wasi:sockets/ip-name-lookup`; preview 1
/// has no resolver and takes IP literals only.
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// Returns `Err(Cancelled)` at once; the lookup finishes in the background
/// and its result is dropped.
/// # Errors
/// `Io` from the resolver (for example an unknown host), with the host
/// name in the message.
pub async fn getaddrinfo(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        crate::checkpoint().await?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.is_empty() {
        return Err(Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty host name")));
    }
    crate::driver::socket::resolve(host, port).await
}

/// Opens TCP listeners on `port` (0: the OS picks, separately for each
/// address) on every address of `host`, or on all local IPv4 and IPv6
/// addresses when `host` is `None` (IPv6 listeners are `IPV6_V6ONLY`, so
/// both can share a port). An address family the system lacks is skipped;
/// failing on every address is an error.
///
/// # Checkpoint
/// Always.
/// # Errors
/// `Io` (`AddrInUse`, ...) from the first address that failed, if none
/// could be bound; resolver errors as [`getaddrinfo`].
pub async fn open_tcp_listeners(port: u16, host: Option<&str>) -> Result<Vec<TcpListener>> {
    let addrs = match host {
        Some(h) => getaddrinfo(h, port).await?,
        None => {
            crate::checkpoint().await?;
            vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ]
        }
    };
    let mut listeners = Vec::new();
    let mut first_err = None;
    for addr in addrs {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                let unsupported = matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::AddrNotAvailable
                    || io.raw_os_error() == address_family_not_supported());
                if !unsupported && first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    if listeners.is_empty() {
        return Err(first_err.unwrap_or_else(|| {
            Error::Io(std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address could be bound"))
        }));
    }
    Ok(listeners)
}

use crate::driver::os::address_family_not_supported;
