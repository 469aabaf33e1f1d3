//! The merchant terminal against a purse run in-process (a card-sim state directory): pay,
//! batch totals, a replayed record refused, a lost reply retried with the same counter and
//! debited once, an unfinished purchase finished by the next `pay`, the counter committed
//! before the PURCHASE leaves, cards of another scheme and wrong PINs refused.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use card_sim::issuer::{self, PurseRequest};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::Request;
use card_sim::scheme::Scheme;
use card_sim::sim::{self, FileCard};
use openpsd_core::client::transfer::{self as driver};
use openpsd_core::client::Link;
use openpsd_core::purse::ins as purse_ins;
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_terminal::{Terminal, TerminalError};

const PIN: &[u8] = b"2468";
const TERMINAL: TerminalId = TerminalId(*b"TERM0001");

fn date() -> Date {
    Date::new(2026, 11, 21).unwrap()
}

fn link(dir: &Path) -> FileCard {
    sim::open_file_card(dir, Clock::System).unwrap()
}

/// A scheme, a funded PSD of it, and a purse of it holding `balance` moved from the PSD.
fn setup(dir: &Path, balance: u64) -> Scheme {
    let scheme = Scheme::generate(Some(7), &mut OsPlatform::default());
    let mut psd = sim::create_file_card(&dir.join("psd"), Clock::System).unwrap();
    let kms = openpsd_core::crypto::IndiciumKey::from_bytes(&[0x11; 32]).unwrap();
    let req = Request {
        device: Some(DeviceId(*b"PSDTERM1")),
        ..Request::new(kms.public_key())
    };
    issuer::personalize_and_fund(
        &mut psd,
        &mut OsPlatform::default(),
        &req,
        &kms,
        Some((&scheme, 5)),
        Amount(100_000),
    )
    .unwrap();
    drop(psd);
    make_purse(&dir.join("purse"), &scheme, *b"PURSE001");
    let out = driver::transfer(
        &mut link(&dir.join("psd")),
        &mut link(&dir.join("purse")),
        RegisterSetIndex(0),
        Amount(balance),
        PIN,
    )
    .unwrap();
    assert_eq!(out.purse.balance, Amount(balance));
    scheme
}

fn make_purse(dir: &Path, scheme: &Scheme, id: [u8; 8]) {
    let mut card = sim::create_file_card(dir, Clock::System).unwrap();
    let req = PurseRequest {
        card: Some(CardId(id)),
        pin: zeroize::Zeroizing::new(PIN.to_vec()),
        max_balance: Amount(50_000),
        max_transfer: Amount(10_000),
        pin_tries: 3,
        max_failures: 5,
    };
    issuer::personalize_purse(&mut card, &mut OsPlatform::default(), scheme, &req).unwrap();
}

fn terminal(dir: &Path, scheme: &Scheme) -> Terminal {
    Terminal::init(
        &dir.join("terminal.db"),
        TERMINAL,
        scheme.id,
        scheme.issuer_key.public_key(),
    )
    .unwrap()
}

fn balance(dir: &Path) -> Amount {
    driver::purse_info(&mut link(dir)).unwrap().unwrap().balance
}

/// A link that loses the replies of the first `lose` PURCHASE commands (the card runs
/// them) and lets the test look at each PURCHASE before it is sent.
struct Lossy<F: FnMut(&[u8])> {
    inner: FileCard,
    lose: Rc<Cell<u32>>,
    before_purchase: F,
}

impl<F: FnMut(&[u8])> Link for Lossy<F> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, openpsd_core::client::LinkError> {
        let purchase = apdu.get(1) == Some(&purse_ins::PURCHASE);
        if purchase {
            (self.before_purchase)(apdu);
        }
        let resp = self.inner.transmit(apdu)?;
        if purchase && self.lose.get() > 0 {
            self.lose.set(self.lose.get() - 1);
            return Err("reply lost (test)".into());
        }
        Ok(resp)
    }
}

