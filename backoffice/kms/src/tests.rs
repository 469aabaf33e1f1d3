//! The KMS in-process: its router called with the identity a client certificate would
//! prove (a [`Peer`] extension), its key files, and the migration of a K1-suite database.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::types::{Amount, DeviceId, LicenseId, PieceCount, RefillCount, RegisterSetIndex};
use openpsd_service_kit::access::{Peer, RateLimit};
use openpsd_service_kit::codec::OsRandom;
use openpsd_service_kit::tls::Role;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use super::*;

const DEVICE: DeviceId = DeviceId([0x50, 0x53, 0x44, 0x00, 0x00, 0x00, 0x00, 0x01]);
const DEVICE_HEX: &str = "5053440000000001";

struct Setup {
    dir: tempfile::TempDir,
    rc: IndiciumKey,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            rc: IndiciumKey::generate(&mut OsRandom),
        }
    }

    fn config(&self) -> Config {
        Config {
            data: self.dir.path().join("kms"),
            recharge_public_key: self.rc.public_key(),
            signing_key: None,
        }
    }

    fn open(&self) -> Kms {
        Kms::open(&self.config()).unwrap()
    }
}

/// Calls `method path` as `role` (none: no client certificate).
async fn call(
    kms: &Kms,
    role: Option<Role>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .extension(Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
            role,
            merchant: None,
        })
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = kms
        .clone()
        .router(&RateLimit::new(10_000, 10_000))
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

async fn meter(kms: &Kms, path: &str, body: Value) -> (StatusCode, Value) {
    call(kms, Some(Role::Meter), Method::POST, path, Some(body)).await
}

async fn operator(
    kms: &Kms,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(kms, Some(Role::Operator), method, path, body).await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn registration(key: &IndiciumKey) -> Value {
    json!({
        "device_id": DEVICE_HEX,
        "key_id": hex::encode(key.key_id().0),
        "public_key": hex::encode(key.public_key()),
        "licenses": [[1234, "75001"]],
    })
}

fn audit_data(refills: u32) -> AuditData {
    AuditData {
        device: DEVICE,
        license: LicenseId(1234),
        set: RegisterSetIndex(0),
        ar: Amount(0),
        dr: Amount(0),
        control_sum: Amount(0),
        pieces: PieceCount(0),
        refills: RefillCount(refills),
        transferred: Amount(0),
        pending: Amount(0),
        last_combination: [0; 8],
        nonce: [7; 16],
        fees: Amount(0),
        services: PieceCount(0),
        fees_due: Amount(0),
        rate_table: 0,
    }
}

fn combination(amount: u64) -> RefillCombination {
    RefillCombination {
        device: DEVICE,
        license: LicenseId(1234),
        amount: Amount(amount),
        control_sum: Amount(0),
        refills: RefillCount(0),
        combination_id: [9; 8],
    }
}

/// The body of `POST /v1/refill-messages` for `c`, signed by `rc`.
fn signed(rc: &IndiciumKey, c: &RefillCombination) -> Value {
    serde_json::to_value(SignedCombination {
        combination: openpsd_protocol::Combination::from_core(c),
        signature: hex::encode(rc.sign(&c.body())),
    })
    .unwrap()
}

fn receipt_body(audit: &[u8]) -> Value {
    json!({"audit": hex::encode(audit), "accepted_on": "2026-11-29"})
}

#[tokio::test]
async fn audits_are_checked_with_the_device_key_and_messages_signed_with_the_kms_key() {
    let s = Setup::new();
    let kms = s.open();
    let device = IndiciumKey::generate(&mut OsRandom);
    let (st, info) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&device)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{info}");
    assert!(info.get("revoked_at").is_none(), "{info}");
    let (st, _) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&device)),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "the same registration again");
    let other = IndiciumKey::generate(&mut OsRandom);
    let (st, body) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&other)),
    )
    .await;
    assert_eq!((st, code(&body)), (StatusCode::CONFLICT, "device_conflict"));

    // The device's audit verifies; one signed by another key does not.
    let audit = audit_data(0).sign(&device);
    let (st, v) = meter(
        &kms,
        "/v1/audits/verify",
        json!({"audit": hex::encode(&audit)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["device_id"], DEVICE_HEX);
    let forged = audit_data(0).sign(&other);
    let (st, v) = meter(
        &kms,
        "/v1/audits/verify",
        json!({"audit": hex::encode(&forged)}),
    )
    .await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "audit_signature_invalid")
    );
    let (st, v) = meter(&kms, "/v1/receipts", receipt_body(&forged)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "audit_signature_invalid")
    );

    // The refill message and the receipt open under the KMS's public key, as in the PSD.
    let c = combination(2500);
    let (st, v) = meter(&kms, "/v1/refill-messages", signed(&s.rc, &c)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let message = hex::decode(v["refill_message"].as_str().unwrap()).unwrap();
    assert_eq!(RefillCombination::open(&message, &kms.public_key()), Ok(c));
    let (_, again) = meter(&kms, "/v1/refill-messages", signed(&s.rc, &c)).await;
    assert_eq!(again, v, "a retry gets the same message");
    let (st, v) = meter(&kms, "/v1/refill-messages", signed(&other, &c)).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::FORBIDDEN, "combination_not_authorized")
    );
    let (st, v) = meter(&kms, "/v1/receipts", receipt_body(&audit)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = hex::decode(v["receipt"].as_str().unwrap()).unwrap();
    let r = Receipt::open(&r, &kms.public_key()).unwrap();
    assert_eq!((r.device, r.nonce), (DEVICE, [7; 16]));
}

