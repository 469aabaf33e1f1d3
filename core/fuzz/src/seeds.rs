//! The seed corpus: meaningful command sequences the fuzzer mutates from. Deterministic
//! (fixed keys, fixed platform seed), so `cargo run --bin gen-corpus` always writes the
//! same files.

use openpsd_core::client::psd_apdu;
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::psd::settle::{settle_transfer_data, Decision};
use openpsd_core::psd::transfer::Pending;
use openpsd_core::psd::{psd_card, PSD_AID};
use openpsd_core::store::MemStore;
use openpsd_core::types::*;

use openpsd_core::psd::license::request::{LicenseAsk, LicenseRequest};

use crate::harness::{funded_nvm, grant_for, personalization, today, LICENSES};
use crate::input::{Input, Op, Start};

/// A command APDU in extended form even when short form would do: `00 Lc Lc data Le Le`,
/// `ne` 0 meaning no Le and 65536 encoded as `00 00`.
pub fn extended(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: u32) -> Vec<u8> {
    let mut a = vec![cla, ins, p1, p2, 0x00];
    if !data.is_empty() {
        a.extend_from_slice(&(data.len() as u16).to_be_bytes());
        a.extend_from_slice(data);
    }
    if ne > 0 {
        a.extend_from_slice(&((ne & 0xFFFF) as u16).to_be_bytes());
    }
    a
}

/// A short APDU: `CLA INS P1 P2 [Lc data] [Le]`.
pub fn short(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u8>) -> Vec<u8> {
    let mut a = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        a.push(data.len() as u8);
        a.extend_from_slice(data);
    }
    a.extend(le);
    a
}

/// An indicium request on `set`'s town, November 2026.
pub fn request(set: u8, txn: u64, postage: u64, day: u8) -> IndiciumRequest {
    IndiciumRequest {
        transaction: TransactionId(txn.to_be_bytes()),
        postage: Amount(postage),
        date: Date::new(2026, 11, day).expect("valid day"),
        rate: RateCategory(1),
        origin: PostalCode::new(LICENSES[usize::from(set) % 2].1).expect("valid code"),
        destination: PostalCode::new(b"20095").expect("valid code"),
    }
}

fn issue(set: u8, txn: u64, postage: u64, day: u8) -> Op {
    Op::Apdu(psd_apdu::issue_indicium(
        RegisterSetIndex(set),
        &request(set, txn, postage, day),
    ))
}

fn apdu(a: Vec<u8>) -> Op {
    Op::Apdu(a)
}

fn read(set: u8) -> Op {
    apdu(psd_apdu::read_registers(RegisterSetIndex(set)))
}

/// Splits `cmd`'s data into a chain (`CLA | 0x10` for every part but the last).
fn chain(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], part: usize, le: Option<u8>) -> Vec<Op> {
    let parts: Vec<&[u8]> = data.chunks(part).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i + 1 < parts.len() {
                apdu(short(cla | 0x10, ins, p1, p2, p, None))
            } else {
                apdu(short(cla, ins, p1, p2, p, le))
            }
        })
        .collect()
}

/// GENERATE KEY (postmark) and the INSTALL KEY CERTIFICATE for the key it makes, as the
/// first GENERATE KEY of a run on `nvm` produces it (the platform is seeded).
fn certmeter_key_apdus(nvm: &openpsd_core::store::Nvm) -> (Vec<u8>, Vec<u8>) {
    use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
    let store = MemStore::open(nvm.clone()).expect("fixture opens");
    let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
    card.transmit(&psd_apdu::select());
    let generate = psd_apdu::generate_key(Purpose::Postmark, false);
    let resp = card.transmit(&generate);
    let a = KeyAttestation::decode_unverified(&resp[..resp.len() - 2]).expect("attestation");
    let install = psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &crate::certmeter::postmark_certificate(&a.public_key),
    );
    (generate, install)
}

/// On the certmeter fixture: LOAD RATE TABLE (v2, with the agent fee), GENERATE KEY (agent)
/// and the INSTALL KEY CERTIFICATE for the key it makes, as a run produces them (the
/// platform is seeded), and ISSUE AGENT CERTIFICATE of the fixed request; each checked to
/// succeed here, so the seed reaches the command's paid path.
fn certmeter_agent_apdus() -> [Vec<u8>; 4] {
    use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
    let store = MemStore::open(crate::certmeter::certmeter_nvm().clone()).expect("fixture");
    let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
    card.transmit(&psd_apdu::select());
    let ok = |resp: Vec<u8>, what: &str| {
        assert_eq!(
            psd_apdu::sw(&resp),
            0x9000,
            "agent seed: {what}: {resp:02X?}"
        );
        resp[..resp.len() - 2].to_vec()
    };
    let table = psd_apdu::load_rate_table(&crate::certmeter::agent_rate_table(2));
    ok(card.transmit(&table), "rate table");
    let generate = psd_apdu::generate_key(Purpose::AgentCa, false);
    let a = ok(card.transmit(&generate), "generate");
    let a = KeyAttestation::decode_unverified(&a).expect("attestation");
    let install = psd_apdu::install_key_certificate(
        a.slot,
        RegisterSetIndex(0),
        &crate::certmeter::agent_certificate(&a.public_key),
    );
    ok(card.transmit(&install), "install");
    let issue = agent_issue(0, 1, &crate::certmeter::agent_csr());
    ok(card.transmit(&issue), "issue");
    [table, generate, install, issue]
}

/// ISSUE AGENT CERTIFICATE on set `set`.
fn agent_issue(set: u8, txn: u8, csr: &[u8]) -> Vec<u8> {
    psd_apdu::issue_agent_certificate(
        RegisterSetIndex(set),
        &openpsd_core::psd::certmeter::agent::AgentRequest {
            transaction: TransactionId([txn; 8]),
            days: 30,
            csr: csr.to_vec(),
        },
    )
}

