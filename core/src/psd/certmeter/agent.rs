//! ISSUE AGENT CERTIFICATE (seed 004, Fig. 3A): the PSD, holding an agent CA certificate
//! the back office's CA issued under name constraints taken from the customer's account,
//! certifies the keys of the customer's employees, for the agent-certificate fee.
//!
//! Mode `00` (built): the employee made the key and a PKCS#10 request. The card checks the
//! request's self-signature (ECDSA P-256 / SHA-256 only), checks that every name in it (the
//! subject, and any subjectAltName requested) lies within the agent certificate's permitted
//! subtrees, and writes the TBSCertificate itself: its own serial, the agent certificate's
//! subject as the issuer, a validity inside the agent certificate's, an end-entity profile
//! (basicConstraints CA:FALSE, keyUsage digitalSignature, key identifiers) — nothing else is
//! copied from the request. Then the order of every paid service (`postmark.rs`): every
//! check → one commit (the debit, the service counter, the certificate kept as the last
//! service) → the reply; a retry with the same transaction ID gets the same bytes.
//!
//! Mode `01` (the seed's step 354): the card generates the employee's P-256 key from the
//! platform's randomness, certifies it the same way for the subject (and subjectAltName) the
//! host names, and hands the key out only as a PKCS#8 `EncryptedPrivateKeyInfo` (PBES2:
//! PBKDF2-HMAC-SHA256, AES-256-CBC; `pkcs8.rs`) under the password the host sends. The
//! scalar and the password live in zeroized buffers for the command only; what the last
//! service keeps (and a retry answers) is the encrypted key, never the scalar.
//!
//! Command data (mode 00): `txn 8 | validity days u16 (0: 365) | CSR DER`.
//! Reply: `fee u64 | certificate DER`.
//!
//! Command data (mode 01): `txn 8 | validity days u16 | password len 1 | password |
//! subject len u16 | subject Name DER | subjectAltName GeneralNames DER (optional, the rest)`.
//! Reply: `fee u64 | certificate DER | EncryptedPrivateKeyInfo DER`.

use alloc::vec::Vec;

use crate::types::{Amount, TransactionId};
use crate::wire::{Malformed, Reader};

/// Longest PKCS#10 request the card reads.
pub const MAX_CSR_LEN: usize = 1024;
/// Validity of an employee certificate when the host asks for none (days), before the
/// agent certificate's end caps it.
pub const DEFAULT_DAYS: u16 = 365;
/// P1: from a PKCS#10 request.
pub const MODE_CSR: u8 = 0x00;
/// P1: the card generates the employee's key.
pub const MODE_GENERATE: u8 = 0x01;
/// Shortest password mode 01 takes (octets).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password mode 01 takes (octets).
pub const MAX_PASSWORD_LEN: usize = 64;
/// Longest subject (Name DER) or subjectAltName (GeneralNames DER) mode 01 takes.
pub const MAX_NAME_LEN: usize = 512;
/// First octet of the serial numbers the card assigns (then device ID 8 ‖ counter u32):
/// positive, and never equal to a serial the back office's CA assigns to this device's
/// own certificates, which start with random octets.
pub const SERIAL_TAG: u8 = 0x41;

/// What a host asks for (mode 00).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRequest {
    /// The host's ID for this request; a retry with the same ID gets the same certificate.
    pub transaction: TransactionId,
    /// Days of validity asked for (0: [`DEFAULT_DAYS`]); capped by the agent certificate.
    pub days: u16,
    /// The PKCS#10 request (DER).
    pub csr: Vec<u8>,
}

impl AgentRequest {
    /// Command data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(10 + self.csr.len());
        w.extend_from_slice(&self.transaction.0);
        w.extend_from_slice(&self.days.to_be_bytes());
        w.extend_from_slice(&self.csr);
        w
    }

    /// Parses command data.
    pub fn decode(bytes: &[u8]) -> Result<AgentRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let transaction = TransactionId(r.array()?);
        let days = r.u16()?;
        let csr = r.remaining().to_vec();
        if csr.is_empty() || csr.len() > MAX_CSR_LEN {
            return Err(Malformed::Length);
        }
        Ok(AgentRequest {
            transaction,
            days,
            csr,
        })
    }
}

/// The reply: the fee charged and the employee's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIssued {
    /// The fee debited.
    pub fee: Amount,
    /// The certificate (DER).
    pub certificate: Vec<u8>,
}

impl AgentIssued {
    /// The reply's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(8 + self.certificate.len());
        w.extend_from_slice(&self.fee.0.to_be_bytes());
        w.extend_from_slice(&self.certificate);
        w
    }

    /// Parses a reply.
    pub fn decode(bytes: &[u8]) -> Result<AgentIssued, Malformed> {
        let mut r = Reader::new(bytes);
        let fee = Amount(r.u64()?);
        let certificate = r.remaining().to_vec();
        if certificate.is_empty() {
            return Err(Malformed::Length);
        }
        Ok(AgentIssued { fee, certificate })
    }
}