#[tokio::test]
async fn a_registration_with_k1_is_refused_and_nothing_is_stored() {
    let s = Setup::new();
    let kms = s.open();
    let device = IndiciumKey::generate(&mut OsRandom);
    let k1 = "4b3120736563726574206e6576657221"; // 16 bytes of K1, hex
    for value in [json!(k1), Value::Null] {
        let mut body = registration(&device);
        body["k1"] = value;
        let (st, v) = operator(&kms, Method::POST, "/v1/devices", Some(body)).await;
        assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("K1 is no longer accepted"), "{message}");
        assert!(!message.contains(k1), "the value is not echoed");
    }
    let (st, _) = operator(
        &kms,
        Method::GET,
        &format!("/v1/devices/{DEVICE_HEX}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    drop(kms);
    for entry in std::fs::read_dir(s.config().data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == k1.as_bytes()));
    }
}

#[tokio::test]
async fn a_revoked_device_is_gone_for_verify_seal_and_receipt() {
    let s = Setup::new();
    let kms = s.open();
    let device = IndiciumKey::generate(&mut OsRandom);
    operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&device)),
    )
    .await;
    let path = format!("/v1/devices/{DEVICE_HEX}/revoke");
    for bad in [
        json!({"reason": ""}),
        json!({"reason": "x".repeat(201)}),
        json!({"reason": "a\nb"}),
        json!({}),
    ] {
        let (st, v) = operator(&kms, Method::POST, &path, Some(bad)).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{v}"
        );
    }
    let (st, v) = meter(&kms, &path, json!({"reason": "stolen"})).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "the issuer's only"
    );
    let (st, v) = operator(
        &kms,
        Method::POST,
        "/v1/devices/5053440000000002/revoke",
        Some(json!({"reason": "stolen"})),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "unknown_device"));

    let reason = "é".repeat(200);
    let (st, first) = operator(&kms, Method::POST, &path, Some(json!({"reason": reason}))).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    assert!(first["revoked_at"].as_u64().is_some());
    assert_eq!(first["reason"], reason.as_str());
    let (st, second) = operator(&kms, Method::POST, &path, Some(json!({"reason": "again"}))).await;
    assert_eq!(
        (st, &second),
        (StatusCode::OK, &first),
        "idempotent: the first revocation"
    );
    let (st, v) = call(
        &kms,
        Some(Role::Meter),
        Method::GET,
        &format!("/v1/devices/{DEVICE_HEX}"),
        None,
    )
    .await;
    assert_eq!((st, &v), (StatusCode::OK, &first));

    let audit = audit_data(0).sign(&device);
    let gone = |(st, v): (StatusCode, Value)| {
        assert_eq!((st, code(&v)), (StatusCode::GONE, "device_revoked"), "{v}");
    };
    gone(
        meter(
            &kms,
            "/v1/audits/verify",
            json!({"audit": hex::encode(&audit)}),
        )
        .await,
    );
    gone(
        meter(
            &kms,
            "/v1/refill-messages",
            signed(&s.rc, &combination(100)),
        )
        .await,
    );
    gone(meter(&kms, "/v1/refill-messages", signed(&s.rc, &combination(0))).await);
    gone(meter(&kms, "/v1/receipts", receipt_body(&audit)).await);
    // Registering it again changes nothing.
    let (st, v) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&device)),
    )
    .await;
    assert_eq!((st, &v), (StatusCode::OK, &first));
}

