//! The mailer's side of the issuer's settlement of a transfer that cannot end by itself
//! (issue 18 §1): `openpsd pending` reads the PSD's pending transfer for the issuer, and
//! `openpsd settle` applies the issuer's signed decision (`card-sim settle`) to the PSD on
//! `--card` — in-process, through `card-sim serve --tcp` or PC/SC. The checks and messages
//! are card-sim's issuer station's ([`card_sim::settlement`]), one code for both.

use std::path::Path;

use anyhow::{Context, Result};
use card_sim::settlement::{self, DecisionFile};
use openpsd_core::types::{Amount, CardId, DeviceId};
use openpsd_host::{open, CardSpec};

fn psd_link(spec: Option<CardSpec>) -> Result<Box<dyn openpsd_core::client::Link>> {
    let spec = spec.unwrap_or(CardSpec::Pcsc("0".into()));
    open(&spec).with_context(|| format!("opening the PSD at {spec}"))
}

/// `openpsd pending [--out FILE]`: the report the issuer's `card-sim settle --pending`
/// reads.
pub fn pending(spec: Option<CardSpec>, out: Option<&Path>, json_out: bool) -> Result<()> {
    let report = settlement::read_pending(&mut *psd_link(spec)?)?;
    let text = serde_json::to_string_pretty(&report)? + "\n";
    if let Some(path) = out {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json_out {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let device = DeviceId(report.device);
    match report.pending {
        None => println!("PSD {device}: nothing pending"),
        Some(p) => println!(
            "PSD {device}: transfer {} of {} to purse {} pending (set {}): send the report to \
             the scheme issuer",
            p.transfer,
            Amount(p.amount),
            CardId(p.card),
            p.set
        ),
    }
    Ok(())
}

/// `openpsd settle DECISION`: the issuer's decision applied to the PSD.
pub fn settle(spec: Option<CardSpec>, decision: &Path, json_out: bool) -> Result<()> {
    let d = DecisionFile::read(decision)?;
    let (applied, r) = settlement::apply(&mut *psd_link(spec)?, &d)?;
    let wording = settlement::AppliedWording::Openpsd;
    let report = settlement::applied_report(&d, applied, &r, wording, json_out);
    println!("{report}");
    Ok(())
}
