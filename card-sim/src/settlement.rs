//! The issuer's settlement of a PSD's transfer that can never end by itself (issue 18 §1):
//! the purse is lost, destroyed, or no longer remembers the PSD (`9A23`).
//!
//! Three files pass between the mailer and the issuer, none of them secret:
//!
//! * the **pending report** ([`PendingReport`], `card-sim pending` / `openpsd pending`): the
//!   PSD's pending transfer as GET DATA `00 02` shows it, with the PSD's issuer counter;
//! * the **release evidence** ([`Evidence`], `card-sim release-partner`): the purse's own
//!   MACed answer to the issuer's RELEASE PARTNER — what it credited from that PSD;
//! * the **decision** ([`DecisionFile`], `card-sim settle`): complete or undo, signed by the
//!   scheme issuer for that PSD and that very transfer (TRANSFER RESOLVE P1 `01` data),
//!   applied by `card-sim apply-settlement` or `openpsd settle`.
//!
//! From evidence the issuer decides with the devices' own model-checked rule
//! ([`openpsd_core::transfer::resolve`]), fed with what the purse answered RELEASE PARTNER
//! instead of TRANSFER STATUS; when that rule cannot decide, neither does the tool. Nor
//! does evidence at the transfer's own count (nothing shows the release came after the
//! transfer's session: the unsigned report may name a transfer not made yet), unless the
//! issuer states it kept the purse since the release (`--purse-retained`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::client::{purse_apdu, Link, PsdClient, PurseClient};
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::settle::{settle_transfer_data, Decision, SETTLE_DATA_LEN};
use openpsd_core::psd::transfer::Pending;
use openpsd_core::purse::release::Released;
use openpsd_core::purse::state::Closure;
use openpsd_core::transfer::{resolve, Resolution, TransferStatus};
use openpsd_core::types::{Amount, CardId, DeviceId, SchemeId, TransferCount};
use openpsd_core::Status;
use serde::{Deserialize, Serialize};

use crate::issuer::purse_info;
use crate::personalize::refused;
use crate::scheme::Scheme;

/// `kind` of a pending report.
pub const PENDING_KIND: &str = "openpsd pending transfer";
/// `kind` of release evidence.
pub const EVIDENCE_KIND: &str = "openpsd release evidence";
/// `kind` of a settlement decision.
pub const DECISION_KIND: &str = "openpsd settlement decision";

/// A pending transfer as JSON (amount in minor units).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingJson {
    /// The purse it is for, 16 hex digits.
    #[serde(with = "hex8")]
    pub card: [u8; 8],
    /// The register set it was debited from.
    pub set: u8,
    /// The PSD's number for it.
    pub transfer: u32,
    /// The purse's transfer count in the session it was made in.
    pub card_transfers: u32,
    /// The value, in minor units.
    pub amount: u64,
}

impl From<Pending> for PendingJson {
    fn from(p: Pending) -> Self {
        Self {
            card: p.card.0,
            set: p.set,
            transfer: p.transfer.0,
            card_transfers: p.card_transfers.0,
            amount: p.amount.0,
        }
    }
}

impl From<PendingJson> for Pending {
    fn from(p: PendingJson) -> Self {
        Pending {
            card: CardId(p.card),
            set: p.set,
            transfer: TransferCount(p.transfer),
            card_transfers: TransferCount(p.card_transfers),
            amount: Amount(p.amount),
        }
    }
}

/// What a PSD reports of its pending transfer: what the mailer sends the issuer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingReport {
    /// Always [`PENDING_KIND`].
    pub kind: String,
    /// The PSD's device ID, 16 hex digits.
    #[serde(with = "hex8")]
    pub device: [u8; 8],
    /// The PSD's scheme.
    pub scheme: u32,
    /// The highest issuer counter the PSD accepted (RESET RECOGNITION, settlement): a
    /// decision's counter must be above it.
    pub issuer_counter: u32,
    /// When it was read (seconds since 1970, the reader's clock).
    pub read_at: u64,
    /// The transfer pending, if any.
    pub pending: Option<PendingJson>,
}

