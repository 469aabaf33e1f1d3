//! Every persistent record ID of every applet, in one place.
//!
//! A record ID is part of the stored format (card-sim state directories and the wasm sealed
//! blob hold records by these numbers; `tests/state/v1/` keeps examples): an ID once used
//! never changes meaning. Applets own disjoint ranges so several can share one store: the PSD
//! `0x01xx`, the purse `0x02xx`. A new applet takes the next free range here; a new record
//! of an applet takes the next free ID in its range.

use core::ops::RangeInclusive;

use crate::store::RecordId;

/// The PSD applet's records.
pub mod psd {
    use super::*;

    /// Every ID the PSD may use: a store holding any of them holds a PSD.
    pub const RANGE: RangeInclusive<RecordId> = 0x0100..=0x01FF;
    /// The device: identity, keys, limits, scheme ([`crate::psd::device::Device`]).
    pub const DEVICE: RecordId = 0x0100;
    /// Device-wide counters: last date of mailing, last inspection.
    pub const COUNTERS: RecordId = 0x0101;
    /// Value transfer to purses ([`crate::psd::transfer::TransferState`]).
    pub const TRANSFER: RecordId = 0x0102;
    /// The PSD's certificate and revocation list ([`crate::transfer::cert::Credentials`];
    /// absent until the issuer installs one).
    pub const CREDENTIALS: RecordId = 0x0103;
    /// Licenses: the pending request, the counters, the export seal key and the
    /// outstanding-export table ([`crate::psd::license::LicenseState`]; absent until the
    /// first LICENSE REQUEST or EXPORT SET).
    pub const LICENSES: RecordId = 0x0104;
    /// The certificate meter: rate tables, trust anchors, key slots, counters, the last
    /// paid service ([`crate::psd::certmeter::state::CertMeterState`]; absent until the
    /// first rate table, anchor or key).
    pub const CERTMETER: RecordId = 0x0105;
    /// Credit: the line of credit held, the credit remaining, the payment counter and the
    /// last payment ([`crate::psd::certmeter::credit::CreditState`]; absent until the first
    /// LOAD CREDIT LINE).
    pub const CREDIT: RecordId = 0x0106;
    /// Register set 0 ([`crate::psd::registers::RegisterSet`]); set `i` is `SET_BASE + i`,
    /// up to [`crate::psd::device::MAX_REGISTER_SETS`]. A slot without its record is free
    /// (never used, or its set exported).
    pub const SET_BASE: RecordId = 0x0110;

    /// The record of register set `index` (below `MAX_REGISTER_SETS`, so it stays in range).
    pub fn set(index: usize) -> RecordId {
        // MAX_REGISTER_SETS is 4: the sum cannot leave the 0x01xx range.
        // why: the mask keeps the low byte, which fits; the cast drops only zeros.
        #[allow(clippy::cast_possible_truncation)]
        let low = (index & 0x00FF) as RecordId;
        SET_BASE + low
    }
}

/// The purse applet's records.
pub mod purse {
    use super::*;

    /// Every ID the purse may use: a store holding any of them holds a purse.
    pub const RANGE: RangeInclusive<RecordId> = 0x0200..=0x02FF;
    /// Identity, keys, limits and certificate ([`crate::purse::state::Identity`]).
    pub const IDENTITY: RecordId = 0x0200;
    /// The PIN and its try counter ([`crate::purse::state::PinRecord`]).
    pub const PIN: RecordId = 0x0201;
    /// Balance and personality ([`crate::purse::state::PurseState`]).
    pub const STATE: RecordId = 0x0202;
    /// The PSDs the purse was paired with ([`crate::purse::state::PairedTable`]).
    pub const PAIRED: RecordId = 0x0203;
    /// The log of the last operations ([`crate::purse::state::Log`]).
    pub const LOG: RecordId = 0x0204;
    /// The last purchase's request and signed record (absent before the first purchase).
    pub const LAST_PURCHASE: RecordId = 0x0205;
    /// The card's recognition certificate and revocation list
    /// ([`crate::transfer::cert::Credentials`]; absent until the issuer installs one).
    pub const CREDENTIALS: RecordId = 0x0206;
}

/// The virtual meter box's records (`crate::vbox`, feature `vbox`).
pub mod vbox {
    use super::*;

    /// The box's own records (its configuration and keys).
    pub const RANGE: RangeInclusive<RecordId> = 0x0300..=0x03FF;
    /// Identity, shard geometry, vendor key and secret keys
    /// (`vbox::state::BoxConfig`, feature `vbox`).
    pub const CONFIG: RecordId = 0x0300;
    /// The approved log-ins so far (`vbox::login`; absent until the first).
    pub const LOGINS: RecordId = 0x0301;
    /// The shards' records: shard `i` is `SHARD_BASE + i`, up to
    /// `vbox::state::MAX_SHARDS`. A shard without its record was never written: its
    /// root is the empty tree's.
    pub const SHARDS: RangeInclusive<RecordId> = 0x2000..=0x2FFF;

    /// The record of shard `index` (below `MAX_SHARDS`, so it stays in [`SHARDS`]).
    pub fn shard(index: u16) -> RecordId {
        0x2000 + (index & 0x0FFF)
    }
}

/// Records a host keeps in a card's store beside the applets' (no applet reads them).
pub mod host {
    use super::*;

    /// Every ID a host may use.
    pub const RANGE: RangeInclusive<RecordId> = 0xF000..=0xF0FF;
    /// Present in a store whose records are sealed under a storage key: the data center's
    /// in-process box store (sealed since stop 40; a store without it is of the layout
    /// before, sealed at its next start). Its value is a label, sealed like every record, so
    /// opening it also tells a wrong key from a corrupt record.
    pub const SEALED: RecordId = 0xF000;
}
