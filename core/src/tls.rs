//! TLS over any of our streams, on rustls (Trio's `SSLStream`).
//!
//! [`TlsStream`] wraps a transport [`Stream`] (TCP, Unix, a memory pair, ...)
//! and is itself a [`HalfCloseableStream`]: `send_eof` sends `close_notify`.
//! The handshake happens on the first operation that needs it, or explicitly
//! with [`TlsStream::do_handshake`].
//!
//! # Concurrency
//! As every stream here: one task may send while another receives. Both may
//! need the transport in either direction (a receive can have to send an
//! alert or a handshake message), so transport sends and transport receives
//! are each serialized by a lock, and the handshake is driven by one task
//! while the others wait for it.
//!
//! # Failure
//! A TLS error (bad certificate, wrong host name, garbage, a tampered
//! record) is reported as [`Error::Io`] with kind `InvalidData` naming what
//! went wrong; the alert is sent to the peer if the transport still works,
//! and the stream is broken from then on (later operations: `Broken`), as
//! after a transport error during the handshake. A peer that is gone (its
//! transport ended without `close_notify`, during the handshake or after
//! it, or reset) is [`Error::Broken`], as Trio's `BrokenResourceError`
//! (unless [`https_compatible`](TlsStream::https_compatible), where an end
//! without `close_notify` after the handshake is a normal end of stream).
//! Once our side of the handshake is done, a peer that is gone is not an
//! error for what the protocol sends by itself (a TLS 1.3 server's session
//! tickets, a client's `Finished`): a peer may close right after its
//! handshake, its `Finished` and `close_notify` in one transport read. The
//! handshake then succeeds, receiving goes on (`Ok(0)` after the peer's
//! `close_notify`, `Broken` if its transport ended without one), and only
//! sending fails (`Broken`), as with Trio over TCP. A cancelled `send_all`
//! (or a handshake cancelled while sending) also leaves the stream broken,
//! as in Trio. A handshake cancelled while waiting for the peer can go on later
//! (unlike Trio, where it breaks the stream), but `aclose` does not resume
//! it: it closes the transport without `close_notify` rather than wait for
//! a peer that may never answer.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};

use crate::abc::{AsyncResource, HalfCloseableStream, Listener, ReceiveStream, SendStream, Stream};
use crate::error::{Error, Result};
use crate::io::BusyGuard;
use crate::sync::Lock;

/// The largest chunk read from the transport at once.
const READ_SIZE: usize = 16 * 1024 + 512;

/// A client configuration with the secure defaults: the `ring` provider,
/// TLS 1.2 and 1.3 only, certificates and host names verified against the
/// Mozilla roots of `webpki-roots`, no client certificate. Add ALPN
/// protocols by setting `alpn_protocols` on the result.
pub fn default_client_config() -> ClientConfig {
    let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    client_config_with_roots(roots)
}

/// A client configuration as [`default_client_config`], trusting `roots`
/// instead of the Mozilla roots (for a private CA, or tests).
pub fn client_config_with_roots(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A server configuration with the same defaults (ring, TLS 1.2 and 1.3, no
/// client authentication) serving `cert_chain` with `key`.
///
/// # Errors
/// `Io(InvalidInput)` if the key does not match or is not supported.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server certificate: {e}"))))
}

/// Takes an internal lock without a yield when it is free (the public
/// operation checkpoints anyway); waits for it otherwise.
async fn lock_quickly(lock: &Lock) -> Result<crate::sync::LockGuard<'_>> {
    lock_noting_wait(lock).await.map(|(g, _)| g)
}

/// As [`lock_quickly`], also saying whether it had to wait (a checkpoint).
async fn lock_noting_wait(lock: &Lock) -> Result<(crate::sync::LockGuard<'_>, bool)> {
    match lock.try_lock() {
        Ok(g) => Ok((g, false)),
        Err(Error::WouldBlock) => Ok((lock.lock().await?, true)),
        Err(e) => Err(e),
    }
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))
}

struct Inner {
    conn: Connection,
    /// A TLS error, a failed transport or a cancellation midway broke the
    /// stream.
    broken: bool,
    closed: bool,
    /// `send_eof` sent `close_notify`: sending is over.
    eof_sent: bool,
    /// The transport reported end of stream.
    transport_eof: bool,
    /// Our side of the handshake was done when a transport send failed
    /// because the peer is gone (`Broken`): what rustls had queued (the
    /// TLS 1.3 session tickets, our last handshake flight) is dropped and
    /// sending is over (`Broken`), but receiving goes on, so that what the
    /// peer sent before it left, and its `close_notify`, are still read.
    send_failed: bool,
    /// A handshake attempt was cancelled midway (`aclose` then does not
    /// resume it).
    handshake_interrupted: bool,
    /// The last transport read; `pending[pending_pos..pending_len]` is what
    /// rustls could not take yet.
    pending: Vec<u8>,
    pending_pos: usize,
    pending_len: usize,
    /// Where the record stream is: rustls is handed one record at a time,
    /// so that what follows the peer's `close_notify` stays in `pending`
    /// (for [`TlsStream::unwrap`]). `record_left` is what rustls has not
    /// had yet of the current record's body; `header[..header_len]` the
    /// part of the next record header it has had.
    record_left: usize,
    header: [u8; 5],
    header_len: usize,
}

