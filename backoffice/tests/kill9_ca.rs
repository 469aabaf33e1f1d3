//! `kill -9` of the certificate authority in the middle of an issuance and of a revocation
//! (seed 004 Fig. 5 steps 510-518 and Fig. 6 step 604, `docs/ca.md`), then a restart on
//! the same data directory and at the same addresses:
//! - killed after the certificate's row was committed and before the answer: the meter's
//!   same request again answers the stored certificate (same serial, same DER), and the
//!   CA holds one certificate for the (device, generation);
//! - killed before the commit: nothing is stored, and the same request issues normally;
//! - killed after a revocation was committed and before the answer: the CRL (on the public
//!   listener, even one cached before the revocation) and OCSP say revoked, at the stored
//!   time, and a second revocation answers the first one.
//!
//! The CA runs as its own `backoffice serve --role ca` child process, beside the KMS (it
//! reads the device's key there) and the recharging center (whose public key the KMS
//! needs), as in `kill9.rs` and `kill9_licenses.rs`. A pause point (`BACKOFFICE_PAUSE_AT`,
//! `backoffice/kit/src/failpoint.rs`) holds the CA at one point of the flow; the test waits
//! for it to say so, sends SIGKILL, and starts it again on its data. The test calls the CA
//! as the meter (the meter's certificate) and as the operator, with the attestation a PSD's
//! GENERATE KEY answers (as in `ca.rs`).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/proc.rs"]
mod proc;

use std::path::PathBuf;

use common::{kms_public_key_in, Client, Psd};
use der::asn1::OctetString;
use der::{Decode as _, Encode as _};
use openpsd_ca::ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, Request, ResponseStatus,
    TbsRequest,
};
use openpsd_core::crypto::{sha256, IndiciumKey};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::types::DeviceId;
use openpsd_protocol::ca::{
    CertificateAnswer, CertificateRequest, CertificateRevocation, CertificateView,
};
use openpsd_service_kit::codec::OsRandom;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::Role;
use proc::Proc;
use x509_cert::crl::CertificateList;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use x509_cert::Certificate;

/// The pause points, in the order an issuance and a revocation pass them.
const ISSUE_BEFORE_COMMIT: &str = "ca_issue_before_commit";
const ISSUE_AFTER_COMMIT: &str = "ca_issue_after_commit";
const REVOKE_AFTER_COMMIT: &str = "ca_revoke_after_commit";

const REASON: &str = "key compromise";

/// The recharging center, the KMS and the CA as separate processes.
struct Stack {
    pki: Pki,
    /// The CA's public listener, `http://127.0.0.1:PORT` (kept across restarts: the
    /// certificates name it).
    public: String,
    // Dropped (killed) in this order: the caller before the called, then the data.
    ca: Proc,
    kms: Proc,
    /// Kept running for the KMS (its public key file).
    _rc: Proc,
    _dir: tempfile::TempDir,
}

/// A loopback port free at the moment (the CA's public listener is started on it, and
/// started again on it after each kill).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

