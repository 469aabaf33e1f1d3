//! `backoffice creditor limit|revoke|present`: the creditor's desk (seed 004 Figs. 7-9, `docs/
//! creditor.md`). `limit` grants a customer account a credit limit with the operator's
//! certificate; `revoke` revokes a line with it; `present` presents payment certificates (DER files, as `openpsd credit pay`
//! writes them) for settlement with a merchant's certificate (`backoffice init --merchant
//! ID`), in the order given, and prints each settlement record.

use std::path::PathBuf;

use anyhow::{Context, Result};
use openpsd_protocol::creditor::{
    LimitRequest, LimitView, RevokeLineRequest, RevokedLine, Settlement, SettlementRequest,
};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, merchant_client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// `backoffice creditor …`.
#[derive(clap::Args)]
pub struct CreditorCmd {
    #[command(subcommand)]
    what: CreditorWhat,
    /// The creditor's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8708",
        global = true
    )]
    creditor: String,
    /// The PKI directory (the operator's or the merchant's certificate, and the CA).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum CreditorWhat {
    /// Grant ACCOUNT a credit limit (the operator's certificate): the amounts of every line
    /// it was ever granted (any device; superseded and expired lines too: nothing is repaid)
    /// stay at or under it. A limit below them, or 0, grants no new line.
    Limit {
        /// The customer account (the recharging center's account ID).
        account: String,
        /// The limit, in minor units.
        #[arg(long)]
        amount: u64,
        /// ISO 4217 currency of the lines.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// Revoke a line of credit (the operator's certificate): payments dated from now on are
    /// not settled, earlier ones still are; the line still counts against the limit.
    Revoke {
        /// The line's hash (SHA-256 of its certificate, hex: a settlement record's
        /// line_hash).
        line_hash: String,
    },
    /// Present payment certificates for settlement, as merchant ID (its certificate
    /// merchant-ID.crt in the PKI). Present a line's payments in counter order: a gap is
    /// refused.
    Present {
        /// The merchant (its certificate names it; the payments must name it too).
        #[arg(long, value_name = "ID")]
        merchant: String,
        /// Payment certificates, DER (`openpsd credit pay` writes payment-TXN.der).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs the subcommand.
pub async fn run(c: CreditorCmd) -> Result<()> {
    let pki = Pki::at(c.pki.as_ref().context(
        "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the caller's certificate",
    )?);
    match c.what {
        CreditorWhat::Limit {
            account,
            amount,
            currency,
        } => {
            let tls = client_config(&pki, Some(Role::Operator))?;
            let up = Upstream::new("creditor", &c.creditor, Role::Creditor, tls)?;
            let view: LimitView = up
                .post(
                    "/v1/limits",
                    &LimitRequest {
                        account_id: account,
                        limit: amount,
                        currency,
                    },
                    "cli",
                )
                .await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!(
                    "account {}: credit limit {} {}",
                    view.account_id, view.limit, view.currency
                );
            }
        }
        CreditorWhat::Revoke { line_hash } => {
            let tls = client_config(&pki, Some(Role::Operator))?;
            let up = Upstream::new("creditor", &c.creditor, Role::Creditor, tls)?;
            let view: RevokedLine = up
                .post("/v1/lines/revoke", &RevokeLineRequest { line_hash }, "cli")
                .await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!(
                    "line {} of account {} (number {}) revoked at {}: payments dated from then \
                     on are refused",
                    view.line_hash, view.account_id, view.number, view.revoked_at
                );
            }
        }
        CreditorWhat::Present { merchant, files } => {
            let tls = merchant_client_config(&pki, &merchant)?;
            let up = Upstream::new("creditor", &c.creditor, Role::Creditor, tls)?;
            let mut out = Vec::new();
            for f in &files {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let s: Settlement = up
                    .post(
                        "/v1/settlements",
                        &SettlementRequest {
                            payment: hex::encode(&bytes),
                        },
                        "cli",
                    )
                    .await
                    .with_context(|| format!("presenting {}", f.display()))?;
                if !c.json {
                    println!(
                        "{}: settled payment {} of line {}…: {} {} for order {}, remaining {}; \
                         record signed by the creditor ({}…)",
                        f.display(),
                        s.counter,
                        &s.line_hash[..16],
                        s.amount,
                        s.currency,
                        s.order,
                        s.remaining,
                        &s.signature[..16]
                    );
                }
                out.push(s);
            }
            if c.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
        }
    }
    Ok(())
}
