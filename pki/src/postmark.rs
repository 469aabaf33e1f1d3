//! The postmark's two encodings (docs: the certificate-meter spec, "Compact postmark"): the
//! card replies with a compact postmark (TSTInfo and an r‖s signature, about 200 B); here
//! it becomes an RFC 3161 TimeStampToken, a CMS SignedData that stock tools verify, and a
//! token we made becomes compact again without loss.
//!
//! Both directions rebuild the signed attributes with core's
//! [`signed_attrs_der`], the very bytes the card signed, so there is one
//! definition of them. [`verify`] checks a token natively the way `openssl ts -verify`
//! does, plus the postmark's own shape.

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use der::asn1::{OctetString, SetOfVec};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::{key_id, sha256, SIGNATURE_LEN};
use openpsd_core::psd::certmeter::tst::{
    decode_tst_info, signed_attrs_der, CompactPostmark, PostmarkFields,
};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;

use crate::cms::{
    ContentInfo, EncapsulatedContentInfo, IssuerAndSerialNumber, SignedData, SignerInfo,
    ECDSA_WITH_SHA256, ID_CT_TST_INFO, ID_SHA256, ID_SIGNED_DATA,
};

/// id-kp-timeStamping, 1.3.6.1.5.5.7.3.8.
const ID_KP_TIME_STAMPING: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

fn algorithm(oid: der::asn1::ObjectIdentifier) -> AlgorithmIdentifierOwned {
    // Parameters absent for both sha256 (RFC 5754 §2) and ecdsa-with-SHA256 (RFC 5758 §3.2).
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// The SEC1 point of a certificate's P-256 key.
fn public_key(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
}

/// A certificate from DER that re-encodes to the same bytes: the certHash the card signed
/// is over the bytes given, the token carries the re-encoding, and they must agree.
fn certificate(der: &[u8]) -> Result<Certificate> {
    let cert = Certificate::from_der(der).context("certificate DER")?;
    ensure!(
        cert.to_der()? == der,
        "certificate is not in canonical DER (its hash would not match the token's copy)"
    );
    Ok(cert)
}

/// The RFC 3161 TimeStampToken of a compact postmark: ContentInfo { id-signedData,
/// SignedData { version 3, {sha256}, { id-ct-TSTInfo, TSTInfo }, certificates
/// [`cert_der`, `chain`...], { SignerInfo { version 1, issuerAndSerialNumber of `cert_der`,
/// sha256, signedAttrs, ecdsa-with-SHA256, DER(r, s) } } } }.
///
/// `cert_der` is the postmark certificate the card's key slot holds; `chain` is optional
/// (intermediate or root certificates to embed; verifiers usually get the root apart).
/// Refuses a TSTInfo that is not the card's shape, a certificate whose key is not the
/// compact postmark's key ID, and a signature that does not verify under it.
pub fn expand(compact: &CompactPostmark, cert_der: &[u8], chain: &[Vec<u8>]) -> Result<Vec<u8>> {
    decode_tst_info(&compact.tst_info).map_err(|e| anyhow!("TSTInfo: {e}"))?;
    let cert = certificate(cert_der)?;
    let key = public_key(&cert);
    ensure!(
        key_id(key) == compact.key_id,
        "the certificate's key is not the postmark's key {}",
        hex::encode(compact.key_id.0)
    );

    let attrs_der = signed_attrs_der(&compact.tst_info, &sha256(cert_der));
    let signature = Signature::from_slice(&compact.signature).context("r‖s signature")?;
    VerifyingKey::from_sec1_bytes(key)
        .context("certificate key is not a P-256 point")?
        .verify(&attrs_der, &signature)
        .context("the postmark's signature does not verify under the certificate's key")?;
    let signed_attrs = SetOfVec::<Attribute>::from_der(&attrs_der)?;

    let mut certificates = SetOfVec::new();
    certificates.insert(cert.clone())?;
    for der in chain {
        certificates.insert(certificate(der)?)?;
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
    let token = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: SignedData {
            version: 3,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA256)])?,
            encap_content_info: EncapsulatedContentInfo {
                e_content_type: ID_CT_TST_INFO,
                e_content: Some(OctetString::new(compact.tst_info.clone())?),
            },
            certificates: Some(certificates),
            signer_infos: SetOfVec::try_from(vec![signer])?,
        },
    };
    Ok(token.to_der()?)
}

/// The parts of a token that are ours: TSTInfo, its fields, the signer's certificate, the
/// signed attributes' DER (tag `0x31`) and the r‖s signature.
struct Parsed {
    tst_info: Vec<u8>,
    fields: PostmarkFields,
    signer: Certificate,
    others: Vec<Certificate>,
    signed_attrs: Vec<u8>,
    signature: Signature,
}

