//! The card layer as PC/SC clients see it: class checks, SELECT semantics, chaining,
//! extended lengths, Le and GET RESPONSE.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::types::RegisterSetIndex;
use openpsd_core::Status;
use openpsd_tests::*;

#[test]
fn unknown_aid_is_6a82_and_keeps_the_current_selection() {
    let (mut card, _) = funded_card(40, 1_000);
    expect_refused(
        &card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0, 0, 0, 0x03]),
        Status::NotFound,
    );
    // The PSD is still selected: its commands still work.
    assert_eq!(registers(&mut card, 0).dr.0, 1_000);
    // SELECT by file identifier (no file system here) and a bad P1/P2.
    expect_refused(
        &card.transmit(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
        Status::NotFound,
    );
    expect_refused(
        &card.transmit(&[0x00, 0xA4, 0x04, 0x01, 0x05, 0xF0, 0x50, 0x53, 0x44, 0x00]),
        Status::IncorrectP1P2,
    );
    assert_eq!(registers(&mut card, 0).dr.0, 1_000);
}

#[test]
fn select_by_truncated_aid_with_and_without_fci() {
    let mut card = blank_card(41);
    assert_eq!(
        card.transmit(&[0x00, 0xA4, 0x04, 0x0C, 0x05, 0xF0, 0x50, 0x53, 0x44, 0x00]),
        [0x90, 0x00]
    );
    let fcp = card.transmit(&[
        0x00, 0xA4, 0x04, 0x04, 0x05, 0xF0, 0x50, 0x53, 0x44, 0x00, 0x00,
    ]);
    assert_eq!(&fcp[..4], &[0x62, 0x09, 0x84, 0x07]);
    // Fewer than 5 bytes is not an AID prefix this card matches.
    expect_refused(
        &card.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xF0, 0x50]),
        Status::NotFound,
    );
}

#[test]
fn class_and_instruction_errors_come_from_one_table() {
    let (mut card, _) = personalized_card(42);
    let cases: [(&[u8], Status); 8] = [
        (&[0x00, 0x32, 0x00, 0x00, 0x00], Status::ClassNotSupported), // PSD INS under CLA 00
        (&[0x80, 0x20, 0x00, 0x00], Status::InstructionNotSupported),
        (
            &[0x81, 0x32, 0x00, 0x00, 0x00],
            Status::LogicalChannelNotSupported,
        ),
        (
            &[0x84, 0x32, 0x00, 0x00, 0x00],
            Status::SecureMessagingNotSupported,
        ),
        (&[0xFF, 0x32, 0x00, 0x00], Status::ClassNotSupported),
        (
            &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00],
            Status::ClassNotSupported,
        ),
        (&[0x80, 0x32, 0x01, 0x00, 0x00], Status::IncorrectP1P2),
        (&[0x80, 0x32, 0x00, 0x00, 0x05, 0x00], Status::WrongLength), // Lc says 5, one byte came
    ];
    for (apdu, status) in cases {
        expect_refused(&card.transmit(apdu), status);
    }
    for short in [&[][..], &[0x80], &[0x80, 0x32, 0x00]] {
        expect_refused(&card.transmit(short), Status::WrongLength);
    }
}

#[test]
fn chained_command_is_reassembled_and_an_interrupted_chain_is_dropped() {
    let mut card = blank_card(43);
    let data = personalization().encode();
    let (first, rest) = data.split_at(60);
    let mut part = vec![0x90, 0x10, 0x00, 0x00, u8::try_from(first.len()).unwrap()];
    part.extend_from_slice(first);
    assert_eq!(card.transmit(&part), [0x90, 0x00]);
    // Another command in the middle of the chain: refused and the chain is gone.
    expect_refused(
        &card.transmit(&psd_apdu::get_data()),
        Status::LastCommandOfChainExpected,
    );
    let mut last = vec![0x80, 0x10, 0x00, 0x00, u8::try_from(rest.len()).unwrap()];
    last.extend_from_slice(rest);
    last.push(0x00);
    expect_refused(&card.transmit(&last), Status::WrongData);

    // Chained properly, the same bytes personalize the card.
    assert_eq!(card.transmit(&part), [0x90, 0x00]);
    assert_eq!(
        psd_apdu::data(&card.transmit(&last)).map(|d| d.len()),
        Ok(69)
    );
    assert!(
        DeviceInfo::decode(&expect_ok(&card.transmit(&psd_apdu::get_data())))
            .unwrap()
            .is_some()
    );
}

#[test]
fn extended_length_commands_and_get_response_for_short_le() {
    let (mut card, _) = funded_card(44, 10_000);
    let full = expect_ok(&card.transmit(&psd_apdu::get_data()));
    // Extended: Lc absent, Le = 00 01 00.
    let ext = card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x00, 0x01, 0x00]);
    assert_eq!(expect_ok(&ext), full);
    // Le = 16: the first 16 bytes and 61xx; GET RESPONSE fetches the rest in pieces.
    let first = card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x10]);
    assert_eq!(&first[..16], &full[..16]);
    let left = full.len() - 16;
    assert_eq!(&first[16..], &[0x61, u8::try_from(left).unwrap()]);
    let second = card.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x20]);
    assert_eq!(&second[..32], &full[16..48]);
    assert_eq!(&second[32..], &[0x61, u8::try_from(left - 32).unwrap()]);
    let third = card.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
    assert_eq!(expect_ok(&third), &full[48..]);
    expect_refused(
        &card.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x00]),
        Status::WrongP1P2,
    );
    // Any other command drops what was pending.
    card.transmit(&[0x80, 0xCA, 0x00, 0x01, 0x10]);
    expect_refused(&card.transmit(&[0xFF]), Status::WrongLength);
    expect_refused(
        &card.transmit(&[0x00, 0xC0, 0x00, 0x00, 0x00]),
        Status::WrongP1P2,
    );
    // An indicium request sent as an extended APDU works like a short one.
    let req = request(1, 85, 21).encode();
    let mut apdu = vec![
        0x80,
        0x40,
        0x00,
        0x00,
        0x00,
        0x00,
        u8::try_from(req.len()).unwrap(),
    ];
    apdu.extend_from_slice(&req);
    apdu.extend_from_slice(&[0x00, 0x00]);
    assert_eq!(psd_apdu::sw(&card.transmit(&apdu)), 0x9000);
    assert_eq!(registers(&mut card, RegisterSetIndex(0).0).pieces.0, 1);
}

#[test]
fn a_chain_is_dropped_by_malformed_or_wrong_class_commands_too() {
    let (mut card, _) = funded_card(45, 1_000);
    let req = request(1, 85, 21).encode();
    let (first, rest) = req.split_at(10);
    let part = |cla: u8, data: &[u8]| {
        let mut v = vec![cla, 0x40, 0x00, 0x00, u8::try_from(data.len()).unwrap()];
        v.extend_from_slice(data);
        v
    };
    for interruption in [
        &[0x84, 0xCA, 0x00, 0x01, 0x00][..],
        &[0x80, 0x32, 0x00],
        &[0xFF, 0, 0, 0],
    ] {
        assert_eq!(card.transmit(&part(0x90, first)), [0x90, 0x00]);
        assert_ne!(psd_apdu::sw(&card.transmit(interruption)), 0x9000);
        // The last part alone is not a whole indicium request: the chain is gone.
        expect_refused(&card.transmit(&part(0x80, rest)), Status::WrongData);
    }
    assert_eq!(
        registers(&mut card, 0).pieces.0,
        0,
        "no indicium was issued"
    );
}
