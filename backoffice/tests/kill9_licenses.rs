//! `kill -9` of the postal authority and of the vendor in the middle of a license order
//! (seed 003, Fig. 4: host → meter `POST /v1/licenses` → vendor → PA → vendor's
//! countersignature → meter → LICENSE INSTALL), then a restart on the same data directory:
//! the host orders again with the same `client_txn_id` and the same request (the PSD
//! answers LICENSE REQUEST again with the same bytes), and
//! - the PA holds exactly one grant for the device and has numbered exactly one license;
//! - the vendor holds one request for it, its stored answer the one the host gets;
//! - every answer the host gets from then on is the same bytes, and the meter keeps it;
//! - the PSD installs it once: one set with the license, the same grant again `9A32`.
//!
//! Each service runs as its own `backoffice serve --role ...` child process (as in
//! `kill9.rs`). A pause point (`BACKOFFICE_PAUSE_AT`, `backoffice/kit/src/failpoint.rs`)
//! holds the PA or the vendor at one point of the flow; the test waits for it to say so,
//! sends SIGKILL, and starts it again on its data, at the same address.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/proc.rs"]
mod proc;

use std::path::Path;

use common::{kms_public_key_in, parties_again, Admin, Customers, Host, Psd};
use openpsd_core::psd::license::install::Install;
use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};
use openpsd_core::psd::license::SlotInfo;
use openpsd_core::types::{LicenseId, PostalCode};
use openpsd_core::Status;
use openpsd_host::ClientError;
use openpsd_protocol::license::{GrantList, LicenseGrant, MeterLicenseOrder};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::Role;
use proc::Proc;

/// The pause points, in the order an order passes them.
const VENDOR_AFTER_RECORD: &str = "vendor_license_after_record";
const PA_BEFORE_REPLY: &str = "pa_grant_before_reply";
const VENDOR_AFTER_GRANT: &str = "vendor_license_after_grant";
const VENDOR_BEFORE_REPLY: &str = "vendor_license_before_reply";

const TXN: &str = "lic-k9";

/// Which service a crash kills.
#[derive(Clone, Copy, Debug)]
enum Who {
    Pa,
    Vendor,
}

/// The five services as separate processes.
struct Chain {
    pki: Pki,
    customers: Customers,
    // Dropped (killed) in this order: the callers before the called, then the data.
    meter: Proc,
    vendor: Proc,
    pa: Proc,
    kms: Proc,
    rc: Proc,
    _dir: tempfile::TempDir,
}

