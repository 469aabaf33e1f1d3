//! `backoffice datacenter audit`: the virtual meter's auditor (seed 001; issue 16 §4). Walks
//! every transaction record the box signed in the data center's database, recomputes every
//! meter from them alone and reports each inconsistency (a record changed, deleted or
//! reordered, a register edited, a tree root that is not the ledger's). Exit status 1 when
//! anything is reported. Reads the database only; it may run beside the service. With
//! `--rc URL` it also reads each mailer's deposit account at the recharging center (as an
//! operator) and checks that what was debited is what the records credited, then reads the
//! refill rows again (not the records) to leave out a mailer whose refill moved meanwhile.

use std::path::PathBuf;

use anyhow::{Context, Result};
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::tls::{client_config, Role};
use openpsd_service_kit::upstream::Upstream;

/// `backoffice datacenter …`.
#[derive(clap::Args)]
pub struct DatacenterCmd {
    #[command(subcommand)]
    what: DatacenterWhat,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    /// With register-box: the KMS's base URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://127.0.0.1:8701",
        global = true
    )]
    kms: String,
    /// With register-box, and audit --rc: the PKI directory (the operator's certificate).
    #[arg(long, value_name = "DIR", env = "OPENPSD_PKI", global = true)]
    pki: Option<PathBuf>,
    /// The data center's PostgreSQL database (as its `serve --database-url`), instead of
    /// DATA/datacenter.sqlite. Read only. An environment variable keeps a password off the
    /// command line.
    #[arg(
        long,
        value_name = "URL",
        global = true,
        env = "OPENPSD_DATACENTER_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

#[derive(clap::Subcommand)]
enum DatacenterWhat {
    /// Recompute every meter from the box's signed transaction records.
    Audit {
        /// The data center's data directory (holding datacenter.sqlite).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The box's transaction key (130 hex digits) as the KMS registered it
        /// (`register-box --json` prints it): the records are checked under it rather than
        /// the key the audited database stores.
        #[arg(long, value_name = "HEX")]
        box_key: Option<String>,
        /// The recharging center's base URL: also compare each mailer's deposit account
        /// (debited, held) with what the records credited its meter (needs --pki).
        #[arg(long, value_name = "URL")]
        rc: Option<String>,
    },
    /// Register the data center's box (its ID and transaction key, read from its database)
    /// at the KMS, as an operator: the KMS then registers the meters the box proves it
    /// created, seals their refills, and the post office verifies their indicia.
    RegisterBox {
        /// The data center's data directory (holding datacenter.sqlite).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

/// Runs the subcommand; `Ok(false)` when the audit found problems.
pub async fn run(c: DatacenterCmd) -> Result<bool> {
    match c.what {
        DatacenterWhat::RegisterBox { data } => {
            let db = openpsd_datacenter::Database::new(&data, c.database_url.as_deref());
            // Blocking reads (rust-postgres's client runs a runtime of its own).
            let reg =
                tokio::task::spawn_blocking(move || openpsd_datacenter::box_registration(&db))
                    .await??;
            let pki = Pki::at(c.pki.as_ref().context(
                "--pki DIR (or OPENPSD_PKI): the PKI `backoffice init` made, for the operator's certificate",
            )?);
            let tls = client_config(&pki, Some(Role::Operator))?;
            let kms = Upstream::new("KMS", &c.kms, Role::Kms, tls)?;
            let _: openpsd_protocol::datacenter::BoxRegistration = kms
                .post("/v1/vbox/boxes", &reg, "register_box")
                .await
                .map_err(|e| anyhow::anyhow!("the KMS refused: {} ({})", e.message, e.code))?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&reg)?);
            } else {
                println!("box {} registered at the KMS", reg.box_id);
            }
            Ok(true)
        }
        DatacenterWhat::Audit { data, box_key, rc } => {
            let db = openpsd_datacenter::Database::new(&data, c.database_url.as_deref());
            let key = box_key
                .map(|k| hex::decode(k.trim()).context("--box-key: hex"))
                .transpose()?;
            let rc = match rc {
                Some(url) => {
                    let pki = Pki::at(c.pki.as_ref().context(
                        "--rc needs --pki DIR (or OPENPSD_PKI): the operator's certificate",
                    )?);
                    let tls = client_config(&pki, Some(Role::Operator))?;
                    Some(Upstream::new(
                        "recharging center",
                        &url,
                        Role::Recharge,
                        tls,
                    )?)
                }
                None => None,
            };
            let db2 = db.clone();
            let mut r = tokio::task::spawn_blocking(move || {
                openpsd_datacenter::audit::audit(&db, key.as_deref())
            })
            .await??;
            if let Some(rc) = rc {
                let mut accounts = std::collections::HashMap::new();
                for m in &r.credits {
                    let id = format!("vm-{}", m.mailer_id);
                    match rc
                        .get::<openpsd_datacenter::audit::Deposit>(
                            &format!("/v1/accounts/{id}"),
                            "datacenter_audit",
                        )
                        .await
                    {
                        Ok(a) => {
                            accounts.insert(id, a);
                        }
                        // Reported by the reconciliation as a missing account.
                        Err(e) if e.status.as_u16() == 404 => {}
                        Err(e) => anyhow::bail!(
                            "the recharging center did not answer for {id}: {} ({})",
                            e.message,
                            e.code
                        ),
                    }
                }
                // The refill rows again: a mailer whose refill moved meanwhile is not
                // compared. A light read (two queries on the refill rows), not a second walk
                // of every record: only whether a refill moved is asked.
                let again = tokio::task::spawn_blocking(move || {
                    openpsd_datacenter::audit::read_refills(&db2)
                })
                .await??;
                openpsd_datacenter::audit::reconcile_deposits(&mut r, &accounts, &again);
            }
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} transaction records, {} meters: credited {}, used {}, held {}",
                    r.records, r.meters, r.credited, r.used, r.held
                );
                if r.deposits_checked + r.deposits_skipped > 0 {
                    println!(
                        "{} deposit accounts at the recharging center compared with the records \
                         ({} not compared: a refill moved while they were read)",
                        r.deposits_checked, r.deposits_skipped
                    );
                }
                for p in &r.problems {
                    println!("PROBLEM: {p}");
                }
                if r.problems.is_empty() {
                    println!("the ledger balances; every meter is its records' replay");
                }
            }
            Ok(r.problems.is_empty())
        }
    }
}
