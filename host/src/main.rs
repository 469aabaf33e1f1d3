//! `openpsd`: the mailer's command line for a PSD — its status and registers, and indicia.
//!
//! The card is named with `--card` (or `OPENPSD_CARD`): `state:DIR` (a card-sim card run in
//! this process), `tcp:HOST:PORT` (`card-sim serve --tcp`), or `pcsc:READER` (any PC/SC
//! reader, by name or index; needs the `pcsc` build feature). Refills go through the meter
//! server (`--meter`, `OPENPSD_METER`).

use std::path::PathBuf;
use std::process::ExitCode;

mod commands;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::types::*;
use openpsd_host::{open, CardSpec, PsdClient};
use serde_json::json;

/// openpsd host tool: talk to a postal security device.
#[derive(Parser, Debug)]
#[command(name = "openpsd", version, about, long_about = None)]
struct Cli {
    /// The card: state:DIR, tcp:HOST:PORT or pcsc:READER. The PSD for status, indicium,
    /// inspect and refill (default pcsc:0); the purse for transfer, resolve, purse and pay.
    #[arg(long, env = "OPENPSD_CARD", global = true)]
    card: Option<CardSpec>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The device's identity, limits and every register set.
    Status,
    /// Frank one mail piece: debit the register set, print the signed indicium (verified
    /// against the device's public key) and its fields.
    Indicium {
        /// Postage in currency units, e.g. 0.85.
        #[arg(long)]
        postage: Amount,
        /// Destination postal code.
        #[arg(long)]
        to: String,
        /// Origin postal code (default: the register set's license town).
        #[arg(long)]
        from: Option<String>,
        /// Date of mailing YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<Date>,
        /// Rate category.
        #[arg(long, default_value_t = 1)]
        rate: u16,
        /// Register set (license slot).
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Transaction ID (16 hex digits). Re-use the one printed by a run whose answer was
        /// lost to get the same indicium without a second debit. Default: random.
        #[arg(long)]
        txn: Option<String>,
    },
    /// Have the device inspected: a plain audit, checked by the meter server, whose receipt
    /// renews the PSD's inspection (without it, franking stops after the inspection days).
    Inspect {
        /// The meter server.
        #[arg(long, env = "OPENPSD_METER", default_value = "http://127.0.0.1:8700")]
        meter: String,
        /// Register set to audit.
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// Refill a register set through the meter server (audit, refill message, receipt,
    /// confirmation). An interrupted refill is finished by running again with its --txn.
    Refill {
        /// Amount in currency units, e.g. 25.00.
        #[arg(long)]
        amount: Amount,
        /// The meter server.
        #[arg(long, env = "OPENPSD_METER", default_value = "http://127.0.0.1:8700")]
        meter: String,
        /// Customer account at the recharging center.
        #[arg(long, env = "OPENPSD_ACCOUNT", default_value = "demo")]
        account: String,
        /// Register set (license slot).
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Client transaction ID; default: a new random one (printed).
        #[arg(long)]
        txn: Option<String>,
    },
    /// Move value from a PSD's register set to a purse card (--card): mutual recognition,
    /// the purse's PIN, debit, credit, confirmation. A transfer the PSD still has pending
    /// with this purse is completed or undone first.
    Transfer {
        /// Amount in currency units, e.g. 10.00.
        #[arg(long)]
        amount: Amount,
        /// The PSD: state:DIR, tcp:HOST:PORT or pcsc:READER.
        #[arg(long, env = "OPENPSD_PSD")]
        psd: CardSpec,
        /// Register set (license slot) to take the value from.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// The purse's PIN (default: asked on the terminal, not echoed).
        #[arg(long, env = "OPENPSD_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Benchmark: make N transfers of the amount and print the median and p90 time.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
    },
    /// Complete or undo a transfer the PSD has pending with the purse (--card), without a
    /// new transfer.
    Resolve {
        /// The PSD: state:DIR, tcp:HOST:PORT or pcsc:READER.
        #[arg(long, env = "OPENPSD_PSD")]
        psd: CardSpec,
        /// Register set to show afterwards.
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// A purse card's status (--card): balance, limits, PIN tries left, personality, the
    /// PSDs it was paired with, its log.
    Purse,
    /// Take a payment from a purse (--card) on a merchant terminal: the card's certificate
    /// checked, its PIN, a signed purchase record verified and kept in the terminal's batch.
    Pay {
        /// Amount in currency units, e.g. 2.50.
        #[arg(long)]
        amount: Amount,
        /// The terminal's database (`openpsd terminal init`).
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
        /// Check that the terminal's issuer key is this file's (an issuer key file or a
        /// scheme file).
        #[arg(long, conflicts_with = "scheme")]
        issuer_key: Option<PathBuf>,
        /// Same as --issuer-key, from the scheme file.
        #[arg(long)]
        scheme: Option<PathBuf>,
        /// The purse's PIN (default: asked on the terminal, not echoed).
        #[arg(long, env = "OPENPSD_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Date of the purchase YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<Date>,
    },
    /// A merchant terminal's batch totals: purchases, sum, per card.
    Batch {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL", global = true)]
        terminal: Option<PathBuf>,
        /// Show this batch (default: the open one, else the last closed).
        #[arg(long)]
        seq: Option<i64>,
        #[command(subcommand)]
        action: Option<BatchAction>,
    },
    /// Set up or manage a merchant terminal's database.
    Terminal {
        #[command(subcommand)]
        action: TerminalAction,
    },
}

#[derive(Subcommand, Debug)]
enum BatchAction {
    /// Close the open batch (mark it submitted); the next purchase opens the next one.
    Close,
    /// Import signed purchase records (JSON as `openpsd pay --json` prints them; one
    /// object per line, or one object) after checking them; replays are refused.
    Import {
        /// The file ("-" for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TerminalAction {
    /// Create a terminal database: its ID, its counter, the scheme issuer's public key.
    Init {
        /// The terminal's database (must not hold a terminal yet).
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
        /// Terminal ID: 16 hex digits.
        #[arg(long)]
        id: String,
        /// The scheme file (only its ID and issuer public key are used).
        #[arg(long, required_unless_present = "issuer_key")]
        scheme: Option<PathBuf>,
        /// The issuer key file (`card-sim scheme public`) instead of the scheme file.
        #[arg(long, conflicts_with = "scheme")]
        issuer_key: Option<PathBuf>,
    },
    /// The terminal's ID, scheme, issuer key, counter and any unfinished purchase.
    Show {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
    },
    /// Drop an unfinished purchase (its reply was lost and its card is not coming back).
    Void {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let purse_spec = || {
        cli.card.clone().ok_or_else(|| {
            anyhow!("--card: which purse card? (state:DIR, tcp:HOST:PORT or pcsc:READER)")
        })
    };
    match cli.command {
        Command::Transfer {
            amount,
            psd,
            set,
            pin,
            repeat,
        } => return commands::transfer(&psd, &purse_spec()?, set, amount, pin, repeat, cli.json),
        Command::Resolve { psd, set } => {
            return commands::resolve(&psd, &purse_spec()?, set, cli.json)
        }
        Command::Purse => return commands::purse(&purse_spec()?, cli.json),
        Command::Pay {
            amount,
            terminal,
            issuer_key,
            scheme,
            pin,
            date,
        } => {
            let key = issuer_key.or(scheme);
            return commands::pay(
                &purse_spec()?,
                &terminal,
                key.as_deref(),
                amount,
                pin,
                date,
                cli.json,
            );
        }
        Command::Batch {
            terminal,
            seq,
            action,
        } => {
            let terminal =
                terminal.ok_or_else(|| anyhow!("--terminal: the terminal's database"))?;
            return commands::batch(&terminal, seq, action, cli.json);
        }
        Command::Terminal { action } => return commands::terminal(action, cli.json),
        _ => {}
    }
    let spec = cli.card.clone().unwrap_or(CardSpec::Pcsc("0".into()));
    let transport = open(&spec).with_context(|| format!("opening {spec}"))?;
    let mut psd = PsdClient::new(transport);
    let info = psd
        .select()?
        .ok_or_else(|| anyhow!("{spec} is a blank PSD: personalize it first"))?;
    match cli.command {
        Command::Transfer { .. }
        | Command::Resolve { .. }
        | Command::Purse
        | Command::Pay { .. }
        | Command::Batch { .. }
        | Command::Terminal { .. } => unreachable!("handled above"),
        Command::Status => {
            let mut sets = Vec::new();
            for i in 0..info.register_sets {
                sets.push(psd.registers(RegisterSetIndex(i))?);
            }
            if cli.json {
                let sets: Vec<_> = sets
                    .iter()
                    .map(|r| {
                        json!({
                            "license": r.license.0, "origin": r.origin.to_string(),
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
                for (i, r) in sets.iter().enumerate() {
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
        }
        Command::Inspect { meter, set } => {
            let client = openpsd_host::refill::MeterClient::new(&meter);
            let date = client
                .inspect(&mut psd, info.device, RegisterSetIndex(set))
                .context("inspection")?;
            if cli.json {
                println!("{}", json!({"inspected_on": date.to_string()}));
            } else {
                println!("inspection renewed: the PSD counts from {date}");
            }
        }
        Command::Refill {
            amount,
            meter,
            account,
            set,
            txn,
        } => refill(
            &mut psd,
            info.device,
            cli.json,
            amount,
            &meter,
            account,
            set,
            txn,
        )?,
        Command::Indicium {
            postage,
            to,
            from,
            date,
            rate,
            set,
            txn,
        } => {
            let set = RegisterSetIndex(set);
            let origin = match from {
                Some(f) => postal_code(&f)?,
                None => psd.registers(set)?.origin,
            };
            let date = match date {
                Some(d) => d,
                None => today_utc()
                    .ok_or_else(|| anyhow!("the system clock is before 2000; give --date"))?,
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
            if cli.json {
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
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn refill(
    psd: &mut PsdClient,
    device: DeviceId,
    json_out: bool,
    amount: Amount,
    meter: &str,
    account: String,
    set: u8,
    txn: Option<String>,
) -> Result<()> {
    let client_txn_id = match txn {
        Some(t) => t,
        None => {
            let mut t = [0u8; 8];
            getrandom::fill(&mut t).map_err(|e| anyhow!("random transaction ID: {e}"))?;
            hex::encode(t)
        }
    };
    if !json_out {
        println!("refill {client_txn_id}: {amount} from account {account} via {meter}");
    }
    let req = openpsd_host::refill::RefillRequest {
        client_txn_id: client_txn_id.clone(),
        account_id: account,
        set: RegisterSetIndex(set),
        amount,
    };
    let meter = openpsd_host::refill::MeterClient::new(meter);
    let mut progress = |line: &str| {
        if !json_out {
            println!("  {line}");
        }
    };
    let out = meter
        .refill(psd, device, &req, &mut progress)
        .with_context(|| {
            format!("refill {client_txn_id} (run again with --txn {client_txn_id} to finish it)")
        })?;
    let r = out.registers;
    if json_out {
        println!(
            "{}",
            json!({
                "client_txn_id": client_txn_id, "state": out.state, "inspection_renewed": out.inspection_renewed,
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

/// Days after the last inspection from which the host warns (real meters: ~21 of 28).
const INSPECTION_WARNING_DAYS: u32 = 21;

/// The inspection state as a line for `status`, with a warning when it is due soon.
fn inspection_line(info: &openpsd_core::psd::device::DeviceInfo) -> Option<String> {
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
