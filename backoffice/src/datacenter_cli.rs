//! `backoffice datacenter audit`: the virtual meter's auditor (seed 001; issue 16 §4). Walks
//! every transaction record the box signed in the data center's database, recomputes every
//! meter from them alone and reports each inconsistency (a record changed, deleted or
//! reordered, a register edited, a tree root that is not the ledger's, refill rows that are
//! not what the records credited, an absurd amount). Reads the database only; it may run
//! beside the service. With `--rc URL` it also reads each mailer's deposit account at the
//! recharging center (as an operator) and checks that what was debited is what the records
//! credited, then reads the refill rows again (not the records) to leave out a mailer whose
//! refill moved meanwhile, and re-checks those mailers a few times
//! (`openpsd_datacenter::audit::audit_with_rc`). Exit status: 0 when nothing was found and
//! every account compared; 1 when anything is reported (or on an error); 3 when nothing
//! was found but some mailer's account could not be compared (its refill moved at every
//! read: `skipped_mailers` in `--json`).

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
    ///
    /// Exit status: 0 when nothing was found (and, with --rc, every deposit account was
    /// compared); 1 when a problem is reported (or on an error); 3 with --rc when nothing
    /// was found but some mailer's deposit account could not be compared, its refill having
    /// moved at every read (named on a NOT COMPARED line; with --json, `skipped_mailers`
    /// and `deposits_skipped`).
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
        /// (debited, held) with what the records credited its meter (needs --pki). A
        /// mailer whose refill moved while its account was read is re-checked (a fresh
        /// walk, its account, the refill rows again), up to 3 times half a second apart.
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

/// `audit`'s exit status when it found a problem (as for an error).
pub const EXIT_PROBLEMS: u8 = 1;
/// `audit --rc`'s exit status when it found no problem but could not compare some mailer's
/// deposit account (its refill moved at every read): not a clean bill, not a finding.
/// Not 2, which is a usage error's.
pub const EXIT_NOT_COMPARED: u8 = 3;

/// Runs the subcommand; answers the exit status (0: nothing found, every account compared;
/// [`EXIT_PROBLEMS`]; [`EXIT_NOT_COMPARED`]).
pub async fn run(c: DatacenterCmd) -> Result<u8> {
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
            Ok(0)
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
            let r = match rc {
                Some(rc) => {
                    openpsd_datacenter::audit::audit_with_rc(&db, key.as_deref(), &rc).await?
                }
                // Blocking reads (rust-postgres's client runs a runtime of its own).
                None => {
                    tokio::task::spawn_blocking(move || {
                        openpsd_datacenter::audit::audit(&db, key.as_deref())
                    })
                    .await??
                }
            };
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} transaction records, {} meters: credited {}, used {}, held {}",
                    r.records, r.meters, r.credited, r.used, r.held
                );
                println!("{} log-in records the box signed", r.logins);
                if !r.logins_missing.is_empty() {
                    println!(
                        "MISSING LOG-INS: sequence(s) {} the box counted are not in the database \
                         (lost between the box and the database, under way, or deleted)",
                        r.logins_missing.join(", ")
                    );
                }
                if r.deposits_checked + r.deposits_skipped > 0 {
                    println!(
                        "{} deposit accounts at the recharging center compared with the records \
                         ({} of them at a re-check: a refill moved while they were first read)",
                        r.deposits_checked, r.deposits_rechecked
                    );
                }
                if !r.skipped_mailers.is_empty() {
                    println!(
                        "NOT COMPARED: the deposit account of {} mailer(s), whose refill moved at \
                         every read ({} re-checks): {}",
                        r.skipped_mailers.len(),
                        r.deposit_rechecks,
                        r.skipped_mailers.join(", ")
                    );
                }
                for p in &r.problems {
                    println!("PROBLEM: {p}");
                }
                if r.problems.is_empty() {
                    println!("the ledger balances; every meter is its records' replay");
                }
            }
            Ok(exit_status(&r))
        }
    }
}

/// `audit`'s exit status for report `r`: a problem outranks a mailer not compared (both
/// may hold: 1, the finding), and only a report with neither is a clean bill (0).
fn exit_status(r: &openpsd_datacenter::audit::AuditReport) -> u8 {
    if !r.problems.is_empty() {
        EXIT_PROBLEMS
    } else if !r.skipped_mailers.is_empty() {
        EXIT_NOT_COMPARED
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use openpsd_datacenter::audit::AuditReport;

    use super::*;

    #[test]
    fn the_exit_status_is_1_on_a_problem_3_on_a_mailer_not_compared_else_0() {
        let clean = AuditReport::default();
        assert_eq!(exit_status(&clean), 0);
        let skipped = AuditReport {
            skipped_mailers: vec!["aa".into()],
            deposits_skipped: 1,
            ..AuditReport::default()
        };
        assert_eq!(exit_status(&skipped), EXIT_NOT_COMPARED);
        assert_eq!(EXIT_NOT_COMPARED, 3);
        let found = AuditReport {
            problems: vec!["meter x: edited".into()],
            ..AuditReport::default()
        };
        assert_eq!(exit_status(&found), EXIT_PROBLEMS);
        assert_eq!(EXIT_PROBLEMS, 1);
        // Both: the finding wins, never hidden behind "not compared".
        let both = AuditReport {
            problems: vec!["meter x: edited".into()],
            ..skipped
        };
        assert_eq!(exit_status(&both), EXIT_PROBLEMS);
    }
}
