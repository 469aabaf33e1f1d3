//! A payment certificate (seed 004, Fig. 9: `PaymentCertificate` = the PaymentInfo DER, its
//! algorithm, the payment key's ECDSA-SHA256 signature; `core/src/psd/certmeter/credit.rs`)
//! as a CMS SignedData stock `openssl cms -verify` accepts, and back without loss.
//!
//! The encapsulated content is the PaymentInfo DER itself, its type the private OID
//! [`ID_CT_PAYMENT_INFO`]; the SignerInfo carries **no signed attributes**, so its signature
//! is the card's signature over the content, as the card made it (RFC 5652 § 5.4: without
//! signed attributes the message digest is computed over the content). The signer is the
//! line of credit certificate (the payment key's); the creditor's certificate may ride along.

use anyhow::{bail, ensure, Context as _, Result};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Decode as _, Encode as _};
use openpsd_core::crypto::sha256;
use openpsd_core::psd::certmeter::credit::{PaymentCertificate, PaymentInfo};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::cms::{
    ContentInfo, EncapsulatedContentInfo, IssuerAndSerialNumber, SignedData, SignerInfo,
    ECDSA_WITH_SHA256, ID_SHA256, ID_SIGNED_DATA,
};

/// id-ct-openpsdPaymentInfo, 1.3.6.1.4.1.32473.1.4 (under the documentation arc RFC 5612
/// reserves, like the project's other private OIDs: 1 the postmark policy, 2 the postmark
/// extension, 3 the credit-line extension).
pub const ID_CT_PAYMENT_INFO: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.1.4");

fn algorithm(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// `payment` as a CMS SignedData (DER) signed by `line_der`, the line of credit certificate
/// it was drawn on (checked: the PaymentInfo names its SHA-256, and the signature verifies
/// under its key). `chain` (e.g. the creditor's certificate) is added to the certificates.
pub fn expand(payment: &PaymentCertificate, line_der: &[u8], chain: &[Vec<u8>]) -> Result<Vec<u8>> {
    let info = PaymentInfo::from_der(&payment.info_der)
        .map_err(|e| anyhow::anyhow!("the PaymentInfo does not decode: {e}"))?;
    ensure!(
        info.line == sha256(line_der),
        "the payment was drawn on another line of credit certificate"
    );
    let line = Certificate::from_der(line_der).context("the line of credit certificate")?;
    let key = line
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .as_bytes()
        .context("the line's key")?;
    let signature = Signature::from_slice(&payment.signature).context("r‖s signature")?;
    VerifyingKey::from_sec1_bytes(key)
        .context("the line's key is not a P-256 point")?
        .verify(&payment.info_der, &signature)
        .context("the payment's signature does not verify under the line's key")?;

    let mut certificates = SetOfVec::new();
    certificates.insert(line.clone())?;
    for c in chain {
        certificates.insert(Certificate::from_der(c).context("a chain certificate")?)?;
    }
    let signer = SignerInfo {
        version: 1,
        sid: IssuerAndSerialNumber {
            issuer: line.tbs_certificate().issuer().clone(),
            serial_number: line.tbs_certificate().serial_number().clone(),
        },
        digest_algorithm: algorithm(ID_SHA256),
        signed_attrs: None,
        signature_algorithm: algorithm(ECDSA_WITH_SHA256),
        signature: OctetString::new(signature.to_der().as_bytes())?,
    };
    let p7m = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: SignedData {
            // RFC 5652 § 5.1: 3 when the content type is not id-data.
            version: 3,
            digest_algorithms: SetOfVec::try_from(vec![algorithm(ID_SHA256)])?,
            encap_content_info: EncapsulatedContentInfo {
                e_content_type: ID_CT_PAYMENT_INFO,
                e_content: Some(OctetString::new(payment.info_der.clone())?),
            },
            certificates: Some(certificates),
            signer_infos: SetOfVec::try_from(vec![signer])?,
        },
    };
    Ok(p7m.to_der()?)
}

/// The payment certificate inside a SignedData [`expand`] wrote, exactly as the card made
/// it, and the signer's certificate (DER). Checks the shape and the signature under the
/// signer's key; whether that certificate is a line of a creditor one trusts is the
/// caller's (`openssl cms -verify -CAfile creditor.pem`).
pub fn compact(p7m: &[u8]) -> Result<(PaymentCertificate, Vec<u8>)> {
    let ci = ContentInfo::from_der(p7m).context("not a CMS ContentInfo")?;
    ensure!(ci.content_type == ID_SIGNED_DATA, "not SignedData");
    let sd = ci.content;
    ensure!(
        sd.encap_content_info.e_content_type == ID_CT_PAYMENT_INFO,
        "the content is not a PaymentInfo"
    );
    let info_der = sd
        .encap_content_info
        .e_content
        .context("no encapsulated PaymentInfo")?
        .as_bytes()
        .to_vec();
    let signers = sd.signer_infos.as_slice();
    let [signer] = signers else {
        bail!("{} signers, not one", signers.len());
    };
    ensure!(signer.signed_attrs.is_none(), "signed attributes present");
    let line = sd
        .certificates
        .iter()
        .flat_map(|s| s.iter())
        .find(|c| {
            c.tbs_certificate().issuer() == &signer.sid.issuer
                && c.tbs_certificate().serial_number() == &signer.sid.serial_number
        })
        .context("the signer's certificate is not included")?;
    let signature = Signature::from_der(signer.signature.as_bytes()).context("signature")?;
    let payment = PaymentCertificate {
        info_der,
        signature: signature.to_bytes().into(),
    };
    let line_der = line.to_der()?;
    // The same checks as `expand`: the line named, the signature over the content.
    let again = expand(&payment, &line_der, &[])?;
    ensure!(!again.is_empty(), "re-expanded");
    Ok((payment, line_der))
}