/// What a host asks for in mode 01: the card makes the key.
#[derive(Clone, PartialEq, Eq)]
pub struct GenerateRequest {
    /// The host's ID for this request; a retry with the same ID (and password) gets the
    /// same certificate and encrypted key.
    pub transaction: TransactionId,
    /// Days of validity asked for (0: [`DEFAULT_DAYS`]); capped by the agent certificate.
    pub days: u16,
    /// The password the key is encrypted under ([`MIN_PASSWORD_LEN`] to
    /// [`MAX_PASSWORD_LEN`] octets; no NUL, CR or LF: `openssl -passin file:` reads a line).
    pub password: zeroize::Zeroizing<Vec<u8>>,
    /// The employee's subject (Name DER).
    pub subject: Vec<u8>,
    /// The subjectAltName's value (GeneralNames DER), if any.
    pub alt_names: Option<Vec<u8>>,
}

impl core::fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("transaction", &self.transaction)
            .field("days", &self.days)
            .field("password", &"..")
            .field("subject", &self.subject)
            .field("alt_names", &self.alt_names)
            .finish()
    }
}

impl GenerateRequest {
    /// Command data (zeroized on drop: it holds the password).
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let alt = self.alt_names.as_deref().unwrap_or_default();
        let mut w = zeroize::Zeroizing::new(Vec::with_capacity(
            13 + self.password.len() + self.subject.len() + alt.len(),
        ));
        w.extend_from_slice(&self.transaction.0);
        w.extend_from_slice(&self.days.to_be_bytes());
        // Lengths beyond a byte / u16 are refused by `decode`; written truncated they
        // would be refused there too.
        w.push(u8::try_from(self.password.len()).unwrap_or(u8::MAX));
        w.extend_from_slice(&self.password);
        w.extend_from_slice(
            &u16::try_from(self.subject.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        w.extend_from_slice(&self.subject);
        w.extend_from_slice(alt);
        w
    }

    /// Parses command data: `6700` for a password, subject or subjectAltName of a length
    /// outside its bounds.
    pub fn decode(bytes: &[u8]) -> Result<GenerateRequest, Malformed> {
        let mut r = Reader::new(bytes);
        let transaction = TransactionId(r.array()?);
        let days = r.u16()?;
        let pw_len = usize::from(r.u8()?);
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&pw_len) {
            return Err(Malformed::Length);
        }
        let password = zeroize::Zeroizing::new(r.take(pw_len)?.to_vec());
        let subject_len = usize::from(r.u16()?);
        if subject_len == 0 || subject_len > MAX_NAME_LEN {
            return Err(Malformed::Length);
        }
        let subject = r.take(subject_len)?.to_vec();
        let alt = r.remaining();
        if alt.len() > MAX_NAME_LEN {
            return Err(Malformed::Length);
        }
        Ok(GenerateRequest {
            transaction,
            days,
            password,
            subject,
            alt_names: (!alt.is_empty()).then(|| alt.to_vec()),
        })
    }
}

/// The reply of mode 01: the fee, the certificate and the key encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentGenerated {
    /// The fee debited.
    pub fee: Amount,
    /// The certificate (DER).
    pub certificate: Vec<u8>,
    /// The employee's private key: PKCS#8 `EncryptedPrivateKeyInfo` (DER).
    pub encrypted_key: Vec<u8>,
}

impl AgentGenerated {
    /// The reply's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(8 + self.certificate.len() + self.encrypted_key.len());
        w.extend_from_slice(&self.fee.0.to_be_bytes());
        w.extend_from_slice(&self.certificate);
        w.extend_from_slice(&self.encrypted_key);
        w
    }

    /// Parses a reply: two DER SEQUENCEs after the fee, nothing after them.
    pub fn decode(bytes: &[u8]) -> Result<AgentGenerated, Malformed> {
        let mut r = Reader::new(bytes);
        let fee = Amount(r.u64()?);
        let rest = r.remaining();
        let (certificate, rest) = der_split(rest).ok_or(Malformed::Value)?;
        let (encrypted_key, end) = der_split(rest).ok_or(Malformed::Value)?;
        if !end.is_empty() {
            return Err(Malformed::Length);
        }
        Ok(AgentGenerated {
            fee,
            certificate: certificate.to_vec(),
            encrypted_key: encrypted_key.to_vec(),
        })
    }
}

/// The first DER SEQUENCE of `b` (length in up to two octets) and what follows it.
fn der_split(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, header): (usize, usize) = match first {
        0..=0x7F => (usize::from(first), 2),
        0x81 => (usize::from(*rest.first()?), 3),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            4,
        ),
        _ => return None,
    };
    if tag != 0x30 {
        return None;
    }
    let end = header.checked_add(len)?;
    Some((b.get(..end)?, &b[end..]))
}

/// The command and the certificate it writes (with the `certmeter` feature).
#[cfg(feature = "certmeter")]
mod command {
    use alloc::vec::Vec;
    use core::time::Duration;

