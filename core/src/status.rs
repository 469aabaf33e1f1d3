//! Every status word the card can answer, in one table.
//!
//! Each layer reports failures as a [`Status`]; [`Status::sw`] is the only place where a
//! failure becomes the two bytes a host sees. `docs/apdu.md` documents the same table.
//!
//! The table is one macro invocation: a status word is added with one entry (doc comment,
//! variant, word, description), and the enum, [`Status::sw`], [`Status::describe`] and
//! [`Status::ALL`] all follow from it, so they cannot drift apart.

/// Expands the table below into the enum and its three lookups. `VerificationFailed`
/// carries the tries left in SW2 (`63Cx`), so it is written out here rather than in the
/// table of fixed words.
macro_rules! status_table {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $sw:literal, $text:expr;
    )*) => {
        /// A command's outcome other than success, mapped once to an ISO 7816-4 status word.
        ///
        /// The `9Axx` words are proprietary (ISO 7816-4 leaves `9XXX` other than `9000` to
        /// the application): they name the postage-specific refusals so a host can tell
        /// them apart.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Status {
            /// `63Cx` a PIN or a recognition cryptogram did not match; `x` tries are left
            /// (the counter was decremented and committed before the compare).
            VerificationFailed(u8),
            $( $(#[doc = $doc])* $name, )*
        }

        impl Status {
            /// The status word (SW1 SW2) for this outcome.
            pub const fn sw(self) -> u16 {
                match self {
                    Status::VerificationFailed(left) => {
                        0x63C0 | (if left > 15 { 15 } else { left }) as u16
                    }
                    $( Status::$name => $sw, )*
                }
            }

            /// A short English description, for host-side error messages.
            pub const fn describe(self) -> &'static str {
                match self {
                    Status::VerificationFailed(_) => {
                        "PIN or recognition cryptogram wrong; tries left in SW2"
                    }
                    $( Status::$name => $text, )*
                }
            }

            /// Every status, for documentation and tests that walk the table
            /// (`VerificationFailed(0)` stands for the whole `63Cx` family).
            pub const ALL: [Status; 1 + [$($sw),*].len()] =
                [Status::VerificationFailed(0), $(Status::$name),*];
        }
    };
}

/// The description of a certificate-meter status word. Without the `certmeter` feature no
/// command can answer one, so one short text stands for all of them: the browser's module
/// is built without the feature and its size budget is tight.
#[cfg(feature = "certmeter")]
macro_rules! certmeter_text {
    ($text:literal) => {
        $text
    };
}
#[cfg(not(feature = "certmeter"))]
macro_rules! certmeter_text {
    ($text:literal) => {
        "certificate meter refusal"
    };
}

/// The description of a virtual meter box status word: one short text without the `vbox`
/// feature (no command can answer one there), as for the certificate meter.
#[cfg(feature = "vbox")]
macro_rules! vbox_text {
    ($text:literal) => {
        $text
    };
}
#[cfg(not(feature = "vbox"))]
macro_rules! vbox_text {
    ($text:literal) => {
        "virtual meter box refusal"
    };
}

/// The description of an outside-signer status word (`webcrypto` feature): one short text
/// without the feature (no command can answer one there), as for the certificate meter.
#[cfg(feature = "webcrypto")]
macro_rules! webcrypto_text {
    ($text:literal) => {
        $text
    };
}
#[cfg(not(feature = "webcrypto"))]
macro_rules! webcrypto_text {
    ($text:literal) => {
        "outside signer refusal"
    };
}

