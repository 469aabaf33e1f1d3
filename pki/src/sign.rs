//! Document signatures (the card's SIGN, `openpsd_core::psd::certmeter::sign`): the card
//! answers a compact signature (key ID, signingTime, the content's SHA-256, r‖s, 110 B);
//! here it becomes a detached CMS SignedData (RFC 5652, `.p7s`) that stock
//! `openssl cms -verify -binary -inform DER -in FILE.p7s -content FILE -CAfile ca.pem`
//! accepts, and a `.p7s` is verified natively.
//!
//! The signed attributes are rebuilt with core's
//! [`openpsd_core::psd::certmeter::sign::signed_attrs_der`], the very bytes the card
//! signed: one definition of them.

use anyhow::{bail, ensure, Context as _, Result};
use der::asn1::{OctetString, SetOfVec};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::{key_id, sha256};
use openpsd_core::psd::certmeter::sign::{signed_attrs_der, CompactSignature};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;

use crate::cms::{
    ContentInfo, EncapsulatedContentInfo, IssuerAndSerialNumber, SignedData, SignerInfo,
    ECDSA_WITH_SHA256, ID_DATA, ID_SHA256, ID_SIGNED_DATA,
};

/// id-signingTime, 1.2.840.113549.1.9.5.
const ID_SIGNING_TIME: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
/// id-kp-emailProtection, 1.3.6.1.5.5.7.3.4.
const ID_KP_EMAIL_PROTECTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");

fn algorithm(oid: der::asn1::ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

fn public_key(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
}

fn certificate(der_bytes: &[u8]) -> Result<Certificate> {
    let cert = Certificate::from_der(der_bytes).context("certificate DER")?;
    ensure!(
        cert.to_der()? == der_bytes,
        "certificate is not in canonical DER (its hash would not match the signature's)"
    );
    Ok(cert)
}

/// The detached CMS SignedData (DER) of a compact signature: ContentInfo { id-signedData,
/// SignedData { version 1, {sha256}, { id-data, no eContent }, certificates [`cert_der`,
/// `chain`...], { SignerInfo { version 1, issuerAndSerialNumber of `cert_der`, sha256,
/// signedAttrs, ecdsa-with-SHA256, DER(r, s) } } } }.
///
/// `cert_der` is the sign certificate of the card's key slot. Refuses a certificate whose
/// key is not the signature's key ID and a signature that does not verify under it.
pub fn expand(compact: &CompactSignature, cert_der: &[u8], chain: &[Vec<u8>]) -> Result<Vec<u8>> {
    let cert = certificate(cert_der)?;
    let key = public_key(&cert);
    ensure!(
        key_id(key) == compact.key_id,
        "the certificate's key is not the signature's key {}",
        hex::encode(compact.key_id.0)
    );
    let attrs_der = compact.signed_attrs(&sha256(cert_der));
    let signature = Signature::from_slice(&compact.signature).context("r‖s signature")?;
    VerifyingKey::from_sec1_bytes(key)
        .context("certificate key is not a P-256 point")?
        .verify(&attrs_der, &signature)
        .context("the signature does not verify under the certificate's key")?;
    let signed_attrs = SetOfVec::<Attribute>::from_der(&attrs_der)?;

    let mut certificates = SetOfVec::new();
    certificates.insert(cert.clone())?;
    for c in chain {
        certificates.insert(certificate(c)?)?;
    }
    let signer = SignerInfo {
        version: 1,
        sid: IssuerAndSerialNumber {
            issuer: cert.tbs_certificate().issuer().clone(),
            serial_number: cert.tbs_certificate().serial_number().clone(),
        },
        digest_algorithm: algorithm(ID_SHA256),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: algorithm(ECDSA_WITH_SHA256),
        signature: OctetString::new(signature.to_der().as_bytes())?,
    };
    let p7s = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: SignedData {
            // RFC 5652 §5.1: 1 for id-data with issuerAndSerialNumber and no other
            // certificate or CRL kinds.
            version: 1,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA256)])?,
            encap_content_info: EncapsulatedContentInfo {
                e_content_type: ID_DATA,
                e_content: None,
            },
            certificates: Some(certificates),
            signer_infos: SetOfVec::try_from(vec![signer])?,
        },
    };
    Ok(p7s.to_der()?)
}

/// What a verified signature states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The compact signature it holds (time, digest, key, r‖s).
    pub compact: CompactSignature,
    /// The signer's certificate (DER).
    pub certificate: Vec<u8>,
    /// The signer's certificate's subject, as RFC 4514 text.
    pub subject: String,
}

