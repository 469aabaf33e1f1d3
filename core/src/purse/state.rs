//! The purse's persistent records: identity and keys, PIN, balance and personality, the
//! PSDs it has been paired with, and the log of its last operations.
//!
//! Each lives in its own record so a command commits only what it changes (the PIN try
//! counter alone, for instance), and each decodes strictly: a record that does not parse
//! is a corrupt card, never a fresh one. The RAM copy of the records is `Persistent`;
//! what a deselect or reset forgets is `Volatile`. Record IDs: [`crate::records::purse`].

use alloc::vec::Vec;

use crate::records::purse as rec;
use crate::store::{Store, StoreError};

use super::purchase::{self, PurchaseRequest};
use super::transfer::CardSession;
use crate::transfer::cert::Credentials;

use crate::crypto::{IndiciumKey, MacKey, MAC_KEY_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::status::Status;
use crate::types::{Amount, CardId, Date, DeviceId, SchemeId, TransferCount};
use crate::wire::{Malformed, Reader, Writer};

/// Longest PIN.
pub const MAX_PIN_LEN: usize = 12;
/// Shortest PIN.
pub const MIN_PIN_LEN: usize = 4;
/// PSDs a purse remembers (most recent first out when full).
pub const MAX_PAIRED: usize = 16;
/// Operations kept in the purse's log.
pub const LOG_LEN: usize = 10;

pub(crate) fn write_date(w: &mut Vec<u8>, d: Option<Date>) {
    match d {
        None => w.put_u32(0),
        Some(d) => d.write(w),
    }
}

pub(crate) fn read_date(r: &mut Reader<'_>) -> Result<Option<Date>, Malformed> {
    if r.remaining().starts_with(&[0, 0, 0, 0]) {
        r.take(4)?;
        Ok(None)
    } else {
        Date::read(r).map(Some)
    }
}

/// The card's identity, keys and limits (written at personalization; the certificate once
/// afterwards).
#[derive(Clone, Debug)]
pub struct Identity {
    /// Serial number.
    pub card: CardId,
    /// Scheme.
    pub scheme: SchemeId,
    /// How the card recognises PSDs.
    pub recognition: CardRecognition,
    /// Issuer admin key for this card (PIN unblock, recognition reset).
    pub admin_key: MacKey,
    /// The issuer's public key, which certifies the purchase key.
    pub issuer_public_key: [u8; PUBLIC_KEY_LEN],
    /// Purchase signing key (generated inside the card).
    pub purchase_key: IndiciumKey,
    /// The issuer's signature over the purchase key, once installed.
    pub certificate: Option<[u8; SIGNATURE_LEN]>,
    /// Highest balance.
    pub max_balance: Amount,
    /// Highest amount of one transfer.
    pub max_transfer: Amount,
    /// PIN tries.
    pub pin_tries: u8,
    /// Failed recognitions that block transfers.
    pub max_failures: u8,
}

/// A purse's means of recognising PSDs.
#[derive(Clone, Debug)]
pub enum CardRecognition {
    /// Personalized before certificates (identity record version 1): a card key
    /// diversified from the scheme's master key. Kept so the record is written back
    /// unchanged; transfers are refused (`9A25`), purchases go on.
    Legacy(MacKey),
    /// Its own recognition key, generated inside (identity record version 2); the
    /// issuer certifies it (record `CREDENTIALS`).
    Certified(IndiciumKey),
}

impl Identity {
    /// Record layout: version (`01` legacy, `02` certificates) ‖ card ‖ scheme ‖ card key
    /// (16, v1) or recognition key (32, v2) ‖ admin key ‖ issuer key ‖ purchase key ‖ max
    /// balance ‖ max transfer ‖ PIN tries ‖ max failures ‖ `00` | `01` purchase
    /// certificate.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut w = zeroize::Zeroizing::new(Vec::with_capacity(240));
        match &self.recognition {
            CardRecognition::Legacy(_) => w.put_u8(1),
            CardRecognition::Certified(_) => w.put_u8(2),
        }
        w.extend_from_slice(&self.card.0);
        w.put_u32(self.scheme.0);
        match &self.recognition {
            CardRecognition::Legacy(k) => w.extend_from_slice(k.expose()),
            CardRecognition::Certified(k) => w.extend_from_slice(k.secret_bytes().as_ref()),
        }
        w.extend_from_slice(self.admin_key.expose());
        w.extend_from_slice(&self.issuer_public_key);
        w.extend_from_slice(self.purchase_key.secret_bytes().as_ref());
        w.put_u64(self.max_balance.0);
        w.put_u64(self.max_transfer.0);
        w.put_u8(self.pin_tries);
        w.put_u8(self.max_failures);
        match &self.certificate {
            None => w.put_u8(0),
            Some(c) => {
                w.put_u8(1);
                w.extend_from_slice(c);
            }
        }
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<Identity, Malformed> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        let card = CardId(r.array()?);
        let scheme = SchemeId(r.u32()?);
        let recognition = match version {
            1 => CardRecognition::Legacy(MacKey::new(r.array::<MAC_KEY_LEN>()?)),
            2 => CardRecognition::Certified(
                IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?,
            ),
            _ => return Err(Malformed::Value),
        };
        let admin_key = MacKey::new(r.array::<MAC_KEY_LEN>()?);
        let issuer_public_key = r.array()?;
        let purchase_key = IndiciumKey::from_bytes(r.take(32)?).ok_or(Malformed::Value)?;
        let max_balance = Amount(r.u64()?);
        let max_transfer = Amount(r.u64()?);
        let pin_tries = r.u8()?;
        let max_failures = r.u8()?;
        let certificate = match r.u8()? {
            0 => None,
            1 => Some(r.array()?),
            _ => return Err(Malformed::Value),
        };
        r.finish()?;
        Ok(Identity {
            card,
            scheme,
            recognition,
            admin_key,
            issuer_public_key,
            purchase_key,
            certificate,
            max_balance,
            max_transfer,
            pin_tries,
            max_failures,
        })
    }
}

