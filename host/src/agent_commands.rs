//! `openpsd agent`: the PSD as the customer's agent CA (seed 004, Fig. 3A). With an agent
//! key certified (`openpsd cert request --purpose agent`: a CA certificate constrained to
//! the account's organisation), the PSD certifies employees' keys from their PKCS#10
//! requests, for the agent-certificate fee. Like every paid command it prints the fee, the
//! paying set's registers after it, and the stock `openssl` command that checks the output.
//!
//! Two ways (ISSUE AGENT CERTIFICATE modes 00 and 01): from the employee's own PKCS#10
//! request (`--csr`), or `--generate`: the PSD makes the employee's key and hands it out as
//! an encrypted PKCS#8 (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) under the password in
//! `--password-file`, which `openssl pkcs8 -passin file:F` opens (`docs/certmeter.md`
//! § Agent certificates).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use openpsd_core::psd::certmeter::agent::{
    AgentRequest, GenerateRequest, MAX_CSR_LEN, MAX_PASSWORD_LEN, MIN_PASSWORD_LEN,
};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::types::*;
use openpsd_host::{CardSpec, PsdClient};
use serde_json::json;

use crate::cert_commands::{explain, new_txn, pem, regs_json};
use crate::psd_commands::open_psd;

/// `openpsd agent …`.
#[derive(Subcommand, Debug)]
pub enum AgentAction {
    /// Certify an employee's key from their PKCS#10 request (P-256, e.g. `openssl req -new
    /// -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout emp.key -subj
    /// "/O=openpsd customer <account>/CN=bob" -out emp.csr`). The subject (and any
    /// subjectAltName) must lie within the agent certificate's name constraints; the PSD
    /// writes the rest of the certificate itself.
    ///
    /// Or `--generate --subject "/O=openpsd customer <account>/CN=bob" --password-file F -o
    /// bob.p8 -c bob.pem`: the PSD generates the key (mode 01) and answers it encrypted
    /// under the password (PKCS#8, PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC; `openssl pkcs8
    /// -in bob.p8 -passin file:F` opens it). A retry (`--txn`) needs the same password.
    Issue {
        /// The request (PEM or DER).
        #[arg(
            long,
            required_unless_present = "generate",
            conflicts_with = "generate"
        )]
        csr: Option<PathBuf>,
        /// The PSD generates the employee's key (mode 01) instead of certifying a request.
        #[arg(long, requires_all = ["subject", "password_file", "cert"])]
        generate: bool,
        /// With --generate: the employee's subject, `/O=.../CN=...` (OpenSSL's form) or
        /// RFC 4514 `CN=...,O=...`.
        #[arg(long)]
        subject: Option<String>,
        /// With --generate: the file whose first line is the password (8 to 64 bytes), as
        /// `openssl -passin file:` reads it.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// With --generate: where the certificate goes (PEM).
        #[arg(short = 'c', long)]
        cert: Option<PathBuf>,
        /// Register set that pays the fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Days of validity (default 365), never past the agent certificate's end.
        #[arg(long, default_value_t = 0)]
        days: u16,
        /// Transaction ID of an interrupted issuance to fetch again (16 hex; not charged
        /// twice); default: new.
        #[arg(long)]
        txn: Option<String>,
        /// Where the employee's certificate goes (PEM; default: the request's name with
        /// .cert.pem); with --generate, where the encrypted key goes (PEM `ENCRYPTED PRIVATE
        /// KEY`). The agent certificate is written beside it (`<device>-agent.pem`).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// The CA certificate, for the openssl command printed.
        #[arg(long, default_value = "ca.pem")]
        ca: PathBuf,
    },
}

