//! The meter against a KMS that serves a device no more (`410 device_revoked`, `409
//! legacy_refill_suite`): stand-ins for the KMS and the RC over mutual TLS, the meter's
//! handlers called with a customer as its authentication would have found them.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use openpsd_protocol::{
    Alarms, Combination, DeviceInfo, ErrorBody, ErrorDetail, HoldRequest, HoldState, RefillMessage,
    RefillState, RefillView, Settle, Settled, SignedCombination, VerifiedAudit,
};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::tls::{server_config, ClientAuth, Role};
use serde_json::json;

use crate::{Config, Meter};

const DEVICE: &str = "5053440000000001";
const COMBINATION: &str = "0102030405060708";

/// What the stand-in KMS answers to `POST /v1/audits/verify` and `/v1/refill-messages`.
#[derive(Clone, Default)]
struct Kms {
    verify: Arc<Mutex<Option<(u16, &'static str)>>>,
    nonce: Arc<Mutex<String>>,
}

/// What the stand-in RC was asked to settle.
#[derive(Clone, Default)]
struct Rc {
    settled: Arc<Mutex<Vec<(String, String)>>>,
}

fn refusal(status: u16, code: &str) -> (StatusCode, Json<ErrorBody>) {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                step: "kms_test".to_owned(),
                message: format!("the stand-in KMS says {code}"),
            },
        }),
    )
}

fn kms_router(kms: Kms) -> Router {
    Router::new()
        .route(
            "/v1/devices/{id}",
            get(|UrlPath(id): UrlPath<String>| async move {
                Json(DeviceInfo {
                    device_id: id,
                    key_id: "00000000".to_owned(),
                    public_key: String::new(),
                    licenses: vec![(1234, "75001".to_owned())],
                    revoked_at: None,
                    reason: None,
                })
            }),
        )
        .route(
            "/v1/audits/verify",
            post(|State(k): State<Kms>| async move {
                if let Some((status, code)) = *k.verify.lock().unwrap() {
                    return Err(refusal(status, code));
                }
                let nonce = k.nonce.lock().unwrap().clone();
                Ok(Json(VerifiedAudit {
                    device_id: DEVICE.to_owned(),
                    license: 1234,
                    set: 0,
                    ar: 0,
                    dr: 0,
                    control_sum: 0,
                    pieces: 0,
                    refills: 0,
                    transferred: 0,
                    pending: 0,
                    last_combination_id: "0000000000000000".to_owned(),
                    nonce,
                    fees: 0,
                    services: 0,
                    fees_due: 0,
                    rate_table: 0,
                }))
            }),
        )
        .route(
            "/v1/refill-messages",
            post(|| async { Err::<Json<RefillMessage>, _>(refusal(410, "device_revoked")) }),
        )
        .with_state(kms)
}

fn rc_router(rc: Rc) -> Router {
    Router::new()
        .route(
            "/v1/combinations",
            post(|Json(h): Json<HoldRequest>| async move {
                Json(SignedCombination {
                    combination: Combination {
                        device_id: h.device_id,
                        license: h.license,
                        amount: h.amount,
                        control_sum: h.control_sum,
                        refills: h.refills,
                        combination_id: COMBINATION.to_owned(),
                    },
                    signature: "00".repeat(64),
                })
            }),
        )
        .route(
            "/v1/combinations/{id}/settle",
            post(
                |State(rc): State<Rc>, UrlPath(id): UrlPath<String>, Json(s): Json<Settle>| async move {
                    rc.settled
                        .lock()
                        .unwrap()
                        .push((id.clone(), s.outcome.as_str().to_owned()));
                    Json(Settled {
                        combination_id: id,
                        state: HoldState::Released,
                    })
                },
            ),
        )
        .with_state(rc)
}

