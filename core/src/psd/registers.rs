//! A register set: the accounting of one meter license inside the PSD (seed 003).
//!
//! AR (ascending register) is value used — postage franked and value moved out to purse
//! cards (seed 002) — and DR (descending register) value left. A transfer to a purse first
//! moves its amount from DR to *pending*; the purse's acknowledgement moves it on to AR (and
//! counts it as *transferred*), an undo back to DR. The control sum AR + DR + pending moves
//! only when a refill credits DR. Every change returns a new
//! set (checked arithmetic), so the caller can commit it before it replaces the old one.

use alloc::vec::Vec;

use crate::crypto::{IndiciumKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::status::Status;
use crate::types::{
    Amount, Date, KeyId, LicenseId, PieceCount, PostalCode, RefillCount, TransactionId,
};
use crate::wire::{Malformed, Reader, Writer};

/// One register set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterSet {
    /// The meter license this set accounts for.
    pub license: LicenseId,
    /// The license's town: indicia on this set must name it as origin.
    pub origin: PostalCode,
    /// Ascending register: postage used.
    pub ar: Amount,
    /// Descending register: postage left.
    pub dr: Amount,
    /// AR + DR + pending, raised only by refills.
    pub control_sum: Amount,
    /// The part of AR moved out to purse cards (transfers completed).
    pub transferred: Amount,
    /// Value debited from DR for a transfer the purse has not acknowledged yet.
    pub pending: Amount,
    /// Mail pieces franked.
    pub pieces: PieceCount,
    /// Refills applied.
    pub refills: RefillCount,
    /// Combination ID of the last refill applied (zeros before the first), reported in
    /// audits so the back office knows which refill message became value.
    pub last_combination: [u8; 8],
    /// The last indicium issued on this set and the host transaction that asked for it,
    /// kept so a host that lost the reply gets the same indicium, not a second debit.
    pub last_indicium: Option<(TransactionId, Vec<u8>)>,
    /// The last indicium's signature, as it was answered (record version 5). Its nonce may
    /// have been random (the nonce pool), so a retry answers these bytes rather than
    /// signing again. `None` in records written before version 5, whose indicia were
    /// signed with RFC 6979's deterministic nonce: a retry re-signs them to the same bytes.
    pub last_signature: Option<[u8; SIGNATURE_LEN]>,
    /// The postal authority's grant, for a set added by LICENSE INSTALL: the license's own
    /// key and the certificate's serial and validity. Sets made at PERSONALIZE have none
    /// and sign with the device key.
    pub grant: Option<SetGrant>,
    /// The part of AR paid as certificate-meter fees (seed 004): AR − transferred − fees
    /// is postage.
    pub fees: Amount,
    /// Paid services (postmarks, certificates...) charged to this set: seed 004's
    /// certificate piece count (248).
    pub services: PieceCount,
}

/// A set's license key and what the PA's certificate says of it.
#[derive(Clone, Debug)]
pub struct SetGrant {
    /// The license key, generated inside the PSD at LICENSE REQUEST.
    pub key: IndiciumKey,
    /// The certificate's serial number (magnitude, 1 to 20 octets).
    pub serial: Vec<u8>,
    /// First valid date of mailing.
    pub not_before: Date,
    /// Last valid date of mailing.
    pub not_after: Date,
}

impl PartialEq for SetGrant {
    fn eq(&self, other: &Self) -> bool {
        self.key.public_key() == other.key.public_key()
            && self.serial == other.serial
            && self.not_before == other.not_before
            && self.not_after == other.not_after
    }
}

impl Eq for SetGrant {}

impl SetGrant {
    /// The license key's public key.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    /// Whether `date` lies within the grant's validity.
    pub fn covers(&self, date: Date) -> bool {
        self.not_before <= date && date <= self.not_after
    }
}