/// The PIN and its try counter.
#[derive(Clone, PartialEq, Eq)]
pub struct PinRecord {
    /// Tries left; 0 is blocked.
    pub tries_left: u8,
    /// The PIN's length.
    pub len: u8,
    /// The PIN, zero-padded to [`MAX_PIN_LEN`].
    pub pin: [u8; MAX_PIN_LEN],
}

impl Drop for PinRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pin);
    }
}

impl core::fmt::Debug for PinRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PinRecord {{ tries_left: {}, .. }}", self.tries_left)
    }
}

impl PinRecord {
    /// A PIN record for `pin` with `tries` tries, or `None` if the PIN's length is out of
    /// range.
    pub fn new(pin: &[u8], tries: u8) -> Option<PinRecord> {
        if !(MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.len()) {
            return None;
        }
        let mut padded = [0u8; MAX_PIN_LEN];
        padded[..pin.len()].copy_from_slice(pin);
        Some(PinRecord {
            tries_left: tries,
            // In range: the length was checked against MAX_PIN_LEN above.
            len: u8::try_from(pin.len()).ok()?,
            pin: padded,
        })
    }

    /// Whether `candidate` is the PIN, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let mut padded = zeroize::Zeroizing::new([0u8; MAX_PIN_LEN]);
        let n = candidate.len().min(MAX_PIN_LEN);
        padded[..n].copy_from_slice(&candidate[..n]);
        let same_len = (candidate.len() as u64).ct_eq(&u64::from(self.len));
        bool::from(same_len & padded.ct_eq(&self.pin))
    }

    /// Record layout.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut w = zeroize::Zeroizing::new(Vec::with_capacity(15));
        w.put_u8(1);
        w.put_u8(self.tries_left);
        w.put_u8(self.len);
        w.extend_from_slice(&self.pin);
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<PinRecord, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(Malformed::Value);
        }
        let rec = PinRecord {
            tries_left: r.u8()?,
            len: r.u8()?,
            pin: r.array()?,
        };
        r.finish()?;
        if !(MIN_PIN_LEN..=MAX_PIN_LEN).contains(&usize::from(rec.len)) {
            return Err(Malformed::Value);
        }
        Ok(rec)
    }
}