#[tokio::test]
async fn the_public_key_is_served_and_written_beside_the_signing_key() {
    let s = Setup::new();
    let kms = s.open();
    let config = s.config();
    let pk = kms.public_key();
    let (st, v) = call(
        &kms,
        Some(Role::Recharge),
        Method::GET,
        "/v1/public-key",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["public_key"], hex::encode(pk));
    assert_eq!(v["key_id"], hex::encode(crypto::key_id(&pk).0));
    let (st, _) = call(&kms, None, Method::GET, "/v1/public-key", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(read_kms_public_key(&config).unwrap(), pk);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config.signing_key_path()), 0o600);
    assert_eq!(mode(&config.public_key_path()) & 0o044, 0o044, "readable");
    drop(kms);
    assert_eq!(s.open().public_key(), pk, "the same key at the next start");

    // Elsewhere: the public half goes beside it, nothing key-like into the data directory.
    let secrets = tempfile::tempdir().unwrap();
    let outside = Config {
        data: s.dir.path().join("kms2"),
        signing_key: Some(secrets.path().join("signing.key")),
        ..config
    };
    let kms = Kms::open(&outside).unwrap();
    assert_eq!(
        outside.public_key_path(),
        secrets.path().join(PUBLIC_KEY_FILE)
    );
    assert_eq!(read_kms_public_key(&outside).unwrap(), kms.public_key());
    assert!(!outside.data.join(SIGNING_KEY_FILE).exists());
}

#[tokio::test]
async fn a_lost_or_other_signing_key_is_refused() {
    let s = Setup::new();
    let config = s.config();
    let kms = s.open();
    drop(kms);
    // Served once, no device yet: PSDs personalized offline may hold its public half.
    std::fs::rename(config.signing_key_path(), s.dir.path().join("kept.key")).unwrap();
    let e = Kms::open(&config).err().unwrap().to_string();
    assert!(
        e.contains(SIGNING_KEY_FILE) && e.contains("Refusing to start"),
        "{e}"
    );
    assert!(!config.signing_key_path().exists(), "no new key made");

    // Another key is refused too.
    let other = IndiciumKey::generate(&mut OsRandom);
    openpsd_service_kit::keys::write_new_private(
        &config.signing_key_path(),
        format!("{}\n", hex::encode(other.secret_bytes().as_ref())).as_bytes(),
    )
    .unwrap();
    let e = Kms::open(&config).err().unwrap().to_string();
    assert!(e.contains("another key"), "{e}");
    std::fs::remove_file(config.signing_key_path()).unwrap();

    // The right one back: it starts, and with a device registered it is refused again
    // without it.
    std::fs::rename(s.dir.path().join("kept.key"), config.signing_key_path()).unwrap();
    let kms = s.open();
    let device = IndiciumKey::generate(&mut OsRandom);
    let (st, _) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&device)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED);
    drop(kms);
    std::fs::remove_file(config.signing_key_path()).unwrap();
    let e = Kms::open(&config).err().unwrap().to_string();
    assert!(
        e.contains("1 device(s)") && e.contains("Refusing to start"),
        "{e}"
    );
}

/// The schema of the K1 suite (`git show 59fc6ca:backoffice/kms/src/lib.rs`, stored
/// format 2).
const K1_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id     TEXT PRIMARY KEY,
    k1_wrapped    BLOB NOT NULL,
    key_id        TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    licenses      TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refill_messages (
    combination_id TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL REFERENCES devices(device_id),
    license        INTEGER NOT NULL,
    amount         INTEGER NOT NULL,
    control_sum    INTEGER NOT NULL,
    refills        INTEGER NOT NULL,
    signature      TEXT NOT NULL,
    sealed_at      INTEGER NOT NULL
);
";