impl RegisterSet {
    /// A fresh set for `license`: all registers zero.
    pub fn new(license: LicenseId, origin: PostalCode) -> Self {
        Self {
            license,
            origin,
            ar: Amount::ZERO,
            dr: Amount::ZERO,
            control_sum: Amount::ZERO,
            transferred: Amount::ZERO,
            pending: Amount::ZERO,
            pieces: PieceCount(0),
            refills: RefillCount(0),
            last_combination: [0; 8],
            last_indicium: None,
            last_signature: None,
            grant: None,
            fees: Amount::ZERO,
            services: PieceCount(0),
        }
    }

    /// The key that signs this set's indicia: its license key, or the device key for a set
    /// made at personalization.
    pub fn signing_key<'a>(&'a self, device_key: &'a IndiciumKey) -> &'a IndiciumKey {
        self.grant.as_ref().map_or(device_key, |g| &g.key)
    }

    /// The ID of [`Self::signing_key`].
    pub fn key_id(&self, device_key: &IndiciumKey) -> KeyId {
        self.signing_key(device_key).key_id()
    }

    /// Whether AR + DR + pending equals the control sum, and transfers fit in AR.
    pub fn is_consistent(&self) -> bool {
        self.ar
            .checked_add(self.dr)
            .and_then(|s| s.checked_add(self.pending))
            == Some(self.control_sum)
            && self
                .transferred
                .checked_add(self.fees)
                .is_some_and(|used| used <= self.ar)
    }

