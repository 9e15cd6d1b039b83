//! UDP sockets.

use std::net::SocketAddr;

use socket2::{Domain, SockAddr, SockRef, Type};

use crate::driver::socket::SocketOps;
use crate::driver::socket::{OsSocket as Socket, ip_addr};
use crate::error::Result;

/// A UDP socket. Every send and receive is a checkpoint.
#[derive(Debug)]
pub struct UdpSocket {
    core: Socket,
}

impl UdpSocket {
    /// Binds a UDP socket to `addr` (port 0: the OS picks).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse`, ...).
    pub fn bind(addr: SocketAddr) -> Result<UdpSocket> {
        Ok(UdpSocket { core: Socket::bound(Domain::for_address(addr), Type::DGRAM, &addr.into(), None, |_| Ok(()))? })
    }

    /// Takes over a std UDP socket (made non-blocking and registered).
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn from_std(sock: std::net::UdpSocket) -> Result<UdpSocket> {
        Ok(UdpSocket { core: Socket::wrap(sock.into(), false)? })
    }

    /// The bound address.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.core.local_addr()
    }

    /// Sets the default peer for [`send`](Self::send) and filters what
    /// [`recv`](Self::recv) gets. Not a checkpoint (UDP connect does not
    /// block).
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub fn connect(&self, addr: SocketAddr) -> Result<()> {
        self.core.connect_now(&addr.into())
    }

    /// Sends one datagram to `addr`.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send_to(&self, data: &[u8], addr: SocketAddr) -> Result<usize> {
        let addr = SockAddr::from(addr);
        self.core.send_to(data, &addr).await
    }

    /// Sends one datagram to the connected peer.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS (for example `ConnectionRefused` after an
    /// ICMP port-unreachable).
    pub async fn send(&self, data: &[u8]) -> Result<usize> {
        self.core.send_datagram(data).await
    }

    /// Receives one datagram (truncated to `buf`'s length) and its sender.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS. On Windows a datagram longer than `buf`
    /// fills it and fails with `WSAEMSGSIZE` (OS error 10040), as Windows'
    /// `recvfrom` does; elsewhere the rest is dropped silently.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let (n, a) = self.core.recv_from(buf).await?;
        Ok((n, ip_addr(a)?))
    }

    /// Receives one datagram from the connected peer (truncated to `buf`'s
    /// length).
    ///
    /// # Errors
    /// As [`recv_from`](Self::recv_from).
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.recv_datagram(buf).await
    }

    /// Runs `f` with the socket, for options this type has no method for
    /// (broadcast, multicast, buffer sizes, ...).
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(SockRef<'_>) -> std::io::Result<R>) -> Result<R> {
        self.core.with_socket(f)
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