/// ISSUE AGENT CERTIFICATE mode 01 (the card generates the key) on set `set`.
fn agent_keygen(set: u8, txn: u8, password: &[u8]) -> Vec<u8> {
    psd_apdu::generate_agent_certificate(
        RegisterSetIndex(set),
        &crate::certmeter::agent_generate_request(txn, password),
    )
    .to_vec()
}

/// ISSUE POSTMARK on set `set`.
fn postmark(set: u8, txn: u8, digest: u8, nonce: &[u8]) -> Vec<u8> {
    psd_apdu::issue_postmark(
        RegisterSetIndex(set),
        &openpsd_core::psd::certmeter::postmark::PostmarkRequest {
            transaction: TransactionId([txn; 8]),
            digest: [digest; 32],
            nonce: nonce.to_vec(),
        },
    )
}

/// VALIDATE POSTMARK of the postmark `postmark(0, 1, 0xB0, &[])` makes on the certmeter
/// fixture (the platform is seeded), with the active key's certificate: the good request,
/// and the ones with another digest and a flipped signature bit.
fn certmeter_validate_apdus() -> Vec<Vec<u8>> {
    use openpsd_core::psd::certmeter::info::CertMeterInfo;
    use openpsd_core::psd::certmeter::validate::ValidateRequest;
    let nvm = crate::certmeter::certmeter_nvm();
    let store = MemStore::open(nvm.clone()).expect("fixture opens");
    let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
    card.transmit(&psd_apdu::select());
    let resp = card.transmit(&postmark(0, 1, 0xB0, &[]));
    let compact = resp[..resp.len() - 2].to_vec();
    let resp = card.transmit(&psd_apdu::get_certmeter_data());
    let info = CertMeterInfo::decode(&resp[..resp.len() - 2]).expect("info");
    let cert = info
        .slots
        .iter()
        .find(|s| !s.certificate.is_empty())
        .expect("certified key")
        .certificate
        .clone();
    let req = |txn: u8, postmark: &[u8], digest: u8| {
        psd_apdu::validate_postmark(
            RegisterSetIndex(0),
            &ValidateRequest {
                transaction: TransactionId([txn; 8]),
                postmark: postmark.to_vec(),
                certificate: cert.clone(),
                digest: [digest; 32],
            },
        )
    };
    let mut flipped = compact.clone();
    if let Some(b) = flipped.last_mut() {
        *b ^= 1;
    }
    // The seed reaches the paid path: the good request succeeds on this very card.
    let good = req(0x11, &compact, 0xB0);
    assert_eq!(
        psd_apdu::sw(&card.transmit(&good)),
        0x9000,
        "validation seed"
    );
    vec![
        good,
        req(0x12, &compact, 0xB1),
        req(0x13, &flipped, 0xB0),
        req(0x14, &compact[1..], 0xB0),
    ]
}

