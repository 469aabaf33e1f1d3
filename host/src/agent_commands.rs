//! `openpsd agent`: the PSD as the customer's agent CA (seed 004, Fig. 3A). With an agent
//! key certified (`openpsd cert request --purpose agent`: a CA certificate constrained to
//! the account's organisation), the PSD certifies employees' keys from their PKCS#10
//! requests, for the agent-certificate fee. Like every paid command it prints the fee, the
//! paying set's registers after it, and the stock `openssl` command that checks the output.
//!
//! Only requests made by the employee are built (ISSUE AGENT CERTIFICATE mode 00): the
//! seed's mode where the PSD generates the employee's key and hands it out is not
//! (`docs/certmeter.md` § Agent certificates).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use openpsd_core::psd::certmeter::agent::{AgentRequest, MAX_CSR_LEN};
use openpsd_core::psd::certmeter::attestation::Purpose;
use openpsd_core::types::*;
use openpsd_host::CardSpec;
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
    Issue {
        /// The request (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
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
        /// .cert.pem). The agent certificate is written beside it (`<device>-agent.pem`).
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
            set,
            days,
            txn,
            out,
            ca,
        } => issue(spec, &csr, set, days, txn.as_deref(), out, &ca, json_out),
    }
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