/// The length of a TLS record header (type, version, body length).
const RECORD_HEADER: usize = 5;

impl Inner {
    /// How many of `data` (the next received bytes) belong to the current
    /// record.
    fn until_record_end(&self, data: &[u8]) -> usize {
        if self.record_left > 0 {
            return self.record_left.min(data.len());
        }
        let need = RECORD_HEADER - self.header_len;
        if data.len() < need {
            return data.len();
        }
        let mut header = self.header;
        header[self.header_len..].copy_from_slice(&data[..need]);
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        (need + body).min(data.len())
    }

    /// Notes that rustls took `taken` (the next received bytes).
    fn advance_records(&mut self, mut taken: &[u8]) {
        // Bounded: every turn consumes bytes.
        while !taken.is_empty() {
            if self.record_left > 0 {
                let k = self.record_left.min(taken.len());
                self.record_left -= k;
                taken = &taken[k..];
                continue;
            }
            let k = (RECORD_HEADER - self.header_len).min(taken.len());
            self.header[self.header_len..self.header_len + k].copy_from_slice(&taken[..k]);
            self.header_len += k;
            taken = &taken[k..];
            if self.header_len == RECORD_HEADER {
                self.header_len = 0;
                self.record_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }
}

/// A transport error that says the peer is gone is `Broken`.
fn transport_error(e: Error) -> Error {
    match e {
        Error::Io(e) if crate::io::is_broken(&e) => Error::Broken,
        other => other,
    }
}

/// The state and operations of a [`TlsCore`], shared (through an `Rc`)
/// with the operations its `futures-io` impl keeps in flight.
struct TlsCore<S> {
    transport: S,
    inner: RefCell<Inner>,
    https_compatible: Cell<bool>,
    /// Serializes transport sends / transport receives / the handshake.
    send_lock: Lock,
    recv_lock: Lock,
    handshake_lock: Lock,
    /// Conflict detectors of the public operations.
    sending: Cell<bool>,
    receiving: Cell<bool>,
    /// Transport receives done so far (see `fill`).
    recv_count: Cell<u64>,
    /// The read buffer not in use (see `fill`).
    spare: Cell<Vec<u8>>,
    /// The buffer `flush` gathers TLS records in.
    write_buf: Cell<Vec<u8>>,
}

impl<S> std::fmt::Debug for TlsCore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("TlsStream")
            .field("handshaking", &inner.conn.is_handshaking())
            .field("version", &inner.conn.protocol_version())
            .field("broken", &inner.broken)
            .finish_non_exhaustive()
    }
}

/// Sets a flag of the stream's state when dropped armed: an exchange cut
/// short by a cancellation or an error (the stream is broken, or the
/// handshake interrupted).
struct MarkOnDrop<'a> {
    inner: &'a RefCell<Inner>,
    mark: fn(&mut Inner),
    armed: bool,
}