/// Balance and personality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurseState {
    /// Value on the card.
    pub balance: Amount,
    /// Transfers credited (personality; part of the session context).
    pub transfers: TransferCount,
    /// Value received over the card's life (personality: the totalizer).
    pub total_in: Amount,
    /// Date of the last transfer credited, when the platform had a clock.
    pub last_transfer: Option<Date>,
    /// Purchases made (the card transaction number of the last one).
    pub purchases: u32,
    /// Failed recognitions in a row.
    pub failures: u8,
    /// Highest issuer command counter used (issuer commands must go up).
    pub admin_counter: u32,
}

impl PurseState {
    /// Record layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(40);
        w.put_u8(1);
        w.put_u64(self.balance.0);
        w.put_u32(self.transfers.0);
        w.put_u64(self.total_in.0);
        write_date(&mut w, self.last_transfer);
        w.put_u32(self.purchases);
        w.put_u8(self.failures);
        w.put_u32(self.admin_counter);
        w
    }

    /// Parses the record.
    pub fn decode(bytes: &[u8]) -> Result<PurseState, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(Malformed::Value);
        }
        let s = PurseState {
            balance: Amount(r.u64()?),
            transfers: TransferCount(r.u32()?),
            total_in: Amount(r.u64()?),
            last_transfer: read_date(&mut r)?,
            purchases: r.u32()?,
            failures: r.u8()?,
            admin_counter: r.u32()?,
        };
        r.finish()?;
        Ok(s)
    }
}

/// Whether a PSD's last credited transfer may still be pending in the PSD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closure {
    /// Credited, and the PSD has not shown since that it has nothing pending with this
    /// card: its acknowledgement may have been lost, so the PSD may still need this entry
    /// to complete. Never forgotten.
    Open = 1,
    /// The PSD showed, in a later message of its own (TRANSFER CLOSE), that it has nothing
    /// pending with this card: the entry may be forgotten without a trace.
    Closed = 2,
    /// Read from a version 1 or 2 table, which did not say, or released by the issuer
    /// (RELEASE PARTNER, [`super::release`]): forgotten like an entry of those versions
    /// (raising `forgotten_through`).
    Unknown = 3,
}

/// A PSD the purse has received value from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paired {
    /// The PSD.
    pub device: DeviceId,
    /// The PSD's number of the last transfer credited from it.
    pub last_transfer: TransferCount,
    /// Transfers credited from it.
    pub count: u32,
    /// Value credited from it.
    pub total: Amount,
    /// Date of the last one, when known.
    pub date: Option<Date>,
    /// The card's transfer count after the last credit from it (a version 1 record does not
    /// say: the card's count when it was loaded, the latest it can be).
    pub credited_at: TransferCount,
    /// Whether that transfer may still be pending in the PSD.
    pub closure: Closure,
}

/// First byte of a version 2 table (a version 1 table starts with its entry count, 0-16).
const PAIRED_V2: u8 = 0xF2;
/// First byte of a version 3 table (each entry says whether it is closed).
const PAIRED_V3: u8 = 0xF3;

/// The PSDs the purse has been paired with, least recent first, and how late a credit
/// the purse has forgotten without knowing it closed.
///
/// A PSD with a transfer pending asks the purse what it credited (TRANSFER STATUS): a PSD
/// the purse does not list was not credited unless the purse forgot it while it could
/// still be pending. Since version 3 the table never forgets an [`Closure::Open`] entry —
/// a credit the PSD has not shown closed — so a PSD not listed was not credited, whatever
/// happened since; `forgotten_through` is the latest `credited_at` of any entry of unknown
/// closure (from a version 1 or 2 table) the table dropped (0: none), so only a transfer
/// pending since before the upgrade can be left undecided (`core::transfer::resolve`).
/// The price: a purse whose 16 places all hold open entries refuses a 17th PSD (`9A2C`)
/// until one of them closes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairedTable {
    /// The entries, least recent first.
    pub entries: Vec<Paired>,
    /// The card's transfer count after the latest credit from a PSD the table dropped
    /// while its closure was unknown (0: it has dropped none).
    pub forgotten_through: TransferCount,
}

