//! The server side of [`TlsMode`]: [`accept`] turns an accepted socket into
//! a [`MaybeTls`], and [`HttpsListener`] does it for axum, within its
//! [`ConnectionLimiter`]'s limits.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use crate::limit::{ConnectionLimiter, ConnectionSlot, Refused};
use crate::{peer_identity, NodeIdentity, NodeTls, TlsError, TlsMode};

/// The longest [`accept`] waits for a client's first byte and handshake: a
/// client that connects and says nothing holds a socket no longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// An accepted connection, plain or TLS.
pub enum MaybeTls {
    /// Plain TCP (mode `off`, or `permissive` and the client spoke plain).
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// The node the client's certificate names; `None` for plain
    /// connections and clients without a node certificate (HTTPS).
    pub fn peer(&self) -> Option<NodeIdentity> {
        match self {
            MaybeTls::Plain(_) => None,
            MaybeTls::Tls(tls) => peer_identity(tls.get_ref().1.peer_certificates()?),
        }
    }

    /// The TCP socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Makes an accepted socket plain or TLS, as `mode` says: `off`: plain;
/// `required`: a TLS handshake, or an error; `permissive`: TLS if the first
/// byte is a TLS handshake record, plain otherwise. Waiting for that byte
/// and the handshake take at most [`HANDSHAKE_TIMEOUT`] together.
pub async fn accept(stream: TcpStream, mode: TlsMode, config: Arc<ServerConfig>) -> io::Result<MaybeTls> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, mode, config)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

async fn handshake(stream: TcpStream, mode: TlsMode, config: Arc<ServerConfig>) -> io::Result<MaybeTls> {
    let tls = match mode {
        TlsMode::Off => false,
        TlsMode::Required => true,
        TlsMode::Permissive => {
            let mut first = [0u8; 1];
            // 0 bytes: the client closed at once; plain hands that on as EOF.
            let n = stream.peek(&mut first).await?;
            n == 1 && first[0] == TLS_HANDSHAKE_RECORD
        }
    };
    if !tls {
        return Ok(MaybeTls::Plain(stream));
    }
    let stream = tokio_rustls::TlsAcceptor::from(config).accept(stream).await?;
    Ok(MaybeTls::Tls(Box::new(stream)))
}

