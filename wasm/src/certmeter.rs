//! The certificate meter (seed 004) in the browser: the second module's part (feature
//! `certmeter`, `scripts/wasm-pkg.sh cert`), in plain Rust on [`PsdDevice`] so it is tested
//! natively; `js_cert.rs` wraps it.
//!
//! The same PSD as the main module's (the page restores it from the same saved state): core
//! built with its `certmeter` feature adds the card's commands (LOAD RATE TABLE, LOAD TRUST
//! ANCHOR, GENERATE KEY, INSTALL KEY CERTIFICATE, ISSUE POSTMARK, REVOCATION REQUEST,
//! REVOKE KEY), and `openpsd-pki` expands the compact postmark into the RFC 3161 token and
//! verifies one, in the page. The document is never here: the page hashes it with
//! WebCrypto and hands over its SHA-256.

use openpsd_core::client::ClientError;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::info::CertMeterInfo;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates;
use openpsd_core::psd::certmeter::revoke::{Outcome, Reason, CHALLENGE_LEN};
use openpsd_core::psd::certmeter::state::SlotState;
use openpsd_core::psd::certmeter::tst::{self, CompactPostmark, PostmarkFields};
use openpsd_core::status::Status;
use openpsd_core::types::{Amount, RegisterSetIndex, TransactionId};
use serde::Serialize;

use crate::device::PsdDevice;
use crate::error::{ApiError, ApiResult};
use crate::views::{device_hex, parse_hex, Bytes, RegistersView};

/// One rate table the PSD holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateTableView {
    /// The table's version (rises with every table).
    pub version: u32,
    /// First day it applies, `YYYY-MM-DD`.
    pub effective: String,
    /// The table the PSD charges from today.
    pub in_effect: bool,
    /// Fee per service.
    pub fees: Vec<FeeView>,
}

/// One service's fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeeView {
    /// `postmark`, `certificate`, `revocation`, ... (the CLI's names).
    pub service: String,
    /// The service's code in the table.
    pub code: u8,
    /// Amount, e.g. "0.10".
    pub fee: String,
}

/// A key slot (never the scalar).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySlotView {
    /// Slot number.
    pub slot: u8,
    /// `pending`, `active` or `retired`.
    pub state: &'static str,
    /// `postmark`, `sign`, `agent` or `payment`.
    pub purpose: &'static str,
    /// Generation counter of the key.
    pub generation: u32,
    /// 8 hex digits.
    pub key_id: String,
    /// 130 hex digits.
    pub public_key: String,
    /// The certificate fee paid at install (amount).
    pub fee_paid: String,
    /// DER; empty while pending.
    pub certificate: Bytes,
}

/// GET DATA 00 05.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfoView {
    /// The rate tables held.
    pub tables: Vec<RateTableView>,
    /// Fees owed (amount), settled at the next refill.
    pub fees_due: String,
    /// Key slots in use.
    pub slots: Vec<KeySlotView>,
    /// Postmarks (and other serial-numbered services) issued.
    pub postmarks: u32,
    /// Trust anchors held.
    pub anchors: usize,
}

/// What GENERATE KEY answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedKey {
    /// Slot number.
    pub slot: u8,
    /// The key's purpose.
    pub purpose: &'static str,
    /// Generation counter of the key.
    pub generation: u32,
    /// The attestation, hex: `POST /v1/certificates`' `attestation`.
    pub attestation: String,
}

/// What INSTALL KEY CERTIFICATE answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledKey {
    /// Slot number.
    pub slot: u8,
    /// The fee (amount).
    pub fee: String,
    /// The paying set's registers after.
    pub registers: RegistersView,
}

/// The fields of a postmark's TSTInfo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostmarkView {
    /// 64 hex digits: the document's SHA-256 (the message imprint).
    pub digest: String,
    /// The PSD, 16 hex digits.
    pub device_id: String,
    /// The postmark counter (the serial's last 4 bytes).
    pub serial: u32,
    /// Unix seconds, UTC.
    pub gen_time: u64,
    /// The fee (amount).
    pub fee: String,
    /// The PSD's license.
    pub license: u32,
    /// The rate table the fee came from.
    pub table_version: u32,
}

