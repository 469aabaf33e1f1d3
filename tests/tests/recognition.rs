//! Recognition by certificates (issue 12): a device whose whole memory is known — its state
//! dumped, keys included — cannot make any *other* device accept a recognition or a credit;
//! a device the issuer revoked is refused by the other side; certificates and revocation
//! lists are installed only with the issuer's signature.
//!
//! Each attack starts from a dump: the device's records read out of its store and decoded
//! with the card's own decoders, so the attacker holds exactly what the device holds.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openpsd_core::client::psd_apdu;
use openpsd_core::client::purse_apdu;
use openpsd_core::client::transfer as driver;
use openpsd_core::crypto::IndiciumKey;
use openpsd_core::psd::device::{Device, Recognition};
use openpsd_core::psd::{ins as psd_ins, CLA_PSD};
use openpsd_core::purse::state::{CardRecognition, Identity};
use openpsd_core::records;
use openpsd_core::store::Store;
use openpsd_core::transfer::cert::{
    DeviceCertificate, DeviceKind, RecognitionInfo, RevocationList,
};
use openpsd_core::transfer::{Ack, CardHello, PsdHello, Session, Value};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_tests::purse::*;
use openpsd_tests::*;

const SET0: RegisterSetIndex = RegisterSetIndex(0);
const PSD2: DeviceId = DeviceId(*b"PSD00002");
const CARD2: CardId = CardId(*b"PURSE002");

fn psd_cmd(ins: u8, data: &[u8]) -> Vec<u8> {
    psd_apdu::command(CLA_PSD, ins, 0, 0, data, 256)
}

/// The recognition key a PSD's dumped memory holds.
fn dump_psd_key(psd: &TestCard) -> IndiciumKey {
    let rec = psd.store().read(records::psd::DEVICE).unwrap().unwrap();
    match Device::decode(&rec).unwrap().scheme.unwrap().recognition {
        Recognition::Certified { key, .. } => key,
        Recognition::Legacy(_) => panic!("a certificate PSD"),
    }
}

/// The recognition key a purse's dumped memory holds.
fn dump_purse_key(purse: &TestCard) -> IndiciumKey {
    let rec = purse
        .store()
        .read(records::purse::IDENTITY)
        .unwrap()
        .unwrap();
    match Identity::decode(&rec).unwrap().recognition {
        CardRecognition::Certified(key) => key,
        CardRecognition::Legacy(_) => panic!("a certificate purse"),
    }
}

/// A second PSD of the scheme (another device ID, its own key and certificate).
fn second_psd(seed: u64, amount: u64) -> TestCard {
    let mut p = psd_personalization(SCHEME);
    p.device = PSD2;
    let mut psd = funded_psd_as_device(seed, p, amount);
    expect_ok(&psd.transmit(&psd_apdu::select()));
    psd
}

/// [`funded_psd_as`] for a device other than the test device, funded through its own
/// audit checked with its own public key.
fn funded_psd_as_device(
    seed: u64,
    p: openpsd_core::psd::device::Personalization,
    amount: u64,
) -> TestCard {
    use openpsd_core::psd::audit::AuditData;
    use openpsd_core::psd::refill::RefillCombination;
    let mut psd = funded_psd_as(seed, p, 0);
    let audit = expect_ok(&psd.transmit(&psd_apdu::audit(SET0, &[5; 16])));
    let audit = AuditData::open(&audit, &device_public_key(&mut psd)).unwrap();
    let msg = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount: Amount(amount),
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id: [2; 8],
    }
    .sign(&kms_key());
    expect_ok(&psd.transmit(&psd_apdu::refill(SET0, &msg)));
    psd
}

fn psd_recognition(psd: &mut TestCard) -> RecognitionInfo {
    expect_ok(&psd.transmit(&psd_apdu::select()));
    RecognitionInfo::decode(&expect_ok(&psd.transmit(&psd_apdu::get_recognition_data()))).unwrap()
}

fn purse_recognition(purse: &mut TestCard) -> RecognitionInfo {
    expect_ok(&purse.transmit(&purse_apdu::select()));
    RecognitionInfo::decode(&expect_ok(&purse.transmit(&purse_apdu::get_data(4)))).unwrap()
}

fn dr(psd: &mut TestCard) -> Amount {
    registers(psd, 0).dr
}

