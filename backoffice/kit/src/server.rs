//! A service program's runtime and logs, and the listener every service runs its router on:
//! TLS (mutual, see [`crate::tls`]) or plain HTTP on loopback, with bounded bodies,
//! headers, handshakes, idle connections and connection counts; the connection's
//! [`Peer`] handed to the routes; the JSON 404 every service falls back to.
//!
//! Why our own accept loop rather than `axum::serve`: axum's has no TLS, and the route
//! checks need the client certificate of the connection a request came on.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::access::Peer;
use crate::error::{ApiError, ErrorCode};
use crate::tls::Role;

/// What a listener bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body (bytes); larger ones get `413`.
    pub body_bytes: usize,
    /// Largest request head (bytes); larger ones end the connection.
    pub header_bytes: usize,
    /// Time to complete the TLS handshake and to send a request's head.
    pub handshake: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle: Duration,
    /// Connections served at once; more are closed at accept.
    pub connections: usize,
    /// Connections served at once from one address (so one client cannot take them all).
    pub per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            header_bytes: 16 * 1024,
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            connections: 512,
            per_address: 256,
        }
    }
}

/// A bound socket, with TLS or without.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    /// The bounds its connections get.
    pub limits: Limits,
}

impl Listener {
    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A running service.
pub struct Service {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// `https://addr` (or `http://addr` for a plain loopback listener).
    pub url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Service {
    /// Serves `router` on `listener` until [`Service::stop`].
    pub fn spawn(name: &'static str, listener: Listener, router: Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (tx, rx) = oneshot::channel::<()>();
        let router = router.layer(DefaultBodyLimit::max(listener.limits.body_bytes));
        let task = tokio::spawn(accept_loop(name, listener, router, rx));
        tracing::info!("{name} listening on {scheme}://{addr}");
        Ok(Self {
            addr,
            url: format!("{scheme}://{addr}"),
            shutdown: Some(tx),
            task,
        })
    }

    /// Stops accepting, closes idle connections and waits for requests in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server ends (it runs until stopped).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn accept_loop(
    name: &'static str,
    listener: Listener,
    router: Router,
    mut stop: oneshot::Receiver<()>,
) {
    let limits = listener.limits.clone();
    let acceptor = listener.tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.connections));
    let per_address = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake)
        .max_buf_size(limits.header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("{name}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(
                "{name}: {} connections open; closing one from {addr}",
                limits.connections
            );
            continue;
        };
        let Some(mine) = PerAddress::take(&per_address, addr.ip(), limits.per_address) else {
            tracing::warn!(
                "{name}: {} connections open from {}; closing one",
                limits.per_address,
                addr.ip()
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            name,
            router: router.clone(),
            builder: Arc::clone(&builder),
            limits: limits.clone(),
            watcher: graceful.watcher(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            conn.serve(stream, addr, acceptor).await;
            drop(mine);
            drop(slot);
        });
    }
    // Requests in flight finish (bounded), idle connections close.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// One address's share of the connections; the count goes down when it is dropped.
struct PerAddress {
    counts: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<PerAddress> {
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    name: &'static str,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Limits,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Conn {
    async fn serve(self, stream: TcpStream, addr: SocketAddr, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self
                .http(
                    stream,
                    Peer {
                        addr,
                        role: None,
                        merchant: None,
                    },
                )
                .await;
        };
        let handshake = tokio::time::timeout(self.limits.handshake, acceptor.accept(stream));
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // A certificate the CA did not sign, a client without one where one is
                // required, or not TLS at all.
                tracing::warn!("{}: TLS handshake with {addr} refused: {e}", self.name);
                return;
            }
            Err(_) => {
                tracing::warn!("{}: TLS handshake with {addr} timed out", self.name);
                return;
            }
        };
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let role = leaf.and_then(Role::of_certificate);
        let merchant = leaf
            .filter(|_| role == Some(Role::Merchant))
            .and_then(crate::tls::merchant_of_certificate);
        self.http(
            stream,
            Peer {
                addr,
                role,
                merchant,
            },
        )
        .await;
    }

    async fn http<S>(self, stream: S, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let last = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let io = TokioIo::new(Activity {
            inner: stream,
            start,
            last: Arc::clone(&last),
        });
        let svc = self
            .router
            .map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
        let conn = self
            .builder
            .serve_connection(io, TowerToHyperService::new(svc))
            .into_owned();
        let mut conn = std::pin::pin!(self.watcher.watch(conn));
        let idle_ms = u64::try_from(self.limits.idle.as_millis()).unwrap_or(u64::MAX);
        let mut tick = tokio::time::interval(self.limits.idle / 4);
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                _ = tick.tick() => {
                    let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if now.saturating_sub(last.load(Ordering::Relaxed)) > idle_ms {
                        // Idle for too long: an open connection must not hold a slot.
                        break;
                    }
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved, for the idle bound.
struct Activity<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Activity<S> {
    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0` for any free port) for a service.
///
/// With `tls` (the service's [`crate::tls::server_config`]) any address may be bound.
/// Without it only loopback: plain HTTP carries no client certificates, so it is kept for
/// the demo's browser page and for tests on one machine.
pub async fn bind(addr: &str, tls: Option<Arc<ServerConfig>>) -> anyhow::Result<Listener> {
    crate::tls::install_provider();
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = tcp.local_addr()?;
    anyhow::ensure!(
        tls.is_some() || local.ip().is_loopback(),
        "refusing to listen on {local} without TLS: plain HTTP is served on loopback only \
         (127.0.0.1 or [::1]); give the service its certificate (`backoffice init`) to \
         listen elsewhere"
    );
    Ok(Listener {
        tcp,
        tls,
        limits: Limits::default(),
    })
}

/// What a service program starts with: logs to stderr (`RUST_LOG`, default `info`; stdout
/// is for the `listening on` lines scripts wait for) and a multi-threaded tokio runtime.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The JSON 404 for paths no service has.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "route",
        "no such endpoint",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_only_on_loopback() {
        assert!(bind("127.0.0.1:0", None).await.is_ok());
        let e = bind("0.0.0.0:0", None).await.err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("loopback only")));
    }
}
