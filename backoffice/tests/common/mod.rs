//! Test and benchmark harness: real PSD cards (the core applet on an in-memory store,
//! personalized by card-sim's personalization station, driven through the host library's
//! `PsdClient`) and a host that talks HTTP to the meter server like `openpsd refill` does,
//! plus admin calls to the KMS and the recharging center and the reconciliation check.
#![allow(dead_code)] // each test binary uses a different part

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use card_sim::personalize::{self, Request, Secrets};
use card_sim::sim::SimCard;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::device::LicenseSlot;
use openpsd_core::psd::registers::Registers;
use openpsd_core::store::{MemStore, Nvm};
use openpsd_core::types::{Amount, DeviceId, LicenseId, PostalCode, RegisterSetIndex};
use openpsd_core::Status;
use openpsd_host::{ClientError, Link, LinkError, PsdClient};
use openpsd_protocol::ErrorBody;
use openpsd_protocol::{
    Account, Alarms, Baseline, Credentials, CustomerView, Deposit, InspectionRequest,
    InspectionView, Ledger, MeterDevice, MeterRegistration, RefillRequest, RefillView, Resolve,
    Session,
};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::Role;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The simulated card.
pub type Sim = SimCard<MemStore, SeededPlatform>;

struct Shared(Rc<RefCell<Sim>>);

impl Link for Shared {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let mut reply = Vec::new();
        card_sim::sim::SimulatedCard::handle(&mut *self.0.borrow_mut(), apdu, &mut reply);
        Ok(reply)
    }
}

/// A personalized PSD in memory, and what personalization gave the back office.
pub struct Psd {
    sim: Rc<RefCell<Sim>>,
    /// The host library's client for it.
    pub client: PsdClient,
    /// The personalization secrets (the KMS registration body).
    pub secrets: Secrets,
    seed: u64,
}

fn platform(seed: u64) -> SeededPlatform {
    let mut p = SeededPlatform::new(seed);
    // The card's clock agrees with the back office's, so receipts and indicia line up
    // (and postmarks carry the back office's time).
    p.today = Some(openpsd_service_kit::codec::today_utc());
    p.now = u64::try_from(openpsd_service_kit::db::now_secs()).ok();
    p
}

impl Psd {
    /// Card number `n`: device ID `PSD` + n, two licenses, DR limit 1,000,000.00,
    /// personalized for the KMS whose public key is `kms`.
    pub fn new(n: u32, inspection_days: u16, kms: &[u8; 65]) -> Psd {
        Psd::personalized(n, inspection_days, kms, None)
    }

    /// Card number `n` personalized for licenses (seed 003): the back office's vendor key
    /// and postal authority block, and the two licenses of [`Psd::new`].
    pub fn licensed(n: u32, h: &openpsd_backoffice::server::Handles) -> Psd {
        Psd::personalized(
            n,
            0,
            &h.kms_public_key,
            Some((h.vendor_public_key, h.postal_authority.clone())),
        )
    }

    /// [`Psd::licensed`] for services running apart (the crash tests' child processes):
    /// the KMS key, the vendor key and the postal authority block as read from their data
    /// directories.
    pub fn licensed_by(
        n: u32,
        kms: &[u8; 65],
        vendor_public_key: [u8; 65],
        postal_authority: openpsd_core::psd::device::PostalAuthority,
    ) -> Psd {
        Psd::personalized(n, 0, kms, Some((vendor_public_key, postal_authority)))
    }

    fn personalized(
        n: u32,
        inspection_days: u16,
        kms: &[u8; 65],
        licensing: Option<([u8; 65], openpsd_core::psd::device::PostalAuthority)>,
    ) -> Psd {
        let seed = 0x5EED_0000 + u64::from(n);
        let mut sim = Sim::new(MemStore::new(), platform(seed)).expect("blank card");
        let mut id = *b"PSD\0\0\0\0\0";
        id[4..].copy_from_slice(&n.to_be_bytes());
        let (vendor_public_key, postal_authority) = licensing.unzip();
        let req = Request {
            device: Some(DeviceId(id)),
            kms_public_key: *kms,
            vendor_public_key,
            max_postage: Amount(10_000),
            max_dr: Amount(100_000_000),
            inspection_days,
            licenses: vec![
                LicenseSlot {
                    license: LicenseId(4711),
                    origin: PostalCode::new(b"10115").expect("code"),
                },
                LicenseSlot {
                    license: LicenseId(4712),
                    origin: PostalCode::new(b"80331").expect("code"),
                },
            ],
            postal_authority,
        };
        let mut station = SeededPlatform::new(seed ^ 0xFFFF);
        let (_, secrets) =
            personalize::personalize(&mut sim, &mut station, &req).expect("personalize");
        let sim = Rc::new(RefCell::new(sim));
        let mut client = PsdClient::new(Box::new(Shared(Rc::clone(&sim))));
        client.select().expect("select");
        Psd {
            sim,
            client,
            secrets,
            seed,
        }
    }