impl Stack {
    /// Starts the RC, the KMS and the CA, the CA armed at `pause`.
    fn start(pause: &str) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = openpsd_backoffice::server::local_pki(dir.path()).expect("PKI");
        let pki_arg = || vec!["--pki".to_owned(), pki.dir().display().to_string()];
        let (rc_dir, kms_dir) = (dir.path().join("recharge"), dir.path().join("kms"));
        let rc = Proc::start("recharge", &rc_dir, "127.0.0.1:0", &pki_arg(), "");
        let kms = Proc::start(
            "kms",
            &kms_dir,
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--recharge-public-key".into(),
                    rc_dir.join("recharge-public.key").display().to_string(),
                ],
            ]
            .concat(),
            "",
        );
        let public_listen = format!("127.0.0.1:{}", free_port());
        let ca = Proc::start(
            "ca",
            &dir.path().join("ca"),
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--kms".into(),
                    kms.url.clone(),
                    "--public-listen".into(),
                    public_listen.clone(),
                ],
            ]
            .concat(),
            pause,
        );
        openpsd_service_kit::tls::install_provider();
        Stack {
            pki,
            public: format!("http://{public_listen}"),
            ca,
            kms,
            _rc: rc,
            _dir: dir,
        }
    }

    /// The CA as the meter calls it.
    fn meter(&self) -> Client {
        Client::new(&self.ca.url, &self.pki, Some(Role::Meter))
    }

    /// The CA as the operator calls it.
    fn operator(&self) -> Client {
        Client::new(&self.ca.url, &self.pki, Some(Role::Operator))
    }

    fn db(&self) -> PathBuf {
        self.ca.data.join(openpsd_ca::DB_FILE)
    }

    /// Card `n` personalized for this KMS and registered there, and the meter's request
    /// for a certificate of a new postmark key (generation 1) of it.
    async fn card(&self, n: u32) -> Ask {
        let psd = Psd::new(n, 0, &kms_public_key_in(&self.kms.data));
        let _: serde_json::Value = Client::new(&self.kms.url, &self.pki, Some(Role::Operator))
            .post("/v1/devices", &psd.secrets)
            .await
            .expect("register the device at the KMS");
        let device = psd.device_id();
        let key = IndiciumKey::generate(&mut OsRandom);
        let attestation = KeyAttestation {
            device: DeviceId(hex::decode(&device).unwrap().try_into().unwrap()),
            slot: 1,
            purpose: Purpose::Postmark,
            generation: 1,
            public_key: key.public_key(),
        }
        .sign(&psd.dumped_key(), &key);
        Ask {
            request: CertificateRequest {
                attestation: hex::encode(attestation),
                account_id: "acct-k9".into(),
                username: "alice".into(),
            },
            device,
        }
    }

    /// The CA's rows for `device`: (serial, DER, revoked_at, reason), as stored.
    fn rows(&self, device: &str) -> Vec<Stored> {
        let c = rusqlite::Connection::open(self.db()).expect("open ca.sqlite");
        let mut s = c
            .prepare(
                "SELECT serial, certificate, revoked_at, reason FROM certificates
                 WHERE device_id = ?1 ORDER BY serial",
            )
            .unwrap();
        s.query_map([device], |r| {
            Ok(Stored {
                serial: r.get(0)?,
                der: r.get(1)?,
                revoked_at: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// Every certificate the CA holds.
    fn count(&self) -> i64 {
        let c = rusqlite::Connection::open(self.db()).expect("open ca.sqlite");
        c.query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
            .unwrap()
    }

    /// The CRL from the public listener: its entries (serial hex, revocation time).
    async fn crl(&self) -> Vec<(String, u64)> {
        let r = reqwest::get(format!("{}/v1/ca/crl.der", self.public))
            .await
            .expect("GET /v1/ca/crl.der");
        assert!(r.status().is_success(), "CRL: {}", r.status());
        let der = r.bytes().await.unwrap();
        let list: CertificateList = CertificateList::from_der(&der).expect("a CRL");
        list.tbs_cert_list
            .revoked_certificates
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    hex::encode(e.serial_number.as_bytes()),
                    e.revocation_date.to_unix_duration().as_secs(),
                )
            })
            .collect()
    }

    /// What the OCSP responder on the public listener says of `serial` (SHA-256 CertID
    /// of the CA certificate `ca_der`).
    async fn ocsp(&self, ca_der: &[u8], serial: &str) -> CertStatus {
        let ca = Certificate::from_der(ca_der).unwrap();
        let tbs = ca.tbs_certificate();
        let name = tbs.subject().to_der().unwrap();
        let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
        let id = CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1"),
                parameters: None,
            },
            issuer_name_hash: OctetString::new(sha256(&name).to_vec()).unwrap(),
            issuer_key_hash: OctetString::new(sha256(key).to_vec()).unwrap(),
            serial_number: SerialNumber::new(&hex::decode(serial).unwrap()).unwrap(),
        };
        let req = OcspRequest {
            tbs_request: TbsRequest {
                version: None,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: id,
                    single_request_extensions: None,
                }],
                request_extensions: None,
            },
            optional_signature: None,
        };
        let r = reqwest::Client::new()
            .post(format!("{}/ocsp", self.public))
            .header("content-type", "application/ocsp-request")
            .body(req.to_der().unwrap())
            .send()
            .await
            .expect("POST /ocsp");
        assert!(r.status().is_success(), "OCSP: {}", r.status());
        let answer = OcspResponse::from_der(&r.bytes().await.unwrap()).expect("an OCSP answer");
        assert_eq!(answer.response_status, ResponseStatus::Successful);
        let basic = BasicOcspResponse::from_der(answer.response_bytes.unwrap().response.as_bytes())
            .unwrap();
        let mut single = basic.tbs_response_data.responses;
        assert_eq!(single.len(), 1);
        single.remove(0).cert_status
    }
}

