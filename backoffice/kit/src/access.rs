//! Who may call what: every route of every service is declared with the list of callers
//! it accepts ([`Routes`]), so the list is data the authorization-matrix test walks, and
//! the check is one middleware rather than a line each handler could forget.
//!
//! A caller is a service identity proved by a client certificate ([`Peer::role`]), or a
//! customer the meter authenticated by session token or API key ([`Customer`], inserted by
//! the meter's own middleware before these checks run), or nobody. A route that nobody on
//! its list matches answers `401 unauthenticated` to a caller with no identity at all and
//! `403 forbidden` to one with the wrong identity. Whether a customer owns the device or
//! refill a request names is the handler's check, and answers 404 (not 403), so IDs
//! cannot be probed.
//!
//! Requests are also bounded per caller ([`RateLimit`]): a token bucket per customer, per
//! service identity, or per address for callers without identity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;

use crate::error::{ApiError, ErrorCode};
use crate::tls::Role;

/// The connection a request came on: its address and the role its client certificate
/// proved (none without TLS or without a certificate).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The service identity its certificate proves.
    pub role: Option<Role>,
    /// With [`Role::Merchant`]: which merchant its certificate names
    /// ([`crate::tls::merchant_of_certificate`]).
    pub merchant: Option<String>,
}

/// A customer the meter authenticated for this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// The customer's ID.
    pub id: String,
    /// The recharging-center account the customer owns.
    pub account_id: String,
    /// Whether by a session token (a person logged in) rather than an API key.
    pub session: bool,
}

/// One kind of caller a route accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Anyone, with or without identity (health checks, sign-up, log-in).
    Anyone,
    /// A service or operator with this role's certificate.
    Role(Role),
    /// Any certificate of the back office's CA (health checks of the KMS and the RC).
    AnyRole,
    /// A customer logged in or with an API key.
    Customer,
}

/// A route's declared access: method, path (axum's syntax) and who may call it.
#[derive(Clone, Debug)]
pub struct Rule {
    /// HTTP method.
    pub method: Method,
    /// Path as routed, e.g. `/v1/refills/{client_txn_id}`.
    pub path: &'static str,
    /// Who may call it.
    pub who: &'static [Who],
}

/// A router being built, with the access rule of every route it gets.
pub struct Routes<S> {
    router: Router<S>,
    rules: Vec<Rule>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            rules: Vec::new(),
        }
    }

    /// Adds `method path` served by `handler`, for the callers in `who` only.
    pub fn route(
        mut self,
        method: Method,
        path: &'static str,
        handler: MethodRouter<S>,
        who: &'static [Who],
    ) -> Self {
        let check = middleware::from_fn(move |req: Request, next: Next| check(who, req, next));
        self.router = self.router.route(path, handler.route_layer(check));
        self.rules.push(Rule { method, path, who });
        self
    }

    /// The rules declared so far.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The router, its rate limit applied (outside the route checks, inside whatever the
    /// service layers on later, such as the meter's customer authentication), and the
    /// JSON 404 for paths it does not have.
    pub fn into_router(self, limit: &RateLimit) -> Router<S> {
        let limit = limit.clone();
        self.router
            .layer(middleware::from_fn(move |req: Request, next: Next| {
                let limit = limit.clone();
                async move { limit.check(req, next).await }
            }))
            .fallback(crate::server::not_found)
    }
}

async fn check(who: &'static [Who], req: Request, next: Next) -> Response {
    let role = req.extensions().get::<Peer>().and_then(|p| p.role);
    let customer = req.extensions().get::<Customer>().is_some();
    let allowed = who.iter().any(|w| match w {
        Who::Anyone => true,
        Who::Role(r) => role == Some(*r),
        Who::AnyRole => role.is_some(),
        Who::Customer => customer,
    });
    if allowed {
        return next.run(req).await;
    }
    let step = "access";
    let path = req.uri().path().to_owned();
    if role.is_none() && !customer {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            step,
            format!(
                "{path} needs an identity: a client certificate of the back office, or a \
                 customer's session token or API key"
            ),
        )
        .into_response()
    } else {
        let name = role.map_or("a customer", Role::name);
        tracing::warn!("{name} called {} {path}, which it may not", req.method());
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            step,
            format!("{name} may not call {path}"),
        )
        .into_response()
    }
}

/// A per-caller token bucket: `per_second` requests on average, `burst` at once.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Arc<Mutex<HashMap<String, (f64, Instant)>>>,
}

impl RateLimit {
    /// `per_second` requests per second per caller, up to `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `handler` with this limit in front of it (besides the service-wide one): for
    /// routes anyone may call that cost much, such as log-in (Argon2).
    ///
    /// Counted per address only, whatever identity the request carries: a customer must not
    /// get a bucket of their own for every account they make.
    pub fn on<S: Clone + Send + Sync + 'static>(
        &self,
        handler: MethodRouter<S>,
    ) -> MethodRouter<S> {
        let limit = self.clone();
        handler.route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let limit = limit.clone();
            async move {
                let key = format!("addr:{}", Self::address_key(&req));
                limit.check_key(&key, req, next).await
            }
        }))
    }

    /// The caller's address as a bucket key: an IPv6 address by its /64 (one host usually
    /// has the whole prefix).
    fn address_key(req: &Request) -> String {
        match req.extensions().get::<Peer>().map(|p| p.addr.ip()) {
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        }
    }

    /// The key a request is counted under.
    fn key(req: &Request) -> String {
        if let Some(c) = req.extensions().get::<Customer>() {
            return format!("customer:{}", c.id);
        }
        match req.extensions().get::<Peer>().and_then(|p| p.role) {
            Some(role) => format!("role:{}", role.name()),
            None => format!("addr:{}", Self::address_key(req)),
        }
    }

    /// Takes a token for `key`, or says how many seconds until one is there.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(()); // a panicked holder; never seen, and refusing all would be worse
        };
        if buckets.len() > 100_000 {
            // Forget full buckets rather than grow without bound.
            let burst = self.burst;
            let rate = self.per_second;
            buckets.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // why: a small positive wait in seconds, far below u64's range
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wait = ((1.0 - *tokens) / self.per_second).ceil() as u64;
            Err(wait.max(1))
        }
    }

    async fn check(&self, req: Request, next: Next) -> Response {
        let key = Self::key(&req);
        self.check_key(&key, req, next).await
    }

    async fn check_key(&self, key: &str, req: Request, next: Next) -> Response {
        match self.take(key) {
            Ok(()) => next.run(req).await,
            Err(wait) => {
                let mut r = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    "access",
                    format!("too many requests; try again in {wait} s"),
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses() {
        let limit = RateLimit::new(1, 3);
        for _ in 0..3 {
            assert!(limit.take("a").is_ok());
        }
        assert_eq!(limit.take("a"), Err(1));
        assert!(limit.take("b").is_ok(), "another caller has its own bucket");
    }
}