    /// Device ID, hex as the back office spells it.
    pub fn device_id(&self) -> String {
        self.secrets.device_id.clone()
    }

    /// Registers of a set.
    pub fn registers(&mut self, set: u8) -> Registers {
        self.client
            .registers(RegisterSetIndex(set))
            .expect("READ REGISTERS")
    }

    /// Control sum of every set together: what the back office credited this card.
    pub fn credited(&mut self) -> u64 {
        (0..2).map(|s| self.registers(s).control_sum.0).sum()
    }

    /// AUDIT with a nonce (hex), answered hex.
    pub fn audit(&mut self, set: u8, nonce_hex: &str) -> String {
        let nonce: [u8; 16] = hex::decode(nonce_hex)
            .expect("nonce hex")
            .try_into()
            .expect("16 bytes");
        hex::encode(
            self.client
                .audit(RegisterSetIndex(set), &nonce)
                .expect("AUDIT"),
        )
    }

    /// REFILL with a message (hex).
    pub fn refill(&mut self, set: u8, message_hex: &str) -> Result<Registers, Status> {
        let msg = hex::decode(message_hex).expect("message hex");
        self.client
            .refill(RegisterSetIndex(set), &msg)
            .map_err(card_status)
    }

    /// RECEIPT (hex); answers the last inspection date's bytes.
    pub fn receipt(&mut self, receipt_hex: &str) -> Result<Vec<u8>, Status> {
        let msg = hex::decode(receipt_hex).expect("receipt hex");
        self.client.receipt(&msg).map_err(card_status)
    }

    /// Seed 004, step 257: the meter's rate tables and trust anchors for this device, as
    /// its owner `owner` gets them, loaded into the PSD (each must load).
    pub async fn load_updates(&mut self, owner: &Client) {
        let updates: openpsd_protocol::vendor::DeviceUpdates = owner
            .get(&format!("/v1/devices/{}/updates", self.device_id()))
            .await
            .expect("updates");
        for t in &updates.rate_tables {
            self.client
                .load_rate_table(&hex::decode(t).expect("hex"))
                .expect("LOAD RATE TABLE");
        }
        for a in &updates.anchors {
            self.client
                .load_trust_anchor(&hex::decode(a).expect("hex"))
                .expect("LOAD TRUST ANCHOR");
        }
    }

    /// An indicium of `postage` on set 0 dated today.
    pub fn frank(&mut self, txn: u64, postage: u64) -> Result<(), Status> {
        let req = openpsd_core::psd::indicium::IndiciumRequest {
            transaction: openpsd_core::types::TransactionId(txn.to_be_bytes()),
            postage: Amount(postage),
            date: openpsd_service_kit::codec::today_utc(),
            rate: openpsd_core::types::RateCategory(1),
            origin: PostalCode::new(b"10115").expect("code"),
            destination: PostalCode::new(b"20095").expect("code"),
        };
        self.client
            .issue_indicium(RegisterSetIndex(0), &req)
            .map(drop)
            .map_err(card_status)
    }

    /// An indicium of `postage` on set 0 dated `days_ahead` days after today: the label's
    /// bytes (signed bytes ‖ signature), as the post office scans them.
    pub fn label(&mut self, txn: u64, postage: u64, days_ahead: u64) -> Result<Vec<u8>, Status> {
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 86_400;
        let req = openpsd_core::psd::indicium::IndiciumRequest {
            transaction: openpsd_core::types::TransactionId(txn.to_be_bytes()),
            postage: Amount(postage),
            date: openpsd_core::types::Date::from_unix_days(today + days_ahead).expect("date"),
            rate: openpsd_core::types::RateCategory(1),
            origin: PostalCode::new(b"10115").expect("code"),
            destination: PostalCode::new(b"20095").expect("code"),
        };
        self.client
            .issue_indicium(RegisterSetIndex(0), &req)
            .map(|(bytes, _)| bytes)
            .map_err(card_status)
    }