    use der::asn1::{ObjectIdentifier, OctetString};
    use der::{Decode as _, Encode as _, Tagged as _};
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, NameConstraints,
        SubjectAltName, SubjectKeyIdentifier,
    };
    use x509_cert::ext::Extension;
    use x509_cert::name::{Name, RelativeDistinguishedName};
    use x509_cert::request::{CertReq, ExtensionReq};
    use x509_cert::time::Time;
    use x509_cert::Certificate;

    use super::{
        AgentGenerated, AgentIssued, AgentRequest, GenerateRequest, DEFAULT_DAYS, SERIAL_TAG,
    };
    use crate::card::Ctx;
    use crate::crypto::{self, IndiciumKey, PUBLIC_KEY_LEN};
    use crate::psd::certmeter::attestation::Purpose;
    use crate::psd::certmeter::pkcs8;
    use crate::psd::certmeter::rates::Service;
    use crate::psd::certmeter::state::{LastService, MAX_CERTIFICATE_LEN};
    use crate::psd::license::grant::certificate_key_id;
    use crate::status::Status;

    /// ecdsa-with-SHA256.
    const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    /// id-ecPublicKey.
    const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// prime256v1.
    const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    /// AlgorithmIdentifier ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2).
    const ECDSA_SHA256_ALG: [u8; 12] = [
        0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02,
    ];
    /// `[0] EXPLICIT Version v3`.
    const VERSION_V3: [u8; 5] = [0xA0, 0x03, 0x02, 0x01, 0x02];
    /// A day in seconds.
    const DAY: u64 = 86_400;

    impl crate::psd::PsdApplet {
        /// ISSUE AGENT CERTIFICATE (80 56 mode set).
        pub(in crate::psd) fn issue_agent_certificate(
            &mut self,
            ctx: &mut Ctx<'_>,
            mode: u8,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            match mode {
                super::MODE_CSR => self.agent_from_csr(ctx, i, data, reply),
                super::MODE_GENERATE => self.agent_generate(ctx, i, data, reply),
                _ => Err(Status::IncorrectP1P2),
            }
        }

        /// Mode 00: the employee's key from a PKCS#10 request.
        fn agent_from_csr(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = AgentRequest::decode(data)?;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;
            let csr = Csr::parse(&req.csr)?;

            // A retry of the last service: the same bytes, charged once, if it was this
            // request (the same set, subject, key, names and days).
            let cm = &self.persistent.certmeter;
            if let Some(last) = cm.retry(&req.transaction, Service::AgentCertificate, set_byte)? {
                // A key the card generated (mode 01) is not this request's.
                if AgentGenerated::decode(&last.output).is_ok() {
                    return Err(Status::TransactionIdReused);
                }
                let stored = AgentIssued::decode(&last.output).map_err(|_| Status::Internal)?;
                let cert =
                    Certificate::from_der(&stored.certificate).map_err(|_| Status::Internal)?;
                let same_key = cert
                    .tbs_certificate()
                    .subject_public_key_info()
                    .subject_public_key
                    .as_bytes()
                    == Some(&csr.public_key[..]);
                if !same_key
                    || !same_request(
                        cm,
                        &cert,
                        &csr.subject,
                        csr.alt_names_der.as_deref(),
                        req.days,
                    )
                {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(&last.output);
                return Ok(());
            }

            let issuance = self.agent_prepare(ctx, i, req.days, &csr.subject, &csr.alt_names)?;
            let certificate = issuance.certificate(
                &csr.subject,
                &csr.public_key,
                csr.alt_names_der.as_deref(),
            )?;
            let output = AgentIssued {
                fee: issuance.fee,
                certificate,
            }
            .encode();
            self.agent_commit(ctx, i, req.transaction, issuance, output, reply)
        }

        /// Mode 01: the card generates the employee's key and hands it out encrypted.
        fn agent_generate(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            data: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let req = GenerateRequest::decode(data)?;
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;
            // `openssl -passin file:` and `pass:` read one line, without its end.
            if req
                .password
                .iter()
                .any(|b| matches!(b, 0x00 | b'\n' | b'\r'))
            {
                return Err(Status::WrongData);
            }
            let subject = Name::from_der(&req.subject).map_err(|_| Status::WrongData)?;
            if subject.to_der().ok().as_deref() != Some(&req.subject[..]) {
                return Err(Status::WrongData);
            }
            let alt_names = match &req.alt_names {
                None => Vec::new(),
                Some(der) => {
                    let san = SubjectAltName::from_der(der).map_err(|_| Status::WrongData)?;
                    if san.to_der().ok().as_deref() != Some(&der[..]) || san.0.is_empty() {
                        return Err(Status::WrongData);
                    }
                    san.0
                }
            };

            let cm = &self.persistent.certmeter;
            if let Some(last) = cm.retry(&req.transaction, Service::AgentCertificate, set_byte)? {
                let stored = AgentGenerated::decode(&last.output)
                    .map_err(|_| Status::TransactionIdReused)?;
                let cert =
                    Certificate::from_der(&stored.certificate).map_err(|_| Status::Internal)?;
                let public_key: [u8; PUBLIC_KEY_LEN] = cert
                    .tbs_certificate()
                    .subject_public_key_info()
                    .subject_public_key
                    .as_bytes()
                    .and_then(|b| b.try_into().ok())
                    .ok_or(Status::Internal)?;
                // The same names and days, and the same password: the kept key must open
                // under the one presented (one more key derivation).
                if !same_request(cm, &cert, &subject, req.alt_names.as_deref(), req.days)
                    || !pkcs8::opens_to(&stored.encrypted_key, &req.password, &public_key)
                {
                    return Err(Status::TransactionIdReused);
                }
                reply.extend_from_slice(&last.output);
                return Ok(());
            }

            let issuance = self.agent_prepare(ctx, i, req.days, &subject, &alt_names)?;
            // Every check passed: only now is a key made. The scalar stays in this
            // function (zeroized when `key` drops); only its encryption is kept.
            let key = IndiciumKey::generate(ctx.platform);
            let mut salt = [0u8; pkcs8::SALT_LEN];
            let mut iv = [0u8; pkcs8::IV_LEN];
            ctx.platform.fill_random(&mut salt);
            ctx.platform.fill_random(&mut iv);
            let encrypted_key = pkcs8::encrypt(&key, &req.password, &salt, &iv);
            let public_key = key.public_key();
            drop(key);
            let certificate =
                issuance.certificate(&subject, &public_key, req.alt_names.as_deref())?;
            let output = AgentGenerated {
                fee: issuance.fee,
                certificate,
                encrypted_key,
            }
            .encode();
            self.agent_commit(ctx, i, req.transaction, issuance, output, reply)
        }

        /// The checks both modes make before a key is certified, and what the certificate
        /// and the commit take from them.
        fn agent_prepare(
            &self,
            ctx: &mut Ctx<'_>,
            i: usize,
            days: u16,
            subject: &Name,
            alt_names: &[GeneralName],
        ) -> Result<Issuance, Status> {
            let device = self.device()?;
            let p = &self.persistent;
            let cm = &p.certmeter;
            let (_, slot) = cm.active(Purpose::AgentCa)?;
            let key = slot.key.as_ref().ok_or(Status::KeyRevoked)?;
            let agent = Certificate::from_der(&slot.certificate).map_err(|_| Status::Internal)?;
            let agent_tbs = agent.tbs_certificate();
            let constraints = match agent_tbs.get_extension::<NameConstraints>() {
                Ok(Some((_, nc))) => nc,
                _ => return Err(Status::Internal),
            };
            if !names_within(&constraints, subject, alt_names) {
                return Err(Status::NameOutsideConstraints);
            }

            // The clock: the postmark's rules (never back from the last timed service, never
            // before the last accepted audit's day, never past the inspection window).
            let (now, date) = self.service_time(ctx)?;
            // Outside the agent certificate's validity no verifier would accept the
            // employee's: not sold.
            let agent_from = agent_tbs.validity().not_before.to_unix_duration().as_secs();
            let agent_to = agent_tbs.validity().not_after.to_unix_duration().as_secs();
            if now < agent_from || now > agent_to {
                return Err(Status::CertificateMismatch);
            }
            let not_after = now
                .checked_add(span(days).ok_or(Status::WrongData)?)
                .ok_or(Status::WrongData)?
                .min(agent_to);

            let (fee, _) = cm.fee(Service::AgentCertificate, date)?;
            let next_set = p.set(i)?.charge(fee)?;
            let counter = cm.postmarks.checked_add(1).ok_or(Status::CounterOverflow)?;
            let mut serial = Vec::with_capacity(13);
            serial.push(SERIAL_TAG);
            serial.extend_from_slice(&device.id.0);
            serial.extend_from_slice(&counter.to_be_bytes());
            Ok(Issuance {
                now,
                not_after,
                fee,
                next_set,
                counter,
                serial,
                authority_key_id: agent_key_id(agent_tbs, &slot.public_key)?,
                issuer: agent_tbs.subject().clone(),
                key: key.clone(),
            })
        }

        /// One commit (the debit, the service counter, `output` kept as the last service),
        /// then the reply.
        fn agent_commit(
            &mut self,
            ctx: &mut Ctx<'_>,
            i: usize,
            transaction: crate::types::TransactionId,
            issuance: Issuance,
            output: Vec<u8>,
            reply: &mut Vec<u8>,
        ) -> Result<(), Status> {
            let set_byte = u8::try_from(i).map_err(|_| Status::Internal)?;
            let mut next = self.persistent.certmeter.clone();
            next.postmarks = issuance.counter;
            // The times of one PSD's timed services rise together.
            next.last_time = issuance.now;
            next.last = Some(LastService {
                transaction,
                service: Service::AgentCertificate,
                set: set_byte,
                output: output.clone(),
            });

            // Commit first: no certificate leaves the card for a fee that is not durable.
            self.commit_service(ctx, i, issuance.next_set, next, false)?;
            reply.extend_from_slice(&output);
            Ok(())
        }
    }

    /// The validity asked for, in seconds.
    fn span(days: u16) -> Option<u64> {
        let days = if days == 0 { DEFAULT_DAYS } else { days };
        u64::from(days).checked_mul(DAY)
    }

    /// What [`PsdApplet::agent_prepare`] checked and computed.
    struct Issuance {
        now: u64,
        not_after: u64,
        fee: crate::types::Amount,
        next_set: crate::psd::registers::RegisterSet,
        counter: u32,
        serial: Vec<u8>,
        authority_key_id: Vec<u8>,
        issuer: Name,
        key: IndiciumKey,
    }

    impl Issuance {
        /// The employee's certificate on `public_key`, signed with the agent key before
        /// the commit that keeps it: a retry is the same bytes, whatever happens to the
        /// agent key after.
        fn certificate(
            &self,
            subject: &Name,
            public_key: &[u8; PUBLIC_KEY_LEN],
            alt_names: Option<&[u8]>,
        ) -> Result<Vec<u8>, Status> {
            let tbs = tbs_der(&Tbs {
                serial: &self.serial,
                issuer: &self.issuer,
                not_before: self.now,
                not_after: self.not_after,
                subject,
                public_key,
                authority_key_id: &self.authority_key_id,
                alt_names,
            })
            .map_err(|_| Status::WrongData)?;
            let signature = ecdsa_der(&self.key.sign(&tbs));
            let mut body = tbs;
            body.extend_from_slice(&ECDSA_SHA256_ALG);
            let mut bits = Vec::with_capacity(signature.len() + 1);
            bits.push(0);
            bits.extend_from_slice(&signature);
            body.extend_from_slice(&tlv(0x03, &bits));
            let certificate = tlv(0x30, &body);
            if certificate.len() > MAX_CERTIFICATE_LEN {
                return Err(Status::WrongLength);
            }
            Ok(certificate)
        }
    }

    /// Whether the kept certificate `cert` answers a retry asking for `subject`,
    /// `alt_names` (the subjectAltName's DER) and `days`: the same names, and the validity
    /// those days gave (the days asked, or fewer if the agent certificate's end capped them).
    fn same_request(
        cm: &crate::psd::certmeter::state::CertMeterState,
        cert: &Certificate,
        subject: &Name,
        alt_names: Option<&[u8]>,
        days: u16,
    ) -> bool {
        let tbs = cert.tbs_certificate();
        let stored_alt_names = tbs.extensions().and_then(|exts| {
            exts.iter()
                .find(|e| e.extn_id == <SubjectAltName as der::oid::AssociatedOid>::OID)
                .map(|e| e.extn_value.as_bytes())
        });
        if tbs.subject() != subject || stored_alt_names != alt_names {
            return false;
        }
        let from = tbs.validity().not_before.to_unix_duration().as_secs();
        let to = tbs.validity().not_after.to_unix_duration().as_secs();
        let Some(asked) = span(days) else {
            return false;
        };
        let issued = to.saturating_sub(from);
        if issued == asked {
            return true;
        }
        // Capped: fewer days than asked, ending with the agent certificate that issued it
        // (found by its key identifier among the agent slots, retired ones included).
        let aki = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|(_, a)| a.key_identifier)
            .map(|k| k.as_bytes().to_vec());
        issued < asked
            && cm.slots.iter().flatten().any(|slot| {
                slot.purpose == Purpose::AgentCa
                    && Certificate::from_der(&slot.certificate).is_ok_and(|agent| {
                        let atbs = agent.tbs_certificate();
                        agent_key_id(atbs, &slot.public_key).ok() == aki
                            && atbs.validity().not_after.to_unix_duration().as_secs() == to
                    })
            })
    }

    /// What the card takes from a PKCS#10 request whose self-signature verified.
    struct Csr {
        subject: Name,
        public_key: [u8; PUBLIC_KEY_LEN],
        /// The requested subjectAltName, decoded, and its extension value's DER.
        alt_names: Vec<GeneralName>,
        alt_names_der: Option<Vec<u8>>,
    }

    impl Csr {
        /// Parses and checks `der`: `6A80` for anything but a DER request with a P-256 key
        /// that signed it with ECDSA-SHA256.
        fn parse(der: &[u8]) -> Result<Csr, Status> {
            let bad = Status::WrongData;
            let req = CertReq::from_der(der).map_err(|_| bad)?;
            // One encoding: the bytes signed are the bytes the parser saw.
            if req.to_der().ok().as_deref() != Some(der) {
                return Err(bad);
            }
            let spki = &req.info.public_key;
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            if spki.algorithm.oid != EC_PUBLIC_KEY
                || curve != Some(P256)
                || req.algorithm.oid != ECDSA_SHA256
                || req.algorithm.parameters.is_some()
            {
                return Err(bad);
            }
            let public_key: [u8; PUBLIC_KEY_LEN] = spki
                .subject_public_key
                .as_bytes()
                .and_then(|b| b.try_into().ok())
                .ok_or(bad)?;
            if !crypto::is_valid_public_key(&public_key) {
                return Err(bad);
            }
            let info = req.info.to_der().map_err(|_| bad)?;
            let rs = req
                .signature
                .as_bytes()
                .and_then(super::super::certificate::ecdsa_rs)
                .ok_or(bad)?;
            if !crypto::verify_signature(&public_key, &info, &rs) {
                return Err(bad);
            }
            // Of the extensions requested, only the subjectAltName is honoured (and
            // checked against the constraints); the profile is the card's.
            let mut alt_names = Vec::new();
            let mut alt_names_der = None;
            for attr in req.info.attributes.iter() {
                if attr.oid != <ExtensionReq as der::oid::AssociatedOid>::OID {
                    continue;
                }
                for value in attr.values.iter() {
                    let ext = value.decode_as::<Vec<Extension>>().map_err(|_| bad)?;
                    for e in ext {
                        if e.extn_id != <SubjectAltName as der::oid::AssociatedOid>::OID {
                            continue;
                        }
                        if alt_names_der.is_some() {
                            return Err(bad);
                        }
                        let san =
                            SubjectAltName::from_der(e.extn_value.as_bytes()).map_err(|_| bad)?;
                        alt_names = san.0;
                        alt_names_der = Some(e.extn_value.as_bytes().to_vec());
                    }
                }
            }
            Ok(Csr {
                subject: req.info.subject,
                public_key,
                alt_names,
                alt_names_der,
            })
        }
    }

    /// emailAddress (PKCS#9), which RFC 5280 § 4.2.1.10 has checked as an rfc822Name.
    const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

    /// Whether every name a certificate would carry lies within `nc`: the subject as a
    /// directoryName, each emailAddress attribute of the subject as an rfc822Name, each
    /// subjectAltName. rfc822Name and dNSName values (and emailAddress ones) must be
    /// non-empty printable ASCII without spaces (no NUL: a C verifier would read a shorter
    /// name than the one checked here).
    fn names_within(nc: &NameConstraints, subject: &Name, alt_names: &[GeneralName]) -> bool {
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7E).contains(&b));
        let alt_ok = alt_names.iter().all(|n| {
            let chars = match n {
                GeneralName::Rfc822Name(v) | GeneralName::DnsName(v) => printable(v.as_str()),
                _ => true,
            };
            chars && within(nc, n)
        });
        let emails_ok = subject.iter_rdn().flat_map(|rdn| rdn.iter()).all(|atv| {
            atv.oid != EMAIL_ADDRESS
                || atv
                    .value
                    .decode_as::<der::asn1::Ia5String>()
                    .is_ok_and(|v| printable(v.as_str()) && within(nc, &GeneralName::Rfc822Name(v)))
        });
        alt_ok && emails_ok && within(nc, &GeneralName::DirectoryName(subject.clone()))
    }

    /// Whether `name` is within `nc`, by the card's rule (stricter than RFC 5280 §4.2.1.10,
    /// which lets through a name of a type no subtree mentions): the name must lie within
    /// a permitted subtree of its own type and within no excluded one. Types: directoryName
    /// (the subtree's RDNs are the name's first RDNs), rfc822Name and dNSName (RFC 5280
    /// forms); any other type is refused. Permitted directoryNames compare case-sensitively,
    /// excluded ones as OpenSSL does (ASCII case folded, spaces collapsed): each way the
    /// stricter answer.
    fn within(nc: &NameConstraints, name: &GeneralName) -> bool {
        let permitted = nc
            .permitted_subtrees
            .iter()
            .flatten()
            .any(|t| t.minimum == 0 && t.maximum.is_none() && matches(&t.base, name, false));
        let excluded = nc
            .excluded_subtrees
            .iter()
            .flatten()
            .any(|t| matches(&t.base, name, true));
        permitted && !excluded
    }

    fn matches(base: &GeneralName, name: &GeneralName, fold: bool) -> bool {
        match (base, name) {
            (GeneralName::DirectoryName(base), GeneralName::DirectoryName(name)) => {
                let base: Vec<_> = base.iter_rdn().collect();
                let name: Vec<_> = name.iter_rdn().collect();
                !name.is_empty()
                    && base.len() <= name.len()
                    && base.iter().zip(&name).all(|(b, n)| same_rdn(b, n, fold))
            }
            (GeneralName::Rfc822Name(base), GeneralName::Rfc822Name(name)) => {
                let (base, name) = (base.as_str(), name.as_str());
                let Some((_, host)) = name.rsplit_once('@') else {
                    return false;
                };
                if base.contains('@') {
                    base.eq_ignore_ascii_case(name)
                } else if base.starts_with('.') {
                    ends_with_ignore_case(host, base)
                } else {
                    base.eq_ignore_ascii_case(host)
                }
            }
            (GeneralName::DnsName(base), GeneralName::DnsName(name)) => {
                let (base, name) = (base.as_str(), name.as_str());
                base.is_empty()
                    || base.eq_ignore_ascii_case(name)
                    || (name.len() > base.len()
                        && ends_with_ignore_case(name, base)
                        && (base.starts_with('.')
                            || name.as_bytes()[name.len() - base.len() - 1] == b'.'))
            }
            _ => false,
        }
    }

    fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
        s.len() >= suffix.len()
            && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    }

    /// Two RDNs name the same thing: the same attributes, each value the same string
    /// (UTF8String, PrintableString and IA5String compared by their characters, as a
    /// request's PrintableString should match the account's UTF8String), else the same
    /// DER. Without `fold` case matters: stricter than X.520's caseIgnoreMatch, never
    /// looser; with it, strings compare as OpenSSL's canonical form (ASCII lower case,
    /// leading, trailing and repeated spaces dropped).
    fn same_rdn(a: &RelativeDistinguishedName, b: &RelativeDistinguishedName, fold: bool) -> bool {
        let a: Vec<&AttributeTypeAndValue> = a.iter().collect();
        let b: Vec<&AttributeTypeAndValue> = b.iter().collect();
        a.len() == b.len()
            && a.iter().zip(&b).all(|(x, y)| {
                let string = |t: der::Tag| {
                    matches!(
                        t,
                        der::Tag::Utf8String | der::Tag::PrintableString | der::Tag::Ia5String
                    )
                };
                let strings = string(x.value.tag()) && string(y.value.tag());
                x.oid == y.oid
                    && (x.value == y.value
                        || (strings && x.value.value() == y.value.value())
                        || (strings
                            && fold
                            && canonical(x.value.value()) == canonical(y.value.value())))
            })
    }

    /// OpenSSL's canonical string form for name comparison (ASCII part).
    fn canonical(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len());
        for word in s
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend(word.iter().map(u8::to_ascii_lowercase));
        }
        out
    }

    /// The agent key's identifier as its certificate states it (OpenSSL matches the
    /// employee certificate's AKI against it), else RFC 7093 method 1 as the CA computes.
    fn agent_key_id(
        tbs: &x509_cert::TbsCertificate,
        public_key: &[u8; PUBLIC_KEY_LEN],
    ) -> Result<Vec<u8>, Status> {
        match tbs.get_extension::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => Ok(ski.0.as_bytes().to_vec()),
            Ok(None) => Ok(certificate_key_id(public_key).to_vec()),
            Err(_) => Err(Status::Internal),
        }
    }

    /// What goes into an employee's TBSCertificate.
    struct Tbs<'a> {
        serial: &'a [u8],
        issuer: &'a Name,
        not_before: u64,
        not_after: u64,
        subject: &'a Name,
        public_key: &'a [u8; PUBLIC_KEY_LEN],
        authority_key_id: &'a [u8],
        alt_names: Option<&'a [u8]>,
    }

    /// The TBSCertificate's DER. `TbsCertificate`'s fields are private to x509-cert
    /// without its builder (which needs std here), so the SEQUENCE is assembled from the
    /// DER of its parts, each encoded by `der` / `x509-cert`.
    fn tbs_der(t: &Tbs<'_>) -> der::Result<Vec<u8>> {
        let ext = |id: ObjectIdentifier, critical: bool, value: Vec<u8>| {
            Ok::<_, der::Error>(Extension {
                extn_id: id,
                critical,
                extn_value: OctetString::new(value)?,
            })
        };
        let mut exts = Vec::with_capacity(5);
        exts.push(ext(
            <BasicConstraints as der::oid::AssociatedOid>::OID,
            true,
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_der()?,
        )?);
        exts.push(ext(
            <KeyUsage as der::oid::AssociatedOid>::OID,
            true,
            KeyUsage(KeyUsages::DigitalSignature.into()).to_der()?,
        )?);
        exts.push(ext(
            <SubjectKeyIdentifier as der::oid::AssociatedOid>::OID,
            false,
            OctetString::new(certificate_key_id(t.public_key).to_vec())?.to_der()?,
        )?);
        exts.push(ext(
            <AuthorityKeyIdentifier as der::oid::AssociatedOid>::OID,
            false,
            AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(t.authority_key_id.to_vec())?),
                ..Default::default()
            }
            .to_der()?,
        )?);
        if let Some(san) = t.alt_names {
            exts.push(ext(
                <SubjectAltName as der::oid::AssociatedOid>::OID,
                false,
                san.to_vec(),
            )?);
        }
        let mut spki = Vec::with_capacity(91);
        spki.extend_from_slice(&[
            0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A,
            0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,
        ]);
        let mut bits = Vec::with_capacity(PUBLIC_KEY_LEN + 1);
        bits.push(0);
        bits.extend_from_slice(t.public_key);
        spki.extend_from_slice(&tlv(0x03, &bits));

        let mut body = Vec::with_capacity(512);
        body.extend_from_slice(&VERSION_V3);
        body.extend_from_slice(&der::asn1::UintRef::new(t.serial)?.to_der()?);
        body.extend_from_slice(&ECDSA_SHA256_ALG);
        body.extend_from_slice(&t.issuer.to_der()?);
        let mut validity = time(t.not_before)?.to_der()?;
        validity.extend_from_slice(&time(t.not_after)?.to_der()?);
        body.extend_from_slice(&tlv(0x30, &validity));
        body.extend_from_slice(&t.subject.to_der()?);
        body.extend_from_slice(&tlv(0x30, &spki));
        body.extend_from_slice(&tlv(0xA3, &exts.to_der()?));
        Ok(tlv(0x30, &body))
    }

    /// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
    fn time(secs: u64) -> der::Result<Time> {
        let dt = der::DateTime::from_unix_duration(Duration::from_secs(secs))?;
        Ok(if dt.year() <= 2049 {
            Time::UtcTime(der::asn1::UtcTime::from_date_time(dt)?)
        } else {
            Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(dt))
        })
    }

    /// A DER TLV with a definite length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len() + 4);
        out.push(tag);
        let len = content.len();
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        if len < 0x80 {
            out.push(bytes[bytes.len() - 1]);
        } else {
            // why: at most size_of::<usize>() length octets, far below 0x7F.
            #[allow(clippy::cast_possible_truncation)]
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    /// `ECDSA-Sig-Value` of `r ‖ s`.
    fn ecdsa_der(rs: &[u8; 64]) -> Vec<u8> {
        let int = |half: &[u8]| {
            let trimmed = &half[half.iter().take_while(|b| **b == 0).count()..];
            let mut v = Vec::with_capacity(33);
            if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
                v.push(0);
            }
            v.extend_from_slice(trimmed);
            tlv(0x02, &v)
        };
        let mut seq = int(&rs[..32]);
        seq.extend_from_slice(&int(&rs[32..]));
        tlv(0x30, &seq)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use alloc::vec;
        use core::str::FromStr as _;
        use der::asn1::Ia5String;
        use x509_cert::ext::pkix::constraints::name::GeneralSubtree;

        fn nc(permitted: Vec<GeneralName>, excluded: Vec<GeneralName>) -> NameConstraints {
            let subtrees = |v: Vec<GeneralName>| {
                (!v.is_empty()).then(|| {
                    v.into_iter()
                        .map(|base| GeneralSubtree {
                            base,
                            minimum: 0,
                            maximum: None,
                        })
                        .collect()
                })
            };
            NameConstraints {
                permitted_subtrees: subtrees(permitted),
                excluded_subtrees: subtrees(excluded),
            }
        }
        fn dns(s: &str) -> GeneralName {
            GeneralName::DnsName(Ia5String::new(s).unwrap())
        }
        fn mail(s: &str) -> GeneralName {
            GeneralName::Rfc822Name(Ia5String::new(s).unwrap())
        }
        fn dn(s: &str) -> GeneralName {
            GeneralName::DirectoryName(Name::from_str(s).unwrap())
        }

        #[test]
        fn names_match_their_subtrees_only() {
            let c = nc(
                vec![dns("example.com"), mail(".example.org"), dn("O=acme")],
                vec![dns("secret.example.com"), dn("OU=x,O=acme")],
            );
            for (name, inside) in [
                (dns("example.com"), true),
                (dns("WWW.Example.com"), true),
                (dns("badexample.com"), false),
                (dns("secret.example.com"), false),
                (dns("a.secret.example.com"), false),
                (mail("bob@a.example.org"), true),
                (mail("bob@example.org"), false),
                (mail("bob"), false),
                (dn("CN=bob,O=acme"), true),
                (dn("CN=bob,OU=y,O=acme"), true),
                (dn("CN=bob,OU=x,O=acme"), false),
                (dn("CN=bob,O=acme2"), false),
                (dn("O=acme,C=DE"), false),
                // Excluded subtrees fold case and spaces, as OpenSSL does.
                (dn("CN=bob,OU=X,O=acme"), false),
                (dn("CN=bob,OU= x ,O=acme"), false),
                // Permitted ones do not.
                (dn("CN=bob,O=ACME"), false),
                (GeneralName::DirectoryName(Name::default()), false),
                (
                    GeneralName::UniformResourceIdentifier(
                        Ia5String::new("http://example.com").unwrap(),
                    ),
                    false,
                ),
            ] {
                assert_eq!(within(&c, &name), inside, "{name:?}");
            }
            // A mailbox subtree takes that mailbox, a host subtree its mailboxes.
            let c = nc(vec![mail("bob@example.com"), mail("example.net")], vec![]);
            assert!(within(&c, &mail("bob@example.com")));
            assert!(!within(&c, &mail("eve@example.com")));
            assert!(within(&c, &mail("eve@EXAMPLE.net")));
            assert!(!within(&c, &mail("eve@a.example.net")));
            // No subtree of the name's type: refused (stricter than RFC 5280).
            assert!(!within(&c, &dns("example.net")));
        }

        #[test]
        fn every_name_of_a_certificate_is_checked() {
            let c = nc(
                vec![dns("example.com"), mail("example.com"), dn("O=acme")],
                vec![],
            );
            let subject = Name::from_str("CN=bob,O=acme").unwrap();
            assert!(names_within(&c, &subject, &[dns("www.example.com")]));
            // A NUL, a space or a non-ASCII character in an IA5 name: refused even where
            // the suffix fits.
            for bad in [
                "evil\0.example.com",
                "a b.example.com",
                "\u{7f}.example.com",
            ] {
                assert!(!names_within(&c, &subject, &[dns(bad)]), "{bad:?}");
            }
            assert!(!names_within(&c, &subject, &[dns("")]));
            // The subject's emailAddress is an rfc822Name.
            let with_mail = |m: &str| {
                let hex: alloc::string::String =
                    m.bytes().map(|b| alloc::format!("{b:02X}")).collect();
                let len = m.len();
                Name::from_str(&alloc::format!(
                    "1.2.840.113549.1.9.1=#16{len:02X}{hex},CN=bob,O=acme"
                ))
                .unwrap()
            };
            assert!(names_within(&c, &with_mail("bob@example.com"), &[]));
            assert!(!names_within(&c, &with_mail("bob@example.org"), &[]));
            assert!(!names_within(&c, &with_mail("bob\0@example.com"), &[]));
        }

        #[test]
        fn signatures_and_lengths_encode_as_der() {
            let mut rs = [0u8; 64];
            rs[0] = 0x80;
            rs[63] = 1;
            let sig = ecdsa_der(&rs);
            assert_eq!(&sig[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
            assert_eq!(&sig[sig.len() - 3..], &[0x02, 0x01, 0x01]);
            assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
            assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2C]);
        }
    }
}
