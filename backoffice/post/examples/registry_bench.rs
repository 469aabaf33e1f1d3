//! Registry inserts with the duplicate check, at scale: fills a fresh `post.sqlite` with
//! `--stored N` pieces (default 1,000,000, over 1,000 devices), then times `--measure M`
//! more inserts (default 100,000) through [`openpsd_post::registry::record`] in batches of
//! 1,000 (one transaction each, as the service records a scanned batch), and prints
//! inserts/s. No signatures: this measures the store, not the verifier.
//!
//! `cargo run --release -p openpsd-post --example registry_bench -- --stored 1000000`

use std::time::Instant;

use openpsd_core::psd::indicium::IndiciumData;
use openpsd_core::types::{
    Amount, Date, DeviceId, KeyId, LicenseId, PieceCount, PostalCode, RateCategory,
};

/// The fixed fields of every piece.
#[derive(Clone, Copy)]
struct Fixed {
    date: Date,
    origin: PostalCode,
    destination: PostalCode,
}

fn piece(f: Fixed, device: u32, n: u32) -> IndiciumData {
    let mut id = *b"PSD\0\0\0\0\0";
    id[4..].copy_from_slice(&device.to_be_bytes());
    IndiciumData {
        key_id: KeyId([0; 4]),
        device: DeviceId(id),
        license: LicenseId(4711),
        ar: Amount(u64::from(n) * 100),
        dr: Amount(1_000_000_000 - u64::from(n) * 100),
        pieces: PieceCount(n),
        postage: Amount(100),
        date: f.date,
        rate: RateCategory(1),
        origin: f.origin,
        destination: f.destination,
    }
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn insert(c: &mut rusqlite::Connection, items: &[IndiciumData]) -> anyhow::Result<()> {
    let tx = c.transaction()?;
    for d in items {
        let signed = d.encode();
        openpsd_post::registry::record(&tx, d, &signed, "", "bench")
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    tx.commit()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let f = Fixed {
        date: Date::new(2026, 11, 29).ok_or_else(|| anyhow::anyhow!("date"))?,
        origin: PostalCode::new(b"10115").ok_or_else(|| anyhow::anyhow!("code"))?,
        destination: PostalCode::new(b"20095").ok_or_else(|| anyhow::anyhow!("code"))?,
    };
    let stored = arg("--stored", 1_000_000);
    let measure = arg("--measure", 100_000);
    let devices = 1_000u32;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("post.sqlite");
    drop(openpsd_service_kit::db::Db::open(
        &path,
        openpsd_post::registry::SCHEMA,
    )?);
    let mut c = openpsd_service_kit::db::open_connection(&path)?;
    let per_device = stored / devices;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for n in 1..=per_device {
        for d in 0..devices {
            batch.push(piece(f, d, n));
            if batch.len() == 1000 {
                insert(&mut c, &batch)?;
                batch.clear();
            }
        }
    }
    insert(&mut c, &batch)?;
    batch.clear();
    let fill = started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} pieces in {fill:.1} s ({:.0}/s)",
        per_device * devices,
        f64::from(per_device * devices) / fill
    );
    let started = Instant::now();
    let mut done = 0u32;
    let mut n = per_device + 1;
    while done < measure {
        for d in 0..devices {
            batch.push(piece(f, d, n));
            done += 1;
            if batch.len() == 1000 {
                insert(&mut c, &batch)?;
                batch.clear();
            }
        }
        n += 1;
    }
    insert(&mut c, &batch)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "registry (SQLite): {done} inserts with the duplicate and order checks at {} stored pieces: {:.0} inserts/s",
        per_device * devices,
        f64::from(done) / secs
    );
    Ok(())
}
