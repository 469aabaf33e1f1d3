//! License commands through pcscd (issue 14): LICENSE REQUEST, LICENSE INSTALL, EXPORT SET,
//! IMPORT SET and RETIRE SET timed one by one on a card-sim PSD behind a PC/SC reader
//! (pcscd + vpcd, `card-sim serve --vpcd`), with the same commands in process in the same
//! run as the anchor, and the plain APDU round trip (SELECT) of each for context.
//!
//! Why here: the PC/SC link is the host's own (`openpsd_host::open(pcsc:READER)`, the
//! `pcsc` crate behind the feature of that name, what `openpsd license …` uses), and the
//! commands go through core's typed `PsdClient`, as the CLI sends them. The fixtures — the
//! licensing personalization with the test postal authority's key and the vendor key, and
//! `grant()`, which signs the PA certificate template and the vendor's countersignature
//! locally — come from `openpsd-tests` (a dev-dependency of this crate). An example with
//! `required-features = ["pcsc"]` keeps libpcsclite out of every other build.
//!
//! Three PSDs, all personalized by the bench itself (PERSONALIZE with the PA block, no
//! register set of their own), run the same loop, one iteration each per round (the order
//! rotates each round so that all see the same machine noise):
//!
//! - `mem`: core's `Card` on the in-memory store, in process (what `cargo bench -p
//!   openpsd-core --bench license` times);
//! - `file`: card-sim's file store (fsync at every commit) in process, in a temporary
//!   directory: the card that card-sim serves, without the transport;
//! - `pcscd`: the card on `--reader` (default "Virtual PCD 00 00"), which must be blank.
//!
//! One iteration, license L (a new number each time, so nothing is refused as installed
//! before): LICENSE REQUEST P1 `01` → grant (the bench as PA and vendor, timed apart, left
//! out) → LICENSE INSTALL → EXPORT SET prepare + commit → IMPORT SET → EXPORT SET prepare +
//! commit → RETIRE SET P1 `00` → P1 `01` (forget). It ends with no set resident and no
//! export outstanding, so it can run any number of times (the table holds 16 entries).
//!
//! ```sh
//! cargo run --release -p openpsd-host --features pcsc --example license_pcsc_bench -- \
//!     --n 200 [--warmup 10] [--reader "Virtual PCD 00 00"]
//! ```
//! (`bash scripts/pcsc-bench.sh --licenses 200` starts pcscd, vpcd and the card first.)

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use openpsd_core::client::psd_apdu;
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::request::LicenseAsk;
use openpsd_core::types::{LicenseId, PostalCode};
use openpsd_host::{CardSpec, Link, PsdClient};
use openpsd_tests::licenses::{grant, licensing_personalization, serial_for};

#[derive(Parser)]
#[command(about = "License commands through pcscd against the same commands in process")]
struct Args {
    /// Timed iterations per card.
    #[arg(long, default_value_t = 200)]
    n: usize,
    /// Untimed iterations per card first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// The PC/SC reader with a blank card-sim PSD.
    #[arg(long, default_value = "Virtual PCD 00 00")]
    reader: String,
}

/// The rows of the table, in order.
const ROWS: [&str; 12] = [
    "SELECT (plain round trip)",
    "LICENSE REQUEST (P1 01)",
    "LICENSE INSTALL",
    "request + install",
    "EXPORT SET prepare",
    "EXPORT SET commit",
    "EXPORT prepare + commit",
    "IMPORT SET",
    "RETIRE SET (P1 00)",
    "RETIRE SET forget (P1 01)",
    "whole iteration (card)",
    "grant by the bench (PA+vendor)",
];
const SELECT: usize = 0;
const REQUEST: usize = 1;
const INSTALL: usize = 2;
const REQ_INST: usize = 3;
const PREPARE: usize = 4;
const COMMIT: usize = 5;
const EXPORT: usize = 6;
const IMPORT: usize = 7;
const RETIRE: usize = 8;
const FORGET: usize = 9;
const ITERATION: usize = 10;
const GRANT: usize = 11;

/// The origin every license is asked for.
const ORIGIN: &[u8] = b"10115";

struct Target {
    name: &'static str,
    client: PsdClient,
    /// Samples per row.
    times: Vec<Vec<Duration>>,
}

impl Target {
    /// SELECTs the blank PSD on `link` and personalizes it for licenses.
    fn new(name: &'static str, link: Box<dyn Link>) -> Result<Self> {
        let mut client = PsdClient::new(link);
        if client
            .select()
            .with_context(|| format!("{name}: SELECT"))?
            .is_some()
        {
            bail!("{name}: the PSD is personalized already; the bench wants a blank one");
        }
        client
            .personalize(&licensing_personalization(0))
            .with_context(|| format!("{name}: PERSONALIZE"))?;
        Ok(Self {
            name,
            client,
            times: vec![Vec::new(); ROWS.len()],
        })
    }

