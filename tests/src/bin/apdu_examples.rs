//! Prints the example APDU exchanges of `docs/apdu.md`, produced by the real card code.
//!
//! Every card here comes from the test harness: an in-memory store and a seeded platform
//! (today = 2026-11-21), so keys, signatures, challenges and MACs are the same on every run.
//! The value-transfer examples use the scheme, issuer and purse of `tests/src/purse.rs`.
//!
//! ```text
//! cargo run -p openpsd-tests --bin apdu_examples
//! ```
//!
//! Each exchange is printed as `> command` and `< response` in hex, 32 bytes per line.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::crypto::MacKey;
use openpsd_core::platform::SeededPlatform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::transfer::{reset_recognition_data, TransferInfo};
use openpsd_core::psd::{indicium, ins as psd_ins, CLA_PSD};
use openpsd_core::purse::personal::{certificate_body, PurseInfo};
use openpsd_core::purse::purchase::{PurchaseRecord, PurchaseRequest};
use openpsd_core::purse::purse_card;
use openpsd_core::store::MemStore;
use openpsd_core::transfer::cert::{DeviceKind, RecognitionInfo};
use openpsd_core::transfer::{card_admin_key, PsdHello};
use openpsd_core::types::{Amount, Date, RegisterSetIndex, TerminalId, TransferCount};
use openpsd_core::Status;
use openpsd_tests::device_public_key;
use openpsd_tests::purse::{
    certificate_for, issuer_key, psd_personalization, purse_personalization, ADMIN_KEY, CARD, PIN,
    SCHEME,
};
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

/// Sends `cmd` without printing it (steps the text describes but does not show).
fn quiet(card: &mut TestCard, cmd: &[u8]) -> Vec<u8> {
    expect_ok(&card.transmit(cmd))
}

