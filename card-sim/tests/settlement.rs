//! The issuer's settlement of a transfer that cannot end by itself, through the real
//! `card-sim` binary: `pending` (the mailer's report), `release-partner` (the purse's
//! evidence), `settle` (the issuer's signed decision) and `apply-settlement` (the PSD).
//! Cards and transfers are made by the same binary; the transfer is cut in this process
//! (the VAL or the ACK lost) on the cards' state directories.
//!
//! Value is counted throughout: the PSD's DR + pending + the purse's balance is what the
//! PSD was funded with, and every refusal leaves the PSD's report and registers as they
//! were.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use card_sim::os_platform::Clock;
use card_sim::sim::{open_file_card, FileCard};
use common::{card_sim, funded_psd};
use openpsd_core::client::transfer::{self as driver};
use openpsd_core::client::{Link, LinkError, PsdClient};
use openpsd_core::psd::registers::Registers;
use openpsd_core::purse::ins as purse_ins;
use openpsd_core::types::{Amount, RegisterSetIndex};
use serde_json::Value;

const FUNDED: u64 = 10_000;
const PIN: &[u8] = b"1357";
const SET0: RegisterSetIndex = RegisterSetIndex(0);

/// Runs `card-sim ARGS` in `dir`, which must fail; answers its stderr.
fn card_sim_fails(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_card-sim"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("card-sim runs");
    assert!(
        !out.status.success(),
        "card-sim {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The purse, gone from the moment it is sent `ins` (`before`: the message is lost) or has
/// answered it with `9000` (that answer is lost).
struct CutAt<'a> {
    card: &'a mut FileCard,
    ins: u8,
    before: bool,
    gone: bool,
}

impl Link for CutAt<'_> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
        let at = apdu.get(1) == Some(&self.ins);
        if self.gone || (at && self.before) {
            self.gone = true;
            return Err(LinkError("the card is gone".into()));
        }
        let resp = self.card.transmit(apdu)?;
        if at && resp.ends_with(&[0x90, 0x00]) {
            self.gone = true;
            return Err(LinkError("the answer is lost".into()));
        }
        Ok(resp)
    }
}

fn open(dir: &Path, name: &str) -> FileCard {
    open_file_card(&dir.join(name), Clock::System).unwrap()
}

/// A PSD `psd` funded with 100.00 and a purse `purse` of scheme 9 in `dir`.
fn devices(dir: &Path) {
    funded_psd(dir, "100.00");
    card_sim(
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "purse",
            "--scheme",
            "scheme.json",
            "--pin",
            "1357",
        ],
        dir,
    );
}

/// A transfer of `amount` from `psd` to `purse`, the VAL lost (`val_lost`: it never reaches
/// the purse) or the ACK lost (the purse's answer to TRANSFER CREDIT).
fn cut_transfer(dir: &Path, amount: u64, val_lost: bool) {
    let (mut psd, mut purse) = (open(dir, "psd"), open(dir, "purse"));
    let mut purse = CutAt {
        card: &mut purse,
        ins: purse_ins::TRANSFER_CREDIT,
        before: val_lost,
        gone: false,
    };
    let e = driver::transfer(&mut psd, &mut purse, SET0, Amount(amount), PIN).unwrap_err();
    assert!(matches!(e, driver::TransferError::Link(..)), "{e}");
}

fn registers(dir: &Path) -> Registers {
    let mut card = open(dir, "psd");
    let mut psd = PsdClient::new(&mut card);
    psd.select().unwrap();
    psd.registers(SET0).unwrap()
}

fn balance(dir: &Path) -> u64 {
    driver::purse_info(&mut open(dir, "purse"))
        .unwrap()
        .unwrap()
        .balance
        .0
}

/// DR + pending + the purse's balance is the funding; the registers' own sum holds.
fn conserved(dir: &Path) -> Registers {
    let r = registers(dir);
    assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0);
    assert_eq!(r.dr.0 + r.pending.0 + balance(dir), FUNDED, "value: {r:?}");
    r
}

/// The PSD's report (without the time it was read) and registers: what a refusal must
/// leave unchanged.
fn psd_now(dir: &Path) -> (Value, Registers) {
    let mut report = json(&card_sim(&["pending", "--state", "psd", "--json"], dir));
    report.as_object_mut().unwrap().remove("read_at");
    (report, registers(dir))
}

fn set_field(path: &Path, pointer: &str, value: Value) {
    let mut v = json(&std::fs::read_to_string(path).unwrap());
    *v.pointer_mut(pointer).unwrap() = value;
    std::fs::write(path, v.to_string()).unwrap();
}