fn parse(token_der: &[u8]) -> Result<Parsed> {
    let token = ContentInfo::from_der(token_der).context("TimeStampToken DER")?;
    ensure!(token.content_type == ID_SIGNED_DATA, "not a SignedData");
    let sd = token.content;
    ensure!(
        sd.version == 3,
        "SignedData version {} (3 expected)",
        sd.version
    );
    ensure!(
        sd.digest_algorithms.as_slice() == [algorithm(ID_SHA256)],
        "digest algorithms other than sha256"
    );
    ensure!(
        sd.encap_content_info.e_content_type == ID_CT_TST_INFO,
        "content is not a TSTInfo"
    );
    let tst_info = sd
        .encap_content_info
        .e_content
        .context("no TSTInfo in the token")?
        .into_bytes()
        .into_vec();
    let fields = decode_tst_info(&tst_info).map_err(|e| anyhow!("TSTInfo: {e}"))?;

    let [signer_info] = sd.signer_infos.as_slice() else {
        bail!("{} signers (one expected)", sd.signer_infos.len());
    };
    ensure!(
        signer_info.version == 1,
        "SignerInfo version {}",
        signer_info.version
    );
    ensure!(
        signer_info.digest_algorithm == algorithm(ID_SHA256),
        "digest algorithm is not sha256"
    );
    ensure!(
        signer_info.signature_algorithm == algorithm(ECDSA_WITH_SHA256),
        "signature algorithm is not ecdsa-with-SHA256"
    );
    let mut signer = None;
    let mut others = Vec::new();
    for cert in sd.certificates.map(SetOfVec::into_vec).unwrap_or_default() {
        let tbs = cert.tbs_certificate();
        if signer.is_none()
            && tbs.issuer() == &signer_info.sid.issuer
            && tbs.serial_number() == &signer_info.sid.serial_number
        {
            signer = Some(cert);
        } else {
            others.push(cert);
        }
    }
    let signer = signer.context("the signer's certificate is not in the token")?;
    let signed_attrs = signer_info
        .signed_attrs
        .as_ref()
        .context("no signed attributes")?
        .to_der()?;
    let signature = Signature::from_der(signer_info.signature.as_bytes())
        .context("signature is not a DER ECDSA-Sig-Value")?;
    Ok(Parsed {
        tst_info,
        fields,
        signer,
        others,
        signed_attrs,
        signature,
    })
}

/// Verifies a postmark token natively and returns what it states:
///
/// - the message imprint is `document_digest` ("message imprint mismatch" otherwise, as
///   OpenSSL says);
/// - the signed attributes are exactly contentType id-ct-TSTInfo, messageDigest of the
///   TSTInfo and signingCertificateV2 with the hash of the embedded signer certificate;
/// - the signature verifies under the signer certificate's key;
/// - the signer certificate is signed (ecdsa-with-SHA256) by `ca_cert_der`'s key, names it
///   as issuer, has the critical EKU timeStamping alone, and was valid at genTime (not
///   now: a postmark stays verifiable after its certificate expires, sigstore TSA #1384).
///
/// Revocation (CRL, OCSP) is not checked here.
pub fn verify(
    token_der: &[u8],
    document_digest: &[u8; 32],
    ca_cert_der: &[u8],
) -> Result<PostmarkFields> {
    let p = parse(token_der)?;
    ensure!(
        &p.fields.digest == document_digest,
        "message imprint mismatch"
    );

    let signer_der = p.signer.to_der()?;
    let expected = signed_attrs_der(&p.tst_info, &sha256(&signer_der));
    ensure!(
        p.signed_attrs == expected,
        "signed attributes are not the postmark's (messageDigest or certHash mismatch)"
    );
    VerifyingKey::from_sec1_bytes(public_key(&p.signer))
        .context("signer key is not a P-256 point")?
        .verify(&p.signed_attrs, &p.signature)
        .context("postmark signature does not verify")?;

    let ca = Certificate::from_der(ca_cert_der).context("CA certificate DER")?;
    let tbs = p.signer.tbs_certificate();
    ensure!(
        tbs.issuer() == ca.tbs_certificate().subject(),
        "the certificate's issuer is not the CA"
    );
    ensure!(
        p.signer.signature_algorithm() == &algorithm(ECDSA_WITH_SHA256),
        "certificate not signed with ecdsa-with-SHA256"
    );
    let cert_signature = Signature::from_der(
        p.signer
            .signature()
            .as_bytes()
            .context("certificate signature has unused bits")?,
    )
    .context("certificate signature is not a DER ECDSA-Sig-Value")?;
    VerifyingKey::from_sec1_bytes(public_key(&ca))
        .context("CA key is not a P-256 point")?
        .verify(&tbs.to_der()?, &cert_signature)
        .context("the certificate is not signed by the CA")?;

    match tbs.get_extension::<ExtendedKeyUsage>() {
        Ok(Some((true, eku))) if eku.0 == [ID_KP_TIME_STAMPING] => {}
        _ => bail!("the certificate's EKU is not timeStamping alone and critical"),
    }
    let validity = tbs.validity();
    let gen_time = p.fields.gen_time;
    ensure!(
        validity.not_before.to_unix_duration().as_secs() <= gen_time
            && gen_time <= validity.not_after.to_unix_duration().as_secs(),
        "genTime is outside the certificate's validity"
    );
    Ok(p.fields)
}

/// The compact postmark of a token: the inverse of [`expand`], lossless for every token
/// `expand` made (`expand(&compact_of(t)?, signer, chain) == t`, checked here: a token of
/// any other shape is refused). The signature is not verified; use [`verify`] for that.
pub fn compact_of(token_der: &[u8]) -> Result<CompactPostmark> {
    let p = parse(token_der)?;
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&p.signature.to_bytes());
    let compact = CompactPostmark {
        key_id: key_id(public_key(&p.signer)),
        tst_info: p.tst_info,
        signature,
    };
    let chain = p
        .others
        .iter()
        .map(|c| Ok(c.to_der()?))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        expand(&compact, &p.signer.to_der()?, &chain)? == token_der,
        "the token is not one expand would make (encoding, attributes or signature form)"
    );
    Ok(compact)
}

/// The certificates a token embeds (DER), the signer's first: what [`expand`] needs
/// besides the compact form.
pub fn certificates_of(token_der: &[u8]) -> Result<Vec<Vec<u8>>> {
    let p = parse(token_der)?;
    let mut out = vec![p.signer.to_der()?];
    for c in &p.others {
        out.push(c.to_der()?);
    }
    Ok(out)
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
            assert!(compact_of(&bytes).is_err());
            assert!(verify(&bytes, &[0; 32], &bytes).is_err());
        }
    }
}
