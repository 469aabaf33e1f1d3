//! Every status word the card can answer, in one table.
//!
//! Each layer reports failures as a [`Status`]; [`Status::sw`] is the only place where a
//! failure becomes the two bytes a host sees. `docs/apdu.md` documents the same table.

/// A command's outcome other than success, mapped once to an ISO 7816-4 status word.
///
/// The `9Axx` words are proprietary (ISO 7816-4 leaves `9XXX` other than `9000` to the
/// application): they name the postage-specific refusals so a host can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `63Cx` a PIN or a recognition cryptogram did not match; `x` tries are left (the
    /// counter was decremented and committed before the compare).
    VerificationFailed(u8),
    /// `6581` the persistent store failed during a commit (power lost, I/O error). The
    /// commit may or may not have reached its commit point: after re-opening the card the
    /// host re-reads, or retries (same transaction ID, same refill message).
    MemoryFailure,
    /// `6700` Lc is not what the command needs, or the APDU's length fields are malformed.
    WrongLength,
    /// `6881` logical channels are not supported.
    LogicalChannelNotSupported,
    /// `6882` secure messaging is not supported.
    SecureMessagingNotSupported,
    /// `6883` a chain was interrupted by another command; the chain is dropped.
    LastCommandOfChainExpected,
    /// `6982` a MAC or signature did not verify, or the command needs a verified PIN or a
    /// recognised partner first.
    SecurityStatusNotSatisfied,
    /// `6983` the PIN, or the value-transfer function after too many failed
    /// recognitions, is blocked until an authenticated issuer command resets it.
    AuthenticationBlocked,
    /// `6985` the command is not allowed now: no applet is selected, or the device's
    /// life-cycle state forbids it (not yet personalized, or personalized already).
    ConditionsNotSatisfied,
    /// `6A80` a field of the command data is out of range or malformed.
    WrongData,
    /// `6A82` no applet with that AID (or no file with that identifier).
    NotFound,
    /// `6A86` P1 or P2 is not valid for this instruction.
    IncorrectP1P2,
    /// `6A88` the referenced register set does not exist.
    ReferencedDataNotFound,
    /// `6B00` P1/P2 out of range for GET RESPONSE (no pending response).
    WrongP1P2,
    /// `6D00` instruction not supported.
    InstructionNotSupported,
    /// `6E00` class not supported.
    ClassNotSupported,
    /// `6F00` an invariant the card keeps was found broken; nothing changed.
    Internal,
    /// `9A01` the descending register holds less than the postage asked for.
    InsufficientFunds,
    /// `9A02` postage above the device's per-piece limit.
    PostageAboveLimit,
    /// `9A03` date of mailing earlier than the last one used on this device.
    DateBeforeLastUsed,
    /// `9A04` origin postal code is not the one of the register set's license.
    OriginMismatch,
    /// `9A05` date of mailing too far ahead of the platform's clock.
    DateTooFarAhead,
    /// `9A06` a register or counter would overflow; it stays where it is.
    CounterOverflow,
    /// `9A07` client transaction ID reused with different indicium data.
    TransactionIdReused,
    /// `9A08` the last accepted audit (inspection) is older than the device allows.
    InspectionOverdue,
    /// `9A10` refill message or audit receipt made for another device.
    WrongDevice,
    /// `9A11` refill message made for another license / register set.
    RefillWrongLicense,
    /// `9A12` refill message already applied (refill count behind the device's).
    RefillReplayed,
    /// `9A13` refill message bound to a control sum / refill count the device no longer has.
    RefillStale,
    /// `9A14` the refill would raise the descending register above its maximum.
    RefillAboveLimit,
    /// `9A15` audit receipt for another audit than this session's last one.
    ReceiptForOtherAudit,
    /// `9A20` the PSD has a transfer to a purse pending: it must be resolved with that card
    /// before another transfer starts.
    TransferPending,
    /// `9A21` the purse's balance would exceed its maximum.
    BalanceAboveLimit,
    /// `9A22` the amount exceeds the purse's per-transfer maximum.
    TransferAboveLimit,
    /// `9A23` the pending transfer cannot be resolved from what this card reports (it has
    /// forgotten this PSD); the value stays pending, counted in the audit.
    TransferUnresolved,
    /// `9A24` the PSD's pending transfer is for another card than the one recognised.
    PendingForOtherCard,
}

impl Status {
    /// The status word (SW1 SW2) for this outcome.
    pub const fn sw(self) -> u16 {
        use Status::*;
        match self {
            VerificationFailed(left) => 0x63C0 | (if left > 15 { 15 } else { left }) as u16,
            MemoryFailure => 0x6581,
            WrongLength => 0x6700,
            LogicalChannelNotSupported => 0x6881,
            SecureMessagingNotSupported => 0x6882,
            LastCommandOfChainExpected => 0x6883,
            SecurityStatusNotSatisfied => 0x6982,
            AuthenticationBlocked => 0x6983,
            ConditionsNotSatisfied => 0x6985,
            WrongData => 0x6A80,
            NotFound => 0x6A82,
            IncorrectP1P2 => 0x6A86,
            ReferencedDataNotFound => 0x6A88,
            WrongP1P2 => 0x6B00,
            InstructionNotSupported => 0x6D00,
            ClassNotSupported => 0x6E00,
            Internal => 0x6F00,
            InsufficientFunds => 0x9A01,
            PostageAboveLimit => 0x9A02,
            DateBeforeLastUsed => 0x9A03,
            OriginMismatch => 0x9A04,
            DateTooFarAhead => 0x9A05,
            CounterOverflow => 0x9A06,
            TransactionIdReused => 0x9A07,
            InspectionOverdue => 0x9A08,
            WrongDevice => 0x9A10,
            RefillWrongLicense => 0x9A11,
            RefillReplayed => 0x9A12,
            RefillStale => 0x9A13,
            RefillAboveLimit => 0x9A14,
            ReceiptForOtherAudit => 0x9A15,
            TransferPending => 0x9A20,
            BalanceAboveLimit => 0x9A21,
            TransferAboveLimit => 0x9A22,
            TransferUnresolved => 0x9A23,
            PendingForOtherCard => 0x9A24,
        }
    }

