//! The outside signer in the browser (feature `webcrypto`: the third module,
//! `web/webcrypto/`, wasm/API.md § WebCrypto signer), in plain Rust on [`PsdDevice`] so it is
//! tested natively; `js/webcrypto.rs` wraps it and `wasm/js/webcrypto.js` drives it.
//!
//! The PSD is personalized with the public key of a P-256 key the page keeps as a
//! non-extractable WebCrypto `CryptoKey` (PERSONALIZE P1 `01`): that key never enters this
//! module, its memory or a saved state. ISSUE INDICIUM commits the debit and answers the
//! unsigned indicium ([`OutsideIssuedView`] with `pending`); the page signs it with
//! `crypto.subtle.sign` and hands the signature to STORE SIGNATURE, which the PSD verifies
//! and keeps with the indicium before answering the signed one.

use openpsd_core::client::{command, exchange, psd_apdu, Link, Side};
use openpsd_core::psd::indicium::{IndiciumData, IssueAnswer};
use openpsd_core::psd::{ins, psd_card, CLA_PSD};
use openpsd_core::store::MemStore;
use openpsd_core::types::RegisterSetIndex;
use serde::Serialize;

use crate::device::{entropy, today, PsdDevice};
use crate::entropy::HostEntropy;
use crate::error::{ApiError, ApiResult};
use crate::views::{Bytes, FieldsView, IndiciumArgs, IssuedView, RegistersView};

/// What `issueUnsigned` returns: the indicium waiting for its signature, or (a retry of a
/// transaction whose signature is stored) the signed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutsideIssuedView {
    /// `true`: sign `payload` and call `storeSignature`; `false`: `barcode` is signed.
    pub pending: bool,
    /// The transaction ID sent (16 hex digits).
    pub transaction_id: String,
    /// The register set.
    pub set: u8,
    /// The bytes to sign (the indicium's signed part).
    pub payload: Bytes,
    /// The signature, r ‖ s (empty while pending).
    pub signature: Bytes,
    /// payload ‖ signature (empty while pending).
    pub barcode: Bytes,
    /// The payload decoded.
    pub fields: FieldsView,
    /// The set's registers (the debit is committed either way).
    pub registers: RegistersView,
}

/// The signer's public key from the page: 65 bytes, SEC1 uncompressed.
fn signer_key(bytes: &[u8]) -> ApiResult<[u8; 65]> {
    bytes.try_into().map_err(|_| {
        ApiError::input(format!(
            "signerPublicKey: 65 bytes (exportKey('raw') of the P-256 public key), got {}",
            bytes.len()
        ))
    })
}

impl PsdDevice {
    /// A fresh card personalized with PERSONALIZE P1 `01`: the signer's public key (65)
    /// ‖ `personalization` (the room's data as for [`PsdDevice::create`]).
    pub fn create_outside(
        signer_public_key: &[u8],
        personalization: &[u8],
        entropy_bytes: &[u8],
        today_text: Option<&str>,
    ) -> ApiResult<Self> {
        let signer = signer_key(signer_public_key)?;
        let platform = HostEntropy::new(entropy(entropy_bytes)?, today(today_text)?);
        let mut card = psd_card(MemStore::new(), platform)
            .map_err(|e| ApiError::state(format!("blank store does not load: {e}")))?;
        let link: &mut dyn Link = &mut card;
        exchange(link, Side::Psd, "SELECT", &psd_apdu::select())?;
        let mut data = signer.to_vec();
        data.extend_from_slice(personalization);
        let apdu = command(CLA_PSD, ins::PERSONALIZE, 1, 0, &data, 256);
        if apdu.is_empty() {
            return Err(ApiError::input(
                "personalization: longer than one APDU carries",
            ));
        }
        exchange(link, Side::Psd, "PERSONALIZE", &apdu)?;
        Ok(PsdDevice::from_card(card))
    }

    /// ISSUE INDICIUM on a PSD with an outside signer: the debit committed, the unsigned
    /// indicium (or the signed one, for a transaction already signed). `signer`: its key,
    /// which a signed answer must verify under.
    pub fn issue_unsigned(
        &mut self,
        args: &IndiciumArgs,
        signer_public_key: &[u8],
    ) -> ApiResult<OutsideIssuedView> {
        let signer = signer_key(signer_public_key)?;
        let set = args.set.unwrap_or(0);
        let req = self.indicium_request(args)?;
        let answer = self
            .client()
            .issue_outside(RegisterSetIndex(set), &req, &signer)?;
        let (pending, payload_len, bytes, fields) = match answer {
            IssueAnswer::Pending(bytes, fields) => (true, bytes.len(), bytes, fields),
            IssueAnswer::Signed(bytes, fields) => {
                (false, bytes.len().saturating_sub(64), bytes, fields)
            }
        };
        let (payload, signature) = bytes.split_at(payload_len);
        Ok(OutsideIssuedView {
            pending,
            transaction_id: hex::encode(req.transaction.0),
            set,
            payload: Bytes(payload.to_vec()),
            signature: Bytes(signature.to_vec()),
            barcode: Bytes(if pending { Vec::new() } else { bytes.clone() }),
            fields: FieldsView::from(&fields),
            registers: self.registers(set)?,
        })
    }

    /// STORE SIGNATURE: `signature` (r ‖ s, 64 bytes, as `crypto.subtle.sign` gives it) of
    /// `set`'s pending indicium; the signed indicium, verified under `signer`.
    pub fn store_signature(
        &mut self,
        set: u8,
        transaction_id: &str,
        signature: &[u8],
        signer_public_key: &[u8],
    ) -> ApiResult<IssuedView> {
        let signer = signer_key(signer_public_key)?;
        let sig: [u8; 64] = signature.try_into().map_err(|_| {
            ApiError::input(format!(
                "signature: 64 bytes (r ‖ s), got {}",
                signature.len()
            ))
        })?;
        let (indicium, fields) =
            self.client()
                .store_signature(RegisterSetIndex(set), &sig, &signer)?;
        let split = indicium.len() - 64;
        let data: IndiciumData = fields;
        Ok(IssuedView {
            transaction_id: transaction_id.to_string(),
            payload: Bytes(indicium[..split].to_vec()),
            signature: Bytes(indicium[split..].to_vec()),
            barcode: Bytes(indicium),
            fields: FieldsView::from(&data),
            registers: self.registers(set)?,
        })
    }
}