/// A PSD command of the transfer function (CLA 80, P1 00, Le 00).
fn psd_cmd(ins: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    psd_apdu::command(CLA_PSD, ins, 0, p2, data, 256)
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
    x(&mut card, &psd_apdu::read_registers(SET0));
    title("SELECT by full AID, P2=00 (FCI returned)");
    x(&mut card, &psd_apdu::select());
    title("SELECT by full AID, P2=04 (FCP returned)");
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xA4, 0x04, 0x04, openpsd_core::psd::PSD_AID, 256),
    );
    title("SELECT by truncated AID (first 5 bytes), P2=0C (no response data)");
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xA4, 0x04, 0x0C, &[0xF0, 0x50, 0x53, 0x44, 0x00], 0),
    );
    title("SELECT unknown AID -> 6A82");
    x(
        &mut card,
        &psd_apdu::command(
            0x00,
            0xA4,
            0x04,
            0x00,
            &[0xA0, 0, 0, 0, 0x03, 0x10, 0x10],
            256,
        ),
    );
    title("wrong CLA (00 for a proprietary command) -> 6E00");
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xCA, 0x00, 0x01, &[], 256),
    );
    title("CLA with a logical channel -> 6881");
    x(
        &mut card,
        &psd_apdu::command(0x81, 0xCA, 0x00, 0x01, &[], 256),
    );
    title("unknown INS -> 6D00");
    x(
        &mut card,
        &psd_apdu::command(0x80, 0x20, 0x00, 0x00, &[], 0),
    );
    title("GET RESPONSE with nothing pending -> 6B00");
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 256),
    );

    // --- Life cycle ------------------------------------------------------------------
    title("GET DATA on a blank PSD");
    x(&mut card, &psd_apdu::get_data());
    title("READ REGISTERS on a blank PSD -> 6985");
    x(&mut card, &psd_apdu::read_registers(SET0));
    title("PERSONALIZE");
    let pk = expect_ok(&x(&mut card, &psd_apdu::personalize(&personalization())))[4..].to_vec();
    title("PERSONALIZE a second time -> 6985");
    x(&mut card, &psd_apdu::personalize(&personalization()));
    title("GET DATA (personalized, Le=00)");
    x(&mut card, &psd_apdu::get_data());
    title("GET DATA with Le=0A, then GET RESPONSE");
    x(
        &mut card,
        &psd_apdu::command(0x80, 0xCA, 0x00, 0x01, &[], 10),
    );
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 256),
    );
    let get_data_short = psd_apdu::command(0x80, 0xCA, 0x00, 0x01, &[], 10);
    title("GET DATA with Le=0A, then GET RESPONSE in parts (Le=10, then the rest)");
    x(&mut card, &get_data_short);
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 0x10),
    );
    x(&mut card, &[0x00, 0xC0, 0x00, 0x00]);
    title("GET RESPONSE with P1 P2 not 00 00 -> 6B00, and the pending bytes are gone");
    x(&mut card, &get_data_short);
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x01, &[], 256),
    );
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 256),
    );
    title("a malformed APDU discards the pending bytes");
    x(&mut card, &get_data_short);
    x(&mut card, &[0x00, 0xC0, 0x00]);
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 256),
    );
    title("a chained GET RESPONSE is a chain part: 9000, the pending bytes gone");
    x(&mut card, &get_data_short);
    x(
        &mut card,
        &psd_apdu::command(0x10, 0xC0, 0x00, 0x00, &[], 256),
    );
    x(
        &mut card,
        &psd_apdu::command(0x00, 0xC0, 0x00, 0x00, &[], 256),
    );
    title("GET DATA with extended Le=0000 (Ne=65536)");
    x(&mut card, &[0x80, 0xCA, 0x00, 0x01, 0x00, 0x00, 0x00]);
    title("GET DATA 00 02 on a PSD personalized without a transfer scheme -> 6985");
    x(&mut card, &psd_cmd(psd_ins::GET_DATA, 0x02, &[]));
    title("READ REGISTERS set 0");
    x(&mut card, &psd_apdu::read_registers(SET0));
    title("READ REGISTERS set 2 (the device has 2 sets) -> 6A88");
    x(&mut card, &psd_apdu::read_registers(RegisterSetIndex(2)));

    // --- Audit and refill ------------------------------------------------------------
    let kms = Kms::new();
    title("AUDIT set 0 with nonce \"server-nonce-123\"");
    let audit = expect_ok(&x(&mut card, &psd_apdu::audit(SET0, b"server-nonce-123")));
    // The KMS checks the audit's signature with the device's public key and signs a refill
    // of 500.00 for the state it shows.
    let device_pk = device_public_key(&mut card);
    let a = AuditData::open(&audit, &device_pk).expect("audit signature verifies");
    let comb = RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(50_000),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: [1; 8],
    };
    let msg = comb.sign(&kms.key);
    title("REFILL set 0 with 500.00, bound to the audit above (combination ID 01..01)");
    x(&mut card, &psd_apdu::refill(SET0, &msg));
    title("REFILL replayed -> 9A12");
    x(&mut card, &psd_apdu::refill(SET0, &msg));
    let mut forged = msg.clone();
    forged[21] ^= 0x01;
    title("REFILL with a changed amount byte (the signature fails) -> 6982");
    x(&mut card, &psd_apdu::refill(SET0, &forged));

    // --- Receipts --------------------------------------------------------------------
    // The KMS accepted the audit above and signs a receipt naming its nonce.
    let today = Date::new(2026, 11, 21).expect("valid date");
    let receipt = Receipt {
        device: a.device,
        nonce: a.nonce,
        accepted_on: today,
    }
    .sign(&kms.key);
    title("RECEIPT for the audit above (nonce \"server-nonce-123\"), accepted 2026-11-21");
    let inspected_on = expect_ok(&x(&mut card, &psd_apdu::receipt(&receipt)));
    assert_eq!(
        inspected_on,
        [0x07, 0xEA, 0x0B, 0x15],
        "last inspection 2026-11-21"
    );
    title("AUDIT set 0 with nonce \"confirm-nonce-01\" (after the refill)");
    let confirm = expect_ok(&x(&mut card, &psd_apdu::audit(SET0, b"confirm-nonce-01")));
    let c = AuditData::open(&confirm, &device_pk).expect("audit signature verifies");
    assert_eq!(
        c.last_combination, [1; 8],
        "the audit names the refill applied"
    );
    title("the receipt for \"server-nonce-123\" again, after another AUDIT -> 9A15");
    let again = x(&mut card, &psd_apdu::receipt(&receipt));
    expect_refused(&again, Status::ReceiptForOtherAudit);
    title("AUDIT with a 15-byte nonce -> 6700");
    x(
        &mut card,
        &psd_apdu::command(0x80, 0x50, 0x00, 0x00, &[0; 15], 256),
    );

    // --- Indicia ---------------------------------------------------------------------
    let req = request(1, 85, 21);
    title("ISSUE INDICIUM set 0: txn 1, 0.85, 2026-11-21, rate 1, 10115 -> 20095");
    let first = x(&mut card, &psd_apdu::issue_indicium(SET0, &req));
    indicium::verify(&expect_ok(&first), &pk).expect("indicium verifies");
    title("ISSUE INDICIUM retried with the same transaction ID (same indicium, no debit)");
    x(&mut card, &psd_apdu::issue_indicium(SET0, &req));
    title("ISSUE INDICIUM, same transaction ID, other postage -> 9A07");
    x(
        &mut card,
        &psd_apdu::issue_indicium(SET0, &request(1, 86, 21)),
    );
    let (mut small, _) = funded_card(6, 100);
    title("ISSUE INDICIUM with insufficient funds (DR 1.00, postage 1.01) -> 9A01");
    x(
        &mut small,
        &psd_apdu::issue_indicium(SET0, &request(1, 101, 21)),
    );
    title("ISSUE INDICIUM sent as a chain of two commands (CLA 90 then 80)");
    let data = request(2, 120, 21).encode();
    let (first_part, rest) = data.split_at(32);
    x(
        &mut card,
        &psd_apdu::command(0x90, 0x40, 0x00, 0x00, first_part, 0),
    );
    x(
        &mut card,
        &psd_apdu::command(0x80, 0x40, 0x00, 0x00, rest, 256),
    );
    title("chain interrupted by another command -> 6883 (the chain is dropped)");
    x(
        &mut card,
        &psd_apdu::command(0x90, 0x40, 0x00, 0x00, first_part, 0),
    );
    x(&mut card, &psd_apdu::read_registers(SET0));
    title("READ REGISTERS set 0 after two pieces");
    x(&mut card, &psd_apdu::read_registers(SET0));

    // --- Inspection --------------------------------------------------------------------
    // A card that must be inspected every 28 days: it prints nothing before its first
    // accepted audit.
    let mut inspected = blank_card(7);
    let mut p = personalization();
    p.inspection_days = 28;
    title("PERSONALIZE with inspection_days = 28 (another card)");
    let pk7 = expect_ok(&x(&mut inspected, &psd_apdu::personalize(&p)))[4..].to_vec();
    title("ISSUE INDICIUM before any inspection -> 9A08");
    let overdue = x(&mut inspected, &psd_apdu::issue_indicium(SET0, &req));
    expect_refused(&overdue, Status::InspectionOverdue);
    let nonce = *b"inspect-nonce-01";
    let receipt = Receipt {
        device: DEVICE,
        nonce,
        accepted_on: today,
    }
    .sign(&kms.key);
    title("RECEIPT with no AUDIT in this session -> 9A15");
    let early = x(&mut inspected, &psd_apdu::receipt(&receipt));
    expect_refused(&early, Status::ReceiptForOtherAudit);
    title("AUDIT set 0 with nonce \"inspect-nonce-01\"");
    let audit = expect_ok(&x(&mut inspected, &psd_apdu::audit(SET0, &nonce)));
    let a = AuditData::open(&audit, &pk7).expect("audit signature verifies");
    let msg = RefillCombination {
        device: a.device,
        license: a.license,
        amount: Amount(10_000),
        control_sum: a.control_sum,
        refills: a.refills,
        combination_id: [2; 8],
    }
    .sign(&kms.key);
    title("REFILL set 0 with 100.00, bound to that audit (combination ID 02..02)");
    expect_ok(&x(&mut inspected, &psd_apdu::refill(SET0, &msg)));
    title("the same RECEIPT, now for the last AUDIT of the session -> 9000");
    expect_ok(&x(&mut inspected, &psd_apdu::receipt(&receipt)));
    title("ISSUE INDICIUM after the receipt");
    let issued = x(&mut inspected, &psd_apdu::issue_indicium(SET0, &req));
    indicium::verify(&expect_ok(&issued), &pk7).expect("indicium verifies");
    title("GET DATA: inspection days 28, last inspection 2026-11-21");
    x(&mut inspected, &psd_apdu::get_data());

    value_transfer();
}

