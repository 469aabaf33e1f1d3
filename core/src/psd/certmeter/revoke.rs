//! Revocation (seed 004, Fig. 6): the PSD asks the certificate authority to revoke one of
//! its certified keys (REVOCATION REQUEST, signed by the device key), the CA revokes the
//! certificate and answers a signed order (REVOKE KEY carries it to the PSD), and the PSD
//! retires the key, erases its scalar and pays the Revocation fee in one commit, then
//! answers a device-signed confirmation the CA records (step 622).
//!
//! A revocation never waits for funds: if the register set's DR cannot pay the fee it is
//! owed (`fees_due`), which blocks every paid service (`9A42`) until a refill settles it
//! (`refill.rs`). Orders are numbered per device by the CA and applied in rising order;
//! the PSD keeps the last one's confirmation, so the same order again answers the same
//! bytes and an older one is refused.
//!
//! Layouts (`docs/apdu.md` §§ 4.30-4.31), all ECDSA P-256 `r ‖ s` over a label ‖ the body:
//!
//! ```text
//! request      E1 | 01 | device 8 | slot 1 | purpose 1 | generation u32 | public key 65 |
//!              certificate SHA-256 32 | reason 1 | challenge 16
//!              ‖ device key over "openpsd revocation request v1"
//! order        E2 | 01 | device 8 | slot 1 | certificate SHA-256 32 | reason 1 | counter u32
//!              ‖ CA key over "openpsd revocation order v1"
//! confirmation E3 | 01 | device 8 | slot 1 | certificate SHA-256 32 | counter u32 |
//!              outcome 1 (01 paid, 02 due) | fee u64 | set 1
//!              ‖ device key over "openpsd revocation confirmation v1"
//! ```

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::types::{Amount, DeviceId};
use crate::wire::{Malformed, OpenError, Reader, Writer};

use super::attestation::Purpose;

/// First byte of a revocation request.
pub const REQUEST_TAG: u8 = 0xE1;
/// First byte of a revocation order.
pub const ORDER_TAG: u8 = 0xE2;
/// First byte of a revocation confirmation.
pub const CONFIRMATION_TAG: u8 = 0xE3;
/// Layout version of all three.
const LAYOUT: u8 = 1;
/// What the device key signs before a request's body.
pub const REQUEST_LABEL: &[u8] = b"openpsd revocation request v1";
/// What the CA key signs before an order's body.
pub const ORDER_LABEL: &[u8] = b"openpsd revocation order v1";
/// What the device key signs before a confirmation's body.
pub const CONFIRMATION_LABEL: &[u8] = b"openpsd revocation confirmation v1";
/// Length of the CA's challenge a request carries.
pub const CHALLENGE_LEN: usize = 16;
/// Length of REVOCATION REQUEST's command data: reason ‖ challenge.
pub const REQUEST_COMMAND_LEN: usize = 1 + CHALLENGE_LEN;
const REQUEST_BODY_LEN: usize = 2 + 8 + 1 + 1 + 4 + PUBLIC_KEY_LEN + 32 + 1 + CHALLENGE_LEN;
/// Length of a signed request.
pub const REQUEST_LEN: usize = REQUEST_BODY_LEN + SIGNATURE_LEN;
const ORDER_BODY_LEN: usize = 2 + 8 + 1 + 32 + 1 + 4;
/// Length of a signed order.
pub const ORDER_LEN: usize = ORDER_BODY_LEN + SIGNATURE_LEN;
const CONFIRMATION_BODY_LEN: usize = 2 + 8 + 1 + 32 + 4 + 1 + 8 + 1;
/// Length of a signed confirmation.
pub const CONFIRMATION_LEN: usize = CONFIRMATION_BODY_LEN + SIGNATURE_LEN;

