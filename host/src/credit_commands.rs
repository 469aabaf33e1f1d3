//! `openpsd credit line | pay`: credit from the mailer's desk (seed 004, Figs. 7-9). A
//! line of credit certificate (the creditor's X.509 certificate on the PSD's payment key)
//! is loaded from a file; a payment certificate for a merchant's order is drawn on it and
//! written to a file for the merchant, with the fee, the paying set's registers after it
//! and the credit remaining printed, and the stock `openssl` commands that check it.
//!
//! Not built: the creditor service that issues lines and settles payments, so the line
//! comes from a file here and nothing is presented for settlement (docs/certmeter.md).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use openpsd_core::psd::certmeter::credit::PayRequest;
use openpsd_core::types::*;
use openpsd_host::CardSpec;
use serde_json::json;

use crate::cert_commands::{explain, new_txn, read_certificate};
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