    /// LICENSE REQUEST for `license` (0: a new one) at origin 53113, replacing any pending
    /// request, ordered through the meter as `customer` (a bearer client of the meter)
    /// under `txn`: the meter's answer.
    pub async fn order_license(
        &mut self,
        customer: &Client,
        txn: &str,
        license: u32,
    ) -> Result<openpsd_protocol::license::LicenseGrant, Refused> {
        let ask = openpsd_core::psd::license::request::LicenseAsk {
            license: LicenseId(license),
            origin: PostalCode::new(b"53113").expect("code"),
        };
        let request = self
            .client
            .license_request(&ask, true)
            .expect("license request");
        customer
            .post(
                "/v1/licenses",
                &openpsd_protocol::license::MeterLicenseOrder {
                    client_txn_id: txn.into(),
                    device_id: self.device_id(),
                    request: hex::encode(request.encode()),
                },
            )
            .await
    }

    /// [`Psd::order_license`], then LICENSE INSTALL of the grant: the grant.
    pub async fn order_and_install(
        &mut self,
        customer: &Client,
        txn: &str,
        license: u32,
    ) -> openpsd_protocol::license::LicenseGrant {
        let grant = self
            .order_license(customer, txn, license)
            .await
            .expect("granted");
        let install = openpsd_core::psd::license::install::Install::decode(
            &hex::decode(&grant.install).expect("hex"),
        )
        .expect("install decodes");
        self.client.license_install(&install).expect("installed");
        grant
    }

    /// An indicium of `postage` on the set in `slot` (whatever its key: the device's or a
    /// license's), dated `days_ahead` after today, from `origin` to 20095.
    pub fn indicium_on(
        &mut self,
        slot: u8,
        txn: u64,
        postage: u64,
        origin: &[u8],
        days_ahead: u64,
    ) -> Vec<u8> {
        let today = u64::from(openpsd_service_kit::codec::today_utc().day_number())
            + openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000;
        let req = openpsd_core::psd::indicium::IndiciumRequest {
            transaction: openpsd_core::types::TransactionId(txn.to_be_bytes()),
            postage: Amount(postage),
            date: openpsd_core::types::Date::from_unix_days(today + days_ahead).expect("date"),
            rate: openpsd_core::types::RateCategory(1),
            origin: PostalCode::new(origin).expect("code"),
            destination: PostalCode::new(b"20095").expect("code"),
        };
        self.client
            .issue_indicium(RegisterSetIndex(slot), &req)
            .expect("indicium")
            .0
    }

    /// The device's signing key, read out of the card's memory: what the holder of a
    /// software PSD has.
    pub fn dumped_key(&self) -> openpsd_core::crypto::IndiciumKey {
        use openpsd_core::store::Store as _;
        let store = MemStore::open(self.snapshot()).expect("store opens");
        let rec = store
            .read(openpsd_core::records::psd::DEVICE)
            .expect("read")
            .expect("device record");
        openpsd_core::psd::device::Device::decode(&rec)
            .expect("device record decodes")
            .key
    }

    /// Raises set 0's DR (and with it the control sum, which the card checks) by `amount`
    /// in the card's memory: what the holder of a software PSD can do to its own state.
    pub fn edit_dr(&mut self, amount: u64) {
        use openpsd_core::psd::registers::RegisterSet;
        use openpsd_core::store::{Store as _, Write};
        let mut store = MemStore::open(self.snapshot()).expect("store opens");
        let id = openpsd_core::records::psd::set(0);
        let mut set = RegisterSet::decode(&store.read(id).expect("read").expect("set 0"))
            .expect("set decodes");
        set.dr = Amount(set.dr.0 + amount);
        set.control_sum = Amount(set.control_sum.0 + amount);
        store
            .commit(&[Write {
                id,
                value: Some(set.encode()),
            }])
            .expect("commit");
        let nvm = store.nvm().clone();
        self.roll_back(&nvm);
    }

    /// A refill of `amount` applied offline, signed with the KMS's key `kms` and no back
    /// office (what an issuer's funding station, or anyone holding the KMS's key file,
    /// could do): the combination ID `id`.
    pub fn offline_refill(
        &mut self,
        set: u8,
        amount: u64,
        id: [u8; 8],
        kms: &openpsd_core::crypto::IndiciumKey,
    ) -> Registers {
        use openpsd_core::psd::refill::RefillCombination;
        let regs = self.registers(set);
        let device: [u8; 8] = hex::decode(&self.secrets.device_id)
            .expect("device hex")
            .try_into()
            .expect("8 bytes");
        let msg = RefillCombination {
            device: DeviceId(device),
            license: regs.license,
            amount: Amount(amount),
            control_sum: regs.control_sum,
            refills: regs.refills,
            combination_id: id,
        }
        .sign(kms);
        self.refill(set, &hex::encode(msg)).expect("offline REFILL")
    }

