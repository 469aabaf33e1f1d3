//! [`PsdClient`]: the PSD's commands as typed calls over any [`Link`], following
//! `docs/apdu.md`; responses are decoded and indicia verified before they are handed out.

use alloc::vec::Vec;

use super::{exchange, psd_apdu, ClientError, Link, Side};
use crate::psd::audit::NONCE_LEN;
use crate::psd::certmeter::attestation::{KeyAttestation, Purpose};
use crate::psd::certmeter::info::CertMeterInfo;
use crate::psd::certmeter::postmark::PostmarkRequest;
use crate::psd::certmeter::tst::CompactPostmark;
use crate::psd::device::{DeviceInfo, Personalization};
use crate::psd::indicium::{self, IndiciumData, IndiciumRequest};
use crate::psd::license::install::Install;
use crate::psd::license::request::{LicenseAsk, LicenseRequest};
use crate::psd::license::{LicenseInfo, SlotInfo, DIGEST_LEN};
use crate::psd::registers::Registers;
use crate::psd::transfer::TransferInfo;
use crate::status::Status;
use crate::transfer::cert::RecognitionInfo;
use crate::types::{KeyId, LicenseId, RegisterSetIndex};

/// A PSD behind a link. It remembers the device's public key once read, to verify every
/// indicium it is handed.
pub struct PsdClient<L> {
    link: L,
    public_key: Option<[u8; 65]>,
    /// The signing keys of the licensed sets, by slot, as GET DATA 00 04 last showed them.
    set_keys: Vec<Option<[u8; 65]>>,
}

impl<L: Link> PsdClient<L> {
    /// A client on `link`; call [`PsdClient::select`] first.
    pub fn new(link: L) -> Self {
        Self {
            link,
            public_key: None,
            set_keys: Vec::new(),
        }
    }

    /// The link, for commands this client does not type.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }

    /// The link back.
    pub fn into_link(self) -> L {
        self.link
    }

    /// Sends a command; the response data of a `9000` (see [`exchange`]).
    pub fn exchange(&mut self, step: &'static str, apdu: &[u8]) -> Result<Vec<u8>, ClientError> {
        exchange(&mut self.link, Side::Psd, step, apdu)
    }

    /// SELECTs the PSD applet and reads its public data (`None` for a blank device).
    pub fn select(&mut self) -> Result<Option<DeviceInfo>, ClientError> {
        self.exchange("SELECT", &psd_apdu::select())?;
        self.info()
    }