impl From<&PostmarkFields> for PostmarkView {
    fn from(f: &PostmarkFields) -> Self {
        PostmarkView {
            digest: hex::encode(f.digest),
            device_id: device_hex(&f.device),
            serial: f.counter,
            gen_time: f.gen_time,
            fee: f.fee.to_string(),
            license: f.license.0,
            table_version: f.table_version,
        }
    }
}

/// What ISSUE POSTMARK gives the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedPostmark {
    /// 16 hex digits: re-send it to retry a lost answer (charged once).
    pub transaction_id: String,
    /// The compact postmark (what a DataMatrix label holds).
    pub compact: Bytes,
    /// The RFC 3161 TimeStampToken, DER (`.tst`), with the postmark certificate.
    pub token: Bytes,
    /// The postmark certificate, DER.
    pub certificate: Bytes,
    /// The token's TSTInfo fields (when it parses and verifies).
    pub fields: PostmarkView,
    /// The paying set's registers after.
    pub registers: RegistersView,
}

/// What REVOKE KEY answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokedKey {
    /// Slot number.
    pub slot: u8,
    /// The order's number.
    pub counter: u32,
    /// `paid` or `due`.
    pub outcome: &'static str,
    /// The fee (amount).
    pub fee: String,
    /// Fees owed (amount), settled at the next refill.
    pub fees_due: String,
    /// The confirmation, hex: `POST /v1/revocations/confirmations`' `confirmation`.
    pub confirmation: String,
    /// The paying set's registers after.
    pub registers: RegistersView,
}

/// What verifyPostmark returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostmarkVerification {
    /// Whether every check passed.
    pub valid: bool,
    /// Why not, when not.
    pub error: Option<String>,
    /// The token's TSTInfo fields (when it parses and verifies).
    pub fields: Option<PostmarkView>,
}

fn slot_state(s: SlotState) -> &'static str {
    match s {
        SlotState::Pending => "pending",
        SlotState::Active => "active",
        SlotState::Retired => "retired",
    }
}

fn purpose_of(name: &str) -> ApiResult<Purpose> {
    [
        Purpose::Postmark,
        Purpose::Sign,
        Purpose::AgentCa,
        Purpose::Payment,
    ]
    .into_iter()
    .find(|p| p.name() == name)
    .ok_or_else(|| ApiError::input("purpose: expected postmark, sign, agent or payment"))
}

fn digest_of(bytes: &[u8]) -> ApiResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| ApiError::input("digest: expected the 32 bytes of a SHA-256"))
}

fn hex_vec(field: &str, text: &str) -> ApiResult<Vec<u8>> {
    hex::decode(text).map_err(|_| ApiError::input(format!("{field}: expected hex")))
}

fn set_of(set: u8) -> RegisterSetIndex {
    RegisterSetIndex(set)
}

impl PsdDevice {
    /// Sets (or clears) the time the host vouches for, Unix seconds: the postmark's genTime.
    pub fn set_now(&mut self, now: Option<u64>) {
        self.card_mut().platform_mut().set_now(now);
    }

    fn certmeter(&mut self) -> ApiResult<CertMeterInfo> {
        Ok(self.client().certmeter_info()?)
    }

    /// The rate tables (the one in effect on the platform's date marked), slots, counters.
    pub fn cert_info(&mut self) -> ApiResult<CertInfoView> {
        let info = self.certmeter()?;
        let today = openpsd_core::platform::Platform::today(self.card_mut().platform_mut());
        let current = today.and_then(|d| rates::in_effect(&info.tables, d).map(|t| t.version));
        Ok(CertInfoView {
            tables: info
                .tables
                .iter()
                .map(|(t, _)| RateTableView {
                    version: t.version,
                    effective: t.effective.to_string(),
                    in_effect: Some(t.version) == current,
                    fees: t
                        .fees
                        .iter()
                        .map(|(s, f)| FeeView {
                            service: s.name().replace(' ', "_"),
                            code: s.code(),
                            fee: f.to_string(),
                        })
                        .collect(),
                })
                .collect(),
            fees_due: info.fees_due.to_string(),
            slots: info
                .slots
                .iter()
                .map(|s| KeySlotView {
                    slot: s.slot,
                    state: slot_state(s.state),
                    purpose: s.purpose.name(),
                    generation: s.generation,
                    key_id: hex::encode(openpsd_core::crypto::key_id(&s.public_key).0),
                    public_key: hex::encode(s.public_key),
                    fee_paid: s.fee_paid.to_string(),
                    certificate: Bytes(s.certificate.clone()),
                })
                .collect(),
            postmarks: info.postmarks,
            anchors: info.anchors.len(),
        })
    }

