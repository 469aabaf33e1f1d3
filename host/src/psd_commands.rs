//! The `openpsd` commands that talk to the PSD alone: `status`, `inspect`, `refill` and
//! `indicium`, each over core's typed client ([`PsdClient`]) on the card `--card` names.

use crate::account_commands::{meter_client, MeterArgs};
use anyhow::{anyhow, Context, Result};
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::types::*;
use openpsd_host::{open, CardSpec, PsdClient};
use serde_json::json;

/// Opens the PSD `spec` names (default: the first PC/SC reader) and reads its identity.
pub fn open_psd(spec: Option<CardSpec>) -> Result<(PsdClient, DeviceInfo)> {
    let spec = spec.unwrap_or(CardSpec::Pcsc("0".into()));
    let link = open(&spec).with_context(|| format!("opening {spec}"))?;
    let mut psd = PsdClient::new(link);
    let info = psd
        .select()?
        .ok_or_else(|| anyhow!("{spec} is a blank PSD: personalize it first"))?;
    Ok((psd, info))
}

/// `openpsd status`.
pub fn status(spec: Option<CardSpec>, json_out: bool) -> Result<()> {
    let (mut psd, info) = open_psd(spec)?;
    let cli_json = json_out;
    let mut sets = Vec::new();
    for i in 0..info.register_sets {
        // A free slot (a set exported, or never used) answers 6A88: skipped.
        match psd.registers(RegisterSetIndex(i)) {
            Ok(r) => sets.push((i, r)),
            Err(openpsd_host::ClientError::Refused(
                _,
                _,
                openpsd_core::Status::ReferencedDataNotFound,
            )) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if cli_json {
        let sets: Vec<_> = sets
            .iter()
            .map(|(i, r)| {
                json!({
                    "slot": i, "license": r.license.0, "origin": r.origin.to_string(),
                    "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0,
                    "pieces": r.pieces.0, "refills": r.refills.0,
                    "transferred": r.transferred.0, "pending": r.pending.0,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "device_id": info.device.to_string(), "key_id": hex::encode(info.key_id.0),
                "public_key": hex::encode(info.public_key), "max_postage": info.max_postage.0,
            "inspection_days": info.inspection_days,
            "last_inspection": info.last_inspection.map(|d| d.to_string()),
                "max_dr": info.max_dr.0, "last_date": info.last_date.map(|d| d.to_string()),
                "register_sets": sets,
            })
        );
    } else {
        println!(
            "device {}  key ID {}",
            info.device,
            hex::encode(info.key_id.0)
        );
        println!(
            "limits: {} per piece, DR at most {}",
            info.max_postage, info.max_dr
        );
        if let Some(d) = info.last_date {
            println!("last date of mailing {d}");
        }
        if let Some(line) = inspection_line(&info) {
            println!("{line}");
        }
        for (i, r) in &sets {
            println!(
                "set {i}: license {} origin {}  AR {}  DR {}  control sum {}  pieces {}  refills {}",
                r.license, r.origin, r.ar, r.dr, r.control_sum, r.pieces.0, r.refills.0
            );
            if r.transferred != Amount::ZERO || r.pending != Amount::ZERO {
                println!(
                    "       moved out to purses {}  pending transfer {}",
                    r.transferred, r.pending
                );
            }
        }
    }

    Ok(())
}

/// `openpsd inspect`.
pub fn inspect(spec: Option<CardSpec>, meter: &MeterArgs, set: u8, json_out: bool) -> Result<()> {
    let client = meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    // Forced revocation: the meter's pending orders first (docs/certmeter.md).
    let mut say = |line: &str| {
        if !json_out {
            println!("  {line}");
        }
    };
    // Not getting through them does not stop the inspection (the meter refuses refills,
    // not inspections, while an order is overdue).
    let revocations = client
        .apply_revocations(&mut psd, info.device, RegisterSetIndex(set), &mut say)
        .unwrap_or_else(|e| {
            say(&format!("pending revocation orders not applied: {e}"));
            Vec::new()
        });
    let date = client
        .inspect(&mut psd, info.device, RegisterSetIndex(set))
        .context("inspection")?;
    let updates = updates_line(&client, &mut psd, info.device);
    if json_out {
        println!(
            "{}",
            json!({
                "inspected_on": date.to_string(), "updates": updates,
                "revocations": revocations_json(&revocations),
            })
        );
    } else {
        println!("inspection renewed: the PSD counts from {date}");
        println!("{updates}");
    }

    Ok(())
}

/// What `openpsd indicium` asks for.
#[derive(clap::Args, Debug)]
pub struct IndiciumArgs {
    /// Postage in currency units, e.g. 0.85.
    #[arg(long)]
    pub postage: Amount,
    /// Destination postal code.
    #[arg(long)]
    pub to: String,
    /// Origin postal code (default: the register set's license town).
    #[arg(long)]
    pub from: Option<String>,
    /// Date of mailing YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    pub date: Option<Date>,
    /// Rate category.
    #[arg(long, default_value_t = 1)]
    pub rate: u16,
    /// Register set (license slot).
    #[arg(long, default_value_t = 0)]
    pub set: u8,
    /// Transaction ID (16 hex digits). Re-use the one printed by a run whose answer was
    /// lost to get the same indicium without a second debit. Default: random.
    #[arg(long)]
    pub txn: Option<String>,
}

/// `openpsd indicium`.
pub fn indicium(spec: Option<CardSpec>, args: IndiciumArgs, json_out: bool) -> Result<()> {
    let (mut psd, _) = open_psd(spec)?;
    let IndiciumArgs {
        postage,
        to,
        from,
        date,
        rate,
        set,
        txn,
    } = args;
    let set = RegisterSetIndex(set);
    let origin = match from {
        Some(f) => postal_code(&f)?,
        None => psd.registers(set)?.origin,
    };
    let date = match date {
        Some(d) => d,
        None => {
            today_utc().ok_or_else(|| anyhow!("the system clock is before 2000; give --date"))?
        }
    };
    let transaction = match txn {
        Some(t) => TransactionId(
            hex::decode(&t)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--txn: 16 hex digits"))?,
        ),
        None => {
            let mut t = [0u8; 8];
            getrandom::fill(&mut t).map_err(|e| anyhow!("random transaction ID: {e}"))?;
            TransactionId(t)
        }
    };
    let req = IndiciumRequest {
        transaction,
        postage,
        date,
        rate: RateCategory(rate),
        origin,
        destination: postal_code(&to)?,
    };
    let (bytes, d) = psd.issue_indicium(set, &req).with_context(|| {
        format!(
            "transaction {} (re-run with --txn {} if the answer was lost)",
            hex::encode(transaction.0),
            hex::encode(transaction.0)
        )
    })?;
    if json_out {
        println!(
            "{}",
            json!({
                "transaction": hex::encode(transaction.0), "indicium": hex::encode(&bytes),
                "verified": true, "device_id": d.device.to_string(), "license": d.license.0,
                "postage": d.postage.0, "date": d.date.to_string(), "origin": d.origin.to_string(),
                "destination": d.destination.to_string(), "rate": d.rate.0,
                "ar": d.ar.0, "dr": d.dr.0, "pieces": d.pieces.0,
            })
        );
    } else {
        println!("indicium {}", hex::encode(&bytes));
        println!(
            "verified: device {} license {} postage {} date {} {} -> {} rate {} | AR {} DR {} piece {}",
            d.device, d.license, d.postage, d.date, d.origin, d.destination, d.rate.0, d.ar, d.dr, d.pieces.0
        );
        println!("transaction {}", hex::encode(transaction.0));
    }
    Ok(())
}

/// `openpsd refill`.
/// `openpsd refill --cancel TXN`: cancels an outstanding refill (the meter's void applied
/// on the PSD if its message had left) and prints how it ended.
pub fn cancel_refill(
    spec: Option<CardSpec>,
    json_out: bool,
    meter: &MeterArgs,
    txn: &str,
) -> Result<()> {
    let meter = meter_client(meter)?;
    let (mut psd, _) = open_psd(spec)?;
    let mut progress = |line: &str| {
        if !json_out {
            println!("  {line}");
        }
    };
    let out = meter
        .cancel(&mut psd, txn, &mut progress)
        .with_context(|| format!("cancel {txn} (run again to finish it)"))?;
    let r = out.registers;
    if json_out {
        println!(
            "{}",
            json!({
                "client_txn_id": txn, "state": out.state,
                "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0, "refills": r.refills.0,
            })
        );
    } else {
        println!(
            "{}: DR {} control sum {} refills {}",
            out.state, r.dr, r.control_sum, r.refills.0
        );
    }
    Ok(())
}

pub fn refill(
    spec: Option<CardSpec>,
    json_out: bool,
    amount: Amount,
    meter: &MeterArgs,
    account: Option<String>,
    set: u8,
    txn: Option<String>,
) -> Result<()> {
    let meter = meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    let client_txn_id = match txn {
        Some(t) => t,
        None => {
            let mut t = [0u8; 8];
            getrandom::fill(&mut t).map_err(|e| anyhow!("random transaction ID: {e}"))?;
            hex::encode(t)
        }
    };
    if !json_out {
        let from = account.as_deref().unwrap_or("the device's owner account");
        println!(
            "refill {client_txn_id}: {amount} from {from} via {}",
            meter.base()
        );
    }
    let req = openpsd_host::refill::RefillRequest {
        client_txn_id: client_txn_id.clone(),
        account_id: account,
        set: RegisterSetIndex(set),
        amount,
    };
    let mut progress = |line: &str| {
        if !json_out {
            println!("  {line}");
        }
    };
    let out = meter
        .refill(&mut psd, info.device, &req, &mut progress)
        .with_context(|| {
            format!("refill {client_txn_id} (run again with --txn {client_txn_id} to finish it)")
        })?;
    let r = out.registers;
    let updates = updates_line(&meter, &mut psd, info.device);
    if json_out {
        println!(
            "{}",
            json!({
                "client_txn_id": client_txn_id, "state": out.state, "inspection_renewed": out.inspection_renewed,
                "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0, "refills": r.refills.0,
                "updates": updates, "revocations": revocations_json(&out.revocations),
            })
        );
    } else {
        println!(
            "{}: DR {} control sum {} refills {}",
            out.state, r.dr, r.control_sum, r.refills.0
        );
        println!("{updates}");
    }
    Ok(())
}

/// The revocation orders applied at a contact, as JSON: counter, serial, slot, reason and
/// either the fee paid or due (and its set) or the PSD's refusal.
fn revocations_json(list: &[openpsd_host::refill::AppliedRevocation]) -> serde_json::Value {
    list.iter()
        .map(|a| {
            let mut v = json!({
                "counter": a.counter, "serial": a.serial, "slot": a.slot, "reason": a.reason,
            });
            match &a.result {
                Ok(c) => {
                    v["outcome"] = json!(openpsd_host::refill::outcome_name(c.outcome));
                    v["fee"] = json!(c.fee.0);
                    v["set"] = json!(c.set);
                }
                Err(e) => v["refused"] = json!(e),
            }
            v
        })
        .collect()
}

/// After a contact with the meter server: its rate tables and trust anchors loaded into the
/// PSD (seed 004, step 257), as a line to show. A failure here does not undo the refill or
/// inspection that succeeded; the line says what happened.
fn updates_line(
    meter: &openpsd_host::refill::MeterClient,
    psd: &mut PsdClient,
    device: DeviceId,
) -> String {
    match meter.load_updates(psd, device) {
        Ok((0, 0)) => "rate tables and trust anchors up to date".to_owned(),
        Ok((t, a)) => {
            format!("loaded {t} rate table(s) and {a} trust anchor(s) from the meter server")
        }
        Err(e) => format!("rate tables not updated: {e}"),
    }
}

/// Days after the last inspection from which the host warns (real meters: ~21 of 28).
const INSPECTION_WARNING_DAYS: u32 = 21;

/// The inspection state as a line for `status`, with a warning when it is due soon.
fn inspection_line(info: &DeviceInfo) -> Option<String> {
    if info.inspection_days == 0 {
        return None;
    }
    let days = u32::from(info.inspection_days);
    let Some(last) = info.last_inspection else {
        return Some(
            "inspection: never — franking is blocked until the back office accepts an audit (openpsd refill or openpsd inspect)"
                .to_string(),
        );
    };
    let due = last.plus_days(days)?;
    let today = today_utc()?;
    let elapsed = today.day_number().saturating_sub(last.day_number());
    let state = if elapsed > days {
        "OVERDUE: franking is blocked until the back office accepts an audit".to_string()
    } else if elapsed >= INSPECTION_WARNING_DAYS {
        format!(
            "warning: due in {} day(s) — refill or have the device inspected",
            days - elapsed
        )
    } else {
        "ok".to_string()
    };
    Some(format!(
        "inspection: last {last}, every {days} days, due by {due}: {state}"
    ))
}

fn postal_code(s: &str) -> Result<PostalCode> {
    PostalCode::new(s.as_bytes())
        .ok_or_else(|| anyhow!("'{s}': a postal code is 1-10 of A-Z 0-9 space -"))
}

/// Today's UTC date from the system clock (`None` before 2000).
pub(crate) fn today_utc() -> Option<Date> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Date::from_unix_seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openpsd_core::psd::device::DeviceInfo;

    fn info(days: u16, last: Option<Date>) -> DeviceInfo {
        DeviceInfo {
            device: DeviceId(*b"PSD00001"),
            key_id: KeyId([0; 4]),
            public_key: [4; 65],
            vendor_public_key: [4; 65],
            max_postage: Amount(100),
            max_dr: Amount(1000),
            register_sets: 1,
            last_date: None,
            inspection_days: days,
            last_inspection: last,
        }
    }

    #[test]
    fn inspection_lines() {
        assert_eq!(
            inspection_line(&info(0, None)),
            None,
            "no inspection configured"
        );
        assert!(inspection_line(&info(28, None)).unwrap().contains("never"));
        let old = inspection_line(&info(28, Date::new(2001, 1, 1))).unwrap();
        assert!(
            old.contains("due by 2001-01-29") && old.contains("OVERDUE"),
            "{old}"
        );
    }
}