impl<'a> MarkOnDrop<'a> {
    fn new(inner: &'a RefCell<Inner>, mark: fn(&mut Inner)) -> MarkOnDrop<'a> {
        MarkOnDrop { inner, mark, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for MarkOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            (self.mark)(&mut self.inner.borrow_mut());
        }
    }
}

fn mark_broken(inner: &mut Inner) {
    inner.broken = true;
}

fn mark_handshake_interrupted(inner: &mut Inner) {
    inner.handshake_interrupted = true;
}

impl<S: Stream> TlsCore<S> {
    fn client(transport: S, server_name: &str, config: Arc<ClientConfig>) -> Result<TlsCore<S>> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            Error::Io(io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {server_name:?}: {e}")))
        })?;
        let conn = ClientConnection::new(config, name).map_err(tls_error)?;
        Ok(TlsCore::new(transport, Connection::Client(conn)))
    }

    fn server(transport: S, config: Arc<ServerConfig>) -> Result<TlsCore<S>> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        Ok(TlsCore::new(transport, Connection::Server(conn)))
    }

    fn new(transport: S, conn: Connection) -> TlsCore<S> {
        TlsCore {
            transport,
            inner: RefCell::new(Inner {
                conn,
                broken: false,
                closed: false,
                eof_sent: false,
                transport_eof: false,
                send_failed: false,
                handshake_interrupted: false,
                pending: Vec::new(),
                pending_pos: 0,
                pending_len: 0,
                record_left: 0,
                header: [0; RECORD_HEADER],
                header_len: 0,
            }),
            https_compatible: Cell::new(false),
            send_lock: Lock::new(),
            recv_lock: Lock::new(),
            handshake_lock: Lock::new(),
            sending: Cell::new(false),
            receiving: Cell::new(false),
            recv_count: Cell::new(0),
            spare: Cell::new(Vec::new()),
            write_buf: Cell::new(Vec::new()),
        }
    }

    fn set_https_compatible(&self, on: bool) {
        self.https_compatible.set(on);
    }

    fn transport(&self) -> &S {
        &self.transport
    }

    fn check_usable(&self) -> Result<()> {
        let inner = self.inner.borrow();
        if inner.closed {
            Err(Error::Closed)
        } else if inner.broken {
            Err(Error::Broken)
        } else {
            Ok(())
        }
    }

    /// Sends whatever TLS data rustls has queued.
    async fn flush(&self) -> Result<()> {
        // Nothing queued: do not wait for the lock (a blocked sender holds
        // it, and a receiver must not wait behind it for nothing).
        if !self.inner.borrow().conn.wants_write() {
            return Ok(());
        }
        let _g = lock_quickly(&self.send_lock).await?;
        // One buffer, kept between calls (no allocation per flush).
        let mut buf = self.write_buf.take();
        let mut result = Ok(());
        // Bounded: each turn drains what rustls had queued.
        for _ in 0..1_000_000 {
            buf.clear();
            self.take_tls(&mut buf)?;
            if buf.is_empty() {
                break;
            }
            if self.inner.borrow().send_failed {
                // The peer is gone: nothing more can reach it.
                result = Err(Error::Broken);
                break;
            }
            // A cancellation midway breaks the stream.
            let guard = MarkOnDrop::new(&self.inner, mark_broken);
            let sent = self.transport.send_all(&buf).await;
            guard.disarm();
            if let Err(e) = sent {
                let e = transport_error(e);
                let mut inner = self.inner.borrow_mut();
                // A peer that is gone after our side of the handshake is
                // done may have closed cleanly first (its close_notify can
                // be right behind its Finished): receiving goes on. Any
                // other failure breaks the stream.
                if matches!(e, Error::Broken) && !inner.conn.is_handshaking() {
                    inner.send_failed = true;
                } else {
                    inner.broken = true;
                }
                result = Err(e);
                break;
            }
        }
        buf.clear();
        self.write_buf.set(buf);
        result
    }

    /// [`flush`](Self::flush) for what the protocol sends by itself (our
    /// handshake flights, the session tickets after it, replies to the
    /// peer's messages): once our side of the handshake is done, a peer
    /// that is gone is not an error here (its `close_notify`, or the lack
    /// of it, decides how receiving ends; sending fails with `Broken`).
    async fn flush_protocol(&self) -> Result<()> {
        match self.flush().await {
            Err(Error::Broken) if self.inner.borrow().send_failed => Ok(()),
            other => other,
        }
    }

    /// Reads one chunk from the transport into rustls and processes it.
    /// A TLS error is sent to the peer (best effort) and reported.
    ///
    /// Returns whether it passed a checkpoint (waited for the lock or
    /// received from the transport), so the caller need not yield again.
    async fn fill(&self) -> Result<bool> {
        let mut yielded;
        {
            // If another task received while we waited for the lock, what
            // it got may be all we need: go back and look first (Trio's
            // `_inner_recv_count`).
            let seen = self.recv_count.get();
            let (_g, waited) = lock_noting_wait(&self.recv_lock).await?;
            yielded = waited;
            if self.recv_count.get() != seen {
                return Ok(yielded);
            }
            let drained = {
                let inner = self.inner.borrow();
                inner.pending_pos == inner.pending_len
            };
            if drained {
                // Two buffers take turns (no allocation or zeroing per read).
                let mut buf = self.spare.take();
                if buf.len() < READ_SIZE {
                    buf.resize(READ_SIZE, 0);
                }
                // A cancelled transport receive loses nothing: not broken.
                yielded = true;
                let n = match self.transport.receive_some(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.spare.set(buf);
                        return Err(transport_error(e));
                    }
                };
                let mut inner = self.inner.borrow_mut();
                if n == 0 {
                    inner.transport_eof = true;
                }
                let old = std::mem::replace(&mut inner.pending, buf);
                inner.pending_pos = 0;
                inner.pending_len = n;
                drop(inner);
                self.spare.set(old);
            }
            self.recv_count.set(seen.wrapping_add(1));
            if let Err(e) = self.feed() {
                // Tell the peer why, if the transport still works.
                let _ = self.flush_unchecked().await;
                return Err(e);
            }
        }
        self.flush_protocol().await?;
        Ok(yielded)
    }

    /// Hands rustls the received bytes it can take now, one record at a
    /// time, processing each (rustls takes no more while decrypted data
    /// waits to be read, nor after the peer's `close_notify`; the rest
    /// stays in `pending`).
    fn feed(&self) -> Result<()> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let (pos, len) = (inner.pending_pos, inner.pending_len);
        let pending = std::mem::take(&mut inner.pending);
        let result = Self::feed_from(inner, &pending[pos..len], pos == len && inner.transport_eof);
        inner.pending = pending;
        result
    }

    fn feed_from(inner: &mut Inner, mut data: &[u8], eof: bool) -> Result<()> {
        let len = inner.pending_len;
        // Bounded: every turn consumes bytes, or stops.
        for _ in 0..(data.len() + 2) {
            // While handshaking, rustls takes a whole flight even when it
            // has an answer queued (as when it was fed all at once).
            let wanted = inner.conn.wants_read() || inner.conn.is_handshaking();
            if !(eof || (!data.is_empty() && wanted)) {
                break;
            }
            // `read_tls` of an empty reader records the transport's EOF.
            let mut piece = &data[..inner.until_record_end(data)];
            let n = inner.conn.read_tls(&mut piece)?;
            inner.advance_records(&data[..n]);
            data = &data[n..];
            if let Err(e) = inner.conn.process_new_packets() {
                inner.broken = true;
                inner.pending_pos = len - data.len();
                return Err(tls_error(e));
            }
            if eof || n == 0 {
                break;
            }
        }
        inner.pending_pos = len - data.len();
        Ok(())
    }

    async fn do_handshake(&self) -> Result<()> {
        self.check_usable()?;
        if !self.handshaking() {
            return crate::lowlevel::checkpoint().await;
        }
        self.ensure_handshake().await
    }

    fn handshaking(&self) -> bool {
        self.inner.borrow().conn.is_handshaking()
    }

    /// The handshake if it is not done yet (no checkpoint when it is).
    async fn ensure_handshake(&self) -> Result<()> {
        if !self.handshaking() {
            return Ok(());
        }
        let _g = lock_quickly(&self.handshake_lock).await?;
        // A cancellation while sending breaks the stream (in `flush`); one
        // while receiving loses nothing, and the handshake can go on later
        // (but `aclose` will not wait for it). Any other failure, a
        // transport's receive error included, breaks the stream, as in
        // Trio's `_do_handshake`.
        let interrupted = MarkOnDrop::new(&self.inner, mark_handshake_interrupted);
        match self.handshake_locked().await {
            Ok(()) => {
                interrupted.disarm();
                Ok(())
            }
            Err(e) => {
                if !e.is_cancelled() {
                    self.inner.borrow_mut().broken = true;
                }
                Err(e)
            }
        }
    }

    async fn handshake_locked(&self) -> Result<()> {
        // Bounded: every turn moves the handshake along or fails.
        for _ in 0..10_000 {
            self.check_usable()?;
            let handshaking = self.handshaking();
            self.flush_protocol().await?;
            if !handshaking {
                return Ok(());
            }
            if self.inner.borrow().conn.wants_read() || self.inner.borrow().transport_eof {
                self.fill_checking_eof().await?;
            }
        }
        Err(Error::Io(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake did not finish")))
    }

    /// `fill`, turning a transport EOF during the handshake into `Broken`
    /// (the peer is gone; as Trio's `BrokenResourceError`).
    async fn fill_checking_eof(&self) -> Result<()> {
        self.fill().await?;
        let mut inner = self.inner.borrow_mut();
        // An EOF mid-handshake would leave rustls waiting forever.
        if inner.conn.is_handshaking() && inner.transport_eof {
            inner.broken = true;
            return Err(Error::Broken);
        }
        Ok(())
    }

    fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.inner.borrow().conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.inner.borrow().conn.peer_certificates().map(<[CertificateDer<'static>]>::to_vec)
    }

    fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.inner.borrow().conn.protocol_version()
    }

    fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.inner.borrow().conn.negotiated_cipher_suite().map(|s| s.suite())
    }

    fn server_name(&self) -> Option<String> {
        match &self.inner.borrow().conn {
            Connection::Server(s) => s.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        }
    }

    async fn unwrap(self) -> Result<(S, Vec<u8>)> {
        self.check_usable()?;
        self.ensure_handshake().await?;
        self.inner.borrow_mut().conn.send_close_notify();
        self.flush().await?;
        let mut probe = [0u8; 1];
        for _ in 0..100_000 {
            match self.read_plaintext(&mut probe) {
                Ok(0) => {
                    // What followed the peer's close_notify (fed to rustls
                    // one record at a time, it never took those bytes).
                    let inner = self.inner.into_inner();
                    let trailing = inner.pending[inner.pending_pos..inner.pending_len].to_vec();
                    return Ok((self.transport, trailing));
                }
                Ok(_) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS unwrap: the peer sent data instead of close_notify",
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.fill().await?;
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
        Err(Error::Io(io::Error::new(io::ErrorKind::InvalidData, "TLS unwrap: no close_notify")))
    }

    /// A plaintext read error: a transport EOF without `close_notify` (a
    /// truncation, or a peer that vanished) breaks the stream and is
    /// `Broken`.
    fn read_error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.inner.borrow_mut().broken = true;
            Error::Broken
        } else {
            Error::Io(e)
        }
    }

    fn read_plaintext(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.borrow_mut().conn.reader().read(buf)
    }
}