/// Verifies a detached `.p7s` of ours natively: the signed attributes are exactly the
/// card's (contentType id-data, signingTime, messageDigest = `content_digest`,
/// signingCertificateV2 with the hash of the embedded signer certificate), the signature
/// verifies, and the signer certificate is signed by `ca_cert_der`'s key, names it as
/// issuer, has the emailProtection EKU and was valid at signingTime. Revocation (CRL,
/// OCSP) is not checked here. Also refuses any `.p7s` [`expand`] would not make.
pub fn verify(p7s_der: &[u8], content_digest: &[u8; 32], ca_cert_der: &[u8]) -> Result<Verified> {
    let ci = ContentInfo::from_der(p7s_der).context("CMS ContentInfo DER")?;
    ensure!(ci.content_type == ID_SIGNED_DATA, "not a SignedData");
    let sd = ci.content;
    ensure!(
        sd.encap_content_info.e_content_type == ID_DATA
            && sd.encap_content_info.e_content.is_none(),
        "not a detached signature of data"
    );
    let [si] = sd.signer_infos.as_slice() else {
        bail!("{} signers (one expected)", sd.signer_infos.len());
    };
    let signer = sd
        .certificates
        .as_ref()
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.tbs_certificate().issuer() == &si.sid.issuer
                    && c.tbs_certificate().serial_number() == &si.sid.serial_number
            })
        })
        .context("the signer's certificate is not in the signature")?
        .clone();
    let chain: Vec<Vec<u8>> = sd
        .certificates
        .as_ref()
        .map(|cs| {
            cs.iter()
                .filter(|c| *c != &signer)
                .map(|c| c.to_der())
                .collect::<der::Result<_>>()
        })
        .transpose()?
        .unwrap_or_default();
    let attrs = si.signed_attrs.as_ref().context("no signed attributes")?;
    let time_attr = attrs
        .iter()
        .find(|a| a.oid == ID_SIGNING_TIME)
        .context("no signingTime")?;
    let [time] = time_attr.values.as_slice() else {
        bail!("signingTime with other than one value");
    };
    let signing_time = x509_cert::time::Time::from_der(&time.to_der()?)
        .context("signingTime")?
        .to_unix_duration()
        .as_secs();
    let signature = Signature::from_der(si.signature.as_bytes())
        .context("signature is not a DER ECDSA-Sig-Value")?;
    let signer_der = signer.to_der()?;
    let mut rs = [0u8; 64];
    rs.copy_from_slice(&signature.to_bytes());
    let compact = CompactSignature {
        key_id: key_id(public_key(&signer)),
        signing_time,
        digest: *content_digest,
        signature: rs,
    };
    ensure!(
        attrs.to_der()? == signed_attrs_der(content_digest, signing_time, &sha256(&signer_der)),
        "signed attributes are not ours, or the content's digest does not match"
    );
    VerifyingKey::from_sec1_bytes(public_key(&signer))
        .context("signer key is not a P-256 point")?
        .verify(&attrs.to_der()?, &signature)
        .context("signature does not verify")?;
    ensure!(
        expand(&compact, &signer_der, &chain)? == p7s_der,
        "the signature is not one openpsd makes (encoding or signature form)"
    );

    let ca = Certificate::from_der(ca_cert_der).context("CA certificate DER")?;
    let tbs = signer.tbs_certificate();
    ensure!(
        tbs.issuer() == ca.tbs_certificate().subject(),
        "the certificate's issuer is not the CA"
    );
    let cert_sig = Signature::from_der(
        signer
            .signature()
            .as_bytes()
            .context("certificate signature has unused bits")?,
    )
    .context("certificate signature is not a DER ECDSA-Sig-Value")?;
    ensure!(
        signer.signature_algorithm() == &algorithm(ECDSA_WITH_SHA256),
        "certificate not signed with ecdsa-with-SHA256"
    );
    VerifyingKey::from_sec1_bytes(public_key(&ca))
        .context("CA key is not a P-256 point")?
        .verify(&tbs.to_der()?, &cert_sig)
        .context("the certificate is not signed by the CA")?;
    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if eku.0.contains(&ID_KP_EMAIL_PROTECTION) => {}
        _ => bail!("the certificate is not for signatures (EKU emailProtection)"),
    }
    let v = tbs.validity();
    ensure!(
        v.not_before.to_unix_duration().as_secs() <= signing_time
            && signing_time <= v.not_after.to_unix_duration().as_secs(),
        "signingTime is outside the certificate's validity"
    );
    Ok(Verified {
        compact,
        certificate: signer_der,
        subject: tbs.subject().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            assert!(verify(&bytes, &[0; 32], &bytes).is_err());
        }
    }
}