impl Chain {
    /// Starts the RC, the KMS, the PA, the vendor and the meter, the PA armed at
    /// `pause_pa` and the vendor at `pause_vendor`.
    fn start(pause_pa: &str, pause_vendor: &str) -> Chain {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = openpsd_backoffice::server::local_pki(dir.path()).expect("PKI");
        let pki_arg = || vec!["--pki".to_owned(), pki.dir().display().to_string()];
        let path = |p: &Path| p.display().to_string();
        let (rc_dir, kms_dir) = (dir.path().join("recharge"), dir.path().join("kms"));
        let (pa_dir, vendor_dir) = (dir.path().join("pa"), dir.path().join("vendor"));
        let rc = Proc::start("recharge", &rc_dir, "127.0.0.1:0", &pki_arg(), "");
        let kms = Proc::start(
            "kms",
            &kms_dir,
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--recharge-public-key".into(),
                    path(&rc_dir.join("recharge-public.key")),
                ],
            ]
            .concat(),
            "",
        );
        // The vendor's key first (the PA authorizes it), then the PA (its CA is made at
        // first start), then the vendor, which checks grants against the PA's CA.
        openpsd_vendor::open_key(&vendor_dir).expect("vendor key");
        let pa = Proc::start(
            "pa",
            &pa_dir,
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--vendor-public-key".into(),
                    path(&vendor_dir.join(openpsd_vendor::PUBLIC_KEY_FILE)),
                ],
            ]
            .concat(),
            pause_pa,
        );
        let vendor = Proc::start(
            "vendor",
            &vendor_dir,
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--kms".into(),
                    kms.url.clone(),
                    "--pa".into(),
                    pa.url.clone(),
                    "--pa-ca".into(),
                    path(&pa_dir.join(openpsd_pa::CA_FILE)),
                ],
            ]
            .concat(),
            pause_vendor,
        );
        let meter = Proc::start(
            "meter",
            &dir.path().join("meter"),
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--kms".into(),
                    kms.url.clone(),
                    "--recharge".into(),
                    rc.url.clone(),
                    "--vendor".into(),
                    vendor.url.clone(),
                ],
            ]
            .concat(),
            "",
        );
        Chain {
            _dir: dir,
            pki,
            customers: Customers::default(),
            meter,
            vendor,
            pa,
            kms,
            rc,
        }
    }

    fn parties(&self) -> (Host, Admin) {
        parties_again(
            &self.meter.url,
            &self.kms.url,
            &self.rc.url,
            &self.pki,
            &self.customers,
        )
    }

    fn proc(&mut self, who: Who) -> &mut Proc {
        match who {
            Who::Pa => &mut self.pa,
            Who::Vendor => &mut self.vendor,
        }
    }

    /// Card `n`, personalized for this back office's KMS, vendor and PA.
    fn psd(&self, n: u32) -> Psd {
        let vendor_pk = openpsd_vendor::open_key(&self.vendor.data).expect("vendor key");
        let pa = card_sim::personalize::read_postal_authority(&self.pa.data).expect("PA block");
        Psd::licensed_by(n, &kms_public_key_in(&self.kms.data), vendor_pk, pa)
    }

    /// The PA's grants to `device`, as its operator lists them.
    async fn pa_grants(&self, device: &str) -> GrantList {
        common::Client::new(&self.pa.url, &self.pki, Some(Role::Operator))
            .get(&format!("/v1/grants?device={device}"))
            .await
            .expect("GET /v1/grants")
    }

    /// `sql` (one row, one column) on a service's database, opened beside the running
    /// service (WAL: readers do not disturb it).
    fn query<T: rusqlite::types::FromSql>(&self, db: &Path, sql: &str, device: &str) -> T {
        let c = rusqlite::Connection::open(db).expect("open database");
        c.query_row(sql, [device], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", db.display()))
    }

    fn pa_db(&self) -> std::path::PathBuf {
        self.pa.data.join(openpsd_pa::DB_FILE)
    }

    fn vendor_db(&self) -> std::path::PathBuf {
        self.vendor.data.join(openpsd_vendor::DB_FILE)
    }

    fn meter_db(&self) -> std::path::PathBuf {
        self.meter.data.join(openpsd_meter::DB_FILE)
    }
}

/// The one license order of a test: its PSD, its customer's meter client and its order.
struct Order {
    psd: Psd,
    acme: common::Client,
    device: String,
    request: Vec<u8>,
    order: MeterLicenseOrder,
}

fn ask() -> LicenseAsk {
    LicenseAsk {
        license: LicenseId(0),
        origin: PostalCode::new(b"53113").unwrap(),
    }
}

/// Card `n` registered to `acme` (KMS and meter), its LICENSE REQUEST made.
async fn order(chain: &Chain, n: u32) -> Order {
    let (host, admin) = chain.parties();
    let mut psd = chain.psd(n);
    admin.register(&psd).await;
    let request: LicenseRequest = psd.client.license_request(&ask(), false).unwrap();
    let request = request.encode();
    let device = psd.device_id();
    Order {
        acme: host.as_customer("acme"),
        order: MeterLicenseOrder {
            client_txn_id: TXN.into(),
            device_id: device.clone(),
            request: hex::encode(&request),
        },
        psd,
        device,
        request,
    }
}

