//! Trust anchors (seed 004, claim 12: an updatable CA key in the meter): the public keys
//! the PSD believes for certificates it installs (the back office's certificate authority)
//! and, later, for lines of credit (the creditor). The vendor signs each, so neither the
//! holder nor a back-office service alone can make the PSD trust another CA.
//!
//! Layout (`docs/apdu.md` § LOAD TRUST ANCHOR):
//!
//! ```text
//! tag D2 | version 01 | kind 1 | anchor version u32 | public key 65 ‖ ECDSA P-256
//! signature r ‖ s 64 by the vendor key over "openpsd trust anchor v1" ‖ everything before
//! ```

use alloc::vec::Vec;

use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::wire::{Malformed, OpenError, Reader, Writer};

/// First byte of a trust anchor.
pub const ANCHOR_TAG: u8 = 0xD2;
/// Layout version.
const ANCHOR_LAYOUT: u8 = 1;
/// What the vendor signs before the body.
pub const ANCHOR_LABEL: &[u8] = b"openpsd trust anchor v1";
/// Length of a signed anchor.
pub const ANCHOR_LEN: usize = 7 + PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// What an anchor is trusted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnchorKind {
    /// The certificate authority whose certificates INSTALL KEY CERTIFICATE accepts.
    CertificateCa = 1,
    /// The creditor whose lines of credit the PSD accepts.
    Creditor = 2,
}

impl AnchorKind {
    /// The kind of `code`.
    pub fn from_code(code: u8) -> Option<AnchorKind> {
        match code {
            1 => Some(AnchorKind::CertificateCa),
            2 => Some(AnchorKind::Creditor),
            _ => None,
        }
    }
}

/// A trust anchor's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// What the key is trusted for.
    pub kind: AnchorKind,
    /// Rises with every key of this kind the vendor publishes.
    pub version: u32,
    /// The key (SEC1 uncompressed).
    pub public_key: [u8; PUBLIC_KEY_LEN],
}

impl Anchor {
    fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(ANCHOR_LEN);
        w.put_u8(ANCHOR_TAG);
        w.put_u8(ANCHOR_LAYOUT);
        w.put_u8(self.kind as u8);
        w.put_u32(self.version);
        w.extend_from_slice(&self.public_key);
        w
    }

    /// The signed anchor (the vendor's side).
    pub fn sign(&self, vendor: &IndiciumKey) -> Vec<u8> {
        let mut msg = self.body();
        let sig = vendor.sign_labelled(ANCHOR_LABEL, &msg);
        msg.extend_from_slice(&sig);
        msg
    }

    /// Checks the vendor's signature, then decodes; a key not on the curve is refused.
    pub fn open(msg: &[u8], vendor_public_key: &[u8]) -> Result<Anchor, OpenError> {
        if msg.len() != ANCHOR_LEN {
            return Err(Malformed::Length.into());
        }
        let (body, sig) = msg.split_at(ANCHOR_LEN - SIGNATURE_LEN);
        if !crypto::verify_labelled(vendor_public_key, ANCHOR_LABEL, body, sig) {
            return Err(OpenError::Unauthentic);
        }
        Ok(Self::decode_body(body)?)
    }

    /// Decodes a signed anchor without checking the signature (for display).
    pub fn decode_unverified(msg: &[u8]) -> Result<Anchor, Malformed> {
        if msg.len() != ANCHOR_LEN {
            return Err(Malformed::Length);
        }
        Self::decode_body(&msg[..ANCHOR_LEN - SIGNATURE_LEN])
    }

    fn decode_body(body: &[u8]) -> Result<Anchor, Malformed> {
        let mut r = Reader::new(body);
        if r.u8()? != ANCHOR_TAG || r.u8()? != ANCHOR_LAYOUT {
            return Err(Malformed::Value);
        }
        let kind = AnchorKind::from_code(r.u8()?).ok_or(Malformed::Value)?;
        let version = r.u32()?;
        let public_key: [u8; PUBLIC_KEY_LEN] = r.array()?;
        r.finish()?;
        if !crypto::is_valid_public_key(&public_key) {
            return Err(Malformed::Value);
        }
        Ok(Anchor {
            kind,
            version,
            public_key,
        })
    }
}

#[cfg(feature = "certmeter")]
impl crate::psd::PsdApplet {
    /// LOAD TRUST ANCHOR (80 5C 00 00): a vendor-signed key of a kind, newer than the one
    /// held of that kind, which it replaces. The same anchor again writes nothing.
    pub(in crate::psd) fn load_trust_anchor(
        &mut self,
        ctx: &mut crate::card::Ctx<'_>,
        data: &[u8],
    ) -> Result<(), crate::status::Status> {
        let device = self.device()?;
        let anchor = Anchor::open(data, &device.vendor_public_key)?;
        let cm = &self.persistent.certmeter;
        if let Some((held, bytes)) = cm.anchors.iter().find(|(a, _)| a.kind == anchor.kind) {
            if bytes.as_slice() == data {
                return Ok(());
            }
            if held.version >= anchor.version {
                return Err(crate::status::Status::NotNewer);
            }
        }
        let mut next = cm.clone();
        next.anchors.retain(|(a, _)| a.kind != anchor.kind);
        next.anchors.push((anchor, data.to_vec()));
        next.anchors.sort_by_key(|(a, _)| a.kind);
        let mut txn = crate::store::Transaction::begin(ctx.store);
        txn.write(crate::records::psd::CERTMETER, next.encode());
        txn.commit()?;
        self.persistent.certmeter = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_opens_under_the_vendor_key_only() {
        let vendor = IndiciumKey::from_bytes(&[7; 32]).unwrap();
        let ca = IndiciumKey::from_bytes(&[9; 32]).unwrap();
        let a = Anchor {
            kind: AnchorKind::CertificateCa,
            version: 2,
            public_key: ca.public_key(),
        };
        let msg = a.sign(&vendor);
        assert_eq!(msg.len(), ANCHOR_LEN);
        assert_eq!(Anchor::open(&msg, &vendor.public_key()), Ok(a));
        assert_eq!(
            Anchor::open(&msg, &ca.public_key()),
            Err(OpenError::Unauthentic)
        );
        for n in 0..msg.len() {
            let mut m = msg.clone();
            m[n] ^= 0x40;
            assert!(Anchor::open(&m, &vendor.public_key()).is_err());
            let _ = Anchor::decode_unverified(&m);
        }
    }
}