/// The certificate meter's seeds: setup from a funded card, postmarks, refusals, power
/// cuts, key rotation.
fn certmeter_seeds() -> Vec<(&'static str, Start, Vec<Op>)> {
    use crate::certmeter::{ca_anchor, rate_table};
    use openpsd_core::psd::certmeter::attestation::Purpose;
    use Start::*;
    // The funded fixture with the table and the anchor, as the setup seed makes it.
    let with_table = {
        let store = MemStore::open(funded_nvm().clone()).expect("fixture opens");
        let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
        card.transmit(&psd_apdu::select());
        card.transmit(&psd_apdu::load_rate_table(&rate_table(1)));
        card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(1)));
        card.store().nvm().clone()
    };
    let (generate, install) = certmeter_key_apdus(&with_table);
    let (_, rotate_install) = certmeter_key_apdus(crate::certmeter::certmeter_nvm());
    let cm_data = || apdu(psd_apdu::get_certmeter_data());
    let [agent_table, agent_generate, agent_install, agent_first] = certmeter_agent_apdus();
    let csr = crate::certmeter::agent_csr();
    let mut bad_sig = csr.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    let mut outside = csr.clone();
    // "fuzz customer" → "fuzz custoMer" in the subject: outside the constraints, but its
    // signature no longer verifies, which the PSD checks first (6A80).
    let at = outside
        .windows(8)
        .position(|w| w == b"customer")
        .expect("subject in the request");
    outside[at + 6] ^= 0x20;
    let mut mode_01 = agent_first.clone();
    mode_01[2] = 1;
    vec![
        (
            "certmeter-agent",
            Certmeter,
            vec![
                apdu(agent_issue(0, 9, &csr)),
                apdu(agent_table),
                apdu(agent_generate),
                apdu(agent_install),
                apdu(agent_first.clone()),
                apdu(agent_first.clone()),
                apdu(agent_issue(0, 1, &bad_sig)),
                apdu(agent_issue(1, 1, &csr)),
                apdu(agent_issue(0, 2, &outside)),
                apdu(mode_01),
                // Mode 01: the card generates the key; the retry (same password) gets the
                // same bytes, another password or a short one is refused.
                apdu(agent_keygen(0, 6, b"fuzz password")),
                apdu(agent_keygen(0, 6, b"fuzz password")),
                apdu(agent_keygen(0, 6, b"other password")),
                apdu(agent_keygen(0, 7, b"short")),
                Op::PowerCut {
                    at_write: 1,
                    torn: false,
                    apdu: agent_keygen(0, 8, b"fuzz password"),
                },
                apdu(agent_keygen(0, 8, b"fuzz password")),
                Op::PowerCut {
                    at_write: 1,
                    torn: true,
                    apdu: agent_issue(1, 3, &csr),
                },
                apdu(agent_issue(1, 3, &csr)),
                apdu(postmark(0, 4, 0xB0, &[])),
                apdu(agent_issue(0, 5, &csr[..csr.len() / 2])),
                cm_data(),
                read(0),
            ],
        ),
        (
            "certmeter-setup",
            Funded,
            vec![
                apdu(generate.clone()),
                apdu(psd_apdu::load_rate_table(&rate_table(1))),
                apdu(psd_apdu::load_rate_table(&rate_table(1))),
                apdu(psd_apdu::load_trust_anchor(&ca_anchor(1))),
                apdu(generate.clone()),
                apdu(generate.clone()),
                apdu(install.clone()),
                apdu(install),
                apdu(postmark(0, 1, 0xD0, &[])),
                cm_data(),
                read(0),
            ],
        ),
        (
            "certmeter-postmark",
            Certmeter,
            vec![
                apdu(postmark(0, 1, 0xD0, &[1, 2])),
                apdu(postmark(0, 1, 0xD0, &[1, 2])),
                apdu(postmark(0, 1, 0xD1, &[1, 2])),
                apdu(postmark(1, 2, 0xD2, &[])),
                apdu(postmark(0, 3, 0xD3, &[0x80; 16])),
                apdu(postmark(0, 4, 0xD4, &[0, 1])),
                apdu(postmark(2, 5, 0xD5, &[])),
                cm_data(),
                read(0),
            ],
        ),
        (
            "certmeter-clock",
            Certmeter,
            vec![
                Op::Clock { day: 0 },
                apdu(postmark(0, 1, 0xC0, &[])),
                Op::Clock { day: 25 },
                apdu(postmark(0, 2, 0xC1, &[])),
                Op::Clock { day: 22 },
                apdu(postmark(0, 3, 0xC2, &[])),
                Op::Clock { day: 30 },
                apdu(psd_apdu::load_rate_table(&rate_table(2))),
                apdu(psd_apdu::load_rate_table(&rate_table(1))),
                apdu(psd_apdu::load_trust_anchor(&ca_anchor(1))),
                apdu(postmark(0, 4, 0xC3, &[])),
                cm_data(),
            ],
        ),
        (
            "certmeter-power-cuts",
            Certmeter,
            vec![
                Op::PowerCut {
                    at_write: 1,
                    torn: false,
                    apdu: postmark(0, 1, 0xE0, &[]),
                },
                apdu(postmark(0, 1, 0xE0, &[])),
                Op::PowerCut {
                    at_write: 3,
                    torn: true,
                    apdu: postmark(0, 2, 0xE1, &[7]),
                },
                apdu(postmark(0, 2, 0xE1, &[7])),
                Op::PowerCut {
                    at_write: 2,
                    torn: true,
                    apdu: psd_apdu::generate_key(Purpose::Sign, false),
                },
                apdu(psd_apdu::generate_key(Purpose::Sign, false)),
                Op::Arm {
                    at_write: 0,
                    torn: false,
                },
                apdu(psd_apdu::load_rate_table(&rate_table(3))),
                cm_data(),
            ],
        ),
        ("certmeter-validate-sign", Certmeter, {
            let v = certmeter_validate_apdus();
            let sign = |txn: u8| {
                psd_apdu::sign(
                    RegisterSetIndex(0),
                    &openpsd_core::psd::certmeter::sign::SignRequest {
                        transaction: TransactionId([txn; 8]),
                        digest: [0x5E; 32],
                    },
                )
            };
            vec![
                apdu(postmark(0, 1, 0xB0, &[])),
                apdu(v[0].clone()),
                apdu(v[0].clone()),
                apdu(v[1].clone()),
                apdu(v[2].clone()),
                apdu(v[3].clone()),
                Op::PowerCut {
                    at_write: 2,
                    torn: true,
                    apdu: v[1].clone(),
                },
                apdu(sign(0x21)),
                apdu(sign(0x11)),
                cm_data(),
                read(0),
            ]
        }),
        (
            "certmeter-rotate",
            Certmeter,
            vec![
                apdu(postmark(0, 1, 0xA0, &[])),
                apdu(generate),
                apdu(postmark(0, 2, 0xA1, &[])),
                apdu(rotate_install.clone()),
                apdu(rotate_install),
                apdu(postmark(0, 3, 0xA2, &[])),
                apdu(psd_apdu::generate_key(Purpose::Payment, false)),
                apdu(psd_apdu::generate_key(Purpose::Sign, true)),
                apdu(psd_apdu::generate_key(Purpose::AgentCa, false)),
                apdu(psd_apdu::generate_key(Purpose::Sign, false)),
                cm_data(),
            ],
        ),
    ]
}

/// A REFILL APDU the KMS seals for set `set` of the funded fixture as it is at start.
fn funded_refill(set: u8, amount: u64, id: u8) -> Vec<u8> {
    let store = MemStore::open(funded_nvm().clone()).expect("fixture opens");
    let mut p = openpsd_core::platform::SeededPlatform::new(0);
    p.today = Some(today());
    let mut card = psd_card(store, p).expect("fixture loads");
    card.transmit(&psd_apdu::select());
    let msg = crate::harness::kms_refill_message(&mut card, set, amount, id);
    psd_apdu::refill(RegisterSetIndex(set), &msg)
}

/// LICENSE REQUEST for 9001 at 10115 and the valid LICENSE INSTALL answering it, as the
/// first request of a run on the funded fixture produces them (the platform is seeded).
fn funded_license_apdus() -> (Vec<u8>, Vec<u8>) {
    let store = MemStore::open(funded_nvm().clone()).expect("fixture opens");
    let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
    card.transmit(&psd_apdu::select());
    let ask = LicenseAsk {
        license: LicenseId(9001),
        origin: PostalCode::new(b"10115").expect("valid code"),
    };
    let request = psd_apdu::license_request(&ask, false);
    let resp = card.transmit(&request);
    let req = LicenseRequest::decode(&resp[..resp.len() - 2]).expect("request decodes");
    (request, psd_apdu::license_install(&grant_for(&req, 0, 0)))
}

fn grant(license: u8, flags: u8, corrupt: u8) -> Op {
    Op::GrantLicense {
        license,
        flags,
        corrupt,
    }
}

