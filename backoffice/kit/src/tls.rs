//! Mutual TLS between the services (rustls, TLS 1.3 only, the `ring` provider) and the
//! service identities it proves.
//!
//! Every service listens with the certificate [`crate::pki`] issued for its [`Role`] and
//! checks client certificates against the back-office CA. A client certificate that does
//! not chain to the CA ends the handshake; a valid one becomes the connection's
//! [`Role`], which the routes' access lists ([`crate::access`]) check. The KMS and the
//! recharging center *require* a client certificate (only services call them); the meter
//! server accepts connections without one, because its customers authenticate with
//! passwords and tokens instead.
//!
//! Why the identity is a DNS name (`kms.openpsd`) in the certificate's subject alternative
//! names rather than its common name: webpki already checks SANs for server names, so the
//! same check names a client, with no X.509 parser of ours; and a client calling the KMS
//! verifies that the server's certificate is the KMS's, not merely one from the CA
//! ([`crate::upstream`]).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pki::Pki;

/// A service identity: what a certificate of the back-office CA says its holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The meter server (the hosts' service).
    Meter,
    /// The key management system.
    Kms,
    /// The recharging center.
    Recharge,
    /// People and programs that run the back office: deposits from payments, device
    /// registration by the issuer, alarms and quarantine, the post office's scanners.
    Operator,
    /// The post office's verifier (issue 13): reads device keys at the KMS, reports
    /// findings to the meter.
    Post,
    /// The manufacturer (seed 003): checks a PSD's license request, forwards it to the
    /// postal authority, countersigns the grant.
    Vendor,
    /// The postal authority (seed 003): grants licenses as X.509 certificates.
    Pa,
    /// The certificate authority (seed 004): certifies keys PSDs generated, for the
    /// meter's customers; publishes a CRL and answers OCSP.
    Ca,
    /// The creditor (seed 004 Figs. 7-9): grants lines of credit on PSDs' payment keys
    /// and settles the payment certificates merchants present.
    Creditor,
    /// A merchant paid by payment certificates (seed 004 Fig. 9): presents them to the
    /// creditor. Its certificate also names which merchant ([`merchant_of_certificate`]).
    Merchant,
    /// The virtual meter's data center (seed 001): keeps mailers' meter records, asks the
    /// vendor for the grants that create meters in its secure box.
    Datacenter,
    /// The virtual meter's secure box served as a process of its own (`card-sim serve
    /// --tcp … --tls-cert box.crt`): a server only the data center calls. Its certificate
    /// is for serving only ([`crate::pki`]): no service accepts it from a client.
    Box,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 12] = [
        Role::Meter,
        Role::Kms,
        Role::Recharge,
        Role::Operator,
        Role::Post,
        Role::Vendor,
        Role::Pa,
        Role::Ca,
        Role::Creditor,
        Role::Merchant,
        Role::Datacenter,
        Role::Box,
    ];

    /// The role's name (`meter`, `kms`, `recharge`, `operator`, `post`, `vendor`, `pa`,
    /// `ca`, `creditor`, `merchant`, `datacenter`, `box`), as in file names.
    pub fn name(self) -> &'static str {
        match self {
            Role::Meter => "meter",
            Role::Kms => "kms",
            Role::Recharge => "recharge",
            Role::Operator => "operator",
            Role::Post => "post",
            Role::Vendor => "vendor",
            Role::Pa => "pa",
            Role::Ca => "ca",
            Role::Creditor => "creditor",
            Role::Merchant => "merchant",
            Role::Datacenter => "datacenter",
            Role::Box => "box",
        }
    }

    /// The stem of its key and certificate files in a PKI directory: the name, except for
    /// the certificate authority service, whose `ca.crt`/`ca.key` would overwrite the back
    /// office's own CA files (`ca-service.crt`, `ca-service.key`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Role::Ca => "ca-service",
            other => other.name(),
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The DNS name in its certificate that proves the role (`<name>.openpsd`).
    pub fn dns_name(self) -> String {
        format!("{}.openpsd", self.name())
    }

    /// The role a verified certificate proves, if any. Only call with a certificate the
    /// TLS layer has already verified against the CA.
    /// A certificate valid for more than one role name (say, by a wildcard) proves none.
    pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<Role> {
        let ee = webpki::EndEntityCert::try_from(cert).ok()?;
        let mut matching = Role::ALL.into_iter().filter(|r| {
            ServerName::try_from(r.dns_name())
                .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&name).is_ok())
        });
        match (matching.next(), matching.next()) {
            (Some(role), None) => Some(role),
            _ => None,
        }
    }
}

