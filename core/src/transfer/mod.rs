//! Value transfer between a PSD and a purse card (seed 002, WO 97/40602, Fig. 8): the
//! messages both applets and every host share.
//!
//! **Recognition** (blocks 111-117), by certificates, SCP11-style (GlobalPlatform
//! Amendment F). Each device holds its own P-256 recognition key and the scheme issuer's
//! certificate on it ([`cert`]); no device holds a key that opens another. Each side sends
//! a *hello* — its ID, its personality (transfer count and totalizer), a fresh 16-byte
//! challenge and its certificate; the PSD's also a fresh ephemeral public key. Each side
//! checks the other's certificate against the issuer's public key (and its revocation
//! list), then the session MAC key is derived from two ECDH secrets — Z1, ephemeral-static
//! (the PSD's ephemeral with the card's certified key), and Z2, static-static (both
//! certified keys; computed once per partner and power-on, [`partners`]) — and the SHA-256
//! of both hellos. So a session key is fresh (the ephemeral, two challenges), computable
//! only by the holders of both certified private keys (Z1 needs the card's, Z2 either's
//! and the attacker has neither), and bound to both IDs and both personalities (counters
//! and totalizers): "one of a kind, dedicated only to those two communicating devices".
//! Each side then proves the session key with a cryptogram the other checks; a failed
//! check is counted on the checking device before the compare, and too many block the
//! function there.
//!
//! **Transfer** (blocks 118-121), Mondex-style: the purse asks (REQ), the PSD debits its
//! descending register into *pending* and answers (VAL), the purse credits and answers
//! (ACK), the PSD clears pending. Every message is MACed under the session key with its own
//! label. Each device commits before it answers, so an interruption leaves the value either
//! in the PSD's DR, in its pending register, or in the purse; [`TransferStatus`] (the purse's
//! MACed account of what it credited from this PSD) lets the PSD complete or undo a pending
//! transfer at the next contact. `docs/purse.md` walks through every interruption.

pub mod cert;
pub mod partners;

use alloc::vec::Vec;

use crate::crypto::{sha256, sha256_parts, IndiciumKey, MacKey, COMPRESSED_KEY_LEN, MAC_LEN};
use crate::purse::state::MAX_PAIRED;
use crate::types::{Amount, CardId, DeviceId, SchemeId, TransferCount};
use crate::wire::{Malformed, OpenError, Reader, Writer};
use cert::{DeviceCertificate, CERTIFICATE_LEN};

/// Length of each side's challenge.
pub const CHALLENGE_LEN: usize = 16;

/// The key an issuer uses for authenticated commands to one card (PIN unblock,
/// recognition reset): the issuer's admin key diversified by the card ID.
pub fn card_admin_key(issuer_admin_key: &MacKey, card: CardId) -> MacKey {
    MacKey::new(issuer_admin_key.mac(&[b"openpsd card admin key", &card.0]))
}

/// Checks an issuer command's data — counter (4) ‖ rest ‖ CMAC under `key` over `label` ‖
/// `id` ‖ counter ‖ rest — and that the counter exceeds `last`, so a command cannot be
/// replayed. Returns the counter and the rest. Used by both applets' authenticated resets
/// and the purse's PIN unblock.
pub fn open_issuer_command<'d>(
    key: &MacKey,
    label: &[u8],
    id: &[u8],
    data: &'d [u8],
    last: u32,
) -> Result<(u32, &'d [u8]), crate::status::Status> {
    use crate::status::Status;
    if data.len() < 4 + MAC_LEN {
        return Err(Status::WrongLength);
    }
    let (body, tag) = data.split_at(data.len() - MAC_LEN);
    if !key.verify(&[label, id, body], tag) {
        return Err(Status::SecurityStatusNotSatisfied);
    }
    let counter = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    if counter <= last {
        return Err(Status::SecurityStatusNotSatisfied);
    }
    Ok((counter, &body[4..]))
}

/// The PSD's side of a recognition: OPEN SESSION's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsdHello {
    /// The PSD's serial number.
    pub device: DeviceId,
    /// The scheme it belongs to.
    pub scheme: SchemeId,
    /// Transfers it has started (personality).
    pub transfers: TransferCount,
    /// Value it has moved out to purses, completed (personality: the totalizer).
    pub total_out: Amount,
    /// Fresh challenge.
    pub challenge: [u8; CHALLENGE_LEN],
    /// The card a pending transfer waits for, if any (the host then resolves first).
    pub pending_for: Option<CardId>,
    /// The PSD's ephemeral public key for this session (SEC1 compressed).
    pub ephemeral: [u8; COMPRESSED_KEY_LEN],
    /// The PSD's certificate.
    pub certificate: DeviceCertificate,
}