    /// The set after charging a certificate-meter service its `fee` (seed 004, Fig. 3 step
    /// 312): DR debited, AR and the fee register credited, the service counted. A fee of
    /// zero is counted all the same. Refused if DR is short (`9A01`) or on overflow.
    pub fn charge(&self, fee: Amount) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let dr = self.dr.checked_sub(fee).ok_or(Status::InsufficientFunds)?;
        let ar = self.ar.checked_add(fee).ok_or(Status::CounterOverflow)?;
        let fees = self.fees.checked_add(fee).ok_or(Status::CounterOverflow)?;
        let services = self
            .services
            .checked_next()
            .ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            ar,
            dr,
            fees,
            services,
            ..self.clone()
        })
    }

    /// The set after a revocation whose fee DR could not pay (seed 004, Fig. 6): the
    /// service counted, no money moved (the fee is owed, `fees_due`).
    pub fn count_service(&self) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let services = self
            .services
            .checked_next()
            .ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            services,
            ..self.clone()
        })
    }

    /// The set after settling `amount` of owed fees (at a refill): DR debited, AR and the
    /// fee register credited, no service counted (it was counted when owed). The control
    /// sum does not move. Refused if DR is short or on overflow.
    pub fn settle_fees(&self, amount: Amount) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let dr = self
            .dr
            .checked_sub(amount)
            .ok_or(Status::InsufficientFunds)?;
        let ar = self.ar.checked_add(amount).ok_or(Status::CounterOverflow)?;
        let fees = self
            .fees
            .checked_add(amount)
            .ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            ar,
            dr,
            fees,
            ..self.clone()
        })
    }

    /// The set after debiting `amount` for a transfer to a purse: DR down, pending up.
    pub fn transfer_out(&self, amount: Amount) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        if self.pending != Amount::ZERO {
            return Err(Status::TransferPending);
        }
        let dr = self
            .dr
            .checked_sub(amount)
            .ok_or(Status::InsufficientFunds)?;
        Ok(RegisterSet {
            dr,
            pending: amount,
            ..self.clone()
        })
    }

    /// The set after the purse acknowledged the pending transfer: pending moves to AR and
    /// is counted as transferred.
    pub fn transfer_completed(&self) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let ar = self
            .ar
            .checked_add(self.pending)
            .ok_or(Status::CounterOverflow)?;
        let transferred = self
            .transferred
            .checked_add(self.pending)
            .ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            ar,
            transferred,
            pending: Amount::ZERO,
            ..self.clone()
        })
    }

    /// The set after undoing the pending transfer: pending goes back to DR.
    pub fn transfer_undone(&self) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let dr = self
            .dr
            .checked_add(self.pending)
            .ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            dr,
            pending: Amount::ZERO,
            ..self.clone()
        })
    }

    /// The set after franking one piece of `postage`: DR debited, AR credited, piece
    /// counted. Refused if DR is short or a counter would overflow.
    pub fn debit(&self, postage: Amount) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let dr = self
            .dr
            .checked_sub(postage)
            .ok_or(Status::InsufficientFunds)?;
        let ar = self
            .ar
            .checked_add(postage)
            .ok_or(Status::CounterOverflow)?;
        let pieces = self.pieces.checked_next().ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            ar,
            dr,
            pieces,
            ..self.clone()
        })
    }

    /// The set after a void (a refill combination of amount zero, `refill.rs`): nothing
    /// credited, the refill counted and `combination` recorded, so the refill it cancels
    /// can never apply. No DR limit check: a void adds nothing, and must apply even when an
    /// undone transfer left DR above max DR.
    pub fn void(&self, combination: [u8; 8]) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let refills = self.refills.checked_next().ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            refills,
            last_combination: combination,
            ..self.clone()
        })
    }

    /// The set after a refill of `amount` by combination `combination`: DR and the control
    /// sum raised, refill counted. Refused above `max_dr` or on overflow.
    pub fn credit(
        &self,
        amount: Amount,
        max_dr: Amount,
        combination: [u8; 8],
    ) -> Result<RegisterSet, Status> {
        if !self.is_consistent() {
            return Err(Status::Internal);
        }
        let dr = self.dr.checked_add(amount).ok_or(Status::CounterOverflow)?;
        // Pending value may come back to DR (an undone transfer): count it against the
        // limit now, so DR never ends above max DR.
        let with_pending = dr
            .checked_add(self.pending)
            .ok_or(Status::CounterOverflow)?;
        if with_pending > max_dr {
            return Err(Status::RefillAboveLimit);
        }
        let control_sum = self
            .control_sum
            .checked_add(amount)
            .ok_or(Status::CounterOverflow)?;
        let refills = self.refills.checked_next().ok_or(Status::CounterOverflow)?;
        Ok(RegisterSet {
            dr,
            control_sum,
            refills,
            last_combination: combination,
            ..self.clone()
        })
    }

    /// The public readout (READ REGISTERS response).
    pub fn readout(&self) -> Registers {
        Registers {
            license: self.license,
            origin: self.origin,
            ar: self.ar,
            dr: self.dr,
            control_sum: self.control_sum,
            pieces: self.pieces,
            refills: self.refills,
            transferred: self.transferred,
            pending: self.pending,
        }
    }

    /// Persistent encoding (record layout, version 5: version 4 plus the last indicium's
    /// 64-byte signature at the end; version 4: version 2 plus fees, services and an
    /// optional grant; version 3 is version 2 plus the grant at the end; version 2 is
    /// version 1 plus transferred and pending). The oldest version that holds the set is
    /// written, so records of PSDs that never use licenses or paid services, or never
    /// issued an indicium since version 5, keep their bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(240);
        let signed = self.last_indicium.is_some() && self.last_signature.is_some();
        let paid = signed || self.fees != Amount::ZERO || self.services != PieceCount(0);
        w.put_u8(match (signed, paid, self.grant.is_some()) {
            (true, _, _) => 5,
            (false, true, _) => 4,
            (false, false, true) => 3,
            (false, false, false) => 2,
        });
        w.put_u32(self.license.0);
        self.origin.write(&mut w);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u64(self.control_sum.0);
        w.put_u32(self.pieces.0);
        w.put_u32(self.refills.0);
        w.extend_from_slice(&self.last_combination);
        write_last_indicium(&mut w, &self.last_indicium);
        w.put_u64(self.transferred.0);
        w.put_u64(self.pending.0);
        if paid {
            w.put_u64(self.fees.0);
            w.put_u32(self.services.0);
            w.put_u8(u8::from(self.grant.is_some()));
        }
        if let Some(g) = &self.grant {
            w.extend_from_slice(g.key.secret_bytes().as_ref());
            w.put_short_bytes(&g.serial);
            g.not_before.write(&mut w);
            g.not_after.write(&mut w);
        }
        if let (true, Some(signature)) = (signed, &self.last_signature) {
            w.extend_from_slice(signature);
        }
        w
    }

    /// Decodes a persistent record (version 1 to 5); a set whose AR + DR + pending is
    /// not its control sum is refused.
    pub fn decode(bytes: &[u8]) -> Result<RegisterSet, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !(1..=5).contains(&version) {
            return Err(Malformed::Value);
        }
        let mut set = RegisterSet::new(LicenseId(r.u32()?), PostalCode::read(&mut r)?);
        set.ar = Amount(r.u64()?);
        set.dr = Amount(r.u64()?);
        set.control_sum = Amount(r.u64()?);
        set.pieces = PieceCount(r.u32()?);
        set.refills = RefillCount(r.u32()?);
        set.last_combination = r.array()?;
        set.last_indicium = read_last_indicium(&mut r)?;
        if version >= 2 {
            set.transferred = Amount(r.u64()?);
            set.pending = Amount(r.u64()?);
        }
        let granted = match version {
            3 => true,
            4 | 5 => {
                set.fees = Amount(r.u64()?);
                set.services = PieceCount(r.u32()?);
                match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Malformed::Value),
                }
            }
            _ => false,
        };
        if granted {
            let key = IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?;
            let serial = r.short_bytes()?.to_vec();
            set.grant = Some(SetGrant {
                key,
                serial,
                not_before: Date::read(&mut r)?,
                not_after: Date::read(&mut r)?,
            });
        }
        if version == 5 {
            // Version 5 is written only for a set with a last indicium.
            if set.last_indicium.is_none() {
                return Err(Malformed::Value);
            }
            set.last_signature = Some(r.array()?);
        }
        r.finish()?;
        if !set.is_consistent() {
            return Err(Malformed::Value);
        }
        Ok(set)
    }
}

