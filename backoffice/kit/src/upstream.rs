//! Calls from one service to another over mutual TLS: the caller presents its own
//! certificate, and accepts the answer only from a server whose certificate names the
//! role it meant to call (`kms.openpsd`, …), whatever address it was given — a meter
//! pointed at the recharging center's port by mistake or by an attacker does not talk to
//! it as if it were the KMS.
//!
//! A refusal from the other service comes back unchanged (its status, code and step), so
//! the host learns which service refused and why. A service that cannot be reached, times
//! out or answers something that is not our JSON becomes `503 service_unavailable` at the
//! meter's step: the caller then commits nothing that depends on the answer, and every
//! call it makes is idempotent, so the host's retry continues where this one stopped.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::Context as _;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, ErrorBody};
use crate::tls::Role;

/// At most this many calls of one [`Upstream`] (and its clones) are in flight at once; the
/// others wait their turn. Without a bound, a burst (a thousand mailers' first standing
/// checks at once) opens a TLS connection per call, and the other service closes those
/// past its per-address limit (`Limits::per_address`, 256: every data center on one host
/// shares one address), so the burst failed as "unreachable". With it, the calls share at
/// most this many connections, kept alive (HTTP/1.1, one call each at a time), and the
/// burst is served in turn. Eight clients on one host stay within the server's limit.
pub const IN_FLIGHT: usize = 32;

/// How long a call may take, its wait for a turn included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The least time a call is sent with: a turn not had by `CALL_TIMEOUT - MIN_SEND` answers
/// busy without sending, rather than a request sent with a moment left, which would time
/// out on the way and leave its outcome unknown (a hold placed or not) for nothing.
const MIN_SEND: Duration = Duration::from_secs(3);

/// Another service's base URL and an HTTP client.
#[derive(Clone, Debug)]
pub struct Upstream {
    http: reqwest::Client,
    base: String,
    name: &'static str,
    /// Unique per [`Upstream::new`] in this process (clones share it).
    instance: u64,
    /// Turns for calls in flight ([`IN_FLIGHT`]), shared by clones.
    turns: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Upstream {
    /// A client for the service `name` (for messages), the role `peer`, at `base`
    /// (`https://host:port`), over `tls` (the caller's [`crate::tls::client_config`]).
    pub fn new(
        name: &'static str,
        base: &str,
        peer: Role,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).with_context(|| format!("{name} URL {base}"))?;
        anyhow::ensure!(
            url.scheme() == "https",
            "{name} URL {base}: the services talk HTTPS (mutual TLS) to each other"
        );
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("{name} URL {base} has no host"))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .collect();
        // Connect where we were told, but verify the certificate for the role's name.
        let name_host = peer.dns_name();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve_to_addrs(&name_host, &addrs)
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .build()?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Self {
            http,
            base: format!("https://{name_host}:{port}"),
            name,
            instance: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            turns: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A number unique to this client (and its clones) in this process: a cache keyed by it
    /// never serves one service's answers to a client of another that later took the same
    /// address (a port reused between two tests).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        step: &str,
    ) -> Result<T, ApiError> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req, path, step).await
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, step: &str) -> Result<T, ApiError> {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req, path, step).await
    }

    /// The public key the KMS (this upstream) registered for device `id` (hex): `404
    /// unknown_device` (the KMS's), `410 device_revoked`. What every service that checks a
    /// device's signature (the CA's attestations, the creditor's, the vendor's license
    /// requests) asks the KMS.
    pub async fn device_key(
        &self,
        id: &str,
        step: &str,
    ) -> Result<[u8; openpsd_core::crypto::PUBLIC_KEY_LEN], ApiError> {
        let info: openpsd_protocol::DeviceInfo =
            self.get(&format!("/v1/devices/{id}"), step).await?;
        if info.device_id != id {
            return Err(ApiError::unavailable(
                step,
                "the KMS answered for another device",
            ));
        }
        if info.revoked_at.is_some() {
            return Err(ApiError::new(
                StatusCode::GONE,
                openpsd_protocol::ErrorCode::DeviceRevoked,
                step,
                format!(
                    "device {id} is revoked ({})",
                    info.reason.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
        crate::codec::hex_array("public_key", &info.public_key, step)
            .map_err(|_| ApiError::unavailable(step, "the KMS answered a malformed device key"))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
        step: &str,
    ) -> Result<T, ApiError> {
        let unavailable = |what: String| {
            ApiError::unavailable(step, format!("{} at {} {what}", self.name, self.base))
        };
        // A turn first; the wait counts against the call's time, so a caller never waits
        // longer than one call's bound for an answer, and leaves the call `MIN_SEND` at least.
        let started = tokio::time::Instant::now();
        let wait = CALL_TIMEOUT.saturating_sub(MIN_SEND);
        let _turn = tokio::time::timeout(wait, self.turns.acquire())
            .await
            .map_err(|_| unavailable(format!("busy ({path}): no turn within {wait:?}")))?
            .map_err(|_| unavailable(format!("closed ({path})")))?;
        let req = req.timeout(CALL_TIMEOUT.saturating_sub(started.elapsed()));
        let resp = req.send().await.map_err(|e| {
            // reqwest's own message says only "error sending request": the cause (a
            // connect timeout, a refused connection, a TLS failure) is in its sources.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            unavailable(format!("unreachable ({path}): {why}"))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unavailable(format!("answer lost ({path}): {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| unavailable(format!("answered {path} with unexpected JSON: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            // A refusal (4xx) is the other service's decision: pass it on as it is. Its own
            // 503 (it could not reach something) is passed on too; any other server error
            // means it failed without deciding, which for us is "not available".
            // 401, 403, 408 and 429 say nothing about the request itself (our identity, a
            // timeout, a rate limit): "not available", so no caller takes them for a refusal
            // of the refill, the hold or the settlement.
            Ok(body)
                if matches!(
                    status,
                    StatusCode::UNAUTHORIZED
                        | StatusCode::FORBIDDEN
                        | StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                ) =>
            {
                Err(unavailable(format!(
                    "did not take {path}: {} {}",
                    body.error.code, body.error.message
                )))
            }
            Ok(body) if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE => {
                Err(ApiError {
                    status: StatusCode::from_u16(status.as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY),
                    code: body.error.code,
                    step: body.error.step,
                    message: body.error.message,
                })
            }
            Ok(body) => Err(unavailable(format!(
                "failed {path}: {} {}",
                body.error.code, body.error.message
            ))),
            Err(_) => Err(unavailable(format!("answered {path} with HTTP {status}"))),
        }
    }
}
