//! `backoffice vendor rates publish|list`, `backoffice vendor trust` and `backoffice vendor
//! anchors`: the manufacturer's desk for the certificate meter (seed 004;
//! `docs/rates.md`), with the operator's certificate. `rates publish` has the vendor sign
//! a new rate table, `rates list` prints the tables a PSD should hold now, `trust` has it
//! sign a trust anchor for a CA's (or a creditor's) key, `anchors` prints the newest of
//! each kind.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use openpsd_core::psd::certmeter::rates::Service;
use openpsd_core::types::Amount;
use openpsd_protocol::vendor::{
    service_key, service_of_key, AnchorRequest, AnchorView, Anchors, RatePublication,
    RateTableView, RateTables,
};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// The vendor at `url`, called with the operator's certificate.
pub fn client(url: &str, pki: &Pki) -> Result<Upstream> {
    let tls = client_config(pki, Some(Role::Operator))?;
    Upstream::new("vendor", url, Role::Vendor, tls)
}

/// `--fee NAME=AMOUNT` arguments (currency units, two decimals at most) as the JSON's
/// fees in minor units; a name twice is refused rather than the last one silently winning.
pub fn parse_fees(args: &[String]) -> Result<BTreeMap<String, u64>> {
    let names = || {
        Service::ALL
            .into_iter()
            .map(service_key)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut fees = BTreeMap::new();
    for arg in args {
        let (name, amount) = arg
            .split_once('=')
            .with_context(|| format!("--fee {arg}: NAME=AMOUNT, e.g. postmark=0.10"))?;
        let service = service_of_key(name)
            .with_context(|| format!("--fee {arg}: no service '{name}' (one of {})", names()))?;
        let amount: Amount = amount.parse().map_err(|_| {
            anyhow::anyhow!("--fee {arg}: '{amount}' is not an amount such as 0.10 or 5")
        })?;
        anyhow::ensure!(
            fees.insert(service_key(service).to_owned(), amount.0)
                .is_none(),
            "--fee {name} given twice"
        );
    }
    anyhow::ensure!(!fees.is_empty(), "at least one --fee NAME=AMOUNT");
    Ok(fees)
}

/// `POST /v1/rates`.
pub async fn publish(
    vendor: &Upstream,
    effective: &str,
    fees: BTreeMap<String, u64>,
    version: Option<u32>,
) -> Result<RateTableView> {
    let body = RatePublication {
        version,
        effective: effective.to_owned(),
        fees,
    };
    Ok(vendor.post("/v1/rates", &body, "cli").await?)
}

/// `GET /v1/rates`.
pub async fn list(vendor: &Upstream) -> Result<RateTables> {
    Ok(vendor.get("/v1/rates", "cli").await?)
}

/// The key to trust: from `--cert FILE` (PEM) or `--public-key HEX`.
pub fn anchor_key(cert: Option<&Path>, public_key: Option<&str>) -> Result<String> {
    match (cert, public_key) {
        (Some(path), None) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let key = openpsd_vendor::rates::certificate_key(&pem)
                .with_context(|| path.display().to_string())?;
            Ok(hex::encode(key))
        }
        (None, Some(hex)) => Ok(hex.to_ascii_lowercase()),
        _ => anyhow::bail!("--cert FILE or --public-key HEX, one of them"),
    }
}

/// `POST /v1/anchors`.
pub async fn trust(vendor: &Upstream, kind: &str, public_key: String) -> Result<AnchorView> {
    let body = AnchorRequest {
        kind: kind.to_owned(),
        public_key,
    };
    Ok(vendor.post("/v1/anchors", &body, "cli").await?)
}

/// `GET /v1/anchors`.
pub async fn anchors(vendor: &Upstream) -> Result<Anchors> {
    Ok(vendor.get("/v1/anchors", "cli").await?)
}

fn money(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// Prints rate tables, one block each.
pub fn print_tables(tables: &[RateTableView]) {
    if tables.is_empty() {
        println!("no rate tables published");
        return;
    }
    for t in tables {
        let state = if t.in_effect { " (in effect)" } else { "" };
        println!(
            "rate table {} effective {}{state}, {} bytes signed",
            t.version,
            t.effective,
            t.table.len() / 2
        );
        for (name, fee) in &t.fees {
            println!("  {name:<18} {:>12}", money(*fee));
        }
    }
}

/// Prints trust anchors, one line each.
pub fn print_anchors(anchors: &[AnchorView]) {
    if anchors.is_empty() {
        println!("no trust anchors signed");
        return;
    }
    for a in anchors {
        println!(
            "{:<8} version {:>3}  key {}",
            a.kind, a.version, a.public_key
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fees_parse_to_minor_units_by_service_name() {
        let f = parse_fees(&args(&[
            "postmark=0.10",
            "certificate=5",
            "agent_certificate=0.5",
        ]))
        .unwrap();
        assert_eq!(f["postmark"], 10);
        assert_eq!(f["certificate"], 500);
        assert_eq!(f["agent_certificate"], 50);
        for bad in [
            &["stamp=1"][..],
            &["postmark"],
            &["postmark=0.001"],
            &["postmark=-1"],
            &["postmark=1", "postmark=2"],
            &["agent certificate=1"],
            &[],
        ] {
            assert!(parse_fees(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
