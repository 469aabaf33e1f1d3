//! The web demo's listener (`backoffice demo --web`): static files, the personalization room
//! for browser PSDs, and the meter server's API passed through — exercised with a real PSD
//! (the core applet in card-sim's in-memory card, standing in for the one in the page) that
//! is personalized from the room's PERSONALIZE data and then refilled by the host library's
//! `openpsd refill` code through the web listener's `/v1`.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use card_sim::sim::{SimCard, SimulatedCard};
use openpsd_core::client::psd_apdu;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::Personalization;
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::LicenseAsk;
use openpsd_core::store::MemStore;
use openpsd_core::types::{Amount, DeviceId, LicenseId, PostalCode, RegisterSetIndex};
use openpsd_demo::web::{self, WebOptions};
use openpsd_host::refill::{MeterClient, RefillRequest};
use openpsd_host::{Link, LinkError, PsdClient};
use openpsd_protocol::license::MeterLicenseOrder;
use serde_json::{json, Value};

type Sim = SimCard<MemStore, SeededPlatform>;

struct Shared(Rc<RefCell<Sim>>);

impl Link for Shared {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut reply = Vec::new();
        SimulatedCard::handle(&mut *self.0.borrow_mut(), apdu, &mut reply);
        Ok(reply)
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, ct)
}

/// `GET path` exactly as written (an HTTP client would normalize `..` away); the status.
/// (Blocking: this thread only drives the test's future; the services run on the workers.)
fn raw_get(addr: &std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("K1"), "{path}: {text}");
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A blank PSD personalized with the room's data, as the page does with `Psd.create`.
fn personalize(data_hex: &str, seed: u64) -> (Rc<RefCell<Sim>>, String, String) {
    let data = hex::decode(data_hex).unwrap();
    let p = Personalization::decode(&data).expect("the room's data is valid PERSONALIZE data");
    let mut platform = SeededPlatform::new(seed);
    platform.today = Some(openpsd_service_kit::codec::today_utc());
    let mut sim = Sim::new(MemStore::new(), platform).unwrap();
    let mut reply = Vec::new();
    sim.handle(&psd_apdu::select(), &mut reply);
    assert_eq!(psd_apdu::sw(&reply), 0x9000);
    reply.clear();
    sim.handle(&psd_apdu::personalize(&p), &mut reply);
    let out = psd_apdu::data(&reply).expect("PERSONALIZE accepted");
    assert_eq!(out.len(), 4 + 65);
    (
        Rc::new(RefCell::new(sim)),
        hex::encode(&out[..4]),
        hex::encode(&out[4..]),
    )
}

/// The PSD as core's transfer driver sees it.
struct SimLink<'a>(&'a RefCell<Sim>);

impl Link for SimLink<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut reply = Vec::new();
        SimulatedCard::handle(&mut *self.0.borrow_mut(), apdu, &mut reply);
        Ok(reply)
    }
}

