//! The back office's own certificate authority (`backoffice init`): one CA key, and for
//! every service identity ([`Role`]) a P-256 key and an X.509 certificate the CA signed.
//!
//! Services present their certificate as TLS server *and* client (mutual TLS), and know
//! each other by it: a certificate's identity is the DNS name `<role>.openpsd` in its
//! subject alternative names (see [`crate::tls`]). The files are PEM, so stock tools read
//! them (`openssl x509 -in meter.crt -text`, `curl --cert operator.crt --key operator.key
//! --cacert ca.crt`).
//!
//! Layout of a PKI directory (0700):
//! - `ca.crt`, `ca.key` — the CA (10 years). `ca.key` signs nothing else; keep it off the
//!   servers once every certificate is made.
//! - `<role>.crt`, `<role>.key` — one per role (1 year); keys 0600, created exclusively.
//!   The certificate authority service's are `ca-service.crt`/`.key` ([`Role::file_stem`]):
//!   `ca.crt` is the back office's own CA.
//!
//! Rotation: `backoffice init --pki DIR --renew ROLE` moves the old pair aside
//! (`<role>.crt.<unix time>`) and issues a new key and certificate from the same CA; the
//! service picks it up at its next start, and its peers need no change because they trust
//! the CA, not the certificate.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::keys::{private_dir, write_new_private, write_public};
use crate::tls::Role;

/// The CA's subject: fixed, so certificates issued later name the same issuer.
const CA_NAME: &str = "openpsd back-office CA";
/// A role certificate's lifetime.
const CERT_DAYS: u64 = 365;
/// The CA's lifetime.
const CA_DAYS: u64 = 3650;

