//! Unix-domain stream sockets, listeners and datagram sockets.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Type};

use super::stream::{Stream, stream_traits};
use crate::driver::socket::OsSocket as Socket;
use crate::driver::socket::{ListenerOps, SocketOps};
use crate::error::Result;

/// A connected Unix-domain stream socket (a
/// [`HalfCloseableStream`](crate::abc::HalfCloseableStream)).
#[derive(Debug)]
pub struct UnixStream {
    pub(crate) sock: Stream<Socket>,
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
        let s = Socket::open(Domain::UNIX, Type::STREAM)?;
        s.connect_to(&addr).await?;
        Ok(UnixStream { sock: Stream::new(s) })
    }

    /// A connected pair (`socketpair`).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` from the OS.
    pub fn pair() -> Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM)?;
        Ok((UnixStream { sock: Stream::new(a) }, UnixStream { sock: Stream::new(b) }))
    }

    /// Takes over a connected std Unix stream.
    ///
    /// # Errors
    /// As [`pair`](Self::pair).
    pub fn from_std(std_stream: std::os::unix::net::UnixStream) -> Result<UnixStream> {
        Ok(UnixStream { sock: Stream::new(Socket::wrap(std_stream.into(), false)?) })
    }

    /// Runs `f` with the socket, for options this type has no method for.
    ///
    /// # Errors
    /// `Closed` after `aclose`; whatever `f` returns.
    pub fn with_socket<R>(&self, f: impl FnOnce(socket2::SockRef<'_>) -> io::Result<R>) -> Result<R> {
        self.sock.core.with_socket(f)
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
        self.sock.core.raw_fd()
    }
}

/// A Unix-domain listener (a [`Listener`](crate::abc::Listener) of
/// [`UnixStream`]s). Dropping or closing it does not remove the socket
/// file; [`open_unix_listener`](super::open_unix_listener) does so on the
/// way in (removing a stale file).
#[derive(Debug)]
pub struct UnixListener {
    core: Socket,
    accepting: Cell<bool>,
}

impl UnixListener {
    /// Binds and listens at `path` (which must not exist).
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` (`AddrInUse` if the path exists).
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener> {
        let core = Socket::bound(Domain::UNIX, Type::STREAM, &SockAddr::unix(path)?, Some(1024), |_| Ok(()))?;
        Ok(UnixListener { core, accepting: Cell::new(false) })
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
        let conn = super::stream::accept(&self.accepting, || self.core.check_open(), self.core.accept()).await?;
        Ok(UnixStream { sock: Stream::new(conn) })
    }
}

/// A Unix-domain datagram socket.
#[derive(Debug)]
pub struct UnixDatagram {
    core: Socket,
}

impl UnixDatagram {
    /// Binds a datagram socket at `path`.
    ///
    /// # Errors
    /// `Runtime` outside `trio::run`; `Io` from the OS.
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixDatagram> {
        Ok(UnixDatagram { core: Socket::bound(Domain::UNIX, Type::DGRAM, &SockAddr::unix(path)?, None, |_| Ok(()))? })
    }

    /// An unbound datagram socket.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn unbound() -> Result<UnixDatagram> {
        Ok(UnixDatagram { core: Socket::open(Domain::UNIX, Type::DGRAM)? })
    }

    /// A connected pair.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn pair() -> Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::DGRAM)?;
        Ok((UnixDatagram { core: a }, UnixDatagram { core: b }))
    }

    /// Sets the default peer (for [`send`](Self::send)). Not a checkpoint.
    ///
    /// # Errors
    /// `Closed` after `aclose`; `Io` from the OS.
    pub fn connect(&self, path: impl AsRef<Path>) -> Result<()> {
        self.core.connect_now(&SockAddr::unix(path)?)
    }

    /// Sends one datagram to `path`. A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send_to(&self, data: &[u8], path: impl AsRef<Path>) -> Result<usize> {
        let addr = SockAddr::unix(path)?;
        self.core.send_to(data, &addr).await
    }

    /// Sends one datagram to the connected peer. A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn send(&self, data: &[u8]) -> Result<usize> {
        self.core.send_datagram(data).await
    }

    /// Receives one datagram (truncated to `buf`'s length). A checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.recv_datagram(buf).await
    }

    /// Receives one datagram and the sender's path (if it is bound). A
    /// checkpoint.
    ///
    /// # Errors
    /// `Closed`; `Io` from the OS.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, Option<PathBuf>)> {
        let (n, a) = self.core.recv_from(buf).await?;
        Ok((n, a.as_pathname().map(Path::to_path_buf)))
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