/// `--decision undo`: the issuer's own decision, as `settle`'s basis.
const UNDO: &[&str] = &["--decision", "undo"];

/// `card-sim settle` signed with the scheme file `scheme` for the report `pending`, on
/// `basis` (`UNDO`, `--evidence FILE`, with any more flags), to `out`.
fn settle<'a>(scheme: &'a str, pending: &'a str, basis: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["settle", "--scheme", scheme, "--pending", pending];
    args.extend_from_slice(basis);
    args.extend(["--out", out]);
    args
}

/// `card-sim apply-settlement` of the decision file `decision` to the PSD `psd`.
fn apply_settlement(decision: &str) -> [&str; 5] {
    ["apply-settlement", "--state", "psd", "--decision", decision]
}

/// `card-sim release-partner`: the issuer releases the PSD `device` on the purse `purse`,
/// the evidence to `out`.
fn release_partner<'a>(device: &'a str, out: &'a str) -> [&'a str; 9] {
    [
        "release-partner",
        "--state",
        "purse",
        "--scheme",
        "scheme.json",
        "--psd",
        device,
        "--out",
        out,
    ]
}

/// `args` and `--json`.
fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &["--json"][..]].concat()
}

/// The mailer's report of the PSD's pending transfer, written to `out` in `dir`; answers
/// the command's text.
fn report_pending(dir: &Path, out: &str) -> String {
    card_sim(&["pending", "--state", "psd", "--out", out], dir)
}