/// Why a key is revoked: RFC 5280's CRLReason codes the PSD lets a holder give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// unspecified (0).
    Unspecified = 0,
    /// keyCompromise (1).
    KeyCompromise = 1,
    /// affiliationChanged (3).
    AffiliationChanged = 3,
    /// superseded (4).
    Superseded = 4,
    /// cessationOfOperation (5).
    CessationOfOperation = 5,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 5] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
    ];

    /// The reason of `code`.
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u8 == code)
    }

    /// Its code (RFC 5280 § 5.3.1).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Its RFC 5280 name, as the CLI and the CA say it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
        }
    }

    /// The reason named `name` (RFC 5280 spelling, case-insensitive).
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }
}

/// Splits `msg` of `len` bytes into body and signature, checking the signature.
fn open_signed<'m>(
    msg: &'m [u8],
    len: usize,
    key: &[u8],
    label: &[u8],
) -> Result<&'m [u8], OpenError> {
    if msg.len() != len {
        return Err(Malformed::Length.into());
    }
    let (body, sig) = msg.split_at(len - SIGNATURE_LEN);
    if !crypto::verify_labelled(key, label, body, sig) {
        return Err(OpenError::Unauthentic);
    }
    Ok(body)
}

fn signed(mut body: Vec<u8>, key: &IndiciumKey, label: &[u8]) -> Vec<u8> {
    let sig = key.sign_labelled(label, &body);
    body.extend_from_slice(&sig);
    body
}

/// What the PSD asks the CA (REVOCATION REQUEST's reply, seed 004 Fig. 6 step 604).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationRequest {
    /// The PSD.
    pub device: DeviceId,
    /// The key slot.
    pub slot: u8,
    /// The key's purpose.
    pub purpose: Purpose,
    /// The key's generation (its attestation and the CA's record name it).
    pub generation: u32,
    /// The key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// SHA-256 of the key's certificate (DER).
    pub certificate_hash: [u8; 32],
    /// Why.
    pub reason: Reason,
    /// The caller's challenge (fresh bytes: the signature is over them).
    pub challenge: [u8; CHALLENGE_LEN],
}

impl RevocationRequest {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(REQUEST_LEN);
        w.put_u8(REQUEST_TAG);
        w.put_u8(LAYOUT);
        w.extend_from_slice(&self.device.0);
        w.put_u8(self.slot);
        w.put_u8(self.purpose.code());
        w.put_u32(self.generation);
        w.extend_from_slice(&self.public_key);
        w.extend_from_slice(&self.certificate_hash);
        w.put_u8(self.reason.code());
        w.extend_from_slice(&self.challenge);
        w
    }

    /// The signed request (the card's side).
    pub fn sign(&self, device_key: &IndiciumKey) -> Vec<u8> {
        signed(self.body(), device_key, REQUEST_LABEL)
    }

    /// Decodes without checking the signature (to find the device whose key checks it).
    pub fn decode_unverified(msg: &[u8]) -> Result<RevocationRequest, Malformed> {
        if msg.len() != REQUEST_LEN {
            return Err(Malformed::Length);
        }
        let mut r = Reader::new(&msg[..REQUEST_BODY_LEN]);
        if r.u8()? != REQUEST_TAG || r.u8()? != LAYOUT {
            return Err(Malformed::Value);
        }
        let req = RevocationRequest {
            device: DeviceId(r.array()?),
            slot: r.u8()?,
            purpose: Purpose::from_code(r.u8()?).ok_or(Malformed::Value)?,
            generation: r.u32()?,
            public_key: r.array()?,
            certificate_hash: r.array()?,
            reason: Reason::from_code(r.u8()?).ok_or(Malformed::Value)?,
            challenge: r.array()?,
        };
        r.finish()?;
        Ok(req)
    }

    /// Decodes and checks the device's signature (with the key the KMS registered for it).
    pub fn open(msg: &[u8], device_public_key: &[u8]) -> Result<RevocationRequest, OpenError> {
        open_signed(msg, REQUEST_LEN, device_public_key, REQUEST_LABEL)?;
        Ok(Self::decode_unverified(msg)?)
    }
}