impl PsdHello {
    /// Layout: device ‖ scheme ‖ transfers ‖ total out ‖ challenge ‖ 00 | 01 card ID ‖
    /// ephemeral key (33) ‖ certificate (123).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(49 + COMPRESSED_KEY_LEN + CERTIFICATE_LEN);
        w.extend_from_slice(&self.device.0);
        w.put_u32(self.scheme.0);
        w.put_u32(self.transfers.0);
        w.put_u64(self.total_out.0);
        w.extend_from_slice(&self.challenge);
        match self.pending_for {
            None => w.put_u8(0),
            Some(c) => {
                w.put_u8(1);
                w.extend_from_slice(&c.0);
            }
        }
        w.extend_from_slice(&self.ephemeral);
        w.extend_from_slice(&self.certificate.encode());
        w
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<PsdHello, Malformed> {
        let mut r = Reader::new(bytes);
        let h = PsdHello {
            device: DeviceId(r.array()?),
            scheme: SchemeId(r.u32()?),
            transfers: TransferCount(r.u32()?),
            total_out: Amount(r.u64()?),
            challenge: r.array()?,
            pending_for: match r.u8()? {
                0 => None,
                1 => Some(CardId(r.array()?)),
                _ => return Err(Malformed::Value),
            },
            ephemeral: r.array()?,
            certificate: DeviceCertificate::read(&mut r)?,
        };
        r.finish()?;
        Ok(h)
    }
}

/// The purse's side of a recognition: RECOGNIZE's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardHello {
    /// The card's serial number.
    pub card: CardId,
    /// The scheme it belongs to.
    pub scheme: SchemeId,
    /// Transfers it has received (personality).
    pub transfers: TransferCount,
    /// Value it has received over its life (personality: the totalizer).
    pub total_in: Amount,
    /// Fresh challenge.
    pub challenge: [u8; CHALLENGE_LEN],
    /// The card's certificate.
    pub certificate: DeviceCertificate,
    /// Proof that the card holds the session key ([`Session::card_cryptogram`]).
    pub cryptogram: [u8; MAC_LEN],
}

impl CardHello {
    /// The part the session key covers (everything but the cryptogram).
    pub fn body(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(40 + CERTIFICATE_LEN + MAC_LEN);
        w.extend_from_slice(&self.card.0);
        w.put_u32(self.scheme.0);
        w.put_u32(self.transfers.0);
        w.put_u64(self.total_in.0);
        w.extend_from_slice(&self.challenge);
        w.extend_from_slice(&self.certificate.encode());
        w
    }

    /// Layout: card ‖ scheme ‖ transfers ‖ total in ‖ challenge ‖ certificate (123) ‖
    /// cryptogram (16).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.extend_from_slice(&self.cryptogram);
        w
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<CardHello, Malformed> {
        let mut r = Reader::new(bytes);
        let h = CardHello {
            card: CardId(r.array()?),
            scheme: SchemeId(r.u32()?),
            transfers: TransferCount(r.u32()?),
            total_in: Amount(r.u64()?),
            challenge: r.array()?,
            certificate: DeviceCertificate::read(&mut r)?,
            cryptogram: r.array()?,
        };
        r.finish()?;
        Ok(h)
    }
}

/// A recognised session's MAC key and the facts it is bound to.
#[derive(Clone, Debug)]
pub struct Session {
    key: MacKey,
    /// The PSD of this session.
    pub device: DeviceId,
    /// The card of this session.
    pub card: CardId,
    /// The PSD's transfer count when the session opened.
    pub psd_transfers: TransferCount,
    /// The card's transfer count when the session opened.
    pub card_transfers: TransferCount,
}

const LABEL_SESSION: &[u8] = b"openpsd transfer session v2";