    /// One iteration for `license`; its times go to the table if `record`.
    fn iteration(&mut self, license: u32, record: bool) -> Result<()> {
        let name = self.name;
        let mut t = [Duration::ZERO; ROWS.len()];
        let ctx = |step: &str| format!("{name}: license {license}: {step}");
        let c = &mut self.client;

        let start = Instant::now();
        let r = c.link().transmit(&psd_apdu::select());
        t[SELECT] = start.elapsed();
        let r = r.map_err(|e| anyhow!("{}: {e}", ctx("SELECT")))?;
        if psd_apdu::sw(&r) != 0x9000 {
            bail!("{}: SW {:04X}", ctx("SELECT"), psd_apdu::sw(&r));
        }

        let ask = LicenseAsk {
            license: LicenseId(license),
            origin: PostalCode::new(ORIGIN).context("origin")?,
        };
        let start = Instant::now();
        let request = c.license_request(&ask, true);
        t[REQUEST] = start.elapsed();
        let request = request.with_context(|| ctx("LICENSE REQUEST"))?;

        let start = Instant::now();
        let install = grant(&request, license, &serial_for(license));
        t[GRANT] = start.elapsed();

        let start = Instant::now();
        let installed = c.license_install(&install);
        t[INSTALL] = start.elapsed();
        let (mut slot, _, _) = installed.with_context(|| ctx("LICENSE INSTALL"))?;

        let mut epoch = 0;
        for round in 0..2 {
            let start = Instant::now();
            let blob = c.export_prepare(slot);
            let prepare = start.elapsed();
            let blob = blob.with_context(|| ctx("EXPORT SET prepare"))?;
            let digest = Blob::digest_of(&blob);
            let start = Instant::now();
            let committed = c.export_commit(slot, &digest);
            let commit = start.elapsed();
            epoch = committed.with_context(|| ctx("EXPORT SET commit"))?;
            if record {
                self.times[PREPARE].push(prepare);
                self.times[COMMIT].push(commit);
                self.times[EXPORT].push(prepare + commit);
            }
            t[ITERATION] += prepare + commit;
            if round == 0 {
                let start = Instant::now();
                let imported = c.import_set(&blob);
                t[IMPORT] = start.elapsed();
                slot = imported.with_context(|| ctx("IMPORT SET"))?;
            }
        }

        let start = Instant::now();
        let retired = c.retire_set(epoch);
        t[RETIRE] = start.elapsed();
        retired.with_context(|| ctx("RETIRE SET"))?;
        let start = Instant::now();
        let forgotten = c.forget_retired(epoch);
        t[FORGET] = start.elapsed();
        forgotten.with_context(|| ctx("RETIRE SET forget"))?;

        t[REQ_INST] = t[REQUEST] + t[INSTALL];
        t[ITERATION] += t[SELECT] + t[REQ_INST] + t[IMPORT] + t[RETIRE] + t[FORGET];
        if record {
            for row in [
                SELECT, REQUEST, INSTALL, REQ_INST, IMPORT, RETIRE, FORGET, ITERATION, GRANT,
            ] {
                self.times[row].push(t[row]);
            }
        }
        Ok(())
    }
}

/// Median and nearest-rank p90, in ms.
fn stats(samples: &[Duration]) -> (f64, f64) {
    let mut s: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mid = s.len() / 2;
    let median = if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    };
    // Nearest rank: the ceil(0.9 n)-th value.
    let rank = (s.len() * 9).div_ceil(10).clamp(1, s.len());
    (median, s[rank - 1])
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir().context("temporary directory")?;
    let file_card =
        card_sim::sim::create_file_card(dir.path(), card_sim::os_platform::Clock::System)
            .map_err(|e| anyhow!("card-sim file card in {}: {e}", dir.path().display()))?;
    let pcsc = openpsd_host::open(&CardSpec::Pcsc(args.reader.clone()))
        .map_err(|e| anyhow!("reader {:?}: {e}", args.reader))?;
    let mut targets = [
        Target::new("mem", Box::new(openpsd_tests::blank_card(1)))?,
        Target::new("file", Box::new(file_card))?,
        Target::new("pcscd", pcsc)?,
    ];
    println!(
        "license commands: n = {} iterations per card (+ {} warm-up), reader {:?}; mem = core \
         Card on the in-memory store, file = card-sim's file store (fsync), both in process; \
         pcscd = card-sim serve --vpcd through pcscd",
        args.n, args.warmup, args.reader
    );
    let wall = Instant::now();
    for i in 0..args.warmup + args.n {
        let license = u32::try_from(100_000 + i).context("license number")?;
        let k = targets.len();
        for j in 0..k {
            targets[(i + j) % k].iteration(license, i >= args.warmup)?;
        }
    }
    let wall = wall.elapsed();

    println!(
        "{:<31} {:>17} {:>17} {:>17} {:>9} {:>9} {:>8} {:>8}",
        "ms: median / p90", "mem", "file", "pcscd", "pcscd/s", "mem/s", "÷mem", "÷file"
    );
    for (row, label) in ROWS.iter().enumerate() {
        let s: Vec<(f64, f64)> = targets.iter().map(|t| stats(&t.times[row])).collect();
        let cell = |(m, p): (f64, f64)| format!("{m:>7.3} / {p:>7.3}");
        println!(
            "{label:<31} {} {} {} {:>9.0} {:>9.0} {:>8.2} {:>8.2}",
            cell(s[0]),
            cell(s[1]),
            cell(s[2]),
            1e3 / s[2].0,
            1e3 / s[0].0,
            s[2].0 / s[0].0,
            s[2].0 / s[1].0,
        );
    }
    println!(
        "rates are 1 / median; request + install, export (prepare + commit, two per \
         iteration: {} samples) and the whole iteration are sums per iteration; the grant is \
         the bench's, not the card's; wall time {:.1} s",
        targets[2].times[EXPORT].len(),
        wall.as_secs_f64()
    );
    Ok(())
}