impl<S: Stream> AsyncResource for TlsCore<S> {
    async fn aclose(&self) -> Result<()> {
        let (closed, broken) = {
            let inner = self.inner.borrow();
            // An interrupted handshake counts as broken here: finishing it
            // could wait forever for a silent peer.
            (inner.closed, inner.broken || (inner.handshake_interrupted && inner.conn.is_handshaking()))
        };
        if closed {
            return crate::lowlevel::checkpoint().await;
        }
        let notified = if broken || self.https_compatible.get() { Ok(()) } else { self.close_notify().await };
        self.inner.borrow_mut().closed = true;
        let closed = self.transport.aclose().await;
        match notified {
            // As Trio: a peer that is gone (or a busy sender) does not make
            // the close fail, but a handshake that `aclose` ran and that
            // failed (a bad certificate, ...) is reported, after closing.
            Err(Error::Broken) | Err(Error::Busy) | Err(Error::Closed) => closed,
            Err(Error::Io(e)) if crate::io::is_broken(&e) => closed,
            Err(e) => Err(e),
            Ok(()) => closed,
        }
    }
}

impl<S: Stream> TlsCore<S> {
    /// Appends the TLS records rustls has queued to `buf`.
    fn take_tls(&self, buf: &mut Vec<u8>) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        while inner.conn.wants_write() {
            inner.conn.write_tls(buf)?;
        }
        Ok(())
    }

    /// Sends the alert rustls queued after an error, without the send lock
    /// (best effort; the caller reports the error either way).
    async fn flush_unchecked(&self) -> Result<()> {
        let mut buf = Vec::new();
        self.take_tls(&mut buf)?;
        if buf.is_empty() { Ok(()) } else { self.transport.send_all(&buf).await.map_err(transport_error) }
    }

    /// The handshake if needed, then `close_notify`, sent.
    async fn close_notify(&self) -> Result<()> {
        self.ensure_handshake().await?;
        {
            let mut inner = self.inner.borrow_mut();
            if !inner.eof_sent {
                inner.eof_sent = true;
                inner.conn.send_close_notify();
            }
        }
        self.flush().await
    }
}