/// The DNS-name suffix of a merchant's identity: a merchant certificate names
/// `merchant.openpsd` (the role) and `<id>.merchant.openpsd` (which merchant).
pub const MERCHANT_SUFFIX: &str = ".merchant.openpsd";

/// Whether `id` can name a merchant in a certificate: 1 to 32 of `a-z 0-9 -`, not starting
/// or ending with `-` (a DNS label; the payment certificate's merchant field must equal it).
pub fn merchant_id_ok(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && !id.starts_with('-')
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The merchant a verified certificate of role [`Role::Merchant`] names: its one
/// `<id>.merchant.openpsd` DNS name. None when it has none or more than one. Only call with
/// a certificate the TLS layer has already verified against the CA.
pub fn merchant_of_certificate(cert: &CertificateDer<'_>) -> Option<String> {
    use der::Decode as _;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let (_, san) = parsed
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
        .ok()
        .flatten()?;
    let mut ids = san.0.iter().filter_map(|n| match n {
        x509_cert::ext::pkix::name::GeneralName::DnsName(d) => d
            .as_str()
            .strip_suffix(MERCHANT_SUFFIX)
            .filter(|id| merchant_id_ok(id))
            .map(str::to_owned),
        _ => None,
    });
    match (ids.next(), ids.next()) {
        (Some(id), None) => Some(id),
        _ => None,
    }
}

/// Whether a listener asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Only callers with a certificate of the CA get past the handshake.
    Required,
    /// Callers may present one (services, operators) or not (customers, who then log in).
    Optional,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_provider();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default TLS crypto provider (once; later calls do nothing),
/// for HTTP clients built without one of our configurations.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn roots(pki: &Pki) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&pki.ca_cert())? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = zeroize::Zeroizing::new(
        fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    );
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// A listener's TLS configuration: `role`'s certificate, client certificates per `auth`.
pub fn server_config(pki: &Pki, role: Role, auth: ClientAuth) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(pki)?), provider());
    let verifier = match auth {
        ClientAuth::Required => verifier.build(),
        ClientAuth::Optional => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| anyhow!("client verifier: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&pki.cert(role))?, read_key(&pki.key(role))?)
        .with_context(|| format!("{}'s certificate and key", role.name()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A merchant's client configuration: trusting the back-office CA only, presenting the
/// merchant certificate `id` ([`Pki::init_merchant`]).
pub fn merchant_client_config(pki: &Pki, id: &str) -> Result<ClientConfig> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(pki)?)
        .with_client_auth_cert(
            read_certs(&pki.merchant_cert(id))?,
            read_key(&pki.merchant_key(id))?,
        )
        .with_context(|| format!("merchant {id}'s certificate and key"))
}

/// A client's TLS configuration trusting the back-office CA only, presenting `role`'s
/// certificate when given.
pub fn client_config(pki: &Pki, role: Option<Role>) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(pki)?);
    Ok(match role {
        Some(role) => builder
            .with_client_auth_cert(read_certs(&pki.cert(role))?, read_key(&pki.key(role))?)
            .with_context(|| format!("{}'s certificate and key", role.name()))?,
        None => builder.with_no_client_auth(),
    })
}