/// A purse made from `POST /demo/v1/purses`, certified by the room, then 5.00 moved to it
/// from the (refilled, 25.00) PSD the room personalized.
async fn purse_receives_a_transfer(http: &reqwest::Client, base: &str, psd: &RefCell<Sim>) {
    use openpsd_core::client::purse_apdu;
    use openpsd_core::client::transfer::transfer;
    use openpsd_core::purse::personal::PursePersonalization;
    use openpsd_core::purse::purse_card;

    let url = |p: &str| format!("{base}{p}");
    for bad in ["123", "12ab", "1234567890123"] {
        let (s, e, _) = send(http.post(url("/demo/v1/purses")).json(&json!({"pin": bad}))).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    let (s, made, _) = send(
        http.post(url("/demo/v1/purses"))
            .json(&json!({"pin": "2468"})),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let card_id = made["card_id"].as_str().unwrap().to_owned();
    let data = hex::decode(made["personalize"].as_str().unwrap()).unwrap();
    let p = PursePersonalization::decode(&data).expect("valid purse PERSONALIZE data");
    assert_eq!(
        (p.max_balance, p.max_transfer),
        (Amount(50_000), Amount(20_000))
    );
    assert_eq!(hex::encode(p.issuer_public_key), made["issuer_public_key"]);

    let mut platform = SeededPlatform::new(7);
    platform.today = Some(openpsd_service_kit::codec::today_utc());
    let mut purse = purse_card(MemStore::new(), platform).unwrap();
    assert_eq!(psd_apdu::sw(&purse.transmit(&purse_apdu::select())), 0x9000);
    let reply = purse.transmit(&purse_apdu::personalize(&p));
    let public_key = hex::encode(psd_apdu::data(&reply).expect("PERSONALIZE accepted"));

    // The room certifies only its own cards.
    let (s, e, _) = send(
        http.post(url("/demo/v1/purses/5052530000000000/certify"))
            .json(&json!({"public_key": public_key})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_card"))
    );
    let (s, cert, _) = send(
        http.post(url(&format!("/demo/v1/purses/{card_id}/certify")))
            .json(&json!({"public_key": public_key})),
    )
    .await;
    assert_eq!(s, 200, "{cert}");
    let sig = hex::decode(cert["signature"].as_str().unwrap()).unwrap();
    assert_eq!(
        psd_apdu::sw(&purse.transmit(&purse_apdu::certify(&sig))),
        0x9000
    );

    // Both recognition keys were generated inside the devices; the room certifies them
    // (its own devices only) and keeps the issuer key.
    let purse_key = {
        let mut c = openpsd_core::client::PurseClient::new(&mut purse);
        hex::encode(c.recognition_info().unwrap().public_key)
    };
    let (s, e, _) = send(
        http.post(url("/demo/v1/purses/5052530000000000/certificate"))
            .json(&json!({"recognition_key": purse_key})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_card"))
    );
    let (s, c, _) = send(
        http.post(url(&format!("/demo/v1/purses/{card_id}/certificate")))
            .json(&json!({"recognition_key": purse_key})),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let cert = hex::decode(c["certificate"].as_str().unwrap()).unwrap();
    assert_eq!(
        psd_apdu::sw(&purse.transmit(&purse_apdu::install_certificate(&cert))),
        0x9000
    );
    // Someone else's key for the same card ID (IDs are not secret): refused.
    let (s, e, _) = send(
        http.post(url(&format!("/demo/v1/purses/{card_id}/certificate")))
            // P-256's generator, compressed: a valid point, not the card's key.
            .json(&json!({"recognition_key":
                "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("device_conflict")),
        "{e}"
    );
    let (device_hex, psd_key) = {
        let mut link = SimLink(psd);
        let mut c = openpsd_core::client::PsdClient::new(&mut link);
        let device = c.select().unwrap().unwrap().device;
        let key = c.recognition_info().unwrap().public_key;
        (hex::encode_upper(device.0), hex::encode(key))
    };
    // Before its certificate, the browser PSD cannot transfer.
    let err = transfer(
        &mut SimLink(psd),
        &mut purse,
        RegisterSetIndex(0),
        Amount(500),
        b"2468",
    )
    .unwrap_err();
    assert_eq!(err.status(), Some(openpsd_core::Status::NotCertified));
    let (s, e, _) = send(
        http.post(url("/demo/v1/devices/5053440000000000/certificate"))
            .json(&json!({"recognition_key": psd_key})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_device"))
    );
    let (s, c, _) = send(
        http.post(url(&format!("/demo/v1/devices/{device_hex}/certificate")))
            .json(&json!({"recognition_key": psd_key})),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let cert = hex::decode(c["certificate"].as_str().unwrap()).unwrap();
    {
        let mut link = SimLink(psd);
        let mut c = openpsd_core::client::PsdClient::new(&mut link);
        c.select().unwrap();
        c.install_certificate(&cert).unwrap();
    }

    let out = transfer(
        &mut SimLink(psd),
        &mut purse,
        RegisterSetIndex(0),
        Amount(500),
        b"2468",
    )
    .expect("the transfer goes through");
    assert_eq!(out.registers.dr, Amount(2_000));
    assert_eq!(out.purse.balance, Amount(500));
    assert!(out.purse.certified_by(&p.issuer_public_key));
}

#[test]
fn room_keys_are_kept_in_the_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let a = web::RoomKeys::load_or_create(dir.path()).unwrap();
    let file = dir.path().join(web::ROOM_KEY_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = web::RoomKeys::load_or_create(dir.path()).unwrap();
    assert_eq!(*a.admin_key, *b.admin_key);
    assert_eq!(a.issuer.public_key(), b.issuer.public_key());
}

#[test]
fn a_browser_psd_is_personalized_registered_and_refilled_through_the_web_listener() {
    // The services run on the runtime's workers; the card (not Send) and the blocking host
    // stay on this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("web-demo");
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    std::fs::write(pkg.join("openpsd_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let w_pkg = pkg.clone();
    let h = openpsd_backoffice::spawn_all(&dir.path().join("bo"))
        .await
        .unwrap();
    let w = web::start(
        &WebOptions {
            listen: "127.0.0.1:0".into(),
            root,
            pkg,
            post: None,
            datacenter: None,
        },
        &h,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", w.url);

    // Static files. Before the wasm package is built (scripts/demo.sh builds it after the
    // back office is up) the page says so and asks to be retried; then the page itself.
    let resp = http.get(url("/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body = resp.text().await.unwrap();
    assert!(body.contains("being built"), "{body}");
    std::fs::write(w_pkg.join("openpsd.js"), "export default 1;").unwrap();
    let (s, _, ct) = send(http.get(url("/"))).await;
    assert_eq!((s, ct.as_str()), (200, "text/html; charset=utf-8"));
    let (s, _, ct) = send(http.get(url("/pkg/openpsd_bg.wasm"))).await;
    assert_eq!((s, ct.as_str()), (200, "application/wasm"));
    let (s, body, _) = send(http.get(url("/pkg/nothing.js"))).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Nothing outside the page's directory, whatever the raw request line says.
    std::fs::write(dir.path().join("secret.txt"), "K1").unwrap();
    std::fs::write(dir.path().join("web-demo/.hidden"), "x").unwrap();
    for path in [
        "/../secret.txt",
        "/pkg/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/.hidden",
    ] {
        let status = raw_get(&w.addr, path);
        assert!(status == 404 || status == 400, "{path}: HTTP {status}");
    }

    // A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) names its own
    // host: refused, even for a read.
    let (s, _, _) = send(http.get(url("/")).header("host", "evil.example:8080")).await;
    assert_eq!(s, 403);

    // The room: PERSONALIZE data with the requested origin.
    let (s, bad, _) = send(
        http.post(url("/demo/v1/devices"))
            .json(&json!({"origin": "not a code!"})),
    )
    .await;
    assert_eq!(
        (s, bad["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let resp = http
        .post(url("/demo/v1/devices"))
        .json(&json!({"origin": "80331"}))
        .send()
        .await
        .unwrap();
    // The new customer's session comes as an HttpOnly, SameSite=Strict cookie.
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let token = cookie.trim_start_matches("openpsd_session=").to_owned();
    let s = resp.status().as_u16();
    let pers: Value = resp.json().await.unwrap();
    assert_eq!(s, 200, "{pers}");
    assert_eq!(pers["origin"], "80331");
    assert_eq!(pers["inspection_days"], 28);
    let device_id = pers["device_id"].as_str().unwrap().to_owned();
    let account = pers["account_id"].as_str().unwrap().to_owned();
    assert!(account.starts_with("acct-"), "{account}");
    // The page receives public keys only: the KMS's (refills and receipts must verify
    // under it), the vendor's (license countersignatures), the issuer's and the postal
    // authority's (license grants); its private keys are generated inside.
    let data = hex::decode(pers["personalize"].as_str().unwrap()).unwrap();
    let p = Personalization::decode(&data).unwrap();
    assert_eq!(p.kms_public_key, h.kms_public_key);
    assert_eq!(p.vendor_public_key, h.vendor_public_key);
    assert_eq!(p.postal_authority.as_ref(), Some(&h.postal_authority));
    assert_eq!(
        data.len(),
        1 + 8
            + 65
            + 65
            + 8
            + 8
            + 2
            + 1
            + 4
            + 6
            + 1
            + 4
            + 65
            + 1
            + (1 + 65 + 1 + h.postal_authority.subject.len()),
        "device ID, three public keys, limits, one license, the scheme block, the postal \
         authority block: nothing else"
    );
    let (sim, key_id, public_key) = personalize(pers["personalize"].as_str().unwrap(), 1);

    // Without the cookie the meter does not know who is asking.
    let (s, e, _) = send(http.get(url("/v1/me"))).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // A form post from another site (no JSON) or a JSON post naming another origin:
    // refused before anything is done.
    let (s, _, _) = send(
        http.post(url("/v1/refills"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("amount=1"),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = send(
        http.post(url("/v1/refills"))
            .header("cookie", &cookie)
            .header("origin", "http://evil.example")
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 403);
    // Not registered yet: the meter server (through the web listener) does not know it.
    let (s, e, _) = send(
        http.post(url("/v1/refills"))
            .header("cookie", &cookie)
            .json(&json!({
        "client_txn_id": "early", "device_id": device_id, "set": 0, "account_id": account,
        "amount": 100})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_device"))
    );

    // A wrong key ID is refused; the right one registers and funds the account.
    let reg = |k: &str, p: &str| {
        http.post(url(&format!("/demo/v1/devices/{device_id}/register")))
            .header("cookie", &cookie)
            .json(&json!({"key_id": k, "public_key": p}))
    };
    // "Verify a label" needs the post office, which this room was started without: a clear
    // 503; and exactly one of image or indicium (the journey verifies a real scan).
    let (s, e, _) = send(
        http.post(url("/demo/v1/labels"))
            .json(&json!({"indicium": "00"})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (503, Some("service_unavailable"))
    );
    let (s, _, _) = send(
        http.post(url("/demo/v1/labels"))
            .header("content-type", "text/plain")
            .body("x"),
    )
    .await;
    assert_eq!(s, 403, "changes are JSON only");
    let (s, e, _) = send(reg("00000000", &public_key)).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_request")));
    // Without the session the room registers nothing (the waiting licenses stay for the page).
    let (s, _, _) = send(
        http.post(url(&format!("/demo/v1/devices/{device_id}/register")))
            .json(&json!({"key_id": key_id, "public_key": public_key})),
    )
    .await;
    assert_eq!(s, 401);
    // A second session cookie planted beside the page's (say, by another loopback port):
    // neither counts.
    let planted = format!("{cookie}; openpsd_session=ops_{}", "0".repeat(64));
    let (s, _, _) = send(http.get(url("/v1/me")).header("cookie", planted)).await;
    assert_eq!(s, 401);
    let (s, r, _) = send(reg(&key_id, &public_key)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["account"]["available"], 10_000);
    assert_eq!(r["licenses"][0][1], "80331");
    // Again (the page lost the answer): the same, and no second deposit.
    let (s, r, _) = send(reg(&key_id, &public_key)).await;
    assert_eq!((s, &r["account"]["deposited"]), (200, &json!(10_000)));
    // Another device key for it afterwards: refused.
    let (_, _, other) = personalize(
        send(http.post(url("/demo/v1/devices")).json(&json!({})))
            .await
            .1["personalize"]
            .as_str()
            .unwrap(),
        2,
    );
    let other_id = hex::encode(openpsd_core::crypto::key_id(&hex::decode(&other).unwrap()).0);
    let (s, e, _) = send(reg(&other_id, &other)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("device_conflict"))
    );
    // A device the room never made.
    let (s, e, _) = send(
        http.post(url("/demo/v1/devices/5053440000000000/register"))
            .header("cookie", &cookie)
            .json(&json!({"key_id": key_id, "public_key": public_key})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_device"))
    );

    // The host's refill, through the web listener's /v1 (the meter server's API).
    // (ureq blocks this thread, which only drives this future; the services run on the
    // runtime's workers.)
    let mut psd = PsdClient::new(Box::new(Shared(sim.clone())));
    let info = psd.select().unwrap().unwrap();
    let mut d = [0u8; 8];
    hex::decode_to_slice(&device_id, &mut d).unwrap();
    assert_eq!(info.device, DeviceId(d));
    let req = RefillRequest {
        client_txn_id: "web-test-1".into(),
        account_id: Some(account.clone()),
        set: RegisterSetIndex(0),
        amount: Amount(2_500),
    };
    let out = MeterClient::new(&w.url, None, Some(&token))
        .unwrap()
        .refill(&mut psd, info.device, &req, &mut |_| {})
        .unwrap();
    assert_eq!(out.state, "completed");
    assert!(out.inspection_renewed);
    assert_eq!(
        (out.registers.dr, out.registers.control_sum),
        (Amount(2_500), Amount(2_500))
    );
    let (s, a, _) = send(
        http.get(url(&format!("/demo/v1/accounts/{account}")))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (&a["available"], &a["debited"]),
        (&json!(7_500), &json!(2_500))
    );
    // Only the customer's own account is shown; another is not found.
    let (s, _, _) = send(
        http.get(url("/demo/v1/accounts/demo"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(s, 404);

    // A license for the room's PSD (seed 003) through the web listener's /v1/licenses,
    // as the page's licenses panel asks for one: the room personalized the PSD with the
    // back office's vendor and postal authority, so the countersigned grant installs.
    let meter = MeterClient::new(&w.url, None, Some(&token)).unwrap();
    let ask = LicenseAsk {
        license: LicenseId(0),
        origin: PostalCode::new(b"80331").unwrap(),
    };
    let request = psd.license_request(&ask, false).unwrap();
    let grant = meter
        .order_license(&MeterLicenseOrder {
            client_txn_id: "web-license-1".into(),
            device_id: device_id.clone(),
            request: hex::encode(request.encode()),
        })
        .unwrap();
    assert_eq!(
        meter.license_order("web-license-1").unwrap().install,
        grant.install,
        "a resumed order finds its grant"
    );
    let install = Install::decode(&hex::decode(&grant.install).unwrap()).unwrap();
    let (slot, _, license) = psd.license_install(&install).unwrap();
    assert_eq!(
        (slot, license.0, grant.fields.origin.as_str()),
        (RegisterSetIndex(1), grant.fields.license, "80331")
    );
    // An order the meter does not know: the meter's own answer, not the listener's 404.
    let (s, e, _) = send(
        http.get(url("/v1/licenses/0123456789abcdef"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("unknown_license_order"))
    );

    // A purse of the room's scheme receives value from the room's PSD.
    purse_receives_a_transfer(&http, &w.url, &sim).await;

    w.stop().await;
    h.stop().await;
}
