//! The post office's messages (`docs/post-office.md`): scanned indicia in, a verdict per
//! piece out; findings per device; and what the post office asks of the meter server (the
//! value credited to a device) and tells it (a finding that quarantines the device).

use serde::{Deserialize, Serialize};

/// `POST /v1/indicia` (a scanner, with the operator's certificate): up to
/// [`MAX_BATCH`] indicia, each the label's bytes (signed bytes ‖ signature) in hex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanBatch {
    /// The indicia, hex.
    pub indicia: Vec<String>,
}

/// Most indicia in one [`ScanBatch`].
pub const MAX_BATCH: usize = 1000;

/// What the post office made of one scanned indicium.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    /// `accepted` (first sight, checks passed), `duplicate` (the same piece seen before:
    /// a reused label), `conflict` (the same device, license and piece count with other
    /// content: a rolled-back or cloned PSD), `anomaly` (accepted and recorded, but its
    /// registers do not follow from the device's other pieces or its credit), `invalid`
    /// (malformed, unknown device, wrong key, bad signature, revoked key).
    pub verdict: String,
    /// The device, when the indicium names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The license.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<u32>,
    /// The piece count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece: Option<u32>,
    /// Postage, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postage: Option<u64>,
    /// Why, for anything but `accepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/indicia` answer: one verdict per indicium, in order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanResult {
    /// The verdicts.
    pub verdicts: Vec<Verdict>,
}

/// A finding about a device: what the post office saw, what it means, and whether the
/// meter server was told (and quarantined the device).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// `conflict`, `ar_not_rising`, `dated_before_audit`, `ar_above_audit`,
    /// `registers_exceed_credit`, `unpaid_postage`.
    pub kind: String,
    /// The license.
    pub license: u32,
    /// The piece it is about.
    pub piece: u32,
    /// What was seen, in words, with the numbers.
    pub message: String,
    /// The amount at stake, minor units (unpaid postage, the excess over the credit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
    /// When, Unix seconds.
    pub found_at: u64,
    /// Whether the meter server has it (and quarantined the device).
    pub reported: bool,
}

/// `GET /v1/devices/{id}/findings`: `backoffice post explain DEVICE`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceReport {
    /// The device.
    pub device_id: String,
    /// Pieces recorded, per license: `[license, pieces, highest piece, highest AR]`.
    pub licenses: Vec<LicenseSeen>,
    /// Copies of pieces seen again.
    pub duplicates: u64,
    /// What was found, oldest first.
    pub findings: Vec<Finding>,
}

/// `GET /v1/licenses/{license}` at the post office (`backoffice post license N`): one
/// license across every device that mailed under it or was granted it (seed 003, claim 6:
/// "check the indicia printed to see that they add up properly to match the funds paid in
/// connection with the license").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseReport {
    /// The license.
    pub license: u32,
    /// Per device, by device ID.
    pub devices: Vec<LicenseDevice>,
    /// Postage used under the license: the sum of the devices' highest AR seen.
    pub postage_used: u64,
    /// Value the back office credited the license's sets: the sum over the devices the
    /// meter server knows.
    pub credited: u64,
    /// Postage used above what was credited, summed per device (a device cannot spend
    /// another's credit, so one device's surplus does not cover another's excess).
    pub unpaid: u64,
    /// `balanced` (every device within its credit), `unpaid` (some device above it), or
    /// `incomplete` (the meter server's credit of some device could not be read).
    pub status: String,
    /// Findings on the license's pieces, all devices.
    pub findings: u64,
}

/// One device of a [`LicenseReport`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseDevice {
    /// The device, 16 upper-case hex.
    pub device_id: String,
    /// Distinct pieces recorded.
    pub pieces: u64,
    /// The highest piece count seen.
    pub highest_piece: u32,
    /// The highest AR seen.
    pub highest_ar: u64,
    /// Copies of pieces seen again.
    pub duplicates: u64,
    /// Findings on its pieces of this license.
    pub findings: u64,
    /// What the back office credited the device's set of this license, when the meter
    /// server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credited: Option<u64>,
    /// The postal authority's grant of the license to the device (serial, hex), if the
    /// license was granted rather than registered at personalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_serial: Option<String>,
    /// Whether that grant is revoked.
    #[serde(default)]
    pub grant_revoked: bool,
}

/// What the registry holds of one license of a device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LicenseSeen {
    /// The license.
    pub license: u32,
    /// Distinct pieces recorded.
    pub pieces: u64,
    /// The highest piece count seen.
    pub highest_piece: u32,
    /// The highest AR seen (postage used, as the device counted it).
    pub highest_ar: u64,
    /// The value the back office credited to the set (baseline + refill messages issued),
    /// when the meter server knows the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credited: Option<u64>,
}

/// `GET /v1/devices/{id}/credit` at the meter (the post office's): per register set, the
/// most value the back office put on it — its registered baseline control sum plus every
/// refill whose message left the meter (applied or not yet).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCredit {
    /// The device.
    pub device_id: String,
    /// The sets.
    pub sets: Vec<SetCredit>,
}

/// One set's credit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetCredit {
    /// Register set index.
    pub set: u8,
    /// Its license.
    pub license: u32,
    /// Baseline control sum + refill messages issued, minor units.
    pub credited: u64,
    /// The last audit of the set the meter server accepted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit: Option<LastAudit>,
    /// The set's AR when the device retired it (RETIRE SET; its DR was refunded): no piece
    /// of the set may show more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_ar: Option<u64>,
}

/// What the last accepted audit of a set said, for the post office's date and register
/// checks.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastAudit {
    /// Pieces the set had counted.
    pub pieces: u32,
    /// Its ascending register, minor units.
    pub ar: u64,
    /// The day (UTC, days since 2000-01-01) the nonce it answers was issued: the device made
    /// the audit that day or later (0: not known).
    pub day: u32,
}

/// `POST /v1/devices/{id}/findings` at the meter (the post office's): raises a
/// `post_office` alarm on the license's set and quarantines the device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PostFinding {
    /// The license the finding is about.
    pub license: u32,
    /// The finding's kind.
    pub kind: String,
    /// The finding in words.
    pub message: String,
}
