//! The certificate meter (seed 004) in the fuzz harness: the `Certmeter` start state (a
//! rate table, the fixture CA's trust anchor and an active postmark key), the checks of
//! its commands' responses and of its record, and its decoders run on raw bytes; for agent
//! certificates (Fig. 3A) an agent CA certificate template and a fixed PKCS#10 request.

use std::sync::OnceLock;

use openpsd_core::client::psd_apdu;
use openpsd_core::crypto::{self, IndiciumKey};
use openpsd_core::psd::certmeter::agent::{
    AgentGenerated, AgentIssued, AgentRequest, GenerateRequest, MODE_GENERATE,
};
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::attestation::{KeyAttestation, Purpose};
use openpsd_core::psd::certmeter::info::CertMeterInfo;
use openpsd_core::psd::certmeter::postmark::PostmarkRequest;
use openpsd_core::psd::certmeter::rates::{RateTable, Service};
use openpsd_core::psd::certmeter::sign::{CompactSignature, SignRequest};
use openpsd_core::psd::certmeter::state::{CertMeterState, SlotState};
use openpsd_core::psd::certmeter::tst::{self, CompactPostmark};
use openpsd_core::psd::certmeter::validate::{ValidateRequest, ValidationReceipt};
use openpsd_core::psd::psd_card;
use openpsd_core::psd::registers::{RegisterSet, Registers};
use openpsd_core::store::{MemStore, Nvm, Store};
use openpsd_core::types::*;

use crate::harness::{funded_nvm, platform, vendor_key, FuzzCard};

const REC_CERTMETER: u16 = openpsd_core::records::psd::CERTMETER;

/// The fixture certificate authority's key (the anchor names its public half).
pub fn ca_key() -> IndiciumKey {
    static K: OnceLock<IndiciumKey> = OnceLock::new();
    K.get_or_init(|| IndiciumKey::from_bytes(&[0x44; 32]).expect("scalar"))
        .clone()
}

/// The fixture rate table: version 1 from 2026-11-01, postmark 10, validation 4,
/// certificate 500, signature 7.
pub fn rate_table(version: u32) -> Vec<u8> {
    RateTable {
        version,
        effective: Date::new(2026, 11, 1).expect("date"),
        fees: vec![
            (Service::Postmark, Amount(10)),
            (Service::Validation, Amount(4)),
            (Service::Certificate, Amount(500)),
            (Service::Signature, Amount(7)),
        ],
    }
    .sign(&vendor_key())
    .expect("well-formed table")
}

/// The fixture CA's trust anchor.
pub fn ca_anchor(version: u32) -> Vec<u8> {
    Anchor {
        kind: AnchorKind::CertificateCa,
        version,
        public_key: ca_key().public_key(),
    }
    .sign(&vendor_key())
}