#[test]
fn a_dumped_psd_cannot_pass_as_another_psd_nor_credit_a_purse_in_its_session() {
    let mut a = funded_psd(1, 10_000);
    let mut b = second_psd(3, 10_000);
    let mut purse = purse(2);
    let stolen = dump_psd_key(&a);
    let b_cert = psd_recognition(&mut b).certificate.unwrap();

    // 1. A's key behind B's (public) certificate: the purse accepts the certificate, but
    //    the PSD cryptogram the thief can compute is wrong — refused and counted.
    let eph = IndiciumKey::from_bytes(&[0x61; 32]).unwrap();
    let hello = PsdHello {
        device: PSD2,
        scheme: SCHEME,
        transfers: TransferCount(0),
        total_out: Amount::ZERO,
        challenge: [1; 16],
        pending_for: None,
        ephemeral: eph.public_key_compressed(),
        certificate: b_cert,
    };
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let card = expect_ok(&purse.transmit(&purse_apdu::recognize(&hello)));
    let card = CardHello::decode(&card).unwrap();
    // The thief's best Z2: A's key with the card's (B's would need B's private key).
    let z2 = stolen.agree(&card.certificate.public_key).unwrap();
    let guess = Session::for_psd(&eph, z2.as_ref(), &hello, &card).unwrap();
    assert_ne!(
        guess.card_cryptogram(),
        card.cryptogram,
        "the thief does not even share the card's key"
    );
    expect_refused(
        &purse.transmit(&purse_apdu::authenticate_psd(&guess.psd_cryptogram())),
        Status::VerificationFailed(MAX_FAILURES - 1),
    );
    // Its value message under that guessed key goes nowhere.
    let val = Value {
        amount: Amount(5_000),
        transfer: TransferCount(0),
    }
    .seal(&guess);
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_credit(&val)),
        Status::ConditionsNotSatisfied,
    );

    // 2. A certificate the thief signs itself (A's key as "issuer"): refused before any
    //    secret is used.
    let forged = DeviceCertificate::issue(
        &stolen,
        DeviceKind::Psd,
        SCHEME,
        *b"PSDEVIL1",
        1,
        validity().0,
        validity().1,
        stolen.public_key_compressed(),
    );
    let evil = PsdHello {
        device: DeviceId(*b"PSDEVIL1"),
        certificate: forged,
        ..hello.clone()
    };
    expect_refused(
        &purse.transmit(&purse_apdu::recognize(&evil)),
        Status::CertificateRefused,
    );

    // 3. An honest session between B and the purse: the thief injects a value message
    //    under the key its dump gives — refused, nothing credited, B debited nothing.
    expect_ok(&b.transmit(&psd_apdu::select()));
    expect_ok(&purse.transmit(&purse_apdu::select()));
    let hb = expect_ok(&b.transmit(&psd_cmd(psd_ins::OPEN_SESSION, &[])));
    let hb = PsdHello::decode(&hb).unwrap();
    let cb = expect_ok(&purse.transmit(&purse_apdu::recognize(&hb)));
    let crypt = expect_ok(&b.transmit(&psd_cmd(psd_ins::AUTHENTICATE_CARD, &cb)));
    expect_ok(&purse.transmit(&purse_apdu::authenticate_psd(&crypt)));
    expect_ok(&purse.transmit(&purse_apdu::verify(PIN)));
    expect_ok(&purse.transmit(&purse_apdu::transfer_request(Amount(5_000))));
    let cb = CardHello::decode(&cb).unwrap();
    let z2 = stolen.agree(&cb.certificate.public_key).unwrap();
    let guess = Session::for_psd(&eph, z2.as_ref(), &hb, &cb).unwrap();
    let val = Value {
        amount: Amount(5_000),
        transfer: TransferCount(0),
    }
    .seal(&guess);
    expect_refused(
        &purse.transmit(&purse_apdu::transfer_credit(&val)),
        Status::SecurityStatusNotSatisfied,
    );

    assert_eq!(purse_data(&mut purse).balance, Amount::ZERO);
    assert_eq!((dr(&mut a), dr(&mut b)), (Amount(10_000), Amount(10_000)));
    // The honest devices still transfer (the purse's failure counter was reset by B).
    driver::transfer(&mut b, &mut purse, SET0, Amount(100), PIN).unwrap();
    assert_eq!(purse_data(&mut purse).balance, Amount(100));
}

