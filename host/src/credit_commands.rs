//! `openpsd credit request | line | pay`: credit from the mailer's desk (seed 004, Figs.
//! 7-9). `request` asks the creditor for a line of credit through the meter: the PSD makes
//! a payment key inside and attests it, the creditor (docs/creditor.md) issues the line of
//! credit certificate (its X.509 certificate on the payment key) for the customer's
//! account, and it is written to a file and loaded. `line` loads such a certificate from a
//! file. A payment certificate for a merchant's order is drawn on it and written to a file
//! for the merchant, with the fee, the paying set's registers after it and the credit
//! remaining printed, and the stock `openssl` commands that check it; the merchant presents
//! it to the creditor (`backoffice creditor present`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use openpsd_core::psd::certmeter::credit::PayRequest;
use openpsd_core::types::*;
use openpsd_host::CardSpec;
use serde_json::json;

use crate::cert_commands::{explain, new_txn, pem, read_certificate, write_synced};
use crate::psd_commands::open_psd;

/// `openpsd credit line FILE`: loads the line of credit certificate (PEM or DER).
pub fn line(spec: Option<CardSpec>, file: &Path, set: u8, json_out: bool) -> Result<()> {
    let cert = read_certificate(file)?;
    let (mut psd, _) = open_psd(spec)?;
    let set = RegisterSetIndex(set);
    let reply = psd
        .load_credit_line(set, &cert)
        .map_err(|e| explain(e, "loading the line of credit"))?;
    let r = psd.registers(set)?;
    if json_out {
        println!(
            "{}",
            json!({
                "line": reply.number, "fee": reply.fee.0, "remaining": reply.remaining.0,
                "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0,
            })
        );
    } else {
        println!(
            "line {} loaded: credit remaining {}, fee {}\nset {}: AR {}  DR {}  control sum {}",
            reply.number, reply.remaining, reply.fee, set.0, r.ar, r.dr, r.control_sum
        );
    }
    Ok(())
}

/// A line request saved before it is sent, so a rerun after a lost answer asks again with
/// the same request ID and attestation (the creditor answers the same line) instead of
/// making another key.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRequest {
    request_id: String,
    attestation: String,
    amount: u64,
}

/// `openpsd credit request --amount N`: GENERATE KEY (payment), the line through the
/// meter, written to `OUT_DIR/<device>-line-<number>.pem` and loaded.
pub fn request(
    spec: Option<CardSpec>,
    meter: &crate::account_commands::MeterArgs,
    amount: u64,
    set: u8,
    out_dir: &Path,
    json_out: bool,
) -> Result<()> {
    use openpsd_core::psd::certmeter::attestation::Purpose;
    let client = crate::account_commands::meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let device = info.device.to_string();
    let saved_path = out_dir.join(format!("{device}-line-request.json"));
    let saved: SavedRequest = match fs::read(&saved_path) {
        Ok(bytes) => {
            let s: SavedRequest = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} does not read", saved_path.display()))?;
            if s.amount != amount {
                anyhow::bail!(
                    "{} holds an unfinished request for {} (run with --amount {}, or remove \
                    the file to ask anew)",
                    saved_path.display(),
                    s.amount,
                    s.amount
                );
            }
            s
        }
        Err(_) => {
            let (attestation, _) = psd
                .generate_key(Purpose::Payment, false)
                .map_err(|e| explain(e, "generating the payment key"))?;
            let s = SavedRequest {
                request_id: hex::encode(new_txn(None)?),
                attestation: hex::encode(attestation),
                amount,
            };
            write_synced(&saved_path, &serde_json::to_vec(&s)?)?;
            s
        }
    };
    let attestation = hex::decode(&saved.attestation)
        .map_err(|_| anyhow!("{}: attestation not hex", saved_path.display()))?;
    let answer = client
        .request_credit_line(&device, &saved.request_id, &attestation, amount)
        .context("the line request")?;
    let cert = hex::decode(&answer.certificate)
        .map_err(|_| anyhow!("the meter answered a certificate that is not hex"))?;
    let creditor = hex::decode(&answer.creditor_certificate)
        .map_err(|_| anyhow!("the meter answered a creditor certificate that is not hex"))?;
    let line_path = out_dir.join(format!("{device}-line-{}.pem", answer.number));
    let creditor_path = out_dir.join("creditor.pem");
    write_synced(&line_path, pem("CERTIFICATE", &cert).as_bytes())?;
    write_synced(&creditor_path, pem("CERTIFICATE", &creditor).as_bytes())?;
    let set = RegisterSetIndex(set);
    let reply = psd
        .load_credit_line(set, &cert)
        .map_err(|e| explain(e, "loading the line of credit"))?;
    // Loaded: the request is done.
    let _ = fs::remove_file(&saved_path);
    let r = psd.registers(set)?;
    let check = format!(
        "openssl verify -CAfile {} -purpose any {}",
        creditor_path.display(),
        line_path.display()
    );
    if json_out {
        println!(
            "{}",
            json!({
                "line": reply.number, "amount": answer.amount, "currency": answer.currency,
                "file": line_path.display().to_string(), "line_hash": answer.line_hash,
                "fee": reply.fee.0, "remaining": reply.remaining.0,
                "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0, "check": check,
            })
        );
    } else {
        println!(
            "line {} of {} {} granted and loaded: credit remaining {}, fee {}\nset {}: AR {}  \
             DR {}  control sum {}\nwritten to {}\ncheck: {check}",
            reply.number,
            answer.amount,
            answer.currency,
            reply.remaining,
            reply.fee,
            set.0,
            r.ar,
            r.dr,
            r.control_sum,
            line_path.display()
        );
    }
    Ok(())
}