/// The TBSCertificate of a postmark certificate (OpenSSL-made: issuer `CN=openpsd fuzz CA`,
/// subject `CN=fuzz postmark`, 2026-01-01 to 2035-02-16, BasicConstraints CA:FALSE,
/// KeyUsage digitalSignature + nonRepudiation, EKU timeStamping, all critical; SKI, AKI).
/// The subject key (65 bytes at [`TBS_KEY_AT`]) is replaced by the card's key.
const TBS_TEMPLATE: &str = concat!(
    "30820140a00302010202020102300a06082a8648ce3d040302301a3118301606035504030c0f6f70656e707364206675",
    "7a7a204341301e170d3236303130313030303030305a170d3335303231363130353234365a3018311630140603550403",
    "0c0d66757a7a20706f73746d61726b3059301306072a8648ce3d020106082a8648ce3d030107034200043e1808e9a76d",
    "2e5ac28d73251c146f448f0f4a8204d116a67e83f8dd23d95dcec60800aae59d93e2c2cacb4a4103048439119c78e54f",
    "193ce320d1cbcb8eb80da3783076300c0603551d130101ff04023000300e0603551d0f0101ff0404030206c030160603",
    "551d250101ff040c300a06082b06010505070308301d0603551d0e041604143d2c64288049f0e3ce16b4d54f4de1d156",
    "555a36301f0603551d230418301680147bcd030b52fcd8f1fad90a91a3f9dd545caf56ef",
);
/// Where the subject key sits in [`TBS_TEMPLATE`].
const TBS_KEY_AT: usize = 137;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// DER INTEGER of an unsigned big-endian value.
fn der_uint(v: &[u8]) -> Vec<u8> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len() - 1);
    let v = &v[first..];
    let mut out = vec![0x02];
    let pad = v[0] & 0x80 != 0;
    out.push((v.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
    out
}

/// The fixture table with an agent-certificate fee (50): postmark 10, certificate 500.
pub fn agent_rate_table(version: u32) -> Vec<u8> {
    RateTable {
        version,
        effective: Date::new(2026, 11, 1).expect("date"),
        fees: vec![
            (Service::Postmark, Amount(10)),
            (Service::Certificate, Amount(500)),
            (Service::AgentCertificate, Amount(50)),
        ],
    }
    .sign(&vendor_key())
    .expect("well-formed table")
}

/// The TBSCertificate of an agent CA certificate (made with Python `cryptography`: issuer
/// `CN=openpsd fuzz CA`, subject `O=openpsd fuzz customer, CN=fuzz agent`, 2026-01-01 to
/// 2035-01-01, BasicConstraints CA:TRUE pathLen 0, KeyUsage keyCertSign, nameConstraints
/// permitted `O=openpsd fuzz customer`, all critical; SKI 11…, AKI 22…). The subject key (65
/// bytes at [`AGENT_TBS_KEY_AT`]) is replaced by the card's key.
const AGENT_TBS_TEMPLATE: &str = concat!(
    "30820183a00302010202020103300a06082a8648ce3d040302301a3118301606035504030c0f6f70656e707364",
    "2066757a7a204341301e170d3236303130313030303030305a170d3335303130313030303030305a3035311e30",
    "1c060355040a0c156f70656e7073642066757a7a20637573746f6d65723113301106035504030c0a66757a7a20",
    "6167656e743059301306072a8648ce3d020106082a8648ce3d030107034200047a1d102f592c3b4340fa7a7da5",
    "93ce45d8fc1be107952de489676556f4c9ed428e981a4d0b606cc455ae2e710e37f0deb73e5968101658db84b2",
    "3a2cc93a6020a3819d30819a30120603551d130101ff040830060101ff020100300e0603551d0f0101ff040403",
    "02020430340603551d1e0101ff042a3028a0263024a4223020311e301c060355040a0c156f70656e7073642066",
    "757a7a20637573746f6d6572301d0603551d0e041604141111111111111111111111111111111111111111301f",
    "0603551d230418301680142222222222222222222222222222222222222222",
);
/// Where the subject key sits in [`AGENT_TBS_TEMPLATE`].
const AGENT_TBS_KEY_AT: usize = 166;

/// An agent CA certificate for `public_key`, signed by the fixture CA.
pub fn agent_certificate(public_key: &[u8; 65]) -> Vec<u8> {
    let mut tbs = unhex(AGENT_TBS_TEMPLATE);
    tbs[AGENT_TBS_KEY_AT..AGENT_TBS_KEY_AT + 65].copy_from_slice(public_key);
    sign_tbs(tbs)
}

/// A PKCS#10 request (Python `cryptography`, P-256, ECDSA-SHA256) for `O=openpsd fuzz
/// customer, CN=fuzz employee`: inside the agent template's constraints.
const AGENT_CSR: &str = concat!(
    "3081f330819a0201003038311e301c060355040a0c156f70656e7073642066757a7a20637573746f6d65723116",
    "301406035504030c0d66757a7a20656d706c6f7965653059301306072a8648ce3d020106082a8648ce3d030107",
    "034200045e370abe5d3f56af435c4d9d41d2cf81b0d7ab70cdb6b6b097af8b4935ce257cc921201cc39dd2199d",
    "364896433932dc797a91ba66d7b1bc90654d10d0f9ddb7a000300a06082a8648ce3d040302034800304502200a",
    "2496a5d720a7b8d42cd2cd9d5ecdf85f25c191831de5372eafb07ada848700022100c84456844d05de895a28fb",
    "5b3170ad1b0b7493704e48da1ec462464bbbe051bc",
);

/// The subject of a generated employee key: `O=openpsd fuzz customer, CN=fuzz gen` (DER),
/// inside the agent template's constraints.
pub const AGENT_GENERATE_SUBJECT: &str = concat!(
    "3033311e301c060355040a0c156f70656e7073642066757a7a20637573746f6d6572",
    "3111300f06035504030c0866757a7a2067656e"
);

/// A mode-01 request for [`AGENT_GENERATE_SUBJECT`].
pub fn agent_generate_request(txn: u8, password: &[u8]) -> GenerateRequest {
    GenerateRequest {
        transaction: openpsd_core::types::TransactionId([txn; 8]),
        days: 30,
        password: zeroize::Zeroizing::new(password.to_vec()),
        subject: unhex(AGENT_GENERATE_SUBJECT),
        alt_names: None,
    }
}

/// The fixed employee request.
pub fn agent_csr() -> Vec<u8> {
    unhex(AGENT_CSR)
}

/// A postmark certificate for `public_key`, signed by the fixture CA.
pub fn postmark_certificate(public_key: &[u8; 65]) -> Vec<u8> {
    let mut tbs = unhex(TBS_TEMPLATE);
    tbs[TBS_KEY_AT..TBS_KEY_AT + 65].copy_from_slice(public_key);
    sign_tbs(tbs)
}

/// The certificate of `tbs` signed by the fixture CA.
fn sign_tbs(tbs: Vec<u8>) -> Vec<u8> {
    let rs = ca_key().sign(&tbs);
    let mut sig = der_uint(&rs[..32]);
    sig.extend(der_uint(&rs[32..]));
    let mut sig_seq = vec![0x30, sig.len() as u8];
    sig_seq.extend(sig);
    let mut body = tbs;
    // AlgorithmIdentifier ecdsa-with-SHA256.
    body.extend_from_slice(&[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ]);
    body.extend_from_slice(&[0x03, (sig_seq.len() + 1) as u8, 0x00]);
    body.extend(sig_seq);
    let mut cert = vec![0x30, 0x82];
    cert.extend_from_slice(&(body.len() as u16).to_be_bytes());
    cert.extend(body);
    cert
}

fn ok_data(resp: &[u8], what: &str) -> Vec<u8> {
    assert_eq!(
        psd_apdu::sw(resp),
        0x9000,
        "fixture: {what} failed: {resp:02X?}"
    );
    resp[..resp.len() - 2].to_vec()
}

/// The memory of the certmeter fixture: funded, the rate table and the CA anchor loaded,
/// a postmark key generated and its certificate installed (paid by set 0).
pub fn certmeter_nvm() -> &'static Nvm {
    static NVM: OnceLock<Nvm> = OnceLock::new();
    NVM.get_or_init(|| {
        let store = MemStore::open(funded_nvm().clone()).expect("store opens");
        // Another random stream than the runs' platform, so a key a run generates is not
        // this one again.
        let mut p = platform();
        let mut other =
            openpsd_core::platform::SeededPlatform::new(crate::harness::PLATFORM_SEED + 1);
        other.today = p.today.take();
        other.now = p.now.take();
        let mut card = psd_card(store, other).expect("state loads");
        ok_data(&card.transmit(&psd_apdu::select()), "select");
        ok_data(
            &card.transmit(&psd_apdu::load_rate_table(&rate_table(1))),
            "load rate table",
        );
        ok_data(
            &card.transmit(&psd_apdu::load_trust_anchor(&ca_anchor(1))),
            "load trust anchor",
        );
        let a = ok_data(
            &card.transmit(&psd_apdu::generate_key(Purpose::Postmark, false)),
            "generate key",
        );
        let a = KeyAttestation::decode_unverified(&a).expect("attestation");
        ok_data(
            &card.transmit(&psd_apdu::install_key_certificate(
                a.slot,
                RegisterSetIndex(0),
                &postmark_certificate(&a.public_key),
            )),
            "install key certificate",
        );
        card.store().nvm().clone()
    })
}

