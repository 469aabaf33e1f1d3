//! The listener's bounds and its TLS, tried from outside as a client would: a body over
//! the limit, a connection that says nothing, a client certificate of another CA, a
//! server that is not the one the client meant, the box's server-only certificate as a
//! client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use openpsd_service_kit::access::{Peer, RateLimit, Routes, Who};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::tls::{client_config, server_config, ClientAuth, Role};
use openpsd_service_kit::upstream::Upstream;

fn echo_router() -> Router {
    Router::new()
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/who",
            get(|axum::Extension(p): axum::Extension<Peer>| async move {
                p.role.map_or("nobody", Role::name).to_owned()
            }),
        )
}

fn http(pki: &Pki, role: Option<Role>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(pki, role).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let mut l = bind("127.0.0.1:0", None).await.unwrap();
    l.limits.body_bytes = 1024;
    let svc = Service::spawn("t", l, echo_router()).unwrap();
    let c = reqwest::Client::new();
    let ok = c
        .post(format!("{}/echo", svc.url))
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let big = c
        .post(format!("{}/echo", svc.url))
        .body(vec![0u8; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    svc.stop().await;
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed() {
    let mut l = bind("127.0.0.1:0", None).await.unwrap();
    l.limits.idle = Duration::from_millis(400);
    l.limits.handshake = Duration::from_millis(400);
    let svc = Service::spawn("t", l, echo_router()).unwrap();
    let addr = svc.addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).unwrap_or(0);
        (n, t.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(closed_after.0, 0, "closed without an answer");
    assert!(
        closed_after.1 < Duration::from_secs(5),
        "{:?}",
        closed_after.1
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_slow_head_is_cut_off() {
    let mut l = bind("127.0.0.1:0", None).await.unwrap();
    l.limits.handshake = Duration::from_millis(300);
    let svc = Service::spawn("t", l, echo_router()).unwrap();
    let addr = svc.addr;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Half a request head, then silence, dribbling one byte now and then.
        s.write_all(b"GET /who HTTP/1.1\r\n").unwrap();
        let t = Instant::now();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b"X").is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
    })
    .await
    .unwrap();
    assert!(!answer.0.contains("200 OK"), "{}", answer.0);
    // Closed by the server (without the bound, the read would wait its full 10 s).
    assert!(answer.1 < Duration::from_secs(5), "{:?}", answer.1);
    svc.stop().await;
}

#[tokio::test]
async fn mutual_tls_names_the_caller_and_refuses_certificates_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(&dir.path().join("pki"));
    pki.init(&Role::ALL, &[]).unwrap();
    let other = Pki::at(&dir.path().join("other"));
    other.init(&Role::ALL, &[]).unwrap();

    let tls = server_config(&pki, Role::Kms, ClientAuth::Required).unwrap();
    let svc = Service::spawn(
        "kms",
        bind("127.0.0.1:0", Some(tls)).await.unwrap(),
        echo_router(),
    )
    .unwrap();
    let url = format!("{}/who", svc.url);
    // Each certificate of our CA is its role, but the box's: it is for serving only.
    for role in Role::ALL.into_iter().filter(|r| *r != Role::Box) {
        let who = http(&pki, Some(role)).get(&url).send().await.unwrap();
        assert_eq!(who.text().await.unwrap(), role.name());
    }
    assert!(
        http(&pki, Some(Role::Box)).get(&url).send().await.is_err(),
        "the box's certificate opens no session as a client"
    );
    // No certificate, or a certificate of another CA (even one saying "meter"): no handshake.
    assert!(http(&pki, None).get(&url).send().await.is_err());
    let foreign = reqwest::Client::builder()
        .use_preconfigured_tls({
            // Trusts our server, but presents the other CA's meter certificate.
            let mut roots = rustls::RootCertStore::empty();
            for c in openpsd_service_kit::tls::read_certs(&pki.ca_cert()).unwrap() {
                roots.add(c).unwrap();
            }
            let certs = openpsd_service_kit::tls::read_certs(&other.cert(Role::Meter)).unwrap();
            let key = std::fs::read(other.key(Role::Meter)).unwrap();
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key).unwrap();
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap()
        })
        .build()
        .unwrap();
    assert!(
        foreign.get(&url).send().await.is_err(),
        "another CA's certificate refused"
    );
    // A client that means the recharging center does not accept the KMS's certificate.
    let wrong = Upstream::new(
        "recharging center",
        &svc.url,
        Role::Recharge,
        client_config(&pki, Some(Role::Meter)).unwrap(),
    )
    .unwrap();
    let e = wrong.get::<String>("/who", "t").await.unwrap_err();
    assert_eq!(e.status, 503, "{e:?}");
    let right = Upstream::new(
        "KMS",
        &svc.url,
        Role::Kms,
        client_config(&pki, Some(Role::Meter)).unwrap(),
    )
    .unwrap();
    assert!(
        right
            .get::<serde_json::Value>("/who", "t")
            .await
            .is_err_and(|e| e.message.contains("unexpected JSON")),
        "reached (the answer is text)"
    );
    svc.stop().await;
}

