//! The key attestation (seed 004, Fig. 5 steps 510-512): the PSD's word that a key of a
//! given purpose was generated inside it, and the new key's proof that its holder has it.
//!
//! The device key (registered at the KMS at personalization) signs the body, as a YubiKey's
//! attestation key signs a PIV key's attestation certificate; the new key signs it too (the
//! proof of possession a CSR gives). The certificate authority checks both before it
//! certifies the key, and takes the subject from the customer's account, not from here.
//!
//! Layout (`docs/apdu.md` § GENERATE KEY):
//!
//! ```text
//! tag A7 | version 01 | device ID 8 | slot 1 | purpose 1 | generation u32 | public key 65
//! ‖ device-key signature r ‖ s 64 over "openpsd key attestation v1" ‖ body
//! ‖ new-key signature r ‖ s 64 over "openpsd key possession v1" ‖ body
//! ```

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::types::DeviceId;
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// First byte of an attestation.
pub const ATTESTATION_TAG: u8 = 0xA7;
/// Layout version.
const ATTESTATION_LAYOUT: u8 = 1;
/// What the device key signs before the body.
pub const ATTESTATION_LABEL: &[u8] = b"openpsd key attestation v1";
/// What the new key signs before the body.
pub const POSSESSION_LABEL: &[u8] = b"openpsd key possession v1";
/// Length of the body.
const BODY_LEN: usize = 16 + PUBLIC_KEY_LEN;
/// Length of an attestation.
pub const ATTESTATION_LEN: usize = BODY_LEN + 2 * SIGNATURE_LEN;

/// What a key may be used for: one purpose per key (seed 004, claims 19-21), so a postmark
/// key never signs a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    /// Cryptographic postmarks (RFC 3161 time-stamp tokens).
    Postmark = 1,
    /// Document signatures.
    Sign = 2,
    /// The agent CA that certifies employees' keys.
    AgentCa = 3,
    /// Payment certificates drawn on a line of credit.
    Payment = 4,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 4] = [
        Purpose::Postmark,
        Purpose::Sign,
        Purpose::AgentCa,
        Purpose::Payment,
    ];

    /// The purpose of `code`.
    pub fn from_code(code: u8) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| *p as u8 == code)
    }

    /// Its code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Its name, as the CLI and the CA's profiles say it.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Postmark => "postmark",
            Purpose::Sign => "sign",
            Purpose::AgentCa => "agent",
            Purpose::Payment => "payment",
        }
    }
}

/// What an attestation says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAttestation {
    /// The PSD that generated the key.
    pub device: DeviceId,
    /// The key slot it sits in.
    pub slot: u8,
    /// What it may be used for.
    pub purpose: Purpose,
    /// The PSD's key-generation counter: one attestation per generated key.
    pub generation: u32,
    /// The new key (SEC1 uncompressed).
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

impl KeyAttestation {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(ATTESTATION_LEN);
        w.put_u8(ATTESTATION_TAG);
        w.put_u8(ATTESTATION_LAYOUT);
        w.extend_from_slice(&self.device.0);
        w.put_u8(self.slot);
        w.put_u8(self.purpose.code());
        w.put_u32(self.generation);
        w.extend_from_slice(&self.public_key);
        w
    }

    /// The attestation (the card's side): signed by the device key and by the new key,
    /// which must be `self.public_key`'s.
    pub fn sign(&self, device_key: &IndiciumKey, new_key: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let by_device = device_key.sign_labelled(ATTESTATION_LABEL, &msg);
        let by_key = new_key.sign_labelled(POSSESSION_LABEL, &msg);
        msg.extend_from_slice(&by_device);
        msg.extend_from_slice(&by_key);
        msg
    }

    /// Decodes without checking the signatures (to find the device whose key checks them).
    pub fn decode_unverified(msg: &[u8]) -> Result<KeyAttestation, Malformed> {
        if msg.len() != ATTESTATION_LEN {
            return Err(Malformed::Length);
        }
        let mut r = Reader::new(&msg[..BODY_LEN]);
        if r.u8()? != ATTESTATION_TAG || r.u8()? != ATTESTATION_LAYOUT {
            return Err(Malformed::Value);
        }
        let a = KeyAttestation {
            device: DeviceId(r.array()?),
            slot: r.u8()?,
            purpose: Purpose::from_code(r.u8()?).ok_or(Malformed::Value)?,
            generation: r.u32()?,
            public_key: r.array()?,
        };
        r.finish()?;
        if !crypto::is_valid_public_key(&a.public_key) {
            return Err(Malformed::Value);
        }
        Ok(a)
    }

    /// Decodes and checks both signatures: the device's (with the key the KMS registered
    /// for it) and the new key's own.
    pub fn open(msg: &[u8], device_public_key: &[u8]) -> Result<KeyAttestation, OpenError> {
        let a = Self::decode_unverified(msg)?;
        let body = &msg[..BODY_LEN];
        let by_device = &msg[BODY_LEN..BODY_LEN + SIGNATURE_LEN];
        let by_key = &msg[BODY_LEN + SIGNATURE_LEN..];
        if !crypto::verify_labelled(device_public_key, ATTESTATION_LABEL, body, by_device)
            || !crypto::verify_labelled(&a.public_key, POSSESSION_LABEL, body, by_key)
        {
            return Err(OpenError::Unauthentic);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_signatures_are_checked() {
        let device = IndiciumKey::from_bytes(&[3; 32]).unwrap();
        let new = IndiciumKey::from_bytes(&[4; 32]).unwrap();
        let a = KeyAttestation {
            device: DeviceId([1; 8]),
            slot: 0,
            purpose: Purpose::Postmark,
            generation: 1,
            public_key: new.public_key(),
        };
        let msg = a.sign(&device, &new);
        assert_eq!(msg.len(), ATTESTATION_LEN);
        assert_eq!(KeyAttestation::open(&msg, &device.public_key()), Ok(a));
        // Another device's key, or a key the signer does not hold, is refused.
        assert_eq!(
            KeyAttestation::open(&msg, &new.public_key()),
            Err(OpenError::Unauthentic)
        );
        let other = IndiciumKey::from_bytes(&[5; 32]).unwrap();
        let forged = KeyAttestation {
            public_key: other.public_key(),
            ..a
        }
        .sign(&device, &new);
        assert_eq!(
            KeyAttestation::open(&forged, &device.public_key()),
            Err(OpenError::Unauthentic)
        );
        for n in 0..msg.len() {
            let mut m = msg.clone();
            m[n] ^= 1;
            assert!(KeyAttestation::open(&m, &device.public_key()).is_err());
        }
    }
}
