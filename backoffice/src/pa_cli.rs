//! `backoffice pa grant|list|revoke|crl`: the postal authority's desk, with the operator's
//! certificate. `grant` gives a license number to a customer account, `list` prints the
//! grants of a license or a device, `revoke` revokes one by its serial, `crl` writes the
//! current CRL (DER, or PEM with `--pem`).

use anyhow::{Context, Result};
use openpsd_protocol::license::{GrantList, GrantRevocation, GrantView, LicenseHolder};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// The PA at `url`, called with the operator's certificate.
pub fn client(url: &str, pki: &Pki) -> Result<Upstream> {
    let tls = client_config(pki, Some(Role::Operator))?;
    Upstream::new("postal authority", url, Role::Pa, tls)
}

/// `POST /v1/licenses`: the license allocated to `account` (0: the next free number).
pub async fn allocate(
    pa: &Upstream,
    license: u32,
    origin: &str,
    account: &str,
) -> Result<LicenseHolder> {
    let body = LicenseHolder {
        license,
        origin: origin.to_owned(),
        account: Some(account.to_owned()),
        devices: 0,
    };
    Ok(pa.post("/v1/licenses", &body, "cli").await?)
}

/// `GET /v1/grants` with the given filters.
pub async fn list(pa: &Upstream, license: Option<u32>, device: Option<&str>) -> Result<GrantList> {
    let mut q = Vec::new();
    if let Some(l) = license {
        q.push(format!("license={l}"));
    }
    if let Some(d) = device {
        anyhow::ensure!(
            d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()),
            "device: 16 hex digits"
        );
        q.push(format!("device={d}"));
    }
    let path = if q.is_empty() {
        "/v1/grants".to_owned()
    } else {
        format!("/v1/grants?{}", q.join("&"))
    };
    Ok(pa.get(&path, "cli").await?)
}

/// `POST /v1/grants/{serial}/revoke`.
pub async fn revoke(pa: &Upstream, serial: &str, reason: &str) -> Result<GrantView> {
    anyhow::ensure!(
        !serial.is_empty() && serial.len() <= 40 && serial.bytes().all(|b| b.is_ascii_hexdigit()),
        "serial: 1 to 20 octets of hex"
    );
    let body = GrantRevocation {
        reason: reason.to_owned(),
    };
    Ok(pa
        .post(&format!("/v1/grants/{serial}/revoke"), &body, "cli")
        .await?)
}

/// `GET /v1/crl` (DER), over its own HTTPS client: the answer is not JSON.
pub async fn crl(url: &str, pki: &Pki) -> Result<Vec<u8>> {
    let tls = client_config(pki, Some(Role::Operator))?;
    let parsed = reqwest::Url::parse(url).with_context(|| format!("PA URL {url}"))?;
    let host = parsed.host_str().context("PA URL has no host")?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))?.collect();
    let name = Role::Pa.dns_name();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve_to_addrs(&name, &addrs)
        .build()?;
    let resp = http
        .get(format!("https://{name}:{port}/v1/crl"))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "GET /v1/crl: {}", resp.status());
    Ok(resp.bytes().await?.to_vec())
}

/// Prints grants as a table.
pub fn print(grants: &[GrantView]) {
    if grants.is_empty() {
        println!("no grants");
        return;
    }
    println!(
        "{:<32}  {:>10}  {:<16}  {:<10}  {:<10}  {:<10}  state",
        "serial", "license", "device", "origin", "from", "to"
    );
    for g in grants {
        let state = match (&g.revoked_at, &g.reason) {
            (Some(at), Some(r)) => format!("revoked at {at}: {r}"),
            (Some(at), None) => format!("revoked at {at}"),
            _ => "valid".to_owned(),
        };
        println!(
            "{:<32}  {:>10}  {:<16}  {:<10}  {:<10}  {:<10}  {state}",
            g.serial, g.license, g.device_id, g.origin, g.not_before, g.not_after
        );
    }
}
