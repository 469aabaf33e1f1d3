//! The vendor's rate tables and trust anchors (seed 004, step 257 and claim 12;
//! `docs/rates.md`): what an operator publishes at the vendor, what the vendor answers,
//! and what the meter server pushes to a PSD at contact. The signed records themselves
//! are core's `certmeter::rates::RateTable` and `certmeter::anchor::Anchor`; here they
//! travel as hex, beside their decoded fields for people and programs that only display
//! them (the PSD checks the signature, never these fields).
//!
//! Service names in JSON are snake_case: `postmark`, `validation`, `certificate`,
//! `signature`, `revocation`, `agent_certificate`, `credit_line`, `payment`
//! ([`service_key`]), so they can be object keys and `--fee NAME=AMOUNT` arguments
//! without quoting.

use std::collections::BTreeMap;

use openpsd_core::psd::certmeter::anchor::AnchorKind;
use openpsd_core::psd::certmeter::rates::Service;
use serde::{Deserialize, Serialize};

/// Error codes of the vendor's rate and anchor routes (beside the shared [`crate::ErrorCode`]s).
pub mod code {
    /// The effective date is before the last published table's (409).
    pub const EFFECTIVE_BACKWARDS: &str = "effective_date_backwards";
    /// The version given is not the next one, nor a retry of the table stored under it (409).
    pub const VERSION_TAKEN: &str = "rate_version_taken";
    /// The meter refuses a refill or inspection: the PSD's audit says it holds a rate table
    /// older than the one in effect (409; load the updates and audit again).
    pub const RATE_TABLE_STALE: &str = "rate_table_stale";
}

/// A service's name in JSON and on the command line (snake_case of `Service::name`).
pub fn service_key(s: Service) -> &'static str {
    match s {
        Service::Postmark => "postmark",
        Service::Validation => "validation",
        Service::Certificate => "certificate",
        Service::Signature => "signature",
        Service::Revocation => "revocation",
        Service::AgentCertificate => "agent_certificate",
        Service::CreditLine => "credit_line",
        Service::Payment => "payment",
    }
}

/// The service named `key` ([`service_key`]'s form), if any.
pub fn service_of_key(key: &str) -> Option<Service> {
    Service::ALL.into_iter().find(|s| service_key(*s) == key)
}

/// An anchor kind's name in JSON and on the command line: `ca` or `creditor`.
pub fn anchor_kind_key(k: AnchorKind) -> &'static str {
    match k {
        AnchorKind::CertificateCa => "ca",
        AnchorKind::Creditor => "creditor",
    }
}

/// The anchor kind named `key`, if any.
pub fn anchor_kind_of_key(key: &str) -> Option<AnchorKind> {
    match key {
        "ca" => Some(AnchorKind::CertificateCa),
        "creditor" => Some(AnchorKind::Creditor),
        _ => None,
    }
}

/// `POST /v1/rates` at the vendor (operator): a new rate table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePublication {
    /// The version it must get: the next one (a retry of a stored table with its version
    /// answers that table). Without it the vendor assigns the next version, so a retry
    /// publishes the table again under a higher version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// First date of mailing it applies to, `YYYY-MM-DD`: not before the last table's.
    pub effective: String,
    /// Fee per service ([`service_key`] names), minor units; 1 to 16 services.
    pub fees: BTreeMap<String, u64>,
}

/// A signed rate table as the vendor answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateTableView {
    /// Its version.
    pub version: u32,
    /// First date of mailing, `YYYY-MM-DD`.
    pub effective: String,
    /// Fee per service, minor units.
    pub fees: BTreeMap<String, u64>,
    /// The signed table (LOAD RATE TABLE's data), hex.
    pub table: String,
    /// Whether it is the table in effect today (UTC) at the vendor.
    pub in_effect: bool,
    /// When the vendor published it, Unix seconds.
    pub published_at: u64,
}

/// `GET /v1/rates` at the vendor: the tables a PSD should hold now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateTables {
    /// The table in effect today and every later one, ascending by version (empty before
    /// the first publication).
    pub tables: Vec<RateTableView>,
}

/// `POST /v1/anchors` at the vendor (operator): a key to trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRequest {
    /// `ca` (the certificate authority) or `creditor`.
    pub kind: String,
    /// The key, SEC1 uncompressed, 130 hex.
    pub public_key: String,
}

/// A signed trust anchor as the vendor answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorView {
    /// `ca` or `creditor`.
    pub kind: String,
    /// Its version within the kind.
    pub version: u32,
    /// The key, SEC1 uncompressed, hex.
    pub public_key: String,
    /// The signed anchor (LOAD TRUST ANCHOR's data), hex.
    pub anchor: String,
    /// When the vendor signed it, Unix seconds.
    pub signed_at: u64,
}

/// `GET /v1/anchors` at the vendor: the newest anchor of each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchors {
    /// By kind (`ca` first); a kind never published is absent.
    pub anchors: Vec<AnchorView>,
}

/// `GET /v1/devices/{device_id}/updates` at the meter (the device's owner): what the host
/// loads into the PSD after a refill or an inspection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUpdates {
    /// Signed rate tables (LOAD RATE TABLE), hex, ascending by version.
    pub rate_tables: Vec<String>,
    /// Signed trust anchors (LOAD TRUST ANCHOR), hex.
    pub anchors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Service::ALL {
            assert_eq!(service_of_key(service_key(s)), Some(s));
            assert_eq!(service_key(s), s.name().replace(' ', "_"));
        }
        for k in [AnchorKind::CertificateCa, AnchorKind::Creditor] {
            assert_eq!(anchor_kind_of_key(anchor_kind_key(k)), Some(k));
        }
        assert_eq!(service_of_key("agent certificate"), None);
    }
}