/// A set's last indicium and its transaction, as the set record and an exported set's blob
/// hold it: `00`, or `01` ‖ transaction ID (8) ‖ length (2) ‖ the signed part.
pub(crate) fn write_last_indicium(w: &mut Vec<u8>, last: &Option<(TransactionId, Vec<u8>)>) {
    match last {
        None => w.put_u8(0),
        Some((txn, payload)) => {
            w.put_u8(1);
            w.extend_from_slice(&txn.0);
            // why: the payload is an IndiciumData the applet encoded itself (fixed fields
            // and two short postal codes), far below 64 KiB.
            #[allow(clippy::cast_possible_truncation)]
            w.put_u16(payload.len() as u16);
            w.extend_from_slice(payload);
        }
    }
}

/// Reads what [`write_last_indicium`] wrote.
pub(crate) fn read_last_indicium(
    r: &mut Reader<'_>,
) -> Result<Option<(TransactionId, Vec<u8>)>, Malformed> {
    match r.u8()? {
        0 => Ok(None),
        1 => {
            let txn = TransactionId(r.array()?);
            let n = r.u16()?;
            Ok(Some((txn, r.take(usize::from(n))?.to_vec())))
        }
        _ => Err(Malformed::Value),
    }
}

/// The registers as a host reads them (READ REGISTERS; also the REFILL response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// License of the set.
    pub license: LicenseId,
    /// Origin postal code of the license.
    pub origin: PostalCode,
    /// Ascending register.
    pub ar: Amount,
    /// Descending register.
    pub dr: Amount,
    /// Control sum (AR + DR + pending).
    pub control_sum: Amount,
    /// Piece count.
    pub pieces: PieceCount,
    /// Refill count.
    pub refills: RefillCount,
    /// Part of AR moved out to purse cards.
    pub transferred: Amount,
    /// Debited for a transfer not yet acknowledged by the purse.
    pub pending: Amount,
}