    /// The card's persistent memory now (to roll it back to later).
    pub fn snapshot(&self) -> Nvm {
        self.sim.borrow_mut().card().store().nvm().clone()
    }

    /// Replaces the card's memory by an earlier snapshot (a cloned or restored device).
    pub fn roll_back(&mut self, nvm: &Nvm) {
        let store = MemStore::open(nvm.clone()).expect("store opens");
        *self.sim.borrow_mut() = Sim::new(store, platform(self.seed)).expect("card loads");
        self.client.select().expect("select");
    }
}

fn card_status(e: ClientError) -> Status {
    match e {
        ClientError::Refused(_, _, s) => s,
        other => panic!("card transport failed: {other}"),
    }
}

/// A refusal from a service, or a lost connection (`status` 0, code `transport`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub step: String,
    pub message: String,
}

/// An HTTP JSON client for one service, over TLS trusting the back office's CA, with the
/// operator's client certificate or none.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
    /// A customer's bearer token sent with every request.
    pub bearer: Option<String>,
}

impl Client {
    /// A client presenting `role`'s certificate (or none) to `base`, keeping no idle
    /// connections: the kill -9 tests restart a service between two requests, and a pooled
    /// connection to the killed process would fail the next request before the restarted
    /// one is even asked.
    pub fn new(base: &str, pki: &Pki, role: Option<Role>) -> Self {
        Self::with_pool(base, pki, role, 0)
    }

    /// [`Client::new`] keeping up to `idle` connections open (the benchmark: a TLS
    /// handshake per request is not what a host does).
    pub fn with_pool(base: &str, pki: &Pki, role: Option<Role>, idle: usize) -> Self {
        let tls = openpsd_service_kit::tls::client_config(pki, role).expect("TLS config");
        Self {
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(std::time::Duration::from_secs(60))
                .pool_max_idle_per_host(idle)
                .build()
                .expect("client"),
            base: base.to_owned(),
            bearer: None,
        }
    }

    /// A client presenting merchant `id`'s certificate (issued on first use).
    pub fn merchant(base: &str, pki: &Pki, id: &str) -> Self {
        pki.init_merchant(id).expect("merchant certificate");
        let tls = openpsd_service_kit::tls::merchant_client_config(pki, id).expect("TLS config");
        Self {
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(std::time::Duration::from_secs(60))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            base: base.to_owned(),
            bearer: None,
        }
    }

    /// The same client sending `token` as its bearer credential.
    pub fn with_bearer(&self, token: &str) -> Self {
        Self {
            bearer: Some(token.to_owned()),
            ..self.clone()
        }
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Refused> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        Self::send(self.auth(req)).await
    }

    /// POST as [`Client::post`], the answer's status and body bytes as they came (the
    /// crash tests compare answers byte for byte); `Err` only when no answer came.
    pub async fn post_bytes<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, Vec<u8>), String> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        let resp = self.auth(req).send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes.to_vec()))
    }

    /// `method path` (a POST with `{}`): the HTTP status, or 0 when no TLS session or
    /// connection came about.
    pub async fn status(&self, method: &reqwest::Method, path: &str) -> u16 {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method == reqwest::Method::POST {
            req = req.json(&serde_json::json!({}));
        }
        match self.auth(req).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// `method path` with `body` as it is (any bytes, any content type): the HTTP status
    /// and the body, or status 0 when no answer came (the HTTP robustness test).
    pub async fn raw(
        &self,
        method: &reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if *method != reqwest::Method::GET {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        match self.auth(req).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (
                    status,
                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                )
            }
            Err(_) => (0, Vec::new()),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refused> {
        Self::send(self.auth(self.http.get(format!("{}{path}", self.base)))).await
    }

    async fn send<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, Refused> {
        let transport = |e: reqwest::Error| Refused {
            status: 0,
            code: "transport".into(),
            step: String::new(),
            message: e.to_string(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&bytes))
            }));
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "error {status} without an error body ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Err(Refused {
            status,
            code: body.error.code,
            step: body.error.step,
            message: body.error.message,
        })
    }
}

