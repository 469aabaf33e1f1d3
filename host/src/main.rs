//! `openpsd`: the mailer's command line for a PSD — its status and registers, and indicia.
//!
//! The card is named with `--card` (or `OPENPSD_CARD`): `state:DIR` (a card-sim card run in
//! this process), `tcp:HOST:PORT` (`card-sim serve --tcp`), or `pcsc:READER` (any PC/SC
//! reader, by name or index; needs the `pcsc` build feature). Refills and inspections go
//! through the meter server (`--meter`, `OPENPSD_METER`) as the customer logged in with
//! `openpsd login` (or `OPENPSD_API_KEY`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod account_commands;
mod agent_commands;
mod cert_commands;
mod commands;
mod credit_commands;
mod license_commands;
mod progress;
mod psd_commands;
mod revoke_commands;
mod settle_commands;
mod sign_commands;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use openpsd_core::types::*;
use openpsd_host::CardSpec;

/// openpsd host tool: talk to a postal security device.
#[derive(Parser, Debug)]
#[command(name = "openpsd", version, about, long_about = None)]
struct Cli {
    /// The card: state:DIR, tcp:HOST:PORT or pcsc:READER. The PSD for status, indicium,
    /// inspect, refill, pending and settle (default pcsc:0); the purse for transfer,
    /// resolve, purse and pay.
    #[arg(long, env = "OPENPSD_CARD", global = true)]
    card: Option<CardSpec>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open an account at the meter server (it opens your deposit account), then log in.
    Signup(account_commands::LoginArgs),
    /// Log in to the meter server; the session token is kept 0600 in the config directory
    /// ($OPENPSD_CONFIG_DIR, else ~/.config/openpsd).
    Login(account_commands::LoginArgs),
    /// End the session at the meter server and forget it here.
    Logout,
    /// Who is logged in, and the deposit account's balances.
    Whoami {
        #[command(flatten)]
        meter: account_commands::MeterArgs,
    },
    /// The device's identity, limits and every register set.
    Status,
    /// Frank one mail piece: debit the register set, print the signed indicium (verified
    /// against the device's public key) and its fields.
    Indicium(psd_commands::IndiciumArgs),
    /// Have the device inspected: a plain audit, checked by the meter server, whose receipt
    /// renews the PSD's inspection (without it, franking stops after the inspection days).
    Inspect {
        #[command(flatten)]
        meter: account_commands::MeterArgs,
        /// Register set to audit.
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// Refill a register set through the meter server (audit, refill message, receipt,
    /// confirmation). An interrupted refill is finished by running again with its --txn;
    /// an outstanding one is cancelled with --cancel TXN (a void applied on the PSD if its
    /// message had left).
    Refill {
        /// Amount in currency units, e.g. 25.00.
        #[arg(long, required_unless_present = "cancel")]
        amount: Option<Amount>,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
        /// Deposit account to pay from (default: the logged-in customer's, which must own
        /// the device; another customer's is refused as not found).
        #[arg(long, env = "OPENPSD_ACCOUNT")]
        account: Option<String>,
        /// Cancel the outstanding refill with this client transaction ID instead.
        #[arg(long, value_name = "TXN", conflicts_with_all = ["amount", "txn"])]
        cancel: Option<String>,
        /// Register set (license slot).
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Client transaction ID; default: a new random one (printed).
        #[arg(long)]
        txn: Option<String>,
    },
    /// Move value from a PSD's register set to a purse card (--card): mutual recognition,
    /// the purse's PIN, debit, credit, confirmation. A transfer the PSD still has pending
    /// with this purse is completed or undone first.
    Transfer {
        /// Amount in currency units, e.g. 10.00.
        #[arg(long)]
        amount: Amount,
        /// The PSD: state:DIR, tcp:HOST:PORT or pcsc:READER.
        #[arg(long, env = "OPENPSD_PSD")]
        psd: CardSpec,
        /// Register set (license slot) to take the value from.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// The purse's PIN (default: asked on the terminal, not echoed).
        #[arg(long, env = "OPENPSD_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Benchmark: make N transfers of the amount and print the median and p90 time.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
    },
    /// Complete or undo a transfer the PSD has pending with the purse (--card), without a
    /// new transfer.
    Resolve {
        /// The PSD: state:DIR, tcp:HOST:PORT or pcsc:READER.
        #[arg(long, env = "OPENPSD_PSD")]
        psd: CardSpec,
        /// Register set to show afterwards.
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// The PSD's (--card) pending transfer, for the scheme issuer when its purse is lost or
    /// no longer remembers the PSD: the report `card-sim settle --pending` reads.
    Pending {
        /// Also write the report (JSON) to this new file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Apply the scheme issuer's signed decision (`card-sim settle`) to the PSD (--card): its
    /// pending transfer completed or undone. A decision for another PSD or transfer, or an
    /// old one, is refused with nothing changed.
    Settle {
        /// The decision file.
        decision: PathBuf,
    },
    /// A purse card's status (--card): balance, limits, PIN tries left, personality, the
    /// PSDs it was paired with, its log.
    Purse,
    /// Take a payment from a purse (--card) on a merchant terminal: the card's certificate
    /// checked, its PIN, a signed purchase record verified and kept in the terminal's batch.
    Pay {
        /// Amount in currency units, e.g. 2.50.
        #[arg(long)]
        amount: Amount,
        /// The terminal's database (`openpsd terminal init`).
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
        /// Check that the terminal's issuer key is this file's (an issuer key file or a
        /// scheme file).
        #[arg(long, conflicts_with = "scheme")]
        issuer_key: Option<PathBuf>,
        /// Same as --issuer-key, from the scheme file.
        #[arg(long)]
        scheme: Option<PathBuf>,
        /// The purse's PIN (default: asked on the terminal, not echoed).
        #[arg(long, env = "OPENPSD_PIN", hide_env_values = true)]
        pin: Option<String>,
        /// Date of the purchase YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        date: Option<Date>,
    },
    /// A merchant terminal's batch totals: purchases, sum, per card.
    Batch {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL", global = true)]
        terminal: Option<PathBuf>,
        /// Show this batch (default: the open one, else the last closed).
        #[arg(long)]
        seq: Option<i64>,
        #[command(subcommand)]
        action: Option<BatchAction>,
    },
    /// Set up or manage a merchant terminal's database.
    Terminal {
        #[command(subcommand)]
        action: TerminalAction,
    },
    /// The PSD's licenses (register sets): ask for one, list them, park one in a file to free
    /// its slot, bring it back, retire one for a refund.
    License {
        #[command(subcommand)]
        action: LicenseAction,
    },
    /// The certificate meter's rate tables (seed 004): the fee of each paid service, the
    /// table in effect and the next. The meter server loads new tables at refills and
    /// inspections; --load loads a vendor-signed table from a file.
    Rates {
        /// A vendor-signed rate table (binary or hex) to load first.
        #[arg(long)]
        load: Option<PathBuf>,
    },
    /// A cryptographic postmark of a file (seed 004, Fig. 3): the file is hashed here (it
    /// never leaves this computer), the PSD signs its SHA-256 with the time and a serial
    /// for the postmark fee, and the RFC 3161 time-stamp token is written next to it,
    /// with the command that checks it with stock openssl.
    #[command(args_conflicts_with_subcommands = true)]
    Postmark {
        #[command(subcommand)]
        action: Option<PostmarkAction>,
        /// The file to postmark.
        file: Option<PathBuf>,
        /// Where the RFC 3161 token goes (default: FILE.<ext>.tst).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Also write the compact postmark (what a DataMatrix holds) here.
        #[arg(long)]
        compact: Option<PathBuf>,
        /// Register set that pays the fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// An RFC 3161 nonce to echo (hex, up to 16 bytes).
        #[arg(long)]
        nonce: Option<String>,
        /// Transaction ID of an interrupted postmark to fetch again (16 hex; not charged
        /// twice); default: new.
        #[arg(long)]
        txn: Option<String>,
        /// The CA certificate, for the openssl command printed.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// A document signature for the signature fee (seed 004): the file is hashed here, the
    /// PSD signs with its sign key, and a detached CMS signature (.p7s) that
    /// `openssl cms -verify` accepts is written next to it. `sign verify` checks one.
    Sign(sign_commands::SignArgs),
    /// The PSD's keys and certificates (seed 004, Fig. 5).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// The PSD as your agent CA (seed 004, Fig. 3A): certificates for your employees.
    Agent {
        #[command(subcommand)]
        action: agent_commands::AgentAction,
    },
    /// Credit (seed 004, Figs. 7-9): load a creditor's line of credit, pay from it.
    Credit {
        #[command(subcommand)]
        action: CreditAction,
    },
    /// Print a shell completion script: `openpsd completions bash > /etc/bash_completion.d/openpsd`
    /// (or zsh: into a directory of $fpath as `_openpsd`; fish: ~/.config/fish/completions/openpsd.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of `openpsd`: `openpsd man | man -l -`; with --out-dir,
    /// write openpsd.1 and one page per subcommand (openpsd-license-request.1, ...) there.
    Man {
        /// Directory for openpsd.1 and the subcommands' pages (made if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CreditAction {
    /// Load a line of credit certificate (PEM or DER) on the PSD's payment key.
    Line {
        /// The line certificate.
        file: PathBuf,
        /// Register set that pays the credit-line fee (if the rate table prices it).
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// Ask the creditor for a line of credit through the meter (seed 004 Fig. 8): a
    /// payment key made inside the PSD and attested, the line certificate written to
    /// OUT_DIR and loaded (as `credit line FILE` would).
    Request {
        /// The line asked for, in minor units (at most your account's credit limit).
        #[arg(long)]
        amount: u64,
        /// Register set that pays the credit-line fee (if the rate table prices it).
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Where the request, the line certificate and the creditor's certificate go.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
    },
    /// A payment certificate for a merchant's order, drawn on the line.
    Pay {
        /// Amount, in the line's minor units.
        #[arg(long)]
        amount: u64,
        /// The merchant paid (1-32 printable characters).
        #[arg(long)]
        merchant: String,
        /// The merchant's order (1-32 printable characters).
        #[arg(long)]
        order: String,
        /// Register set that pays the payment fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Transaction ID of an interrupted payment to fetch again (16 hex).
        #[arg(long)]
        txn: Option<String>,
        /// Where the payment certificate goes (default: payment-<txn>.der).
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum PostmarkAction {
    /// Check a postmark token against its file and the CA certificate here (the same
    /// checks as `openssl ts -verify`, plus the certificate's use at the postmark's time).
    Verify {
        /// The file.
        file: PathBuf,
        /// The token (.tst).
        token: PathBuf,
        /// The CA certificate (PEM or DER).
        #[arg(long)]
        ca: PathBuf,
    },
    /// Have the PSD validate a postmark token against its file, for the validation fee
    /// (seed 004, Fig. 4): a verdict in a receipt signed by the PSD's device key, written
    /// to TOKEN.receipt. Revocation is not checked (ask the CA's OCSP).
    Validate {
        /// The file.
        file: PathBuf,
        /// The token (.tst) as `openpsd postmark` writes it.
        token: PathBuf,
        /// Register set that pays the fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Transaction ID of an interrupted validation (16 hex; not charged twice).
        #[arg(long)]
        txn: Option<String>,
    },
    /// Check a validation receipt's device signature and show what it states.
    VerifyReceipt {
        /// The receipt (TOKEN.receipt).
        receipt: PathBuf,
        /// The validating PSD's device public key (hex, as `postmark validate` prints it).
        #[arg(long)]
        device_key: String,
    },
}

#[derive(Subcommand, Debug)]
enum CertAction {
    /// The key slots: purpose, state, certificate, fee paid.
    List,
    /// A key and its certificate (seed 004, Fig. 5): the PSD generates the key and attests
    /// it, the meter server passes the attestation to the back office's CA (the subject is
    /// your account's), the PSD checks the certificate and pays the certificate fee. Run
    /// again to finish an interrupted request. You must be logged in (`openpsd login`).
    Request {
        /// postmark, sign or agent (payment keys are not issued yet).
        #[arg(long, default_value = "postmark", value_parser = parse_purpose)]
        purpose: openpsd_core::psd::certmeter::attestation::Purpose,
        /// Register set that pays the certificate fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        /// Replace a pending key of the purpose with a new one.
        #[arg(long)]
        replace: bool,
        /// A new key and certificate although one is active (the old key is retired when
        /// the new certificate is installed).
        #[arg(long)]
        rotate: bool,
        /// Where the certificate and the CA's are written.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
    },
    /// Revoke a key's certificate (seed 004, Fig. 6): the PSD signs the request, the CA
    /// revokes the certificate (CRL, OCSP) and signs an order, the PSD retires the key and
    /// pays the revocation fee (or owes it until the next refill), the CA records the PSD's
    /// confirmation. Run again to finish an interrupted revocation.
    Revoke {
        /// The key slot (`openpsd cert list`).
        #[arg(long)]
        slot: u8,
        /// RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded,
        /// cessationOfOperation.
        #[arg(long, default_value = "unspecified", value_parser = revoke_commands::parse_reason)]
        reason: openpsd_core::psd::certmeter::revoke::Reason,
        /// Register set that pays the revocation fee.
        #[arg(long, default_value_t = 0)]
        set: u8,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
    },
}

/// A key purpose by name.
fn parse_purpose(s: &str) -> Result<openpsd_core::psd::certmeter::attestation::Purpose, String> {
    use openpsd_core::psd::certmeter::attestation::Purpose;
    [Purpose::Postmark, Purpose::Sign, Purpose::AgentCa]
        .into_iter()
        .find(|p| p.name() == s)
        .ok_or_else(|| format!("'{s}': postmark, sign or agent (payment keys are not issued yet)"))
}

#[derive(Subcommand, Debug)]
enum LicenseAction {
    /// Ask for a license (seed 003, Fig. 4): the PSD makes the key and signs, the meter
    /// server passes the request to the manufacturer and the postal authority, the PSD
    /// checks the grant and creates the register set. Each step is shown; an interrupted
    /// order is finished by running again with its --txn.
    Request {
        /// The license number (0: the postal authority assigns one).
        #[arg(long, default_value_t = 0)]
        license: u32,
        /// The licensing post office's postal code.
        #[arg(long)]
        origin: String,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
        /// The order's client transaction ID (resume an interrupted order); default: new.
        #[arg(long)]
        txn: Option<String>,
        /// Replace a pending request of the PSD (its key is forgotten).
        #[arg(long, conflicts_with = "txn")]
        replace: bool,
        /// Keep the postal authority's certificate (PEM) in this directory.
        #[arg(long)]
        cert_dir: Option<PathBuf>,
    },
    /// Slots, licenses, balances, the pending request, exported sets (and the files in
    /// --dir, with whether each can still be imported).
    List {
        /// A directory of exported sets to check against the PSD.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Park a register set in a file and free its slot. The file is written and synced
    /// before the PSD lets the set go; running the same export again finishes an
    /// interrupted one. The file is the money: only this PSD can import it, once.
    Export {
        /// The slot.
        #[arg(long, conflicts_with = "license")]
        set: Option<u8>,
        /// The license (instead of --set).
        #[arg(long)]
        license: Option<u32>,
        /// Directory to write the file to.
        #[arg(long, required_unless_present = "cancel")]
        to: Option<PathBuf>,
        /// Cancel a prepared export instead (the set is live again).
        #[arg(long)]
        cancel: bool,
    },
    /// Bring an exported set back into a free slot (once; an older or second copy is
    /// refused for ever).
    Import {
        /// The exported file.
        file: PathBuf,
    },
    /// Give a set up for good and have its DR refunded to the owner's deposit: the
    /// write-off of a lost exported file, or the withdrawal of a replaced PSD's set (the
    /// meter also revokes its grant at the postal authority).
    ///
    /// 1/4 a resident set is exported to --dir as `license export` does; the file stays as
    /// the evidence. A set exported already is not exported again.
    ///
    /// 2/4 RETIRE SET: the PSD gives the export up and signs a receipt. No copy of the
    /// file can ever be imported again.
    ///
    /// 3/4 the meter server books the receipt, with the file if it is in --dir (a lost
    /// file is written off), and refunds the DR.
    ///
    /// 4/4 the PSD forgets the entry.
    ///
    /// Every step is idempotent: an interrupted retirement is finished by running the same
    /// command again. You must be logged in to the meter (`openpsd login`) as the device's
    /// owner.
    Retire {
        /// The license to retire.
        #[arg(long)]
        license: u32,
        /// Where the exported file is written, or looked for.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        meter: account_commands::MeterArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BatchAction {
    /// Close the open batch (mark it submitted); the next purchase opens the next one.
    Close,
    /// Import signed purchase records (JSON as `openpsd pay --json` prints them; one
    /// object per line, or one object) after checking them; replays are refused.
    Import {
        /// The file ("-" for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum TerminalAction {
    /// Create a terminal database: its ID, its counter, the scheme issuer's public key.
    Init {
        /// The terminal's database (must not hold a terminal yet).
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
        /// Terminal ID: 16 hex digits.
        #[arg(long)]
        id: String,
        /// The scheme file (only its ID and issuer public key are used).
        #[arg(long, required_unless_present = "issuer_key")]
        scheme: Option<PathBuf>,
        /// The issuer key file (`card-sim scheme public`) instead of the scheme file.
        #[arg(long, conflicts_with = "scheme")]
        issuer_key: Option<PathBuf>,
    },
    /// The terminal's ID, scheme, issuer key, counter and any unfinished purchase.
    Show {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
    },
    /// Drop an unfinished purchase (its reply was lost and its card is not coming back).
    Void {
        /// The terminal's database.
        #[arg(long, env = "OPENPSD_TERMINAL")]
        terminal: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // `--json` anywhere on the line: errors too are one JSON line (on stderr), for scripts.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !json || !e.use_stderr() => e.exit(),
        Err(e) => {
            let message = e.kind().to_string();
            let detail = e.render().to_string();
            print_json_error("usage", &message, detail.trim_end(), 2);
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            print_json_error("failed", &format!("{e:#}"), "", 1);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An error under `--json`: one line `{"error": {"kind", "message", "detail"?, "exit_code"}}`
/// on stderr (stdout stays empty or holds what the command printed before it failed).
fn print_json_error(kind: &str, message: &str, detail: &str, exit_code: u8) {
    let mut e = serde_json::json!({"kind": kind, "message": message, "exit_code": exit_code});
    if !detail.is_empty() {
        e["detail"] = detail.into();
    }
    eprintln!("{}", serde_json::json!({ "error": e }));
}

/// `openpsd completions SHELL`: the script on stdout; with --json, `{"shell", "script"}`.
fn completions(shell: clap_complete::Shell, json: bool) -> Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "openpsd", &mut script);
    if json {
        let script = String::from_utf8(script)?;
        let v = serde_json::json!({"shell": shell.to_string(), "script": script});
        writeln!(std::io::stdout(), "{v}")?;
    } else {
        std::io::stdout().write_all(&script)?;
    }
    Ok(())
}

/// Every manual page: `openpsd.1`, then one per subcommand at any depth
/// (`openpsd-license-request.1`), as (file name, roff).
fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, name: String, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let cmd = cmd.display_name(name.clone());
        let mut roff = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut roff)?;
        out.push((format!("{name}.1"), roff));
        // clap's own `help` subcommand has no page: `openpsd help X` is `openpsd X --help`.
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub.clone(), format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(())
    }
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, "openpsd".into(), &mut out)?;
    Ok(out)
}

/// `openpsd man [--out-dir DIR]`.
fn man(out_dir: Option<&std::path::Path>, json: bool) -> Result<()> {
    let pages = man_pages()?;
    match out_dir {
        None => {
            let (_, roff) = &pages[0];
            if json {
                let v =
                    serde_json::json!({"page": "openpsd.1", "roff": String::from_utf8_lossy(roff)});
                writeln!(std::io::stdout(), "{v}")?;
            } else {
                std::io::stdout().write_all(roff)?;
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut written = Vec::new();
            for (name, roff) in &pages {
                let path = dir.join(name);
                std::fs::write(&path, roff)
                    .with_context(|| format!("writing {}", path.display()))?;
                written.push(path.display().to_string());
            }
            if json {
                println!("{}", serde_json::json!({"written": written}));
            } else {
                println!(
                    "{} manual pages in {} (man -l {}/openpsd.1)",
                    written.len(),
                    dir.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

/// The one dispatch: every subcommand to the function that runs it.
fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let card = cli.card;
    let purse_spec = || {
        card.clone().ok_or_else(|| {
            anyhow!("--card: which purse card? (state:DIR, tcp:HOST:PORT or pcsc:READER)")
        })
    };
    match cli.command {
        Command::Signup(a) => account_commands::sign_up(&a, json),
        Command::Login(a) => account_commands::log_in(&a, json),
        Command::Logout => account_commands::log_out(json),
        Command::Whoami { meter } => account_commands::who_am_i(&meter, json),
        Command::Status => psd_commands::status(card, json),
        Command::Inspect { meter, set } => psd_commands::inspect(card, &meter, set, json),
        Command::Refill {
            cancel: Some(txn),
            meter,
            ..
        } => psd_commands::cancel_refill(card, json, &meter, &txn),
        Command::Refill {
            amount: Some(amount),
            meter,
            account,
            set,
            txn,
            cancel: None,
        } => psd_commands::refill(card, json, amount, &meter, account, set, txn),
        Command::Refill { .. } => Err(anyhow!("refill: --amount or --cancel TXN")),
        Command::Indicium(args) => psd_commands::indicium(card, args, json),
        Command::Transfer {
            amount,
            psd,
            set,
            pin,
            repeat,
        } => commands::transfer(&psd, &purse_spec()?, set, amount, pin, repeat, json),
        Command::Resolve { psd, set } => commands::resolve(&psd, &purse_spec()?, set, json),
        Command::Pending { out } => settle_commands::pending(card, out.as_deref(), json),
        Command::Settle { decision } => settle_commands::settle(card, &decision, json),
        Command::Purse => commands::purse(&purse_spec()?, json),
        Command::Pay {
            amount,
            terminal,
            issuer_key,
            scheme,
            pin,
            date,
        } => {
            let key = issuer_key.or(scheme);
            commands::pay(
                &purse_spec()?,
                &terminal,
                key.as_deref(),
                amount,
                pin,
                date,
                json,
            )
        }
        Command::Batch {
            terminal,
            seq,
            action,
        } => {
            let terminal =
                terminal.ok_or_else(|| anyhow!("--terminal: the terminal's database"))?;
            commands::batch(&terminal, seq, action, json)
        }
        Command::Terminal { action } => commands::terminal(action, json),
        Command::License { action } => match action {
            LicenseAction::Request {
                license,
                origin,
                meter,
                txn,
                replace,
                cert_dir,
            } => license_commands::request(
                card,
                &meter,
                license,
                &origin,
                txn,
                replace,
                cert_dir.as_deref(),
                json,
            ),
            LicenseAction::List { dir } => license_commands::list(card, dir.as_deref(), json),
            LicenseAction::Export {
                set,
                license,
                to,
                cancel,
            } => license_commands::export(
                card,
                set,
                license,
                &to.unwrap_or_else(|| PathBuf::from(".")),
                cancel,
                json,
            ),
            LicenseAction::Import { file } => license_commands::import(card, &file, json),
            LicenseAction::Retire {
                license,
                dir,
                meter,
            } => license_commands::retire(card, &meter, license, &dir, json),
        },
        Command::Rates { load } => cert_commands::rates(card, load.as_deref(), json),
        Command::Credit {
            action: CreditAction::Line { file, set },
        } => credit_commands::line(card, &file, set, json),
        Command::Credit {
            action:
                CreditAction::Request {
                    amount,
                    set,
                    out_dir,
                    meter,
                },
        } => credit_commands::request(card, &meter, amount, set, &out_dir, json),
        Command::Credit {
            action:
                CreditAction::Pay {
                    amount,
                    merchant,
                    order,
                    set,
                    txn,
                    out,
                },
        } => credit_commands::pay(
            card,
            &credit_commands::PayArgs {
                amount,
                merchant: &merchant,
                order: &order,
                set,
                txn: txn.as_deref(),
                out: out.as_deref(),
            },
            json,
        ),
        Command::Postmark {
            action: Some(PostmarkAction::Verify { file, token, ca }),
            ..
        } => cert_commands::postmark_verify(&file, &token, &ca, json),
        Command::Postmark {
            action:
                Some(PostmarkAction::Validate {
                    file,
                    token,
                    set,
                    txn,
                }),
            ..
        } => sign_commands::validate(card, &file, &token, set, txn.as_deref(), json),
        Command::Postmark {
            action:
                Some(PostmarkAction::VerifyReceipt {
                    receipt,
                    device_key,
                }),
            ..
        } => sign_commands::verify_receipt(&receipt, &device_key, json),
        Command::Sign(a) => sign_commands::run(card, a, json),
        Command::Postmark {
            action: None,
            file,
            out,
            compact,
            set,
            nonce,
            txn,
            ca,
        } => {
            let file = file.ok_or_else(|| anyhow!("postmark: name the file"))?;
            cert_commands::postmark(
                card,
                &cert_commands::PostmarkArgs {
                    file: &file,
                    out,
                    compact,
                    set,
                    nonce,
                    txn,
                    ca,
                },
                json,
            )
        }
        Command::Cert { action } => match action {
            CertAction::List => cert_commands::cert_list(card, json),
            CertAction::Request {
                purpose,
                set,
                replace,
                rotate,
                out_dir,
                meter,
            } => cert_commands::cert_request(
                card,
                &meter,
                purpose,
                set,
                (replace, rotate),
                &out_dir,
                json,
            ),
            CertAction::Revoke {
                slot,
                reason,
                set,
                meter,
            } => revoke_commands::cert_revoke(card, &meter, slot, reason, set, json),
        },
        Command::Agent { action } => agent_commands::run(card, action, json),
        Command::Completions { shell } => completions(shell, json),
        Command::Man { out_dir } => man(out_dir.as_deref(), json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command a user can run (each leaf of the tree, and each command that runs on
    /// its own although it has subcommands, like `postmark FILE` and `batch`) takes
    /// `--json`, so scripts can drive all of them.
    #[test]
    fn every_command_takes_json() {
        fn walk(cmd: &clap::Command, path: &str, seen: &mut Vec<String>) {
            let runs_alone = !cmd.is_subcommand_required_set();
            if cmd.get_subcommands().next().is_none() || runs_alone {
                assert!(
                    cmd.get_arguments()
                        .any(|a| a.get_id() == "json" && a.get_long() == Some("json")),
                    "`{path}` has no --json"
                );
                seen.push(path.to_owned());
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), seen);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut seen = Vec::new();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, &format!("openpsd {}", sub.get_name()), &mut seen);
        }
        // The tree is walked, not listed: a sanity floor on its size and a few known leaves.
        assert!(seen.len() > 30, "{seen:?}");
        for leaf in [
            "openpsd status",
            "openpsd license request",
            "openpsd postmark",
            "openpsd man",
        ] {
            assert!(
                seen.iter().any(|s| s == leaf),
                "{leaf} not walked: {seen:?}"
            );
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_man_page_for_every_subcommand() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "openpsd.1",
            "openpsd-status.1",
            "openpsd-license-request.1",
            "openpsd-completions.1",
        ] {
            assert!(names.contains(&want), "{want} missing: {names:?}");
        }
        let (_, root) = &pages[0];
        let root = String::from_utf8_lossy(root);
        assert!(
            root.starts_with(".ie \\n(.g .ds Aq") || root.contains(".TH openpsd"),
            "{root}"
        );
        assert!(root.contains(".TH openpsd 1"), "{root}");
        assert!(root.contains("indicium"), "the subcommands are listed");
    }
}