impl Registers {
    /// Appends the readout layout.
    pub fn write(&self, w: &mut Vec<u8>) {
        w.put_u32(self.license.0);
        self.origin.write(w);
        w.put_u64(self.ar.0);
        w.put_u64(self.dr.0);
        w.put_u64(self.control_sum.0);
        w.put_u32(self.pieces.0);
        w.put_u32(self.refills.0);
        w.put_u64(self.transferred.0);
        w.put_u64(self.pending.0);
    }

    /// Decodes the readout layout.
    pub fn decode(bytes: &[u8]) -> Result<Registers, Malformed> {
        let mut r = Reader::new(bytes);
        let regs = Registers {
            license: LicenseId(r.u32()?),
            origin: PostalCode::read(&mut r)?,
            ar: Amount(r.u64()?),
            dr: Amount(r.u64()?),
            control_sum: Amount(r.u64()?),
            pieces: PieceCount(r.u32()?),
            refills: RefillCount(r.u32()?),
            transferred: Amount(r.u64()?),
            pending: Amount(r.u64()?),
        };
        r.finish()?;
        Ok(regs)
    }
}

impl super::PsdApplet {
    /// READ REGISTERS (80 32 00 set): the readout of register set `i`.
    pub(super) fn read_registers(&self, i: usize, reply: &mut Vec<u8>) -> Result<(), Status> {
        self.persistent.set(i)?.readout().write(reply);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_with_indicium(signature: Option<[u8; SIGNATURE_LEN]>) -> RegisterSet {
        let mut set = RegisterSet::new(LicenseId(9), PostalCode::new(b"10115").unwrap());
        set.last_indicium = Some((TransactionId([3; 8]), alloc::vec![0xAB; 40]));
        set.last_signature = signature;
        set
    }

    #[test]
    fn version_5_keeps_the_last_signature() {
        let set = set_with_indicium(Some([0x5A; SIGNATURE_LEN]));
        let bytes = set.encode();
        assert_eq!(bytes.first(), Some(&5));
        assert_eq!(
            bytes.get(bytes.len() - SIGNATURE_LEN..),
            Some(&[0x5A; SIGNATURE_LEN][..])
        );
        assert_eq!(RegisterSet::decode(&bytes).unwrap(), set);
        // One byte short, or one more: refused.
        assert!(RegisterSet::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RegisterSet::decode(&longer).is_err());
    }

    #[test]
    fn without_a_signature_the_old_versions_are_written_and_read() {
        // A last indicium without its signature (as records before version 5 hold it).
        let set = set_with_indicium(None);
        let bytes = set.encode();
        assert_eq!(bytes.first(), Some(&2));
        let back = RegisterSet::decode(&bytes).unwrap();
        assert_eq!(back.last_signature, None);
        assert_eq!(back, set);
    }

    #[test]
    fn version_5_without_a_last_indicium_is_refused() {
        let mut bytes = set_with_indicium(Some([1; SIGNATURE_LEN])).encode();
        // Rewrite the last-indicium field as absent, keeping the version and signature.
        let set = RegisterSet::new(LicenseId(9), PostalCode::new(b"10115").unwrap());
        let mut v4 = set.encode();
        v4[0] = 5;
        // v4 layout: version 2 plus fees, services, grant flag (the set has none: v2 bytes).
        v4.extend_from_slice(&[0; 8 + 4 + 1]);
        v4.extend_from_slice(&[1; SIGNATURE_LEN]);
        assert_eq!(RegisterSet::decode(&v4), Err(Malformed::Value));
        bytes[0] = 6;
        assert!(RegisterSet::decode(&bytes).is_err(), "no version 6");
    }
}