/// The meter's request of a test, for one device.
struct Ask {
    request: CertificateRequest,
    device: String,
}

/// A certificate's row in `ca.sqlite`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored {
    serial: String,
    der: Vec<u8>,
    revoked_at: Option<i64>,
    reason: Option<String>,
}

/// `POST /v1/certificates` as the meter: status and the answer's bytes.
async fn issue(stack: &Stack, ask: &Ask) -> (u16, Vec<u8>) {
    stack
        .meter()
        .post_bytes("/v1/certificates", &ask.request)
        .await
        .expect("the CA answers")
}

/// Sends the request while the CA is armed at `point`, kills it there and starts it again
/// armed at `next`: no answer reached the meter.
async fn crash_issue(stack: &mut Stack, ask: &Ask, point: &str, next: &str) {
    let call = tokio::spawn({
        let (meter, request) = (stack.meter(), ask.request.clone());
        async move { meter.post_bytes("/v1/certificates", &request).await }
    });
    stack.ca.wait_paused(point);
    stack.ca.kill9_and_restart(next);
    let answer = call.await.unwrap();
    assert!(answer.is_err(), "killed at {point}, yet {answer:?}");
}

/// The same request again after the crash: `200`, the certificate stored (one row for the
/// device, its serial and DER the answer's), and once more the same bytes.
async fn issue_again(stack: &Stack, ask: &Ask) -> CertificateAnswer {
    let (status, bytes) = issue(stack, ask).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let answer: CertificateAnswer = serde_json::from_slice(&bytes).unwrap();
    let rows = stack.rows(&ask.device);
    assert_eq!(rows.len(), 1, "one certificate per (device, generation)");
    assert_eq!(rows[0].serial, answer.serial);
    assert_eq!(rows[0].der, hex::decode(&answer.certificate).unwrap());
    let cert = Certificate::from_der(&rows[0].der).unwrap();
    assert_eq!(
        hex::encode(cert.tbs_certificate().serial_number().as_bytes()),
        answer.serial
    );
    let (status2, bytes2) = issue(stack, ask).await;
    assert_eq!(status2, 200);
    assert_eq!(bytes2, bytes, "the same request answers the same bytes");
    assert_eq!(stack.count(), 1, "no second certificate");
    answer
}

/// Revokes `serial` as the operator while the CA is armed at `REVOKE_AFTER_COMMIT`, kills
/// it there and starts it again unarmed: no answer came; the revocation is stored.
async fn crash_revoke(stack: &mut Stack, device: &str, serial: &str) -> Stored {
    let call = tokio::spawn({
        let (operator, path) = (
            stack.operator(),
            format!("/v1/certificates/{serial}/revoke"),
        );
        async move {
            let body = CertificateRevocation {
                reason: REASON.into(),
            };
            operator.post_bytes(&path, &body).await
        }
    });
    stack.ca.wait_paused(REVOKE_AFTER_COMMIT);
    stack.ca.kill9_and_restart("");
    let answer = call.await.unwrap();
    assert!(
        answer.is_err(),
        "killed at {REVOKE_AFTER_COMMIT}, yet {answer:?}"
    );
    let mut rows = stack.rows(device);
    assert_eq!(rows.len(), 1);
    let row = rows.remove(0);
    assert_eq!(row.serial, serial);
    assert!(row.revoked_at.is_some(), "the revocation was committed");
    assert_eq!(row.reason.as_deref(), Some(REASON));
    row
}

/// After the revocation killed before its answer: the CRL and OCSP say revoked at the
/// stored time; a second revocation (the meter's, another reason) answers the first, a
/// third the same bytes; the same issuance request still answers the same certificate.
async fn revoked_everywhere(stack: &Stack, ask: &Ask, answer: &CertificateAnswer, row: &Stored) {
    let at = u64::try_from(row.revoked_at.unwrap()).unwrap();
    let crl = stack.crl().await;
    assert_eq!(crl, vec![(answer.serial.clone(), at)], "the CRL lists it");
    let ca_der = hex::decode(&answer.ca_certificate).unwrap();
    match stack.ocsp(&ca_der, &answer.serial).await {
        CertStatus::Revoked(info) => {
            assert_eq!(info.revocation_time.to_unix_duration().as_secs(), at);
        }
        other => panic!("OCSP: {other:?}"),
    }

    let path = format!("/v1/certificates/{}/revoke", answer.serial);
    let again = CertificateRevocation {
        reason: "lost".into(),
    };
    let (status, bytes) = stack.meter().post_bytes(&path, &again).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let view: CertificateView = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (
            view.serial.as_str(),
            view.device_id.as_str(),
            view.revoked_at,
            view.reason.as_deref()
        ),
        (
            answer.serial.as_str(),
            ask.device.as_str(),
            Some(at),
            Some(REASON)
        ),
        "the second revocation answers the first"
    );
    let (_, bytes2) = stack.operator().post_bytes(&path, &again).await.unwrap();
    assert_eq!(bytes2, bytes, "and a third the same bytes");
    assert_eq!(stack.rows(&ask.device), vec![row.clone()]);
    assert_eq!(stack.crl().await, crl, "still the same CRL entries");

    let (status, bytes) = issue(stack, ask).await;
    assert_eq!(status, 200);
    let same: CertificateAnswer = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(&same, answer, "the stored certificate, revoked or not");
    assert_eq!(stack.count(), 1);
}

