//! Prints the example APDU exchanges of `docs/apdu.md`, produced by the real card code.
//!
//! Every card here comes from the test harness: an in-memory store and a seeded platform
//! (today = 2026-11-21), so keys, signatures and MACs are the same on every run.
//!
//! ```text
//! cargo run -p openpsd-tests --bin apdu_examples
//! ```
//!
//! Each exchange is printed as `> command` and `< response` in hex, 32 bytes per line.

use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::{host, indicium};
use openpsd_core::types::{Amount, Date, RegisterSetIndex};
use openpsd_core::Status;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);

fn hex_lines(prefix: &str, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(32).enumerate() {
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02X}")).collect();
        let lead = if i == 0 { prefix } else { " " };
        println!("{lead} {}", line.join(" "));
    }
}

/// Sends `cmd`, prints the exchange, returns the response.
fn x(card: &mut TestCard, cmd: &[u8]) -> Vec<u8> {
    let resp = card.transmit(cmd);
    hex_lines(">", cmd);
    hex_lines("<", &resp);
    resp
}

fn title(t: &str) {
    println!();
    println!("## {t}");
}

fn main() {
    // --- Card level ------------------------------------------------------------------
    let mut card = blank_card(1);
    card.reset();
    title("no applet selected (after reset): READ REGISTERS -> 6985");
    x(&mut card, &host::read_registers(SET0));
    title("SELECT by full AID, P2=00 (FCI returned)");
    x(&mut card, &host::select());
    title("SELECT by truncated AID (first 5 bytes), P2=0C (no response data)");
    x(
        &mut card,
        &host::command(0x00, 0xA4, 0x04, 0x0C, &[0xF0, 0x50, 0x53, 0x44, 0x00], 0),
    );
    title("SELECT unknown AID -> 6A82");
    x(
        &mut card,
        &host::command(
            0x00,
            0xA4,
            0x04,
            0x00,
            &[0xA0, 0, 0, 0, 0x03, 0x10, 0x10],
            256,
        ),
    );
    title("wrong CLA (00 for a proprietary command) -> 6E00");
    x(&mut card, &host::command(0x00, 0xCA, 0x00, 0x01, &[], 256));
    title("CLA with a logical channel -> 6881");
    x(&mut card, &host::command(0x81, 0xCA, 0x00, 0x01, &[], 256));
    title("unknown INS -> 6D00");
    x(&mut card, &host::command(0x80, 0x20, 0x00, 0x00, &[], 0));
    title("GET RESPONSE with nothing pending -> 6B00");
    x(&mut card, &host::command(0x00, 0xC0, 0x00, 0x00, &[], 256));

    // --- Life cycle ------------------------------------------------------------------
    title("GET DATA on a blank PSD");
    x(&mut card, &host::get_data());
    title("READ REGISTERS on a blank PSD -> 6985");
    x(&mut card, &host::read_registers(SET0));
    title("PERSONALIZE");
    let pk = expect_ok(&x(&mut card, &host::personalize(&personalization())))[4..].to_vec();
    title("PERSONALIZE a second time -> 6985");
    x(&mut card, &host::personalize(&personalization()));
    title("GET DATA (personalized, Le=00)");
    x(&mut card, &host::get_data());
    title("GET DATA with Le=0A, then GET RESPONSE");
    x(&mut card, &host::command(0x80, 0xCA, 0x00, 0x01, &[], 10));
    x(&mut card, &host::command(0x00, 0xC0, 0x00, 0x00, &[], 256));
    title("GET DATA with extended Le=0000 (Ne=65536)");
    x(&mut card, &[0x80, 0xCA, 0x00, 0x01, 0x00, 0x00, 0x00]);
    title("READ REGISTERS set 0");
    x(&mut card, &host::read_registers(SET0));
    title("READ REGISTERS set 2 (the device has 2 sets) -> 6A88");
    x(&mut card, &host::read_registers(RegisterSetIndex(2)));

    // --- Audit and refill ------------------------------------------------------------
    let kms = Kms::new();
    title("AUDIT set 0 with nonce \"server-nonce-123\"");
    let audit = expect_ok(&x(&mut card, &host::audit(SET0, b"server-nonce-123")));
    // The KMS checks the audit under K1 and seals a refill of 500.00 for the state it shows.
    let a = AuditData::open(&audit, &kms.k1).expect("audit MAC verifies under K1");
    let comb = RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(50_000),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: [1; 8],
    };
    let msg = comb.seal(&kms.k1);
    title("REFILL set 0 with 500.00, bound to the audit above (combination ID 01..01)");
    x(&mut card, &host::refill(SET0, &msg));
    title("REFILL replayed -> 9A12");
    x(&mut card, &host::refill(SET0, &msg));
    let mut forged = msg.clone();
    forged[21] ^= 0x01;
    title("REFILL with a changed amount byte (MAC fails) -> 6982");
    x(&mut card, &host::refill(SET0, &forged));

    // --- Receipts --------------------------------------------------------------------
    // The KMS accepted the audit above and seals a receipt naming its nonce.
    let today = Date::new(2026, 11, 21).expect("valid date");
    let receipt = Receipt {
        device: a.device,
        nonce: a.nonce,
        accepted_on: today,
    }
    .seal(&kms.k1);
    title("RECEIPT for the audit above (nonce \"server-nonce-123\"), accepted 2026-11-21");
    let inspected_on = expect_ok(&x(&mut card, &host::receipt(&receipt)));
    assert_eq!(
        inspected_on,
        [0x07, 0xEA, 0x0B, 0x15],
        "last inspection 2026-11-21"
    );
    title("AUDIT set 0 with nonce \"confirm-nonce-01\" (after the refill)");
    let confirm = expect_ok(&x(&mut card, &host::audit(SET0, b"confirm-nonce-01")));
    let c = AuditData::open(&confirm, &kms.k1).expect("audit MAC verifies under K1");
    assert_eq!(
        c.last_combination, [1; 8],
        "the audit names the refill applied"
    );
    title("the receipt for \"server-nonce-123\" again, after another AUDIT -> 9A15");
    let again = x(&mut card, &host::receipt(&receipt));
    expect_refused(&again, Status::ReceiptForOtherAudit);
    title("AUDIT with a 15-byte nonce -> 6700");
    x(
        &mut card,
        &host::command(0x80, 0x50, 0x00, 0x00, &[0; 15], 256),
    );

    // --- Indicia ---------------------------------------------------------------------
    let req = request(1, 85, 21);
    title("ISSUE INDICIUM set 0: txn 1, 0.85, 2026-11-21, rate 1, 10115 -> 20095");
    let first = x(&mut card, &host::issue_indicium(SET0, &req));
    indicium::verify(&expect_ok(&first), &pk).expect("indicium verifies");
    title("ISSUE INDICIUM retried with the same transaction ID (same indicium, no debit)");
    x(&mut card, &host::issue_indicium(SET0, &req));
    title("ISSUE INDICIUM, same transaction ID, other postage -> 9A07");
    x(&mut card, &host::issue_indicium(SET0, &request(1, 86, 21)));
    let (mut small, _) = funded_card(6, 100);
    title("ISSUE INDICIUM with insufficient funds (DR 1.00, postage 1.01) -> 9A01");
    x(
        &mut small,
        &host::issue_indicium(SET0, &request(1, 101, 21)),
    );
    title("ISSUE INDICIUM sent as a chain of two commands (CLA 90 then 80)");
    let data = request(2, 120, 21).encode();
    let (first_part, rest) = data.split_at(32);
    x(
        &mut card,
        &host::command(0x90, 0x40, 0x00, 0x00, first_part, 0),
    );
    x(&mut card, &host::command(0x80, 0x40, 0x00, 0x00, rest, 256));
    title("chain interrupted by another command -> 6883 (the chain is dropped)");
    x(
        &mut card,
        &host::command(0x90, 0x40, 0x00, 0x00, first_part, 0),
    );
    x(&mut card, &host::read_registers(SET0));
    title("READ REGISTERS set 0 after two pieces");
    x(&mut card, &host::read_registers(SET0));

    // --- Inspection --------------------------------------------------------------------
    // A card that must be inspected every 28 days: it prints nothing before its first
    // accepted audit.
    let mut inspected = blank_card(7);
    let mut p = personalization();
    p.inspection_days = 28;
    title("PERSONALIZE with inspection_days = 28 (another card)");
    let pk7 = expect_ok(&x(&mut inspected, &host::personalize(&p)))[4..].to_vec();
    title("ISSUE INDICIUM before any inspection -> 9A08");
    let overdue = x(&mut inspected, &host::issue_indicium(SET0, &req));
    expect_refused(&overdue, Status::InspectionOverdue);
    let nonce = *b"inspect-nonce-01";
    let receipt = Receipt {
        device: DEVICE,
        nonce,
        accepted_on: today,
    }
    .seal(&kms.k1);
    title("RECEIPT with no AUDIT in this session -> 9A15");
    let early = x(&mut inspected, &host::receipt(&receipt));
    expect_refused(&early, Status::ReceiptForOtherAudit);
    title("AUDIT set 0 with nonce \"inspect-nonce-01\"");
    let audit = expect_ok(&x(&mut inspected, &host::audit(SET0, &nonce)));
    let a = AuditData::open(&audit, &kms.k1).expect("audit MAC verifies under K1");
    let msg = RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(10_000),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: [2; 8],
    }
    .seal(&kms.k1);
    title("REFILL set 0 with 100.00, bound to that audit (combination ID 02..02)");
    expect_ok(&x(&mut inspected, &host::refill(SET0, &msg)));
    title("the same RECEIPT, now for the last AUDIT of the session -> 9000");
    expect_ok(&x(&mut inspected, &host::receipt(&receipt)));
    title("ISSUE INDICIUM after the receipt");
    let issued = x(&mut inspected, &host::issue_indicium(SET0, &req));
    indicium::verify(&expect_ok(&issued), &pk7).expect("indicium verifies");
    title("GET DATA: inspection days 28, last inspection 2026-11-21");
    x(&mut inspected, &host::get_data());
}