/// The PSD named by the mailer's report `pending.json` in `dir`.
fn reported_device(dir: &Path) -> String {
    read_json(dir, "pending.json")["device"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The JSON file `name` in `dir`.
fn read_json(dir: &Path, name: &str) -> Value {
    json(&std::fs::read_to_string(dir.join(name)).unwrap())
}

/// A new scheme file `out` with the ID `id`: another scheme, or (with 9) an impostor
/// issuer's keys for scheme 9.
fn new_scheme(dir: &Path, out: &str, id: &str) {
    card_sim(&["scheme", "create", "--out", out, "--id", id], dir);
}

/// A copy of the JSON file `from` in `dir` as `to`, with the value at `pointer` replaced.
fn altered_copy(dir: &Path, from: &str, to: &str, pointer: &str, value: Value) {
    std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    set_field(&dir.join(to), pointer, value);
}

/// A transfer of `amount` from `psd` to `purse` that runs to its end.
fn transfer(dir: &Path, amount: u64) {
    driver::transfer(
        &mut open(dir, "psd"),
        &mut open(dir, "purse"),
        SET0,
        Amount(amount),
        PIN,
    )
    .unwrap();
}

#[test]
fn a_lost_val_with_the_purse_lost_is_undone_by_the_issuers_decision() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    devices(d);
    cut_transfer(d, 700, true);
    assert_eq!(registers(d).pending, Amount(700));
    assert_eq!(balance(d), 0, "the VAL never arrived");

    // The mailer's report.
    let text = report_pending(d, "pending.json");
    assert!(text.contains("transfer 0 of 7.00 to purse"), "{text}");
    let report = read_json(d, "pending.json");
    assert_eq!(report["pending"]["amount"], 700);
    assert_eq!(report["scheme"], 9);
    let before = psd_now(d);

    // Refusals of `settle`: another scheme; a counter the PSD would refuse.
    new_scheme(d, "other.json", "10");
    let e = card_sim_fails(&settle("other.json", "pending.json", UNDO, "x.json"), d);
    assert!(e.contains("belongs to scheme 9"), "{e}");
    let issuer_counter = report["issuer_counter"].as_u64().unwrap().to_string();
    let stale = ["--decision", "undo", "--counter", &issuer_counter];
    let e = card_sim_fails(&settle("scheme.json", "pending.json", &stale, "x.json"), d);
    assert!(e.contains("not above"), "{e}");
    assert!(!d.join("x.json").exists());

    // Decisions the PSD must refuse, with nothing changed: signed by an impostor issuer
    // (same scheme ID, other keys: the card's 6982), for another PSD, for another transfer.
    new_scheme(d, "impostor.json", "9");
    card_sim(
        &settle("impostor.json", "pending.json", UNDO, "forged.json"),
        d,
    );
    let e = card_sim_fails(&apply_settlement("forged.json"), d);
    assert!(e.contains("6982") && e.contains("not signed by"), "{e}");
    assert_eq!(psd_now(d), before);
    for (name, pointer, value) in [
        ("other-psd", "/device", Value::from("5053443939393939")),
        ("other-transfer", "/pending/transfer", Value::from(1)),
        ("other-amount", "/pending/amount", Value::from(701)),
    ] {
        let report = format!("{name}.pending.json");
        altered_copy(d, "pending.json", &report, pointer, value);
        let out = format!("{name}.json");
        card_sim(&settle("scheme.json", &report, UNDO, &out), d);
        let e = card_sim_fails(&apply_settlement(&out), d);
        assert!(e.contains("the decision is for"), "{name}: {e}");
        assert_eq!(psd_now(d), before, "{name}");
    }

    // The genuine decision: undo, applied once.
    let text = card_sim(&settle("scheme.json", "pending.json", UNDO, "undo.json"), d);
    assert!(text.contains("undo transfer 0 of 7.00"), "{text}");
    let file = std::fs::read_to_string(d.join("undo.json")).unwrap();
    assert!(
        !file.contains("signing") && !file.contains("admin"),
        "nothing secret: {file}"
    );
    let out = json(&card_sim(&with_json(&apply_settlement("undo.json")), d));
    assert_eq!(out["decision"], "undo");
    assert_eq!(
        (out["dr"].clone(), out["pending"].clone()),
        (FUNDED.into(), 0.into())
    );
    let r = conserved(d);
    assert_eq!((r.dr, r.pending), (Amount(FUNDED), Amount::ZERO));
    let e = card_sim_fails(&apply_settlement("undo.json"), d);
    assert!(e.contains("nothing pending"), "replayed: {e}");

    // The PSD transfers again (to the purse, found again).
    transfer(d, 100);
    assert_eq!(balance(d), 100);
    conserved(d);

    // A decision superseded by a newer issuer command (RESET RECOGNITION with a higher
    // counter) is refused before it reaches the card.
    cut_transfer(d, 300, true);
    report_pending(d, "pending2.json");
    card_sim(
        &settle("scheme.json", "pending2.json", UNDO, "undo2.json"),
        d,
    );
    card_sim(
        &[
            "reset-recognition",
            "--state",
            "psd",
            "--scheme",
            "scheme.json",
            "--counter",
            "4000000000",
        ],
        d,
    );
    let before = psd_now(d);
    let e = card_sim_fails(&apply_settlement("undo2.json"), d);
    assert!(e.contains("not above") && e.contains("4000000000"), "{e}");
    assert_eq!(psd_now(d), before);
    // Re-signed above it, it goes through (that counter is decades ahead of the clock:
    // the issuer insists).
    std::fs::remove_file(d.join("pending2.json")).unwrap();
    report_pending(d, "pending2.json");
    let e = card_sim_fails(
        &settle("scheme.json", "pending2.json", UNDO, "undo3.json"),
        d,
    );
    assert!(e.contains("--force-counter"), "{e}");
    let forced = ["--decision", "undo", "--force-counter"];
    let text = card_sim(
        &settle("scheme.json", "pending2.json", &forced, "undo3.json"),
        d,
    );
    assert!(text.contains("counter 4000000001"), "{text}");
    card_sim(&apply_settlement("undo3.json"), d);
    assert_eq!(conserved(d).pending, Amount::ZERO);
}

#[test]
fn a_lost_val_is_undone_from_the_purses_release_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    devices(d);
    cut_transfer(d, 700, true);
    report_pending(d, "pending.json");
    let device = reported_device(d);

    // The purse comes back to the issuer: it never credited that PSD.
    let text = card_sim(&release_partner(&device, "evidence.json"), d);
    assert!(text.contains("does not list PSD"), "{text}");
    // The purse's count is still the transfer's (0): the evidence alone does not show the
    // release came after the transfer's session.
    let evidence = ["--evidence", "evidence.json"];
    let e = card_sim_fails(
        &settle("scheme.json", "pending.json", &evidence, "undo.json"),
        d,
    );
    assert!(
        e.contains("does not decide") && e.contains("--purse-retained"),
        "{e}"
    );
    assert!(!d.join("undo.json").exists());
    // The issuer keeps the purse until the decision is applied, and says so; the files'
    // clocks do not matter (the evidence's date is not the purse's word).
    set_field(&d.join("evidence.json"), "/released_at", Value::from(1));
    let retained = ["--evidence", "evidence.json", "--purse-retained"];
    let decision = json(&card_sim(
        &with_json(&settle(
            "scheme.json",
            "pending.json",
            &retained,
            "undo.json",
        )),
        d,
    ));
    assert_eq!(decision["decision"], "undo");
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("never credited") && reason.contains("--purse-retained"),
        "{reason}"
    );
    card_sim(&apply_settlement("undo.json"), d);
    let r = conserved(d);
    assert_eq!(
        (r.dr, r.pending, r.ar),
        (Amount(FUNDED), Amount::ZERO, Amount::ZERO)
    );
}