#[tokio::test]
async fn a_k1_database_is_migrated_its_k1_deleted_and_its_devices_refused_as_legacy() {
    let s = Setup::new();
    let config = s.config();
    std::fs::create_dir_all(&config.data).unwrap();
    let db_path = config.data.join(DB_FILE);
    let device = IndiciumKey::generate(&mut OsRandom);
    let wrapped: &[u8; 24] = b"WRAPPED-K1-MARKER-BYTES!";
    {
        let c = Connection::open(&db_path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        c.execute_batch(K1_SCHEMA).unwrap();
        c.execute(
            "INSERT INTO devices VALUES (?1, ?2, ?3, ?4, '[[1234,\"75001\"]]', 1700000000)",
            params![
                DEVICE_HEX,
                &wrapped[..],
                hex::encode(device.key_id().0),
                hex::encode(device.public_key())
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO devices VALUES ('5053440000000002', ?1, 'k', 'p', '[]', 1700000000)",
            params![&wrapped[..]],
        )
        .unwrap();
        c.execute(
            "INSERT INTO refill_messages VALUES ('0909090909090909', ?1, 1234, 100, 0, 0, 'sig', 1700000001)",
            [DEVICE_HEX],
        )
        .unwrap();
    }
    let master = config.data.join(RETIRED_MASTER_KEY_FILE);
    std::fs::write(&master, format!("{}\n", "11".repeat(32))).unwrap();

    let kms = s.open();
    {
        let c = Connection::open(&db_path).unwrap();
        let columns: Vec<String> = c
            .prepare("PRAGMA table_info(devices)")
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "k1_wrapped"), "{columns:?}");
        let suites: Vec<String> = c
            .prepare("SELECT suite FROM devices ORDER BY device_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(suites, [SUITE_K1_RETIRED, SUITE_K1_RETIRED]);
        let logged: i64 = c
            .query_row("SELECT COUNT(*) FROM refill_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(logged, 1, "the log of signed messages is kept");
    }
    for file in ["kms.sqlite", "kms.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(config.data.join(file)) {
            assert!(
                !bytes.windows(wrapped.len()).any(|w| w == wrapped),
                "a wrapped K1 is left in {file}"
            );
        }
    }
    assert!(
        master.exists(),
        "the old master key file is left to the operator"
    );

    // Its audits (of either suite), refill messages and receipts: 409 legacy_refill_suite.
    let legacy = |(st, v): (StatusCode, Value)| {
        assert_eq!(
            (st, code(&v)),
            (StatusCode::CONFLICT, "legacy_refill_suite"),
            "{v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("personalize the device again"));
    };
    let audit = audit_data(0).sign(&device);
    legacy(
        meter(
            &kms,
            "/v1/audits/verify",
            json!({"audit": hex::encode(&audit)}),
        )
        .await,
    );
    let mut v2 = vec![AUDIT_TAG, K1_AUDIT_VERSION];
    v2.extend_from_slice(&DEVICE.0);
    v2.resize(K1_AUDIT_LEN, 0);
    legacy(
        meter(
            &kms,
            "/v1/audits/verify",
            json!({"audit": hex::encode(&v2)}),
        )
        .await,
    );
    legacy(meter(&kms, "/v1/receipts", receipt_body(&audit)).await);
    legacy(
        meter(
            &kms,
            "/v1/refill-messages",
            signed(&s.rc, &combination(100)),
        )
        .await,
    );
    let (st, info) = call(
        &kms,
        Some(Role::Meter),
        Method::GET,
        &format!("/v1/devices/{DEVICE_HEX}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "its public data stays: {info}");

    // Personalized again: its new key registered over the retired row, and served.
    let renewed = IndiciumKey::generate(&mut OsRandom);
    let (st, v) = operator(
        &kms,
        Method::POST,
        "/v1/devices",
        Some(registration(&renewed)),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let audit = audit_data(0).sign(&renewed);
    let (st, v) = meter(
        &kms,
        "/v1/audits/verify",
        json!({"audit": hex::encode(&audit)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // A second start finds nothing left to migrate and keeps its key.
    let pk = kms.public_key();
    drop(kms);
    assert_eq!(s.open().public_key(), pk);
}

#[test]
fn a_k1_audit_is_recognised_by_its_shape() {
    let device = IndiciumKey::generate(&mut OsRandom);
    let v3 = audit_data(0).sign(&device);
    assert_eq!(
        v3.len() - crypto::SIGNATURE_LEN + 16,
        K1_AUDIT_LEN,
        "the same body, a 16-byte MAC instead of the signature"
    );
    assert_eq!(k1_audit_device(&v3), None);
    let mut v2 = v3[..K1_AUDIT_LEN].to_vec();
    v2[1] = K1_AUDIT_VERSION;
    assert_eq!(k1_audit_device(&v2), Some(DEVICE));
}
