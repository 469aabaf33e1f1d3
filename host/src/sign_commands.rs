//! `openpsd sign` and `openpsd postmark validate | verify-receipt`: the certificate meter's
//! signatures and paid validation (seed 004, Fig. 4) from the mailer's desk.
//!
//! A signature is made by the PSD in a compact form (time, digest, r‖s; 110 bytes) and
//! expanded here into a detached CMS SignedData (`.p7s`) that stock `openssl cms -verify`
//! reads (`openpsd-pki`); the file is hashed here and never leaves this computer. A
//! validation sends the postmark, its certificate and the file's SHA-256 to the PSD, which
//! charges the validation fee and answers a receipt signed with its device key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::sign::SignRequest;
use openpsd_core::psd::certmeter::validate::{checks, ValidateRequest, ValidationReceipt};
use openpsd_core::types::*;
use openpsd_host::CardSpec;
use serde_json::json;

use crate::cert_commands::{explain, new_txn, pem, read_certificate, regs_json, utc, write_synced};
use crate::psd_commands::open_psd;

/// `openpsd sign`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SignArgs {
    #[command(subcommand)]
    action: Option<SignAction>,
    /// The file to sign.
    file: Option<PathBuf>,
    /// Where the detached CMS signature goes (default: FILE.p7s, DER).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Write the signature as PEM instead of DER.
    #[arg(long)]
    pem: bool,
    /// Register set that pays the fee.
    #[arg(long, default_value_t = 0)]
    set: u8,
    /// Transaction ID of an interrupted signature to fetch again (16 hex; not charged
    /// twice); default: new.
    #[arg(long)]
    txn: Option<String>,
    /// The CA certificate, for the openssl command printed.
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum SignAction {
    /// Check a signature against its file and the CA certificate here (what
    /// `openssl cms -verify` checks, plus the certificate's use at signingTime).
    Verify {
        /// The file.
        file: PathBuf,
        /// The signature (.p7s, DER or PEM).
        sig: PathBuf,
        /// The CA certificate (PEM or DER).
        #[arg(long)]
        ca: PathBuf,
    },
}

/// `openpsd sign ...`.
pub fn run(spec: Option<CardSpec>, a: SignArgs, json_out: bool) -> Result<()> {
    match a.action {
        Some(SignAction::Verify { file, sig, ca }) => verify(&file, &sig, &ca, json_out),
        None => {
            let file = a
                .file
                .clone()
                .ok_or_else(|| anyhow!("sign: name the file"))?;
            sign(spec, &file, &a, json_out)
        }
    }
}

