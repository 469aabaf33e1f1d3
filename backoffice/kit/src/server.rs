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

/// Binds `addr` (e.g. `127.0.0.1:0` for any free port), on loopback only.
///
/// The services speak plain HTTP and do not yet authenticate their callers (issue 11 adds
/// mutual TLS and identities), so an address another machine can reach is refused before
/// anything is served on it, rather than exposing deposits and refills to a network.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    anyhow::ensure!(
        local.ip().is_loopback(),
        "refusing to listen on {local}: the back office serves plain HTTP without caller \
         authentication, so it listens on loopback only (127.0.0.1 or [::1])"
    );
    Ok(listener)
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
    async fn only_loopback_addresses_are_served() {
        assert!(bind("127.0.0.1:0").await.is_ok());
        let e = bind("0.0.0.0:0").await.unwrap_err().to_string();
        assert!(e.contains("loopback only"), "{e}");
    }
}