impl Session {
    /// Derives the session from the two ECDH secrets and both hellos (the card's without
    /// its cryptogram): the first 16 bytes of SHA-256(label ‖ Z1 ‖ Z2 ‖ SHA-256(hellos)),
    /// a one-block X9.63-style KDF as SCP11 uses.
    fn derive(z1: &[u8], z2: &[u8], psd: &PsdHello, card: &CardHello) -> Session {
        let mut context = psd.encode();
        context.extend_from_slice(&card.body());
        let digest =
            zeroize::Zeroizing::new(sha256_parts(&[LABEL_SESSION, z1, z2, &sha256(&context)]));
        let mut key = [0u8; crate::crypto::MAC_KEY_LEN];
        key.copy_from_slice(&digest[..crate::crypto::MAC_KEY_LEN]);
        let key = MacKey::new(key);
        Session {
            key,
            device: psd.device,
            card: card.card,
            psd_transfers: psd.transfers,
            card_transfers: card.transfers,
        }
    }

    /// The purse's side: Z1 = its recognition key with the PSD's ephemeral key; `z2` the
    /// static-static secret with the PSD's certified key ([`partners::Partners`]). `None`
    /// if the ephemeral key is not a curve point. The caller has checked the PSD's
    /// certificate.
    pub fn for_card(
        card_key: &IndiciumKey,
        z2: &[u8],
        psd: &PsdHello,
        card: &CardHello,
    ) -> Option<Session> {
        let z1 = card_key.agree(&psd.ephemeral)?;
        Some(Session::derive(z1.as_ref(), z2, psd, card))
    }

    /// The PSD's side: Z1 = its ephemeral key with the card's certified key; `z2` the
    /// static-static secret with it ([`partners::Partners`]). `None` if the card's key is
    /// not a curve point. The caller has checked the card's certificate.
    pub fn for_psd(
        ephemeral: &IndiciumKey,
        z2: &[u8],
        psd: &PsdHello,
        card: &CardHello,
    ) -> Option<Session> {
        let z1 = ephemeral.agree(&card.certificate.public_key)?;
        Some(Session::derive(z1.as_ref(), z2, psd, card))
    }

    /// The card's proof of the session key.
    pub fn card_cryptogram(&self) -> [u8; MAC_LEN] {
        self.key.mac(&[b"card cryptogram"])
    }

    /// The PSD's proof of the session key.
    pub fn psd_cryptogram(&self) -> [u8; MAC_LEN] {
        self.key.mac(&[b"psd cryptogram"])
    }

    fn seal(&self, label: &[u8], body: Vec<u8>) -> Vec<u8> {
        let tag = self.key.mac(&[label, &body]);
        let mut out = body;
        out.extend_from_slice(&tag);
        out
    }

    fn open<'m>(
        &self,
        label: &[u8],
        msg: &'m [u8],
        body_len: usize,
    ) -> Result<&'m [u8], OpenError> {
        if msg.len() != body_len + MAC_LEN {
            return Err(OpenError::Malformed(Malformed::Length));
        }
        let (body, tag) = msg.split_at(body_len);
        if self.key.verify(&[label, body], tag) {
            Ok(body)
        } else {
            Err(OpenError::Unauthentic)
        }
    }
}

const LABEL_REQ: &[u8] = b"REQ";
const LABEL_VAL: &[u8] = b"VAL";
const LABEL_ACK: &[u8] = b"ACK";
const LABEL_STATUS: &[u8] = b"STS";
const LABEL_CLOSE: &[u8] = b"CLS";

/// The purse asks the PSD for `amount` (TRANSFER REQUEST's response, TRANSFER DEBIT's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Value asked for.
    pub amount: Amount,
}

impl Request {
    /// amount ‖ MAC.
    pub fn seal(&self, s: &Session) -> Vec<u8> {
        let mut body = Vec::with_capacity(8);
        body.put_u64(self.amount.0);
        s.seal(LABEL_REQ, body)
    }

    /// Checks the MAC, then parses.
    pub fn open(msg: &[u8], s: &Session) -> Result<Request, OpenError> {
        let body = s.open(LABEL_REQ, msg, 8)?;
        let mut r = Reader::new(body);
        Ok(Request {
            amount: Amount(r.u64()?),
        })
    }
}

/// The PSD's value message: it has debited `amount` (TRANSFER DEBIT's response, TRANSFER
/// CREDIT's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    /// Value debited and now pending in the PSD.
    pub amount: Amount,
    /// The PSD's number for this transfer (its transfer count before it).
    pub transfer: TransferCount,
}

impl Value {
    /// amount ‖ transfer number ‖ MAC.
    pub fn seal(&self, s: &Session) -> Vec<u8> {
        let mut body = Vec::with_capacity(12);
        body.put_u64(self.amount.0);
        body.put_u32(self.transfer.0);
        s.seal(LABEL_VAL, body)
    }

