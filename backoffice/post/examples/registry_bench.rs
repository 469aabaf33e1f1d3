//! Registry inserts with the duplicate check, at scale: fills a fresh registry with
//! `--stored N` pieces (default 1,000,000, over 1,000 devices), then times `--measure M`
//! more inserts (default 100,000) through [`openpsd_post::registry::record`] in batches of
//! 1,000 (one transaction each, as the service records a scanned batch), and prints
//! inserts/s. No signatures: this measures the store, not the verifier.
//!
//! The store is a fresh `post.sqlite`, or with `--postgres "host=… user=…"` a fresh
//! database `openpsd_registry_bench` on that PostgreSQL server (the service's store, month
//! partitions and all).
//!
//! `cargo run --release -p openpsd-post --example registry_bench -- --stored 1000000`

use std::time::Instant;

use openpsd_post::store::Store;

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

fn text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: u32) -> u32 {
    text(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn insert(store: &Store, items: &[IndiciumData]) -> anyhow::Result<()> {
    let items = items.to_vec();
    let days = items.iter().map(|d| d.date.day_number()).collect();
    store
        .run("bench", days, move |tx| {
            let batch: Vec<_> = items
                .into_iter()
                .map(|d| (d, d.encode(), String::new()))
                .collect();
            openpsd_post::registry::record_batch(tx, &batch, "bench").map(drop)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let f = Fixed {
        date: Date::new(2026, 11, 29).ok_or_else(|| anyhow::anyhow!("date"))?,
        origin: PostalCode::new(b"10115").ok_or_else(|| anyhow::anyhow!("code"))?,
        destination: PostalCode::new(b"20095").ok_or_else(|| anyhow::anyhow!("code"))?,
    };
    let stored = arg("--stored", 1_000_000);
    let measure = arg("--measure", 100_000);
    let devices = 1_000u32;
    let dir = tempfile::tempdir()?;
    let store = match text("--postgres") {
        Some(base) => {
            let url = tokio::task::spawn_blocking(move || {
                openpsd_post::postgres::create_database(&base, "openpsd_registry_bench")
            })
            .await??;
            Store::postgres(&url).await?
        }
        None => Store::sqlite(dir.path())?,
    };
    let per_device = stored / devices;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    let mut last_report = Instant::now();
    for n in 1..=per_device {
        for d in 0..devices {
            batch.push(piece(f, d, n));
            if batch.len() == 1000 {
                insert(&store, &batch).await?;
                batch.clear();
            }
        }
        if last_report.elapsed().as_secs() >= 10 {
            eprintln!(
                "  filling: {} of {} pieces",
                n * devices,
                per_device * devices
            );
            last_report = Instant::now();
        }
    }
    insert(&store, &batch).await?;
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
                insert(&store, &batch).await?;
                batch.clear();
            }
        }
        n += 1;
    }
    insert(&store, &batch).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "registry ({}): {done} inserts with the duplicate and order checks at {} stored pieces: {:.0} inserts/s",
        store.kind(),
        per_device * devices,
        f64::from(done) / secs
    );
    Ok(())
}
