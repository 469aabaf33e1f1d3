//! `openpsd rates | postmark | cert`: the certificate meter (seed 004) from the mailer's
//! desk. Every paid command prints the fee, the paying set's registers after it, and the
//! stock `openssl` command that checks its output, so nothing has to be taken on trust.
//!
//! A postmark is issued by the PSD in its compact form (about 200 bytes, what a
//! DataMatrix holds) and expanded here, without loss, into the RFC 3161 time-stamp token
//! that `openssl ts -verify` reads (`openpsd-pki`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::client::ClientError;
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::RateTable;
use openpsd_core::psd::certmeter::state::SlotState;
use openpsd_core::psd::certmeter::tst;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_host::CardSpec;
use serde_json::json;

use crate::psd_commands::open_psd;

/// `openpsd rates`: the rate tables the PSD holds, the one in effect ticked; with
/// `--load FILE`, a vendor-signed table (binary or hex) loaded first.
pub fn rates(spec: Option<CardSpec>, load: Option<&Path>, json_out: bool) -> Result<()> {
    let (mut psd, _) = open_psd(spec)?;
    if let Some(file) = load {
        let bytes = read_bytes(file)?;
        let version = psd
            .load_rate_table(&bytes)
            .map_err(|e| explain(e, "loading the rate table"))?;
        progress(json_out, &format!("rate table version {version} loaded"));
    }
    let info = psd.certmeter_info()?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| Date::from_unix_seconds(d.as_secs()));
    let current = today.and_then(|d| {
        openpsd_core::psd::certmeter::rates::in_effect(&info.tables, d).map(|t| t.version)
    });
    if json_out {
        let tables: Vec<_> = info
            .tables
            .iter()
            .map(|(t, bytes)| table_json(t, bytes, Some(t.version) == current))
            .collect();
        println!(
            "{}",
            json!({ "tables": tables, "fees_due": info.fees_due.0 })
        );
        return Ok(());
    }
    if info.tables.is_empty() {
        println!("no rate table: the meter server loads one at the next refill or inspection");
    }
    for (t, _) in &info.tables {
        let mark = if Some(t.version) == current {
            "in effect"
        } else {
            "next"
        };
        println!(
            "rate table version {} (effective {}, {mark}):",
            t.version, t.effective
        );
        for (s, fee) in &t.fees {
            println!("  {:<18} {fee}", s.name());
        }
    }
    if info.fees_due != Amount::ZERO {
        println!(
            "fees due: {} (paid services wait for the next refill)",
            info.fees_due
        );
    }
    Ok(())
}

fn table_json(t: &RateTable, bytes: &[u8], in_effect: bool) -> serde_json::Value {
    let fees: serde_json::Map<String, serde_json::Value> = t
        .fees
        .iter()
        .map(|(s, f)| (s.name().replace(' ', "_"), json!(f.0)))
        .collect();
    json!({
        "version": t.version, "effective": t.effective.to_string(), "in_effect": in_effect,
        "fees": fees, "signed": hex::encode(bytes),
    })
}

