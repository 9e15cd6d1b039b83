//! UDP sockets.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::socket::{SocketCore, recv, recv_from, send};
use super::tcp::sockaddr;
use crate::error::Result;
use crate::runtime::io::Dir;

/// A UDP socket. Every send and receive is a checkpoint.
#[derive(Debug)]
pub struct UdpSocket {
    core: SocketCore,
}

impl UdpSocket {
    /// Binds a UDP socket to `addr` (port 0: the OS picks).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse`, ...).
    pub fn bind(addr: SocketAddr) -> Result<UdpSocket> {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.bind(&addr.into())?;
        Ok(UdpSocket { core: SocketCore::new(sock)? })
    }

    /// Takes over a std UDP socket (made non-blocking and registered).
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std(sock: std::net::UdpSocket) -> Result<UdpSocket> {
        Ok(UdpSocket { core: SocketCore::new(Socket::from(sock))? })
    }

    /// The bound address.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        sockaddr(self.core.sock()?.local_addr()?)
    }

    /// Sets the default peer for [`send`](Self::send) and filters what
    /// [`recv`](Self::recv) gets. Not a checkpoint (UDP connect does not
    /// block).
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        Ok(self.core.sock()?.connect(&addr.into())?)
    }

    /// Sends one datagram to `addr`.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<usize> {
        let addr = SockAddr::from(addr);
        self.core.io(Dir::Write, |s| s.send_to(data, &addr).map(|n| (n, false))).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS (for example `ConnectionRefused` after an
    /// ICMP port-unreachable).
    pub async fn send(&self, data: &[u8]) -> Result<usize> {
        self.core.io(Dir::Write, |s| send(s, data).map(|n| (n, false))).await
    }

    /// Receives one datagram (truncated to `buf`'s length) and its sender.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS. On Windows a datagram longer than `buf`
    /// fills it and fails with `WSAEMSGSIZE` (OS error 10040), as Windows'
    /// `recvfrom` does; elsewhere the rest is dropped silently.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let (n, a) = self.core.io(Dir::Read, |s| recv_from(s, buf).map(|r| (r, false))).await?;
        Ok((n, sockaddr(a)?))
    }

    /// Receives one datagram from the connected peer (truncated to `buf`'s
    /// length).
    ///
    /// # Errors
    /// As [`recv_from`](Self::recv_from).
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.io(Dir::Read, |s| recv(s, buf).map(|n| (n, false))).await
    }

    /// Runs `f` with the socket, for options this type has no method for
    /// (broadcast, multicast, buffer sizes, ...).
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(SockRef<'_>) -> std::io::Result<R>) -> Result<R> {
        let s = self.core.sock()?;
        Ok(f(SockRef::from(&*s))?)
    }

    /// Closes the socket.
    ///
    /// # Checkpoint
    /// Always (the socket is closed even if it reports `Cancelled`).
    /// # Errors
    /// `Cancelled`.
    pub async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}