/// The purse's MACed answer to RELEASE PARTNER, kept whole so that `settle` checks it
/// again under the scheme's admin key: the decoded fields and `released_at` are for people;
/// only `answer` is trusted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evidence {
    /// Always [`EVIDENCE_KIND`].
    pub kind: String,
    /// The purse, 16 hex digits.
    #[serde(with = "hex8")]
    pub card: [u8; 8],
    /// The purse's scheme.
    pub scheme: u32,
    /// The PSD released, 16 hex digits.
    #[serde(with = "hex8")]
    pub device: [u8; 8],
    /// The admin counter of the RELEASE PARTNER.
    pub counter: u32,
    /// When the issuer released (seconds since 1970, the issuer's clock): for people, not
    /// for the decision.
    pub released_at: u64,
    /// The card's answer (body ‖ MAC), hex.
    pub answer: String,
    /// Decoded: the purse's credits so far.
    pub card_transfers: u32,
    /// Decoded: the latest credit of a PSD the purse forgot without knowing it closed.
    pub forgotten_through: u32,
    /// Decoded: the PSD's entry before the release (`None`: not listed).
    pub entry: Option<EntryJson>,
}

/// A purse's entry for a PSD, decoded for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryJson {
    /// The PSD's number of the last transfer the purse credited from it.
    pub last_transfer: u32,
    /// Transfers credited from it.
    pub count: u32,
    /// Value credited from it, minor units.
    pub total: u64,
    /// The card's count after that credit.
    pub credited_at: u32,
    /// `open`, `closed` or `unknown`.
    pub closure: String,
}

/// The issuer's signed decision on one pending transfer of one PSD.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionFile {
    /// Always [`DECISION_KIND`].
    pub kind: String,
    /// The scheme whose issuer signed it.
    pub scheme: u32,
    /// The PSD, 16 hex digits.
    #[serde(with = "hex8")]
    pub device: [u8; 8],
    /// The transfer it settles.
    pub pending: PendingJson,
    /// `complete` or `undo`.
    pub decision: String,
    /// The issuer counter it carries.
    pub counter: u32,
    /// Why the issuer decided so.
    pub reason: String,
    /// TRANSFER RESOLVE P1 `01` data: counter ‖ decision ‖ signature, hex.
    pub data: String,
}

mod hex8 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 8], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("expected 16 hex digits"))
    }
}

/// The word of a decision in the files and messages.
pub fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Complete => "complete",
        Decision::Undo => "undo",
    }
}

fn parse_decision(word: &str) -> Result<Decision> {
    match word {
        "complete" => Ok(Decision::Complete),
        "undo" => Ok(Decision::Undo),
        other => bail!("decision {other:?}: expected complete or undo"),
    }
}

fn closure_word(c: Closure) -> &'static str {
    match c {
        Closure::Open => "open",
        Closure::Closed => "closed",
        Closure::Unknown => "unknown",
    }
}

/// Seconds since 1970 now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a JSON file of `kind` (`what` names it in errors).
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not {what}", path.display()))
}

fn check_kind(kind: &str, want: &str, path: &Path) -> Result<()> {
    if kind != want {
        bail!(
            "{}: a {kind:?} file, expected a {want:?} file",
            path.display()
        );
    }
    Ok(())
}

impl PendingReport {
    /// Reads and checks a pending report file.
    pub fn read(path: &Path) -> Result<Self> {
        let r: Self = read_json(path, "a pending report (card-sim pending --json)")?;
        check_kind(&r.kind, PENDING_KIND, path)?;
        Ok(r)
    }
}

impl Evidence {
    /// Reads and checks an evidence file's form (its MAC is checked by [`decide`]).
    pub fn read(path: &Path) -> Result<Self> {
        let e: Self = read_json(path, "release evidence (card-sim release-partner --json)")?;
        check_kind(&e.kind, EVIDENCE_KIND, path)?;
        Ok(e)
    }
}

impl DecisionFile {
    /// Reads and checks a decision file's form.
    pub fn read(path: &Path) -> Result<Self> {
        let d: Self = read_json(path, "a settlement decision (card-sim settle)")?;
        check_kind(&d.kind, DECISION_KIND, path)?;
        Ok(d)
    }