#[test]
fn pay_batch_totals_replay_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path(), 1_000);
    let purse = dir.path().join("purse");
    let mut t = terminal(dir.path(), &scheme);

    let p1 = t.pay(&mut link(&purse), Amount(250), date(), PIN).unwrap();
    assert_eq!(
        (
            p1.amount,
            p1.balance_after,
            p1.terminal_counter,
            p1.card_number,
            p1.batch
        ),
        (250, 750, 1, 1, 1)
    );
    let p2 = t.pay(&mut link(&purse), Amount(125), date(), PIN).unwrap();
    assert_eq!((p2.terminal_counter, p2.card_number), (2, 2));
    assert_eq!(balance(&purse), Amount(625));

    let b = t.batch(None).unwrap();
    assert_eq!((b.seq, b.count, b.total, b.closed_at), (1, 2, 375, None));
    assert_eq!(b.per_card.len(), 1);
    assert_eq!(b.per_card[0].card_id, "5055525345303031");

    // The same signed record again: refused, nothing added.
    let export = openpsd_terminal::RecordExport {
        record: p1.record.clone(),
        public_key: p1.public_key.clone(),
        certificate: p1.certificate.clone(),
    };
    let e = t.import(&export).unwrap_err();
    assert!(matches!(e, TerminalError::Replayed(_)), "{e}");
    assert!(e.to_string().contains("replayed"), "{e}");
    assert_eq!(t.batch(None).unwrap().total, 375);

    // A tampered record does not verify.
    let mut bad = export.clone();
    let mut bytes = hex::decode(&bad.record).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    bad.record = hex::encode(bytes);
    assert!(matches!(
        t.import(&bad).unwrap_err(),
        TerminalError::BadRecord(_)
    ));

    // Close: batch 1 submitted; the next purchase opens batch 2.
    let closed = t.close_batch().unwrap();
    assert_eq!((closed.seq, closed.total), (1, 375));
    assert!(closed.closed_at.is_some());
    assert!(t.close_batch().is_err(), "nothing open to close");
    let p3 = t.pay(&mut link(&purse), Amount(100), date(), PIN).unwrap();
    assert_eq!((p3.batch, p3.terminal_counter), (2, 3));
    assert_eq!(t.batch(None).unwrap().total, 100);
    assert_eq!(t.batch(Some(1)).unwrap().total, 375);

    // The terminal reopens from its file with everything.
    drop(t);
    let t = Terminal::open(&dir.path().join("terminal.db")).unwrap();
    assert_eq!(t.info().last_counter, 3);
    assert_eq!(t.batch(Some(2)).unwrap().count, 1);
}

#[test]
fn a_lost_reply_is_retried_with_the_same_counter_and_debited_once() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path(), 1_000);
    let purse = dir.path().join("purse");
    let db = dir.path().join("terminal.db");
    let mut t = terminal(dir.path(), &scheme);

    // The counter is committed before the PURCHASE leaves: a second connection to the
    // database sees it while the command is on its way.
    let seen = Rc::new(Cell::new(0u32));
    let seen2 = seen.clone();
    let lose = Rc::new(Cell::new(1));
    let mut l = Lossy {
        inner: link(&purse),
        lose: lose.clone(),
        before_purchase: move |apdu: &[u8]| {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let last: u32 = conn
                .query_row("SELECT last_counter FROM terminal", [], |r| r.get(0))
                .unwrap();
            let counter = u32::from_be_bytes(apdu[5 + 8..5 + 12].try_into().unwrap());
            assert_eq!(last, counter, "the counter is on disk before the PURCHASE");
            seen2.set(seen2.get() + 1);
        },
    };
    let p = t.pay(&mut l, Amount(300), date(), PIN).unwrap();
    drop(l); // the card's state directory is held while a link to it lives
    assert_eq!(seen.get(), 2, "sent twice: the reply of the first was lost");
    assert_eq!((p.terminal_counter, p.card_number), (1, 1));
    assert_eq!(balance(&purse), Amount(700), "debited once");
    assert_eq!(t.batch(None).unwrap().count, 1);
}