impl PairedTable {
    /// The entry for `device`.
    pub fn get(&self, device: DeviceId) -> Option<&Paired> {
        self.entries.iter().find(|p| p.device == device)
    }

    /// Whether a credit from `device` has a place: it is listed, or a place is free, or an
    /// entry that is not open can be forgotten.
    pub fn has_room_for(&self, device: DeviceId) -> bool {
        self.has_room_within(MAX_PAIRED, device)
    }

    /// [`PairedTable::has_room_for`] with `capacity` places.
    pub fn has_room_within(&self, capacity: usize, device: DeviceId) -> bool {
        self.get(device).is_some()
            || self.entries.len() < capacity
            || self.entries.iter().any(|p| p.closure != Closure::Open)
    }

    /// The table after crediting `amount` from `device`'s transfer `transfer`, the card's
    /// count becoming `card_count`: its entry moves to the end, open; when the table is
    /// full the least recent entry that is not open goes (`forgotten_through` moves up to
    /// its `credited_at` if its closure was unknown). `9A2C` if every entry is open,
    /// `9A06` if a count would wrap.
    pub fn credited(
        &self,
        device: DeviceId,
        transfer: TransferCount,
        amount: Amount,
        date: Option<Date>,
        card_count: TransferCount,
    ) -> Result<PairedTable, Status> {
        self.credited_within(MAX_PAIRED, device, transfer, amount, date, card_count)
    }

    /// [`PairedTable::credited`] with `capacity` places (the applet's is [`MAX_PAIRED`]; a
    /// smaller one lets a model test reach a full table in few steps).
    pub fn credited_within(
        &self,
        capacity: usize,
        device: DeviceId,
        transfer: TransferCount,
        amount: Amount,
        date: Option<Date>,
        card_count: TransferCount,
    ) -> Result<PairedTable, Status> {
        let mut entries = self.entries.clone();
        let mut forgotten_through = self.forgotten_through;
        let old = entries
            .iter()
            .position(|p| p.device == device)
            .map(|i| entries.remove(i));
        let (count, total) = match old {
            None => (1, amount),
            Some(o) => (
                o.count.checked_add(1).ok_or(Status::CounterOverflow)?,
                o.total.checked_add(amount).ok_or(Status::CounterOverflow)?,
            ),
        };
        if entries.len() >= capacity {
            let i = entries
                .iter()
                .position(|p| p.closure != Closure::Open)
                .ok_or(Status::PartnersOpen)?;
            let dropped = entries.remove(i);
            if dropped.closure == Closure::Unknown {
                forgotten_through = forgotten_through.max(dropped.credited_at);
            }
        }
        entries.push(Paired {
            device,
            last_transfer: transfer,
            count,
            total,
            date,
            credited_at: card_count,
            closure: Closure::Open,
        });
        Ok(PairedTable {
            entries,
            forgotten_through,
        })
    }

    /// The table after `device` showed, in a TRANSFER CLOSE, that it has started `started`
    /// transfers and has nothing pending with this card: its entry is closed. `Ok(None)`:
    /// nothing to change (not listed, or closed already). `6985` for a statement older
    /// than the last credit from it (`started` not above its last transfer's number): it
    /// was made before that credit, so it says nothing about it.
    pub fn closed(
        &self,
        device: DeviceId,
        started: TransferCount,
    ) -> Result<Option<PairedTable>, Status> {
        let Some(i) = self.entries.iter().position(|p| p.device == device) else {
            return Ok(None);
        };
        let entry = self.entries[i];
        if started <= entry.last_transfer {
            return Err(Status::ConditionsNotSatisfied);
        }
        if entry.closure == Closure::Closed {
            return Ok(None);
        }
        let mut next = self.clone();
        next.entries[i].closure = Closure::Closed;
        Ok(Some(next))
    }