/// Sends the order while `who` is armed at `point`; kills it there and starts it again
/// armed at `next`; the host's call fails (`503`: the meter is up, the service it needs
/// went away) and nothing reached the meter.
async fn crash(chain: &mut Chain, o: &Order, who: Who, point: &str, next: &str) {
    let call = tokio::spawn({
        let (acme, order) = (o.acme.clone(), o.order.clone());
        async move { acme.post_bytes("/v1/licenses", &order).await }
    });
    chain.proc(who).wait_paused(point);
    chain.proc(who).kill9_and_restart(next);
    let (status, body) = call.await.unwrap().expect("the meter answers");
    assert_eq!(
        status,
        503,
        "{who:?} killed at {point}: {}",
        String::from_utf8_lossy(&body)
    );

    // What each side holds after this crash.
    let granted = point != VENDOR_AFTER_RECORD;
    let grants = chain.pa_grants(&o.device).await.grants;
    assert_eq!(
        grants.len(),
        usize::from(granted),
        "after {point}: {grants:?}"
    );
    let answered: bool = chain.query(
        &chain.vendor_db(),
        "SELECT answer IS NOT NULL FROM requests WHERE device_id = ?1",
        &o.device,
    );
    assert_eq!(answered, point == VENDOR_BEFORE_REPLY, "after {point}");
    let e = o
        .acme
        .get::<LicenseGrant>(&format!("/v1/licenses/{TXN}"))
        .await
        .unwrap_err();
    assert_eq!(e.status, 404, "after {point}: the meter has no grant yet");
}

/// The host orders again (same `client_txn_id`, the PSD's same request) and installs; then
/// everything the module comment promises.
async fn finish(chain: &Chain, o: &mut Order) {
    // The PSD answers its pending request again with the same bytes.
    let again = o.psd.client.license_request(&ask(), false).unwrap();
    assert_eq!(again.encode(), o.request, "the same request again");

    let (status, bytes) = o.acme.post_bytes("/v1/licenses", &o.order).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let (status2, bytes2) = o.acme.post_bytes("/v1/licenses", &o.order).await.unwrap();
    assert_eq!(status2, 200);
    assert_eq!(bytes2, bytes, "the same order answers the same bytes");
    let grant: LicenseGrant = serde_json::from_slice(&bytes).unwrap();
    let resumed: LicenseGrant = o.acme.get(&format!("/v1/licenses/{TXN}")).await.unwrap();
    assert_eq!(resumed, grant, "the meter keeps that grant");

    // The PA: one grant for this device, the one answered; one license numbered.
    let grants = chain.pa_grants(&o.device).await.grants;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        (grants[0].serial.as_str(), grants[0].license),
        (grant.fields.serial.as_str(), grant.fields.license)
    );
    assert_eq!(grant.fields.license, 1, "the PA's first license number");
    let pa_sig: String = chain.query(
        &chain.pa_db(),
        "SELECT pa_signature FROM grants WHERE device_id = ?1",
        &o.device,
    );
    assert_eq!(
        pa_sig, grant.pa_signature,
        "the stored grant is the one answered"
    );
    let (licenses, highest): (i64, i64) = {
        let c = rusqlite::Connection::open(chain.pa_db()).unwrap();
        c.query_row("SELECT COUNT(*), MAX(license) FROM licenses", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    assert_eq!(
        (licenses, highest),
        (1, 1),
        "no second license number consumed"
    );

    // The vendor: one request from this device, its stored answer the one installed.
    let requests: i64 = chain.query(
        &chain.vendor_db(),
        "SELECT COUNT(*) FROM requests WHERE device_id = ?1",
        &o.device,
    );
    assert_eq!(requests, 1);
    let stored: String = chain.query(
        &chain.vendor_db(),
        "SELECT answer FROM requests WHERE device_id = ?1",
        &o.device,
    );
    assert_eq!(
        serde_json::from_str::<LicenseGrant>(&stored).unwrap(),
        grant
    );
    // The meter: one order for this device, holding that grant.
    let orders: i64 = chain.query(
        &chain.meter_db(),
        "SELECT COUNT(*) FROM license_orders WHERE device_id = ?1 AND grant_json IS NOT NULL",
        &o.device,
    );
    assert_eq!(orders, 1);

    // The PSD installs it once (after the two personalized sets); the same grant again,
    // from either answer, is refused as used.
    let install = Install::decode(&hex::decode(&grant.install).unwrap()).unwrap();
    let (slot, _, license) = o.psd.client.license_install(&install).unwrap();
    assert_eq!((slot.0, license.0), (2, grant.fields.license));
    let second: LicenseGrant = serde_json::from_slice(&bytes2).unwrap();
    for g in [&grant, &second] {
        let i = Install::decode(&hex::decode(&g.install).unwrap()).unwrap();
        assert!(
            matches!(
                o.psd.client.license_install(&i),
                Err(ClientError::Refused(_, _, Status::GrantAlreadyUsed))
            ),
            "installed once only (9A32)"
        );
    }
    let info = o.psd.client.license_info().unwrap();
    let sets = info
        .slots
        .iter()
        .filter(|s| matches!(s, SlotInfo::Set { license: l, .. } if l.0 == grant.fields.license))
        .count();
    assert_eq!(sets, 1, "one set with the license: {info:?}");

    // Ordered once more after the install: the same bytes, still one grant.
    let (_, bytes3) = o.acme.post_bytes("/v1/licenses", &o.order).await.unwrap();
    assert_eq!(bytes3, bytes);
    assert_eq!(chain.pa_grants(&o.device).await.grants.len(), 1);
}

/// One crash of `who` at `point` in an order of card `n`, then the order finished.
async fn crash_once(n: u32, who: Who, point: &str) {
    let (pa, vendor) = match who {
        Who::Pa => (point, ""),
        Who::Vendor => ("", point),
    };
    let mut chain = Chain::start(pa, vendor);
    let mut o = order(&chain, n).await;
    crash(&mut chain, &o, who, point, "").await;
    finish(&chain, &mut o).await;
}

/// The PA committed the grant and died before answering the vendor: the retry finds it by
/// its request and answers the same certificate; no second grant, no second number.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_pa_after_storing_the_grant() {
    crash_once(201, Who::Pa, PA_BEFORE_REPLY).await;
}

