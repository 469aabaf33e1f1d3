//! The host's side of a remote refill (seed 000, Fig. 4; `docs/refill.md`): ask the meter
//! server, let the PSD audit itself with the server's nonce, carry the audit over, apply
//! the refill message and the audit receipt on the PSD, and confirm with a fresh audit.
//!
//! Every step is keyed by the client transaction ID, so a run interrupted anywhere (a lost
//! reply, a crash of this process) is finished by running it again with the same ID: the
//! meter server hands back the same refill, and the PSD refuses a message it has applied
//! already (`9A12`), which the host then simply confirms.

use std::fmt;
use std::path::Path;

use openpsd_core::psd::audit::NONCE_LEN;
use openpsd_core::psd::certmeter::revoke::RevocationConfirmation;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::{Amount, DeviceId, RegisterSetIndex};
use openpsd_core::Status;
use openpsd_protocol::{
    AuditBody, ErrorBody, InspectionRequest, InspectionView, RefillState, RefillView,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use openpsd_core::client::Side;

use crate::{ClientError, PsdClient};

/// Why a refill did not complete.
#[derive(Debug)]
pub enum RefillError {
    /// The meter server refused a step (its error code, the step, its message).
    Meter {
        /// Error code (`docs/refill.md` § Errors).
        code: String,
        /// Which step refused.
        step: String,
        /// The server's explanation.
        message: String,
    },
    /// The meter server could not be reached or answered nonsense.
    Http(String),
    /// The PSD refused or could not be reached.
    Card(ClientError),
}

impl fmt::Display for RefillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefillError::Meter {
                code,
                step,
                message,
            } => {
                write!(f, "meter server refused at step {step}: {code}: {message}")
            }
            RefillError::Http(e) => write!(f, "meter server: {e}"),
            RefillError::Card(e) => write!(f, "PSD: {e}"),
        }
    }
}

impl std::error::Error for RefillError {}

impl From<ClientError> for RefillError {
    fn from(e: ClientError) -> Self {
        RefillError::Card(e)
    }
}

/// A refill to run.
#[derive(Clone, Debug)]
pub struct RefillRequest {
    /// The host's ID for this refill; re-use it to finish an interrupted one.
    pub client_txn_id: String,
    /// The customer account at the recharging center; `None`: the device's owner (it must
    /// be the owner anyway, or the meter answers `unknown_device`).
    pub account_id: Option<String>,
    /// The register set to credit.
    pub set: RegisterSetIndex,
    /// Amount to add to DR.
    pub amount: Amount,
}

/// What a completed refill left.
#[derive(Clone, Debug)]
pub struct RefillOutcome {
    /// The meter server's final state (`completed`).
    pub state: RefillState,
    /// The registers after the credit.
    pub registers: Registers,
    /// Whether the PSD accepted the audit receipt (inspection renewed).
    pub inspection_renewed: bool,
    /// The revocation orders the meter handed over before the refill (forced revocation),
    /// as the PSD took them.
    pub revocations: Vec<AppliedRevocation>,
}

/// A pending revocation order the meter handed over (forced revocation, `docs/certmeter.md`
/// § Forced revocation) and what became of it.
#[derive(Clone, Debug)]
pub struct AppliedRevocation {
    /// The order's counter.
    pub counter: u32,
    /// The revoked certificate's serial (hex).
    pub serial: String,
    /// The key slot.
    pub slot: u8,
    /// The reason (RFC 5280 name).
    pub reason: String,
    /// REVOKE KEY's confirmation (recorded at the CA), or why the PSD refused the order
    /// (it stays pending: the meter refuses refills once it is older than its grace period).
    pub result: Result<RevocationConfirmation, String>,
}

/// What a cancel left.
#[derive(Clone, Debug)]
pub struct CancelOutcome {
    /// `released` (the refill never applied and never will: its hold is back in the
    /// deposit) or `completed` (the refill had won the race: it was applied and charged).
    pub state: RefillState,
    /// The registers afterwards.
    pub registers: Registers,
}