    /// Checks the MAC, then parses.
    pub fn open(msg: &[u8], s: &Session) -> Result<Value, OpenError> {
        let body = s.open(LABEL_VAL, msg, 12)?;
        let mut r = Reader::new(body);
        Ok(Value {
            amount: Amount(r.u64()?),
            transfer: TransferCount(r.u32()?),
        })
    }
}

/// The purse's acknowledgement: it has credited the transfer (TRANSFER CREDIT's response,
/// TRANSFER CONFIRM's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Value credited.
    pub amount: Amount,
    /// The PSD's number of the transfer credited.
    pub transfer: TransferCount,
}

impl Ack {
    /// amount ‖ transfer number ‖ MAC.
    pub fn seal(&self, s: &Session) -> Vec<u8> {
        let mut body = Vec::with_capacity(12);
        body.put_u64(self.amount.0);
        body.put_u32(self.transfer.0);
        s.seal(LABEL_ACK, body)
    }

    /// Checks the MAC, then parses.
    pub fn open(msg: &[u8], s: &Session) -> Result<Ack, OpenError> {
        let body = s.open(LABEL_ACK, msg, 12)?;
        let mut r = Reader::new(body);
        Ok(Ack {
            amount: Amount(r.u64()?),
            transfer: TransferCount(r.u32()?),
        })
    }
}

/// The PSD's statement that it has nothing pending with this session's card (TRANSFER
/// CLOSE's response on the PSD, its data on the purse): the purse may then forget its
/// record of the PSD's last credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// Transfers the PSD has started: above the number of the last one the card credited
    /// from it, or the statement predates that credit (refused).
    pub started: TransferCount,
}

impl Close {
    /// transfers started ‖ MAC.
    pub fn seal(&self, s: &Session) -> Vec<u8> {
        let mut body = Vec::with_capacity(4);
        body.put_u32(self.started.0);
        s.seal(LABEL_CLOSE, body)
    }

    /// Checks the MAC, then parses.
    pub fn open(msg: &[u8], s: &Session) -> Result<Close, OpenError> {
        let body = s.open(LABEL_CLOSE, msg, 4)?;
        let mut r = Reader::new(body);
        Ok(Close {
            started: TransferCount(r.u32()?),
        })
    }
}

/// The purse's account, in a fresh session, of what it has credited from this PSD
/// (TRANSFER STATUS's response, TRANSFER RESOLVE's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferStatus {
    /// The card's transfer count now.
    pub card_transfers: TransferCount,
    /// The PSD's number of the last transfer from this PSD the card credited, if the card
    /// remembers this PSD.
    pub last_from_psd: Option<TransferCount>,
    /// With no record of this PSD: the card's count after the latest credit from a PSD
    /// it has forgotten (0: it has forgotten none), if the card says (`None`: a card that
    /// does not, known byte `00`). Had the card credited this PSD's pending transfer after
    /// that, it would still list the PSD.
    pub forgotten_through: Option<TransferCount>,
}

impl TransferStatus {
    /// card transfers ‖ 01 last (a record) | 02 forgotten through (no record) | 00
    /// 00000000 (no record, nothing said) ‖ MAC.
    pub fn seal(&self, s: &Session) -> Vec<u8> {
        let mut body = Vec::with_capacity(9);
        body.put_u32(self.card_transfers.0);
        match self.last_from_psd {
            None => match self.forgotten_through {
                Some(f) => {
                    body.put_u8(2);
                    body.put_u32(f.0);
                }
                None => {
                    body.put_u8(0);
                    body.put_u32(0);
                }
            },
            Some(t) => {
                body.put_u8(1);
                body.put_u32(t.0);
            }
        }
        s.seal(LABEL_STATUS, body)
    }

    /// Checks the MAC, then parses.
    pub fn open(msg: &[u8], s: &Session) -> Result<TransferStatus, OpenError> {
        let body = s.open(LABEL_STATUS, msg, 9)?;
        let mut r = Reader::new(body);
        let card_transfers = TransferCount(r.u32()?);
        let known = r.u8()?;
        let last = TransferCount(r.u32()?);
        let (last_from_psd, forgotten_through) = match known {
            0 if last.0 == 0 => (None, None),
            1 => (Some(last), None),
            2 if last <= card_transfers => (None, Some(last)),
            _ => return Err(OpenError::Malformed(Malformed::Value)),
        };
        Ok(TransferStatus {
            card_transfers,
            last_from_psd,
            forgotten_through,
        })
    }
}