    /// The meter's `GET /v1/devices/{id}/updates`: signed rate tables and trust anchors (hex)
    /// loaded (LOAD RATE TABLE, LOAD TRUST ANCHOR); those held already, or older (`9A41`),
    /// are skipped. Returns how many tables and anchors were new.
    pub fn load_updates(&mut self, tables: &[String], anchors: &[String]) -> ApiResult<(u32, u32)> {
        let held = self.certmeter()?;
        let skip = |e: &ClientError| matches!(e, ClientError::Refused(_, _, Status::NotNewer));
        let mut n = (0, 0);
        for t in tables {
            let bytes = hex_vec("rate table", t)?;
            if held.tables.iter().any(|(_, b)| *b == bytes) {
                continue;
            }
            match self.client().load_rate_table(&bytes) {
                Ok(_) => n.0 += 1,
                Err(e) if skip(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for a in anchors {
            let bytes = hex_vec("trust anchor", a)?;
            if held.anchors.iter().any(|(_, b)| *b == bytes) {
                continue;
            }
            match self.client().load_trust_anchor(&bytes) {
                Ok(()) => n.1 += 1,
                Err(e) if skip(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    /// GENERATE KEY of `purpose` (`postmark`, `sign`, `agent`, `payment`).
    pub fn generate_key(&mut self, purpose: &str, replace: bool) -> ApiResult<GeneratedKey> {
        let purpose = purpose_of(purpose)?;
        let (bytes, a) = self.client().generate_key(purpose, replace)?;
        Ok(GeneratedKey {
            slot: a.slot,
            purpose: a.purpose.name(),
            generation: a.generation,
            attestation: hex::encode(bytes),
        })
    }

    /// INSTALL KEY CERTIFICATE: the CA's certificate (DER) for `slot`, the fee from `set`.
    pub fn install_key_certificate(
        &mut self,
        slot: u8,
        certificate: &[u8],
        set: u8,
    ) -> ApiResult<InstalledKey> {
        let (fee, regs) = self
            .client()
            .install_key_certificate(slot, set_of(set), certificate)?;
        Ok(InstalledKey {
            slot,
            fee: fee.to_string(),
            registers: RegistersView::new(set, &regs),
        })
    }

    /// ISSUE POSTMARK over a document's SHA-256, then the compact postmark expanded into the
    /// RFC 3161 token with the certificate of the key that signed it.
    pub fn issue_postmark(
        &mut self,
        digest: &[u8],
        transaction: Option<&str>,
        set: u8,
        nonce: &[u8],
    ) -> ApiResult<IssuedPostmark> {
        let digest = digest_of(digest)?;
        let transaction = match transaction {
            Some(t) => parse_hex::<8>("transactionId", t)?,
            None => {
                let mut id = [0u8; 8];
                openpsd_core::platform::Platform::fill_random(
                    self.card_mut().platform_mut(),
                    &mut id,
                );
                id
            }
        };
        // An INTEGER's magnitude: leading zero bytes are not part of it.
        let nonce: Vec<u8> = nonce.iter().copied().skip_while(|b| *b == 0).collect();
        if nonce.len() > 16 {
            return Err(ApiError::input("nonce: at most 16 bytes"));
        }
        let req = PostmarkRequest {
            transaction: TransactionId(transaction),
            digest,
            nonce,
        };
        let compact = self.client().issue_postmark(set_of(set), &req)?;
        let compact_bytes = compact.encode().map_err(|_| crate::device::malformed())?;
        let fields =
            tst::decode_tst_info(&compact.tst_info).map_err(|_| crate::device::malformed())?;
        let certificate = self.postmark_certificate(&compact)?;
        let token = openpsd_pki::postmark::expand(&compact, &certificate, &[])
            .map_err(|e| ApiError::state(format!("expanding the postmark: {e}")))?;
        let regs = self.client().registers(set_of(set))?;
        Ok(IssuedPostmark {
            transaction_id: hex::encode(transaction),
            compact: Bytes(compact_bytes),
            token: Bytes(token),
            certificate: Bytes(certificate),
            fields: PostmarkView::from(&fields),
            registers: RegistersView::new(set, &regs),
        })
    }

    /// The certificate of the postmark key that signed `compact` (a retry may answer a
    /// postmark of a key rotated since: its slot is retired, its certificate kept).
    fn postmark_certificate(&mut self, compact: &CompactPostmark) -> ApiResult<Vec<u8>> {
        let info = self.certmeter()?;
        info.slots
            .into_iter()
            .find(|s| {
                s.purpose == Purpose::Postmark
                    && openpsd_core::crypto::key_id(&s.public_key) == compact.key_id
                    && !s.certificate.is_empty()
            })
            .map(|s| s.certificate)
            .ok_or_else(|| {
                ApiError::state(
                    "the PSD no longer holds the certificate of the key that signed this postmark",
                )
            })
    }

    /// REVOCATION REQUEST for `slot` with a reason name (`unspecified`, `keyCompromise`, ...):
    /// the device-signed request, hex, for `POST /v1/revocations`.
    pub fn revocation_request(&mut self, slot: u8, reason: &str) -> ApiResult<String> {
        let reason = Reason::from_name(reason).ok_or_else(|| {
            ApiError::input(format!(
                "reason: expected one of {}",
                Reason::ALL.map(Reason::name).join(", ")
            ))
        })?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        openpsd_core::platform::Platform::fill_random(
            self.card_mut().platform_mut(),
            &mut challenge,
        );
        let request = self.client().revocation_request(slot, reason, &challenge)?;
        Ok(hex::encode(request))
    }

    /// REVOKE KEY: the CA's order (hex), the fee from `set` (or owed).
    pub fn revoke_key(&mut self, order: &str, set: u8) -> ApiResult<RevokedKey> {
        let order = hex_vec("order", order)?;
        let (confirmation, c) = self.client().revoke_key(set_of(set), &order)?;
        let regs = self.client().registers(RegisterSetIndex(c.set))?;
        let due: Amount = self.certmeter()?.fees_due;
        Ok(RevokedKey {
            slot: c.slot,
            counter: c.counter,
            outcome: match c.outcome {
                Outcome::Paid => "paid",
                Outcome::Due => "due",
            },
            fee: c.fee.to_string(),
            fees_due: due.to_string(),
            confirmation: hex::encode(confirmation),
            registers: RegistersView::new(c.set, &regs),
        })
    }
}

/// An RFC 3161 token checked in the page against a document's SHA-256 and the CA's
/// certificate (DER): imprint, signed attributes, signature, the signer certificate under
/// the CA with the critical timeStamping EKU, valid at genTime (`openpsd_pki::postmark::verify`;
/// revocation is not checked). Never throws for a bad token: `valid: false` and why.
pub fn verify_postmark(
    token: &[u8],
    digest: &[u8],
    ca_certificate: &[u8],
) -> ApiResult<PostmarkVerification> {
    let digest = digest_of(digest)?;
    let ca = openpsd_pki::der_of(ca_certificate)
        .map_err(|e| ApiError::input(format!("CA certificate: {e}")))?;
    let token = openpsd_pki::der_of(token).unwrap_or_else(|_| token.to_vec());
    Ok(match openpsd_pki::postmark::verify(&token, &digest, &ca) {
        Ok(f) => PostmarkVerification {
            valid: true,
            error: None,
            fields: Some(PostmarkView::from(&f)),
        },
        Err(e) => PostmarkVerification {
            valid: false,
            error: Some(format!("{e:#}")),
            fields: None,
        },
    })
}