    /// The decision and the TRANSFER RESOLVE data, checked for form and agreement.
    fn parts(&self) -> Result<(Decision, Vec<u8>)> {
        let decision = parse_decision(&self.decision)?;
        let data = hex::decode(self.data.trim())
            .ok()
            .filter(|d| d.len() == SETTLE_DATA_LEN)
            .ok_or_else(|| anyhow!("decision data: expected {SETTLE_DATA_LEN} bytes of hex"))?;
        if data[..4] != self.counter.to_be_bytes() || data[4] != decision.code() {
            bail!("the decision file's data does not carry its counter and decision");
        }
        Ok((decision, data))
    }
}

/// The PSD's pending transfer (SELECT, GET DATA `00 02`): what the mailer sends the
/// issuer. Reading changes nothing on the card (SELECT ends any transfer session).
pub fn read_pending(card: &mut dyn Link) -> Result<PendingReport> {
    let mut psd = PsdClient::new(card);
    let info = psd
        .select()
        .map_err(refused)?
        .ok_or_else(|| anyhow!("the PSD is not personalized"))?;
    let t = psd.transfer_info().map_err(refused)?;
    Ok(PendingReport {
        kind: PENDING_KIND.into(),
        device: info.device.0,
        scheme: t.scheme.0,
        issuer_counter: t.state.reset_counter,
        read_at: now_secs(),
        pending: t.state.pending.map(PendingJson::from),
    })
}

/// RELEASE PARTNER on a purse the issuer holds: frees `device`'s place in its table and
/// returns the purse's account of it, its MAC checked under the card's admin key.
pub fn release_partner(
    card: &mut dyn Link,
    scheme: &Scheme,
    device: DeviceId,
    counter: u32,
) -> Result<Evidence> {
    let info = purse_info(card)?;
    if info.scheme != scheme.id {
        bail!(
            "purse {} belongs to scheme {}, the scheme file is scheme {}",
            info.card,
            info.scheme.0,
            scheme.id.0
        );
    }
    let key = scheme.card_admin_key(info.card);
    let apdu = purse_apdu::release_partner(&key, info.card, counter, device);
    let answer = PurseClient::new(&mut *card)
        .exchange("RELEASE PARTNER", &apdu)
        .map_err(|e| match e.status() {
            Some(Status::SecurityStatusNotSatisfied) => anyhow!(
                "{e}: counter {counter} is not above the purse's admin counter (or the scheme \
                 file is not this card's issuer's)"
            ),
            _ => refused(e),
        })?;
    let released = Released::open(&answer, &key, info.card, counter, device)
        .map_err(|_| anyhow!("the purse's answer does not verify under its admin key"))?;
    Ok(evidence_of(
        info.card, scheme.id, device, counter, &answer, &released,
    ))
}

fn evidence_of(
    card: CardId,
    scheme: SchemeId,
    device: DeviceId,
    counter: u32,
    answer: &[u8],
    r: &Released,
) -> Evidence {
    Evidence {
        kind: EVIDENCE_KIND.into(),
        card: card.0,
        scheme: scheme.0,
        device: device.0,
        counter,
        released_at: now_secs(),
        answer: hex::encode(answer),
        card_transfers: r.card_transfers.0,
        forgotten_through: r.forgotten_through.0,
        entry: r.entry.map(|p| EntryJson {
            last_transfer: p.last_transfer.0,
            count: p.count,
            total: p.total.0,
            credited_at: p.credited_at.0,
            closure: closure_word(p.closure).into(),
        }),
    }
}

/// What the issuer decides on: its own decision, or the purse's evidence.
#[derive(Clone, Debug)]
pub enum Basis {
    /// The issuer's decision on other grounds (the purse is gone).
    Issuer(Decision),
    /// The purse's release evidence.
    Evidence {
        /// The evidence.
        evidence: Evidence,
        /// The issuer's word that the purse has stayed in its hands since the release and
        /// stays there until the decision is applied (or is destroyed): it never meets the
        /// PSD again. Needed for evidence whose count is not above the transfer's.
        purse_retained: bool,
    },
}