impl<S: Stream> SendStream for TlsCore<S> {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.check_usable()?;
        if self.inner.borrow().eof_sent {
            return Err(Error::Closed);
        }
        self.ensure_handshake().await?;
        if data.is_empty() {
            return crate::lowlevel::checkpoint().await;
        }
        let guard = MarkOnDrop::new(&self.inner, mark_broken);
        let mut rest = data;
        // Bounded: each turn hands rustls some bytes or fails.
        for _ in 0..(data.len() + 16) {
            if rest.is_empty() {
                break;
            }
            let n = self.inner.borrow_mut().conn.writer().write(rest)?;
            rest = &rest[n..];
            self.flush().await?;
        }
        if !rest.is_empty() {
            return Err(Error::Io(io::Error::other("TLS: rustls stopped accepting data")));
        }
        guard.disarm();
        Ok(())
    }

    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.check_usable()?;
        // As Trio: no handshake here (a hint must not start one, which could
        // wait for the peer); the transport's own wait, once no receive is
        // sending on it.
        let _g = lock_quickly(&self.send_lock).await?;
        self.transport.wait_send_all_might_not_block().await.map_err(transport_error)
    }

    async fn send_eof_if_supported(&self) -> Option<Result<()>> {
        Some(HalfCloseableStream::send_eof(self).await)
    }
}

impl<S: Stream> ReceiveStream for TlsCore<S> {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        let _busy = BusyGuard::claim(&self.receiving)?;
        if buf.is_empty() {
            return Err(crate::abc::empty_buffer_error());
        }
        self.check_usable()?;
        if let Err(e) = self.ensure_handshake().await {
            // As Trio: in HTTPS-compatible mode, a peer that closes before
            // or during the handshake is just an end of stream.
            if self.https_compatible.get() && !e.is_cancelled() && self.inner.borrow().transport_eof {
                crate::lowlevel::checkpoint().await?;
                return Ok(0);
            }
            return Err(e);
        }
        // As Trio's `_retry`: a cancellation check first (a cancelled call
        // takes nothing), then a yield at the end unless a transport
        // receive (or a wait) already did, so that a receive served from
        // rustls's buffer is a full checkpoint too.
        crate::lowlevel::checkpoint_if_cancelled().await?;
        // Bounded: every turn reads plaintext or feeds rustls a chunk.
        let mut yielded = false;
        for _ in 0..1_000_000 {
            self.check_usable()?;
            let n = match self.read_plaintext(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    yielded |= self.fill().await?;
                    continue;
                }
                // In https_compatible mode an end without close_notify is
                // an end.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.https_compatible.get() => 0,
                // A truncation: the peer closed without close_notify.
                Err(e) => return Err(self.read_error(e)),
            };
            if !yielded {
                if n > 0 {
                    // The data is taken: a cancellation must not lose it.
                    crate::lowlevel::cancel_shielded_checkpoint().await?;
                } else {
                    crate::lowlevel::checkpoint().await?;
                }
            }
            return Ok(n);
        }
        Err(Error::Io(io::Error::new(io::ErrorKind::InvalidData, "TLS: no progress")))
    }
}

impl<S: Stream> HalfCloseableStream for TlsCore<S> {
    /// Sends `close_notify`: the peer's `receive_some` then returns `Ok(0)`;
    /// we can still receive. Idempotent.
    async fn send_eof(&self) -> Result<()> {
        let _busy = BusyGuard::claim(&self.sending)?;
        self.check_usable()?;
        self.ensure_handshake().await?;
        {
            let mut inner = self.inner.borrow_mut();
            if !inner.eof_sent {
                inner.eof_sent = true;
                inner.conn.send_close_notify();
            }
        }
        self.flush().await?;
        crate::lowlevel::checkpoint().await
    }
}

