//! `backoffice ca close-order`: the certificate authority's desk, with the operator's
//! certificate. `close-order SERIAL --reason TEXT` withdraws the revocation order of a
//! revoked certificate that its PSD cannot apply (REVOKE KEY answered `9A41`, an older
//! counter than one it applied, or `9A44`, a slot that no longer or never held the
//! certificate): the order stops being pending and stops blocking the device's refills;
//! the certificate stays revoked (`docs/certmeter.md` § Forced revocation).

use std::path::PathBuf;

use anyhow::{Context, Result};
use openpsd_protocol::ca::{RevocationOrderClosing, RevocationOrderView};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// `backoffice ca …`.
#[derive(clap::Args)]
pub struct CaCmd {
    #[command(subcommand)]
    what: CaWhat,
    /// The certificate authority's base URL (its mutual-TLS listener).
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8706",
        global = true
    )]
    ca: String,
    /// The PKI directory (the operator's certificate and the CA).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum CaWhat {
    /// Close the pending revocation order of certificate SERIAL without the PSD's
    /// confirmation (the PSD cannot apply it): it no longer blocks the device's refills.
    /// The certificate stays revoked. Closing it again answers the same record.
    CloseOrder {
        /// The revoked certificate's serial, hex.
        serial: String,
        /// Why (1 to 200 characters), kept with the order.
        #[arg(long)]
        reason: String,
    },
}

/// Runs the subcommand.
pub async fn run(c: CaCmd) -> Result<()> {
    let pki = Pki::at(c.pki.as_ref().context(
        "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the operator's certificate",
    )?);
    match c.what {
        CaWhat::CloseOrder { serial, reason } => {
            anyhow::ensure!(
                !serial.is_empty()
                    && serial.len() <= 40
                    && serial.bytes().all(|b| b.is_ascii_hexdigit()),
                "serial: 1 to 20 octets of hex"
            );
            let tls = client_config(&pki, Some(Role::Operator))?;
            let up = Upstream::new("certificate authority", &c.ca, Role::Ca, tls)?;
            let serial = serial.to_ascii_lowercase();
            let view: RevocationOrderView = up
                .post(
                    &format!("/v1/certificates/{serial}/revocation-order/close"),
                    &RevocationOrderClosing { reason },
                    "cli",
                )
                .await?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!(
                    "revocation order {} of device {} (certificate {}, slot {}, {}) closed by {}: {}",
                    view.counter,
                    view.device_id,
                    view.serial,
                    view.slot,
                    if view.forced { "forced" } else { "requested" },
                    view.closed_by.as_deref().unwrap_or("-"),
                    view.close_reason.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}