status_table! {
    /// `6581` the persistent store failed during a commit (power lost, I/O error). The
    /// commit may or may not have reached its commit point: after re-opening the card the
    /// host re-reads, or retries (same transaction ID, same refill message).
    MemoryFailure = 0x6581, "persistent memory failure during commit; re-read or retry";
    /// `6700` Lc is not what the command needs, or the APDU's length fields are malformed.
    WrongLength = 0x6700, "wrong length";
    /// `6881` logical channels are not supported.
    LogicalChannelNotSupported = 0x6881, "logical channel not supported";
    /// `6882` secure messaging is not supported.
    SecureMessagingNotSupported = 0x6882, "secure messaging not supported";
    /// `6883` a chain was interrupted by another command; the chain is dropped.
    LastCommandOfChainExpected = 0x6883, "last command of the chain expected";
    /// `6982` a MAC or signature did not verify, or the command needs a verified PIN or a
    /// recognised partner first.
    SecurityStatusNotSatisfied = 0x6982, "MAC or signature invalid, or PIN not verified / partner not recognised";
    /// `6983` the PIN, or the value-transfer function after too many failed
    /// recognitions, is blocked until an authenticated issuer command resets it.
    AuthenticationBlocked = 0x6983, "PIN blocked or transfer function blocked; issuer reset needed";
    /// `6985` the command is not allowed now: no applet is selected, or the device's
    /// life-cycle state forbids it (not yet personalized, or personalized already).
    ConditionsNotSatisfied = 0x6985, "not allowed now (life-cycle state or protocol step)";
    /// `6A80` a field of the command data is out of range or malformed.
    WrongData = 0x6A80, "incorrect command data";
    /// `6A82` no applet with that AID (or no file with that identifier).
    NotFound = 0x6A82, "application or file not found";
    /// `6A86` P1 or P2 is not valid for this instruction.
    IncorrectP1P2 = 0x6A86, "incorrect P1/P2";
    /// `6A84` no free register set slot (LICENSE INSTALL, IMPORT SET).
    NotEnoughMemory = 0x6A84, "no free register set slot";
    /// `6A88` the referenced register set does not exist (or its slot is free).
    ReferencedDataNotFound = 0x6A88, "register set not found";
    /// `6B00` P1/P2 out of range for GET RESPONSE (no pending response).
    WrongP1P2 = 0x6B00, "wrong P1/P2 (no response pending)";
    /// `6D00` instruction not supported.
    InstructionNotSupported = 0x6D00, "instruction not supported";
    /// `6E00` class not supported.
    ClassNotSupported = 0x6E00, "class not supported";
    /// `6F00` an invariant the card keeps was found broken; nothing changed.
    Internal = 0x6F00, "internal error";
    /// `9A01` the descending register holds less than the postage asked for.
    InsufficientFunds = 0x9A01, "insufficient funds (descending register or purse balance)";
    /// `9A02` postage above the device's per-piece limit.
    PostageAboveLimit = 0x9A02, "postage above the per-piece limit";
    /// `9A03` date of mailing earlier than the last one used on this device.
    DateBeforeLastUsed = 0x9A03, "date earlier than the last date used";
    /// `9A04` origin postal code is not the one of the register set's license.
    OriginMismatch = 0x9A04, "origin postal code does not match the license";
    /// `9A05` date of mailing too far ahead of the platform's clock.
    DateTooFarAhead = 0x9A05, "date too far ahead of the device clock";
    /// `9A06` a register or counter would overflow; it stays where it is.
    CounterOverflow = 0x9A06, "register or counter would overflow";
    /// `9A07` client transaction ID reused with different indicium data.
    TransactionIdReused = 0x9A07, "transaction ID reused with different data";
    /// `9A08` the last accepted audit (inspection) is older than the device allows.
    InspectionOverdue = 0x9A08, "inspection overdue: have the back office accept an audit (refill or inspection)";
    /// `9A09` the set's last indicium waits for its outside signature: STORE SIGNATURE, or
    /// ISSUE INDICIUM again with its transaction ID, first.
    SignaturePending = 0x9A09, webcrypto_text!("signature pending: store the last indicium's signature (or retry its transaction ID) first");
    /// `9A0A` the signature given to STORE SIGNATURE does not verify under the outside
    /// signer's key over the pending indicium; nothing changed.
    SignatureInvalid = 0x9A0A, webcrypto_text!("signature does not verify over the pending indicium under the signer's key");
    /// `9A0B` STORE SIGNATURE with no indicium waiting for a signature on that set.
    NoSignaturePending = 0x9A0B, webcrypto_text!("no indicium waits for a signature on this register set");
    /// `9A10` refill message or audit receipt made for another device.
    WrongDevice = 0x9A10, "refill message, receipt, export file or revocation order for another device";
    /// `9A11` refill message made for another license / register set.
    RefillWrongLicense = 0x9A11, "refill message for another license";
    /// `9A12` refill message already applied (refill count behind the device's).
    RefillReplayed = 0x9A12, "refill message already applied";
    /// `9A13` refill message bound to a control sum / refill count the device no longer has.
    RefillStale = 0x9A13, "refill message bound to a stale control sum";
    /// `9A14` the refill would raise the descending register above its maximum.
    RefillAboveLimit = 0x9A14, "refill would exceed the maximum descending register";
    /// `9A15` audit receipt for another audit than this session's last one.
    ReceiptForOtherAudit = 0x9A15, "receipt for another audit than the last one";
    /// `9A16` the PSD was personalized before the asymmetric refill suite (issue 12): its
    /// audits and the refill messages and receipts it accepts were MACed under K1, which
    /// the back office no longer keeps. It prints (and transfers, if certified) on; value
    /// is added only to a device personalized again.
    LegacyRefillSuite = 0x9A16, "personalized for the retired K1 refill suite: no audits, refills or receipts until personalized again (indicia go on)";
    /// `9A20` the PSD has a transfer to a purse pending: it must be resolved with that card
    /// before another transfer starts.
    TransferPending = 0x9A20, "a transfer to a purse is pending; resolve it with that card first";
    /// `9A21` the purse's balance would exceed its maximum.
    BalanceAboveLimit = 0x9A21, "the purse balance would exceed its maximum";
    /// `9A22` the amount exceeds the purse's per-transfer maximum.
    TransferAboveLimit = 0x9A22, "amount above the purse's per-transfer maximum";
    /// `9A23` the pending transfer cannot be resolved from what this card reports (it has
    /// forgotten this PSD); the value stays pending, counted in the audit.
    TransferUnresolved = 0x9A23, "the card cannot prove what became of the pending transfer";
    /// `9A24` the PSD's pending transfer is for another card than the one recognised.
    PendingForOtherCard = 0x9A24, "the pending transfer is for another card";
    /// `9A25` the device was personalized before certificates, with the scheme's master
    /// key (issue 12): it transfers no more until personalized again; indicia, refills
    /// and purchases go on.
    LegacyRecognition = 0x9A25, "personalized with the retired scheme key: no transfers until personalized again (indicia, refills and purchases go on)";
    /// `9A26` the device has no recognition certificate yet (INSTALL CERTIFICATE).
    NotCertified = 0x9A26, "no recognition certificate installed (INSTALL CERTIFICATE)";
    /// `9A27` the partner's certificate is not the issuer's, is for another kind, scheme or
    /// device, is outside its validity, or is revoked.
    CertificateRefused = 0x9A27, "partner certificate refused: not the issuer's, another scheme or device, expired or revoked";
    /// `9A2C` the purse lists 16 PSDs whose last credited transfer may still be pending in
    /// them (not closed): it cannot take value from another PSD until one of them closes
    /// (TRANSFER CLOSE at its next contact).
    PartnersOpen = 0x9A2C, "the purse holds 16 PSDs whose transfers are not closed: one of them must meet it first";
    /// LICENSE INSTALL: the license is already in this PSD, resident or exported.
    LicenseExists = 0x9A30, "license already in this PSD (resident or exported)";
    /// LICENSE INSTALL: no license request pending with that counter.
    NoLicenseRequest = 0x9A31, "no license request pending for this grant: request a license first";
    /// LICENSE INSTALL: the grant's request was installed already, or replaced.
    GrantAlreadyUsed = 0x9A32, "grant already installed, or its request replaced";
    /// IMPORT SET: no outstanding export matches the file.
    ExportNotOutstanding = 0x9A33, "older or duplicate copy of an exported register set: it can never be used";
    /// The register set is frozen by an export being prepared.
    SetFrozen = 0x9A34, "register set frozen for export: commit or cancel the export first";
    /// A date outside the license's validity, or a grant that expired before the last date used.
    LicenseNotValid = 0x9A35, "date outside the license's validity";
    /// EXPORT SET: the outstanding-export table is full.
    ExportTableFull = 0x9A36, "too many register sets exported: import one first";
    /// LICENSE REQUEST: the PSD holds no postal authority key.
    NoPostalAuthority = 0x9A37, "personalized without the postal authority's key: no licenses can be added";
    /// Certificate meter: the rate table in effect has no fee for this service (or no
    /// table is in effect).
    NoRate = 0x9A40, certmeter_text!("no fee for this service in the rate table in effect: load a rate table (refill or inspection)");
    /// LOAD RATE TABLE / LOAD TRUST ANCHOR: not newer than the one held.
    NotNewer = 0x9A41, certmeter_text!("rate table, trust anchor, revocation order or credit line not newer than the one held");
    /// Certificate meter: fees are due (a revocation the DR could not pay); the next refill
    /// settles them.
    FeesDue = 0x9A42, certmeter_text!("fees due: refill first");
    /// Certificate meter: no key of this purpose (or no such slot, or not in that state).
    NoKeyForPurpose = 0x9A43, certmeter_text!("no key for this purpose in that state: generate one and install its certificate");
    /// INSTALL KEY CERTIFICATE: the certificate is not for the slot's key, not the CA's, or
    /// not for the key's purpose.
    CertificateMismatch = 0x9A44, certmeter_text!("certificate refused: not for this key, not signed by the trusted CA, outside its validity, or not for this purpose");
    /// Certificate meter: the key was revoked.
    KeyRevoked = 0x9A45, certmeter_text!("key revoked");
    /// PAY: the line of credit has not enough left.
    CreditInsufficient = 0x9A46, certmeter_text!("line of credit insufficient");
    /// Certificate meter: no clock, a clock moved back, or a time outside the window of the
    /// last back-office contact.
    ClockRefused = 0x9A47, certmeter_text!("clock missing, moved back, or outside the window of the last back-office contact");
    /// ISSUE AGENT CERTIFICATE: the name is outside the agent CA's constraints.
    NameOutsideConstraints = 0x9A48, certmeter_text!("name outside the agent CA's constraints");
    /// Virtual meter box: the meter record's MAC does not hold under the box's record key
    /// (an edited register, key or field, or another box's record). Seed Fig. 4, 215.
    RecordUnauthentic = 0x9A60, vbox_text!("meter record MAC invalid: edited, or not this box's record");
    /// Virtual meter box: the record's Merkle path does not prove the shard's root (an old
    /// record put back, an edited inner node, or a slot that is not empty). Fig. 4, 230.
    RecordStale = 0x9A61, vbox_text!("meter record not current: its path does not prove the shard root");
    /// Virtual meter box: the record names another slot than the one it is presented at.
    RecordWrongSlot = 0x9A62, vbox_text!("meter record presented at another slot than its own");
    /// Virtual meter box: the record belongs to another mailer than the request's.
    RecordNotOwned = 0x9A63, vbox_text!("meter record of another mailer");
    /// Virtual meter box: RESUME of a command that is not the shard's last committed one.
    NothingToResume = 0x9A64, vbox_text!("nothing to resume: not the shard's last committed command (send it anew)");
    /// Virtual meter box (its authentication box, seed 001 box 40): the password hash does
    /// not match the mailer's verifier.
    MailerNotAuthenticated = 0x9A65, vbox_text!("mailer not authenticated: the password does not match the verifier");
}

impl Status {
    /// The status a host sees for a status word, if the card can send it.
    pub fn from_sw(sw: u16) -> Option<Status> {
        if sw & 0xFFF0 == 0x63C0 {
            return Some(Status::VerificationFailed((sw & 0x000F) as u8));
        }
        Self::ALL.iter().copied().find(|s| s.sw() == sw)
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