/// Decides from `evidence` (checked under `scheme`) on `report`'s pending transfer, with
/// the devices' own rule; an error says why it does not decide. `purse_retained`: the
/// issuer's word that the purse has not left its hands since the release (see
/// [`Basis::Evidence`]).
pub fn decide_from_evidence(
    scheme: &Scheme,
    report: &PendingReport,
    pending: &Pending,
    evidence: &Evidence,
    purse_retained: bool,
) -> Result<(Decision, String)> {
    let card = CardId(evidence.card);
    let device = DeviceId(report.device);
    if evidence.device != report.device {
        bail!(
            "the evidence is about PSD {}, the pending transfer is PSD {device}'s",
            DeviceId(evidence.device)
        );
    }
    if card != pending.card {
        bail!(
            "the evidence is from purse {card}, the pending transfer is for purse {}",
            pending.card
        );
    }
    let answer = hex::decode(evidence.answer.trim())
        .map_err(|_| anyhow!("the evidence's answer is not hex"))?;
    let released = Released::open(
        &answer,
        &scheme.card_admin_key(card),
        card,
        evidence.counter,
        device,
    )
    .map_err(|_| {
        anyhow!(
            "the evidence does not verify under scheme {}'s admin key for purse {card} \
             (altered, or another scheme's)",
            scheme.id.0
        )
    })?;
    // Evidence whose count is above the transfer's was taken after the transfer's session
    // began, and RELEASE PARTNER ends any session: the purse can no longer credit that VAL.
    // At the transfer's own count nothing the purse signed dates the release against the
    // session: the session may come after it (a report of a transfer not made yet — the
    // report is the mailer's, unsigned, and so is its `read_at`), and the purse, back in
    // the mailer's hands, would credit it. Only the issuer's word that the purse never
    // left its hands since the release settles that.
    let then = pending.card_transfers;
    let n = pending.transfer.0;
    if released.card_transfers == then && !purse_retained {
        bail!(
            "the evidence does not decide transfer {n}: the purse's count {} is not above the \
             count the transfer was made at, so nothing shows the release came after the \
             transfer's session (the report is the mailer's and unsigned: it may name a \
             transfer not made yet, which the purse, handed back, would credit); give \
             --purse-retained if the purse has stayed in the issuer's hands since the \
             release and stays there until the decision is applied (or is destroyed), \
             decide with --decision on other grounds, or not at all",
            released.card_transfers.0
        );
    }
    let status = TransferStatus {
        card_transfers: released.card_transfers,
        last_from_psd: released.entry.map(|p| p.last_transfer),
        forgotten_through: released
            .entry
            .is_none()
            .then_some(released.forgotten_through),
    };
    let retained = if released.card_transfers == then {
        "; the purse's count is the transfer's, and the issuer states the purse has stayed \
         in its hands since the release and stays there until this decision is applied, or \
         is destroyed (--purse-retained)"
    } else {
        ""
    };
    let (decision, reason) = match resolve(pending.transfer, then, &status) {
        Resolution::Complete => (
            Decision::Complete,
            format!("purse {card} credited transfer {n} of PSD {device} (its last from it)"),
        ),
        Resolution::Undo => (
            Decision::Undo,
            match status.last_from_psd {
                Some(last) => format!(
                    "purse {card}'s last credit from PSD {device} is transfer {}, before \
                     transfer {n}: never credited",
                    last.0
                ),
                None => format!(
                    "purse {card} never credited PSD {device} since count {} (forgotten \
                     through {}): transfer {n} never credited",
                    then.0, released.forgotten_through.0
                ),
            },
        ),
        Resolution::Unknown => bail!(
            "the evidence does not decide transfer {n}: {}; decide with --decision on other \
             grounds, or not at all",
            if released.card_transfers < then {
                format!(
                    "the purse's count {} is below the count the transfer was made at ({})",
                    released.card_transfers.0, then.0
                )
            } else if let Some(last) = status.last_from_psd {
                format!(
                    "the purse's last credit from the PSD is transfer {}, after it",
                    last.0
                )
            } else {
                format!(
                    "the purse has forgotten PSDs credited up to its count {}, after the \
                     transfer's session (count {})",
                    released.forgotten_through.0, then.0
                )
            }
        ),
    };
    Ok((decision, reason + retained))
}