/// A client of the meter server's HTTP JSON API, over HTTPS.
pub struct MeterClient {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl MeterClient {
    /// A client for the meter server at `base` (e.g. `https://127.0.0.1:8700`) whose
    /// certificate chains to the CA in `ca` (PEM; none: the system's roots), sending
    /// `token` (a session token or API key) as its bearer credential.
    pub fn new(base: &str, ca: Option<&Path>, token: Option<&str>) -> Result<Self, RefillError> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|e| RefillError::Http(format!("reading {}: {e}", ca.display())))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(RefillError::Http(format!(
                    "{} holds no certificate",
                    ca.display()
                )));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            agent: config.build().new_agent(),
            token: token.map(str::to_owned),
        })
    }

    /// The meter's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RefillError> {
        let url = format!("{}{path}", self.base);
        let resp = self.auth(self.agent.get(&url)).call();
        Self::answer("GET", &url, resp)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, RefillError> {
        let url = format!("{}{path}", self.base);
        let resp = self.auth(self.agent.post(&url)).send_json(body);
        Self::answer("POST", &url, resp)
    }

    /// Orders a license for the PSD's signed request (seed 003): the meter passes it to the
    /// manufacturer and the postal authority; the answer carries LICENSE INSTALL's data.
    /// Idempotent by the order's `client_txn_id`.
    pub fn order_license(
        &self,
        order: &openpsd_protocol::license::MeterLicenseOrder,
    ) -> Result<openpsd_protocol::license::LicenseGrant, RefillError> {
        self.post("/v1/licenses", order)
    }

    /// Asks for a certificate of a key the PSD generated (seed 004): `attestation` is
    /// GENERATE KEY's answer from the customer's device `device` (16 hex). The meter passes
    /// it to the certificate authority with the customer's account, which names the
    /// subject; the answer is INSTALL KEY CERTIFICATE's certificate (DER, hex) and the CA's.
    /// The same attestation again answers the same certificate.
    pub fn request_certificate(
        &self,
        device: &str,
        attestation: &[u8],
    ) -> Result<openpsd_protocol::ca::CertificateAnswer, RefillError> {
        self.post(
            "/v1/certificates",
            &openpsd_protocol::ca::MeterCertificateRequest {
                device_id: device.to_owned(),
                attestation: hex::encode(attestation),
            },
        )
    }

    /// Asks the creditor, through the meter, for a line of credit of `amount` on the
    /// payment key `attestation` attests (seed 004 Fig. 8 steps 802-810). The same
    /// `request_id` again answers the same line.
    pub fn request_credit_line(
        &self,
        device: &str,
        request_id: &str,
        attestation: &[u8],
        amount: u64,
    ) -> Result<openpsd_protocol::creditor::LineAnswer, RefillError> {
        self.post(
            "/v1/credit-lines",
            &openpsd_protocol::creditor::MeterLineRequest {
                request_id: request_id.to_owned(),
                device_id: device.to_owned(),
                attestation: hex::encode(attestation),
                amount,
            },
        )
    }

    /// Passes the PSD's signed revocation request (REVOCATION REQUEST) to the CA through
    /// the meter (seed 004 Fig. 6 step 604): the certificate is revoked at once and the
    /// answer carries the CA's signed order for REVOKE KEY. The same request again answers
    /// the same order.
    pub fn request_revocation(
        &self,
        device: &str,
        request: &[u8],
    ) -> Result<openpsd_protocol::ca::RevocationOrderAnswer, RefillError> {
        self.post(
            "/v1/revocations",
            &openpsd_protocol::ca::MeterRevocationRequest {
                device_id: device.to_owned(),
                request: hex::encode(request),
            },
        )
    }

    /// Records the PSD's signed confirmation (REVOKE KEY's answer) at the CA (step 622).
    pub fn confirm_revocation(
        &self,
        device: &str,
        confirmation: &[u8],
    ) -> Result<openpsd_protocol::ca::RevocationRecord, RefillError> {
        self.post(
            "/v1/revocations/confirmations",
            &openpsd_protocol::ca::MeterRevocationConfirmation {
                device_id: device.to_owned(),
                confirmation: hex::encode(confirmation),
            },
        )
    }

    /// The grant of the customer's license order `client_txn_id`, if the meter has it.
    pub fn license_order(
        &self,
        client_txn_id: &str,
    ) -> Result<openpsd_protocol::license::LicenseGrant, RefillError> {
        self.get(&format!("/v1/licenses/{client_txn_id}"))
    }

    /// Books a RETIRE SET receipt (the device's owner): the meter refunds the retired set's
    /// DR to the owner's deposit and revokes the set's grant. Idempotent by (device, epoch):
    /// the same receipt again answers the same [`Retirement`](openpsd_protocol::license::Retirement).
    pub fn retire_license(
        &self,
        request: &openpsd_protocol::license::RetirementRequest,
    ) -> Result<openpsd_protocol::license::Retirement, RefillError> {
        self.post("/v1/licenses/retirements", request)
    }

    /// What the PSD should load after a refill or an inspection (seed 004): the vendor's
    /// signed rate tables (LOAD RATE TABLE, ascending by version) and trust anchors (LOAD
    /// TRUST ANCHOR), hex. The device must be the customer's (`unknown_device` otherwise).
    pub fn device_updates(
        &self,
        device: DeviceId,
    ) -> Result<openpsd_protocol::vendor::DeviceUpdates, RefillError> {
        self.get(&format!("/v1/devices/{device}/updates"))
    }

    /// Seed 004's push at contact: the rate tables and trust anchors the meter hands out
    /// for `device`, loaded into the PSD (LOAD RATE TABLE, LOAD TRUST ANCHOR). What the PSD
    /// holds already, or newer, is skipped (`9A41`). Returns how many tables and anchors
    /// were new to the PSD.
    pub fn load_updates(
        &self,
        psd: &mut PsdClient,
        device: DeviceId,
    ) -> Result<(usize, usize), RefillError> {
        let u = self.device_updates(device)?;
        let known = |e: &ClientError| matches!(e, ClientError::Refused(_, _, Status::NotNewer));
        let before = psd.certmeter_info()?;
        // The anchors are loaded even when a table is refused: the first refusal is
        // answered after both loops. Tables stop at the first refusal: the PSD takes them
        // in order only, so the later ones would be refused too.
        let mut first_error = None;
        let mut tables = 0;
        for hex_table in &u.rate_tables {
            let bytes = hex_bytes(Some(hex_table), "rate table")?;
            if before.tables.iter().any(|(_, b)| *b == bytes) {
                continue;
            }
            match psd.load_rate_table(&bytes) {
                Ok(_) => tables += 1,
                Err(e) if known(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
        let mut anchors = 0;
        for hex_anchor in &u.anchors {
            let bytes = hex_bytes(Some(hex_anchor), "trust anchor")?;
            if before.anchors.iter().any(|(_, b)| *b == bytes) {
                continue;
            }
            match psd.load_trust_anchor(&bytes) {
                Ok(()) => anchors += 1,
                Err(e) if known(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok((tables, anchors)),
        }
    }

    /// The device's revocation orders not confirmed yet (`GET
    /// /v1/devices/{device}/revocations`): orders the CA forced on it (an operator revoked a
    /// certificate) and any the PSD asked for and did not confirm, by rising counter.
    pub fn pending_revocations(
        &self,
        device: DeviceId,
    ) -> Result<openpsd_protocol::ca::PendingRevocations, RefillError> {
        self.get(&format!("/v1/devices/{device}/revocations"))
    }

    /// Forced revocation at contact: each pending order applied on the PSD (REVOKE KEY on
    /// register set `set`: the key retired, its fee paid from the set's DR or owed until a
    /// refill settles it), by rising counter, and its confirmation recorded at the CA
    /// through the meter. An order the PSD refuses (an older counter than one it applied,
    /// a slot that never held the certificate, a bad signature) is reported and skipped: it
    /// changes nothing on the PSD and stays pending until the operator closes it (the
    /// PSD's refusal is not signed, so the host's report of it closes nothing). The same order applied before answers
    /// the same confirmation, so a run interrupted anywhere is finished by running again.
    pub fn apply_revocations(
        &self,
        psd: &mut PsdClient,
        device: DeviceId,
        set: RegisterSetIndex,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<AppliedRevocation>, RefillError> {
        let mut pending = self.pending_revocations(device)?.orders;
        pending.sort_by_key(|o| o.counter);
        let mut out = Vec::with_capacity(pending.len());
        for o in pending {
            let order = hex_bytes(Some(&o.order), "revocation order")?;
            let result = match psd.revoke_key(set, &order) {
                Ok((bytes, c)) => {
                    self.confirm_revocation(&device.to_string(), &bytes)?;
                    progress(&format!(
                        "revocation order {}: key in slot {} retired (certificate {}, {}); \
                         fee {} {} (set {}); confirmation recorded",
                        o.counter,
                        o.slot,
                        o.serial,
                        o.reason,
                        c.fee,
                        outcome_name(c.outcome),
                        c.set
                    ));
                    Ok(c)
                }
                Err(ClientError::Refused(_, _, status)) => {
                    progress(&format!(
                        "revocation order {} (certificate {}, slot {}) refused by the PSD: \
                         {status:?}; it stays pending (one the PSD can never apply, the \
                         operator closes: `backoffice ca close-order {}`)",
                        o.counter, o.serial, o.slot, o.serial
                    ));
                    Err(format!("{status:?}"))
                }
                Err(e) => return Err(e.into()),
            };
            out.push(AppliedRevocation {
                counter: o.counter,
                serial: o.serial,
                slot: o.slot,
                reason: o.reason,
                result,
            });
        }
        Ok(out)
    }

    /// Signs up at the meter (which opens a deposit account).
    pub fn sign_up(
        &self,
        creds: &openpsd_protocol::Credentials,
    ) -> Result<openpsd_protocol::CustomerView, RefillError> {
        self.post("/v1/customers", creds)
    }

    /// Logs in: a session token.
    pub fn log_in(
        &self,
        creds: &openpsd_protocol::Credentials,
    ) -> Result<openpsd_protocol::Session, RefillError> {
        self.post("/v1/sessions", creds)
    }

    /// Who the token belongs to, and their account's balances.
    pub fn me(&self) -> Result<openpsd_protocol::Me, RefillError> {
        self.get("/v1/me")
    }

    /// Ends the session (the token stops working).
    pub fn log_out(&self) -> Result<(), RefillError> {
        let url = format!("{}/v1/sessions/current", self.base);
        let resp = self
            .auth(self.agent.delete(&url))
            .call()
            .map_err(|e| RefillError::Http(format!("DELETE {url}: {e}")))?;
        if resp.status().is_success() || resp.status().as_u16() == 401 {
            Ok(())
        } else {
            Err(RefillError::Http(format!(
                "DELETE {url}: HTTP {}",
                resp.status()
            )))
        }
    }

    /// The typed answer of a 2xx, the meter's refusal of anything else.
    fn answer<T: DeserializeOwned>(
        method: &str,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, RefillError> {
        let http = |e: ureq::Error| RefillError::Http(format!("{method} {url}: {e}"));
        let mut resp = resp.map_err(http)?;
        if resp.status().is_success() {
            return resp.body_mut().read_json().map_err(http);
        }
        let body: ErrorBody = resp.body_mut().read_json().map_err(http)?;
        Err(RefillError::Meter {
            code: body.error.code,
            step: body.error.step,
            message: body.error.message,
        })
    }

    /// The refill with this client transaction ID as the meter server has it.
    pub fn status(&self, client_txn_id: &str) -> Result<RefillView, RefillError> {
        self.get(&format!("/v1/refills/{client_txn_id}"))
    }

    /// Seed 004, step 257, before an audit: the meter's rate tables and trust anchors loaded,
    /// since the meter refuses the audit of a PSD holding an older table than the one in
    /// effect (`409 rate_table_stale`). Not getting them does not stop the contact (a meter
    /// with no vendor has none to give; a PSD holding no table is not asked for one).
    fn updates_first(&self, psd: &mut PsdClient, device: DeviceId, progress: &mut dyn FnMut(&str)) {
        match self.load_updates(psd, device) {
            Ok((0, 0)) => {}
            Ok((t, a)) => progress(&format!(
                "loaded {t} rate table(s) and {a} trust anchor(s) from the meter server"
            )),
            Err(e) => tracing::debug!("rate tables not loaded before the audit: {e}"),
        }
    }

    /// Runs (or finishes) a refill of the PSD behind `psd`, whose device is `device`.
    pub fn refill(
        &self,
        psd: &mut PsdClient,
        device: DeviceId,
        req: &RefillRequest,
        progress: &mut dyn FnMut(&str),
    ) -> Result<RefillOutcome, RefillError> {
        let txn = &req.client_txn_id;
        // Forced revocation: pending orders first (the meter refuses a refill while one is
        // overdue); fees they leave due are settled by this refill. Not getting through
        // them does not stop the refill here: the meter decides (a CA it cannot ask does
        // not stop refills either).
        let revocations = match self.apply_revocations(psd, device, req.set, progress) {
            Ok(r) => r,
            Err(e) => {
                progress(&format!("pending revocation orders not applied: {e}"));
                Vec::new()
            }
        };
        let mut r: RefillView = self.post(
            "/v1/refills",
            &openpsd_protocol::RefillRequest {
                client_txn_id: txn.clone(),
                device_id: device.to_string(),
                set: req.set.0,
                account_id: req.account_id.clone(),
                amount: req.amount.0,
            },
        )?;
        progress(&format!("refill {txn}: {}", r.state));
        let mut inspection_renewed = false;
        if r.state == RefillState::AwaitingAudit {
            self.updates_first(psd, device, progress);
            // Steps 210-220: the PSD signs its audit data with the server's nonce.
            let nonce = hex_array::<NONCE_LEN>(Some(&r.nonce), "nonce")?;
            let audit = psd.audit(req.set, &nonce)?;
            progress("audit made by the PSD; sent to the meter server");
            r = self.post(
                &format!("/v1/refills/{txn}/audit"),
                &AuditBody {
                    audit: hex::encode(&audit),
                },
            )?;
            // Steps 290-305 on the PSD, then the receipt while its audit is the last one.
            apply_message(psd, req.set, &r, progress)?;
            let receipt = hex_bytes(r.receipt.as_deref(), "receipt")?;
            psd.receipt(&receipt)?;
            inspection_renewed = true;
            progress("audit receipt accepted: inspection renewed");
        } else if r.state == RefillState::MessageIssued {
            // An earlier run got this far: the message may or may not be in the PSD.
            apply_message(psd, req.set, &r, progress)?;
        }
        if r.state == RefillState::MessageIssued {
            let nonce = hex_array::<NONCE_LEN>(r.confirm_nonce.as_deref(), "confirm_nonce")?;
            let audit = psd.audit(req.set, &nonce)?;
            r = self.post(
                &format!("/v1/refills/{txn}/confirm"),
                &AuditBody {
                    audit: hex::encode(&audit),
                },
            )?;
            progress(&format!("confirmed: {}", r.state));
        }
        let state = r.state;
        if state != RefillState::Completed {
            return Err(RefillError::Meter {
                code: "wrong_state".into(),
                step: "host".into(),
                message: format!("refill {txn} ended in state {state}"),
            });
        }
        Ok(RefillOutcome {
            state,
            registers: psd.registers(req.set)?,
            inspection_renewed,
            revocations,
        })
    }
}

impl MeterClient {
    /// Cancels the outstanding refill `client_txn_id` of the PSD behind `psd`
    /// (`POST /v1/refills/{id}/cancel`). Not issued yet: released at once. Issued: the meter
    /// answers a void with the refill's precondition; the PSD applies it (or refuses it with
    /// `9A12` because the refill or the void applied before), audits with the confirm nonce,
    /// and the confirmation settles the hold by what the audit shows. Run again to finish an
    /// interrupted cancel.
    pub fn cancel(
        &self,
        psd: &mut PsdClient,
        client_txn_id: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<CancelOutcome, RefillError> {
        let mut r: RefillView = self.post(
            &format!("/v1/refills/{client_txn_id}/cancel"),
            &serde_json::json!({}),
        )?;
        progress(&format!("cancel {client_txn_id}: {}", r.state));
        let set = RegisterSetIndex(r.set);
        if r.state == RefillState::Voiding {
            let void = hex_bytes(r.void_message.as_deref(), "void_message")?;
            match psd.refill(set, &void) {
                Ok(_) => progress("void applied: the refill can no longer apply"),
                // The refill or the void was applied before; the audit says which.
                Err(ClientError::Refused(_, _, Status::RefillReplayed)) => {
                    progress("the PSD's refill count moved on already")
                }
                Err(e) => return Err(e.into()),
            }
            let nonce = hex_array::<NONCE_LEN>(r.confirm_nonce.as_deref(), "confirm_nonce")?;
            let audit = psd.audit(set, &nonce)?;
            r = self.post(
                &format!("/v1/refills/{client_txn_id}/confirm"),
                &AuditBody {
                    audit: hex::encode(&audit),
                },
            )?;
            progress(&format!("confirmed: {}", r.state));
        }
        match r.state {
            RefillState::Released | RefillState::Completed | RefillState::Refused => {
                Ok(CancelOutcome {
                    state: r.state,
                    registers: psd.registers(set)?,
                })
            }
            state => Err(RefillError::Meter {
                code: "wrong_state".into(),
                step: "host".into(),
                message: format!("cancel of {client_txn_id} ended in state {state}"),
            }),
        }
    }

    /// A plain audit that renews the PSD's inspection (`POST /v1/inspections`): the meter
    /// server checks the audit against the device's history like any other and answers a
    /// receipt, which the PSD takes while that audit is its last. Returns the date the
    /// PSD now counts its inspection from.
    pub fn inspect(
        &self,
        psd: &mut PsdClient,
        device: DeviceId,
        set: RegisterSetIndex,
    ) -> Result<openpsd_core::types::Date, RefillError> {
        let i: InspectionView = self.post(
            "/v1/inspections",
            &InspectionRequest {
                device_id: device.to_string(),
                set: set.0,
            },
        )?;
        self.updates_first(psd, device, &mut |_| {});
        let nonce = hex_array::<NONCE_LEN>(Some(&i.nonce), "nonce")?;
        let audit = psd.audit(set, &nonce)?;
        let r: InspectionView = self.post(
            &format!("/v1/inspections/{}/audit", i.inspection_id),
            &AuditBody {
                audit: hex::encode(&audit),
            },
        )?;
        let receipt = hex_bytes(r.receipt.as_deref(), "receipt")?;
        let date = psd.receipt(&receipt)?;
        let mut reader = openpsd_core::wire::Reader::new(&date);
        openpsd_core::types::Date::read(&mut reader)
            .map_err(|_| RefillError::Card(ClientError::BadResponse(Side::Psd, "RECEIPT")))
    }
}

/// A confirmation's outcome as the CLI and the CA say it.
pub fn outcome_name(o: openpsd_core::psd::certmeter::revoke::Outcome) -> &'static str {
    match o {
        openpsd_core::psd::certmeter::revoke::Outcome::Paid => "paid",
        openpsd_core::psd::certmeter::revoke::Outcome::Due => "due",
    }
}

fn apply_message(
    psd: &mut PsdClient,
    set: RegisterSetIndex,
    r: &RefillView,
    progress: &mut dyn FnMut(&str),
) -> Result<(), RefillError> {
    let message = hex_bytes(r.refill_message.as_deref(), "refill_message")?;
    match psd.refill(set, &message) {
        Ok(regs) => progress(&format!(
            "refill message applied: DR {} control sum {}",
            regs.dr, regs.control_sum
        )),
        // Applied by an earlier run whose reply was lost: confirm it.
        Err(ClientError::Refused(_, _, Status::RefillReplayed)) => {
            progress("refill message was applied before")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn hex_bytes(v: Option<&str>, what: &str) -> Result<Vec<u8>, RefillError> {
    v.and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| RefillError::Http(format!("meter server sent no valid {what}")))
}

fn hex_array<const N: usize>(v: Option<&str>, what: &str) -> Result<[u8; N], RefillError> {
    hex_bytes(v, what)?
        .try_into()
        .map_err(|_| RefillError::Http(format!("meter server sent a {what} of the wrong length")))
}