/// A TLS stream over the transport `S`. See the [module docs](self).
///
/// Besides the trio stream traits it implements `futures-io`'s `AsyncRead`
/// and `AsyncWrite` (with the `futures-io` feature, for a `'static`
/// transport), so hyper, tungstenite and other protocol crates run over it
/// directly: each poll drives the stream's own operation, so a task
/// parked in `poll_read`/`poll_write`/`poll_close` is woken when its cancel
/// scope is cancelled and the poll fails with an `io::Error` that wraps
/// [`Error::Cancelled`] (see [`Error::from`](Error#impl-From<Error>-for-Error)
/// and [`Error::is_cancellation`]). `poll_close` closes the whole stream
/// ([`aclose`](AsyncResource::aclose)); a write abandoned while `Pending`
/// leaves the stream broken, as a cancelled `send_all` does.
pub struct TlsStream<S> {
    core: Rc<TlsCore<S>>,
    /// The `futures-io` operations in flight.
    #[cfg(feature = "futures-io")]
    ops: crate::compat::Ops,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl<S: Stream> TlsStream<S> {
    fn wrap(core: TlsCore<S>) -> TlsStream<S> {
        TlsStream {
            core: Rc::new(core),
            #[cfg(feature = "futures-io")]
            ops: crate::compat::Ops::default(),
        }
    }

    /// The client side, connecting to `server_name` (checked against the
    /// server's certificate, and sent as SNI).
    ///
    /// # Errors
    /// `Io(InvalidInput)` if `server_name` is not a valid DNS name or IP
    /// address; `Io(InvalidData)` if rustls rejects the configuration.
    pub fn client(transport: S, server_name: &str, config: Arc<ClientConfig>) -> Result<TlsStream<S>> {
        TlsCore::client(transport, server_name, config).map(TlsStream::wrap)
    }

    /// The server side.
    ///
    /// # Errors
    /// `Io(InvalidData)` if rustls rejects the configuration.
    pub fn server(transport: S, config: Arc<ServerConfig>) -> Result<TlsStream<S>> {
        TlsCore::server(transport, config).map(TlsStream::wrap)
    }

    /// Treats a transport EOF without `close_notify` as a normal end of
    /// stream (Trio's `https_compatible`; many HTTPS servers close that
    /// way). Off by default: a truncated stream is an error.
    pub fn https_compatible(self, on: bool) -> TlsStream<S> {
        self.core.set_https_compatible(on);
        self
    }

    /// The transport.
    pub fn transport(&self) -> &S {
        self.core.transport()
    }

    /// Runs the handshake to its end, if it is not done yet. Idempotent;
    /// concurrent callers wait for the one that drives it.
    ///
    /// # Checkpoint
    /// Always.
    /// # Errors
    /// `Io(InvalidData)` with rustls's reason (certificate invalid for the
    /// name, expired, unknown issuer, garbage, ...); `Broken` if the peer
    /// vanished (its transport ended or was reset); the transport's other
    /// errors as themselves (the stream is broken after each of these);
    /// `Cancelled` (the stream is broken if the cancellation came while
    /// sending; while waiting for the peer, the handshake can go on later).
    pub async fn do_handshake(&self) -> Result<()> {
        self.core.do_handshake().await
    }

    /// The ALPN protocol the handshake chose, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.core.alpn_protocol()
    }

    /// The peer's certificate chain (leaf first), once the handshake got it.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.core.peer_certificates()
    }

    /// The negotiated protocol version, after the handshake.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.core.protocol_version()
    }

    /// The negotiated cipher suite, after the handshake.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.core.cipher_suite()
    }

    /// On the server side, the name the client asked for (SNI).
    pub fn server_name(&self) -> Option<String> {
        self.core.server_name()
    }

    /// Ends TLS cleanly and gives the transport back (Trio's
    /// `SSLStream.unwrap`): sends `close_notify`, waits for the peer's, and
    /// returns the transport with the bytes the peer sent after its
    /// `close_notify` that were already received from the transport (often
    /// empty). These come before anything the transport gives from then
    /// on: a protocol that goes on in plain text reads them first.
    ///
    /// # Checkpoint
    /// Always (it waits for the peer).
    /// # Errors
    /// As [`receive_some`](ReceiveStream::receive_some) (`Broken` if the
    /// peer's transport ends without `close_notify`); `Io(InvalidData)` if
    /// application data arrives before the peer's `close_notify`.
    /// A `futures-io` operation still in flight is dropped first (as if
    /// its future had been dropped).
    pub async fn unwrap(self) -> Result<(S, Vec<u8>)> {
        let TlsStream { core, .. } = self;
        match Rc::try_unwrap(core) {
            Ok(core) => core.unwrap().await,
            // Unreachable: only the dropped operations held clones.
            Err(_) => Err(Error::Busy),
        }
    }
}