/// The issuer's decision on `report`'s pending transfer, signed with `scheme`'s issuer key
/// and `counter` (which must be above the PSD's issuer counter in the report).
pub fn settle(
    scheme: &Scheme,
    report: &PendingReport,
    basis: &Basis,
    counter: u32,
) -> Result<DecisionFile> {
    let device = DeviceId(report.device);
    if report.scheme != scheme.id.0 {
        bail!(
            "PSD {device} belongs to scheme {}, the scheme file is scheme {}",
            report.scheme,
            scheme.id.0
        );
    }
    let pending: Pending = report
        .pending
        .ok_or_else(|| anyhow!("PSD {device} has nothing pending: nothing to settle"))?
        .into();
    if counter <= report.issuer_counter {
        bail!(
            "counter {counter} is not above PSD {device}'s issuer counter {}: the PSD would \
             refuse it",
            report.issuer_counter
        );
    }
    let (decision, reason) = match basis {
        Basis::Issuer(d) => (*d, "the issuer's decision (no purse evidence)".to_string()),
        Basis::Evidence {
            evidence,
            purse_retained,
        } => decide_from_evidence(scheme, report, &pending, evidence, *purse_retained)?,
    };
    let data = settle_transfer_data(&scheme.issuer_key, device, &pending, counter, decision);
    Ok(DecisionFile {
        kind: DECISION_KIND.into(),
        scheme: scheme.id.0,
        device: report.device,
        pending: pending.into(),
        decision: decision_word(decision).into(),
        counter,
        reason,
        data: hex::encode(data),
    })
}

/// How far ahead of the clock, in seconds, a decision's counter (and the report's issuer
/// counter) may be without `force`: a day.
pub const COUNTER_AHEAD_MAX: u64 = 86_400;

/// The counter of a decision: `wanted`, or the time in seconds, but above the PSD's.
///
/// The report's issuer counter is the mailer's to write: near `u32::MAX` it would make the
/// default counter `u32::MAX`, and the PSD, once it applied that decision, would take no
/// RESET RECOGNITION or settlement again. Unless `force`, a report's counter or a `wanted`
/// one more than [`COUNTER_AHEAD_MAX`] ahead of the clock is refused.
pub fn settle_counter(report: &PendingReport, wanted: Option<u32>, force: bool) -> Result<u32> {
    let now = crate::issuer::admin_counter_now();
    let limit = u64::from(now) + COUNTER_AHEAD_MAX;
    let device = DeviceId(report.device);
    if !force && u64::from(report.issuer_counter) >= limit {
        bail!(
            "PSD {device}'s issuer counter in the report, {}, is a day or more ahead of the \
             clock ({now}): an altered report, or an issuer command signed far ahead; a \
             decision above it would leave the PSD few issuer commands (RESET RECOGNITION, \
             settlement) or none, for good. Check the PSD's counter; --force-counter signs \
             anyway",
            report.issuer_counter
        );
    }
    let counter = wanted.unwrap_or_else(|| now.max(report.issuer_counter.saturating_add(1)));
    if !force && u64::from(counter) > limit {
        bail!(
            "counter {counter} is more than a day ahead of the clock ({now}): once the PSD \
             applied it, it would refuse every issuer command (RESET RECOGNITION, settlement) \
             with a counter up to it; --force-counter signs anyway"
        );
    }
    Ok(counter)
}

/// Applies the issuer's decision to the PSD: checked first against what the PSD has
/// pending (device, transfer, issuer counter), so a misdirected or stale decision is
/// refused with a reason and the card untouched. Returns the decision the PSD applied and
/// the register set after.
pub fn apply(card: &mut dyn Link, decision: &DecisionFile) -> Result<(Decision, Registers)> {
    let (want, data) = decision.parts()?;
    let report = read_pending(card)?;
    let device = DeviceId(report.device);
    if report.device != decision.device {
        bail!(
            "the decision is for PSD {}, this card is PSD {device}",
            DeviceId(decision.device)
        );
    }
    if report.scheme != decision.scheme {
        bail!(
            "the decision is scheme {}'s, PSD {device} belongs to scheme {}",
            decision.scheme,
            report.scheme
        );
    }
    let signed_for = decision.pending;
    match report.pending {
        None => bail!(
            "PSD {device} has nothing pending: transfer {} was settled or resolved already",
            signed_for.transfer
        ),
        Some(p) if p != signed_for => bail!(
            "the decision is for transfer {} of {} to purse {}, PSD {device} has transfer {} \
             of {} to purse {} pending",
            signed_for.transfer,
            Amount(signed_for.amount),
            CardId(signed_for.card),
            p.transfer,
            Amount(p.amount),
            CardId(p.card)
        ),
        Some(_) => {}
    }
    if decision.counter <= report.issuer_counter {
        bail!(
            "the decision's counter {} is not above PSD {device}'s issuer counter {} (a \
             replayed decision, or one the issuer superseded): ask the issuer for a new one",
            decision.counter,
            report.issuer_counter
        );
    }
    let mut psd = PsdClient::new(card);
    let (applied, registers) = psd.settle_transfer(&data).map_err(|e| match e.status() {
        Some(Status::SecurityStatusNotSatisfied) => anyhow!(
            "{e}: the decision is not signed by PSD {device}'s scheme issuer for this transfer"
        ),
        _ => refused(e),
    })?;
    if applied != want {
        bail!("the PSD applied {:?}, not {want:?}", applied);
    }
    Ok((applied, registers))
}