#[tokio::test]
async fn routes_answer_401_to_nobody_and_403_to_the_wrong_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(dir.path());
    pki.init(&Role::ALL, &[]).unwrap();
    let routes: Routes<()> = Routes::new().route(
        axum::http::Method::GET,
        "/meter-only",
        get(|| async { "ok" }),
        &[Who::Role(Role::Meter)],
    );
    let router = routes.into_router(&RateLimit::new(1000, 1000));
    let tls = server_config(&pki, Role::Kms, ClientAuth::Optional).unwrap();
    let svc = Service::spawn("t", bind("127.0.0.1:0", Some(tls)).await.unwrap(), router).unwrap();
    let url = format!("{}/meter-only", svc.url);
    let status = |c: reqwest::Client| {
        let url = url.clone();
        async move { c.get(&url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(http(&pki, None)).await, 401);
    assert_eq!(status(http(&pki, Some(Role::Operator))).await, 403);
    assert_eq!(status(http(&pki, Some(Role::Meter))).await, 200);
    svc.stop().await;
}

#[tokio::test]
async fn the_operator_certificate_serves_nobody_and_wildcards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(dir.path());
    pki.init(&Role::ALL, &[]).unwrap();
    // A server presenting the operator's (client-only) certificate gets no client.
    let tls = server_config(&pki, Role::Operator, ClientAuth::Optional).unwrap();
    let svc = Service::spawn(
        "t",
        bind("127.0.0.1:0", Some(tls)).await.unwrap(),
        echo_router(),
    )
    .unwrap();
    assert!(http(&pki, None)
        .get(format!("{}/who", svc.url))
        .send()
        .await
        .is_err());
    svc.stop().await;
    // Names that would make a certificate prove several roles are refused at init.
    let other = Pki::at(&dir.path().join("wild"));
    assert!(other.init(&Role::ALL, &["*.openpsd".to_owned()]).is_err());
}

#[tokio::test]
async fn a_rate_limited_or_refused_identity_is_unavailable_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(dir.path());
    pki.init(&Role::ALL, &[]).unwrap();
    let router = Router::new().route(
        "/busy",
        get(|| async {
            openpsd_service_kit::error::ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                openpsd_service_kit::error::ErrorCode::RateLimited,
                "access",
                "slow down",
            )
        }),
    );
    let tls = server_config(&pki, Role::Recharge, ClientAuth::Required).unwrap();
    let svc = Service::spawn("rc", bind("127.0.0.1:0", Some(tls)).await.unwrap(), router).unwrap();
    let up = Upstream::new(
        "recharging center",
        &svc.url,
        Role::Recharge,
        client_config(&pki, Some(Role::Meter)).unwrap(),
    )
    .unwrap();
    let e = up.get::<serde_json::Value>("/busy", "t").await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (503, "service_unavailable")
    );
    svc.stop().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let mut l = bind("127.0.0.1:0", None).await.unwrap();
    l.limits.per_address = 2;
    let svc = Service::spawn("t", l, echo_router()).unwrap();
    let addr = svc.addr;
    let third_closed = tokio::task::spawn_blocking(move || {
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        let third = c.read(&mut buf).is_ok_and(|n| n == 0);
        drop((_a, _b));
        third
    })
    .await
    .unwrap();
    assert!(
        third_closed,
        "the third connection from one address is closed at once"
    );
    // Once those are gone, the address is served again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = reqwest::Client::new()
        .post(format!("{}/echo", svc.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    svc.stop().await;
}

#[test]
fn a_merchant_certificate_proves_the_role_and_names_its_merchant() {
    use openpsd_service_kit::tls::{merchant_of_certificate, read_certs};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(dir.path());
    pki.init(&Role::ALL, &[]).unwrap();
    pki.init_merchant("shop-7").unwrap();
    let shop = read_certs(&pki.merchant_cert("shop-7")).unwrap();
    assert_eq!(Role::of_certificate(&shop[0]), Some(Role::Merchant));
    assert_eq!(merchant_of_certificate(&shop[0]).as_deref(), Some("shop-7"));
    // The role's plain certificate and another role's name no merchant.
    let plain = read_certs(&pki.cert(Role::Merchant)).unwrap();
    assert_eq!(Role::of_certificate(&plain[0]), Some(Role::Merchant));
    assert_eq!(merchant_of_certificate(&plain[0]), None);
    let meter = read_certs(&pki.cert(Role::Meter)).unwrap();
    assert_eq!(merchant_of_certificate(&meter[0]), None);
    // IDs that are no DNS label are refused before anything is issued.
    for bad in ["", "Shop", "-a", "a-", "a.b", "shop 7", &"x".repeat(33)] {
        assert!(pki.init_merchant(bad).is_err(), "{bad:?}");
    }
}

/// A burst of calls through one [`Upstream`] (a thousand mailers' first standing checks at
/// once) takes at most `IN_FLIGHT` connections: a server that serves one address no more
/// than `IN_FLIGHT` + 8 at once answers every one of 200 slow calls. Without the bound, each call
/// opened its own connection, and those past the server's per-address limit were closed
/// ("unreachable").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_calls_shares_a_bounded_number_of_connections() {
    use openpsd_service_kit::upstream::IN_FLIGHT;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(dir.path());
    pki.init(&Role::ALL, &[]).unwrap();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (Arc::clone(&now), Arc::clone(&most));
    let router = Router::new().route(
        "/slow",
        get(move || {
            let (n, m) = (Arc::clone(&n), Arc::clone(&m));
            async move {
                let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                axum::Json(1u8)
            }
        }),
    );
    let tls = server_config(&pki, Role::Kms, ClientAuth::Required).unwrap();
    let mut l = bind("127.0.0.1:0", Some(tls)).await.unwrap();
    // Room for the bound, not for 200 connections.
    l.limits.per_address = IN_FLIGHT + 8;
    let svc = Service::spawn("kms", l, router).unwrap();
    let up = Upstream::new(
        "KMS",
        &svc.url,
        Role::Kms,
        client_config(&pki, Some(Role::Datacenter)).unwrap(),
    )
    .unwrap();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let up = up.clone();
            tokio::spawn(async move { up.get::<u8>("/slow", "t").await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 1);
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= IN_FLIGHT, "{most} calls at once");
    assert!(most > 1, "the calls ran side by side");
    svc.stop().await;
}