/// The persisted certificate meter record, decoded (it must decode, and re-encode to the
/// same bytes).
pub fn check_record(card: &mut FuzzCard) -> CertMeterState {
    match card
        .store()
        .read(REC_CERTMETER)
        .expect("certmeter record readable")
    {
        None => CertMeterState::default(),
        Some(b) => {
            let st = CertMeterState::decode(&b)
                .unwrap_or_else(|e| panic!("certmeter record does not decode ({e:?}): {b:02X?}"));
            assert_eq!(st.encode(), b, "certmeter record not canonical");
            for s in st.slots.iter().flatten() {
                assert_eq!(
                    s.key.is_some(),
                    s.state != SlotState::Retired,
                    "a retired slot keeps its scalar, or a live one lost it"
                );
            }
            st
        }
    }
}

/// Checks the response of a successful certificate-meter command against the persisted
/// state.
#[allow(clippy::too_many_arguments)]
pub fn check_response(
    card: &mut FuzzCard,
    device: Option<[u8; 65]>,
    sets: &[Option<RegisterSet>],
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    cmd_data: Option<&[u8]>,
) {
    let st = check_record(card);
    match ins {
        0x70 => {
            let v: [u8; 4] = data.try_into().expect("LOAD RATE TABLE answers a u32");
            let v = u32::from_be_bytes(v);
            assert!(
                st.tables.iter().any(|(t, _)| t.version == v),
                "the table loaded is not held"
            );
            if let Some(cmd) = cmd_data {
                assert!(
                    st.tables.iter().any(|(_, b)| b.as_slice() == cmd),
                    "the table held is not the one sent"
                );
            }
        }
        0x5C => {
            assert!(data.is_empty());
            if let Some(cmd) = cmd_data {
                assert!(
                    st.anchors.iter().any(|(_, b)| b.as_slice() == cmd),
                    "the anchor held is not the one sent"
                );
            }
        }
        0x74 => {
            let a = match device {
                Some(pk) => KeyAttestation::open(data, &pk).expect("attestation verifies"),
                None => panic!("GENERATE KEY on a blank card"),
            };
            assert_eq!(a.purpose.code(), p1, "attested purpose");
            let slot = st.slots[usize::from(a.slot)]
                .as_ref()
                .expect("attested slot held");
            assert_eq!(
                (slot.state, slot.public_key, slot.generation),
                (SlotState::Pending, a.public_key, a.generation),
                "the attested key is the pending one"
            );
        }
        0x76 => {
            let slot = st.slots[usize::from(p1)].as_ref().expect("installed slot");
            assert_eq!(slot.state, SlotState::Active, "installed key active");
            assert_eq!(data[0], p1);
            let fee = u64::from_be_bytes(data[1..9].try_into().expect("fee"));
            assert_eq!(fee, slot.fee_paid.0);
            let r = Registers::decode(&data[9..]).expect("registers");
            let s = sets[usize::from(p2)].as_ref().expect("paying set");
            assert_eq!((r.ar, r.dr), (s.ar, s.dr), "reply registers are the set's");
            // One active key per purpose.
            let active = st
                .slots
                .iter()
                .flatten()
                .filter(|s| s.purpose == slot.purpose && s.state == SlotState::Active)
                .count();
            assert_eq!(active, 1, "one active key per purpose");
        }
        0x72 => {
            let c = CompactPostmark::decode(data).expect("compact postmark decodes");
            let f = tst::decode_tst_info(&c.tst_info).expect("TSTInfo decodes");
            // Signed by a postmark key of this PSD (a retry may answer a postmark whose
            // key was replaced since: the stored bytes).
            // (A slot reused by a later key no longer shows the old one: then only the
            // stored bytes are compared.)
            let slot = st.slots.iter().flatten().find(|s| {
                s.purpose == Purpose::Postmark && c.key_id == crypto::key_id(&s.public_key)
            });
            if let Some(slot) = slot {
                let attrs = tst::signed_attrs_der(&c.tst_info, &slot.certificate_hash());
                assert!(
                    crypto::verify_signature(&slot.public_key, &attrs, &c.signature),
                    "postmark signature verifies"
                );
            }
            let last = st.last.as_ref().expect("a postmark is the last service");
            assert_eq!(last.output, data, "the stored postmark is the reply");
            assert!(f.counter <= st.postmarks && f.gen_time <= st.last_time);
            if let Some(cmd) = cmd_data {
                let req = PostmarkRequest::decode(cmd).expect("an accepted request decodes");
                assert_eq!((f.digest, f.nonce), (req.digest, req.nonce()));
                assert_eq!(last.transaction, req.transaction);
            }
        }
        0x78 => {
            let c = CompactSignature::decode(data).expect("compact signature decodes");
            // Signed by a sign key of this PSD, never a postmark key.
            let slot = st
                .slots
                .iter()
                .flatten()
                .find(|s| c.key_id == crypto::key_id(&s.public_key))
                .expect("the signing key is held");
            assert_eq!(slot.purpose, Purpose::Sign, "only a sign key signs");
            assert!(
                crypto::verify_signature(
                    &slot.public_key,
                    &c.signed_attrs(&slot.certificate_hash()),
                    &c.signature
                ),
                "signature verifies"
            );
            let last = st.last.as_ref().expect("a signature is the last service");
            assert_eq!(last.output, data, "the stored signature is the reply");
            assert!(c.signing_time <= st.last_time);
            if let Some(cmd) = cmd_data {
                let req = SignRequest::decode(cmd).expect("an accepted request decodes");
                assert_eq!((c.digest, last.transaction), (req.digest, req.transaction));
            }
        }
        0x7E => {
            let pk = device.expect("VALIDATE POSTMARK on a blank card");
            let r = ValidationReceipt::open(data, &pk).expect("receipt verifies");
            let last = st.last.as_ref().expect("a validation is the last service");
            assert_eq!(last.output, data, "the stored receipt is the reply");
            assert_eq!(r.set, p2);
            assert!(r.time <= st.last_time);
            if let Some(cmd) = cmd_data {
                let req = ValidateRequest::decode(cmd).expect("an accepted request decodes");
                assert_eq!(
                    (r.transaction, r.digest, r.postmark_hash, r.certificate_hash),
                    (
                        req.transaction,
                        req.digest,
                        crypto::sha256(&req.postmark),
                        crypto::sha256(&req.certificate)
                    )
                );
            }
        }
        0x56 if p1 == MODE_GENERATE => {
            let g = AgentGenerated::decode(data).expect("mode 01 reply decodes");
            let last = st
                .last
                .as_ref()
                .expect("the certificate is the last service");
            assert_eq!(last.service, Service::AgentCertificate);
            assert_eq!(last.output, data, "the stored reply is the reply");
            assert_eq!(last.set, p2);
            assert!(g.certificate.len() > 100 && g.encrypted_key.len() > 150);
            if let Some(cmd) = cmd_data {
                let req = GenerateRequest::decode(cmd).expect("an accepted request decodes");
                assert_eq!(last.transaction, req.transaction);
                // Only the encryption of the key is kept: the password is not in the record.
                let record = card.store().read(REC_CERTMETER).expect("record readable");
                assert!(record.is_none_or(|r| !r
                    .windows(req.password.len())
                    .any(|w| w == &req.password[..])));
            }
        }
        0x56 => {
            let issued = AgentIssued::decode(data).expect("ISSUE AGENT CERTIFICATE reply decodes");
            let last = st
                .last
                .as_ref()
                .expect("the certificate is the last service");
            assert_eq!(last.service, Service::AgentCertificate);
            assert_eq!(last.output, data, "the stored certificate is the reply");
            assert_eq!(last.set, p2);
            // Issued under an agent key of this PSD: its certificate's subject is the issuer
            // (a DER SEQUENCE the reply contains), and the serial carries the counter.
            assert!(st
                .slots
                .iter()
                .flatten()
                .any(|s| s.purpose == Purpose::AgentCa && !s.certificate.is_empty()));
            assert!(issued.certificate.len() > 100 && issued.certificate[0] == 0x30);
            if let Some(cmd) = cmd_data {
                let req = AgentRequest::decode(cmd).expect("an accepted request decodes");
                assert_eq!(last.transaction, req.transaction);
            }
        }
        0x7A => {
            let pk = device.expect("REVOCATION REQUEST on a blank card");
            let r = openpsd_core::psd::certmeter::revoke::RevocationRequest::open(data, &pk)
                .expect("revocation request verifies under the device key");
            assert_eq!(r.slot, p1);
            let slot = st.slots[usize::from(p1)].as_ref().expect("requested slot");
            assert_eq!(r.certificate_hash, slot.certificate_hash());
        }
        0x7C => {
            let pk = device.expect("REVOKE KEY on a blank card");
            let c = openpsd_core::psd::certmeter::revoke::RevocationConfirmation::open(data, &pk)
                .expect("confirmation verifies under the device key");
            let last = st.last_revocation.as_ref().expect("a revocation is kept");
            assert_eq!(
                last.confirmation, data,
                "the stored confirmation is the reply"
            );
            assert_eq!(c.counter, st.orders);
            if let Some(slot) = st.slots[usize::from(c.slot)].as_ref() {
                if slot.certificate_hash() == c.certificate_hash {
                    assert_eq!(slot.state, SlotState::Retired, "revoked key retired");
                }
            }
        }
        0xCA => {
            let info = CertMeterInfo::decode(data).expect("GET DATA 00 05 decodes");
            assert_eq!(info.encode(), data, "GET DATA 00 05 canonical");
            assert_eq!(
                (
                    info.generation,
                    info.postmarks,
                    info.last_time,
                    info.fees_due
                ),
                (st.generation, st.postmarks, st.last_time, st.fees_due)
            );
            for (set, fees, services) in &info.sets {
                let s = sets[usize::from(*set)].as_ref().expect("listed set held");
                assert_eq!((*fees, *services), (s.fees, s.services));
            }
        }
        _ => {}
    }
}

