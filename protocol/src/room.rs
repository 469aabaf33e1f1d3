//! The demo room's messages (`backoffice demo --web`, `web-demo/README.md`): PERSONALIZE
//! data for a browser PSD, its registration, its account, and browser purses.

use serde::{Deserialize, Serialize};

use crate::recharge::Account;

/// `POST /demo/v1/devices` body (may be empty).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewDevice {
    /// The mailer's origin postal code (default 10115).
    pub origin: Option<String>,
}

/// `POST /demo/v1/devices` answer: what the page personalizes its PSD with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Personalize {
    /// Device ID, 16 upper-case hex.
    pub device_id: String,
    /// PERSONALIZE command data, hex.
    pub personalize: String,
    /// License of register set 0.
    pub license: u32,
    /// Origin postal code.
    pub origin: String,
    /// The customer account the room opens for it (`web-` + device ID).
    pub account_id: String,
    /// Highest postage per indicium, minor units.
    pub max_postage: u64,
    /// Highest descending register, minor units.
    pub max_dr: u64,
    /// Days between inspections.
    pub inspection_days: u16,
}

/// `POST /demo/v1/devices/{device_id}/register` body: the PSD's answer to PERSONALIZE.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Register {
    /// Indicium key ID, 8 hex.
    pub key_id: String,
    /// Indicium public key, 130 hex.
    pub public_key: String,
}

/// `POST /demo/v1/devices/{device_id}/register` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registered {
    /// Device ID.
    pub device_id: String,
    /// Indicium key ID.
    pub key_id: String,
    /// Indicium public key.
    pub public_key: String,
    /// Licenses in set order.
    pub licenses: Vec<(u32, String)>,
    /// The funded account.
    pub account: Account,
}

/// `POST /demo/v1/purses` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewPurse {
    /// The holder's PIN: 4 to 12 digits.
    pub pin: String,
}

/// `POST /demo/v1/purses` answer: what the page personalizes its purse with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PursePersonalize {
    /// 16 hex digits, upper case.
    pub card_id: String,
    /// The purse's PERSONALIZE command data, hex.
    pub personalize: String,
    /// Scheme ID.
    pub scheme: u32,
    /// Highest balance, minor units.
    pub max_balance: u64,
    /// Highest single transfer, minor units.
    pub max_transfer: u64,
    /// PIN tries before it blocks.
    pub pin_tries: u8,
    /// The room's purse issuer key, SEC1 hex.
    pub issuer_public_key: String,
}

/// `POST /demo/v1/purses/{card_id}/certify` body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Certify {
    /// The purse's purchase public key, SEC1 hex.
    pub public_key: String,
}

/// `POST /demo/v1/purses/{card_id}/certify` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Certified {
    /// Card ID.
    pub card_id: String,
    /// The issuer's ECDSA signature (r ‖ s, hex) over `certificate_body`.
    pub signature: String,
}

/// `POST /demo/v1/devices/{device_id}/certificate` and
/// `POST /demo/v1/purses/{card_id}/certificate` body: the device's recognition key, which
/// it generated inside itself (GET DATA `00 03` on a PSD, `00 04` on a purse).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertifyRecognition {
    /// SEC1 compressed P-256 key, 66 hex.
    pub recognition_key: String,
}

/// The answer: the scheme issuer's certificate (docs/apdu.md layout) for INSTALL
/// CERTIFICATE. The issuer's private key never leaves the room.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecognitionCertificate {
    /// Device or card ID, 16 upper-case hex.
    pub id: String,
    /// The certificate, hex (123 bytes).
    pub certificate: String,
    /// Its serial (what a revocation list names).
    pub serial: u32,
}