impl<S: Stream> AsyncResource for TlsStream<S> {
    /// Closes as Trio does: if the stream is healthy (and not
    /// `https_compatible`, and not left mid-handshake by a cancelled
    /// handshake), finishes the handshake if needed and sends
    /// `close_notify` (without waiting for the peer's), so the peer sees a
    /// clean end; then closes the transport, whatever happened (also when
    /// cancelled: `aclose` in a cancelled scope closes at once). A
    /// handshake that fails here is reported (after the close), as in Trio;
    /// a peer that is already gone is not an error.
    /// Idempotent.
    async fn aclose(&self) -> Result<()> {
        self.core.aclose().await
    }
}

impl<S: Stream> SendStream for TlsStream<S> {
    async fn send_all(&self, data: &[u8]) -> Result<()> {
        self.core.send_all(data).await
    }
    /// Waits until the transport's `send_all` might not block (Trio's
    /// semantics: it does not start or wait for the handshake).
    async fn wait_send_all_might_not_block(&self) -> Result<()> {
        self.core.wait_send_all_might_not_block().await
    }
    async fn send_eof_if_supported(&self) -> Option<Result<()>> {
        Some(self.core.send_eof().await)
    }
}

impl<S: Stream> ReceiveStream for TlsStream<S> {
    async fn receive_some(&self, buf: &mut [u8]) -> Result<usize> {
        self.core.receive_some(buf).await
    }
}

impl<S: Stream> HalfCloseableStream for TlsStream<S> {
    async fn send_eof(&self) -> Result<()> {
        self.core.send_eof().await
    }
}

impl<S: Stream> crate::net::ServeHandshake for TlsStream<S> {
    /// [`do_handshake`](TlsStream::do_handshake): a server with a
    /// [`handshake_timeout`](crate::net::ServeOptions::handshake_timeout)
    /// hands its handler only streams whose TLS handshake is done.
    async fn serve_handshake(&self) -> Result<()> {
        self.do_handshake().await
    }
}

#[cfg(feature = "futures-io")]
impl<S: Stream + 'static> futures_io::AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = &mut *self;
        this.ops.poll_read(&this.core, cx, buf)
    }
}

#[cfg(feature = "futures-io")]
impl<S: Stream + 'static> futures_io::AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = &mut *self;
        this.ops.poll_write(&this.core, cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.ops.poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = &mut *self;
        this.ops.poll_close(&this.core, cx)
    }
}

/// A [`Listener`] that wraps every accepted stream in a server-side
/// [`TlsStream`]. The handshake happens on the stream's first operation (so
/// a slow client cannot stall `accept`), or, served by
/// [`serve_listeners_with`](crate::net::serve_listeners_with) with a
/// [`handshake_timeout`](crate::net::ServeOptions::handshake_timeout), in
/// the connection's task before the handler, within the timeout.
#[derive(Debug)]
pub struct TlsListener<L> {
    /// The transport listener.
    pub transport_listener: L,
    config: Arc<ServerConfig>,
    https_compatible: bool,
}

impl<L> TlsListener<L> {
    /// Wraps `listener`.
    pub fn new(listener: L, config: Arc<ServerConfig>) -> TlsListener<L> {
        TlsListener { transport_listener: listener, config, https_compatible: false }
    }

    /// Makes every accepted stream
    /// [`https_compatible`](TlsStream::https_compatible) (Trio's
    /// `SSLListener(https_compatible=...)`). Off by default.
    pub fn https_compatible(mut self, on: bool) -> TlsListener<L> {
        self.https_compatible = on;
        self
    }
}

impl<L: Listener> AsyncResource for TlsListener<L> {
    async fn aclose(&self) -> Result<()> {
        self.transport_listener.aclose().await
    }
}

impl<L> Listener for TlsListener<L>
where
    L: Listener,
    L::Stream: Stream,
{
    type Stream = TlsStream<L::Stream>;

    async fn accept(&self) -> Result<TlsStream<L::Stream>> {
        let s = self.transport_listener.accept().await?;
        TlsStream::server(s, self.config.clone()).map(|t| t.https_compatible(self.https_compatible))
    }
}