/// The CA's order to retire a key (REVOKE KEY's command data, Fig. 6 step 612).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationOrder {
    /// The PSD.
    pub device: DeviceId,
    /// The key slot.
    pub slot: u8,
    /// SHA-256 of the revoked certificate.
    pub certificate_hash: [u8; 32],
    /// Why.
    pub reason: Reason,
    /// The CA's order number for this device: 1, 2, ... (the PSD applies rising ones only).
    pub counter: u32,
}

impl RevocationOrder {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(ORDER_LEN);
        w.put_u8(ORDER_TAG);
        w.put_u8(LAYOUT);
        w.extend_from_slice(&self.device.0);
        w.put_u8(self.slot);
        w.extend_from_slice(&self.certificate_hash);
        w.put_u8(self.reason.code());
        w.put_u32(self.counter);
        w
    }

    /// The signed order (the CA's side).
    pub fn sign(&self, ca_key: &IndiciumKey) -> Vec<u8> {
        signed(self.body(), ca_key, ORDER_LABEL)
    }

    /// Checks the CA's signature, then decodes.
    pub fn open(msg: &[u8], ca_public_key: &[u8]) -> Result<RevocationOrder, OpenError> {
        let body = open_signed(msg, ORDER_LEN, ca_public_key, ORDER_LABEL)?;
        let mut r = Reader::new(body);
        if r.u8()? != ORDER_TAG || r.u8()? != LAYOUT {
            return Err(Malformed::Value.into());
        }
        let o = RevocationOrder {
            device: DeviceId(r.array()?),
            slot: r.u8()?,
            certificate_hash: r.array()?,
            reason: Reason::from_code(r.u8()?).ok_or(Malformed::Value)?,
            counter: r.u32()?,
        };
        r.finish()?;
        Ok(o)
    }
}

/// How the fee of a revocation was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Debited from the set's DR.
    Paid = 1,
    /// Owed: added to the fees due, settled by the next refill.
    Due = 2,
}

/// The PSD's word that it retired the key (REVOKE KEY's reply, Fig. 6 step 620).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationConfirmation {
    /// The PSD.
    pub device: DeviceId,
    /// The key slot.
    pub slot: u8,
    /// SHA-256 of the revoked certificate.
    pub certificate_hash: [u8; 32],
    /// The order's counter.
    pub counter: u32,
    /// Paid or due.
    pub outcome: Outcome,
    /// The Revocation fee.
    pub fee: Amount,
    /// The register set charged (or owing).
    pub set: u8,
}

impl RevocationConfirmation {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(CONFIRMATION_LEN);
        w.put_u8(CONFIRMATION_TAG);
        w.put_u8(LAYOUT);
        w.extend_from_slice(&self.device.0);
        w.put_u8(self.slot);
        w.extend_from_slice(&self.certificate_hash);
        w.put_u32(self.counter);
        w.put_u8(self.outcome as u8);
        w.put_u64(self.fee.0);
        w.put_u8(self.set);
        w
    }

    /// The signed confirmation (the card's side).
    pub fn sign(&self, device_key: &IndiciumKey) -> Vec<u8> {
        signed(self.body(), device_key, CONFIRMATION_LABEL)
    }

    /// Decodes without checking the signature.
    pub fn decode_unverified(msg: &[u8]) -> Result<RevocationConfirmation, Malformed> {
        if msg.len() != CONFIRMATION_LEN {
            return Err(Malformed::Length);
        }
        let mut r = Reader::new(&msg[..CONFIRMATION_BODY_LEN]);
        if r.u8()? != CONFIRMATION_TAG || r.u8()? != LAYOUT {
            return Err(Malformed::Value);
        }
        let c = RevocationConfirmation {
            device: DeviceId(r.array()?),
            slot: r.u8()?,
            certificate_hash: r.array()?,
            counter: r.u32()?,
            outcome: match r.u8()? {
                1 => Outcome::Paid,
                2 => Outcome::Due,
                _ => return Err(Malformed::Value),
            },
            fee: Amount(r.u64()?),
            set: r.u8()?,
        };
        r.finish()?;
        Ok(c)
    }

    /// Decodes and checks the device's signature.
    pub fn open(msg: &[u8], device_public_key: &[u8]) -> Result<RevocationConfirmation, OpenError> {
        open_signed(msg, CONFIRMATION_LEN, device_public_key, CONFIRMATION_LABEL)?;
        Ok(Self::decode_unverified(msg)?)
    }
}

