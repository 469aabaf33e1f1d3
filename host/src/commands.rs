//! The `openpsd` commands for value transfer and merchant terminals: transfer, resolve,
//! purse, pay, batch, terminal.

use std::io::BufRead as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::client::transfer::{self as driver, Resolved, TransferOutcome};
use openpsd_core::client::{Link, LinkError, PsdClient, PurseClient, PurseStatus};
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::transfer::TransferInfo;
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::purse::state::LogKind;
use openpsd_core::types::{Amount, Date, RegisterSetIndex, TerminalId};
use openpsd_host::purse::explain;
use openpsd_host::terminal::{BatchSummary, Payment, RecordExport, Terminal};
use openpsd_host::CardSpec;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::{BatchAction, TerminalAction};

fn link(spec: &CardSpec, what: &str) -> Result<TestLink> {
    let inner =
        openpsd_host::open(spec).with_context(|| format!("opening the {what} at {spec}"))?;
    Ok(TestLink {
        inner,
        abort_after: std::env::var(ABORT_ENV)
            .ok()
            .and_then(|v| u8::from_str_radix(v.trim(), 16).ok()),
    })
}

/// Test hook for the interruption tests (`scripts/pcsc-transfer-test.sh`): with
/// `OPENPSD_TEST_ABORT_AFTER=64` (an INS byte in hex: 64 TRANSFER DEBIT, 76 TRANSFER
/// CREDIT) the host exits as if it crashed, right after the card answered that command.
const ABORT_ENV: &str = "OPENPSD_TEST_ABORT_AFTER";

/// A card's link with the test hook.
struct TestLink {
    inner: Box<dyn Link>,
    abort_after: Option<u8>,
}

impl Link for TestLink {
    fn transmit(&mut self, apdu: &[u8]) -> std::result::Result<Vec<u8>, LinkError> {
        let resp = self.inner.transmit(apdu)?;
        if let Some(ins) = self.abort_after {
            if apdu.get(1) == Some(&ins) && resp.ends_with(&[0x90, 0x00]) {
                eprintln!("{ABORT_ENV}: host stops after INS {ins:02X}");
                std::process::exit(3);
            }
        }
        Ok(resp)
    }
}

/// The PIN from the option, or asked on the terminal without echo.
fn pin_or_prompt(pin: Option<String>, card: &PurseInfo) -> Result<Zeroizing<Vec<u8>>> {
    let pin = match pin {
        Some(p) => p,
        None => rpassword::prompt_password(format!(
            "PIN for purse {} ({} tries left): ",
            card.card, card.pin_tries_left
        ))
        .context("reading the PIN from the terminal (or give --pin / OPENPSD_PIN)")?,
    };
    let pin = Zeroizing::new(pin.trim_end_matches(['\r', '\n']).as_bytes().to_vec());
    if !(4..=12).contains(&pin.len()) {
        bail!("a PIN has 4 to 12 characters");
    }
    Ok(pin)
}

fn registers_json(r: &Registers) -> Value {
    json!({
        "license": r.license.0, "ar": r.ar.0, "dr": r.dr.0, "control_sum": r.control_sum.0,
        "transferred": r.transferred.0, "pending": r.pending.0, "pieces": r.pieces.0,
        "refills": r.refills.0,
    })
}

fn registers_line(set: u8, r: &Registers) -> String {
    format!(
        "PSD set {set}: AR {}  DR {}  transferred {}  pending {}  control sum {}",
        r.ar, r.dr, r.transferred, r.pending, r.control_sum
    )
}

fn psd_json(t: &TransferInfo) -> Value {
    let s = &t.state;
    json!({
        "scheme": t.scheme.0, "transfers_started": s.started.0, "transfers_completed": s.completed.0,
        "total_out": s.total_out.0, "failures": s.failures, "max_failures": t.max_failures,
        "last_date": s.last_date.map(|d| d.to_string()),
        "pending": s.pending.map(|p| json!({
            "card_id": p.card.to_string(), "set": p.set, "transfer": p.transfer.0, "amount": p.amount.0,
        })),
    })
}