#[test]
fn an_unfinished_purchase_is_finished_by_the_next_pay_with_that_card() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path(), 1_000);
    let purse = dir.path().join("purse");
    let mut t = terminal(dir.path(), &scheme);

    // Every reply lost: the pay fails, the card has paid, the attempt stays open.
    let mut l = Lossy {
        inner: link(&purse),
        lose: Rc::new(Cell::new(10)),
        before_purchase: |_: &[u8]| {},
    };
    let e = t.pay(&mut l, Amount(200), date(), PIN).unwrap_err();
    drop(l);
    assert!(
        matches!(e, TerminalError::ReplyLost { counter: 1, .. }),
        "{e}"
    );
    assert_eq!(balance(&purse), Amount(800));
    assert_eq!(t.batch(None).unwrap().count, 0);

    // Another amount is refused while it is open, with what to do.
    let e = t
        .pay(&mut link(&purse), Amount(999), date(), PIN)
        .unwrap_err();
    assert!(
        matches!(e, TerminalError::Unfinished { counter: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("pay 2.00 again"), "{e}");

    // The same card and amount: the card returns the same record; one debit in all.
    let p = t.pay(&mut link(&purse), Amount(200), date(), PIN).unwrap();
    assert!(p.resumed);
    assert_eq!(
        (p.terminal_counter, p.card_number, p.balance_after),
        (1, 1, 800)
    );
    assert_eq!(balance(&purse), Amount(800));
    let p = t.pay(&mut link(&purse), Amount(200), date(), PIN).unwrap();
    assert!(!p.resumed);
    assert_eq!((p.terminal_counter, p.balance_after), (2, 600));
    assert_eq!(t.batch(None).unwrap().total, 400);
}

#[test]
fn an_unfinished_purchase_the_card_never_made_is_dropped_and_void_works() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path(), 1_000);
    let purse = dir.path().join("purse");
    let mut t = terminal(dir.path(), &scheme);
    // The PURCHASE never reaches the card.
    struct Dead(FileCard);
    impl Link for Dead {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, openpsd_core::client::LinkError> {
            if apdu.get(1) == Some(&purse_ins::PURCHASE) {
                return Err("link down (test)".into());
            }
            self.0.transmit(apdu)
        }
    }
    let e = t
        .pay(&mut Dead(link(&purse)), Amount(150), date(), PIN)
        .unwrap_err();
    assert!(matches!(e, TerminalError::ReplyLost { .. }), "{e}");
    assert_eq!(balance(&purse), Amount(1_000));
    // Finishing it sends it now (the card never paid): one debit.
    let p = t.pay(&mut link(&purse), Amount(150), date(), PIN).unwrap();
    assert!(p.resumed);
    assert_eq!(balance(&purse), Amount(850));

    // Void drops an open attempt.
    let _ = t.pay(&mut Dead(link(&purse)), Amount(50), date(), PIN);
    let (counter, _, amount) = t.void_open_attempt().unwrap().unwrap();
    assert_eq!((counter, amount), (2, Amount(50)));
    assert!(t.void_open_attempt().unwrap().is_none());
    let p = t.pay(&mut link(&purse), Amount(75), date(), PIN).unwrap();
    assert_eq!(
        p.terminal_counter, 3,
        "a voided counter is never used again"
    );
}

#[test]
fn other_schemes_wrong_pins_and_bad_input_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scheme = setup(dir.path(), 1_000);
    let purse = dir.path().join("purse");
    let mut t = terminal(dir.path(), &scheme);

    // A purse of another scheme (another issuer).
    let other = Scheme::generate(Some(8), &mut OsPlatform::default());
    make_purse(&dir.path().join("other"), &other, *b"OTHER001");
    let e = t
        .pay(
            &mut link(&dir.path().join("other")),
            Amount(100),
            date(),
            PIN,
        )
        .unwrap_err();
    assert!(matches!(e, TerminalError::OtherScheme { .. }), "{e}");
    // Same scheme ID, another issuer key: not certified.
    let forged = Scheme::generate(Some(7), &mut OsPlatform::default());
    make_purse(&dir.path().join("forged"), &forged, *b"FORGED01");
    let e = t
        .pay(
            &mut link(&dir.path().join("forged")),
            Amount(100),
            date(),
            PIN,
        )
        .unwrap_err();
    assert!(matches!(e, TerminalError::NotCertified(_)), "{e}");

    // A wrong PIN: refused with the tries left; no counter spent.
    let e = t
        .pay(&mut link(&purse), Amount(100), date(), b"0000")
        .unwrap_err();
    assert!(e.to_string().contains("wrong PIN: 2 tries left"), "{e}");
    assert_eq!(t.info().last_counter, 0);
    // More than the balance: the card refuses; its counter is spent, nothing kept.
    let e = t
        .pay(&mut link(&purse), Amount(5_000), date(), PIN)
        .unwrap_err();
    match &e {
        TerminalError::Card(c) => assert_eq!(c.status(), Some(Status::InsufficientFunds)),
        other => panic!("{other}"),
    }
    assert!(t.pay(&mut link(&purse), Amount(0), date(), PIN).is_err());
    assert_eq!(balance(&purse), Amount(1_000));
    assert_eq!(t.batch(None).unwrap().count, 0);
    let p = t.pay(&mut link(&purse), Amount(100), date(), PIN).unwrap();
    assert_eq!(p.terminal_counter, 2);

    // A database that holds a terminal is not initialized twice.
    assert!(Terminal::init(
        &dir.path().join("terminal.db"),
        TERMINAL,
        scheme.id,
        scheme.issuer_key.public_key()
    )
    .is_err());
    assert!(Terminal::open(&dir.path().join("missing.db")).is_err());
}