#[test]
fn a_dumped_purse_cannot_pass_as_another_purse_nor_acknowledge_for_it() {
    let mut psd = funded_psd(1, 10_000);
    let thief_card = purse(2);
    let mut other = purse_in(4, CARD2, SCHEME, &issuer_key());
    let stolen = dump_purse_key(&thief_card);
    let other_cert = purse_recognition(&mut other).certificate.unwrap();

    // 1. The dumped key behind the other card's certificate: the PSD counts the attempt
    //    and refuses.
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let hello = PsdHello::decode(&expect_ok(
        &psd.transmit(&psd_cmd(psd_ins::OPEN_SESSION, &[])),
    ))
    .unwrap();
    let mut card = CardHello {
        card: CARD2,
        scheme: SCHEME,
        transfers: TransferCount(0),
        total_in: Amount::ZERO,
        challenge: [2; 16],
        certificate: other_cert,
        cryptogram: [0; 16],
    };
    // The thief's best Z2: the dumped key with the PSD's.
    let z2 = stolen.agree(&hello.certificate.public_key).unwrap();
    card.cryptogram = Session::for_card(&stolen, z2.as_ref(), &hello, &card)
        .unwrap()
        .card_cryptogram();
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::AUTHENTICATE_CARD, &card.encode())),
        Status::VerificationFailed(MAX_FAILURES - 1),
    );

    // 2. An honest session between the PSD and the other card, up to the debit: the thief
    //    acknowledges under the key its dump gives — refused, the value stays pending, and
    //    the next contact with the real card gives it back.
    let c = run_until(&mut psd, &mut other, 3_000, 9);
    let value = Value::open(&c.last, &{
        // The thief cannot open VAL either; it only needs the amount and number, which it
        // guesses as the honest values.
        let cb = CardHello {
            cryptogram: [0; 16],
            ..card.clone()
        };
        Session::for_card(&stolen, z2.as_ref(), &hello, &cb).unwrap()
    });
    assert!(
        value.is_err(),
        "the value message is not under the thief's key"
    );
    let ack = Ack {
        amount: Amount(3_000),
        transfer: TransferCount(0),
    }
    .seal(&Session::for_card(&stolen, z2.as_ref(), &hello, &card).unwrap());
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::TRANSFER_CONFIRM, &ack)),
        Status::SecurityStatusNotSatisfied,
    );
    let r = registers(&mut psd, 0);
    assert_eq!((r.dr, r.pending), (Amount(7_000), Amount(3_000)));
    let resolved = driver::resolve_pending(&mut psd, &mut other).unwrap();
    assert_eq!(resolved, Some((driver::Resolved::Undone, Amount(3_000))));
    assert_eq!(dr(&mut psd), Amount(10_000));
    assert_eq!(purse_data(&mut other).balance, Amount::ZERO);
}

/// The issuer's revocation list `version` naming `serials`.
fn revocation(version: u32, serials: Vec<u32>) -> Vec<u8> {
    RevocationList::issue(&issuer_key(), SCHEME, version, serials)
        .unwrap()
        .encode()
}

#[test]
fn a_revoked_psd_is_refused_by_the_purse() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap();

    expect_ok(&purse.transmit(&purse_apdu::select()));
    expect_ok(&purse.transmit(&purse_apdu::load_revocation(&revocation(
        1,
        vec![serial_of(DEVICE.0)],
    ))));
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(
        err,
        driver::TransferError::Refused(
            driver::Side::Purse,
            "RECOGNIZE",
            Status::CertificateRefused
        )
    );
    assert_eq!(purse_data(&mut purse).balance, Amount(100));
    assert_eq!(dr(&mut psd), Amount(9_900));
    assert_eq!(purse_recognition(&mut purse).revocation_version, 1);

    // An older or equal-version different list cannot lift it; a list of another issuer
    // or scheme is refused; the same list again changes nothing.
    let lift = revocation(1, vec![]);
    expect_refused(
        &purse.transmit(&purse_apdu::load_revocation(&lift)),
        Status::ConditionsNotSatisfied,
    );
    let stranger = RevocationList::issue(&stranger_issuer_key(), SCHEME, 9, vec![])
        .unwrap()
        .encode();
    expect_refused(
        &purse.transmit(&purse_apdu::load_revocation(&stranger)),
        Status::SecurityStatusNotSatisfied,
    );
    let other_scheme = RevocationList::issue(&issuer_key(), SchemeId(77), 9, vec![])
        .unwrap()
        .encode();
    expect_refused(
        &purse.transmit(&purse_apdu::load_revocation(&other_scheme)),
        Status::WrongData,
    );
    expect_ok(&purse.transmit(&purse_apdu::load_revocation(&revocation(
        1,
        vec![serial_of(DEVICE.0)],
    ))));
    assert!(driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).is_err());
    // Only a newer list from the issuer lifts it.
    expect_ok(&purse.transmit(&purse_apdu::load_revocation(&revocation(2, vec![]))));
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap();
    assert_eq!(purse_data(&mut purse).balance, Amount(200));
}