/// The CA committed the certificate and died before answering the meter: the retry finds
/// it by its attestation and answers the same certificate; no second row.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ca_after_committing_the_certificate() {
    let mut stack = Stack::start(ISSUE_AFTER_COMMIT);
    let ask = stack.card(301).await;
    crash_issue(&mut stack, &ask, ISSUE_AFTER_COMMIT, "").await;
    let stored = stack.rows(&ask.device);
    assert_eq!(stored.len(), 1, "committed before the kill");
    let answer = issue_again(&stack, &ask).await;
    assert_eq!(
        stack.rows(&ask.device),
        stored,
        "the row committed before the kill"
    );
    let ca_der = hex::decode(&answer.ca_certificate).unwrap();
    assert!(matches!(
        stack.ocsp(&ca_der, &answer.serial).await,
        CertStatus::Good(_)
    ));
}

/// The CA signed the certificate and died before its transaction: nothing stored, and the
/// retry issues (a new serial) normally.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ca_before_committing_the_certificate() {
    let mut stack = Stack::start(ISSUE_BEFORE_COMMIT);
    let ask = stack.card(302).await;
    crash_issue(&mut stack, &ask, ISSUE_BEFORE_COMMIT, "").await;
    assert!(stack.rows(&ask.device).is_empty(), "nothing stored");
    assert_eq!(stack.count(), 0);
    let answer = issue_again(&stack, &ask).await;
    let ca_der = hex::decode(&answer.ca_certificate).unwrap();
    assert!(matches!(
        stack.ocsp(&ca_der, &answer.serial).await,
        CertStatus::Good(_)
    ));
    assert!(stack.crl().await.is_empty());
}

/// The CA committed a revocation and died before answering: the CRL (one cached before the
/// revocation included) and OCSP say revoked, and a second revocation answers the first.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ca_after_committing_a_revocation() {
    let mut stack = Stack::start(REVOKE_AFTER_COMMIT);
    let ask = stack.card(303).await;
    let (status, bytes) = issue(&stack, &ask).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let answer: CertificateAnswer = serde_json::from_slice(&bytes).unwrap();
    // A CRL cached before the revocation, and OCSP good.
    assert!(stack.crl().await.is_empty());
    let ca_der = hex::decode(&answer.ca_certificate).unwrap();
    assert!(matches!(
        stack.ocsp(&ca_der, &answer.serial).await,
        CertStatus::Good(_)
    ));
    let row = crash_revoke(&mut stack, &ask.device, &answer.serial).await;
    revoked_everywhere(&stack, &ask, &answer, &row).await;
}

/// One card through a crash at every pause point in turn (before the commit, after it, after
/// the revocation): three restarts, one certificate, revoked once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ca_at_every_pause_point_in_turn() {
    let mut stack = Stack::start(ISSUE_BEFORE_COMMIT);
    let ask = stack.card(304).await;
    crash_issue(&mut stack, &ask, ISSUE_BEFORE_COMMIT, ISSUE_AFTER_COMMIT).await;
    assert_eq!(stack.count(), 0, "nothing stored before the commit");
    crash_issue(&mut stack, &ask, ISSUE_AFTER_COMMIT, REVOKE_AFTER_COMMIT).await;
    let stored = stack.rows(&ask.device);
    assert_eq!(stored.len(), 1, "committed before the kill");
    let answer = issue_again(&stack, &ask).await;
    assert_eq!(stored[0].serial, answer.serial);
    let row = crash_revoke(&mut stack, &ask.device, &answer.serial).await;
    revoked_everywhere(&stack, &ask, &answer, &row).await;
}