/// Customers by the names the tests give them: their account ID and session token.
#[derive(Clone, Default)]
pub struct Customers(Arc<Mutex<HashMap<String, (String, String)>>>);

impl Customers {
    /// `name`'s (account ID, token).
    pub fn get(&self, name: &str) -> (String, String) {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no customer '{name}' signed up (Admin::fund makes one)"))
    }

    /// `name`'s account ID, or `name` itself for an account nobody signed up for.
    pub fn account(&self, name: &str) -> String {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or_else(|| name.to_owned(), |c| c.0.clone())
    }
}

/// The host: talks to the meter server only, as the customer who owns the device.
#[derive(Clone)]
pub struct Host {
    pub meter: Client,
    pub customers: Customers,
    /// Which customer made which refill (client transaction ID → name).
    txns: Arc<Mutex<HashMap<String, String>>>,
    /// The customer of the last request, for calls that name none.
    last: Arc<Mutex<Option<String>>>,
}

/// The host and the operator of one back office, sharing its customers.
pub fn parties(meter: &str, kms: &str, rc: &str, pki: &Pki) -> (Host, Admin) {
    parties_again(meter, kms, rc, pki, &Customers::default())
}

/// [`parties`] for services started again, with the customers (and their sessions, which
/// the meter keeps) of before.
pub fn parties_again(
    meter: &str,
    kms: &str,
    rc: &str,
    pki: &Pki,
    customers: &Customers,
) -> (Host, Admin) {
    let customers = customers.clone();
    let host = Host {
        meter: Client::new(meter, pki, None),
        customers: customers.clone(),
        txns: Arc::default(),
        last: Arc::default(),
    };
    let admin = Admin {
        kms: Client::new(kms, pki, Some(Role::Operator)),
        rc: Client::new(rc, pki, Some(Role::Operator)),
        meter: Client::new(meter, pki, Some(Role::Operator)),
        meter_anon: Client::new(meter, pki, None),
        customers,
        pki: pki.clone(),
    };
    (host, admin)
}

impl Host {
    /// The meter client as customer `name`.
    pub fn as_customer(&self, name: &str) -> Client {
        self.meter.with_bearer(&self.customers.get(name).1)
    }

    /// The meter client as the customer who made refill `txn` (or the last one).
    fn for_txn(&self, txn: &str) -> Client {
        let name = self.txns.lock().unwrap().get(txn).cloned();
        let name = name
            .or_else(|| self.last.lock().unwrap().clone())
            .or_else(|| {
                // Services started again: the one customer there is.
                let all = self.customers.0.lock().unwrap();
                (all.len() == 1)
                    .then(|| all.keys().next().cloned())
                    .flatten()
            });
        match name {
            Some(n) => self.as_customer(&n),
            None => self.meter.clone(),
        }
    }

    pub async fn request(
        &self,
        txn: &str,
        device: &str,
        set: u8,
        account: &str,
        amount: u64,
    ) -> Result<RefillView, Refused> {
        self.txns
            .lock()
            .unwrap()
            .insert(txn.to_owned(), account.to_owned());
        *self.last.lock().unwrap() = Some(account.to_owned());
        self.as_customer(account)
            .post(
                "/v1/refills",
                &RefillRequest {
                    client_txn_id: txn.into(),
                    device_id: device.into(),
                    set,
                    account_id: Some(self.customers.account(account)),
                    amount,
                },
            )
            .await
    }

    pub async fn audit(&self, txn: &str, audit: &str) -> Result<RefillView, Refused> {
        self.for_txn(txn)
            .post(
                &format!("/v1/refills/{txn}/audit"),
                &serde_json::json!({ "audit": audit }),
            )
            .await
    }

    pub async fn confirm(&self, txn: &str, audit: &str) -> Result<RefillView, Refused> {
        self.for_txn(txn)
            .post(
                &format!("/v1/refills/{txn}/confirm"),
                &serde_json::json!({ "audit": audit }),
            )
            .await
    }

    pub async fn status(&self, txn: &str) -> Result<RefillView, Refused> {
        self.for_txn(txn).get(&format!("/v1/refills/{txn}")).await
    }

    /// The owner cancels an outstanding refill.
    pub async fn cancel(&self, txn: &str) -> Result<RefillView, Refused> {
        self.for_txn(txn)
            .post(&format!("/v1/refills/{txn}/cancel"), &serde_json::json!({}))
            .await
    }