/// Every certificate-meter decoder on `data`: none may panic, and what decodes
/// re-encodes to the same bytes where the format has one encoding.
pub fn decoders(data: &[u8]) {
    // The audit (versions 3 to 5: version 5 carries the newest rate table held), as the
    // KMS reads it from a host before checking the signature.
    let _ = openpsd_core::psd::audit::AuditData::decode_unverified(data);
    let _ = openpsd_core::psd::audit::AuditData::signed_parts(data);
    // The purse's table of PSDs (versions 1 and 2), as GET DATA 00 02 returns it and the
    // store holds it: what decodes as version 2 re-encodes to the same bytes.
    if let Ok(t) = openpsd_core::purse::state::PairedTable::decode(data) {
        if data.first() == Some(&0xF2) {
            assert_eq!(t.encode(), data, "PairedTable v2 round trip");
        }
    }
    let _ = RateTable::decode_unverified(data);
    let _ = Anchor::decode_unverified(data);
    let _ = KeyAttestation::decode_unverified(data);
    if let Ok(st) = CertMeterState::decode(data) {
        assert_eq!(st.encode(), data, "CertMeterState round trip");
    }
    if let Ok(info) = CertMeterInfo::decode(data) {
        assert_eq!(info.encode(), data, "CertMeterInfo round trip");
    }
    if let Ok(f) = tst::decode_tst_info(data) {
        assert_eq!(tst::tst_info_der(&f), data, "TSTInfo round trip");
    }
    if let Ok(c) = CompactPostmark::decode(data) {
        assert_eq!(c.encode().ok().as_deref(), Some(data), "compact round trip");
    }
    if let Ok(r) = PostmarkRequest::decode(data) {
        assert_eq!(r.encode(), data, "postmark request round trip");
    }
    if let Ok(c) = CompactSignature::decode(data) {
        assert_eq!(c.encode(), data, "compact signature round trip");
    }
    if let Ok(r) = SignRequest::decode(data) {
        assert_eq!(r.encode(), data, "sign request round trip");
    }
    if let Ok(r) = ValidateRequest::decode(data) {
        assert_eq!(
            r.encode().ok().as_deref(),
            Some(data),
            "validate request round trip"
        );
    }
    let _ = ValidationReceipt::decode_unverified(data);
    if let Ok(r) = AgentRequest::decode(data) {
        assert_eq!(r.encode(), data, "agent request round trip");
    }
    if let Ok(r) = AgentIssued::decode(data) {
        assert_eq!(r.encode(), data, "agent reply round trip");
    }
    use openpsd_core::psd::certmeter::credit;
    if let Ok(c) = credit::PaymentCertificate::from_der(data) {
        assert_eq!(c.to_der(), data, "payment certificate round trip");
    }
    if let Ok(i) = credit::PaymentInfo::from_der(data) {
        assert_eq!(i.to_der(), data, "PaymentInfo round trip");
    }
    if let Ok(l) = credit::CreditLine::from_der(data) {
        assert_eq!(l.to_der(), data, "credit line round trip");
    }
    if let Ok(r) = credit::PayRequest::decode(data) {
        assert_eq!(r.encode(), data, "pay request round trip");
    }
    if let Ok(st) = credit::CreditState::decode(data) {
        assert_eq!(st.encode(), data, "CREDIT record round trip");
    }
    {
        use openpsd_core::psd::certmeter::revoke::{
            RevocationConfirmation, RevocationOrder, RevocationRequest,
        };
        let _ = RevocationRequest::decode_unverified(data);
        let _ = RevocationConfirmation::decode_unverified(data);
        let _ = RevocationOrder::open(data, &ca_key().public_key());
    }
}