/// What a PSD should do with its pending transfer, given the card's [`TransferStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The card credited it: clear pending, count it as moved out.
    Complete,
    /// The card did not and now never can credit it: give the value back to DR.
    Undo,
    /// The card's answer does not decide it: keep pending.
    Unknown,
}

/// How many credits a purse makes after crediting a PSD, at the least, before it can have
/// forgotten that PSD: it keeps the last [`MAX_PAIRED`] PSDs it credited and forgets the
/// least recent first (`purse::state::PairedTable::credited`), so the PSD it credited must
/// fall behind 15 other PSDs credited after it and then make way for a 16th, new one.
/// A protocol rule every purse of a scheme keeps: a PSD's [`resolve`] counts on it.
pub const CREDITS_BEFORE_FORGETTING: u32 = 16;
const _: () = assert!(CREDITS_BEFORE_FORGETTING as usize == MAX_PAIRED);

/// Decides a pending transfer `transfer`, made while the card's count was
/// `card_transfers_then`, from the card's status in a later session.
///
/// A value message is bound to the session it was made in, and a card holds one session:
/// once the card has answered in a new session, an old value message can never be
/// credited, and if it was credited it was the card's very next credit (count
/// `card_transfers_then + 1`). A PSD has one transfer pending at most, so the card's last
/// transfer from this PSD being this one means "credited", and being an earlier one "not
/// credited". A card with no record of this PSD did not credit it either unless it has
/// forgotten it since: not if every PSD it has forgotten was last credited before the
/// pending transfer could be (`forgotten_through` ≤ `card_transfers_then`: the pending
/// transfer would have been credit `card_transfers_then + 1`), nor, for a card that does
/// not say how late it has forgotten (an older purse), if it has made no more than
/// [`CREDITS_BEFORE_FORGETTING`] credits since (forgetting the PSD would take more).
/// A purse of this version never forgets a PSD whose last credit is open (not closed by
/// the PSD's TRANSFER CLOSE), so `forgotten_through` only counts entries of unknown
/// closure read from an older table: only a transfer pending since then, with a card
/// that has forgotten such an entry credited after its session, leaves the devices unable
/// to tell (`Unknown`: the value stays pending, reported in audits).
pub fn resolve(
    transfer: TransferCount,
    card_transfers_then: TransferCount,
    status: &TransferStatus,
) -> Resolution {
    if status.card_transfers < card_transfers_then {
        return Resolution::Unknown;
    }
    match status.last_from_psd {
        Some(last) if last == transfer => Resolution::Complete,
        Some(last) if last < transfer => Resolution::Undo,
        Some(_) => Resolution::Unknown,
        None if status
            .forgotten_through
            .is_some_and(|f| f <= card_transfers_then) =>
        {
            Resolution::Undo
        }
        // A card that does not say how late it has forgotten (an older purse, known `00`):
        // the count since. Not for one that says (it would add nothing, and would tie the
        // decision to every such card keeping 16 PSDs).
        None if status.forgotten_through.is_none()
            && status
                .card_transfers
                .0
                .checked_sub(card_transfers_then.0)
                .is_some_and(|since| since <= CREDITS_BEFORE_FORGETTING) =>
        {
            Resolution::Undo
        }
        None => Resolution::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::purse::state::PairedTable;
    use alloc::format;
    use alloc::string::String;
    use proptest::prelude::*;

    fn device(n: u8) -> DeviceId {
        DeviceId([b'P', b'S', b'D', 0, 0, 0, 0, n])
    }

    /// What the purse's TRANSFER STATUS says to `d` (as `purse::transfer` builds it).
    fn status_of(t: &PairedTable, count: u32, d: DeviceId, older_purse: bool) -> TransferStatus {
        let last_from_psd = t.get(d).map(|p| p.last_transfer);
        TransferStatus {
            card_transfers: TransferCount(count),
            last_from_psd,
            forgotten_through: (!older_purse && last_from_psd.is_none())
                .then_some(t.forgotten_through),
        }
    }

    /// The purse's table and count after one more credit, closed by the PSD (its whole
    /// transfer) when `close`.
    fn credit(t: &mut PairedTable, count: &mut u32, d: DeviceId, transfer: u32, close: bool) {
        *count += 1;
        *t = t
            .credited(
                d,
                TransferCount(transfer),
                Amount(1),
                None,
                TransferCount(*count),
            )
            .unwrap();
        if close {
            if let Some(next) = t.closed(d, TransferCount(transfer + 1)).unwrap() {
                *t = next;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// A model of the purse's table (the applet's own `PairedTable`) and of PSD X
        /// (device 0) with one transfer pending, made at count `then`: credited as the
        /// purse's very next credit or not, then any closed transfers from 40 other PSDs
        /// (X makes none while pending). `resolve` never undoes a transfer the purse
        /// credited (value created) nor completes one it did not (value lost), and since
        /// the table never forgets an open credit it always decides; a purse of the older
        /// kind (known `00`) may leave it undecided, never wrongly.
        #[test]
        fn resolve_never_undoes_a_credit_nor_completes_what_was_not(
            before in proptest::collection::vec(0u8..40, 0..60),
            credited in any::<bool>(),
            after in proptest::collection::vec(1u8..41, 0..80),
            older_purse in any::<bool>(),
        ) {
            let x = device(0);
            let mut t = PairedTable::default();
            let mut count = 0u32;
            let mut x_transfers = 0u32;
            for d in before {
                if d == 0 {
                    x_transfers += 1;
                    credit(&mut t, &mut count, x, x_transfers, true);
                } else {
                    credit(&mut t, &mut count, device(d), 1, true);
                }
            }
            let then = count;
            let pending = x_transfers + 1;
            if credited {
                credit(&mut t, &mut count, x, pending, false);
            }
            for d in after {
                credit(&mut t, &mut count, device(d), 1, true);
            }
            let status = status_of(&t, count, x, older_purse);
            match resolve(TransferCount(pending), TransferCount(then), &status) {
                Resolution::Undo => prop_assert!(!credited, "undid a credited transfer"),
                Resolution::Complete => prop_assert!(credited, "completed what was not credited"),
                Resolution::Unknown => prop_assert!(older_purse, "undecided"),
            }
        }
    }

    /// Places in the model purse's table: 2, so that 3 PSDs fill it.
    const CAPACITY: usize = 2;
    /// PSDs in the model.
    const PSDS: usize = 3;
    /// Events per schedule: every schedule of this many is run.
    const DEPTH: usize = 5;

    /// How the host's run of one transfer ends.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        /// Every message delivered, TRANSFER CLOSE included.
        None,
        /// TRANSFER DEBIT committed, its VAL lost.
        ValLost,
        /// TRANSFER CREDIT committed, its ACK lost.
        AckLost,
        /// TRANSFER CONFIRM committed, the PSD's CLS lost.
        CloseLost,
    }

    #[derive(Clone, Copy, Debug)]
    enum Event {
        /// PSD `i`'s host transfers 1 to the purse (resolving first, as the driver does).
        Transfer(usize, Fault),
        /// PSD `i`'s host meets the purse: resolves what is pending, then closes.
        Contact(usize),
    }

    #[derive(Clone, Copy, Debug, Default)]
    struct ModelPsd {
        dr: u64,
        started: u32,
        /// (transfer number, the card's count in its session).
        pending: Option<(u32, u32)>,
    }

    #[derive(Clone, Debug, Default)]
    struct Model {
        psds: [ModelPsd; PSDS],
        table: PairedTable,
        count: u32,
        balance: u64,
        /// What the purse really credited: (PSD, transfer number).
        credited: Vec<(usize, u32)>,
    }

    impl Model {
        fn new() -> Model {
            let mut m = Model::default();
            for p in &mut m.psds {
                p.dr = 10;
            }
            m
        }

        /// Σ DR + value in flight + balance: the value at the start.
        fn conserved(&self) -> u64 {
            let mut total = self.balance;
            for (i, p) in self.psds.iter().enumerate() {
                total += p.dr;
                if let Some((t, _)) = p.pending {
                    if !self.credited.contains(&(i, t)) {
                        total += 1;
                    }
                }
            }
            total
        }

        fn close(&mut self, i: usize) {
            let started = TransferCount(self.psds[i].started);
            if let Some(next) = self
                .table
                .closed(device(u8::try_from(i).unwrap()), started)
                .unwrap()
            {
                self.table = next;
            }
        }

        /// Resolves PSD `i`'s pending transfer from the purse's status, then closes.
        fn contact(&mut self, i: usize) -> Result<(), String> {
            if let Some((t, c)) = self.psds[i].pending {
                let status = status_of(
                    &self.table,
                    self.count,
                    device(u8::try_from(i).unwrap()),
                    false,
                );
                let truth = self.credited.contains(&(i, t));
                match resolve(TransferCount(t), TransferCount(c), &status) {
                    Resolution::Complete if truth => {}
                    Resolution::Undo if !truth => self.psds[i].dr += 1,
                    r => return Err(format!("PSD {i} transfer {t}: {r:?}, credited {truth}")),
                }
                self.psds[i].pending = None;
            }
            self.close(i);
            Ok(())
        }

        fn transfer(&mut self, i: usize, fault: Fault) -> Result<(), String> {
            self.contact(i)?;
            // TRANSFER REQUEST: refused without a place for this PSD (nothing debited).
            let d = device(u8::try_from(i).unwrap());
            if !self.table.has_room_within(CAPACITY, d) || self.psds[i].dr == 0 {
                return Ok(());
            }
            let t = self.psds[i].started;
            self.psds[i].started += 1;
            self.psds[i].dr -= 1;
            self.psds[i].pending = Some((t, self.count));
            if fault == Fault::ValLost {
                return Ok(());
            }
            self.count += 1;
            self.table = self
                .table
                .credited_within(
                    CAPACITY,
                    d,
                    TransferCount(t),
                    Amount(1),
                    None,
                    TransferCount(self.count),
                )
                .map_err(|e| format!("credit refused after the request: {e:?}"))?;
            self.balance += 1;
            self.credited.push((i, t));
            if fault == Fault::AckLost {
                return Ok(());
            }
            self.psds[i].pending = None;
            if fault == Fault::CloseLost {
                return Ok(());
            }
            self.close(i);
            Ok(())
        }

        fn apply(&mut self, e: Event) -> Result<(), String> {
            match e {
                Event::Transfer(i, f) => self.transfer(i, f),
                Event::Contact(i) => self.contact(i),
            }
        }
    }

    fn events() -> Vec<Event> {
        let mut v = Vec::new();
        for i in 0..PSDS {
            for f in [
                Fault::None,
                Fault::ValLost,
                Fault::AckLost,
                Fault::CloseLost,
            ] {
                v.push(Event::Transfer(i, f));
            }
            v.push(Event::Contact(i));
        }
        v
    }

    /// Walks every schedule of up to `depth` more events from `m`; after each event value
    /// is conserved, and from every state reached each PSD's next contact ends its pending
    /// transfer, rightly (complete exactly when credited), leaving nothing pending.
    fn explore(m: &Model, depth: usize, trail: &mut Vec<Event>, schedules: &mut u64) {
        let start = 10 * PSDS as u64;
        let mut end = m.clone();
        for i in 0..PSDS {
            if let Err(e) = end.contact(i) {
                panic!("after {trail:?}: {e}");
            }
        }
        assert!(
            end.psds.iter().all(|p| p.pending.is_none()),
            "after {trail:?}"
        );
        assert_eq!(end.conserved(), start, "after {trail:?} and the contacts");
        *schedules += 1;
        if depth == 0 {
            return;
        }
        for e in events() {
            let mut next = m.clone();
            trail.push(e);
            if let Err(err) = next.apply(e) {
                panic!("{trail:?}: {err}");
            }
            assert_eq!(next.conserved(), start, "after {trail:?}");
            explore(&next, depth - 1, trail, schedules);
            trail.pop();
        }
    }

    /// Exhaustive small model (issue 18): 3 PSDs and one purse whose table has 2 places;
    /// every schedule of 5 events — whole transfers, transfers whose VAL, ACK or CLS is
    /// lost, contacts — in every order. Value is conserved after every event, and from
    /// every state the next contact of each PSD completes or undoes its pending transfer
    /// correctly: nothing stays pending, whatever the other PSDs did.
    #[test]
    fn every_schedule_of_lost_messages_among_psds_ends_with_nothing_pending() {
        let mut schedules = 0;
        explore(&Model::new(), DEPTH, &mut Vec::new(), &mut schedules);
        // 15 events: 1 + 15 + … + 15^5 states.
        assert_eq!(schedules, (0..=5u32).map(|k| 15u64.pow(k)).sum::<u64>());
    }
}