/// `openpsd cert list`: the key slots and their certificates.
pub fn cert_list(spec: Option<CardSpec>, json_out: bool) -> Result<()> {
    let (mut psd, _) = open_psd(spec)?;
    let info = psd.certmeter_info()?;
    if json_out {
        let slots: Vec<_> = info
            .slots
            .iter()
            .map(|s| {
                json!({
                    "slot": s.slot, "state": state_name(s.state), "purpose": s.purpose.name(),
                    "generation": s.generation, "public_key": hex::encode(s.public_key),
                    "fee_paid": s.fee_paid.0, "certificate": hex::encode(&s.certificate),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "slots": slots, "postmarks": info.postmarks, "anchors": info.anchors.len() })
        );
        return Ok(());
    }
    if info.slots.is_empty() {
        println!("no keys yet: `openpsd cert request --purpose postmark`");
    }
    for s in &info.slots {
        println!(
            "slot {}: {} key, {} (generation {}, certificate {} bytes, fee paid {})",
            s.slot,
            s.purpose.name(),
            state_name(s.state),
            s.generation,
            s.certificate.len(),
            s.fee_paid
        );
    }
    println!("postmarks issued: {}", info.postmarks);
    Ok(())
}

/// `openpsd cert request`: Fig. 5 from the mailer's desk. The PSD generates the key and
/// attests it; the meter server passes the attestation to the CA with the account's
/// identity (the certificate's subject is the account's, whatever the host says); the PSD
/// checks the certificate, pays the certificate fee from `set` and activates the key.
/// The certificate and the CA's are written to `out_dir` with the openssl command that
/// checks them. Each step is idempotent: run again, it finishes an interrupted request (the
/// pending key is attested again, the CA answers the same certificate, the install is not
/// charged twice).
pub fn cert_request(
    spec: Option<CardSpec>,
    meter: &crate::account_commands::MeterArgs,
    purpose: Purpose,
    set: u8,
    (replace, rotate): (bool, bool),
    out_dir: &Path,
    json_out: bool,
) -> Result<()> {
    let client = crate::account_commands::meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    // An active key and none pending: a request that finished (perhaps with its reply
    // lost). A new key needs --rotate, so a rerun never pays a second certificate.
    let held = psd.certmeter_info()?;
    let pending = held
        .slots
        .iter()
        .any(|s| s.purpose == purpose && s.state == SlotState::Pending);
    if let (Some(active), false, false) = (held.active(purpose), pending, rotate) {
        fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let cert_path = out_dir.join(format!("{}-{}.pem", info.device, purpose.name()));
        write_synced(
            &cert_path,
            pem("CERTIFICATE", &active.certificate).as_bytes(),
        )?;
        bail!(
            "slot {} already has an active {} key (certificate written to {}, fee {} paid at \
             its install); use --rotate for a new key and a new certificate",
            active.slot,
            purpose.name(),
            cert_path.display(),
            active.fee_paid
        );
    }
    progress(
        json_out,
        "1/3 GENERATE KEY: the key is made inside the PSD and attested",
    );
    let (attestation, a) = psd
        .generate_key(purpose, replace)
        .map_err(|e| explain(e, "generating the key"))?;
    progress(
        json_out,
        &format!(
            "2/3 the CA certifies slot {}'s {} key (generation {}), the subject from your account",
            a.slot,
            purpose.name(),
            a.generation
        ),
    );
    let answer = client
        .request_certificate(&info.device.to_string(), &attestation)
        .context("the certificate request")?;
    let cert = hex::decode(&answer.certificate)
        .map_err(|_| anyhow!("the meter answered a certificate that is not hex"))?;
    let ca = hex::decode(&answer.ca_certificate)
        .map_err(|_| anyhow!("the meter answered a CA certificate that is not hex"))?;
    progress(
        json_out,
        "3/3 INSTALL KEY CERTIFICATE: checked by the PSD, fee paid, key active",
    );
    let (fee, regs) = psd
        .install_key_certificate(a.slot, RegisterSetIndex(set), &cert)
        .map_err(|e| explain(e, "installing the certificate"))?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let cert_path = out_dir.join(format!("{}-{}.pem", info.device, purpose.name()));
    let ca_path = out_dir.join("ca.pem");
    write_synced(&cert_path, pem("CERTIFICATE", &cert).as_bytes())?;
    write_synced(&ca_path, pem("CERTIFICATE", &ca).as_bytes())?;
    let check = format!(
        "openssl verify -CAfile {} {}",
        ca_path.display(),
        cert_path.display()
    );
    if json_out {
        println!(
            "{}",
            json!({
                "slot": a.slot, "purpose": purpose.name(), "serial": answer.serial,
                "certificate": cert_path.display().to_string(),
                "ca_certificate": ca_path.display().to_string(), "fee": fee.0,
                "registers": regs_json(&regs), "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "certificate {} on slot {} ({} key) installed: {}",
        answer.serial,
        a.slot,
        purpose.name(),
        cert_path.display()
    );
    println!("fee {fee}; set {set}: AR {} DR {}", regs.ar, regs.dr);
    println!("check it: {check}");
    Ok(())
}

fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::Pending => "pending",
        SlotState::Active => "active",
        SlotState::Retired => "retired",
    }
}

/// What `openpsd postmark` is asked.
pub struct PostmarkArgs<'a> {
    /// The document.
    pub file: &'a Path,
    /// Where the RFC 3161 token goes (default: FILE.tst).
    pub out: Option<PathBuf>,
    /// Where the compact postmark goes, if wanted.
    pub compact: Option<PathBuf>,
    /// The paying register set.
    pub set: u8,
    /// The RFC 3161 nonce, hex.
    pub nonce: Option<String>,
    /// The transaction ID (a retry); default: new.
    pub txn: Option<String>,
    /// The CA certificate (PEM), for the printed openssl command.
    pub ca: Option<PathBuf>,
}

/// `openpsd postmark FILE`: the document hashed here, ISSUE POSTMARK, the token expanded
/// and written with the postmark certificate next to it.
pub fn postmark(spec: Option<CardSpec>, a: &PostmarkArgs<'_>, json_out: bool) -> Result<()> {
    let digest = crate::progress::hash_file(a.file, json_out)?;
    let nonce = match &a.nonce {
        None => Vec::new(),
        Some(h) => {
            let n = hex::decode(h).map_err(|_| anyhow!("--nonce: hex"))?;
            // An INTEGER's magnitude: leading zero bytes are not part of it.
            let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
            if n.len() > 16 {
                bail!("--nonce: at most 16 bytes");
            }
            n
        }
    };
    let txn = new_txn(a.txn.as_deref())?;
    progress(
        json_out,
        &format!(
            "postmark {} (if interrupted, run again with --txn {}: not charged twice)",
            hex::encode(txn),
            hex::encode(txn)
        ),
    );
    let (mut psd, _) = open_psd(spec)?;
    let set = RegisterSetIndex(a.set);
    let req = PostmarkRequest {
        transaction: TransactionId(txn),
        digest,
        nonce,
    };
    let compact = psd
        .issue_postmark(set, &req)
        .map_err(|e| explain(e, "issuing the postmark"))?;
    let fields = tst::decode_tst_info(&compact.tst_info)
        .map_err(|_| anyhow!("the PSD answered a TSTInfo that does not decode"))?;
    // The compact postmark first: it is the paid output, whatever happens next.
    let compact_bytes = compact
        .encode()
        .map_err(|_| anyhow!("compact postmark too long"))?;
    if let Some(c) = &a.compact {
        write_synced(c, &compact_bytes)?;
    }
    // The key that signed it (a retry may answer a postmark made before a key rotation:
    // its slot is retired, its certificate kept).
    let info = psd.certmeter_info()?;
    let slot = info
        .slots
        .iter()
        .find(|s| {
            s.purpose == Purpose::Postmark
                && openpsd_core::crypto::key_id(&s.public_key) == compact.key_id
                && !s.certificate.is_empty()
        })
        .ok_or_else(|| {
            anyhow!(
                "the PSD no longer holds the certificate of the key that signed this postmark \
                 (compact postmark: {})",
                hex::encode(&compact_bytes)
            )
        })?;
    let token = openpsd_pki::postmark::expand(&compact, &slot.certificate, &[])
        .context("expanding the postmark into an RFC 3161 token")?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.file.with_extension(ext_plus(a.file, "tst")));
    write_synced(&out, &token)?;
    let cert_pem = out.with_extension("postmark.pem");
    write_synced(&cert_pem, pem("CERTIFICATE", &slot.certificate).as_bytes())?;
    let regs = psd.registers(set)?;
    let ca =
        a.ca.as_ref()
            .map_or_else(|| "ca.pem".to_owned(), |p| p.display().to_string());
    let check = format!(
        "openssl ts -verify -data {} -in {} -token_in -CAfile {ca} -untrusted {}",
        a.file.display(),
        out.display(),
        cert_pem.display()
    );
    if json_out {
        println!(
            "{}",
            json!({
                "transaction": hex::encode(txn), "token": out.display().to_string(),
                "certificate": cert_pem.display().to_string(),
                "compact": hex::encode(&compact_bytes), "serial": fields.counter,
                "gen_time": fields.gen_time, "fee": fields.fee.0,
                "table_version": fields.table_version, "registers": regs_json(&regs),
                "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "postmark {} of device {} at {} (Unix {}), SHA-256 {}",
        fields.counter,
        fields.device,
        utc(fields.gen_time),
        fields.gen_time,
        hex::encode(digest)
    );
    println!(
        "fee {} (rate table {}); set {}: AR {} DR {}",
        fields.fee, fields.table_version, a.set, regs.ar, regs.dr
    );
    println!(
        "token {} ({} bytes; compact {} bytes), certificate {}",
        out.display(),
        token.len(),
        compact_bytes.len(),
        cert_pem.display()
    );
    println!("check it: {check}");
    Ok(())
}

/// `openpsd postmark verify FILE TOKEN --ca CA`: the token checked here (imprint, signed
/// attributes, signature, certificate under the CA, its timeStamping use at genTime).
pub fn postmark_verify(file: &Path, token: &Path, ca: &Path, json_out: bool) -> Result<()> {
    let digest = crate::progress::hash_file(file, json_out)?;
    let token_der = fs::read(token).with_context(|| format!("reading {}", token.display()))?;
    let ca_der = read_certificate(ca)?;
    let fields = openpsd_pki::postmark::verify(&token_der, &digest, &ca_der)
        .context("the postmark does not verify")?;
    if json_out {
        println!(
            "{}",
            json!({
                "valid": true, "device": fields.device.to_string(), "serial": fields.counter,
                "gen_time": fields.gen_time, "fee": fields.fee.0, "license": fields.license.0,
            })
        );
    } else {
        println!(
            "valid: postmark {} of device {} at {} (fee {}, license {})",
            fields.counter,
            fields.device,
            utc(fields.gen_time),
            fields.fee,
            fields.license.0
        );
    }
    Ok(())
}

/// Shown with the registers of the set that paid.
pub fn regs_json(r: &Registers) -> serde_json::Value {
    json!({ "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0, "pieces": r.pieces.0 })
}

/// A new random transaction ID, or the given one (hex, 8 bytes).
pub fn new_txn(given: Option<&str>) -> Result<[u8; 8]> {
    match given {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .ok_or_else(|| anyhow!("--txn: 16 hex digits")),
        None => {
            let mut t = [0u8; 8];
            getrandom::fill(&mut t).map_err(|e| anyhow!("random transaction ID: {e}"))?;
            Ok(t)
        }
    }
}

/// `FILE.ext` → `ext.tst` style: the token sits beside the document.
fn ext_plus(file: &Path, ext: &str) -> String {
    match file.extension() {
        Some(e) => format!("{}.{ext}", e.to_string_lossy()),
        None => ext.to_owned(),
    }
}

/// Bytes of a file that holds them raw or as hex.
fn read_bytes(file: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8_lossy(&raw);
    Ok(hex::decode(text.trim()).unwrap_or(raw))
}

/// A certificate file, PEM or DER.
pub fn read_certificate(file: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    openpsd_pki::der_of(&raw).with_context(|| format!("reading {}", file.display()))
}

/// PEM of `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    openpsd_pki::pem(label, der)
}

/// Writes and syncs a file.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut f = fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let day = Date::from_unix_seconds(secs).map_or_else(|| "?".to_owned(), |d| d.to_string());
    let s = secs % 86_400;
    format!("{day} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

fn progress(json_out: bool, line: &str) {
    if !json_out {
        eprintln!("{line}");
    }
}

/// A refusal in the words a mailer needs: the status word, its meaning, what to do.
pub fn explain(e: ClientError, step: &str) -> anyhow::Error {
    let why = match &e {
        ClientError::Refused(_, _, s) => match s {
            Status::NoRate => "no rate table prices this service: refill or inspect (the meter server loads the rate table), or `openpsd rates --load FILE`",
            Status::InsufficientFunds => "the register set's DR is below the fee: refill",
            Status::FeesDue => "fees are due: refill first",
            Status::NoKeyForPurpose => "no active key for this: `openpsd cert request`",
            Status::KeyRevoked => "the key was revoked: request a new certificate",
            Status::ClockRefused => "the clock is missing, went back, or is before the last contact with the back office",
            Status::InspectionOverdue => "inspection overdue: `openpsd inspect`",
            Status::NotNewer => "the PSD holds this or a newer table already",
            Status::CertificateMismatch => "the certificate is not for this key, not from the trusted CA, or not for this purpose",
            Status::TransactionIdReused => "this transaction ID was used for another document",
            _ => "",
        },
        _ => "",
    };
    if why.is_empty() {
        anyhow::Error::new(e).context(format!("{step} failed"))
    } else {
        anyhow!("{step} failed: {e}: {why}")
    }
}