fn export(slot: u8, mode: u8) -> Op {
    Op::Export { slot, mode }
}

fn retire(which: u8, forget: bool) -> Op {
    Op::Retire { which, forget }
}

fn import(which: u8, corrupt: u8) -> Op {
    Op::Import { which, corrupt }
}

/// Op::Transfer: `mode` 0 transfer, 1 resolve, 2 issuer's reset, 3 forged reset; `fault`
/// 0 none, else `step` gets `kind` (0 lost, 1 bit flipped, 2 power cut, 3 sent twice).
fn transfer(mode: u8, set: u8, amount: u16, fault: Option<(u8, u8)>) -> Op {
    Op::Transfer {
        mode,
        set,
        amount,
        fault: fault.map_or(0, |(step, kind)| 1 + step + 16 * kind),
    }
}

/// The issuer's settlement of the transfer start's pending transfer number `transfer` of
/// `amount` on set 0 for the fixture's purse (its count 0), with counter 1; `forged`:
/// signed by another key.
fn settlement(transfer: u32, amount: u64, d: Decision, forged: bool) -> Vec<u8> {
    let pending = Pending {
        card: CardId(*b"PURSE001"),
        set: 0,
        transfer: TransferCount(transfer),
        card_transfers: TransferCount(0),
        amount: Amount(amount),
    };
    let issuer = if forged {
        openpsd_core::crypto::IndiciumKey::from_bytes(&[0x5A; 32]).expect("valid scalar")
    } else {
        crate::purse::issuer()
    };
    psd_apdu::transfer_settle(&settle_transfer_data(
        &issuer,
        crate::harness::DEVICE,
        &pending,
        1,
        d,
    ))
}

/// Seeds of the transfer start: transfers whole, and with each message lost, changed, cut
/// or repeated, resolutions, blocked recognition and the issuer's reset.
fn transfer_seeds() -> Vec<(&'static str, Start, Vec<Op>)> {
    use Start::Transfer as T;
    let t = |amount, fault| transfer(0, 0, amount, fault);
    let resolve = || transfer(1, 0, 0, None);
    vec![
        (
            "transfer",
            T,
            vec![
                t(1_000, None),
                transfer(0, 1, 2_500, None),
                read(0),
                read(1),
                apdu(psd_apdu::get_transfer_data()),
            ],
        ),
        // The value message lost: the purse never credited; resolved as undone.
        (
            "transfer-lost-value",
            T,
            vec![t(700, Some((9, 0))), resolve(), t(700, None)],
        ),
        // The acknowledgement lost: the purse credited; resolved as completed.
        (
            "transfer-lost-ack",
            T,
            vec![
                t(800, Some((10, 0))),
                export(0, 1),
                issue(0, 7, 100, 21),
                resolve(),
                t(900, None),
            ],
        ),
        (
            "transfer-changed-messages",
            T,
            (2..11u8)
                .map(|step| t(100 + u16::from(step), Some((step, 1))))
                .chain([resolve(), transfer(1, 0, 0, Some((6, 1))), resolve()])
                .collect(),
        ),
        (
            "transfer-power-cuts",
            T,
            (4..11u8)
                .flat_map(|step| [t(300, Some((step, 2))), resolve()])
                .chain([
                    Op::Arm {
                        at_write: 2,
                        torn: true,
                    },
                    t(50, None),
                    resolve(),
                ])
                .collect(),
        ),
        (
            "transfer-repeated",
            T,
            (2..11u8)
                .flat_map(|step| [t(200, Some((step, 3))), resolve()])
                .collect(),
        ),
        (
            "transfer-blocked-reset",
            T,
            vec![
                t(10, Some((4, 1))),
                t(10, Some((4, 1))),
                t(10, Some((4, 1))),
                t(10, Some((4, 1))),
                t(10, Some((4, 1))),
                t(10, None),
                transfer(3, 0, 1, None),
                transfer(2, 0, 1, None),
                transfer(2, 0, 1, None),
                t(10, None),
            ],
        ),
        (
            "transfer-limits",
            T,
            vec![
                t(0, None),
                t(20_000, None),
                t(20_001, None),
                t(20_000, None),
                t(20_000, None),
                transfer(0, 3, 10, None),
                transfer(0, 1, 20_000, None),
            ],
        ),
        // The purse is never seen again: the issuer settles the pending transfer (the
        // fixture's first: number 0, the card's count 0, set 0) and the next transfer
        // goes; a replayed settlement (nothing pending) and a forged one are refused.
        (
            "transfer-lost-value-settled",
            T,
            vec![
                t(700, Some((9, 0))),
                apdu(settlement(0, 700, Decision::Undo, false)),
                apdu(settlement(0, 700, Decision::Undo, false)),
                t(700, None),
            ],
        ),
        (
            "transfer-lost-ack-settled",
            T,
            vec![
                t(800, Some((10, 0))),
                apdu(settlement(0, 800, Decision::Complete, true)),
                apdu(settlement(0, 800, Decision::Complete, false)),
                t(900, None),
            ],
        ),
        (
            "transfer-raw",
            T,
            vec![
                apdu(psd_apdu::open_session()),
                apdu(psd_apdu::authenticate_card(&[0; 64])),
                apdu(psd_apdu::transfer_debit(RegisterSetIndex(0), &[0; 40])),
                apdu(psd_apdu::transfer_confirm(&[0; 24])),
                apdu(psd_apdu::transfer_resolve(&[0; 24])),
                apdu(psd_apdu::transfer_close()),
                apdu(psd_apdu::get_recognition_data()),
                apdu(psd_apdu::install_certificate(&[0x30, 0])),
                apdu(psd_apdu::load_revocation(&[0; 8])),
                t(10, Some((5, 0))),
                apdu(psd_apdu::transfer_debit(RegisterSetIndex(0), &[0; 40])),
            ],
        ),
    ]
}