struct Setup {
    _dir: tempfile::TempDir,
    meter: Meter,
    kms: Kms,
    rc: Rc,
    services: Vec<Service>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::at(&dir.path().join("pki"));
    pki.init(&Role::ALL, &[]).unwrap();
    let (kms, rc) = (Kms::default(), Rc::default());
    let serve = |role, router| {
        let pki = pki.clone();
        async move {
            let tls = server_config(&pki, role, ClientAuth::Required).unwrap();
            Service::spawn(
                "stand-in",
                bind("127.0.0.1:0", Some(tls)).await.unwrap(),
                router,
            )
            .unwrap()
        }
    };
    let kms_service = serve(Role::Kms, kms_router(kms.clone())).await;
    let rc_service = serve(Role::Recharge, rc_router(rc.clone())).await;
    let meter = Meter::open(&Config {
        data: dir.path().join("meter"),
        kms_url: kms_service.url.clone(),
        recharge_url: rc_service.url.clone(),
        pki,
        rate: 1000,
        vendor_url: None,
        pa_url: None,
        ca_url: None,
        creditor_url: None,
    })
    .unwrap();
    crate::registry::register(
        State(meter.clone()),
        Bytes::from(json!({"device_id": DEVICE, "account_id": "acct-1"}).to_string()),
    )
    .await
    .map(drop)
    .unwrap();
    Setup {
        _dir: dir,
        meter,
        kms,
        rc,
        services: vec![kms_service, rc_service],
    }
}

fn customer() -> Customer {
    Customer {
        id: "c1".to_owned(),
        account_id: "acct-1".to_owned(),
        session: true,
    }
}

async fn request(s: &Setup, id: &str) -> RefillView {
    let body = json!({"client_txn_id": id, "device_id": DEVICE, "set": 0, "amount": 2500});
    let Json(v) = crate::refill::request_refill(
        State(s.meter.clone()),
        Extension(customer()),
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap();
    v
}

async fn audit(s: &Setup, id: &str) -> Result<RefillView, openpsd_service_kit::error::ApiError> {
    crate::refill::refill_audit(
        State(s.meter.clone()),
        Extension(customer()),
        UrlPath(id.to_owned()),
        Bytes::from(json!({"audit": "a1"}).to_string()),
    )
    .await
    .map(|Json(v)| v)
}

async fn view(s: &Setup, id: &str) -> RefillView {
    crate::refill::load_refill(&s.meter, id, "test", None)
        .await
        .unwrap()
        .view
}

async fn alarms(s: &Setup) -> u64 {
    let Json(a): Json<Alarms> = crate::alarms::list_alarms(State(s.meter.clone()))
        .await
        .unwrap();
    a.raised
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_kms_serves_no_more_is_refused_with_its_code_and_no_alarm() {
    let s = setup().await;

    // The KMS refuses the audit: the customer gets its 410, the refill is over, the device
    // free for another.
    request(&s, "t1").await;
    *s.kms.verify.lock().unwrap() = Some((410, "device_revoked"));
    let e = audit(&s, "t1").await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (410, "device_revoked")
    );
    let v = view(&s, "t1").await;
    assert_eq!(v.state, RefillState::Refused);
    assert_eq!(
        v.error.as_ref().map(|e| e.code.as_str()),
        Some("device_revoked")
    );
    let again = audit(&s, "t1").await.unwrap_err();
    assert_eq!(
        (again.status.as_u16(), again.code.as_str()),
        (410, "device_revoked")
    );

    // Of the retired K1 suite: 409 legacy_refill_suite, passed on the same way.
    request(&s, "t2").await;
    *s.kms.verify.lock().unwrap() = Some((409, "legacy_refill_suite"));
    let e = audit(&s, "t2").await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (409, "legacy_refill_suite")
    );
    assert_eq!(view(&s, "t2").await.state, RefillState::Refused);

    // Revoked after the audit was accepted and the RC held the amount: the KMS refuses to
    // sign; the message never left, so the hold is released and the refill refused.
    let t3 = request(&s, "t3").await;
    *s.kms.verify.lock().unwrap() = None;
    *s.kms.nonce.lock().unwrap() = t3.nonce.clone();
    let e = audit(&s, "t3").await.unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (410, "device_revoked")
    );
    assert_eq!(
        *s.rc.settled.lock().unwrap(),
        [(COMBINATION.to_owned(), "released".to_owned())]
    );
    let v = view(&s, "t3").await;
    assert_eq!(v.state, RefillState::Refused);
    assert_eq!(v.combination_id.as_deref(), Some(COMBINATION));
    request(&s, "t4").await;

    assert_eq!(alarms(&s).await, 0, "a refusal of the KMS is no alarm");
    for svc in s.services {
        svc.stop().await;
    }
}

