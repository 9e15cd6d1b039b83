//! Unix-domain stream sockets, listeners and datagram sockets.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::socket::{SocketCore, StreamSocket, recv, recv_from, send, stream, stream_traits};
use super::stream::SocketIo;
use crate::error::{Error, Result};
use crate::runtime::io::Dir;

/// A connected Unix-domain stream socket (a
/// [`HalfCloseableStream`](crate::abc::HalfCloseableStream)).
#[derive(Debug)]
pub struct UnixStream {
    pub(crate) sock: StreamSocket,
}

stream_traits!(UnixStream);

impl UnixStream {
    /// Connects to the socket at `path`.
    ///
    /// # Checkpoint
    /// Always.
    /// # Cancellation
    /// The half-made socket is closed; returns `Err(Cancelled)`.
    /// # Errors
    /// `Io` (`NotFound`, `ConnectionRefused`, a path too long, ...).
    pub async fn connect(path: impl AsRef<Path>) -> Result<UnixStream> {
        let addr = SockAddr::unix(path)?;
        let s = UnixStream { sock: stream(Socket::new(Domain::UNIX, Type::STREAM, None)?)? };
        crate::lowlevel::checkpoint_if_cancelled().await?;
        let started = s.sock.core.sock()?.connect(&addr);
        match started {
            Ok(()) => crate::lowlevel::cancel_shielded_checkpoint().await?,
            Err(e) if super::tcp::in_progress(&e) => {
                s.sock.core.wait_ready(Dir::Write).await?;
                if let Some(e) = s.sock.core.sock()?.take_error()? {
                    return Err(Error::Io(e));
                }
            }
            Err(e) => return Err(Error::Io(e)),
        }
        Ok(s)
    }

    /// A connected pair (`socketpair`).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` from the OS.
    pub fn pair() -> Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((UnixStream { sock: stream(a)? }, UnixStream { sock: stream(b)? }))
    }

    /// Takes over a connected std Unix stream.
    ///
    /// # Errors
    /// As [`pair`](Self::pair).
    pub fn from_std(std_stream: std::os::unix::net::UnixStream) -> Result<UnixStream> {
        Ok(UnixStream { sock: stream(Socket::from(std_stream))? })
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>) -> Result<R> {
        let s = self.sock.core.sock()?;
        Ok(f(socket2::SockRef::from(&*s))?)
    }

    /// The peer's address (its path, if it has one).
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn peer_path(&self) -> Result<Option<PathBuf>> {
        Ok(self.sock.core.sock()?.peer_addr()?.as_pathname().map(Path::to_path_buf))
    }
}

impl std::os::fd::AsRawFd for UnixStream {
    /// The descriptor (-1 after `aclose`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.core.sock().map(|s| super::socket::raw(&s)).unwrap_or(-1)
    }
}

/// A Unix-domain listener (a [`Listener`](crate::abc::Listener) of
/// [`UnixStream`]s). Dropping or closing it does not remove the socket
/// file; [`open_unix_listener`](super::open_unix_listener) does so on the
/// way in (removing a stale file).
#[derive(Debug)]
pub struct UnixListener {
    core: SocketCore,
    accepting: Cell<bool>,
}

impl UnixListener {
    /// Binds and listens at `path` (which must not exist).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse` if the path exists).
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener> {
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        sock.bind(&SockAddr::unix(path)?)?;
        sock.listen(1024)?;
        Ok(UnixListener { core: SocketCore::new(sock)?, accepting: Cell::new(false) })
    }

    /// The bound path.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn local_path(&self) -> Result<Option<PathBuf>> {
        Ok(self.core.sock()?.local_addr()?.as_pathname().map(Path::to_path_buf))
    }
}

impl crate::abc::AsyncResource for UnixListener {
    async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}

impl crate::abc::Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept(&self) -> Result<UnixStream> {
        let sock = self.core.accept_on(&self.accepting, super::socket::accept).await?;
        Ok(UnixStream { sock: stream(sock)? })
    }
}

/// A Unix-domain datagram socket.
#[derive(Debug)]
pub struct UnixDatagram {
    core: SocketCore,
}

impl UnixDatagram {
    /// Binds a datagram socket at `path`.
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` from the OS.
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixDatagram> {
        let sock = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
        sock.bind(&SockAddr::unix(path)?)?;
        Ok(UnixDatagram { core: SocketCore::new(sock)? })
    }

    /// An unbound datagram socket.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn unbound() -> Result<UnixDatagram> {
        Ok(UnixDatagram { core: SocketCore::new(Socket::new(Domain::UNIX, Type::DGRAM, None)?)? })
    }

    /// A connected pair.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn pair() -> Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::DGRAM, None)?;
        Ok((UnixDatagram { core: SocketCore::new(a)? }, UnixDatagram { core: SocketCore::new(b)? }))
    }

    /// Sets the default peer (for [`send`](Self::send)). Not a checkpoint.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn connect(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.core.sock()?.connect(&SockAddr::unix(path)?)?)
    }

    /// Sends one datagram to `path`. A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send_to(&self, data: &[u8], path: impl AsRef<Path>) -> Result<usize> {
        let addr = SockAddr::unix(path)?;
        self.core.io(Dir::Write, |s| s.send_to(data, &addr).map(|n| (n, false))).await
    }

    /// Sends one datagram to the connected peer. A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send(&self, data: &[u8]) -> Result<usize> {
        self.core.io(Dir::Write, |s| send(s, data).map(|n| (n, false))).await
    }

    /// Receives one datagram (truncated to `buf`'s length). A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.io(Dir::Read, |s| recv(s, buf).map(|n| (n, false))).await
    }

    /// Receives one datagram and the sender's path (if it is bound). A
    /// checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, Option<PathBuf>)> {
        self.core
            .io(Dir::Read, |s| recv_from(s, buf).map(|(n, a)| ((n, a.as_pathname().map(Path::to_path_buf)), false)))
            .await
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

/// Binds a [`UnixListener`] at `path`, first removing a stale socket file
/// there (one that no process listens on any more); anything else at
/// `path` is left alone and reported as `AddrInUse`.
///
/// # Errors
/// As [`UnixListener::bind`].
pub async fn open_unix_listener(path: impl AsRef<Path>) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let path = path.as_ref();
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        // Stale if nobody accepts connections there.
        let probe = std::os::unix::net::UnixStream::connect(path);
        if let Err(e) = probe
            && e.kind() == io::ErrorKind::ConnectionRefused
        {
            let _ = std::fs::remove_file(path);
        }
    }
    crate::lowlevel::checkpoint().await?;
    UnixListener::bind(path)
}

/// Connects to the Unix-domain socket at `path` (Trio's `open_unix_socket`).
///
/// # Errors
/// As [`UnixStream::connect`].
pub async fn open_unix_socket(path: impl AsRef<Path>) -> Result<UnixStream> {
    UnixStream::connect(path).await
}