    /// Every status, for documentation and tests that walk the table
    /// (`VerificationFailed(0)` stands for the whole `63Cx` family).
    pub const ALL: [Status; 36] = {
        use Status::*;
        [
            VerificationFailed(0),
            MemoryFailure,
            WrongLength,
            LogicalChannelNotSupported,
            SecureMessagingNotSupported,
            LastCommandOfChainExpected,
            SecurityStatusNotSatisfied,
            AuthenticationBlocked,
            ConditionsNotSatisfied,
            WrongData,
            NotFound,
            IncorrectP1P2,
            ReferencedDataNotFound,
            WrongP1P2,
            InstructionNotSupported,
            ClassNotSupported,
            Internal,
            InsufficientFunds,
            PostageAboveLimit,
            DateBeforeLastUsed,
            OriginMismatch,
            DateTooFarAhead,
            CounterOverflow,
            TransactionIdReused,
            InspectionOverdue,
            WrongDevice,
            RefillWrongLicense,
            RefillReplayed,
            RefillStale,
            RefillAboveLimit,
            ReceiptForOtherAudit,
            TransferPending,
            BalanceAboveLimit,
            TransferAboveLimit,
            TransferUnresolved,
            PendingForOtherCard,
        ]
    };

    /// The status a host sees for a status word, if the card can send it.
    pub fn from_sw(sw: u16) -> Option<Status> {
        if sw & 0xFFF0 == 0x63C0 {
            return Some(Status::VerificationFailed((sw & 0x000F) as u8));
        }
        Self::ALL.iter().copied().find(|s| s.sw() == sw)
    }

    /// A short English description, for host-side error messages.
    pub const fn describe(self) -> &'static str {
        use Status::*;
        match self {
            VerificationFailed(_) => "PIN or recognition cryptogram wrong; tries left in SW2",
            MemoryFailure => "persistent memory failure during commit; re-read or retry",
            WrongLength => "wrong length",
            LogicalChannelNotSupported => "logical channel not supported",
            SecureMessagingNotSupported => "secure messaging not supported",
            LastCommandOfChainExpected => "last command of the chain expected",
            SecurityStatusNotSatisfied => {
                "MAC or signature invalid, or PIN not verified / partner not recognised"
            }
            AuthenticationBlocked => {
                "PIN blocked or transfer function blocked; issuer reset needed"
            }
            ConditionsNotSatisfied => "not allowed now (life-cycle state or protocol step)",
            WrongData => "incorrect command data",
            NotFound => "application or file not found",
            IncorrectP1P2 => "incorrect P1/P2",
            ReferencedDataNotFound => "register set not found",
            WrongP1P2 => "wrong P1/P2 (no response pending)",
            InstructionNotSupported => "instruction not supported",
            ClassNotSupported => "class not supported",
            Internal => "internal error",
            InsufficientFunds => "insufficient funds (descending register or purse balance)",
            PostageAboveLimit => "postage above the per-piece limit",
            DateBeforeLastUsed => "date earlier than the last date used",
            OriginMismatch => "origin postal code does not match the license",
            DateTooFarAhead => "date too far ahead of the device clock",
            CounterOverflow => "register or counter would overflow",
            TransactionIdReused => "transaction ID reused with different data",
            InspectionOverdue => {
                "inspection overdue: have the back office accept an audit (refill or inspection)"
            }
            WrongDevice => "refill message or receipt for another device",
            RefillWrongLicense => "refill message for another license",
            RefillReplayed => "refill message already applied",
            RefillStale => "refill message bound to a stale control sum",
            RefillAboveLimit => "refill would exceed the maximum descending register",
            ReceiptForOtherAudit => "receipt for another audit than the last one",
            TransferPending => "a transfer to a purse is pending; resolve it with that card first",
            BalanceAboveLimit => "the purse balance would exceed its maximum",
            TransferAboveLimit => "amount above the purse's per-transfer maximum",
            TransferUnresolved => "the card cannot prove what became of the pending transfer",
            PendingForOtherCard => "the pending transfer is for another card",
        }
    }
}

/// Status word for success.
pub const SW_OK: u16 = 0x9000;

/// Status word prefix telling the host more response bytes wait for GET RESPONSE.
pub const SW1_BYTES_REMAINING: u8 = 0x61;

impl From<crate::store::StoreError> for Status {
    /// Any failure to commit is `6581`: the host re-reads or retries after a power cycle.
    fn from(_: crate::store::StoreError) -> Self {
        Status::MemoryFailure
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04X}: {}", self.sw(), self.describe())
    }
}

impl core::error::Error for Status {}