/// A database from before history per license (last audits and baselines per slot) opens
/// and is migrated: each baseline to the license the KMS registered for its slot (else the
/// license of the slot's last audit), each last audit to its license; alarms get theirs.
#[test]
fn an_old_database_is_migrated_to_history_per_license() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("meter");
    openpsd_service_kit::keys::private_dir(&data).unwrap();
    {
        // The tables as they were (only what the migration reads), with two devices: one
        // in the `devices` cache, one only known from its last audit.
        let c = rusqlite::Connection::open(data.join(crate::DB_FILE)).unwrap();
        c.execute_batch(
            "CREATE TABLE devices (device_id TEXT PRIMARY KEY, licenses TEXT NOT NULL,
                 fetched_at INTEGER NOT NULL);
             CREATE TABLE last_audits (device_id TEXT NOT NULL, set_index INTEGER NOT NULL,
                 license INTEGER NOT NULL, ar INTEGER NOT NULL, dr INTEGER NOT NULL,
                 control_sum INTEGER NOT NULL, pieces INTEGER NOT NULL, refills INTEGER NOT NULL,
                 last_combination_id TEXT NOT NULL, nonce TEXT NOT NULL, audit TEXT NOT NULL,
                 accepted_at INTEGER NOT NULL, PRIMARY KEY (device_id, set_index));
             CREATE TABLE baselines (device_id TEXT NOT NULL, set_index INTEGER NOT NULL,
                 control_sum INTEGER NOT NULL, refills INTEGER NOT NULL,
                 PRIMARY KEY (device_id, set_index));
             CREATE TABLE alarms (alarm_id INTEGER PRIMARY KEY AUTOINCREMENT,
                 device_id TEXT NOT NULL, set_index INTEGER NOT NULL, kind TEXT NOT NULL,
                 message TEXT NOT NULL, audit TEXT, raised_at INTEGER NOT NULL,
                 resolved_at INTEGER, note TEXT);
             INSERT INTO devices VALUES ('A', '[[4711,\"10115\"],[4712,\"80331\"]]', 0);
             INSERT INTO baselines VALUES ('A', 0, 500, 1), ('A', 1, 0, 0), ('B', 0, 70, 2);
             INSERT INTO last_audits VALUES
                 ('A', 0, 4711, 10, 990, 1000, 3, 2, 'c', 'n', 'a', 0),
                 ('B', 0, 99, 0, 70, 70, 0, 2, 'c', 'n', 'a', 0);
             INSERT INTO alarms (device_id, set_index, kind, message, raised_at)
                 VALUES ('A', 1, 'history', 'm', 0);",
        )
        .unwrap();
    }
    let pki = Pki::at(&dir.path().join("pki"));
    pki.init(&Role::ALL, &[]).unwrap();
    let config = Config {
        data: data.clone(),
        kms_url: "https://127.0.0.1:1".into(),
        recharge_url: "https://127.0.0.1:1".into(),
        pki,
        rate: 1000,
        vendor_url: None,
        pa_url: None,
        ca_url: None,
        creditor_url: None,
    };
    // Twice: the migration is idempotent.
    drop(Meter::open(&config).unwrap());
    drop(Meter::open(&config).unwrap());
    let c = rusqlite::Connection::open(data.join(crate::DB_FILE)).unwrap();
    let baselines: Vec<(String, i64, i64, i64)> = c
        .prepare(
            "SELECT device_id, license, control_sum, refills FROM license_baselines ORDER BY 1, 2",
        )
        .unwrap()
        .query_map([], |r| r.try_into())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        baselines,
        [
            ("A".into(), 4711, 500, 1),
            ("A".into(), 4712, 0, 0),
            ("B".into(), 99, 70, 2)
        ]
    );
    let audits: Vec<(String, i64, i64, i64)> = c
        .prepare("SELECT device_id, license, set_index, control_sum FROM license_audits ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.try_into())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        audits,
        [("A".into(), 4711, 0, 1000), ("B".into(), 99, 0, 70)]
    );
    let alarm: Option<i64> = c
        .query_row("SELECT license FROM alarms", [], |r| r.get(0))
        .unwrap();
    assert_eq!(alarm, Some(4712));
}