    /// The table with no `credited_at` (nor `forgotten_through`) above `card_count`: what
    /// a version 1 record, which does not say when, becomes once the card's count is known.
    pub fn bounded_by(mut self, card_count: TransferCount) -> PairedTable {
        for p in &mut self.entries {
            p.credited_at = p.credited_at.min(card_count);
        }
        self.forgotten_through = self.forgotten_through.min(card_count);
        self
    }

    /// Record layout (version 3): `F3` ‖ forgotten through u32 ‖ count u8 ‖ count ×
    /// (device 8 ‖ last transfer u32 ‖ transfers u32 ‖ total u64 ‖ date ‖ credited at u32 ‖
    /// closure u8: `01` open, `02` closed, `03` unknown).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(6 + self.entries.len() * 33);
        w.put_u8(PAIRED_V3);
        w.put_u32(self.forgotten_through.0);
        // why: the applet's table holds at most MAX_PAIRED (16) entries: `credited` drops
        // one before adding a 17th and `decode` refuses more.
        #[allow(clippy::cast_possible_truncation)]
        w.put_u8(self.entries.len() as u8);
        for p in &self.entries {
            w.extend_from_slice(&p.device.0);
            w.put_u32(p.last_transfer.0);
            w.put_u32(p.count);
            w.put_u64(p.total.0);
            write_date(&mut w, p.date);
            w.put_u32(p.credited_at.0);
            w.put_u8(p.closure as u8);
        }
        w
    }

    /// Parses version 3, 2 (no closure: each entry's is unknown) or 1 (count ‖ entries
    /// without `credited_at` nor closure), which says neither when each PSD was last
    /// credited nor whether a full table forgot any: the latest possible is assumed
    /// (`u32::MAX`, and whatever a full table may have dropped), to be bounded by the
    /// card's count ([`PairedTable::bounded_by`]). Any other first byte above 16 is refused.
    pub fn decode(bytes: &[u8]) -> Result<PairedTable, Malformed> {
        let mut r = Reader::new(bytes);
        let first = r.u8()?;
        let version = match first {
            PAIRED_V3 => 3,
            PAIRED_V2 => 2,
            _ => 1,
        };
        let (forgotten, n) = if version >= 2 {
            (TransferCount(r.u32()?), usize::from(r.u8()?))
        } else {
            (TransferCount(0), usize::from(first))
        };
        if n > MAX_PAIRED {
            return Err(Malformed::Value);
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let mut p = Paired {
                device: DeviceId(r.array()?),
                last_transfer: TransferCount(r.u32()?),
                count: r.u32()?,
                total: Amount(r.u64()?),
                date: read_date(&mut r)?,
                credited_at: TransferCount(u32::MAX),
                closure: Closure::Unknown,
            };
            if version >= 2 {
                p.credited_at = TransferCount(r.u32()?);
                // Entries stay only while credited no earlier than any dropped one of
                // unknown closure (equal only in a table upgraded from version 1, where
                // neither is known).
                if p.credited_at < forgotten {
                    return Err(Malformed::Value);
                }
            }
            if version == 3 {
                p.closure = match r.u8()? {
                    1 => Closure::Open,
                    2 => Closure::Closed,
                    3 => Closure::Unknown,
                    _ => return Err(Malformed::Value),
                };
            }
            entries.push(p);
        }
        r.finish()?;
        // Least recent first: credits in order (equal only as upgraded from version 1).
        if version >= 2
            && entries
                .windows(2)
                .any(|w| w[0].credited_at > w[1].credited_at)
        {
            return Err(Malformed::Value);
        }
        let forgotten_through = match (version, n == MAX_PAIRED) {
            (2 | 3, _) => forgotten,
            // A version 1 table that never filled has forgotten nothing.
            (_, false) => TransferCount(0),
            (_, true) => TransferCount(u32::MAX),
        };
        Ok(PairedTable {
            entries,
            forgotten_through,
        })
    }
}