/// Connects over TCP ([`open_tcp_stream`](crate::net::open_tcp_stream),
/// with happy eyeballs) and wraps the connection in a client [`TlsStream`]
/// for `host`. The handshake runs before this returns.
///
/// # Errors
/// As `open_tcp_stream` and [`TlsStream::do_handshake`]; the TCP connection
/// is closed on a handshake failure.
pub async fn open_tls_over_tcp_stream(
    host: &str,
    port: u16,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<crate::net::TcpStream>> {
    let tcp = crate::net::open_tcp_stream(host, port).await?;
    let tls = TlsStream::client(tcp, host, config)?;
    match tls.do_handshake().await {
        Ok(()) => Ok(tls),
        Err(e) => {
            let _ = tls.aclose().await;
            Err(e)
        }
    }
}

/// [`open_tcp_listeners`](crate::net::open_tcp_listeners), each wrapped in
/// a [`TlsListener`].
///
/// # Errors
/// As `open_tcp_listeners`.
pub async fn open_tls_over_tcp_listeners(
    port: u16,
    config: Arc<ServerConfig>,
    host: Option<&str>,
) -> Result<Vec<TlsListener<crate::net::TcpListener>>> {
    let ls = crate::net::open_tcp_listeners(port, host).await?;
    Ok(ls.into_iter().map(|l| TlsListener::new(l, config.clone())).collect())
}

/// [`serve_tcp`](crate::net::serve_tcp) over TLS: serves `handler` on every
/// TLS connection to `port`; reports the bound addresses through
/// `task_status`. The handshake happens in the connection's task (a failed
/// handshake fails that task's first operation, in the handler). As with
/// [`serve_listeners`](crate::net::serve_listeners), an error that leaves
/// the handler stops the whole server: a handler facing the internet
/// catches (and logs) errors such as a client's failed handshake instead of
/// returning them.
///
/// There is no handshake timeout: a client that connects and sends nothing
/// holds its connection (and a descriptor) until the handler gives up on
/// it, and enough of them lock every other client out. A server facing the
/// internet uses [`serve_tls_with`] and a
/// [`handshake_timeout`](crate::net::ServeOptions::handshake_timeout)
/// instead (or bounds the handler's operations).
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// As [`serve_listeners`](crate::net::serve_listeners): the listeners are
/// closed, the connection tasks cancelled; returns `Err(Cancelled)`.
/// # Errors
/// As [`serve_listeners`](crate::net::serve_listeners).
pub async fn serve_tls<H>(
    handler: H,
    port: u16,
    config: Arc<ServerConfig>,
    host: Option<&str>,
    task_status: Option<crate::TaskStatus<Vec<std::net::SocketAddr>>>,
) -> Result<std::convert::Infallible>
where
    H: AsyncFn(TlsStream<crate::net::TcpStream>) -> Result<()>,
{
    serve_tls_with(handler, port, config, host, crate::net::ServeOptions::new(), task_status).await
}

/// [`serve_tls`] with [`ServeOptions`](crate::net::ServeOptions), above all
/// a [`handshake_timeout`](crate::net::ServeOptions::handshake_timeout):
/// then each connection's task runs the TLS handshake first, under
/// [`fail_after`](crate::fail_after) of the timeout, and calls `handler`
/// only with a stream whose handshake is done. A connection whose handshake
/// fails (an untrusted certificate, plain text, a scanner) or times out (a
/// client that connects and sends nothing, or too slowly) is reported to
/// [`on_handshake_error`](crate::net::ServeOptions::on_handshake_error)
/// (with [`Error::TooSlow`] for the timeout), closed and dropped; the
/// server goes on, and the handler never sees it. So idle clients cannot
/// hold the server's descriptors longer than the timeout (10 s is a
/// reasonable choice; a client on a slow link needs a few round trips).
/// Without a timeout (`ServeOptions::new()`) it is exactly [`serve_tls`].
///
/// ```
/// # use std::io::Write;
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use trio::abc::SendStream;
/// # use trio::net::{ServeOptions, TcpStream};
/// # use trio::tls::{TlsStream, serve_tls_with};
/// # fn run(config: Arc<rustls::ServerConfig>) -> trio::Result<()> {
/// trio::run(async {
///     trio::open_nursery(async |n| {
///         let hello = async |stream: TlsStream<TcpStream>| stream.send_all(b"hello\n").await;
///         let options = ServeOptions::new()
///             .handshake_timeout(Duration::from_secs(10))
///             .on_handshake_error(|s: &TlsStream<TcpStream>, e| {
///                 let _ = writeln!(std::io::stderr(), "{:?}: handshake failed: {e}", s.transport().peer_addr());
///             });
///         let addrs = n
///             .start(async move |status| {
///                 match serve_tls_with(hello, 0, config, Some("127.0.0.1"), options, Some(status)).await? {}
///             })
///             .await?;
///         # let _ = addrs;
///         n.cancel_scope().cancel();
///         Ok(())
///     })
///     .await?;
///     Ok(())
/// })
/// # }
/// ```
///
/// # Checkpoint
/// Always.
/// # Cancellation
/// As [`serve_tls`]; a connection cancelled during its handshake is
/// dropped without a report.
/// # Errors
/// As [`serve_listeners`](crate::net::serve_listeners) (those of
/// [`open_tcp_listeners`](crate::net::open_tcp_listeners) before
/// `started`, a handler's error); a failed or timed-out handshake is never
/// an error of this call.
pub async fn serve_tls_with<H>(
    handler: H,
    port: u16,
    config: Arc<ServerConfig>,
    host: Option<&str>,
    options: crate::net::ServeOptions<'_, TlsStream<crate::net::TcpStream>>,
    task_status: Option<crate::TaskStatus<Vec<std::net::SocketAddr>>>,
) -> Result<std::convert::Infallible>
where
    H: AsyncFn(TlsStream<crate::net::TcpStream>) -> Result<()>,
{
    let listeners = open_tls_over_tcp_listeners(port, config, host).await?;
    let mut addrs = Vec::new();
    for l in &listeners {
        addrs.push(l.transport_listener.local_addr()?);
    }
    if let Some(status) = task_status {
        status.started(addrs);
    }
    crate::net::serve_listeners_with(handler, listeners, None, options, None).await
}