    /// The device's public data; `None` for a blank device.
    pub fn info(&mut self) -> Result<Option<DeviceInfo>, ClientError> {
        let data = self.exchange("GET DATA", &psd_apdu::get_data())?;
        let info = DeviceInfo::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "GET DATA"))?;
        self.public_key = info.as_ref().map(|i| i.public_key);
        Ok(info)
    }

    /// PERSONALIZE (once in the device's life); the card's answer (its public key and
    /// identity, `docs/apdu.md`).
    pub fn personalize(&mut self, p: &Personalization) -> Result<Vec<u8>, ClientError> {
        self.exchange("PERSONALIZE", &psd_apdu::personalize(p))
    }

    /// PERSONALIZE P1 `01` with the outside signer's public key (feature `webcrypto`);
    /// the card's answer (the device key's ID and public key).
    #[cfg(feature = "webcrypto")]
    pub fn personalize_outside(
        &mut self,
        signer: &[u8; 65],
        p: &Personalization,
    ) -> Result<Vec<u8>, ClientError> {
        self.exchange("PERSONALIZE", &psd_apdu::personalize_outside(signer, p))
    }

    /// ISSUE INDICIUM on a PSD with an outside signer (feature `webcrypto`): the debit is
    /// committed and the answer is either the unsigned indicium, pending its signature
    /// ([`indicium::IssueAnswer::Pending`]), or, for a transaction already signed, the
    /// signed indicium verified under `signer`. Same transaction ID, same bytes, one debit.
    #[cfg(feature = "webcrypto")]
    pub fn issue_outside(
        &mut self,
        set: RegisterSetIndex,
        req: &IndiciumRequest,
        signer: &[u8; 65],
    ) -> Result<indicium::IssueAnswer, ClientError> {
        let ind = self.exchange("ISSUE INDICIUM", &psd_apdu::issue_indicium(set, req))?;
        indicium::IssueAnswer::read(ind, signer).map_err(ClientError::Indicium)
    }

    /// STORE SIGNATURE (feature `webcrypto`): the signed indicium, verified under `signer`.
    #[cfg(feature = "webcrypto")]
    pub fn store_signature(
        &mut self,
        set: RegisterSetIndex,
        signature: &[u8; 64],
        signer: &[u8; 65],
    ) -> Result<(Vec<u8>, IndiciumData), ClientError> {
        let ind = self.exchange(
            "STORE SIGNATURE",
            &psd_apdu::store_signature(set, signature),
        )?;
        let data = indicium::verify(&ind, signer).map_err(ClientError::Indicium)?;
        Ok((ind, data))
    }

    /// The registers of a set.
    pub fn registers(&mut self, set: RegisterSetIndex) -> Result<Registers, ClientError> {
        let data = self.exchange("READ REGISTERS", &psd_apdu::read_registers(set))?;
        Registers::decode(&data).map_err(|_| ClientError::BadResponse(Side::Psd, "READ REGISTERS"))
    }

    /// Issues an indicium and verifies it against the device's public key. After a link
    /// error, calling again with the same request (same transaction ID) returns the same
    /// indicium without a second debit.
    ///
    /// On a set signed outside the PSD (feature `webcrypto`) the card answers unsigned and
    /// GET DATA does not tell beforehand: the debit is committed and this returns
    /// [`ClientError::SignedOutside`] (call [`PsdClient::issue_outside`] with the same
    /// request). A host holding the card's store asks
    /// [`crate::psd::outside_signer::signs_outside`] first and refuses before the debit, as
    /// the wasm module does.
    pub fn issue_indicium(
        &mut self,
        set: RegisterSetIndex,
        req: &IndiciumRequest,
    ) -> Result<(Vec<u8>, IndiciumData), ClientError> {
        let public_key = match self.public_key {
            Some(pk) => pk,
            None => {
                self.info()?
                    .ok_or(ClientError::Refused(
                        Side::Psd,
                        "GET DATA",
                        Status::ConditionsNotSatisfied,
                    ))?
                    .public_key
            }
        };
        let ind = self.exchange("ISSUE INDICIUM", &psd_apdu::issue_indicium(set, req))?;
        // Unsigned bytes decode exactly; a signed indicium is 64 bytes longer.
        #[cfg(feature = "webcrypto")]
        if IndiciumData::decode(&ind).is_ok() {
            return Err(ClientError::SignedOutside);
        }
        let data =
            match indicium::verify(&ind, &public_key) {
                // A set added by a license signs with its own key: the one GET DATA 00 04
                // shows for its slot (read again if the slots changed since).
                Err(indicium::VerifyError::WrongKey) => {
                    let slot = usize::from(set.0);
                    let cached = self.set_keys.get(slot).copied().flatten();
                    match cached.map(|k| indicium::verify(&ind, &k)) {
                        Some(Ok(data)) => Ok(data),
                        _ => {
                            self.license_info()?;
                            let key =
                                self.set_keys.get(slot).copied().flatten().ok_or(
                                    ClientError::Indicium(indicium::VerifyError::WrongKey),
                                )?;
                            indicium::verify(&ind, &key)
                        }
                    }
                }
                other => other,
            }
            .map_err(ClientError::Indicium)?;
        Ok((ind, data))
    }

    /// The license slots, the pending request and the exports (GET DATA 00 04).
    pub fn license_info(&mut self) -> Result<LicenseInfo, ClientError> {
        let data = self.exchange("GET DATA", &psd_apdu::get_license_data())?;
        let info = LicenseInfo::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "GET DATA"))?;
        self.set_keys = info
            .slots
            .iter()
            .map(|s| match s {
                SlotInfo::Set { public_key, .. } => Some(*public_key),
                SlotInfo::Free => None,
            })
            .collect();
        Ok(info)
    }

    /// LOAD RATE TABLE: the table's version.
    pub fn load_rate_table(&mut self, table: &[u8]) -> Result<u32, ClientError> {
        let data = self.exchange("LOAD RATE TABLE", &psd_apdu::load_rate_table(table))?;
        let v: [u8; 4] = data
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::BadResponse(Side::Psd, "LOAD RATE TABLE"))?;
        Ok(u32::from_be_bytes(v))
    }

    /// LOAD TRUST ANCHOR.
    pub fn load_trust_anchor(&mut self, anchor: &[u8]) -> Result<(), ClientError> {
        self.exchange("LOAD TRUST ANCHOR", &psd_apdu::load_trust_anchor(anchor))?;
        Ok(())
    }

    /// GENERATE KEY (seed 004, Fig. 5 steps 508-512): the attestation's bytes and what
    /// they say (not checked here: the CA checks them against the device key).
    pub fn generate_key(
        &mut self,
        purpose: Purpose,
        replace: bool,
    ) -> Result<(Vec<u8>, KeyAttestation), ClientError> {
        let data = self.exchange("GENERATE KEY", &psd_apdu::generate_key(purpose, replace))?;
        let a = KeyAttestation::decode_unverified(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "GENERATE KEY"))?;
        Ok((data, a))
    }

    /// INSTALL KEY CERTIFICATE (step 520): the fee paid and the paying set's registers.
    pub fn install_key_certificate(
        &mut self,
        slot: u8,
        set: RegisterSetIndex,
        certificate: &[u8],
    ) -> Result<(crate::types::Amount, Registers), ClientError> {
        let data = self.exchange(
            "INSTALL KEY CERTIFICATE",
            &psd_apdu::install_key_certificate(slot, set, certificate),
        )?;
        let bad = || ClientError::BadResponse(Side::Psd, "INSTALL KEY CERTIFICATE");
        match data.as_slice() {
            [s, fee @ .., _] if *s == slot && fee.len() >= 8 => {
                let (fee, regs) = data[1..].split_at(8);
                let fee = u64::from_be_bytes(fee.try_into().map_err(|_| bad())?);
                let regs = Registers::decode(regs).map_err(|_| bad())?;
                Ok((crate::types::Amount(fee), regs))
            }
            _ => Err(bad()),
        }
    }

    /// ISSUE POSTMARK (seed 004, Fig. 3): the compact postmark, decoded (its signature is
    /// checked by whoever holds the certificate: `openpsd-pki`).
    pub fn issue_postmark(
        &mut self,
        set: RegisterSetIndex,
        req: &PostmarkRequest,
    ) -> Result<CompactPostmark, ClientError> {
        let data = self.exchange("ISSUE POSTMARK", &psd_apdu::issue_postmark(set, req))?;
        CompactPostmark::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "ISSUE POSTMARK"))
    }

    /// The certificate meter's public state (GET DATA 00 05).
    pub fn certmeter_info(&mut self) -> Result<CertMeterInfo, ClientError> {
        let data = self.exchange("GET DATA", &psd_apdu::get_certmeter_data())?;
        CertMeterInfo::decode(&data).map_err(|_| ClientError::BadResponse(Side::Psd, "GET DATA"))
    }

    /// LICENSE REQUEST (seed 003, Fig. 4 steps 60-62): the signed request for the
    /// manufacturer. `replace` makes a new one even if a request is pending.
    pub fn license_request(
        &mut self,
        ask: &LicenseAsk,
        replace: bool,
    ) -> Result<LicenseRequest, ClientError> {
        let data = self.exchange("LICENSE REQUEST", &psd_apdu::license_request(ask, replace))?;
        LicenseRequest::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "LICENSE REQUEST"))
    }

    /// LICENSE INSTALL (step 67): the slot of the new set, its key ID and its license.
    pub fn license_install(
        &mut self,
        install: &Install,
    ) -> Result<(RegisterSetIndex, KeyId, LicenseId), ClientError> {
        let data = self.exchange("LICENSE INSTALL", &psd_apdu::license_install(install))?;
        match data.as_slice() {
            [slot, k0, k1, k2, k3, l @ ..] if l.len() == 4 => Ok((
                RegisterSetIndex(*slot),
                KeyId([*k0, *k1, *k2, *k3]),
                LicenseId(u32::from_be_bytes([l[0], l[1], l[2], l[3]])),
            )),
            _ => Err(ClientError::BadResponse(Side::Psd, "LICENSE INSTALL")),
        }
    }

    /// EXPORT SET, prepare: the blob to write to disk (the set is frozen until commit or
    /// cancel). Asking again answers the same bytes.
    pub fn export_prepare(&mut self, set: RegisterSetIndex) -> Result<Vec<u8>, ClientError> {
        self.exchange("EXPORT SET", &psd_apdu::export_prepare(set))
    }

    /// EXPORT SET, commit, once the blob is synced to disk: the export's epoch.
    pub fn export_commit(
        &mut self,
        set: RegisterSetIndex,
        digest: &[u8; DIGEST_LEN],
    ) -> Result<u64, ClientError> {
        let data = self.exchange("EXPORT SET", &psd_apdu::export_commit(set, digest))?;
        let epoch: [u8; 8] = data
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::BadResponse(Side::Psd, "EXPORT SET"))?;
        Ok(u64::from_be_bytes(epoch))
    }

    /// EXPORT SET, cancel: the set is live again.
    pub fn export_cancel(&mut self, set: RegisterSetIndex) -> Result<(), ClientError> {
        self.exchange("EXPORT SET", &psd_apdu::export_cancel(set))
            .map(drop)
    }

    /// IMPORT SET: the slot the set came back to.
    pub fn import_set(&mut self, blob: &[u8]) -> Result<RegisterSetIndex, ClientError> {
        let data = self.exchange("IMPORT SET", &psd_apdu::import_set(blob))?;
        match data.as_slice() {
            [slot] => Ok(RegisterSetIndex(*slot)),
            _ => Err(ClientError::BadResponse(Side::Psd, "IMPORT SET")),
        }
    }

    /// RETIRE SET: the outstanding export of `epoch` given up; the signed receipt (the
    /// same bytes when asked again).
    pub fn retire_set(
        &mut self,
        epoch: u64,
    ) -> Result<crate::psd::license::retire::Receipt, ClientError> {
        let data = self.exchange("RETIRE SET", &psd_apdu::retire_set(epoch))?;
        crate::psd::license::retire::Receipt::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "RETIRE SET"))
    }

    /// RETIRE SET, forget: the retired entry of `epoch` leaves the table.
    pub fn forget_retired(&mut self, epoch: u64) -> Result<(), ClientError> {
        self.exchange("RETIRE SET", &psd_apdu::forget_retired(epoch))
            .map(drop)
    }

    /// An audit message (registers and `nonce`, MACed under K1) for the meter server.
    pub fn audit(
        &mut self,
        set: RegisterSetIndex,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, ClientError> {
        self.exchange("AUDIT", &psd_apdu::audit(set, nonce))
    }

    /// Applies a refill message; the registers after the credit.
    pub fn refill(
        &mut self,
        set: RegisterSetIndex,
        message: &[u8],
    ) -> Result<Registers, ClientError> {
        let data = self.exchange("REFILL", &psd_apdu::refill(set, message))?;
        Registers::decode(&data).map_err(|_| ClientError::BadResponse(Side::Psd, "REFILL"))
    }

    /// RECEIPT: the back office's acceptance of this session's last audit; the card's
    /// answer (the new inspection deadline, `docs/apdu.md`).
    pub fn receipt(&mut self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.exchange("RECEIPT", &psd_apdu::receipt(message))
    }

    /// The PSD's transfer data (GET DATA 00 02).
    pub fn transfer_info(&mut self) -> Result<TransferInfo, ClientError> {
        let data = self.exchange("GET DATA", &psd_apdu::get_transfer_data())?;
        TransferInfo::decode(&data).map_err(|_| ClientError::BadResponse(Side::Psd, "GET DATA"))
    }

    /// The PSD's recognition key, certificate and revocation version (GET DATA 00 03).
    pub fn recognition_info(&mut self) -> Result<RecognitionInfo, ClientError> {
        let data = self.exchange("GET DATA", &psd_apdu::get_recognition_data())?;
        RecognitionInfo::decode(&data).map_err(|_| ClientError::BadResponse(Side::Psd, "GET DATA"))
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key.
    pub fn install_certificate(&mut self, certificate: &[u8]) -> Result<(), ClientError> {
        self.exchange(
            "INSTALL CERTIFICATE",
            &psd_apdu::install_certificate(certificate),
        )
        .map(drop)
    }

    /// LOAD REVOCATION: the issuer's revocation list.
    pub fn load_revocation(&mut self, list: &[u8]) -> Result<(), ClientError> {
        self.exchange("LOAD REVOCATION", &psd_apdu::load_revocation(list))
            .map(drop)
    }

    /// RESET RECOGNITION with the issuer's data (counter ‖ MAC under K1).
    pub fn reset_recognition(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.exchange("RESET RECOGNITION", &psd_apdu::reset_recognition(data))
            .map(drop)
    }

    /// TRANSFER RESOLVE P1 `01`: the issuer's settlement of the pending transfer (counter ‖
    /// decision ‖ signature, [`crate::psd::settle::settle_transfer_data`]); the decision the
    /// PSD applied and the register set after.
    pub fn settle_transfer(
        &mut self,
        data: &[u8],
    ) -> Result<(crate::psd::settle::Decision, Registers), ClientError> {
        let bad = || ClientError::BadResponse(Side::Psd, "TRANSFER RESOLVE");
        let out = self.exchange("TRANSFER RESOLVE", &psd_apdu::transfer_settle(data))?;
        let (&code, rest) = out.split_first().ok_or_else(bad)?;
        let decision = crate::psd::settle::Decision::from_code(code).ok_or_else(bad)?;
        let registers = Registers::decode(rest).map_err(|_| bad())?;
        Ok((decision, registers))
    }

    /// SIGN (seed 004): the compact signature, decoded (its signature is checked by
    /// whoever holds the sign certificate: `openpsd-pki`).
    pub fn sign(
        &mut self,
        set: RegisterSetIndex,
        req: &crate::psd::certmeter::sign::SignRequest,
    ) -> Result<crate::psd::certmeter::sign::CompactSignature, ClientError> {
        let data = self.exchange("SIGN", &psd_apdu::sign(set, req))?;
        crate::psd::certmeter::sign::CompactSignature::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "SIGN"))
    }

    /// VALIDATE POSTMARK (seed 004, Fig. 4): the receipt's bytes, checked against
    /// `device_public_key` (this PSD's device key) and decoded.
    pub fn validate_postmark(
        &mut self,
        set: RegisterSetIndex,
        req: &crate::psd::certmeter::validate::ValidateRequest,
        device_public_key: &[u8],
    ) -> Result<(Vec<u8>, crate::psd::certmeter::validate::ValidationReceipt), ClientError> {
        let data = self.exchange("VALIDATE POSTMARK", &psd_apdu::validate_postmark(set, req))?;
        let receipt =
            crate::psd::certmeter::validate::ValidationReceipt::open(&data, device_public_key)
                .map_err(|_| ClientError::BadResponse(Side::Psd, "VALIDATE POSTMARK"))?;
        Ok((data, receipt))
    }

    /// ISSUE AGENT CERTIFICATE (mode 00): the fee and the employee's certificate.
    pub fn issue_agent_certificate(
        &mut self,
        set: RegisterSetIndex,
        req: &crate::psd::certmeter::agent::AgentRequest,
    ) -> Result<crate::psd::certmeter::agent::AgentIssued, ClientError> {
        let data = self.exchange(
            "ISSUE AGENT CERTIFICATE",
            &psd_apdu::issue_agent_certificate(set, req),
        )?;
        crate::psd::certmeter::agent::AgentIssued::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "ISSUE AGENT CERTIFICATE"))
    }

    /// ISSUE AGENT CERTIFICATE (mode 01): the fee, the certificate and the generated key
    /// encrypted under the request's password.
    pub fn generate_agent_certificate(
        &mut self,
        set: RegisterSetIndex,
        req: &crate::psd::certmeter::agent::GenerateRequest,
    ) -> Result<crate::psd::certmeter::agent::AgentGenerated, ClientError> {
        let data = self.exchange(
            "ISSUE AGENT CERTIFICATE",
            &psd_apdu::generate_agent_certificate(set, req),
        )?;
        crate::psd::certmeter::agent::AgentGenerated::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "ISSUE AGENT CERTIFICATE"))
    }

    /// LOAD CREDIT LINE (seed 004, Fig. 8): the creditor's line of credit certificate;
    /// `set` pays the credit-line fee if the rate table prices it.
    pub fn load_credit_line(
        &mut self,
        set: RegisterSetIndex,
        certificate: &[u8],
    ) -> Result<crate::psd::certmeter::credit::LineReply, ClientError> {
        let data = self.exchange(
            "LOAD CREDIT LINE",
            &psd_apdu::load_credit_line(set, certificate),
        )?;
        crate::psd::certmeter::credit::LineReply::decode(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "LOAD CREDIT LINE"))
    }

    /// PAY (seed 004, Fig. 9): the fee and the payment certificate, decoded (its signature
    /// is checked by whoever holds the line certificate).
    pub fn pay(
        &mut self,
        set: RegisterSetIndex,
        req: &crate::psd::certmeter::credit::PayRequest,
    ) -> Result<
        (
            crate::types::Amount,
            crate::psd::certmeter::credit::PaymentCertificate,
        ),
        ClientError,
    > {
        let data = self.exchange("PAY", &psd_apdu::pay(set, req))?;
        crate::psd::certmeter::credit::split_pay_reply(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "PAY"))
    }

    /// REVOCATION REQUEST (seed 004, Fig. 6 step 604): the device-signed request to revoke
    /// the certificate of the key in `slot`, for the CA.
    pub fn revocation_request(
        &mut self,
        slot: u8,
        reason: crate::psd::certmeter::revoke::Reason,
        challenge: &[u8; crate::psd::certmeter::revoke::CHALLENGE_LEN],
    ) -> Result<Vec<u8>, ClientError> {
        let data = self.exchange(
            "REVOCATION REQUEST",
            &psd_apdu::revocation_request(slot, reason, challenge),
        )?;
        crate::psd::certmeter::revoke::RevocationRequest::decode_unverified(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "REVOCATION REQUEST"))?;
        Ok(data)
    }

    /// REVOKE KEY (seed 004, Fig. 6 steps 612-620): applies the CA's order; the signed
    /// confirmation (bytes, and decoded) for the CA.
    pub fn revoke_key(
        &mut self,
        set: RegisterSetIndex,
        order: &[u8],
    ) -> Result<
        (
            Vec<u8>,
            crate::psd::certmeter::revoke::RevocationConfirmation,
        ),
        ClientError,
    > {
        let data = self.exchange("REVOKE KEY", &psd_apdu::revoke_key(set, order))?;
        let c = crate::psd::certmeter::revoke::RevocationConfirmation::decode_unverified(&data)
            .map_err(|_| ClientError::BadResponse(Side::Psd, "REVOKE KEY"))?;
        Ok((data, c))
    }
}