/// What a log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Value received from a PSD.
    Credit = 1,
    /// A purchase paid to a merchant terminal.
    Purchase = 2,
}

/// One operation in the purse's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Credit or purchase.
    pub kind: LogKind,
    /// The PSD or terminal on the other side.
    pub counterpart: [u8; 8],
    /// The PSD's transfer number or the card's purchase number.
    pub number: u32,
    /// Value moved.
    pub amount: Amount,
    /// Balance after it.
    pub balance: Amount,
    /// Date, when known.
    pub date: Option<Date>,
}

/// The last [`LOG_LEN`] operations, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log(pub Vec<LogEntry>);

impl Log {
    /// The log with `entry` appended (the oldest dropped when full).
    pub fn with(&self, entry: LogEntry) -> Log {
        let mut entries = self.0.clone();
        entries.push(entry);
        if entries.len() > LOG_LEN {
            entries.remove(0);
        }
        Log(entries)
    }

    /// Record layout: count, then entries.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(1 + self.0.len() * 33);
        // why: the applet's log holds at most LOG_LEN (10) entries: `with` drops the oldest
        // and `decode` refuses more.
        #[allow(clippy::cast_possible_truncation)]
        w.put_u8(self.0.len() as u8);
        for e in &self.0 {
            w.put_u8(e.kind as u8);
            w.extend_from_slice(&e.counterpart);
            w.put_u32(e.number);
            w.put_u64(e.amount.0);
            w.put_u64(e.balance.0);
            write_date(&mut w, e.date);
        }
        w
    }

    /// Parses the layout.
    pub fn decode(bytes: &[u8]) -> Result<Log, Malformed> {
        let mut r = Reader::new(bytes);
        let n = usize::from(r.u8()?);
        if n > LOG_LEN {
            return Err(Malformed::Value);
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match r.u8()? {
                1 => LogKind::Credit,
                2 => LogKind::Purchase,
                _ => return Err(Malformed::Value),
            };
            entries.push(LogEntry {
                kind,
                counterpart: r.array()?,
                number: r.u32()?,
                amount: Amount(r.u64()?),
                balance: Amount(r.u64()?),
                date: read_date(&mut r)?,
            });
        }
        r.finish()?;
        Ok(Log(entries))
    }
}

/// What survives a power cut: the RAM copy of a personalized purse's committed records.
pub(super) struct Persistent {
    /// Identity, keys, limits (record `IDENTITY`).
    pub id: Identity,
    /// PIN and try counter (record `PIN`).
    pub pin: PinRecord,
    /// Balance and personality (record `STATE`).
    pub state: PurseState,
    /// PSDs paired with (record `PAIRED`).
    pub paired: PairedTable,
    /// Last operations (record `LOG`).
    pub log: Log,
    /// The last purchase's request and signed record, for a terminal that lost the reply
    /// (record `LAST_PURCHASE`).
    pub last_purchase: Option<(PurchaseRequest, Vec<u8>)>,
    /// The recognition certificate and revocation list (record `CREDENTIALS`).
    pub credentials: Credentials,
}

/// What a deselect or reset forgets.
#[derive(Default)]
pub(super) struct Volatile {
    /// PIN verified since selection.
    pub pin_verified: bool,
    /// The transfer session.
    pub session: Option<CardSession>,
}