/// Whose words [`applied_report`] prints: the two commands that apply a decision word it
/// differently, and scripts and docs parse both, so each keeps its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppliedWording {
    /// `card-sim apply-settlement`: JSON `"decision": "complete"|"undo"`; the text line
    /// ends with the outcome.
    CardSim,
    /// `openpsd settle`: JSON `"outcome": "completed"|"undone"`; the text line goes on "by
    /// the issuer's decision".
    Openpsd,
}

/// What [`apply`] did (the decision `d`, which the PSD `applied`, and its register set `r`
/// after), as the command printing it shows it: one JSON object (`json`), or two lines of
/// text. Without the final newline.
pub fn applied_report(
    d: &DecisionFile,
    applied: Decision,
    r: &Registers,
    wording: AppliedWording,
    json: bool,
) -> String {
    let outcome = match applied {
        Decision::Complete => "completed",
        Decision::Undo => "undone",
    };
    let (key, word, tail) = match wording {
        AppliedWording::CardSim => ("decision", decision_word(applied), ""),
        AppliedWording::Openpsd => ("outcome", outcome, " by the issuer's decision"),
    };
    let p = &d.pending;
    if json {
        return serde_json::json!({
            "device": DeviceId(d.device).to_string(), "transfer": p.transfer,
            "amount": p.amount, (key): word, "set": p.set,
            "dr": r.dr.0, "ar": r.ar.0, "pending": r.pending.0,
            "transferred": r.transferred.0, "control_sum": r.control_sum.0,
        })
        .to_string();
    }
    format!(
        "PSD {}: transfer {} of {} {outcome}{tail}\nset {}: DR {} AR {} pending {} transferred {}",
        DeviceId(d.device),
        p.transfer,
        Amount(p.amount),
        p.set,
        r.dr,
        r.ar,
        r.pending,
        r.transferred
    )
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap or expect is a failed test, with its message.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::os_platform::OsPlatform;
    use openpsd_core::purse::release::RELEASE_ANSWER_LABEL;
    use openpsd_core::purse::state::Paired;

    const CARD: CardId = CardId(*b"PUR00001");
    const DEVICE: DeviceId = DeviceId(*b"PSD00001");
    /// The pending transfer: the PSD's number 3, made when the purse's count was 5.
    const PENDING: PendingJson = PendingJson {
        card: CARD.0,
        set: 0,
        transfer: 3,
        card_transfers: 5,
        amount: 700,
    };

    /// `card-sim apply-settlement` and `openpsd settle` print an applied decision as they
    /// did before they shared [`applied_report`], byte for byte.
    #[test]
    fn an_applied_decision_is_printed_in_each_commands_words() {
        use openpsd_core::types::{LicenseId, PieceCount, PostalCode, RefillCount};
        let d = DecisionFile {
            kind: DECISION_KIND.into(),
            scheme: 9,
            device: DEVICE.0,
            pending: PENDING,
            decision: "undo".into(),
            counter: 8,
            reason: String::new(),
            data: String::new(),
        };
        let r = Registers {
            license: LicenseId(1),
            origin: PostalCode::new(b"75001").unwrap(),
            ar: Amount(200),
            dr: Amount(9_800),
            control_sum: Amount(10_000),
            pieces: PieceCount(0),
            refills: RefillCount(1),
            transferred: Amount(150),
            pending: Amount(0),
        };
        let report = |applied, wording, json| applied_report(&d, applied, &r, wording, json);
        assert_eq!(
            report(Decision::Undo, AppliedWording::CardSim, false),
            "PSD 5053443030303031: transfer 3 of 7.00 undone\n\
             set 0: DR 98.00 AR 2.00 pending 0.00 transferred 1.50"
        );
        assert_eq!(
            report(Decision::Complete, AppliedWording::Openpsd, false),
            "PSD 5053443030303031: transfer 3 of 7.00 completed by the issuer's decision\n\
             set 0: DR 98.00 AR 2.00 pending 0.00 transferred 1.50"
        );
        assert_eq!(
            report(Decision::Complete, AppliedWording::CardSim, true),
            r#"{"amount":700,"ar":200,"control_sum":10000,"decision":"complete","#.to_owned()
                + r#""device":"5053443030303031","dr":9800,"pending":0,"set":0,"transfer":3,"#
                + r#""transferred":150}"#
        );
        assert_eq!(
            report(Decision::Undo, AppliedWording::Openpsd, true),
            r#"{"amount":700,"ar":200,"control_sum":10000,"device":"5053443030303031","#.to_owned()
                + r#""dr":9800,"outcome":"undone","pending":0,"set":0,"transfer":3,"#
                + r#""transferred":150}"#
        );
    }

    fn report() -> PendingReport {
        PendingReport {
            kind: PENDING_KIND.into(),
            device: DEVICE.0,
            scheme: 9,
            issuer_counter: 7,
            read_at: 100,
            pending: Some(PENDING),
        }
    }

    /// The purse's evidence as the card would MAC it.
    fn evidence(scheme: &Scheme, count: u32, forgotten: u32, last: Option<u32>) -> Evidence {
        let r = Released {
            card_transfers: TransferCount(count),
            forgotten_through: TransferCount(forgotten),
            entry: last.map(|l| Paired {
                device: DEVICE,
                last_transfer: TransferCount(l),
                count: 1,
                total: Amount(700),
                date: None,
                credited_at: TransferCount(count),
                closure: Closure::Unknown,
            }),
        };
        let body = r.body();
        let counter = 11u32;
        let tag = scheme.card_admin_key(CARD).mac(&[
            RELEASE_ANSWER_LABEL,
            &CARD.0,
            &counter.to_be_bytes(),
            &DEVICE.0,
            &body,
        ]);
        let mut e = evidence_of(
            CARD,
            scheme.id,
            DEVICE,
            counter,
            &[body, tag.to_vec()].concat(),
            &r,
        );
        e.released_at = 200;
        e
    }

    fn decide(scheme: &Scheme, e: &Evidence) -> Result<Decision> {
        decide_with(scheme, e, false).map(|d| parse_decision(&d.decision).unwrap())
    }

    fn decide_with(scheme: &Scheme, e: &Evidence, purse_retained: bool) -> Result<DecisionFile> {
        let basis = Basis::Evidence {
            evidence: e.clone(),
            purse_retained,
        };
        settle(scheme, &report(), &basis, 8).inspect(|d| assert_eq!(d.counter, 8))
    }

    #[test]
    fn evidence_decides_as_the_devices_rule_does_and_refuses_when_it_cannot() {
        let scheme = Scheme::generate(Some(9), &mut OsPlatform::default());
        let ok =
            |count, forgotten, last| decide(&scheme, &evidence(&scheme, count, forgotten, last));
        assert_eq!(ok(6, 0, Some(3)).unwrap(), Decision::Complete);
        assert_eq!(ok(9, 0, Some(2)).unwrap(), Decision::Undo);
        assert_eq!(ok(9, 5, None).unwrap(), Decision::Undo);
        // At the transfer's own count (5) nothing dates the release against the transfer's
        // session (the report may name a transfer not made yet): no decision, whatever the
        // files' clocks say, unless the issuer states it kept the purse — recorded.
        for (forgotten, last) in [(0, None), (0, Some(2))] {
            let mut at_count = evidence(&scheme, 5, forgotten, last);
            for released_at in [99, 100, 200] {
                at_count.released_at = released_at;
                let e = decide(&scheme, &at_count).unwrap_err().to_string();
                assert!(
                    e.contains("does not decide") && e.contains("--purse-retained"),
                    "{e}"
                );
                let d = decide_with(&scheme, &at_count, true).unwrap();
                assert_eq!(d.decision, "undo");
                assert!(d.reason.contains("--purse-retained"), "{}", d.reason);
            }
        }
        // Above it, the count shows the release came after the session: decided, whatever
        // the clocks; the issuer's word is not needed and not recorded.
        let mut later = evidence(&scheme, 6, 0, Some(3));
        later.released_at = 99;
        assert_eq!(decide(&scheme, &later).unwrap(), Decision::Complete);
        let d = decide_with(&scheme, &later, true).unwrap();
        assert!(!d.reason.contains("--purse-retained"), "{}", d.reason);
        for (count, forgotten, last, why) in [
            (9, 6, None, "forgotten PSDs credited up to its count 6"),
            (4, 0, None, "below the count the transfer was made at"),
            (9, 0, Some(4), "transfer 4, after it"),
        ] {
            let e = ok(count, forgotten, last).unwrap_err().to_string();
            assert!(e.contains("does not decide") && e.contains(why), "{e}");
            // The issuer's word on the purse does not make undecidable evidence decide.
            let e = decide_with(&scheme, &evidence(&scheme, count, forgotten, last), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("does not decide") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn settle_refuses_what_the_psd_would_and_signs_for_that_transfer_only() {
        let scheme = Scheme::generate(Some(9), &mut OsPlatform::default());
        let undo = Basis::Issuer(Decision::Undo);
        let e = settle(&scheme, &report(), &undo, 7).unwrap_err();
        assert!(e.to_string().contains("not above"), "{e}");
        let none = PendingReport {
            pending: None,
            ..report()
        };
        let e = settle(&scheme, &none, &undo, 8).unwrap_err();
        assert!(e.to_string().contains("nothing pending"), "{e}");
        let d = settle(&scheme, &report(), &undo, 8).unwrap();
        let data = hex::decode(&d.data).unwrap();
        let msg =
            openpsd_core::psd::settle::settle_message(DEVICE, &PENDING.into(), 8, Decision::Undo);
        assert!(openpsd_core::crypto::verify_signature(
            &scheme.issuer_key.public_key(),
            &msg,
            &data[5..]
        ));
        assert_eq!(d.parts().unwrap().0, Decision::Undo);
        let flipped = DecisionFile {
            decision: "complete".into(),
            ..d
        };
        assert!(flipped.parts().is_err(), "data and decision disagree");
        // Evidence for another purse than the pending transfer's.
        let mut other = evidence(&scheme, 6, 0, Some(3));
        other.card = *b"PUR00002";
        let e = decide(&scheme, &other).unwrap_err();
        assert!(e.to_string().contains("the evidence is from purse"), "{e}");
    }

    #[test]
    fn a_counter_more_than_a_day_ahead_of_the_clock_needs_force() {
        let now = crate::issuer::admin_counter_now();
        let day = u32::try_from(COUNTER_AHEAD_MAX).unwrap();
        // The default: the clock, or the report's counter + 1.
        assert!(settle_counter(&report(), None, false).unwrap() >= now);
        let near = PendingReport {
            issuer_counter: now + 3_600,
            ..report()
        };
        assert_eq!(settle_counter(&near, None, false).unwrap(), now + 3_601);
        assert_eq!(
            settle_counter(&report(), Some(now + 3_600), false).unwrap(),
            now + 3_600
        );
        // A report near u32::MAX would make the default u32::MAX.
        let inflated = PendingReport {
            issuer_counter: u32::MAX - 1,
            ..report()
        };
        let e = settle_counter(&inflated, None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4294967294") && e.contains("--force-counter"),
            "{e}"
        );
        let e = settle_counter(&inflated, Some(u32::MAX), false).unwrap_err();
        assert!(e.to_string().contains("--force-counter"), "{e}");
        assert_eq!(settle_counter(&inflated, None, true).unwrap(), u32::MAX);
        // Far ahead, asked for.
        for wanted in [now + 2 * day, u32::MAX] {
            let e = settle_counter(&report(), Some(wanted), false).unwrap_err();
            assert!(e.to_string().contains("ahead of the clock"), "{e}");
            assert_eq!(
                settle_counter(&report(), Some(wanted), true).unwrap(),
                wanted
            );
        }
    }
}