/// The outside signer's seeds (PERSONALIZE P1 `01`, STORE SIGNATURE): an indicium left
/// pending, retried, refused for another transaction, wrong signatures, the right one
/// (computed on the fixture, whose bytes are deterministic), power cuts around both.
fn outside_seeds() -> Vec<(&'static str, Start, Vec<Op>)> {
    use crate::harness::{outside_nvm, outside_signer};
    use Start::*;
    let payload = {
        let store = MemStore::open(outside_nvm().clone()).expect("fixture opens");
        let mut card = psd_card(store, crate::harness::platform()).expect("fixture loads");
        card.transmit(&psd_apdu::select());
        let resp = card.transmit(&psd_apdu::issue_indicium(
            RegisterSetIndex(0),
            &request(0, 1, 123, 21),
        ));
        resp[..resp.len() - 2].to_vec()
    };
    let signature = outside_signer().sign(&payload);
    let mut bad = signature;
    bad[10] ^= 1;
    let store = |sig: &[u8; 64]| apdu(psd_apdu::store_signature(RegisterSetIndex(0), sig));
    let signer = outside_signer().public_key();
    let mut blank_outside = signer.to_vec();
    blank_outside.extend_from_slice(&personalization().encode());
    vec![
        (
            "outside-issue-store",
            Outside,
            vec![
                issue(0, 1, 123, 21),
                issue(0, 1, 123, 21),
                issue(0, 2, 50, 21),
                store(&bad),
                apdu(short(0x80, 0x46, 0x00, 0x00, &signature[..60], Some(0))),
                store(&signature),
                store(&signature),
                issue(0, 1, 123, 21),
                issue(0, 2, 50, 21),
                issue(1, 3, 70, 21),
            ],
        ),
        (
            "outside-power-cuts",
            Outside,
            vec![
                Op::PowerCut {
                    at_write: 1,
                    torn: true,
                    apdu: psd_apdu::issue_indicium(RegisterSetIndex(0), &request(0, 1, 123, 21)),
                },
                issue(0, 1, 123, 21),
                Op::PowerCut {
                    at_write: 0,
                    torn: false,
                    apdu: psd_apdu::store_signature(RegisterSetIndex(0), &signature),
                },
                issue(0, 1, 123, 21),
                store(&signature),
            ],
        ),
        (
            "outside-personalize",
            Blank,
            vec![
                apdu(psd_apdu::personalize_outside(&signer, &personalization())),
                apdu(psd_apdu::get_data()),
                apdu(short(0x80, 0x10, 0x01, 0x00, &blank_outside[..64], Some(0))),
                store(&signature),
            ],
        ),
    ]
}