#[test]
fn a_revoked_purse_is_refused_by_the_psd_and_the_attempt_counted() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    expect_ok(&psd.transmit(&psd_apdu::select()));
    expect_ok(&psd.transmit(&psd_apdu::load_revocation(&revocation(
        4,
        vec![7, serial_of(CARD.0)],
    ))));
    assert_eq!(psd_recognition(&mut psd).revocation_version, 4);
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(
        err,
        driver::TransferError::Refused(
            driver::Side::Psd,
            "AUTHENTICATE CARD",
            Status::VerificationFailed(MAX_FAILURES - 1)
        )
    );
    assert_eq!(
        driver::psd_transfer_info(&mut psd).unwrap().state.failures,
        1
    );
    assert_eq!(dr(&mut psd), Amount(10_000));
    assert_eq!(purse_data(&mut purse).balance, Amount::ZERO);
    // Another card of the scheme is not affected.
    let mut other = purse_in(4, CARD2, SCHEME, &issuer_key());
    driver::transfer(&mut psd, &mut other, SET0, Amount(100), PIN).unwrap();
}

#[test]
fn an_expired_certificate_is_refused() {
    let mut psd = funded_psd(1, 10_000);
    let mut purse = purse(2);
    let key = purse_recognition(&mut purse).public_key;
    let old = DeviceCertificate::issue(
        &issuer_key(),
        DeviceKind::Purse,
        SCHEME,
        CARD.0,
        99,
        Date::new(2020, 1, 1).unwrap(),
        Date::new(2025, 12, 31).unwrap(),
        key,
    );
    // The card takes a (re)newed certificate from the issuer, even an expired one: it
    // only answers for itself; the partner judges validity on its own date.
    expect_ok(&purse.transmit(&purse_apdu::install_certificate(&old.encode())));
    let err = driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap_err();
    assert_eq!(
        err.status(),
        Some(Status::VerificationFailed(MAX_FAILURES - 1))
    );
    certify_purse(&mut purse, &issuer_key(), SCHEME, CARD);
    driver::transfer(&mut psd, &mut purse, SET0, Amount(100), PIN).unwrap();
}

#[test]
fn install_certificate_takes_only_the_issuers_certificate_on_the_devices_own_key() {
    let mut psd = funded_psd_as(1, psd_personalization(SCHEME), 0);
    let mut purse = purse(2);
    let key = psd_recognition(&mut psd).public_key;
    let other_key = purse_recognition(&mut purse).public_key;
    let cases = [
        // Another kind, another device, another scheme, another key: not this device.
        (
            certificate_for(&issuer_key(), DeviceKind::Purse, SCHEME, DEVICE.0, key),
            Status::WrongData,
        ),
        (
            certificate_for(&issuer_key(), DeviceKind::Psd, SCHEME, PSD2.0, key),
            Status::WrongData,
        ),
        (
            certificate_for(&issuer_key(), DeviceKind::Psd, SchemeId(9), DEVICE.0, key),
            Status::WrongData,
        ),
        (
            certificate_for(&issuer_key(), DeviceKind::Psd, SCHEME, DEVICE.0, other_key),
            Status::WrongData,
        ),
        // Right subject, wrong signer.
        (
            certificate_for(
                &stranger_issuer_key(),
                DeviceKind::Psd,
                SCHEME,
                DEVICE.0,
                key,
            ),
            Status::SecurityStatusNotSatisfied,
        ),
    ];
    expect_ok(&psd.transmit(&psd_apdu::select()));
    let before = psd_recognition(&mut psd);
    for (cert, status) in cases {
        expect_refused(
            &psd.transmit(&psd_apdu::install_certificate(&cert.encode())),
            status,
        );
    }
    expect_refused(
        &psd.transmit(&psd_apdu::install_certificate(&[1; 10])),
        Status::WrongData,
    );
    assert_eq!(psd_recognition(&mut psd), before, "nothing installed");
}