    /// The whole refill on a card, as `openpsd refill` runs it: request, AUDIT, audit,
    /// REFILL, RECEIPT, AUDIT, confirm.
    pub async fn refill(
        &self,
        psd: &mut Psd,
        txn: &str,
        account: &str,
        amount: u64,
    ) -> Result<RefillView, Refused> {
        self.refill_set(psd, 0, txn, account, amount).await
    }

    /// [`Host::refill`] of the set in slot `set`.
    pub async fn refill_set(
        &self,
        psd: &mut Psd,
        set: u8,
        txn: &str,
        account: &str,
        amount: u64,
    ) -> Result<RefillView, Refused> {
        let v = self
            .request(txn, &psd.device_id(), set, account, amount)
            .await?;
        let audit = psd.audit(set, &v.nonce);
        let v = self.audit(txn, &audit).await?;
        self.apply_and_confirm(psd, &v).await
    }

    /// REFILL, RECEIPT, AUDIT with the confirm nonce, confirm.
    pub async fn apply_and_confirm(
        &self,
        psd: &mut Psd,
        v: &RefillView,
    ) -> Result<RefillView, Refused> {
        let message = v.refill_message.as_deref().expect("a refill message");
        psd.refill(v.set, message).expect("REFILL accepted");
        // The receipt names the refill's audit; if the host audited the card again since
        // (an early confirmation, say), the card takes receipts for that audit only.
        match psd.receipt(v.receipt.as_deref().expect("a receipt")) {
            Ok(_) | Err(Status::ReceiptForOtherAudit) => {}
            Err(e) => panic!("RECEIPT refused: {e:?}"),
        }
        let audit = psd.audit(v.set, v.confirm_nonce.as_deref().expect("a confirm nonce"));
        self.confirm(&v.client_txn_id, &audit).await
    }

    /// A plain audit (inspection): answers the receipt.
    pub async fn inspect(&self, psd: &mut Psd, set: u8) -> Result<String, Refused> {
        let meter = self.for_txn("");
        let v: InspectionView = meter
            .post(
                "/v1/inspections",
                &InspectionRequest {
                    device_id: psd.device_id(),
                    set,
                },
            )
            .await?;
        let audit = psd.audit(set, &v.nonce);
        let v: InspectionView = meter
            .post(
                &format!("/v1/inspections/{}/audit", v.inspection_id),
                &serde_json::json!({ "audit": audit }),
            )
            .await?;
        Ok(v.receipt.expect("receipt"))
    }
}

/// The operator: registers devices at the KMS and the meter, books deposits at the RC,
/// reads and resolves the meter's alarms (with the operator's certificate); signs customers
/// up at the meter as they would themselves.
#[derive(Clone)]
pub struct Admin {
    pub kms: Client,
    pub rc: Client,
    /// The meter with the operator's certificate.
    pub meter: Client,
    /// The meter without a certificate (sign-up and log-in, as customers do).
    meter_anon: Client,
    pub customers: Customers,
    pki: Pki,
}

impl Admin {
    /// `client`'s service called with the meter's certificate instead: an insider who
    /// stole it, or a test of what only the meter may do.
    pub fn as_meter(&self, client: &Client) -> Client {
        Client::new(&client.base, &self.pki, Some(Role::Meter))
    }

    /// Registers the card at the KMS and at the meter, owned by `acme`, baselines zero.
    pub async fn register(&self, psd: &Psd) {
        self.register_to(psd, "acme").await;
    }

    /// Registers the card at the KMS and at the meter, owned by `account`.
    pub async fn register_to(&self, psd: &Psd, account: &str) {
        self.register_with(psd, account, Vec::new())
            .await
            .expect("register device at the meter");
    }

    /// Registers the card at the KMS, then at the meter with these baselines.
    pub async fn register_with(
        &self,
        psd: &Psd,
        account: &str,
        baselines: Vec<Baseline>,
    ) -> Result<MeterDevice, Refused> {
        let _: serde_json::Value = self
            .kms
            .post("/v1/devices", &psd.secrets)
            .await
            .expect("register device");
        let account_id = self.ensure_customer(account).await;
        self.meter
            .post(
                "/v1/devices",
                &MeterRegistration {
                    device_id: psd.device_id(),
                    account_id,
                    baselines,
                },
            )
            .await
    }

    /// The meter's registration of a device.
    pub async fn device(&self, device: &str) -> MeterDevice {
        self.meter
            .get(&format!("/v1/devices/{device}"))
            .await
            .expect("device")
    }