/// What `openpsd credit pay` was asked.
pub struct PayArgs<'a> {
    /// The amount, in the line's minor units.
    pub amount: u64,
    /// The merchant paid.
    pub merchant: &'a str,
    /// The merchant's order.
    pub order: &'a str,
    /// The set that pays the fee.
    pub set: u8,
    /// A transaction ID to retry (hex).
    pub txn: Option<&'a str>,
    /// Where the payment certificate goes.
    pub out: Option<&'a Path>,
}

/// `openpsd credit pay`: a payment certificate for the merchant's order.
pub fn pay(spec: Option<CardSpec>, a: &PayArgs<'_>, json_out: bool) -> Result<()> {
    let txn = new_txn(a.txn)?;
    if !json_out {
        eprintln!(
            "payment {} (if interrupted, run again with --txn {}: not charged twice)",
            hex::encode(txn),
            hex::encode(txn)
        );
    }
    let (mut psd, _) = open_psd(spec)?;
    let set = RegisterSetIndex(a.set);
    let req = PayRequest {
        transaction: TransactionId(txn),
        amount: Amount(a.amount),
        merchant: a.merchant.as_bytes().to_vec(),
        order: a.order.as_bytes().to_vec(),
    };
    let (fee, cert) = psd.pay(set, &req).map_err(|e| match &e {
        openpsd_core::client::ClientError::Refused(
            _,
            _,
            openpsd_core::Status::CreditInsufficient,
        ) => {
            anyhow!("paying: the line of credit has less left than {}", a.amount)
        }
        _ => explain(e, "paying"),
    })?;
    let info = openpsd_core::psd::certmeter::credit::PaymentInfo::from_der(&cert.info_der)
        .map_err(|_| anyhow!("the PSD answered a payment that does not decode"))?;
    let out: PathBuf = a.out.map_or_else(
        || PathBuf::from(format!("payment-{}.der", hex::encode(txn))),
        Path::to_path_buf,
    );
    fs::write(&out, cert.to_der()).with_context(|| format!("writing {}", out.display()))?;
    // The same payment as CMS SignedData (`openssl cms -verify`), signed by the line of
    // credit certificate the PSD holds on its payment key.
    let line = psd
        .certmeter_info()?
        .active(openpsd_core::psd::certmeter::attestation::Purpose::Payment)
        .map(|s| s.certificate.clone())
        .filter(|c| openpsd_core::crypto::sha256(c) == info.line)
        .ok_or_else(|| {
            anyhow!(
                "{} written, but the PSD no longer holds the line it was drawn on: no .p7m",
                out.display()
            )
        })?;
    let p7m_path = out.with_extension("p7m");
    let p7m = openpsd_pki::payment::expand(&cert, &line, &[])?;
    fs::write(&p7m_path, &p7m).with_context(|| format!("writing {}", p7m_path.display()))?;
    let cms_check = format!(
        "openssl cms -verify -inform DER -in {} -CAfile CREDITOR.pem -out payment-info.der",
        p7m_path.display()
    );
    let r = psd.registers(set)?;
    if json_out {
        println!(
            "{}",
            json!({
                "file": out.display().to_string(), "p7m": p7m_path.display().to_string(),
                "openssl": cms_check, "counter": info.counter,
                "amount": info.amount.0, "remaining": info.remaining.0, "fee": fee.0,
                "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0,
            })
        );
    } else {
        println!(
            "payment {} of {} {} to {} for order {}: credit remaining {}\nfee {}; set {}: AR {}  DR {}  control sum {}\nwritten to {}\ncheck: openssl x509 -in LINE.pem -noout -pubkey > pay.pub; \
             openssl asn1parse -inform DER -in {} (the PaymentInfo is the first SEQUENCE, the signature the BIT STRING)\nas CMS: {}\ncheck: {}",
            info.counter,
            info.amount,
            String::from_utf8_lossy(&info.currency),
            a.merchant,
            a.order,
            info.remaining,
            fee,
            set.0,
            r.ar,
            r.dr,
            r.control_sum,
            out.display(),
            out.display(),
            p7m_path.display(),
            cms_check
        );
    }
    Ok(())
}