/// Runs an `openpsd agent` action.
pub fn run(spec: Option<CardSpec>, action: AgentAction, json_out: bool) -> Result<()> {
    match action {
        AgentAction::Issue {
            csr,
            generate: _,
            subject,
            password_file,
            cert,
            set,
            days,
            txn,
            out,
            ca,
        } => match (csr, subject, password_file, cert) {
            (Some(csr), _, _, _) => {
                issue(spec, &csr, set, days, txn.as_deref(), out, &ca, json_out)
            }
            (None, Some(subject), Some(password_file), Some(cert)) => {
                let out = out.ok_or_else(|| anyhow!("--generate needs -o (the encrypted key)"))?;
                let g = Generate {
                    subject,
                    password_file,
                    key_out: out,
                    cert_out: cert,
                };
                generate(spec, &g, set, days, txn.as_deref(), &ca, json_out)
            }
            _ => Err(anyhow!(
                "either --csr, or --generate with --subject, --password-file, -o and -c"
            )),
        },
    }
}

/// The files of `agent issue --generate`.
struct Generate {
    subject: String,
    password_file: PathBuf,
    key_out: PathBuf,
    cert_out: PathBuf,
}

/// The password as `openssl -passin file:` reads it: the first line, without its end.
fn read_password(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let raw = zeroize::Zeroizing::new(
        fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let line = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&line.len()) || line.contains(&0) {
        return Err(anyhow!(
            "{}: the password (its first line) must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes, no NUL",
            path.display()
        ));
    }
    Ok(zeroize::Zeroizing::new(line.to_vec()))
}