/// Paths of a PKI directory.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The PKI kept in `dir`.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate every service and client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// A role's certificate.
    pub fn cert(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.crt", role.file_stem()))
    }

    /// A role's private key.
    pub fn key(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.key", role.file_stem()))
    }

    /// Whether the CA exists.
    pub fn exists(&self) -> bool {
        self.ca_cert().exists()
    }

    /// Makes the CA if it is missing, and a certificate for every role in `roles` that has
    /// none. `hosts` are extra DNS names or IP addresses every server certificate is valid
    /// for (loopback names are always included). Existing files are never overwritten.
    /// Returns the roles that got a new certificate.
    pub fn init(&self, roles: &[Role], hosts: &[String]) -> Result<Vec<Role>> {
        private_dir(&self.dir)?;
        let ca_key = if self.ca_key().exists() {
            load_key(&self.ca_key())?
        } else if self.ca_cert().exists() {
            bail!(
                "{} exists without {}: restore the CA key to issue certificates",
                self.ca_cert().display(),
                self.ca_key().display()
            );
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_new_private(&self.ca_key(), key.serialize_pem().as_bytes())?;
            write_public(&self.ca_cert(), &cert.pem())?;
            tracing::info!("made the back-office CA in {}", self.dir.display());
            key
        };
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut made = Vec::new();
        for &role in roles {
            if self.cert(role).exists() && self.key(role).exists() {
                continue;
            }
            self.issue(&issuer, role, hosts)?;
            made.push(role);
        }
        Ok(made)
    }

    /// Moves `role`'s certificate and key aside and issues new ones from the same CA.
    pub fn renew(&self, role: Role, hosts: &[String]) -> Result<()> {
        let ca_key = load_key(&self.ca_key())?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let stamp = crate::db::now_secs();
        for path in [self.cert(role), self.key(role)] {
            if path.exists() {
                let old = path.with_extension(format!(
                    "{}.{stamp}",
                    path.extension().and_then(|e| e.to_str()).unwrap_or("old")
                ));
                fs::rename(&path, &old)
                    .with_context(|| format!("moving {} aside", path.display()))?;
            }
        }
        self.issue(&issuer, role, hosts)
    }

    /// A merchant's client certificate file (`merchant-<id>.crt`): role merchant, naming
    /// the merchant `id` ([`crate::tls::merchant_of_certificate`]).
    pub fn merchant_cert(&self, id: &str) -> PathBuf {
        self.dir.join(format!("merchant-{id}.crt"))
    }

    /// Its key file.
    pub fn merchant_key(&self, id: &str) -> PathBuf {
        self.dir.join(format!("merchant-{id}.key"))
    }

    /// Issues merchant `id` a client certificate (`merchant-<id>.crt`/`.key`) unless it has
    /// one. `id`: 1 to 32 of `a-z 0-9 -` ([`crate::tls::merchant_id_ok`]), exactly what its
    /// customers' payment certificates name as merchant.
    pub fn init_merchant(&self, id: &str) -> Result<()> {
        if !crate::tls::merchant_id_ok(id) {
            bail!("merchant {id:?}: 1 to 32 of a-z 0-9 -, not starting or ending with -");
        }
        if self.merchant_cert(id).exists() && self.merchant_key(id).exists() {
            return Ok(());
        }
        let issuer = Issuer::new(ca_params()?, load_key(&self.ca_key())?);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            Role::Merchant.dns_name(),
            format!("{id}{}", crate::tls::MERCHANT_SUFFIX),
        ])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "openpsd merchant");
        dn.push(DnType::CommonName, id);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, CERT_DAYS);
        let cert = params.signed_by(&key, &issuer)?;
        let _ = fs::remove_file(self.merchant_key(id));
        write_new_private(
            &self.merchant_key(id),
            Zeroizing::new(key.serialize_pem()).as_bytes(),
        )?;
        write_public(&self.merchant_cert(id), &cert.pem())?;
        tracing::info!(
            "issued {} for merchant {id}",
            self.merchant_cert(id).display()
        );
        Ok(())
    }

    fn issue(&self, issuer: &Issuer<'_, KeyPair>, role: Role, hosts: &[String]) -> Result<()> {
        let key = KeyPair::generate()?;
        if let Some(bad) = hosts
            .iter()
            .find(|h| h.contains('*') || h.ends_with(".openpsd"))
        {
            bail!("--host {bad}: no wildcards and no .openpsd names (those name identities)");
        }
        // The operator is a client only: its certificate must not serve as any server.
        // The extra host names go on the meter's certificate alone (the server customers
        // reach by name); the KMS and the RC are reached by their role names.
        let server = !matches!(role, Role::Operator | Role::Merchant);
        let mut names = vec![role.dns_name()];
        if server {
            names.push("localhost".to_owned());
        }
        if role == Role::Meter {
            names.extend(
                hosts
                    .iter()
                    .filter(|h| h.parse::<IpAddr>().is_err())
                    .cloned(),
            );
        }
        let mut params = CertificateParams::new(names)?;
        if server {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::from([
                    0u16, 0, 0, 0, 0, 0, 0, 1,
                ])));
        }
        if role == Role::Meter {
            for ip in hosts.iter().filter_map(|h| h.parse::<IpAddr>().ok()) {
                params.subject_alt_names.push(SanType::IpAddress(ip));
            }
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "openpsd back office");
        dn.push(DnType::CommonName, role.name());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // The box is a server only (the data center calls it, it calls nobody): its
        // certificate cannot open a TLS session to any service as a client.
        params.extended_key_usages = match (server, role) {
            (true, Role::Box) => vec![ExtendedKeyUsagePurpose::ServerAuth],
            (true, _) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            (false, _) => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        validity(&mut params, CERT_DAYS);
        let cert = params.signed_by(&key, issuer)?;
        // The key first: a certificate without its key is useless, a key without its
        // certificate is simply issued again.
        let _ = fs::remove_file(self.key(role));
        write_new_private(
            &self.key(role),
            Zeroizing::new(key.serialize_pem()).as_bytes(),
        )?;
        write_public(&self.cert(role), &cert.pem())?;
        tracing::info!("issued {} for {}", self.cert(role).display(), role.name());
        Ok(())
    }
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "openpsd back office");
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_DAYS);
    Ok(params)
}

/// From yesterday (clocks differ a little) to `days` from now.
fn validity(params: &mut CertificateParams, days: u64) {
    let today = u64::try_from(crate::db::now_secs()).unwrap_or(0) / 86_400;
    let date = |d: u64| {
        openpsd_core::types::Date::from_unix_days(d)
            .map(|c| rcgen::date_time_ymd(i32::from(c.year), c.month, c.day))
    };
    if let (Some(from), Some(to)) = (date(today.saturating_sub(1)), date(today + days)) {
        params.not_before = from;
        params.not_after = to;
    }
}

fn load_key(path: &Path) -> Result<KeyPair> {
    let pem = Zeroizing::new(
        fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    KeyPair::from_pem(&pem).with_context(|| format!("{} is not a PEM private key", path.display()))
}