/// A PSD of the test scheme, a purse, a transfer, a purchase, an interrupted transfer
/// and its resolution, the refusals of recognition and PIN, the issuer's commands.
fn value_transfer() {
    let today = Date::new(2026, 11, 21).expect("valid date");
    let set0 = SET0;

    // --- The PSD, personalized with the scheme block and refilled with 100.00 -------
    let mut psd = blank_card(11);
    title(
        "PERSONALIZE with the scheme block (scheme 00020001, issuer key, max failures 5) (card seed 11)",
    );
    expect_ok(&x(
        &mut psd,
        &psd_apdu::personalize(&psd_personalization(SCHEME)),
    ));
    title("GET DATA 00 03: the PSD's recognition key, no certificate yet");
    let rec = expect_ok(&x(&mut psd, &psd_apdu::get_recognition_data()));
    let rec = RecognitionInfo::decode(&rec).expect("recognition data");
    let psd_cert = certificate_for(
        &issuer_key(),
        DeviceKind::Psd,
        SCHEME,
        DEVICE.0,
        rec.public_key,
    );
    title("INSTALL CERTIFICATE: the issuer's certificate on the PSD's recognition key");
    expect_ok(&x(
        &mut psd,
        &psd_apdu::install_certificate(&psd_cert.encode()),
    ));
    let kms = Kms::new();
    let msg = kms.refill_for(&mut psd, set0, Amount(10_000), [1; 8]);
    quiet(&mut psd, &psd_apdu::refill(set0, &msg));

    // --- The purse: blank, personalized, certified ------------------------------------
    let mut platform = SeededPlatform::new(12);
    platform.today = Some(today);
    let mut purse = purse_card(MemStore::new(), platform).expect("blank store loads");
    title("purse: SELECT by full AID");
    x(&mut purse, &purse_apdu::select());
    title("purse: GET DATA 00 01 on a blank purse");
    x(&mut purse, &purse_apdu::get_data(0x01));
    title("purse: PERSONALIZE (card PURSE001, scheme 00020001, PIN 2468)");
    let pk = expect_ok(&x(
        &mut purse,
        &purse_apdu::personalize(&purse_personalization(CARD, SCHEME)),
    ));
    let cert = issuer_key().sign(&certificate_body(CARD, SCHEME, &pk));
    title("purse: CERTIFY with the issuer's signature on the purchase key");
    expect_ok(&x(&mut purse, &purse_apdu::certify(&cert)));
    title("purse: GET DATA 00 04: the recognition key, no certificate yet");
    let rec = expect_ok(&x(&mut purse, &purse_apdu::get_data(0x04)));
    let rec = RecognitionInfo::decode(&rec).expect("recognition data");
    let card_cert = certificate_for(
        &issuer_key(),
        DeviceKind::Purse,
        SCHEME,
        CARD.0,
        rec.public_key,
    );
    title("purse: INSTALL CERTIFICATE on the recognition key");
    expect_ok(&x(
        &mut purse,
        &purse_apdu::install_certificate(&card_cert.encode()),
    ));
    title("purse: GET DATA 00 01 (personalized, certified)");
    let info = expect_ok(&x(&mut purse, &purse_apdu::get_data(0x01)));
    let info = PurseInfo::decode(&info)
        .expect("decodes")
        .expect("personalized");
    assert!(info.certified_by(&issuer_key().public_key()));

    // --- A transfer of 25.00, step by step ---------------------------------------------
    title("transfer: SELECT the PSD");
    x(&mut psd, &psd_apdu::select());
    title("transfer: SELECT the purse");
    x(&mut purse, &purse_apdu::select());
    title("transfer: OPEN SESSION (PSD)");
    let hello = expect_ok(&x(&mut psd, &psd_cmd(psd_ins::OPEN_SESSION, 0, &[])));
    let hello = PsdHello::decode(&hello).expect("a PSD hello");
    assert_eq!(hello.pending_for, None);
    title("transfer: RECOGNIZE (purse)");
    let card_hello = expect_ok(&x(&mut purse, &purse_apdu::recognize(&hello)));
    title("transfer: AUTHENTICATE CARD (PSD)");
    let crypt = expect_ok(&x(
        &mut psd,
        &psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card_hello),
    ));
    title("transfer: AUTHENTICATE PSD (purse)");
    expect_ok(&x(&mut purse, &purse_apdu::authenticate_psd(&crypt)));
    title("transfer: VERIFY PIN 2468 (purse)");
    expect_ok(&x(&mut purse, &purse_apdu::verify(PIN)));
    title("transfer: TRANSFER REQUEST 25.00 (purse)");
    let req = expect_ok(&x(&mut purse, &purse_apdu::transfer_request(Amount(2_500))));
    title("transfer: TRANSFER DEBIT set 0 (PSD)");
    let value = expect_ok(&x(&mut psd, &psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    title("transfer: TRANSFER CREDIT (purse)");
    let ack = expect_ok(&x(&mut purse, &purse_apdu::transfer_credit(&value)));
    title("transfer: TRANSFER CONFIRM (PSD)");
    let regs = expect_ok(&x(&mut psd, &psd_cmd(psd_ins::TRANSFER_CONFIRM, 0, &ack)));
    let regs = Registers::decode(&regs).expect("registers");
    assert_eq!(
        (regs.ar, regs.dr, regs.transferred, regs.pending),
        (Amount(2_500), Amount(7_500), Amount(2_500), Amount::ZERO)
    );
    title("TRANSFER DEBIT replayed (the session has moved on) -> 6985");
    expect_refused(
        &x(&mut psd, &psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)),
        Status::ConditionsNotSatisfied,
    );
    title("PSD: GET DATA 00 02 after the transfer");
    let t = expect_ok(&x(&mut psd, &psd_cmd(psd_ins::GET_DATA, 0x02, &[])));
    let t = TransferInfo::decode(&t).expect("transfer info");
    assert_eq!(
        (t.state.started, t.state.completed, t.state.total_out),
        (TransferCount(1), TransferCount(1), Amount(2_500))
    );
    title("purse: GET DATA 00 01 after the transfer");
    x(&mut purse, &purse_apdu::get_data(0x01));

    // --- A purchase --------------------------------------------------------------------
    let purchase = PurchaseRequest {
        terminal: TerminalId(*b"TERM0001"),
        terminal_counter: 1,
        amount: Amount(350),
        date: today,
    };
    title("purse: PURCHASE 3.50 at terminal TERM0001, its counter 1 (PIN verified above)");
    let record = expect_ok(&x(&mut purse, &purse_apdu::purchase(&purchase)));
    let r = PurchaseRecord::verify(&record, &info.public_key).expect("record verifies");
    assert_eq!((r.number, r.balance), (1, Amount(2_150)));
    title("purse: GET DATA 00 02 (paired PSDs)");
    x(&mut purse, &purse_apdu::get_data(0x02));
    title("purse: GET DATA 00 03 (log)");
    x(&mut purse, &purse_apdu::get_data(0x03));

    // --- PIN: a wrong guess, the status, the issuer's unblock ---------------------------
    title("purse: VERIFY with a wrong PIN -> 63C2");
    expect_refused(
        &x(&mut purse, &purse_apdu::verify(b"0000")),
        Status::VerificationFailed(2),
    );
    title("purse: VERIFY without data (PIN status) -> 63C2");
    expect_refused(
        &x(&mut purse, &purse_apdu::verify(&[])),
        Status::VerificationFailed(2),
    );
    let admin = card_admin_key(&MacKey::new(ADMIN_KEY), CARD);
    title("purse: UNBLOCK PIN, counter 1, new PIN 2468");
    expect_ok(&x(
        &mut purse,
        &purse_apdu::unblock_pin(&admin, CARD, 1, PIN),
    ));

    // --- An interrupted transfer: the value message is lost ------------------------------
    // Recognition, PIN and request as above (not shown); the PSD debits 10.00 into
    // pending and its value message never reaches the purse.
    let hello = quiet(&mut psd, &psd_cmd(psd_ins::OPEN_SESSION, 0, &[]));
    let hello = PsdHello::decode(&hello).expect("a PSD hello");
    let card_hello = quiet(&mut purse, &purse_apdu::recognize(&hello));
    let crypt = quiet(
        &mut psd,
        &psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card_hello),
    );
    quiet(&mut purse, &purse_apdu::authenticate_psd(&crypt));
    quiet(&mut purse, &purse_apdu::verify(PIN));
    let req = quiet(&mut purse, &purse_apdu::transfer_request(Amount(1_000)));
    title("TRANSFER DEBIT 10.00 whose value message is lost");
    expect_ok(&x(&mut psd, &psd_cmd(psd_ins::TRANSFER_DEBIT, 0, &req)));
    title("READ REGISTERS set 0: 10.00 pending");
    x(&mut psd, &psd_apdu::read_registers(set0));

    title("resolution: OPEN SESSION (pending for PURSE001)");
    let hello = expect_ok(&x(&mut psd, &psd_cmd(psd_ins::OPEN_SESSION, 0, &[])));
    let hello = PsdHello::decode(&hello).expect("a PSD hello");
    assert_eq!(hello.pending_for, Some(CARD));
    title("resolution: RECOGNIZE");
    let card_hello = expect_ok(&x(&mut purse, &purse_apdu::recognize(&hello)));
    title("resolution: AUTHENTICATE CARD");
    let crypt = expect_ok(&x(
        &mut psd,
        &psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card_hello),
    ));
    title("resolution: AUTHENTICATE PSD");
    expect_ok(&x(&mut purse, &purse_apdu::authenticate_psd(&crypt)));
    title("resolution: TRANSFER STATUS (purse)");
    let status = expect_ok(&x(&mut purse, &purse_apdu::transfer_status()));
    title("resolution: TRANSFER RESOLVE (PSD) -> 02 undone");
    let out = expect_ok(&x(
        &mut psd,
        &psd_cmd(psd_ins::TRANSFER_RESOLVE, 0, &status),
    ));
    assert_eq!(out[0], 0x02, "undone");
    let regs = Registers::decode(&out[1..]).expect("registers");
    assert_eq!((regs.dr, regs.pending), (Amount(7_500), Amount::ZERO));

    // --- A wrong card cryptogram, and the issuer's reset ----------------------------------
    let hello = quiet(&mut psd, &psd_cmd(psd_ins::OPEN_SESSION, 0, &[]));
    let hello = PsdHello::decode(&hello).expect("a PSD hello");
    let mut card_hello = quiet(&mut purse, &purse_apdu::recognize(&hello));
    let last = card_hello.len() - 1;
    card_hello[last] ^= 0x01;
    title("AUTHENTICATE CARD with a wrong cryptogram -> 63C4");
    expect_refused(
        &x(
            &mut psd,
            &psd_cmd(psd_ins::AUTHENTICATE_CARD, 0, &card_hello),
        ),
        Status::VerificationFailed(4),
    );
    title("PSD: RESET RECOGNITION, counter 1, signed by the scheme issuer");
    expect_ok(&x(
        &mut psd,
        &psd_cmd(
            psd_ins::RESET_RECOGNITION,
            0,
            &reset_recognition_data(&issuer_key(), DEVICE, 1),
        ),
    ));

    // --- The audit shows the transfer ------------------------------------------------------
    title("AUDIT set 0 with nonce \"transfer-audit-1\" after the transfers");
    let audit = expect_ok(&x(&mut psd, &psd_apdu::audit(set0, b"transfer-audit-1")));
    let a =
        AuditData::open(&audit, &device_public_key(&mut psd)).expect("audit signature verifies");
    assert_eq!(
        (a.ar, a.dr, a.transferred, a.pending, a.control_sum),
        (
            Amount(2_500),
            Amount(7_500),
            Amount(2_500),
            Amount::ZERO,
            Amount(10_000)
        )
    );
}
