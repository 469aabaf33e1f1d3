//! Test and benchmark harness: real PSD cards (the core applet on an in-memory store,
//! personalized by card-sim's personalization station, driven through the host library's
//! `PsdClient`) and a host that talks HTTP to the meter server like `openpsd refill` does,
//! plus admin calls to the KMS and the recharging center and the reconciliation check.
#![allow(dead_code)] // each test binary uses a different part

use std::cell::RefCell;
use std::rc::Rc;

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
    Account, Alarms, Baseline, Deposit, InspectionRequest, InspectionView, Ledger, MeterDevice,
    MeterRegistration, NewAccount, RefillRequest, RefillView, Resolve,
};
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
    // The card's clock agrees with the back office's, so receipts and indicia line up.
    p.today = Some(openpsd_service_kit::codec::today_utc());
    p
}

impl Psd {
    /// Card number `n`: device ID `PSD` + n, two licenses, DR limit 1,000,000.00.
    pub fn new(n: u32, inspection_days: u16) -> Psd {
        let seed = 0x5EED_0000 + u64::from(n);
        let mut sim = Sim::new(MemStore::new(), platform(seed)).expect("blank card");
        let mut id = *b"PSD\0\0\0\0\0";
        id[4..].copy_from_slice(&n.to_be_bytes());
        let req = Request {
            device: Some(DeviceId(id)),
            vendor_public_key: None,
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

    /// A refill of `amount` applied offline, with K1 and no back office (what an issuer's
    /// funding station, or anyone holding K1, could do): the combination ID `id`.
    pub fn offline_refill(&mut self, set: u8, amount: u64, id: [u8; 8]) -> Registers {
        use openpsd_core::psd::refill::RefillCombination;
        let regs = self.registers(set);
        let k1: [u8; 16] = hex::decode(&self.secrets.k1)
            .expect("k1 hex")
            .try_into()
            .expect("16 bytes");
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
        .seal(&openpsd_core::crypto::MacKey::new(k1));
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

/// An HTTP JSON client for one service.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            // No idle connections kept: the kill -9 tests restart a service between two
            // requests, and a pooled connection to the killed process would fail the next
            // request before the restarted one is even asked.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
            base: base.to_owned(),
        }
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Refused> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        Self::send(req).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refused> {
        Self::send(self.http.get(format!("{}{path}", self.base))).await
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

/// The host: talks to the meter server only.
#[derive(Clone)]
pub struct Host {
    pub meter: Client,
}

impl Host {
    pub fn new(meter_url: &str) -> Self {
        Self {
            meter: Client::new(meter_url),
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
        self.meter
            .post(
                "/v1/refills",
                &RefillRequest {
                    client_txn_id: txn.into(),
                    device_id: device.into(),
                    set,
                    account_id: Some(account.into()),
                    amount,
                },
            )
            .await
    }

    pub async fn audit(&self, txn: &str, audit: &str) -> Result<RefillView, Refused> {
        self.meter
            .post(
                &format!("/v1/refills/{txn}/audit"),
                &serde_json::json!({ "audit": audit }),
            )
            .await
    }

    pub async fn confirm(&self, txn: &str, audit: &str) -> Result<RefillView, Refused> {
        self.meter
            .post(
                &format!("/v1/refills/{txn}/confirm"),
                &serde_json::json!({ "audit": audit }),
            )
            .await
    }

    pub async fn status(&self, txn: &str) -> Result<RefillView, Refused> {
        self.meter.get(&format!("/v1/refills/{txn}")).await
    }

    /// The owner cancels an outstanding refill.
    pub async fn cancel(&self, txn: &str) -> Result<RefillView, Refused> {
        self.meter
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
        let v = self
            .request(txn, &psd.device_id(), 0, account, amount)
            .await?;
        let audit = psd.audit(0, &v.nonce);
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
        let v: InspectionView = self
            .meter
            .post(
                "/v1/inspections",
                &InspectionRequest {
                    device_id: psd.device_id(),
                    set,
                },
            )
            .await?;
        let audit = psd.audit(set, &v.nonce);
        let v: InspectionView = self
            .meter
            .post(
                &format!("/v1/inspections/{}/audit", v.inspection_id),
                &serde_json::json!({ "audit": audit }),
            )
            .await?;
        Ok(v.receipt.expect("receipt"))
    }
}

/// The operator: registers devices at the KMS and the meter, keeps accounts at the RC,
/// reads and resolves the meter's alarms.
#[derive(Clone)]
pub struct Admin {
    pub meter: Client,
    pub kms: Client,
    pub rc: Client,
}

impl Admin {
    pub fn new(meter_url: &str, kms_url: &str, rc_url: &str) -> Self {
        Self {
            meter: Client::new(meter_url),
            kms: Client::new(kms_url),
            rc: Client::new(rc_url),
        }
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
        self.meter
            .post(
                "/v1/devices",
                &MeterRegistration {
                    device_id: psd.device_id(),
                    account_id: account.into(),
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

    /// Opens `account` with `amount` deposited.
    pub async fn fund(&self, account: &str, amount: u64) {
        let _: Account = self
            .rc
            .post(
                "/v1/accounts",
                &NewAccount {
                    account_id: account.into(),
                },
            )
            .await
            .expect("account");
        let _: Account = self
            .rc
            .post(
                &format!("/v1/accounts/{account}/deposits"),
                &Deposit {
                    amount,
                    reference: format!("{account}-initial"),
                },
            )
            .await
            .expect("deposit");
    }

    pub async fn account(&self, account: &str) -> Account {
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