#[test]
fn an_uncertified_device_cannot_start_a_recognition() {
    let mut p = psd_personalization(SCHEME);
    p.device = PSD2;
    let mut platform = openpsd_core::platform::SeededPlatform::new(8);
    platform.today = Date::new(2026, 11, 21);
    let mut psd =
        openpsd_core::psd::psd_card(openpsd_core::store::MemStore::new(), platform).unwrap();
    expect_ok(&psd.transmit(&psd_apdu::select()));
    expect_ok(&psd.transmit(&psd_apdu::personalize(&p)));
    assert_eq!(psd_recognition(&mut psd).certificate, None);
    expect_refused(
        &psd.transmit(&psd_cmd(psd_ins::OPEN_SESSION, &[])),
        Status::NotCertified,
    );
}

/// A power cut at every write of `apdu` on the card `make` builds: after power comes back
/// the card loads, holds the recognition data it had before or the one the command
/// installs (never a mix), and the command then goes through.
fn tear_credentials(
    make: &dyn Fn() -> TestCard,
    reopen_card: &dyn Fn(&openpsd_core::store::Nvm) -> TestCard,
    read: &dyn Fn(&mut TestCard) -> RecognitionInfo,
    apdu: &[u8],
) -> usize {
    use openpsd_core::store::PowerCut;
    let before = read(&mut make());
    let after = {
        let mut c = make();
        expect_ok(&c.transmit(apdu));
        read(&mut c)
    };
    assert_ne!(before, after, "the command changes something");
    let mut cuts = 0;
    for torn in [false, true] {
        for k in 0.. {
            let mut card = make();
            let start = card.store().writes();
            card.store_mut().set_power_cut(Some(PowerCut {
                at_write: start + k,
                torn,
            }));
            let resp = card.transmit(apdu);
            if !card.store().is_dead() {
                assert_eq!(psd_apdu::sw(&resp), 0x9000);
                break;
            }
            cuts += 1;
            assert_eq!(psd_apdu::sw(&resp), 0x6581);
            let mut back = reopen_card(&card.store().nvm().clone());
            let now = read(&mut back);
            assert!(
                now == before || now == after,
                "write {k} torn {torn}: {now:?}"
            );
            expect_ok(&back.transmit(apdu));
            assert_eq!(read(&mut back), after);
        }
    }
    cuts
}

#[test]
fn install_certificate_and_load_revocation_are_all_or_nothing_under_power_cuts() {
    let list = revocation(3, vec![1, 2, 3]);
    let psd_cert = |c: &mut TestCard| {
        let key = psd_recognition(c).public_key;
        DeviceCertificate::issue(
            &issuer_key(),
            DeviceKind::Psd,
            SCHEME,
            DEVICE.0,
            42,
            validity().0,
            validity().1,
            key,
        )
        .encode()
    };
    let renewal = psd_cert(&mut funded_psd(1, 0));
    let mut cuts = 0;
    for apdu in [
        psd_apdu::install_certificate(&renewal),
        psd_apdu::load_revocation(&list),
    ] {
        cuts += tear_credentials(
            &|| {
                let mut c = funded_psd(1, 0);
                expect_ok(&c.transmit(&psd_apdu::select()));
                c
            },
            &|nvm| {
                let mut c = reopen(nvm, 1);
                expect_ok(&c.transmit(&psd_apdu::select()));
                c
            },
            &psd_recognition,
            &apdu,
        );
    }
    let purse_renewal = {
        let mut p = purse(2);
        let key = purse_recognition(&mut p).public_key;
        DeviceCertificate::issue(
            &issuer_key(),
            DeviceKind::Purse,
            SCHEME,
            CARD.0,
            43,
            validity().0,
            validity().1,
            key,
        )
        .encode()
    };
    for apdu in [
        purse_apdu::install_certificate(&purse_renewal),
        purse_apdu::load_revocation(&list),
    ] {
        cuts += tear_credentials(
            &|| purse(2),
            &|nvm| reopen_purse(nvm, 2),
            &purse_recognition,
            &apdu,
        );
    }
    assert!(cuts >= 4, "too few cut points: {cuts}");
}