/// The commands (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;

    use super::{
        Outcome, Reason, RevocationConfirmation, RevocationOrder, RevocationRequest, CHALLENGE_LEN,
        REQUEST_COMMAND_LEN,
    };
    use crate::card::Ctx;
    use crate::crypto;
    use crate::psd::certmeter::anchor::AnchorKind;
    use crate::psd::certmeter::rates::{self, Service};
    use crate::psd::certmeter::state::{LastRevocation, SlotState};
    use crate::status::Status;
    use crate::types::{Amount, RegisterSetIndex};

    impl crate::psd::PsdApplet {
        /// REVOCATION REQUEST (80 7A slot 00): the device-signed request to revoke the
        /// certificate of the key in `slot`. Command data: reason 1 ‖ challenge 16. Writes
        /// nothing.
        pub(in crate::psd) fn revocation_request(
            &self,
            slot: u8,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            if data.len() != REQUEST_COMMAND_LEN {
                return Err(Status::WrongLength);
            }
            let reason = Reason::from_code(data[0]).ok_or(Status::WrongData)?;
            let mut challenge = [0u8; CHALLENGE_LEN];
            challenge.copy_from_slice(&data[1..]);
            let device = self.device()?;
            let s = self
                .persistent
                .certmeter
                .slots
                .get(usize::from(slot))
                .and_then(Option::as_ref)
                .ok_or(Status::NoKeyForPurpose)?;
            // A pending key has no certificate to revoke.
            if s.state == SlotState::Pending || s.certificate.is_empty() {
                return Err(Status::CertificateMismatch);
            }
            let req = RevocationRequest {
                device: device.id,
                slot,
                purpose: s.purpose,
                generation: s.generation,
                public_key: s.public_key,
                certificate_hash: s.certificate_hash(),
                reason,
                challenge,
            };
            reply.extend_from_slice(&req.sign(&device.key));
            Ok(())
        }

        /// REVOKE KEY (80 7C 00 set): applies the CA's signed order. Every check first
        /// (signature, device, counter, slot and certificate), then one commit: the key
        /// retired and its scalar erased, the Revocation fee paid from the set's DR or
        /// added to the fees due, the order's counter and the signed confirmation (the
        /// reply, kept so the same order again answers the same bytes).
        pub(in crate::psd) fn revoke_key(
            &mut self,
            ctx: &mut Ctx<'_>,
            set: RegisterSetIndex,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let i = self.live_set_index(set)?;
            let device = self.device()?;
            let p = &self.persistent;
            let cm = &p.certmeter;
            let ca = cm
                .anchor(AnchorKind::CertificateCa)
                .ok_or(Status::CertificateMismatch)?;
            let order = RevocationOrder::open(data, &ca.public_key)?;
            if order.device != device.id {
                return Err(Status::WrongDevice);
            }
            let digest = crypto::sha256(data);
            if order.counter <= cm.orders {
                // The same order again: the same confirmation, nothing written.
                if let Some(last) = cm
                    .last_revocation
                    .as_ref()
                    .filter(|l| order.counter == cm.orders && l.order == digest)
                {
                    reply.extend_from_slice(&last.confirmation);
                    return Ok(());
                }
                return Err(Status::NotNewer);
            }
            let s = usize::from(order.slot);
            let slot = cm
                .slots
                .get(s)
                .and_then(Option::as_ref)
                .ok_or(Status::CertificateMismatch)?;
            if slot.state == SlotState::Pending
                || slot.certificate.is_empty()
                || slot.certificate_hash() != order.certificate_hash
            {
                return Err(Status::CertificateMismatch);
            }
            let today = ctx.platform.today().ok_or(Status::ClockRefused)?;
            // A revocation is never refused for want of a price: no table in effect, or
            // none that prices it, makes it free.
            let fee = rates::in_effect(&cm.tables, today)
                .and_then(|t| t.fee(Service::Revocation))
                .unwrap_or(Amount::ZERO);
            let set_now = p.set(i)?;
            // Never waits for funds: what DR cannot pay is owed.
            let (outcome, next_set, fees_due) = if set_now.dr >= fee {
                (Outcome::Paid, set_now.charge(fee)?, cm.fees_due)
            } else {
                let due = cm
                    .fees_due
                    .checked_add(fee)
                    .ok_or(Status::CounterOverflow)?;
                (Outcome::Due, set_now.count_service()?, due)
            };
            let confirmation = RevocationConfirmation {
                device: device.id,
                slot: order.slot,
                certificate_hash: order.certificate_hash,
                counter: order.counter,
                outcome,
                fee,
                set: u8::try_from(i).map_err(|_| Status::Internal)?,
            }
            .sign(&device.key);
            let mut next = cm.clone();
            // Already retired (replaced by a newer key): the scalar is gone; the order
            // still confirms and is charged the same, for the CA revoked the certificate.
            let retired = next
                .slots
                .get_mut(s)
                .and_then(Option::as_mut)
                .ok_or(Status::Internal)?;
            retired.state = SlotState::Retired;
            retired.key = None;
            next.fees_due = fees_due;
            next.orders = order.counter;
            next.last_revocation = Some(LastRevocation {
                order: digest,
                confirmation: confirmation.clone(),
            });
            // The scalar is out of the record; no older copy of the record may keep it.
            self.commit_service(ctx, i, next_set, next, true)?;
            reply.extend_from_slice(&confirmation);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_opens_under_its_signer_only() {
        let device = IndiciumKey::from_bytes(&[3; 32]).unwrap();
        let ca = IndiciumKey::from_bytes(&[4; 32]).unwrap();
        let req = RevocationRequest {
            device: DeviceId([1; 8]),
            slot: 2,
            purpose: Purpose::Postmark,
            generation: 7,
            public_key: ca.public_key(),
            certificate_hash: [9; 32],
            reason: Reason::KeyCompromise,
            challenge: [5; CHALLENGE_LEN],
        };
        let msg = req.sign(&device);
        assert_eq!(msg.len(), REQUEST_LEN);
        assert_eq!(RevocationRequest::open(&msg, &device.public_key()), Ok(req));
        assert!(RevocationRequest::open(&msg, &ca.public_key()).is_err());
        let order = RevocationOrder {
            device: DeviceId([1; 8]),
            slot: 2,
            certificate_hash: [9; 32],
            reason: Reason::Superseded,
            counter: 3,
        };
        let msg2 = order.sign(&ca);
        assert_eq!(msg2.len(), ORDER_LEN);
        assert_eq!(RevocationOrder::open(&msg2, &ca.public_key()), Ok(order));
        // Another key, or a request's signature passed off as an order: refused.
        assert!(RevocationOrder::open(&msg2, &device.public_key()).is_err());
        let conf = RevocationConfirmation {
            device: DeviceId([1; 8]),
            slot: 2,
            certificate_hash: [9; 32],
            counter: 3,
            outcome: Outcome::Due,
            fee: Amount(25),
            set: 0,
        };
        let msg3 = conf.sign(&device);
        assert_eq!(msg3.len(), CONFIRMATION_LEN);
        assert_eq!(
            RevocationConfirmation::open(&msg3, &device.public_key()),
            Ok(conf)
        );
        for m in [&msg, &msg2, &msg3] {
            for n in 0..m.len() {
                let mut b = m.to_vec();
                b[n] ^= 1;
                assert!(RevocationRequest::open(&b, &device.public_key()).is_err());
                assert!(RevocationOrder::open(&b, &ca.public_key()).is_err());
                assert!(RevocationConfirmation::open(&b, &device.public_key()).is_err());
            }
        }
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(Reason::from_name(r.name()), Some(r));
        }
        assert_eq!(Reason::from_code(2), None);
    }
}
