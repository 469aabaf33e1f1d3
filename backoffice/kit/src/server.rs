//! A service program's runtime and logs, running a service's router on a TCP listener and
//! stopping it; the JSON 404 every service falls back to.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{ApiError, ErrorCode};

/// A running service.
pub struct Service {
    /// Address it listens on.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Service {
    /// Serves `router` on `listener` until [`Service::stop`].
    pub fn spawn(
        name: &'static str,
        listener: TcpListener,
        router: Router,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("{name}: server failed: {e}");
            }
        });
        tracing::info!("{name} listening on http://{addr}");
        Ok(Self {
            addr,
            url: format!("http://{addr}"),
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

/// Binds `addr` (e.g. `127.0.0.1:0` for any free port).
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
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
