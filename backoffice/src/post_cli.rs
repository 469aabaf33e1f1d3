//! `backoffice post scan|explain|license`: the post office's scanner and clerk. Scan reads label
//! images (PNG/JPEG, decoded here with [`openpsd_post::label`]), raw indicium files and
//! text files of hex indicia (one per line), and directories of them; sends them to the post
//! office in batches with the operator's certificate, showing progress; and prints a
//! verdict per piece and a count per verdict. Explain prints what the registry holds of a
//! device and every finding, each in words.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use openpsd_protocol::post::{DeviceReport, LicenseReport, ScanBatch, ScanResult, Verdict};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// Where the post office is and who calls it.
pub struct PostClient {
    up: Upstream,
}

impl PostClient {
    /// The post office at `url`, called with the operator's certificate from `pki`.
    pub fn new(url: &str, pki: &Pki) -> Result<Self> {
        let tls = client_config(pki, Some(Role::Operator))?;
        Ok(Self {
            up: Upstream::new("post office", url, Role::Post, tls)?,
        })
    }
}

/// One thing read from the inputs: an indicium (hex) or why there is none.
struct Input {
    source: String,
    indicium: std::result::Result<String, String>,
}

fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG") || bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Reads one file into inputs.
fn read_file(path: &Path, out: &mut Vec<Input>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let source = path.display().to_string();
    if is_image(&bytes) {
        let indicium = openpsd_post::label::decode(&bytes)
            .map(hex::encode)
            .map_err(|e| format!("unreadable: {e}"));
        out.push(Input { source, indicium });
        return Ok(());
    }
    match std::str::from_utf8(&bytes) {
        Ok(text)
            if text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace()) =>
        {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() {
                    out.push(Input {
                        source: format!("{source}:{}", n + 1),
                        indicium: Ok(line.to_owned()),
                    });
                }
            }
        }
        _ => out.push(Input {
            source,
            indicium: Ok(hex::encode(&bytes)),
        }),
    }
    Ok(())
}

/// Reads every path (a directory: its files, sorted by name).
fn read_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            files.sort();
            for f in files {
                read_file(&f, &mut out)?;
            }
        } else {
            read_file(p, &mut out)?;
        }
    }
    Ok(out)
}