fn generate(
    spec: Option<CardSpec>,
    g: &Generate,
    set: u8,
    days: u16,
    txn: Option<&str>,
    ca: &Path,
    json_out: bool,
) -> Result<()> {
    let subject = openpsd_pki::name_der(&g.subject)?;
    let password = read_password(&g.password_file)?;
    if g.key_out == g.cert_out {
        return Err(anyhow!("-o and -c name the same file"));
    }
    let txn = new_txn(txn)?;
    if !json_out {
        eprintln!(
            "agent key and certificate {} (if interrupted, run again with --txn {} and the same password: not charged twice)",
            hex::encode(txn),
            hex::encode(txn)
        );
    }
    let (mut psd, info) = open_psd(spec)?;
    let set_index = RegisterSetIndex(set);
    let req = GenerateRequest {
        transaction: TransactionId(txn),
        days,
        password,
        subject,
        alt_names: None,
    };
    let issued = psd
        .generate_agent_certificate(set_index, &req)
        .map_err(agent_explain)?;
    // The paid outputs first, whatever happens next.
    write(
        &g.key_out,
        pem("ENCRYPTED PRIVATE KEY", &issued.encrypted_key).as_bytes(),
    )?;
    write(
        &g.cert_out,
        pem("CERTIFICATE", &issued.certificate).as_bytes(),
    )?;
    let agent_path = write_agent(&mut psd, &info, &g.cert_out)?;
    let regs = psd.registers(set_index)?;
    let open = format!(
        "openssl pkcs8 -in {} -passin file:{} -out employee.key",
        g.key_out.display(),
        g.password_file.display()
    );
    let check = format!(
        "openssl verify -CAfile {} -untrusted {} {}",
        ca.display(),
        agent_path.display(),
        g.cert_out.display()
    );
    if json_out {
        println!(
            "{}",
            json!({
                "transaction": hex::encode(txn), "certificate": g.cert_out.display().to_string(),
                "encrypted_key": g.key_out.display().to_string(),
                "agent_certificate": agent_path.display().to_string(), "fee": issued.fee.0,
                "registers": regs_json(&regs), "openssl_pkcs8": open, "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "employee certificate {} ({} bytes), key generated by the PSD in {} (encrypted), issued by the agent certificate {}",
        g.cert_out.display(),
        issued.certificate.len(),
        g.key_out.display(),
        agent_path.display()
    );
    println!(
        "fee {}; set {set}: AR {} DR {}",
        issued.fee, regs.ar, regs.dr
    );
    println!("open the key: {open}");
    println!("check it: {check}");
    Ok(())
}

/// Writes the PSD's active agent certificate beside `cert` (`<device>-agent.pem`).
fn write_agent(psd: &mut PsdClient, info: &DeviceInfo, cert: &Path) -> Result<PathBuf> {
    let held = psd.certmeter_info()?;
    let agent = held
        .active(Purpose::AgentCa)
        .ok_or_else(|| anyhow!("the PSD no longer holds an active agent certificate"))?;
    let agent_path = cert
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!("{}-agent.pem", info.device));
    write(
        &agent_path,
        pem("CERTIFICATE", &agent.certificate).as_bytes(),
    )?;
    Ok(agent_path)
}

#[allow(clippy::too_many_arguments)]
fn issue(
    spec: Option<CardSpec>,
    csr_path: &Path,
    set: u8,
    days: u16,
    txn: Option<&str>,
    out: Option<PathBuf>,
    ca: &Path,
    json_out: bool,
) -> Result<()> {
    let raw = fs::read(csr_path).with_context(|| format!("reading {}", csr_path.display()))?;
    let csr =
        openpsd_pki::der_of(&raw).with_context(|| format!("reading {}", csr_path.display()))?;
    if csr.len() > MAX_CSR_LEN {
        return Err(anyhow!(
            "{}: {} bytes, the PSD reads requests up to {MAX_CSR_LEN}",
            csr_path.display(),
            csr.len()
        ));
    }
    let txn = new_txn(txn)?;
    if !json_out {
        eprintln!(
            "agent certificate {} (if interrupted, run again with --txn {}: not charged twice)",
            hex::encode(txn),
            hex::encode(txn)
        );
    }
    let (mut psd, info) = open_psd(spec)?;
    let set_index = RegisterSetIndex(set);
    let req = AgentRequest {
        transaction: TransactionId(txn),
        days,
        csr,
    };
    let issued = psd
        .issue_agent_certificate(set_index, &req)
        .map_err(agent_explain)?;
    // The certificate first: it is the paid output, whatever happens next.
    let out = out.unwrap_or_else(|| csr_path.with_extension("cert.pem"));
    if out == csr_path {
        return Err(anyhow!("-o {}: that is the request", out.display()));
    }
    write(&out, pem("CERTIFICATE", &issued.certificate).as_bytes())?;
    let held = psd.certmeter_info()?;
    let agent = held
        .active(Purpose::AgentCa)
        .ok_or_else(|| anyhow!("the PSD no longer holds an active agent certificate"))?;
    let agent_path = out
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!("{}-agent.pem", info.device));
    write(
        &agent_path,
        pem("CERTIFICATE", &agent.certificate).as_bytes(),
    )?;
    let regs = psd.registers(set_index)?;
    let check = format!(
        "openssl verify -CAfile {} -untrusted {} {}",
        ca.display(),
        agent_path.display(),
        out.display()
    );
    if json_out {
        println!(
            "{}",
            json!({
                "transaction": hex::encode(txn), "certificate": out.display().to_string(),
                "agent_certificate": agent_path.display().to_string(), "fee": issued.fee.0,
                "registers": regs_json(&regs), "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "employee certificate {} ({} bytes), issued by the agent certificate {}",
        out.display(),
        issued.certificate.len(),
        agent_path.display()
    );
    println!(
        "fee {}; set {set}: AR {} DR {}",
        issued.fee, regs.ar, regs.dr
    );
    println!("check it: {check}");
    Ok(())
}

/// The refusals particular to ISSUE AGENT CERTIFICATE, then the certificate meter's.
fn agent_explain(e: openpsd_core::client::ClientError) -> anyhow::Error {
    use openpsd_core::client::ClientError;
    use openpsd_core::Status;
    let why = match &e {
        ClientError::Refused(_, _, Status::NameOutsideConstraints) => {
            "the request names someone outside the agent certificate's name constraints (the \
             subject must start with your organisation, `O=openpsd customer <account>`)"
        }
        ClientError::Refused(_, _, Status::WrongData) => {
            "not a PKCS#10 request with a P-256 key signed by it (ECDSA-SHA256)"
        }
        ClientError::Refused(_, _, Status::TransactionIdReused) => {
            "that transaction ID was another request (or, with --generate, another password \
             or validity): only the same request and password fetch it again"
        }
        ClientError::Refused(_, _, Status::NoKeyForPurpose) => {
            "no active agent key: `openpsd cert request --purpose agent`"
        }
        _ => "",
    };
    if why.is_empty() {
        explain(e, "issuing the agent certificate")
    } else {
        anyhow!("issuing the agent certificate failed: {e}: {why}")
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut f = fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