/// Every seed: a file name and the input.
pub fn seeds() -> Vec<(&'static str, Input)> {
    use Start::*;
    let select = || apdu(psd_apdu::select());
    let get_data = || apdu(psd_apdu::get_data());
    let get_response = |le: Option<u8>| apdu(short(0x00, 0xC0, 0x00, 0x00, &[], le));
    let personalize = psd_apdu::personalize(&personalization());
    let issue_data = request(0, 900, 250, 21).encode();
    let refill0 = funded_refill(0, 1_000, 0x11);

    let mut s: Vec<(&'static str, Start, Vec<Op>)> = vec![
        ("select", Funded, vec![select()]),
        ("get-data", Funded, vec![get_data(), select(), get_data()]),
        ("read-registers", Funded, (0..5).map(read).collect()),
        (
            "issue",
            Funded,
            vec![
                issue(0, 1, 123, 21),
                issue(0, 2, 10_000, 21),
                issue(1, 3, 55, 22),
            ],
        ),
        (
            "issue-retry",
            Funded,
            vec![
                issue(0, 5, 300, 21),
                issue(0, 5, 300, 21),
                issue(0, 5, 301, 21),
                issue(0, 6, 300, 21),
            ],
        ),
        (
            "issue-refusals",
            Funded,
            vec![
                issue(0, 10, 0, 21),
                issue(0, 11, 10_001, 21),
                apdu(psd_apdu::issue_indicium(
                    RegisterSetIndex(0),
                    &request(1, 12, 5, 21),
                )),
                issue(0, 13, 5, 23),
                issue(0, 14, 5, 22),
                issue(0, 15, 5, 30),
                issue(1, 16, 10_000, 23),
                issue(1, 17, 10_000, 23),
                issue(1, 18, 10_000, 23),
                issue(2, 19, 5, 23),
                apdu(short(0x80, 0x40, 0x00, 0x00, b"short", Some(0))),
                apdu(short(0x80, 0x40, 0x01, 0x00, &issue_data, Some(0))),
            ],
        ),
        (
            "audit",
            Funded,
            vec![
                apdu(psd_apdu::audit(RegisterSetIndex(0), &[0xA5; 16])),
                apdu(psd_apdu::audit(RegisterSetIndex(1), &[0x5A; 16])),
                apdu(psd_apdu::audit(RegisterSetIndex(2), &[0; 16])),
                apdu(short(0x80, 0x50, 0x00, 0x00, &[1; 15], Some(0))),
                apdu(short(0x80, 0x50, 0x00, 0x00, &[], Some(0))),
            ],
        ),
        (
            "refill-raw",
            Funded,
            vec![
                apdu(refill0.clone()),
                apdu(refill0.clone()),
                read(0),
                apdu(funded_refill(1, 2_000_000, 0x12)),
                apdu(funded_refill(1, 0, 0x13)),
            ],
        ),
        (
            "refill-kms",
            Funded,
            vec![
                Op::KmsRefill {
                    set: 0,
                    amount: 1_000,
                    id: 1,
                },
                Op::KmsRefill {
                    set: 1,
                    amount: 2_000_000,
                    id: 2,
                },
                Op::KmsRefill {
                    set: 1,
                    amount: 980_000,
                    id: 3,
                },
                Op::KmsRefill {
                    set: 3,
                    amount: 1,
                    id: 4,
                },
                issue(1, 20, 10_000, 21),
            ],
        ),
        (
            "refill-bad",
            Funded,
            vec![
                apdu({
                    let mut a = refill0.clone();
                    let n = a.len();
                    a[n - 2] ^= 1; // last MAC byte (before Le)
                    a
                }),
                apdu(short(0x80, 0x52, 0x00, 0x00, &[0xB1; 10], Some(0))),
                apdu({
                    let mut a = refill0.clone();
                    a[3] = 1; // set 1: wrong license
                    a
                }),
            ],
        ),
        ("chain-issue", Funded, {
            let mut v = chain(0x80, 0x40, 0x00, 0x00, &issue_data, 10, Some(0));
            v.push(read(0));
            v
        }),
        ("chain-interrupted", Funded, {
            let mut v = chain(0x80, 0x40, 0x00, 0x00, &issue_data, 10, Some(0));
            v.truncate(2);
            v.push(get_data());
            v.push(get_data());
            v.extend(
                chain(0x80, 0x40, 0x00, 0x00, &issue_data, 20, Some(0))
                    .into_iter()
                    .take(1),
            );
            v.push(apdu(short(
                0x80,
                0x40,
                0x00,
                0x01,
                &issue_data[20..],
                Some(0),
            )));
            v
        }),
        ("chain-too-long", Funded, {
            let part = vec![0x42; 4000];
            vec![
                apdu(extended(0x90, 0x40, 0x00, 0x00, &part, 0)),
                apdu(extended(0x90, 0x40, 0x00, 0x00, &part, 0)),
                apdu(extended(0x80, 0x40, 0x00, 0x00, &part, 65536)),
                read(0),
            ]
        }),
        ("chain-overflow-midway", Funded, {
            let part = vec![0x42; 3000];
            vec![
                apdu(extended(0x90, 0x40, 0x00, 0x00, &part, 0)),
                apdu(extended(0x90, 0x40, 0x00, 0x00, &part, 0)),
                apdu(extended(0x90, 0x40, 0x00, 0x00, &part, 0)),
                apdu(extended(0x80, 0x40, 0x00, 0x00, &part[..10], 0)),
                read(0),
            ]
        }),
        (
            "forged-refills",
            Funded,
            (0..5)
                .map(|mode| Op::ForgedRefill {
                    set: mode % 2,
                    amount: 1_000,
                    mode,
                })
                .chain([Op::KmsRefill {
                    set: 0,
                    amount: 1_000,
                    id: 5,
                }])
                .collect(),
        ),
        (
            "extended",
            Funded,
            vec![
                apdu(extended(0x80, 0x40, 0x00, 0x00, &issue_data, 65536)),
                apdu(extended(0x80, 0x32, 0x00, 0x00, &[], 65536)),
                apdu(extended(0x80, 0xCA, 0x00, 0x01, &[], 300)),
                apdu(extended(0x00, 0xA4, 0x04, 0x00, PSD_AID, 0)),
                apdu(extended(0x80, 0x50, 0x00, 0x01, &[9; 16], 2)),
                apdu(extended(0x00, 0xC0, 0x00, 0x00, &[], 65536)),
            ],
        ),
        (
            "get-response",
            Funded,
            vec![
                apdu(short(0x80, 0xCA, 0x00, 0x01, &[], Some(0x10))),
                get_response(Some(0x10)),
                get_response(Some(0x00)),
                apdu(short(0x80, 0x40, 0x00, 0x00, &issue_data, Some(0x20))),
                get_response(None),
                get_response(None),
                apdu(short(0x80, 0xCA, 0x00, 0x01, &[], Some(0x01))),
                apdu(short(0x00, 0xC0, 0x01, 0x00, &[], Some(0))),
                apdu(short(0x80, 0x32, 0x00, 0x00, &[], Some(0x08))),
                read(1),
                get_response(None),
            ],
        ),
        (
            "select-variants",
            Funded,
            vec![
                apdu(short(0x00, 0xA4, 0x04, 0x0C, &PSD_AID[..5], None)),
                apdu(short(0x00, 0xA4, 0x04, 0x04, PSD_AID, Some(0))),
                apdu(short(0x00, 0xA4, 0x04, 0x00, &PSD_AID[..4], Some(0))),
                apdu(short(0x00, 0xA4, 0x04, 0x00, &[0xA0, 0, 0, 0, 3], Some(0))),
                apdu(short(0x00, 0xA4, 0x00, 0x00, &[0x3F, 0x00], Some(0))),
                apdu(short(0x00, 0xA4, 0x04, 0x01, PSD_AID, Some(0))),
                apdu(short(0x00, 0xA4, 0x04, 0x00, &[], Some(0))),
                apdu(short(0x80, 0xA4, 0x04, 0x00, PSD_AID, Some(0))),
                read(0),
            ],
        ),
        (
            "class-errors",
            Funded,
            [0x01, 0x0C, 0x40, 0x60, 0xA0, 0xFF, 0x84, 0x00, 0x90]
                .iter()
                .map(|&cla| apdu(short(cla, 0x32, 0x00, 0x00, &[], Some(0))))
                .chain([
                    apdu(short(0x80, 0x00, 0x00, 0x00, &[], None)),
                    apdu(short(0x80, 0xC0, 0x00, 0x00, &[], None)),
                    read(0),
                ])
                .collect(),
        ),
        (
            "malformed",
            Funded,
            vec![
                apdu(vec![]),
                apdu(vec![0x80]),
                apdu(vec![0x80, 0x32, 0x00]),
                apdu(vec![0x80, 0x32, 0x00, 0x00, 0x05, 0x01]),
                apdu(vec![0x80, 0x32, 0x00, 0x00, 0x00, 0x00]),
                apdu(vec![0x80, 0x32, 0x00, 0x00, 0x00, 0x00, 0x01]),
                apdu(vec![
                    0x80, 0x40, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x02, 0x00,
                ]),
                apdu(vec![0x80, 0x40, 0x00, 0x00, 0x00, 0xFF, 0xFF]),
                read(0),
            ],
        ),
        (
            "reset",
            Funded,
            vec![Op::Reset, read(0), get_response(None), select(), read(0)],
        ),
        ("power-cut-issue", Funded, {
            let mut v: Vec<Op> = (0..8)
                .map(|k| Op::PowerCut {
                    at_write: k,
                    torn: k % 2 == 1,
                    apdu: psd_apdu::issue_indicium(RegisterSetIndex(0), &request(0, 40, 77, 21)),
                })
                .collect();
            v.push(issue(0, 40, 77, 21));
            v
        }),
        (
            "power-cut-refill",
            Funded,
            vec![
                Op::PowerCut {
                    at_write: 1,
                    torn: false,
                    apdu: refill0.clone(),
                },
                Op::PowerCut {
                    at_write: 2,
                    torn: true,
                    apdu: refill0.clone(),
                },
                Op::PowerCut {
                    at_write: 3,
                    torn: false,
                    apdu: refill0.clone(),
                },
                apdu(refill0.clone()),
                Op::KmsRefill {
                    set: 0,
                    amount: 5,
                    id: 9,
                },
            ],
        ),
        (
            "clock-reopen",
            Funded,
            vec![
                Op::Clock { day: 0 },
                issue(0, 50, 10, 30),
                Op::Clock { day: 21 },
                Op::Reopen,
                issue(0, 51, 10, 29),
                Op::Issue {
                    set: 1,
                    txn: 52,
                    postage: 40,
                    day: 29,
                },
                Op::Reopen,
                read(0),
            ],
        ),
        (
            "blank-personalize",
            Blank,
            vec![
                get_data(),
                read(0),
                issue(0, 1, 10, 21),
                apdu(psd_apdu::audit(RegisterSetIndex(0), &[0; 16])),
                apdu(personalize.to_vec()),
                get_data(),
                apdu(personalize.to_vec()),
                Op::KmsRefill {
                    set: 0,
                    amount: 50_000,
                    id: 1,
                },
                issue(0, 1, 10, 21),
                Op::Reopen,
                issue(0, 1, 10, 21),
            ],
        ),
        ("blank-personalize-chained", Blank, {
            let data = personalization().encode();
            let mut v = chain(0x80, 0x10, 0x00, 0x00, &data, 64, Some(0x20));
            v.extend([get_response(Some(0x20)), get_response(None), read(1)]);
            v
        }),
        (
            "blank-power-cut",
            Blank,
            vec![
                Op::PowerCut {
                    at_write: 2,
                    torn: true,
                    apdu: personalize.to_vec(),
                },
                Op::PowerCut {
                    at_write: 9,
                    torn: false,
                    apdu: personalize.to_vec(),
                },
                get_data(),
                apdu(personalize.to_vec()),
            ],
        ),
        (
            "personalized",
            Personalized,
            vec![
                issue(0, 1, 10, 21),
                Op::KmsRefill {
                    set: 1,
                    amount: 10_000,
                    id: 7,
                },
                Op::Issue {
                    set: 1,
                    txn: 1,
                    postage: 10_000,
                    day: 20,
                },
                Op::Issue {
                    set: 1,
                    txn: 2,
                    postage: 1,
                    day: 20,
                },
            ],
        ),
        (
            "structured",
            Funded,
            vec![
                Op::Issue {
                    set: 0,
                    txn: 1,
                    postage: 100,
                    day: 20,
                },
                Op::Issue {
                    set: 0,
                    txn: 1,
                    postage: 100,
                    day: 20,
                },
                Op::Issue {
                    set: 1,
                    txn: 2,
                    postage: 9_999,
                    day: 21,
                },
                Op::Issue {
                    set: 2,
                    txn: 3,
                    postage: 1,
                    day: 21,
                },
                Op::KmsRefill {
                    set: 1,
                    amount: 42,
                    id: 3,
                },
                Op::Reset,
                Op::Issue {
                    set: 0,
                    txn: 4,
                    postage: 1,
                    day: 21,
                },
                select(),
                Op::Issue {
                    set: 0,
                    txn: 4,
                    postage: 1,
                    day: 21,
                },
            ],
        ),
        (
            "license-install",
            Funded,
            vec![
                grant(1, 0, 0),
                grant(3, 0, 0),
                apdu(psd_apdu::get_license_data()),
                Op::KmsRefill {
                    set: 2,
                    amount: 30_000,
                    id: 1,
                },
                Op::Issue {
                    set: 2,
                    txn: 1,
                    postage: 500,
                    day: 21,
                },
                grant(0, 1, 0),
                grant(4, 0, 0),
                Op::Reopen,
                read(3),
                Op::Issue {
                    set: 3,
                    txn: 2,
                    postage: 5,
                    day: 21,
                },
            ],
        ),
        (
            "license-forged",
            Funded,
            (1..10)
                .map(|c| grant(5, 0, c))
                .chain([grant(5, 2, 0), grant(6, 8, 0), grant(7, 12, 0)])
                .chain([Op::Issue {
                    set: 3,
                    txn: 1,
                    postage: 5,
                    day: 21,
                }])
                .collect(),
        ),
        (
            "license-refusals",
            Funded,
            vec![
                issue(0, 1, 10, 21),
                grant(6, 8, 0),
                grant(6, 2 | 12, 0),
                Op::Issue {
                    set: 2,
                    txn: 2,
                    postage: 10,
                    day: 21,
                },
                grant(0, 2, 10),
                grant(0, 2, 20),
                export(2, 1),
                grant(0, 2, 20),
                grant(0, 0, 0),
                export(3, 0x80),
                export(2, 0x80),
                apdu(psd_apdu::get_license_data()),
            ],
        ),
        ("license-replay", Funded, {
            let (request, install) = funded_license_apdus();
            vec![
                apdu(request.clone()),
                apdu(request.clone()),
                apdu(install.clone()),
                apdu(install.clone()),
                grant(9, 0x10, 0),
                grant(10, 0x30, 0),
                apdu(install.clone()),
                apdu(short(0x80, 0x44, 0x00, 0x00, &install[5..40], Some(0))),
                apdu(short(0x80, 0x44, 0x01, 0x00, &[], Some(0))),
            ]
        }),
        ("license-power-cuts", Funded, {
            let (request, install) = funded_license_apdus();
            // The install answers the run's first request: the request is not cut.
            let mut v = vec![apdu(request.clone())];
            v.extend((0..4).map(|k| Op::PowerCut {
                at_write: k,
                torn: k % 2 == 0,
                apdu: install.clone(),
            }));
            v.push(apdu(install.clone()));
            v.extend([
                Op::Arm {
                    at_write: 1,
                    torn: false,
                },
                export(2, 1),
                Op::Arm {
                    at_write: 0,
                    torn: true,
                },
                export(2, 1),
                export(2, 1),
                import(0, 0),
                Op::Arm {
                    at_write: 4,
                    torn: false,
                },
                export(2, 1),
                import(1, 0),
                Op::Arm {
                    at_write: 1,
                    torn: true,
                },
                import(0, 0),
                import(0, 0),
                Op::Arm {
                    at_write: 0,
                    torn: false,
                },
                grant(11, 0, 0),
                Op::Arm {
                    at_write: 2,
                    torn: true,
                },
                grant(11, 0, 0),
                Op::Arm {
                    at_write: 5,
                    torn: false,
                },
                grant(11, 0, 0),
                grant(11, 0, 0),
                export(1, 0),
                Op::Arm {
                    at_write: 0,
                    torn: true,
                },
                export(1, 2),
                export(1, 2),
            ]);
            v
        }),
        (
            "export-cancel",
            Funded,
            vec![
                export(0, 0),
                export(0, 0),
                issue(0, 1, 100, 21),
                Op::KmsRefill {
                    set: 0,
                    amount: 10,
                    id: 1,
                },
                apdu(psd_apdu::audit(RegisterSetIndex(0), &[3; 16])),
                apdu(psd_apdu::get_license_data()),
                export(0, 2),
                issue(0, 2, 100, 21),
                export(1, 3),
                export(1, 2),
                export(0, 0x80),
                export(0, 2),
                apdu(short(0x80, 0x48, 0x02, 0x01, &[], Some(0))),
                apdu(short(0x80, 0x48, 0x00, 0x04, &[], Some(0))),
                apdu(short(0x80, 0x48, 0x03, 0x00, &[], Some(0))),
                apdu(short(0x80, 0x48, 0x00, 0x00, &[1], Some(0))),
                apdu(short(0x80, 0x48, 0x01, 0x00, &[0; 15], Some(0))),
            ],
        ),
        (
            "export-import",
            Funded,
            vec![
                export(1, 1),
                read(1),
                issue(1, 1, 10, 21),
                apdu(psd_apdu::get_license_data()),
                Op::Reopen,
                import(0, 0),
                import(0, 0),
                issue(1, 2, 10, 21),
                export(0, 4),
                export(1, 1),
                import(1, 0),
                import(0, 0),
                import(1, 0),
                import(0, 9),
                import(1, 200),
                Op::KmsRefill {
                    set: 0,
                    amount: 5,
                    id: 2,
                },
            ],
        ),
        (
            "import-old-copy",
            Funded,
            vec![
                export(0, 1),
                import(0, 0),
                issue(0, 1, 4_000, 21),
                export(0, 1),
                import(0, 0),
                import(1, 0),
                import(1, 0),
                import(0, 0),
                apdu(psd_apdu::import_set(&[0x42; 40])),
                apdu(short(0x80, 0x4A, 0x00, 0x01, &[1, 2, 3], Some(0))),
            ],
        ),
        (
            "retire",
            Funded,
            vec![
                retire(0, false),
                export(0, 0),
                retire(0, false),
                retire(0, true),
                export(0, 2),
                export(1, 1),
                retire(0, true),
                Op::Arm {
                    at_write: 0,
                    torn: true,
                },
                retire(0, false),
                retire(0, false),
                import(0, 0),
                apdu(psd_apdu::get_license_data()),
                Op::Arm {
                    at_write: 0,
                    torn: false,
                },
                retire(0, true),
                retire(0, true),
                retire(9, true),
                export(0, 1),
                retire(0, false),
                Op::Reopen,
                retire(0, false),
                apdu(short(0x80, 0x4C, 0x00, 0x00, &[1, 2], Some(0))),
                apdu(short(0x80, 0x4C, 0x02, 0x00, &[0; 8], Some(0))),
                apdu(short(0x80, 0x4C, 0x00, 0x01, &[0; 8], Some(0))),
                export(1, 1),
            ],
        ),
        ("export-table-full", Funded, {
            let mut v: Vec<Op> = (0..16u8)
                .flat_map(|n| [grant(20 + n, 0, 0), export(2, 1)])
                .collect();
            v.extend([
                grant(40, 0, 0),
                export(2, 0),
                import(3, 0),
                export(2, 1),
                grant(20, 0, 0),
            ]);
            v
        }),
        ("blank-licensing", Blank, {
            let mut p = personalization();
            p.licenses.clear();
            vec![
                apdu(psd_apdu::personalize(&p)),
                Op::Reopen,
                grant(0, 0, 0),
                Op::KmsRefill {
                    set: 0,
                    amount: 7_000,
                    id: 1,
                },
                issue(0, 1, 10, 21),
                export(0, 1),
                Op::Reopen,
                read(0),
                import(0, 0),
                issue(0, 2, 10, 21),
            ]
        }),
    ];
    s.extend(certmeter_seeds());
    s.extend(transfer_seeds());
    s.extend(outside_seeds());
    s.drain(..)
        .map(|(name, start, ops)| (name, Input { start, ops }))
        .collect()
}