/// `backoffice post scan`: returns the verdicts with their sources.
pub async fn scan(
    client: &PostClient,
    paths: &[PathBuf],
    batch: usize,
    json: bool,
) -> Result<Vec<(String, Verdict)>> {
    let inputs = read_inputs(paths)?;
    let total = inputs.len();
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut results: Vec<(String, Verdict)> = Vec::with_capacity(total);
    let batch = batch.clamp(1, openpsd_protocol::post::MAX_BATCH);
    for chunk in inputs.chunks(batch) {
        let sendable: Vec<&Input> = chunk.iter().filter(|i| i.indicium.is_ok()).collect();
        let body = ScanBatch {
            indicia: sendable
                .iter()
                .filter_map(|i| i.indicium.as_ref().ok().cloned())
                .collect(),
        };
        let answer: ScanResult = if body.indicia.is_empty() {
            ScanResult {
                verdicts: Vec::new(),
            }
        } else {
            client
                .up
                .post("/v1/indicia", &body, "post_scan")
                .await
                .map_err(|e| anyhow::anyhow!("{} ({})", e.message, e.code))?
        };
        anyhow::ensure!(
            answer.verdicts.len() == body.indicia.len(),
            "the post office answered {} verdicts for {} indicia",
            answer.verdicts.len(),
            body.indicia.len()
        );
        let mut verdicts = answer.verdicts.into_iter();
        for i in chunk {
            let v = match &i.indicium {
                Ok(_) => verdicts.next().context("fewer verdicts than indicia")?,
                Err(why) => Verdict {
                    verdict: "unreadable".into(),
                    device_id: None,
                    license: None,
                    piece: None,
                    postage: None,
                    reason: Some(why.clone()),
                },
            };
            results.push((i.source.clone(), v));
        }
        let done = results.len();
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if tty {
            eprint!(
                "\rscanned {done}/{total} ({:.0}%), {rate:.0}/s   ",
                100.0 * done as f64 / total.max(1) as f64
            );
        } else {
            eprintln!("scanned {done}/{total}, {rate:.0}/s");
        }
    }
    if tty && total > 0 {
        eprintln!();
    }
    if !json {
        for (source, v) in &results {
            if v.verdict != "accepted" {
                println!(
                    "{source}: {}{}{}",
                    v.verdict,
                    v.device_id
                        .as_ref()
                        .map(|d| format!(
                            " (device {d}, license {}, piece {})",
                            v.license.unwrap_or(0),
                            v.piece.unwrap_or(0)
                        ))
                        .unwrap_or_default(),
                    v.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, v) in &results {
            *counts.entry(v.verdict.as_str()).or_default() += 1;
        }
        let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("{total} scanned: {}", summary.join(", "));
    }
    Ok(results)
}

/// `backoffice post explain DEVICE`.
pub async fn explain(client: &PostClient, device: &str) -> Result<DeviceReport> {
    client
        .up
        .get(&format!("/v1/devices/{device}/findings"), "post_explain")
        .await
        .map_err(|e| anyhow::anyhow!("{} ({})", e.message, e.code))
}

/// Prints a report in words.
pub fn print_report(r: &DeviceReport) {
    println!("device {}", r.device_id);
    for l in &r.licenses {
        println!(
            "  license {}: {} pieces seen (highest piece {}), postage used (highest AR) {}{}",
            l.license,
            l.pieces,
            l.highest_piece,
            money(l.highest_ar),
            l.credited
                .map(|c| format!(", credited by the back office {}", money(c)))
                .unwrap_or_default()
        );
    }
    println!("  copies of pieces seen again: {}", r.duplicates);
    if r.findings.is_empty() {
        println!("  no findings");
    }
    for f in &r.findings {
        println!(
            "  {} (license {}, piece {}){}: {}{}",
            f.kind,
            f.license,
            f.piece,
            f.amount
                .map(|a| format!(", amount {}", money(a)))
                .unwrap_or_default(),
            f.message,
            if f.reported {
                " [meter told: device quarantined]"
            } else {
                " [not yet told to the meter]"
            }
        );
    }
}

/// `backoffice post license N`.
pub async fn license(client: &PostClient, license: u32) -> Result<LicenseReport> {
    client
        .up
        .get(&format!("/v1/licenses/{license}"), "post_license_report")
        .await
        .map_err(|e| anyhow::anyhow!("{} ({})", e.message, e.code))
}

/// Prints a license report in words.
pub fn print_license(r: &LicenseReport) {
    println!(
        "license {}: {} device(s), postage used {}, credited {}: {}",
        r.license,
        r.devices.len(),
        money(r.postage_used),
        money(r.credited),
        match r.status.as_str() {
            "balanced" => "every device within what was paid".to_owned(),
            "unpaid" => format!("{} used above what was paid", money(r.unpaid)),
            _ => "the meter server did not answer for every device".to_owned(),
        }
    );
    for d in &r.devices {
        println!(
            "  device {}: {} pieces (highest {}), postage used {}, credited {}, {} copies, {} findings{}",
            d.device_id,
            d.pieces,
            d.highest_piece,
            money(d.highest_ar),
            d.credited.map_or_else(|| "unknown".to_owned(), money),
            d.duplicates,
            d.findings,
            match (&d.grant_serial, d.grant_revoked) {
                (Some(s), false) => format!(", granted (certificate {s})"),
                (Some(s), true) => format!(", grant revoked (certificate {s})"),
                (None, _) => String::new(),
            }
        );
    }
}

fn money(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}