impl Persistent {
    /// The purse's records in `store`: `None` for a store without any (a blank purse), an
    /// error for a partial or undecodable set.
    pub fn load(store: &dyn Store) -> Result<Option<Persistent>, StoreError> {
        let any = store.ids()?.into_iter().any(|id| rec::RANGE.contains(&id));
        let Some(id) = store.read(rec::IDENTITY)? else {
            if any {
                return Err(StoreError::Corrupt("purse records without an identity"));
            }
            return Ok(None);
        };
        let corrupt = |what| move |_| StoreError::Corrupt(what);
        let need = |id, what| -> Result<Vec<u8>, StoreError> {
            store.read(id)?.ok_or(StoreError::Corrupt(what))
        };
        let id = Identity::decode(&id).map_err(corrupt("purse identity"))?;
        let pin = PinRecord::decode(&need(rec::PIN, "purse PIN missing")?)
            .map_err(corrupt("purse PIN"))?;
        let state = PurseState::decode(&need(rec::STATE, "purse state missing")?)
            .map_err(corrupt("purse state"))?;
        let paired = PairedTable::decode(&need(rec::PAIRED, "paired table missing")?)
            .map_err(corrupt("paired table"))?
            .bounded_by(state.transfers);
        let log = Log::decode(&need(rec::LOG, "purse log missing")?).map_err(corrupt("log"))?;
        let last_purchase = match store.read(rec::LAST_PURCHASE)? {
            None => None,
            Some(b) => Some(purchase::decode_last_purchase(&b).map_err(corrupt("last purchase"))?),
        };
        let credentials = match store.read(rec::CREDENTIALS)? {
            None => Credentials::default(),
            Some(b) => Credentials::decode(&b).map_err(corrupt("purse credentials"))?,
        };
        Ok(Some(Persistent {
            id,
            pin,
            state,
            paired,
            log,
            last_purchase,
            credentials,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId([b'P', b'S', b'D', 0, 0, 0, 0, n])
    }

    /// Credits from `psds` in order, the card's count rising by one each time.
    fn credit_all(psds: &[u8]) -> PairedTable {
        let mut t = PairedTable::default();
        for (i, n) in psds.iter().enumerate() {
            let count = TransferCount(u32::try_from(i).unwrap() + 1);
            t = t
                .credited(device(*n), TransferCount(1), Amount(10), None, count)
                .unwrap();
        }
        t
    }

    /// Every entry's closure made unknown (as read from a version 2 table).
    fn unknown(mut t: PairedTable) -> PairedTable {
        for p in &mut t.entries {
            p.closure = Closure::Unknown;
        }
        t
    }

    #[test]
    fn a_table_of_unknown_closure_forgets_the_least_recent_and_remembers_how_late() {
        // 16 distinct PSDs: nothing forgotten.
        let t = unknown(credit_all(&(0..16).collect::<Vec<_>>()));
        assert_eq!(t.forgotten_through, TransferCount(0));
        // A 17th: PSD 0 (credited at count 1) is forgotten.
        let t = t
            .credited(
                device(16),
                TransferCount(1),
                Amount(10),
                None,
                TransferCount(17),
            )
            .unwrap();
        assert!(t.get(device(0)).is_none());
        assert_eq!(t.forgotten_through, TransferCount(1));
        // PSD 1 credited again moves to the end: the next new PSD forgets PSD 2 (count 3).
        let t = t
            .credited(
                device(1),
                TransferCount(2),
                Amount(10),
                None,
                TransferCount(18),
            )
            .unwrap();
        let t = unknown(t)
            .credited(
                device(17),
                TransferCount(1),
                Amount(10),
                None,
                TransferCount(19),
            )
            .unwrap();
        assert!(t.get(device(1)).is_some() && t.get(device(2)).is_none());
        assert_eq!(t.forgotten_through, TransferCount(3));
        // Version 3 round trip.
        let bytes = t.encode();
        assert_eq!(bytes[0], PAIRED_V3);
        assert_eq!(PairedTable::decode(&bytes).unwrap(), t);
        for n in 0..bytes.len() {
            assert!(PairedTable::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn a_version_1_table_is_read_as_late_as_possible() {
        // Version 1: count ‖ entries without `credited_at`.
        let v1 = |n: u8| {
            let mut w = alloc::vec![n];
            for i in 0..n {
                w.extend_from_slice(&device(i).0);
                w.put_u32(1);
                w.put_u32(1);
                w.put_u64(10);
                write_date(&mut w, None);
            }
            w
        };
        let t = PairedTable::decode(&v1(3))
            .unwrap()
            .bounded_by(TransferCount(7));
        assert_eq!(
            t.forgotten_through,
            TransferCount(0),
            "never full: nothing forgotten"
        );
        assert!(t.entries.iter().all(|p| p.credited_at == TransferCount(7)));
        let full = PairedTable::decode(&v1(16))
            .unwrap()
            .bounded_by(TransferCount(40));
        assert_eq!(
            full.forgotten_through,
            TransferCount(40),
            "full: may have forgotten"
        );
        assert!(full.entries.iter().all(|p| p.closure == Closure::Unknown));
        // Written back as version 3, it reads the same.
        assert_eq!(PairedTable::decode(&full.encode()).unwrap(), full);
        assert!(PairedTable::decode(&v1(17)).is_err());
    }

    #[test]
    fn inconsistent_version_2_tables_are_refused() {
        let t = credit_all(&[1, 2, 3]);
        let mut bytes = t.encode();
        // forgotten through above an entry's credit.
        bytes[1..5].copy_from_slice(&2u32.to_be_bytes());
        assert!(PairedTable::decode(&bytes).is_err());
        // Entries out of order.
        let mut swapped = t.clone();
        swapped.entries.swap(0, 2);
        assert!(PairedTable::decode(&swapped.encode()).is_err());
        // More than 16 entries.
        let mut big = t.encode();
        big[5] = 17;
        assert!(PairedTable::decode(&big).is_err());
        // A closure byte that is none of 01, 02, 03.
        let mut bad = t.encode();
        let last = bad.len() - 1;
        bad[last] = 4;
        assert!(PairedTable::decode(&bad).is_err());
    }

    /// A version 2 table (the frozen fixtures' layout) reads with every closure unknown,
    /// and is forgotten as before.
    #[test]
    fn a_version_2_table_reads_with_closure_unknown() {
        let t = credit_all(&[1, 2, 3]);
        let mut v2 = alloc::vec![PAIRED_V2];
        v2.put_u32(0);
        v2.put_u8(3);
        for p in &t.entries {
            v2.extend_from_slice(&p.device.0);
            v2.put_u32(p.last_transfer.0);
            v2.put_u32(p.count);
            v2.put_u64(p.total.0);
            write_date(&mut v2, p.date);
            v2.put_u32(p.credited_at.0);
        }
        assert_eq!(PairedTable::decode(&v2).unwrap(), unknown(t));
    }

    /// Open entries are never forgotten: a full table of them refuses a new PSD (`9A2C`)
    /// until one closes; a closed one goes without raising `forgotten_through`; a closing
    /// statement older than the last credit is refused.
    #[test]
    fn open_entries_are_never_forgotten_and_closed_ones_leave_no_trace() {
        let t = credit_all(&(0..16).collect::<Vec<_>>());
        assert!(!t.has_room_for(device(16)) && t.has_room_for(device(3)));
        assert_eq!(
            t.credited(
                device(16),
                TransferCount(1),
                Amount(1),
                None,
                TransferCount(17)
            ),
            Err(Status::PartnersOpen)
        );
        // PSD 5 says it has started 1 transfer: not after its credited transfer number 1.
        assert_eq!(
            t.closed(device(5), TransferCount(1)),
            Err(Status::ConditionsNotSatisfied)
        );
        let t = t.closed(device(5), TransferCount(2)).unwrap().unwrap();
        assert_eq!(
            t.closed(device(5), TransferCount(2)),
            Ok(None),
            "closed already"
        );
        assert_eq!(
            t.closed(device(40), TransferCount(9)),
            Ok(None),
            "not listed"
        );
        let t = t
            .credited(
                device(16),
                TransferCount(1),
                Amount(1),
                None,
                TransferCount(17),
            )
            .unwrap();
        assert!(t.get(device(5)).is_none() && t.get(device(0)).is_some());
        assert_eq!(t.forgotten_through, TransferCount(0));
        assert_eq!(PairedTable::decode(&t.encode()).unwrap(), t);
    }
}