/// A listener for `axum::serve` that speaks [`TlsMode`] with
/// [`NodeTls::https_server_config`]. Accepts on a task of its own and runs
/// each handshake on a task of its own, so a slow or silent client never
/// holds up the others; failed handshakes are logged at debug and dropped.
/// Dropping it stops accepting.
///
/// A connection over its [`ConnectionLimiter`]'s limits is refused before
/// any handshake: a plain HTTP client (mode `off`, or `permissive` and the
/// client speaks plain) gets a `429 Too Many Requests` with `Retry-After`
/// and the error body of code `rate_limited`, then the connection closes;
/// a TLS one is closed at once (no answer can be written before a
/// handshake, and handshaking would spend what the limit saves).
pub struct HttpsListener {
    local_addr: SocketAddr,
    accepted: mpsc::Receiver<(HttpsConnection, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

/// Connections handshaken but not yet taken by the server.
const READY_BACKLOG: usize = 64;

/// Refused plain connections being answered at once; more are closed
/// without an answer.
const REFUSALS_ANSWERED: usize = 32;

/// The longest an answer to a refused connection may take, written and
/// the client's request read (so that the close sends no reset, which
/// could make the client lose the answer).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Retry-After` of a refused connection, in seconds.
const REFUSAL_RETRY_AFTER_SECS: u64 = 1;

impl HttpsListener {
    /// Serves `listener` in `mode`; `tls` is needed unless the mode is off.
    /// Must be called within a tokio runtime.
    pub fn new(listener: TcpListener, mode: TlsMode, tls: Option<&NodeTls>) -> Result<HttpsListener, TlsError> {
        HttpsListener::with_limits(listener, mode, tls, ConnectionLimiter::unlimited())
    }

    /// [`HttpsListener::new`], holding at most what `limiter` allows open.
    pub fn with_limits(
        listener: TcpListener,
        mode: TlsMode,
        tls: Option<&NodeTls>,
        limiter: ConnectionLimiter,
    ) -> Result<HttpsListener, TlsError> {
        let local_addr = listener.local_addr().map_err(|e| TlsError::Invalid(format!("listener address: {e}")))?;
        let config = match (mode, tls) {
            (TlsMode::Off, _) => None,
            (_, Some(tls)) => Some(tls.https_server_config()),
            (_, None) => return Err(TlsError::Invalid(format!("TLS mode {mode} needs certificates (--tls-dir)"))),
        };
        let (ready, accepted) = mpsc::channel(READY_BACKLOG);
        let acceptor = tokio::spawn(accept_loop(listener, mode, config, limiter, ready));
        Ok(HttpsListener { local_addr, accepted, acceptor })
    }
}

/// A connection of an [`HttpsListener`]: it holds its place among the
/// listener's limits until dropped.
pub struct HttpsConnection {
    io: MaybeTls,
    _slot: ConnectionSlot,
}

impl HttpsConnection {
    /// The connection, plain or TLS.
    pub fn get_ref(&self) -> &MaybeTls {
        &self.io
    }
}

impl AsyncRead for HttpsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HttpsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    mode: TlsMode,
    config: Option<Arc<ServerConfig>>,
    limiter: ConnectionLimiter,
    ready: mpsc::Sender<(HttpsConnection, SocketAddr)>,
) {
    let answering = Arc::new(Semaphore::new(REFUSALS_ANSWERED));
    let mut pause = Duration::from_millis(10);
    loop {
        let (stream, addr) = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    pause = Duration::from_millis(10);
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors, say: wait, never give up.
                    warn!(error = %e, pause_ms = pause.as_millis() as u64, "accepting an HTTP connection failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let slot = match limiter.try_acquire(addr.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refuse(stream, mode, why, limiter.limits(), &answering);
                continue;
            }
        };
        let ready = ready.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let io = match config {
                None => Ok(MaybeTls::Plain(stream)),
                Some(config) => accept(stream, mode, config).await,
            };
            match io {
                Ok(io) => {
                    // Fails only when the listener is gone.
                    let _ = ready.send((HttpsConnection { io, _slot: slot }, addr)).await;
                }
                Err(e) => debug!(peer = %addr, error = %e, "HTTPS handshake failed"),
            }
        });
    }
}

/// Closes a connection over the limits; a plain HTTP client first gets a
/// 429 (on a task of its own, at most [`REFUSALS_ANSWERED`] at once).
fn refuse(stream: TcpStream, mode: TlsMode, why: Refused, limits: crate::ConnectionLimits, answering: &Arc<Semaphore>) {
    if mode == TlsMode::Required {
        return; // dropped: closed
    }
    let Ok(permit) = Arc::clone(answering).try_acquire_owned() else { return };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer_refusal(stream, mode, why, limits)).await;
    });
}

/// Writes the 429 to a plain HTTP client, then reads what it sent until it
/// closes.
async fn answer_refusal(
    mut stream: TcpStream,
    mode: TlsMode,
    why: Refused,
    limits: crate::ConnectionLimits,
) -> io::Result<()> {
    if mode == TlsMode::Permissive {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 0 || first[0] == TLS_HANDSHAKE_RECORD {
            return Ok(());
        }
    }
    stream.write_all(refusal_response(why, limits).as_bytes()).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut read = 0usize;
    while read < 64 * 1024 {
        match stream.read(&mut sink).await? {
            0 => break,
            n => read += n,
        }
    }
    Ok(())
}

/// The answer to a refused plain HTTP connection: the node's error body
/// with code `rate_limited` (`skein_raft::api::ErrorCode::RateLimited`).
fn refusal_response(why: Refused, limits: crate::ConnectionLimits) -> String {
    let message = match why {
        Refused::PerAddress => format!(
            "too many connections from this address: this node serves at most {} at once from one address \
             (--max-connections-per-address); reuse connections or close idle ones",
            limits.per_address
        ),
        Refused::Total => {
            format!("too many connections: this node serves at most {} at once (--max-connections)", limits.total)
        }
    };
    let body = format!(r#"{{"error":{{"code":"rate_limited","message":"{message}"}}}}"#);
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {REFUSAL_RETRY_AFTER_SECS}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl axum::serve::Listener for HttpsListener {
    type Io = HttpsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor task is gone (it only ends with the listener,
            // or by a panic): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