fn purse_json(i: &PurseInfo) -> Value {
    json!({
        "card_id": i.card.to_string(), "scheme": i.scheme.0, "balance": i.balance.0,
        "max_balance": i.max_balance.0, "max_transfer": i.max_transfer.0,
        "transfers": i.transfers.0, "total_in": i.total_in.0,
        "last_transfer": i.last_transfer.map(|d| d.to_string()), "purchases": i.purchases,
        "pin_tries_left": i.pin_tries_left, "pin_tries": i.pin_tries,
        "failures": i.failures, "max_failures": i.max_failures,
        "public_key": hex::encode(i.public_key), "certified": i.certificate.is_some(),
    })
}

fn purse_line(i: &PurseInfo) -> String {
    let last = i
        .last_transfer
        .map_or(String::new(), |d| format!(", last {d}"));
    format!(
        "purse {}: balance {}  (received {} in {} transfers{last}; {} purchases)",
        i.card, i.balance, i.total_in, i.transfers.0, i.purchases
    )
}

fn resolved_word(r: Resolved) -> &'static str {
    match r {
        Resolved::Completed => "completed",
        Resolved::Undone => "undone",
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // why: `p` is 0.5 or 0.9 and `sorted` holds at least one time, so the rank is in
    // 0..len (and a float-to-integer cast saturates, never wraps).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `openpsd transfer`.
pub fn transfer(
    psd_spec: &CardSpec,
    purse_spec: &CardSpec,
    set: u8,
    amount: Amount,
    pin: Option<String>,
    repeat: u32,
    json_out: bool,
) -> Result<()> {
    if amount == Amount::ZERO {
        bail!("--amount must be more than zero");
    }
    let mut psd = link(psd_spec, "PSD")?;
    let mut purse = link(purse_spec, "purse")?;
    let device = PsdClient::new(&mut psd)
        .select()
        .map_err(|e| anyhow!(explain(&e)))?
        .ok_or_else(|| anyhow!("{psd_spec} is a blank PSD"))?;
    let card = driver::purse_info(&mut purse)
        .map_err(|e| anyhow!(explain(&e)))?
        .ok_or_else(|| anyhow!("{purse_spec} is a blank purse"))?;
    let pin = pin_or_prompt(pin, &card)?;
    let mut times = Vec::with_capacity(repeat as usize);
    let mut last: Option<TransferOutcome> = None;
    let mut resolved_first = None;
    // A bar for a run of transfers (a benchmark through pcscd takes seconds to minutes).
    let pb = if repeat > 1 {
        crate::progress::bar(u64::from(repeat), "transfers", json_out, false)
    } else {
        indicatif::ProgressBar::hidden()
    };
    for i in 0..repeat {
        let t0 = Instant::now();
        let out = driver::transfer(&mut psd, &mut purse, RegisterSetIndex(set), amount, &pin)
            .map_err(|e| {
                pb.finish_and_clear();
                let done = if i > 0 {
                    format!(" (after {i} transfers)")
                } else {
                    String::new()
                };
                anyhow!("transfer refused{done}: {}", explain(&e))
            })?;
        times.push(t0.elapsed());
        if resolved_first.is_none() {
            resolved_first = out.resolved_first;
        }
        last = Some(out);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let out = last.ok_or_else(|| anyhow!("no transfer made"))?;
    let info = driver::psd_transfer_info(&mut psd).map_err(|e| anyhow!(explain(&e)))?;
    let mut sorted = times.clone();
    sorted.sort();
    let (median, p90) = (percentile(&sorted, 0.5), percentile(&sorted, 0.9));
    if json_out {
        let mut v = json!({
            "amount": amount.0, "transfers": repeat, "psd_device": device.device.to_string(), "set": set,
            "resolved_first": resolved_first.map(|(r, a)| json!({"outcome": resolved_word(r), "amount": a.0})),
            "registers": registers_json(&out.registers), "psd": psd_json(&info),
            "purse": purse_json(&out.purse),
        });
        if repeat > 1 {
            v["median_ms"] = json!(median.as_secs_f64() * 1e3);
            v["p90_ms"] = json!(p90.as_secs_f64() * 1e3);
        }
        println!("{v}");
        return Ok(());
    }
    if let Some((r, a)) = resolved_first {
        println!(
            "first: the pending transfer of {a} to this purse was {}",
            resolved_word(r)
        );
    }
    if repeat > 1 {
        println!(
            "{repeat} transfers of {amount} from PSD {} to purse {}",
            device.device, out.purse.card
        );
    } else {
        println!(
            "transferred {amount} from PSD {} set {set} to purse {}",
            device.device, out.purse.card
        );
    }
    println!("{}", registers_line(set, &out.registers));
    println!(
        "PSD personality: {} transfers started, {} completed, {} moved out{}",
        info.state.started.0,
        info.state.completed.0,
        info.state.total_out,
        info.state
            .last_date
            .map_or(String::new(), |d| format!(", last {d}"))
    );
    println!("{}", purse_line(&out.purse));
    if repeat > 1 {
        println!(
            "transfer time: median {:.2} ms  p90 {:.2} ms  (n = {repeat})",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// `openpsd resolve`.
pub fn resolve(psd_spec: &CardSpec, purse_spec: &CardSpec, set: u8, json_out: bool) -> Result<()> {
    let mut psd = link(psd_spec, "PSD")?;
    let mut purse = link(purse_spec, "purse")?;
    let outcome =
        driver::resolve_pending(&mut psd, &mut purse).map_err(|e| anyhow!(explain(&e)))?;
    let info = driver::psd_transfer_info(&mut psd).map_err(|e| anyhow!(explain(&e)))?;
    let regs = PsdClient::new(&mut psd)
        .registers(RegisterSetIndex(set))
        .map_err(|e| anyhow!(explain(&e)))?;
    let card = driver::purse_info(&mut purse)
        .map_err(|e| anyhow!(explain(&e)))?
        .ok_or_else(|| anyhow!("{purse_spec} is a blank purse"))?;
    if json_out {
        println!(
            "{}",
            json!({
                "resolved": outcome.map(|(r, a)| json!({"outcome": resolved_word(r), "amount": a.0})),
                "registers": registers_json(&regs), "psd": psd_json(&info), "purse": purse_json(&card),
            })
        );
        return Ok(());
    }
    match outcome {
        None => println!("nothing pending between this PSD and this purse"),
        Some((r, a)) => println!("the pending transfer of {a} was {}", resolved_word(r)),
    }
    println!("{}", registers_line(set, &regs));
    println!("{}", purse_line(&card));
    Ok(())
}

/// `openpsd purse`.
pub fn purse(spec: &CardSpec, json_out: bool) -> Result<()> {
    let mut purse = link(spec, "purse")?;
    let PurseStatus { info, paired, log } = PurseClient::new(&mut purse)
        .status()
        .map_err(|e| anyhow!(explain(&e)))?;
    let kind = |k: LogKind| match k {
        LogKind::Credit => "credit",
        LogKind::Purchase => "purchase",
    };
    if json_out {
        let mut v = purse_json(&info);
        v["paired"] = paired
            .entries
            .iter()
            .map(|p| {
                json!({
                    "psd": p.device.to_string(), "last_transfer": p.last_transfer.0, "count": p.count,
                    "total": p.total.0, "date": p.date.map(|d| d.to_string()),
                    "credited_at": p.credited_at.0,
                    "closure": match p.closure {
                        openpsd_core::purse::state::Closure::Open => "open",
                        openpsd_core::purse::state::Closure::Closed => "closed",
                        openpsd_core::purse::state::Closure::Unknown => "unknown",
                    },
                })
            })
            .collect();
        v["forgotten_through"] = json!(paired.forgotten_through.0);
        v["log"] = log
            .0
            .iter()
            .map(|e| {
                json!({
                    "kind": kind(e.kind), "counterpart": hex::encode_upper(e.counterpart),
                    "number": e.number, "amount": e.amount.0, "balance": e.balance.0,
                    "date": e.date.map(|d| d.to_string()),
                })
            })
            .collect();
        println!("{v}");
        return Ok(());
    }
    println!("{}", purse_line(&info));
    println!(
        "scheme {}  limits: balance {} per transfer {}",
        info.scheme.0, info.max_balance, info.max_transfer
    );
    let pin = if info.pin_tries_left == 0 {
        "BLOCKED (issuer unblock needed)".to_string()
    } else {
        format!("{} of {} tries left", info.pin_tries_left, info.pin_tries)
    };
    println!("PIN: {pin}");
    println!(
        "failed recognitions: {} of {}{}",
        info.failures,
        info.max_failures,
        if info.failures >= info.max_failures {
            " — transfers BLOCKED (issuer reset needed)"
        } else {
            ""
        }
    );
    println!(
        "purchase key {}  {}",
        hex::encode(info.public_key),
        if info.certificate.is_some() {
            "certified"
        } else {
            "NOT certified"
        }
    );
    println!("paired PSDs: {}", paired.entries.len());
    for p in &paired.entries {
        println!(
            "  PSD {}: {} transfers, {} in all, last transfer #{}{}",
            p.device,
            p.count,
            p.total,
            p.last_transfer.0,
            p.date.map_or(String::new(), |d| format!(" on {d}"))
        );
    }
    println!("log (oldest first): {}", log.0.len());
    for e in &log.0 {
        println!(
            "  {:<8} {} #{}  {}  balance {}{}",
            kind(e.kind),
            hex::encode_upper(e.counterpart),
            e.number,
            e.amount,
            e.balance,
            e.date.map_or(String::new(), |d| format!("  {d}"))
        );
    }
    Ok(())
}

fn payment_line(p: &Payment) -> String {
    format!(
        "paid {} by card {} (its purchase {}), terminal counter {}, date {}; card balance {}; batch {}{}",
        Amount(p.amount),
        p.card_id,
        p.card_number,
        p.terminal_counter,
        p.date,
        Amount(p.balance_after),
        p.batch,
        if p.resumed {
            " (finished a purchase whose reply was lost)"
        } else {
            ""
        }
    )
}

/// `openpsd pay`.
pub fn pay(
    spec: &CardSpec,
    db: &Path,
    issuer_key: Option<&Path>,
    amount: Amount,
    pin: Option<String>,
    date: Option<Date>,
    json_out: bool,
) -> Result<()> {
    let mut terminal = Terminal::open(db)?;
    if let Some(path) = issuer_key {
        let (scheme, key) = read_scheme(path)?;
        if key != terminal.info().issuer_public_key || scheme != terminal.info().scheme {
            bail!(
                "{}: not the issuer key this terminal was set up with (scheme {})",
                path.display(),
                terminal.info().scheme.0
            );
        }
    }
    let date = match date {
        Some(d) => d,
        None => crate::psd_commands::today_utc()
            .ok_or_else(|| anyhow!("the system clock is before 2000; give --date"))?,
    };
    let mut purse = link(spec, "purse")?;
    let card = driver::purse_info(&mut purse)
        .map_err(|e| anyhow!(explain(&e)))?
        .ok_or_else(|| anyhow!("{spec} is a blank purse"))?;
    if !json_out {
        println!(
            "purse {}: balance {}; paying {amount} to terminal {}",
            card.card,
            card.balance,
            terminal.info().id
        );
    }
    let pin = pin_or_prompt(pin, &card)?;
    let p = terminal.pay(&mut purse, amount, date, &pin)?;
    if json_out {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!("{}", payment_line(&p));
        println!("record {}", p.record);
    }
    Ok(())
}

fn batch_print(b: &BatchSummary, json_out: bool) -> Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(b)?);
        return Ok(());
    }
    let state = match b.closed_at {
        None => "open".to_string(),
        Some(t) => format!("closed (submitted) at {t}"),
    };
    println!(
        "batch {} ({state}): {} purchases, total {}",
        b.seq,
        b.count,
        Amount(b.total)
    );
    for c in &b.per_card {
        println!(
            "  card {}: {} purchases, {}",
            c.card_id,
            c.count,
            Amount(c.total)
        );
    }
    Ok(())
}

/// `openpsd batch`.
pub fn batch(
    db: &Path,
    seq: Option<i64>,
    action: Option<BatchAction>,
    json_out: bool,
) -> Result<()> {
    let mut terminal = Terminal::open(db)?;
    match action {
        None => batch_print(&terminal.batch(seq)?, json_out),
        Some(BatchAction::Close) => {
            if seq.is_some() {
                bail!("batch close closes the open batch; --seq does not apply");
            }
            let b = terminal.close_batch()?;
            if !json_out {
                println!("batch {} closed and marked submitted", b.seq);
            }
            batch_print(&b, json_out)
        }
        Some(BatchAction::Import { file }) => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                for line in std::io::stdin().lock().lines() {
                    s.push_str(&line?);
                    s.push('\n');
                }
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let mut records = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let r: RecordExport = serde_json::from_str(line)
                    .with_context(|| format!("line {}: not a purchase record (JSON)", i + 1))?;
                records.push(r);
            }
            if records.is_empty() {
                bail!("no records in {}", file.display());
            }
            let mut failed = 0;
            for r in &records {
                match terminal.import(r) {
                    Ok(p) if json_out => println!("{}", serde_json::to_string(&p)?),
                    Ok(p) => println!("imported: {}", payment_line(&p)),
                    Err(e) => {
                        failed += 1;
                        eprintln!("refused: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} of {} records refused", records.len());
            }
            Ok(())
        }
    }
}

/// `openpsd terminal`.
pub fn terminal(action: TerminalAction, json_out: bool) -> Result<()> {
    match action {
        TerminalAction::Init {
            terminal,
            id,
            scheme,
            issuer_key,
        } => {
            let id: [u8; 8] = hex::decode(id.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("--id: 16 hex digits"))?;
            let key_file = scheme
                .or(issuer_key)
                .ok_or_else(|| anyhow!("--scheme or --issuer-key"))?;
            let (scheme, key) = read_scheme(&key_file)?;
            let t = Terminal::init(&terminal, TerminalId(id), scheme, key)?;
            show(&t, json_out, &terminal)
        }
        TerminalAction::Show { terminal } => show(&Terminal::open(&terminal)?, json_out, &terminal),
        TerminalAction::Void { terminal } => {
            let mut t = Terminal::open(&terminal)?;
            match t.void_open_attempt()? {
                None => println!("no unfinished purchase"),
                Some((counter, card, amount)) => println!(
                    "dropped the unfinished purchase: counter {counter}, card {card}, amount {amount}"
                ),
            }
            Ok(())
        }
    }
}

fn show(t: &Terminal, json_out: bool, path: &Path) -> Result<()> {
    let i = t.info();
    let b = t.batch(None)?;
    if json_out {
        println!(
            "{}",
            json!({
                "terminal_id": i.id.to_string(), "scheme": i.scheme.0,
                "issuer_public_key": hex::encode(i.issuer_public_key), "last_counter": i.last_counter,
                "batch": b,
            })
        );
    } else {
        println!(
            "terminal {} ({}): scheme {}, counter {}",
            i.id,
            path.display(),
            i.scheme.0,
            i.last_counter
        );
        println!("issuer key {}", hex::encode(i.issuer_public_key));
        batch_print(&b, false)?;
    }
    Ok(())
}

/// A scheme file's public part (`docs/purse.md` § Scheme files): scheme ID and issuer key.
fn read_scheme(path: &Path) -> Result<(openpsd_core::types::SchemeId, [u8; 65])> {
    openpsd_protocol::scheme::SchemePublic::read_file(path)
        .with_context(|| format!("scheme file {}", path.display()))
}