    pub async fn alarms(&self) -> Alarms {
        self.meter.get("/v1/alarms").await.expect("alarms")
    }

    pub async fn resolve(
        &self,
        device: &str,
        note: &str,
        accept_audit: bool,
    ) -> Result<MeterDevice, Refused> {
        self.meter
            .post(
                &format!("/v1/devices/{device}/resolve"),
                &Resolve {
                    note: note.into(),
                    accept_audit,
                },
            )
            .await
    }

    /// The ledger invariants after a flow: for every card and set, control sum − baseline
    /// = the amounts the RC debited for it (`applied`), and every account balances.
    pub async fn assert_exact(&self, cards: &mut [&mut Psd]) {
        let l = self.ledger().await;
        assert_eq!(l.deposited, l.available + l.held + l.debited, "{l:?}");
        let mut over_baselines = 0;
        for c in cards.iter_mut() {
            let dev = self.device(&c.device_id()).await;
            for (set, b) in dev.baselines.iter().enumerate() {
                let cs = c.registers(u8::try_from(set).expect("set")).control_sum.0;
                over_baselines += cs
                    .checked_sub(b.control_sum)
                    .expect("control sum >= baseline");
            }
        }
        assert_eq!(
            over_baselines, l.applied_amount,
            "control sums - baselines vs applied: {l:?}"
        );
    }

    /// Customer `name`'s account, signing them up (which opens it) and logging them in
    /// the first time.
    pub async fn ensure_customer(&self, name: &str) -> String {
        if let Some((account, _)) = self.customers.0.lock().unwrap().get(name) {
            return account.clone();
        }
        let creds = Credentials {
            username: name.to_owned(),
            password: format!("{name} password 1234"),
        };
        let c: CustomerView = self
            .meter_anon
            .post("/v1/customers", &creds)
            .await
            .expect("sign up");
        let s: Session = self
            .meter_anon
            .post("/v1/sessions", &creds)
            .await
            .expect("log in");
        self.customers
            .0
            .lock()
            .unwrap()
            .insert(name.to_owned(), (c.account_id.clone(), s.token));
        c.account_id
    }

    /// Customer `name` (signed up if new) gets `amount` of deposit on their account.
    pub async fn fund(&self, name: &str, amount: u64) {
        let account = self.ensure_customer(name).await;
        let _: Account = self
            .rc
            .post(
                &format!("/v1/accounts/{account}/deposits"),
                &Deposit {
                    amount,
                    reference: format!("{name}-initial"),
                },
            )
            .await
            .expect("deposit");
    }

    pub async fn account(&self, name: &str) -> Account {
        let account = self.customers.account(name);
        self.rc
            .get(&format!("/v1/accounts/{account}"))
            .await
            .expect("account")
    }

    pub async fn ledger(&self) -> Ledger {
        self.rc.get("/v1/ledger").await.expect("ledger")
    }

    /// No money created, none lost: nothing held, every debit is value in a card, and
    /// every account balances.
    pub async fn assert_reconciled(&self, cards: &mut [&mut Psd]) -> Ledger {
        let l = self.ledger().await;
        let credited: u64 = cards.iter_mut().map(|c| c.credited()).sum();
        assert_eq!(l.held, 0, "holds left open: {l:?}");
        assert_eq!(l.debited, credited, "debited vs cards' control sums: {l:?}");
        assert_eq!(l.applied_amount, l.debited, "{l:?}");
        assert_eq!(l.deposited, l.available + l.held + l.debited, "{l:?}");
        l
    }
}

/// Expects a refusal with this code.
#[track_caller]
pub fn expect_refused<T: std::fmt::Debug>(
    r: Result<T, Refused>,
    status: u16,
    code: &str,
) -> Refused {
    match r {
        Ok(v) => panic!("expected {status} {code}, got {v:?}"),
        Err(e) => {
            assert_eq!((e.status, e.code.as_str()), (status, code), "{e:?}");
            e
        }
    }
}

/// A back office in a temporary directory, with its host and operator.
pub struct Env {
    dir: tempfile::TempDir,
    pub handles: openpsd_backoffice::Handles,
    pub host: Host,
    pub admin: Admin,
}