/// The attack on evidence at the transfer's own count: the mailer reports a transfer it
/// has not made yet (its PSD's next number, the purse's count now), the issuer releases the
/// PSD on the purse and hands the purse back; an undo signed then would let the mailer make
/// that very transfer, cut it after the purse's credit, and undo it on the PSD: the value
/// twice. At the transfer's count the evidence cannot show the purse will not credit it
/// later, so it does not decide.
#[test]
fn a_report_of_a_transfer_not_yet_made_gets_no_undo_from_evidence_at_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    devices(d);
    // Transfer 0, credited and acknowledged: the purse's count is 1.
    transfer(d, 100);

    // The mailer's made-up report: nothing is pending, it names the next transfer.
    let mut report = json(&card_sim(&["pending", "--state", "psd", "--json"], d));
    assert_eq!(report["pending"], Value::Null);
    let next = {
        let mut card = open(d, "psd");
        let mut psd = PsdClient::new(&mut card);
        psd.select().unwrap();
        psd.transfer_info().unwrap().state.started.0
    };
    let purse = driver::purse_info(&mut open(d, "purse")).unwrap().unwrap();
    report["pending"] = serde_json::json!({
        "card": hex::encode_upper(purse.card.0),
        "set": 0,
        "transfer": next,
        "card_transfers": purse.transfers.0,
        "amount": 700,
    });
    std::fs::write(d.join("made-up.json"), report.to_string()).unwrap();
    let device = report["device"].as_str().unwrap().to_string();

    // The issuer releases the PSD on the purse (its last credit from it: transfer 0, count
    // 1) and the purse goes back to the mailer.
    let evidence = json(&card_sim(
        &with_json(&release_partner(&device, "evidence.json")),
        d,
    ));
    assert_eq!(evidence["entry"]["last_transfer"], 0);
    assert_eq!(evidence["card_transfers"], purse.transfers.0);
    let basis = ["--evidence", "evidence.json"];
    let e = card_sim_fails(
        &settle("scheme.json", "made-up.json", &basis, "undo.json"),
        d,
    );
    assert!(
        e.contains("does not decide") && e.contains("--purse-retained"),
        "{e}"
    );
    assert!(!d.join("undo.json").exists());

    // What an undo would have undone: the mailer makes that very transfer, the purse
    // credits it, the ACK is lost; the made-up report now names the PSD's pending transfer.
    cut_transfer(d, 700, false);
    assert_eq!(balance(d), 800, "credited");
    assert_eq!(psd_now(d).0["pending"], report["pending"]);
    // The value is the purse's; an undo would have put the 700 back in DR as well.
    let r = registers(d);
    assert_eq!((r.dr, r.pending), (Amount(FUNDED - 800), Amount(700)));
    assert_eq!(r.dr.0 + balance(d), FUNDED);
}

