//! The mailer's side of the issuer's settlement of a transfer that cannot end by itself
//! (issue 18 §1): `openpsd pending` reads the PSD's pending transfer for the issuer, and
//! `openpsd settle` applies the issuer's signed decision (`card-sim settle`) to the PSD on
//! `--card` — in-process, through `card-sim serve --tcp` or PC/SC. The checks and messages
//! are card-sim's issuer station's ([`card_sim::settlement`]), one code for both.

use std::path::Path;

use anyhow::{Context, Result};
use card_sim::settlement::{self, DecisionFile};
use openpsd_core::psd::settle::Decision;
use openpsd_core::types::{Amount, CardId, DeviceId};
use openpsd_host::{open, CardSpec};
use serde_json::json;

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
    let word = match applied {
        Decision::Complete => "completed",
        Decision::Undo => "undone",
    };
    if json_out {
        println!(
            "{}",
            json!({
                "device": DeviceId(d.device).to_string(), "transfer": d.pending.transfer,
                "amount": d.pending.amount, "outcome": word, "set": d.pending.set,
                "dr": r.dr.0, "ar": r.ar.0, "pending": r.pending.0,
                "transferred": r.transferred.0, "control_sum": r.control_sum.0,
            })
        );
    } else {
        println!(
            "PSD {}: transfer {} of {} {word} by the issuer's decision",
            DeviceId(d.device),
            d.pending.transfer,
            Amount(d.pending.amount)
        );
        println!(
            "set {}: DR {} AR {} pending {} transferred {}",
            d.pending.set, r.dr, r.ar, r.pending, r.transferred
        );
    }
    Ok(())
}