/// The post office's registry for a test: `post.sqlite` in the test's directory, or —
/// with `OPENPSD_TEST_POSTGRES` set to a server's key=value connection string (as
/// `scripts/postgres-test.sh` does) — a fresh database on that PostgreSQL server, so the
/// same suite runs on both stores.
pub async fn post_database() -> Option<String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::env::var("OPENPSD_TEST_POSTGRES").ok()?;
    let name = format!(
        "openpsd_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let url =
        tokio::task::spawn_blocking(move || openpsd_post::postgres::create_database(&base, &name))
            .await
            .expect("the database task")
            .expect("a fresh database on the test PostgreSQL server (OPENPSD_TEST_POSTGRES)");
    Some(url)
}

impl Env {
    /// The KMS's public key (what PSDs are personalized with).
    pub fn kms(&self) -> [u8; 65] {
        self.handles.kms_public_key
    }

    /// Starts the post office beside the services (data in the environment's directory)
    /// and a client calling it with the operator's certificate, as scanners do.
    pub async fn start_post(&self) -> (openpsd_service_kit::Service, Client) {
        let db = post_database().await;
        let svc = openpsd_backoffice::server::start_post(
            &self.dir.path().join("post"),
            db.as_deref(),
            "127.0.0.1:0",
            [
                &self.handles.kms.url,
                &self.handles.meter.url,
                &self.handles.pa.url,
            ],
            &self.handles.pki,
            openpsd_backoffice::server::DEFAULT_RATE,
        )
        .await
        .expect("the post office starts");
        let client = Client::new(&svc.url, &self.handles.pki, Some(Role::Operator));
        (svc, client)
    }

    /// The KMS's signing key, read from its file (a test playing whoever stole it).
    pub fn kms_signing_key(&self) -> openpsd_core::crypto::IndiciumKey {
        kms_signing_key_in(&self.dir.path().join("kms"))
    }
}

/// The signing key in a KMS data directory.
pub fn kms_signing_key_in(kms_dir: &std::path::Path) -> openpsd_core::crypto::IndiciumKey {
    card_sim::kms_key::read_signing(&kms_dir.join(card_sim::kms_key::SIGNING_KEY_FILE))
        .expect("the KMS's signing key file")
}

/// The public key in a KMS data directory.
pub fn kms_public_key_in(kms_dir: &std::path::Path) -> [u8; 65] {
    card_sim::kms_key::read_public(&kms_dir.join(card_sim::kms_key::PUBLIC_KEY_FILE))
        .expect("the KMS's public key file")
}

/// Starts the three services on loopback (mutual TLS) in a fresh directory.
pub async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let handles = openpsd_backoffice::spawn_all(dir.path())
        .await
        .expect("services start");
    let (host, admin) = parties(
        &handles.meter.url,
        &handles.kms.url,
        &handles.recharge.url,
        &handles.pki,
    );
    Env {
        dir,
        handles,
        host,
        admin,
    }
}

/// Posts `labels` to the post office as one scanned batch; its verdicts, one per label.
pub async fn scan(post: &Client, labels: &[Vec<u8>]) -> Vec<openpsd_protocol::post::Verdict> {
    let r: openpsd_protocol::post::ScanResult = post
        .post(
            "/v1/indicia",
            &openpsd_protocol::post::ScanBatch {
                indicia: labels.iter().map(hex::encode).collect(),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.verdicts.len(), labels.len());
    r.verdicts
}

/// The verdicts' kinds (`accepted`, `duplicate`, …).
pub fn kinds(v: &[openpsd_protocol::post::Verdict]) -> Vec<&str> {
    v.iter().map(|v| v.verdict.as_str()).collect()
}

/// What the post office holds of `device` and found.
pub async fn explain(post: &Client, device: &str) -> openpsd_protocol::post::DeviceReport {
    post.get(&format!("/v1/devices/{device}/findings"))
        .await
        .unwrap()
}

/// The warnings and errors the services of this test process logged, kept from the first
/// call of [`capture_logs`] on (a global subscriber: every test of the binary logs into it,
/// so a test looks for lines that name what only it made, such as a mailer ID).
static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

/// A writer appending to the captured logs.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capture of warnings and errors (once per process; later calls do nothing).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::clone(&buf);
        tracing_subscriber::fmt()
            .with_writer(move || LogWriter(Arc::clone(&b)))
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .try_init()
            .expect("no other log subscriber in the test process");
        buf
    });
}

/// The captured lines that contain every one of `parts`.
pub fn logged(parts: &[&str]) -> Vec<String> {
    let buf = LOGS.get().expect("capture_logs() first");
    let text = String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    text.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}