#[test]
fn a_lost_ack_with_the_psd_released_from_the_purse_is_completed_from_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    devices(d);
    cut_transfer(d, 700, false);
    assert_eq!(balance(d), 700, "credited");
    assert_eq!(registers(d).pending, Amount(700), "the ACK never came");
    report_pending(d, "pending.json");
    let device = reported_device(d);

    // Evidence about another PSD does not decide this one's transfer.
    card_sim(&release_partner("5053443939393939", "stranger.json"), d);
    let stranger = ["--evidence", "stranger.json"];
    let e = card_sim_fails(
        &settle("scheme.json", "pending.json", &stranger, "x.json"),
        d,
    );
    assert!(
        e.contains("the evidence is about PSD 5053443939393939"),
        "{e}"
    );

    // The issuer releases the PSD on the purse; the purse shows the transfer credited.
    let evidence = json(&card_sim(
        &with_json(&release_partner(&device, "evidence.json")),
        d,
    ));
    assert_eq!(evidence["entry"]["last_transfer"], 0);
    assert_eq!(evidence["entry"]["total"], 700);
    assert_eq!(evidence["entry"]["closure"], "open");

    // Evidence that is not the purse's is refused: altered, or checked under another
    // scheme's admin key.
    for (name, pointer, value) in [
        ("altered", "/counter", Value::from(1)),
        ("altered-entry", "/answer", Value::from("00")),
    ] {
        let altered = format!("{name}.json");
        altered_copy(d, "evidence.json", &altered, pointer, value);
        let basis = ["--evidence", &altered];
        let e = card_sim_fails(&settle("scheme.json", "pending.json", &basis, "x.json"), d);
        assert!(e.contains("does not verify"), "{name}: {e}");
    }
    // Dated before the pending report, it still decides: the purse's count (1, above the
    // transfer's 0) shows it was taken after the transfer's session began.
    altered_copy(
        d,
        "evidence.json",
        "early.json",
        "/released_at",
        Value::from(1),
    );
    let early = ["--evidence", "early.json"];
    let text = card_sim(
        &settle("scheme.json", "pending.json", &early, "early-decision.json"),
        d,
    );
    assert!(text.contains("complete transfer 0"), "{text}");
    new_scheme(d, "impostor.json", "9");
    let evidence = ["--evidence", "evidence.json"];
    let e = card_sim_fails(
        &settle("impostor.json", "pending.json", &evidence, "x.json"),
        d,
    );
    assert!(e.contains("does not verify"), "{e}");
    assert!(!d.join("x.json").exists());

    let decision = json(&card_sim(
        &with_json(&settle(
            "scheme.json",
            "pending.json",
            &evidence,
            "complete.json",
        )),
        d,
    ));
    assert_eq!(decision["decision"], "complete");
    let out = card_sim(&apply_settlement("complete.json"), d);
    assert!(out.contains("transfer 0 of 7.00 completed"), "{out}");
    let r = conserved(d);
    assert_eq!(
        (r.dr, r.ar, r.pending, r.transferred),
        (Amount(FUNDED - 700), Amount(700), Amount::ZERO, Amount(700))
    );
    // Counted once: the decision is not applied again.
    let e = card_sim_fails(&apply_settlement("complete.json"), d);
    assert!(e.contains("nothing pending"), "{e}");
    conserved(d);
}

/// The report's issuer counter is the mailer's to write: one near `u32::MAX` would make the
/// default counter `u32::MAX`, and the PSD, once it applied that decision, would take no
/// RESET RECOGNITION or settlement ever again. A counter more than a day ahead of the clock
/// is refused unless the issuer insists (`--force-counter`).
#[test]
fn a_counter_far_ahead_of_the_clock_is_refused_without_force_counter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    devices(d);
    cut_transfer(d, 700, true);
    report_pending(d, "pending.json");
    let inflated = Value::from(u32::MAX - 1);
    altered_copy(
        d,
        "pending.json",
        "inflated.json",
        "/issuer_counter",
        inflated,
    );
    // The report's counter, and a counter asked for, far ahead: refused, nothing written.
    let e = card_sim_fails(&settle("scheme.json", "inflated.json", UNDO, "x.json"), d);
    assert!(
        e.contains("4294967294") && e.contains("ahead") && e.contains("--force-counter"),
        "{e}"
    );
    let far = ["--decision", "undo", "--counter", "4294967295"];
    let e = card_sim_fails(&settle("scheme.json", "pending.json", &far, "x.json"), d);
    assert!(
        e.contains("4294967295") && e.contains("ahead") && e.contains("--force-counter"),
        "{e}"
    );
    assert!(!d.join("x.json").exists());
    // Within a day of the clock: signed as before.
    let soon = (settlement_now() + 3_600).to_string();
    let near = ["--decision", "undo", "--counter", &soon];
    let text = card_sim(
        &settle("scheme.json", "pending.json", &near, "soon.json"),
        d,
    );
    assert!(text.contains(&format!("counter {soon}")), "{text}");
    // The issuer insists: signed.
    let forced = ["--decision", "undo", "--force-counter"];
    let text = card_sim(
        &settle("scheme.json", "inflated.json", &forced, "forced.json"),
        d,
    );
    assert!(text.contains("counter 4294967295"), "{text}");
}

fn settlement_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_new_commands_have_help() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["pending", "release-partner", "settle", "apply-settlement"] {
        let out = card_sim(&[cmd, "--help"], dir.path());
        assert!(out.contains("Usage: card-sim"), "{cmd}: {out}");
    }
    let e = card_sim_fails(
        &["settle", "--scheme", "s", "--pending", "p", "--out", "o"],
        dir.path(),
    );
    assert!(e.contains("--decision") || e.contains("--evidence"), "{e}");
}