fn sign(spec: Option<CardSpec>, file: &Path, a: &SignArgs, json_out: bool) -> Result<()> {
    let digest = crate::progress::hash_file(file, json_out)?;
    let txn = new_txn(a.txn.as_deref())?;
    if !json_out {
        eprintln!(
            "signature {} (if interrupted, run again with --txn {}: not charged twice)",
            hex::encode(txn),
            hex::encode(txn)
        );
    }
    let (mut psd, _) = open_psd(spec)?;
    let set = RegisterSetIndex(a.set);
    let before = psd.registers(set)?;
    let compact = psd
        .sign(
            set,
            &SignRequest {
                transaction: TransactionId(txn),
                digest,
            },
        )
        .map_err(|e| explain(e, "signing"))?;
    let after = psd.registers(set)?;
    // The key that signed (a retry may answer a signature made before a key rotation).
    let info = psd.certmeter_info()?;
    let slot = info
        .slots
        .iter()
        .find(|s| {
            s.purpose == Purpose::Sign
                && openpsd_core::crypto::key_id(&s.public_key) == compact.key_id
                && !s.certificate.is_empty()
        })
        .ok_or_else(|| {
            anyhow!(
                "the PSD no longer holds the certificate of the key that signed (compact \
                 signature: {})",
                hex::encode(compact.encode())
            )
        })?;
    let p7s = openpsd_pki::sign::expand(&compact, &slot.certificate, &[])
        .context("expanding the signature into CMS")?;
    let out = a.out.clone().unwrap_or_else(|| {
        let mut name = file.as_os_str().to_owned();
        name.push(".p7s");
        PathBuf::from(name)
    });
    let (bytes, inform) = if a.pem {
        (pem("CMS", &p7s).into_bytes(), "PEM")
    } else {
        (p7s.clone(), "DER")
    };
    write_synced(&out, &bytes)?;
    let ca =
        a.ca.as_ref()
            .map_or_else(|| "ca.pem".to_owned(), |p| p.display().to_string());
    let check = format!(
        "openssl cms -verify -binary -inform {inform} -in {} -content {} -CAfile {ca} -out /dev/null",
        out.display(),
        file.display()
    );
    // The fee is what this call debited: 0 on a retry of a signature already paid.
    let fee = before.dr.0.saturating_sub(after.dr.0);
    if json_out {
        println!(
            "{}",
            json!({
                "transaction": hex::encode(txn), "signature": out.display().to_string(),
                "compact": hex::encode(compact.encode()), "signing_time": compact.signing_time,
                "sha256": hex::encode(digest), "fee": fee, "registers": regs_json(&after),
                "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "signed {} (SHA-256 {}) at {} (Unix {})",
        file.display(),
        hex::encode(digest),
        utc(compact.signing_time),
        compact.signing_time
    );
    println!(
        "fee {}{}; set {}: AR {} DR {}",
        Amount(fee),
        if fee == 0 { " (already paid)" } else { "" },
        a.set,
        after.ar,
        after.dr
    );
    println!(
        "signature {} ({} bytes, {inform})",
        out.display(),
        bytes.len()
    );
    println!("check it: {check}");
    Ok(())
}

fn verify(file: &Path, sig: &Path, ca: &Path, json_out: bool) -> Result<()> {
    let digest = crate::progress::hash_file(file, json_out)?;
    let raw = fs::read(sig).with_context(|| format!("reading {}", sig.display()))?;
    let p7s = openpsd_pki::der_of(&raw)?;
    let ca_der = read_certificate(ca)?;
    let v = openpsd_pki::sign::verify(&p7s, &digest, &ca_der)
        .context("the signature does not verify")?;
    let subject = &v.subject;
    if json_out {
        println!(
            "{}",
            json!({ "valid": true, "signing_time": v.compact.signing_time, "signer": subject })
        );
    } else {
        println!(
            "valid: signed by {subject} at {} (revocation not checked: ask the CA's OCSP)",
            utc(v.compact.signing_time)
        );
    }
    Ok(())
}

/// `openpsd postmark validate FILE TOKEN`: the PSD validates the postmark token (RFC 3161,
/// as `openpsd postmark` writes it) against FILE for the validation fee; the receipt is
/// written next to the token.
pub fn validate(
    spec: Option<CardSpec>,
    file: &Path,
    token: &Path,
    set: u8,
    txn: Option<&str>,
    json_out: bool,
) -> Result<()> {
    let digest = crate::progress::hash_file(file, json_out)?;
    let token_der = fs::read(token).with_context(|| format!("reading {}", token.display()))?;
    let compact = openpsd_pki::postmark::compact_of(&token_der)
        .context("the token is not an openpsd postmark")?;
    let cert = openpsd_pki::postmark::certificates_of(&token_der)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no certificate in the token"))?;
    let txn = new_txn(txn)?;
    let (mut psd, device) = open_psd(spec)?;
    let set_index = RegisterSetIndex(set);
    let req = ValidateRequest {
        transaction: TransactionId(txn),
        postmark: compact
            .encode()
            .map_err(|_| anyhow!("compact postmark too long"))?,
        certificate: cert,
        digest,
    };
    let (bytes, r) = psd
        .validate_postmark(set_index, &req, &device.public_key)
        .map_err(|e| explain(e, "validating the postmark"))?;
    let mut name = token.as_os_str().to_owned();
    name.push(".receipt");
    let out = PathBuf::from(name);
    write_synced(&out, &bytes)?;
    let regs = psd.registers(set_index)?;
    let failed = failed_checks(r.checks);
    if json_out {
        println!(
            "{}",
            json!({
                "valid": r.valid, "failed": failed, "receipt": out.display().to_string(),
                "transaction": hex::encode(txn), "fee": r.fee.0,
                "postmark_device": r.postmark_device.to_string(),
                "postmark_serial": r.postmark_counter, "gen_time": r.gen_time,
                "validated_at": r.time, "registers": regs_json(&regs),
                "device_key": hex::encode(device.public_key),
            })
        );
        return Ok(());
    }
    if r.valid {
        println!(
            "VALID: postmark {} of device {} at {} (revocation not checked: ask the CA's OCSP)",
            r.postmark_counter,
            r.postmark_device,
            utc(r.gen_time)
        );
    } else {
        println!(
            "NOT VALID: postmark {} of device {} at {}: {}",
            r.postmark_counter,
            r.postmark_device,
            utc(r.gen_time),
            failed.join(", ")
        );
    }
    println!(
        "fee {} (rate table {}); set {set}: AR {} DR {}",
        r.fee, r.table_version, regs.ar, regs.dr
    );
    println!(
        "receipt {} ({} bytes), signed by device {} at {}; check it: openpsd postmark \
         verify-receipt {} --device-key {}",
        out.display(),
        bytes.len(),
        r.validator,
        utc(r.time),
        out.display(),
        hex::encode(device.public_key)
    );
    Ok(())
}

/// `openpsd postmark verify-receipt RECEIPT --device-key HEX`: the receipt's device
/// signature checked, and what it states.
pub fn verify_receipt(receipt: &Path, device_key: &str, json_out: bool) -> Result<()> {
    let bytes = fs::read(receipt).with_context(|| format!("reading {}", receipt.display()))?;
    let key = hex::decode(device_key.trim()).map_err(|_| anyhow!("--device-key: hex"))?;
    let r = ValidationReceipt::open(&bytes, &key)
        .map_err(|e| anyhow!("the receipt does not verify under this device key: {e:?}"))?;
    if json_out {
        println!(
            "{}",
            json!({
                "authentic": true, "valid": r.valid, "failed": failed_checks(r.checks),
                "validator": r.validator.to_string(), "validated_at": r.time,
                "postmark_device": r.postmark_device.to_string(),
                "postmark_serial": r.postmark_counter, "gen_time": r.gen_time,
                "certificate_sha256": hex::encode(r.certificate_hash),
                "document_sha256": hex::encode(r.digest), "fee": r.fee.0,
            })
        );
    } else {
        println!(
            "authentic receipt of device {} at {}: postmark {} of device {} at {} {}",
            r.validator,
            utc(r.time),
            r.postmark_counter,
            r.postmark_device,
            utc(r.gen_time),
            if r.valid {
                "VALID".to_owned()
            } else {
                format!("NOT VALID ({})", failed_checks(r.checks).join(", "))
            }
        );
        println!(
            "document SHA-256 {}, certificate SHA-256 {}; revocation not checked",
            hex::encode(r.digest),
            hex::encode(r.certificate_hash)
        );
    }
    Ok(())
}

/// The checks a receipt says failed, in words.
fn failed_checks(passed: u8) -> Vec<&'static str> {
    [
        (
            checks::CA_SIGNATURE,
            "certificate not signed by the trusted CA",
        ),
        (checks::POSTMARK_CERTIFICATE, "not a postmark certificate"),
        (
            checks::VALID_AT_GEN_TIME,
            "certificate not valid at the postmark's time",
        ),
        (
            checks::KEY_MATCHES,
            "postmark not made with the certificate's key",
        ),
        (checks::SIGNATURE, "postmark signature does not verify"),
        (checks::DIGEST, "postmark is for another document"),
    ]
    .into_iter()
    .filter(|(bit, _)| passed & bit == 0)
    .map(|(_, what)| what)
    .collect()
}