/// The vendor recorded the request and died before forwarding it: the retry forwards it
/// once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_vendor_after_recording_the_request() {
    crash_once(202, Who::Vendor, VENDOR_AFTER_RECORD).await;
}

/// The PA granted and the vendor died before countersigning: the retry gets the PA's
/// stored grant and countersigns it (RFC 6979: the same bytes as any other time).
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_vendor_after_the_pa_granted() {
    crash_once(203, Who::Vendor, VENDOR_AFTER_GRANT).await;
}

/// The vendor stored its countersigned answer and died before answering the meter: the
/// retry answers the stored one without asking the PA.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_vendor_after_storing_the_answer() {
    crash_once(204, Who::Vendor, VENDOR_BEFORE_REPLY).await;
}

/// One order through a crash at every pause point in turn (vendor, PA, vendor, vendor):
/// four restarts, one grant, one install.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_every_pause_point_in_turn_then_install_once() {
    let mut chain = Chain::start(PA_BEFORE_REPLY, VENDOR_AFTER_RECORD);
    let mut o = order(&chain, 205).await;
    crash(
        &mut chain,
        &o,
        Who::Vendor,
        VENDOR_AFTER_RECORD,
        VENDOR_AFTER_GRANT,
    )
    .await;
    crash(&mut chain, &o, Who::Pa, PA_BEFORE_REPLY, "").await;
    crash(
        &mut chain,
        &o,
        Who::Vendor,
        VENDOR_AFTER_GRANT,
        VENDOR_BEFORE_REPLY,
    )
    .await;
    crash(&mut chain, &o, Who::Vendor, VENDOR_BEFORE_REPLY, "").await;
    finish(&chain, &mut o).await;
}
