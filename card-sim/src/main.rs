//! `card-sim`: hosts openpsd cards as processes with persistent memory, for pcscd's vpcd
//! reader, for TCP clients and for APDU scripts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use card_sim::issuer::{self, PurseRequest};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::{
    self, parse_amount, parse_license, read_postal_authority, write_secrets, Request,
};
use card_sim::script::{self, hex_spaced};
use card_sim::settlement;
use card_sim::sim::{self, SimulatedCard};
use card_sim::tls;
use card_sim::transport::{self, VPCD_DEFAULT};
use clap::{Parser, Subcommand, ValueEnum};
use openpsd_core::psd::device::LicenseSlot;
use openpsd_core::psd::settle::Decision;
use openpsd_core::types::{Amount, CardId, DeviceId, RegisterSetIndex};

/// openpsd card simulator: persistent virtual cards for pcscd (vpcd), TCP clients and APDU
/// scripts.
#[derive(Parser, Debug)]
#[command(name = "card-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Postal security device.
    Psd,
    /// Purse card (stored value, paid into from a PSD, pays merchant terminals).
    Purse,
    /// The virtual meter's secure box (seed 001): `create` only; its host (the data
    /// center, `backoffice serve --role datacenter --box tcp:ADDR`) personalizes it with
    /// PERSONALIZE at its first connection, and the box generates its keys inside then.
    Vbox,
}

/// Why `personalize --kind vbox` is refused.
const VBOX_PERSONALIZE: &str = "a virtual meter box is personalized by its host: create it \
     blank (`card-sim create --kind vbox`), serve it (`card-sim serve --tcp ADDR`), and the data \
     center (`backoffice serve --role datacenter --box tcp:ADDR`) sends PERSONALIZE at its first \
     connection; the box generates its keys inside then";

// why: the command line is parsed once per process; boxing the personalization options
// would only make their clap declarations harder to read.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Create a blank card (personalize it later with PERSONALIZE APDUs or `personalize`).
    /// A blank card answers every applet, the PSD's, the purse's and the virtual meter
    /// box's; personalizing one decides what it is.
    Create {
        /// Directory for the card's state (must not hold a card yet).
        #[arg(long)]
        state: PathBuf,
        /// Kind of card (only the message differs: a blank card has every applet).
        #[arg(long, value_enum, default_value = "psd")]
        kind: Kind,
    },
    /// Make a new personalized card. A PSD: keys generated inside the card, the KMS's public
    /// key given to it (--kms-public-key); prints its device ID and public key; writes what
    /// the back office needs (device ID, public key, licenses; nothing secret) to a separate
    /// file, never into the card's state. A purse (--kind
    /// purse): personalized for a scheme and its purchase key certified by the scheme's
    /// issuer, all or nothing; its card ID, public key and certificate go to the same kind
    /// of file.
    Personalize {
        /// Directory for the card's state (created; must not hold a card yet).
        #[arg(long)]
        state: PathBuf,
        /// Kind of card.
        #[arg(long, value_enum, default_value = "psd")]
        kind: Kind,
        /// Where to write what the back office needs (JSON, mode 0600).
        /// Default: `<state>.secrets.json` beside the state directory.
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// PSD: the KMS's public key file (`kms-public.key` in the back office's KMS data
        /// directory, or from `card-sim bench-kms`); refill messages and receipts must be
        /// signed by its private half.
        #[arg(long)]
        kms_public_key: Option<PathBuf>,
        /// The value-transfer scheme file (`card-sim scheme create`): required for a purse;
        /// for a PSD, gives it the issuer's public key and has the issuer certify the
        /// recognition key it generates, so it can move value to the scheme's purses.
        #[arg(long)]
        scheme: Option<PathBuf>,
        /// Failed recognitions in a row that block transfers (1-15; default 5). PSD with
        /// --scheme, or purse.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=15))]
        max_failures: Option<u8>,
        /// PSD: device ID, 16 hex digits (default: "PSD" and 5 random bytes).
        #[arg(long)]
        device_id: Option<String>,
        /// PSD: license and origin postal code of a register set, e.g. 4711:10115 (repeat
        /// for up to 4 register sets; default 4711:10115).
        #[arg(long = "license", value_parser = parse_license)]
        licenses: Vec<LicenseSlot>,
        /// PSD: highest postage for one piece, in currency units (default 100.00).
        #[arg(long, value_parser = parse_amount)]
        max_postage: Option<Amount>,
        /// PSD: highest value of the descending register, in currency units (default
        /// 10000.00).
        #[arg(long, value_parser = parse_amount)]
        max_dr: Option<Amount>,
        /// PSD: days an audit accepted by the back office (RECEIPT) keeps the device
        /// printing; 0 (the default) turns inspection off.
        #[arg(long)]
        inspection_days: Option<u16>,
        /// PSD: the vendor's public key (SEC1 uncompressed, 130 hex digits); default: a fresh
        /// throwaway key.
        #[arg(long)]
        vendor_key: Option<String>,
        /// PSD: the postal authority's data directory (its `pa-public.key` and
        /// `pa-subject.hex`): the PSD can then take licenses (seed 003). Give the vendor's
        /// real key with --vendor-key too, or no grant will verify.
        #[arg(long, value_name = "DIR")]
        postal_authority: Option<PathBuf>,
        /// Purse: card ID, 16 hex digits, or `auto` ("PUR" and 5 random bytes; the default).
        #[arg(long)]
        card_id: Option<String>,
        /// Purse: the holder's PIN (4 to 12 characters).
        #[arg(long)]
        pin: Option<String>,
        /// Purse: highest balance, in currency units (default 500.00).
        #[arg(long, value_parser = parse_amount)]
        max_balance: Option<Amount>,
        /// Purse: highest amount of one transfer, in currency units (default 100.00).
        #[arg(long, value_parser = parse_amount)]
        max_transfer: Option<Amount>,
        /// Purse: PIN tries before it blocks (1-15; default 3).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=15))]
        pin_tries: Option<u8>,
    },
    /// Value-transfer schemes: the issuer's signing and admin keys, revocation lists.
    Scheme {
        #[command(subcommand)]
        action: SchemeAction,
    },
    /// Give a PSD or a purse the issuer's revocation list (`card-sim scheme revoke`): it then
    /// refuses partners whose certificate serial is on it. A list older than the one the
    /// card holds is refused. The card must not be served meanwhile.
    LoadRevocation {
        /// The card's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The list file (hex).
        #[arg(long)]
        list: PathBuf,
    },
    /// Issuer: unblock a purse's PIN (sets a new PIN and full tries), authorised with the
    /// card's admin key from the scheme file. The card must not be served meanwhile.
    UnblockPin {
        /// The purse's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
        /// The new PIN (4 to 12 characters).
        #[arg(long)]
        new_pin: String,
        /// Issuer command counter; must exceed the last one the card accepted (default:
        /// seconds since 1970).
        #[arg(long)]
        counter: Option<u32>,
    },
    /// Issuer: clear a card's failed-recognition counter (transfers blocked after too
    /// many), with the scheme file: a purse's reset is MACed under its admin key, a PSD's
    /// signed with the issuer's key.
    ResetRecognition {
        /// The card's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
        /// Command counter; must exceed the last one the card accepted (default: seconds
        /// since 1970).
        #[arg(long)]
        counter: Option<u32>,
    },
    /// Mailer or issuer: the PSD's pending transfer (GET DATA 00 02), as the issuer needs it
    /// to settle a transfer whose purse is lost or no longer remembers the PSD. Reading
    /// changes nothing. The card must not be served meanwhile (`openpsd pending` reads a
    /// served one).
    Pending {
        /// The PSD's state directory.
        #[arg(long)]
        state: PathBuf,
        /// Also write the report (JSON) to this new file, for `card-sim settle --pending`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issuer: RELEASE PARTNER on a purse it holds — frees the place of a PSD that never
    /// comes back and gets the purse's MACed account of what it credited from that PSD (the
    /// evidence for `card-sim settle --evidence`), checked under the card's admin key.
    ReleasePartner {
        /// The purse's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
        /// The PSD to release: its device ID, 16 hex digits.
        #[arg(long)]
        psd: String,
        /// Admin counter; must exceed the last one the card accepted (UNBLOCK PIN, RESET
        /// RECOGNITION, RELEASE PARTNER; default: seconds since 1970).
        #[arg(long)]
        counter: Option<u32>,
        /// Also write the evidence (JSON) to this new file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the evidence as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issuer: decide a PSD's pending transfer (complete or undo) and sign the decision for
    /// that PSD and that transfer only. From the purse's evidence (`release-partner`): complete
    /// if the purse credited the transfer, undo if it provably did not, refused otherwise.
    /// The decision file holds nothing secret; the mailer applies it (`apply-settlement`,
    /// `openpsd settle`). No card is touched.
    Settle {
        /// The scheme file (the issuer's signing key; the admin key checks the evidence).
        #[arg(long)]
        scheme: PathBuf,
        /// The PSD's pending report (`card-sim pending --json` / `openpsd pending --json`).
        #[arg(long)]
        pending: PathBuf,
        /// The issuer's own decision, when the purse is gone and gives no evidence.
        #[arg(
            long,
            value_enum,
            conflicts_with = "evidence",
            required_unless_present = "evidence"
        )]
        decision: Option<DecisionArg>,
        /// The purse's release evidence (`card-sim release-partner --json`).
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// The issuer's word, recorded in the decision: the purse has stayed in its hands
        /// since the release and stays there until the decision is applied (or is
        /// destroyed). Without it, evidence whose count is not above the transfer's does not
        /// decide (the transfer may not be made yet).
        #[arg(long, requires = "evidence")]
        purse_retained: bool,
        /// Issuer counter; must exceed the PSD's (shown in the report; shared with RESET
        /// RECOGNITION). Default: seconds since 1970, or the PSD's counter + 1 if higher.
        #[arg(long)]
        counter: Option<u32>,
        /// Sign with a counter more than a day ahead of the clock (the report's issuer
        /// counter, or --counter): refused without it, since the PSD would then refuse
        /// every issuer command up to that counter.
        #[arg(long)]
        force_counter: bool,
        /// The decision file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mailer: apply the issuer's decision (`card-sim settle`) to the PSD: its pending
    /// transfer completed or undone. A decision for another PSD or transfer, or an old one,
    /// is refused with nothing changed. The card must not be served meanwhile (`openpsd
    /// settle` applies to a served one).
    ApplySettlement {
        /// The PSD's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The decision file.
        #[arg(long)]
        decision: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Test bench: make a KMS key pair in the KMS's own file format (DIR/kms-signing.key,
    /// mode 0600, and DIR/kms-public.key), to personalize and fund PSDs without a back
    /// office. Keep it outside every card's directory.
    BenchKms {
        /// Directory for the two files (created if missing; refuses to overwrite a key).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Test bench: fund a PSD's register set as the back office would — an audit checked
    /// with the public key of its secrets file, then a refill message signed with a KMS
    /// signing key (the one whose public half the PSD was personalized with). The card must
    /// not be served meanwhile. Writes `<name>.baselines.json` next to the secrets file: every set's
    /// control sum and refill count, for the meter server's registration.
    Refill {
        /// The PSD's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The PSD's secrets file (default `<state>.secrets.json`).
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// The test-bench KMS's signing key (`kms-signing.key` from `card-sim bench-kms`).
        #[arg(long)]
        kms_signing_key: PathBuf,
        /// Amount in currency units, e.g. 100.00.
        #[arg(long, value_parser = parse_amount)]
        amount: Amount,
        /// Register set.
        #[arg(long, default_value_t = 0)]
        set: u8,
    },
    /// Serve a card: to pcscd's vpcd reader (as its TCP client) or to TCP clients.
    Serve {
        /// The card's state directory.
        #[arg(long)]
        state: PathBuf,
        /// Connect to vpcd at HOST:PORT (default 127.0.0.1:35963, reader "Virtual PCD 00 00").
        #[arg(long, num_args = 0..=1, default_missing_value = VPCD_DEFAULT, conflicts_with = "tcp")]
        vpcd: Option<String>,
        /// vpcd reader slot: port 35963 + SLOT on the vpcd host (slot 1 = "Virtual PCD 00 01").
        #[arg(long, conflicts_with = "tcp")]
        slot: Option<u16>,
        /// Listen for clients of the same framing at ADDR (e.g. 127.0.0.1:35990), one client
        /// at a time (unless --clients), dropped after 30 s silent. Without --tls-cert,
        /// loopback only (the plain framing has no TLS and no authentication).
        #[arg(long)]
        tcp: Option<String>,
        /// With --tcp (plain or TLS): serve up to N clients at once, each APDU run whole on
        /// the one card, one at a time; a client beyond N is closed at once. N > 1 only for
        /// a virtual meter box (or a blank card its data center personalizes as one), whose
        /// only volatile state is its selection: the data center's function servers each
        /// keep a connection to it. A PSD's or a purse's sessions live in volatile memory
        /// that the clients would share, so such a card is refused. The card is reset when
        /// a client arrives and none other is connected, and when the last one leaves; a
        /// client's own power off, power on or reset is then ignored.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1,
            requires = "tcp",
            conflicts_with_all = ["vpcd", "slot"],
            value_parser = clap::value_parser!(u16).range(1..)
        )]
        clients: u16,
        /// With --tcp: serve over TLS 1.3 with this certificate chain (PEM) and require a
        /// client certificate (--client-ca, --client-name); then any address may be
        /// listened on.
        #[arg(long, value_name = "PEM", requires_all = ["tcp", "tls_key", "client_ca", "client_name"])]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The CA a client's certificate must chain to (PEM), e.g. the back office's ca.crt.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        client_ca: Option<PathBuf>,
        /// The DNS name a client's certificate must name (e.g. datacenter.openpsd): a client
        /// without a certificate, with one of another CA or for another name is refused in
        /// the handshake, before the card sees anything.
        #[arg(long, value_name = "NAME", requires = "tls_cert")]
        client_name: Option<String>,
        /// The card's clock: system, none, or a fixed date YYYY-MM-DD.
        #[arg(long, default_value = "system")]
        clock: Clock,
    },
    /// Run APDU scripts (scriptor syntax, `# expect` comments) in-process. Each script gets
    /// a fresh blank card unless --state names a persistent one.
    Run {
        /// Run against this persistent card instead of fresh blank cards.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The card's clock: system, none, or a fixed date YYYY-MM-DD.
        #[arg(long, default_value = "system")]
        clock: Clock,
        /// Script files.
        #[arg(required = true)]
        scripts: Vec<PathBuf>,
    },
    /// Check scriptor's output for a script against the script's expectations.
    CheckScriptor {
        /// The script scriptor ran.
        #[arg(long)]
        script: PathBuf,
        /// scriptor's standard output.
        #[arg(long)]
        output: PathBuf,
    },
}

/// The issuer's decision on a pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DecisionArg {
    /// The purse credited the value: pending moves to AR.
    Complete,
    /// The purse did not and never will: pending goes back to DR.
    Undo,
}

#[derive(Subcommand, Debug)]
enum SchemeAction {
    /// Make a new scheme: fresh issuer signing key (ECDSA P-256) and issuer admin key,
    /// written to a new file readable by its owner only (JSON, hex).
    Create {
        /// The scheme file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Scheme ID (default: random).
        #[arg(long)]
        id: Option<u32>,
    },
    /// Print a scheme file's ID and issuer public key (never its secrets).
    Show {
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
    },
    /// Write the public part (scheme ID, issuer public key) for merchant terminals.
    Public {
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
        /// The public file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a revocation list: the certificate serials (from the cards' secrets files)
    /// that devices of the scheme must refuse, with a version above every earlier list's.
    Revoke {
        /// The scheme file.
        #[arg(long)]
        scheme: PathBuf,
        /// List version (must exceed the version the cards hold).
        #[arg(long)]
        version: u32,
        /// A revoked certificate serial (repeat; at most 32; none: an empty list).
        #[arg(long)]
        serial: Vec<u32>,
        /// The list file to write (hex; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Create { state, kind } => {
            sim::create_file_card(&state, Clock::System).map_err(|e| anyhow!("{e}"))?;
            let what = match kind {
                Kind::Psd => "PSD",
                Kind::Purse => "purse",
                Kind::Vbox => {
                    "virtual meter box: serve it and let the data center send PERSONALIZE"
                }
            };
            println!(
                "blank card created in {} (personalize it as a {what})",
                state.display()
            );
        }
        Command::Personalize {
            state,
            kind,
            secrets,
            kms_public_key,
            scheme,
            max_failures,
            device_id,
            licenses,
            max_postage,
            max_dr,
            inspection_days,
            vendor_key,
            postal_authority,
            card_id,
            pin,
            max_balance,
            max_transfer,
            pin_tries,
        } => {
            let secrets_path = secrets.unwrap_or_else(|| default_secrets_path(&state));
            let psd_only = [
                ("--device-id", device_id.is_some()),
                ("--license", !licenses.is_empty()),
                ("--max-postage", max_postage.is_some()),
                ("--max-dr", max_dr.is_some()),
                ("--inspection-days", inspection_days.is_some()),
                ("--vendor-key", vendor_key.is_some()),
                ("--postal-authority", postal_authority.is_some()),
                ("--kms-public-key", kms_public_key.is_some()),
            ];
            let purse_only = [
                ("--card-id", card_id.is_some()),
                ("--pin", pin.is_some()),
                ("--max-balance", max_balance.is_some()),
                ("--max-transfer", max_transfer.is_some()),
                ("--pin-tries", pin_tries.is_some()),
            ];
            let (wrong, other) = match kind {
                Kind::Psd => (&purse_only[..], "purse"),
                Kind::Purse => (&psd_only[..], "psd"),
                Kind::Vbox => bail!("{VBOX_PERSONALIZE}"),
            };
            if let Some((flag, _)) = wrong.iter().find(|(_, given)| *given) {
                bail!("{flag} is for --kind {other}");
            }
            if secrets_path.exists() {
                bail!(
                    "{} exists already; not overwriting another card's secrets",
                    secrets_path.display()
                );
            }
            let scheme = scheme
                .map(|p| card_sim::scheme::Scheme::read(&p))
                .transpose()?;
            let made = match kind {
                Kind::Psd => {
                    let device = device_id
                        .map(|h| parse_fixed_hex::<8>(&h, "--device-id").map(DeviceId))
                        .transpose()?;
                    let vendor_public_key = vendor_key
                        .map(|h| parse_fixed_hex::<65>(&h, "--vendor-key"))
                        .transpose()?;
                    if scheme.is_none() && max_failures.is_some() {
                        bail!("--max-failures needs --scheme");
                    }
                    let slot = scheme.as_ref().map(|s| (s, max_failures.unwrap_or(5)));
                    let kms_path = kms_public_key.ok_or_else(|| {
                        anyhow!(
                            "a PSD needs --kms-public-key FILE: the KMS's kms-public.key \
                             (or `card-sim bench-kms --dir DIR` for a test bench)"
                        )
                    })?;
                    let d = Request::new(card_sim::kms_key::read_public(&kms_path)?);
                    let req = Request {
                        device,
                        kms_public_key: d.kms_public_key,
                        vendor_public_key,
                        max_postage: max_postage.unwrap_or(d.max_postage),
                        max_dr: max_dr.unwrap_or(d.max_dr),
                        inspection_days: inspection_days.unwrap_or(d.inspection_days),
                        licenses: if licenses.is_empty() {
                            d.licenses
                        } else {
                            licenses
                        },
                        postal_authority: postal_authority
                            .as_deref()
                            .map(read_postal_authority)
                            .transpose()?,
                    };
                    make_card(&state, |card| {
                        let (info, secrets) = personalize::personalize_with_scheme(
                            card,
                            &mut OsPlatform::default(),
                            &req,
                            slot,
                        )?;
                        write_secrets(&secrets_path, &secrets)?;
                        let mut out = vec![
                            format!("device_id {}", info.device),
                            format!("key_id {}", hex::encode(info.key_id.0)),
                            format!("public_key {}", hex::encode(info.public_key)),
                        ];
                        if let Some(s) = &scheme {
                            out.push(format!("scheme {}", s.id.0));
                        }
                        out.push(format!("secrets {}", secrets_path.display()));
                        Ok(out)
                    })
                }
                Kind::Vbox => bail!("{VBOX_PERSONALIZE}"),
                Kind::Purse => {
                    let scheme = scheme.ok_or_else(|| anyhow!("--kind purse needs --scheme"))?;
                    let pin = pin.ok_or_else(|| anyhow!("--kind purse needs --pin"))?;
                    let card = match card_id.as_deref() {
                        None | Some("auto") => None,
                        Some(h) => Some(CardId(parse_fixed_hex::<8>(h, "--card-id")?)),
                    };
                    let req = PurseRequest {
                        card,
                        pin: zeroize::Zeroizing::new(pin.into_bytes()),
                        max_balance: max_balance.unwrap_or(Amount(50_000)),
                        max_transfer: max_transfer.unwrap_or(Amount(10_000)),
                        pin_tries: pin_tries.unwrap_or(3),
                        max_failures: max_failures.unwrap_or(5),
                    };
                    if !(4..=12).contains(&req.pin.len()) {
                        bail!("--pin: 4 to 12 characters");
                    }
                    if req.max_transfer > req.max_balance {
                        bail!("--max-transfer is above --max-balance");
                    }
                    make_card(&state, |card| {
                        let (info, record) = issuer::personalize_purse(
                            card,
                            &mut OsPlatform::default(),
                            &scheme,
                            &req,
                        )?;
                        let json = serde_json::to_string_pretty(&record)?;
                        card_sim::scheme::write_new_private(&secrets_path, json.as_bytes())?;
                        Ok(vec![
                            format!("card_id {}", info.card),
                            format!("scheme {}", info.scheme.0),
                            format!("public_key {}", hex::encode(info.public_key)),
                            format!("certificate {}", record.certificate),
                            format!(
                                "limits: balance {} transfer {} PIN tries {} recognitions {}",
                                info.max_balance,
                                info.max_transfer,
                                info.pin_tries,
                                info.max_failures
                            ),
                            format!("secrets {}", secrets_path.display()),
                        ])
                    })
                }
            };
            for line in made? {
                println!("{line}");
            }
        }
        Command::Scheme { action } => match action {
            SchemeAction::Create { out, id } => {
                let s = card_sim::scheme::create(&out, id)?;
                println!("scheme {}", s.id.0);
                println!(
                    "issuer_public_key {}",
                    hex::encode(s.issuer_key.public_key())
                );
                println!("written to {} (mode 0600)", out.display());
            }
            SchemeAction::Show { scheme } => {
                let s = card_sim::scheme::Scheme::read(&scheme)?;
                println!("scheme {}", s.id.0);
                println!(
                    "issuer_public_key {}",
                    hex::encode(s.issuer_key.public_key())
                );
            }
            SchemeAction::Public { scheme, out } => {
                let s = card_sim::scheme::Scheme::read(&scheme)?;
                card_sim::scheme::write_public(&out, &s.public())?;
                println!("scheme {} public part written to {}", s.id.0, out.display());
            }
            SchemeAction::Revoke {
                scheme,
                version,
                serial,
                out,
            } => {
                let s = card_sim::scheme::Scheme::read(&scheme)?;
                let n = serial.len();
                let list = s
                    .revocation(version, serial)
                    .ok_or_else(|| anyhow!("at most 32 serials per list"))?;
                if out.exists() {
                    bail!("{} exists already", out.display());
                }
                std::fs::write(&out, hex::encode(list) + "\n")
                    .with_context(|| format!("writing {}", out.display()))?;
                println!(
                    "scheme {} revocation list version {version} ({n} serials) written to {}",
                    s.id.0,
                    out.display()
                );
            }
        },
        Command::LoadRevocation { state, list } => {
            let text = std::fs::read_to_string(&list)
                .with_context(|| format!("reading {}", list.display()))?;
            let bytes = hex::decode(text.trim())
                .map_err(|_| anyhow!("{}: not a hex revocation list", list.display()))?;
            let mut card = open_card(&state)?;
            let psd = match card.kind() {
                Some(sim::CardKind::Psd) => true,
                Some(sim::CardKind::Purse) => false,
                _ => bail!("{}: not a personalized PSD or purse", state.display()),
            };
            let version = issuer::load_revocation(&mut card, psd, &bytes)?;
            println!("{}: revocation list version {version} held", kind_of(&card));
        }
        Command::UnblockPin {
            state,
            scheme,
            new_pin,
            counter,
        } => {
            let scheme = card_sim::scheme::Scheme::read(&scheme)?;
            let mut card = open_card(&state)?;
            let new_pin = zeroize::Zeroizing::new(new_pin.into_bytes());
            let info = with_counter(counter, |c| {
                issuer::unblock_pin(&mut card, &scheme, &new_pin, c)
            })?;
            println!(
                "card {}: PIN set, {} of {} tries",
                info.card, info.pin_tries_left, info.pin_tries
            );
        }
        Command::ResetRecognition {
            state,
            scheme,
            counter,
        } => {
            let mut card = open_card(&state)?;
            let scheme = card_sim::scheme::Scheme::read(&scheme)?;
            if card.kind() == Some(sim::CardKind::Psd) {
                let device = with_counter(counter, |c| {
                    issuer::reset_psd_recognition(&mut card, &scheme, c)
                })?;
                println!("PSD {device}: failed recognitions reset");
            } else {
                let info = with_counter(counter, |c| {
                    issuer::reset_purse_recognition(&mut card, &scheme, c)
                })?;
                println!("card {}: failed recognitions reset", info.card);
            }
        }
        Command::Pending { state, out, json } => {
            let report = settlement::read_pending(&mut open_card(&state)?)?;
            write_json_new(out.as_deref(), &report)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_pending(&report);
            }
        }
        Command::ReleasePartner {
            state,
            scheme,
            psd,
            counter,
            out,
            json,
        } => {
            let scheme = card_sim::scheme::Scheme::read(&scheme)?;
            let device = DeviceId(parse_fixed_hex::<8>(&psd, "--psd")?);
            if let Some(out) = out.as_deref().filter(|o| o.exists()) {
                bail!("{} exists already", out.display());
            }
            let mut card = open_card(&state)?;
            let evidence = with_counter(counter, |c| {
                settlement::release_partner(&mut card, &scheme, device, c)
            })?;
            write_json_new(out.as_deref(), &evidence)?;
            if json {
                println!("{}", serde_json::to_string(&evidence)?);
            } else {
                print_evidence(&evidence);
            }
        }
        Command::Settle {
            scheme,
            pending,
            decision,
            evidence,
            purse_retained,
            counter,
            force_counter,
            out,
            json,
        } => {
            let scheme = card_sim::scheme::Scheme::read(&scheme)?;
            let report = settlement::PendingReport::read(&pending)?;
            let basis = match (decision, evidence) {
                (Some(DecisionArg::Complete), None) => {
                    settlement::Basis::Issuer(Decision::Complete)
                }
                (Some(DecisionArg::Undo), None) => settlement::Basis::Issuer(Decision::Undo),
                (None, Some(path)) => settlement::Basis::Evidence {
                    evidence: settlement::Evidence::read(&path)?,
                    purse_retained,
                },
                _ => bail!("give --decision or --evidence"),
            };
            if out.exists() {
                bail!("{} exists already", out.display());
            }
            let counter = settlement::settle_counter(&report, counter, force_counter)?;
            let d = settlement::settle(&scheme, &report, &basis, counter)?;
            write_json_new(Some(out.as_path()), &d)?;
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                println!(
                    "PSD {}: {} transfer {} of {} to purse {}, counter {}",
                    DeviceId(d.device),
                    d.decision,
                    d.pending.transfer,
                    Amount(d.pending.amount),
                    CardId(d.pending.card),
                    d.counter
                );
                println!("reason: {}", d.reason);
                println!("decision written to {}", out.display());
            }
        }
        Command::ApplySettlement {
            state,
            decision,
            json,
        } => {
            let d = settlement::DecisionFile::read(&decision)?;
            let (applied, r) = settlement::apply(&mut open_card(&state)?, &d)?;
            let wording = settlement::AppliedWording::CardSim;
            let report = settlement::applied_report(&d, applied, &r, wording, json);
            println!("{report}");
        }
        Command::BenchKms { dir } => {
            let (signing, public) = card_sim::kms_key::create(&dir, &mut OsPlatform::default())?;
            println!("signing_key {}", signing.display());
            println!("public_key {}", public.display());
        }
        Command::Refill {
            state,
            secrets,
            kms_signing_key,
            amount,
            set,
        } => {
            let secrets_path = secrets.unwrap_or_else(|| default_secrets_path(&state));
            let secrets = personalize::read_secrets(&secrets_path)?;
            let kms = card_sim::kms_key::read_signing(&kms_signing_key)?;
            let mut card = open_card(&state)?;
            let r = issuer::refill_psd(
                &mut card,
                &mut OsPlatform::default(),
                &secrets,
                &kms,
                RegisterSetIndex(set),
                amount,
            )?;
            println!(
                "set {set}: DR {} AR {} control sum {} refills {}",
                r.dr, r.ar, r.control_sum, r.refills.0
            );
            // The funding is value the back office did not issue: the meter must register
            // the device with it as its baseline (docs/refill.md § Registration).
            let baselines = issuer::psd_baselines(&mut card, &secrets)?;
            let path = baselines_path(&secrets_path);
            std::fs::write(&path, serde_json::to_string_pretty(&baselines)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "baselines for the meter server's registration: {}",
                path.display()
            );
        }
        Command::Serve {
            state,
            vpcd,
            slot,
            tcp,
            clients,
            tls_cert,
            tls_key,
            client_ca,
            client_name,
            clock,
        } => {
            // The TLS files are read before the card is opened or the port taken: a wrong
            // path fails the start, not the first client.
            let tls = match (&tls_cert, &tls_key, &client_ca, &client_name) {
                (Some(cert), Some(key), Some(ca), Some(name)) => {
                    Some(tls::server_config(cert, key, ca, name)?)
                }
                (None, None, None, None) => None,
                _ => bail!("--tls-cert, --tls-key, --client-ca and --client-name go together"),
            };
            let mut card = sim::open_file_card(&state, clock)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("opening the card in {}", state.display()))?;
            if clients > 1 {
                // Before the port is taken: a card that must not be shared never listens.
                shareable(&card, clients)?;
            }
            if let Some(addr) = tcp {
                let listener =
                    TcpListener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
                let local = listener.local_addr()?;
                let kind = kind_of(&card);
                if let Some(config) = tls {
                    tracing::info!(addr = %local, state = %state.display(), %kind, clients, client = client_name.as_deref().unwrap_or_default(), "serving the card over TLS");
                    if clients > 1 {
                        tls::run_tls_server_shared(listener, &mut card, config, clients)?;
                    } else {
                        tls::run_tls_server(listener, &mut card, config)?;
                    }
                } else {
                    anyhow::ensure!(
                        local.ip().is_loopback(),
                        "refusing to serve the card on {local}: the plain TCP framing carries \
                         APDUs without TLS or authentication, so it listens on loopback only \
                         (serve it with --tls-cert, --tls-key, --client-ca and --client-name \
                         to listen elsewhere)"
                    );
                    tracing::info!(addr = %local, state = %state.display(), %kind, clients, "serving the card over TCP");
                    if clients > 1 {
                        transport::run_tcp_server_shared(listener, &mut card, clients)?;
                    } else {
                        transport::run_tcp_server(listener, &mut card)?;
                    }
                }
            } else {
                let addr = vpcd_address(vpcd.as_deref().unwrap_or(VPCD_DEFAULT), slot)?;
                tracing::info!(%addr, state = %state.display(), kind = %kind_of(&card), "serving the card to vpcd");
                transport::run_vpcd_client(&addr, &mut card, Duration::from_millis(250))?;
            }
        }
        Command::Run {
            state,
            clock,
            scripts,
        } => return run_scripts(state.as_deref(), clock, &scripts),
        Command::CheckScriptor { script, output } => {
            let steps = read_script(&script)?;
            let out = std::fs::read_to_string(&output)
                .with_context(|| format!("reading {}", output.display()))?;
            return Ok(match script::check_scriptor_output(&steps, &out) {
                Ok(r) => {
                    println!(
                        "{}: ok ({} APDUs, {} expectations met through PC/SC)",
                        script.display(),
                        r.apdus,
                        r.expectations
                    );
                    ExitCode::SUCCESS
                }
                Err(m) => {
                    eprintln!("{}: {m}", script.display());
                    ExitCode::FAILURE
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// All or nothing: a card whose personalization (or whose secrets file) failed is of no
/// use — its keys would be known to nobody — so it is removed again.
fn make_card(
    state: &Path,
    f: impl FnOnce(&mut sim::FileCard) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    if state.exists() {
        bail!(
            "{} exists already; personalize makes a new card",
            state.display()
        );
    }
    let made = (|| {
        let mut card = sim::create_file_card(state, Clock::System).map_err(|e| anyhow!("{e}"))?;
        f(&mut card)
    })();
    made.map_err(|e| {
        let _ = std::fs::remove_dir_all(state);
        let _ = std::fs::remove_file(sim::storage_key_path(state));
        e.context(format!("nothing was kept in {}", state.display()))
    })
}

/// Runs an issuer command with `counter`, or with the time in seconds; a time-based
/// counter the card refuses (another command in the same second) is retried once with the
/// next second's.
fn with_counter<T>(counter: Option<u32>, mut f: impl FnMut(u32) -> Result<T>) -> Result<T> {
    if let Some(c) = counter {
        return f(c);
    }
    let first = issuer::admin_counter_now();
    match f(first) {
        Err(e) if format!("{e}").contains("6982") => {
            while issuer::admin_counter_now() <= first {
                std::thread::sleep(Duration::from_millis(100));
            }
            f(issuer::admin_counter_now())
        }
        other => other,
    }
}

/// Writes `value` as JSON to `path` (a new file) when given.
fn write_json_new<T: serde::Serialize>(path: Option<&Path>, value: &T) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let json = serde_json::to_string_pretty(value)? + "\n";
    std::io::Write::write_all(&mut f, json.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn print_pending(r: &settlement::PendingReport) {
    let device = DeviceId(r.device);
    match &r.pending {
        None => println!("PSD {device}: nothing pending"),
        Some(p) => println!(
            "PSD {device}: transfer {} of {} to purse {} pending (set {}, purse count {})",
            p.transfer,
            Amount(p.amount),
            CardId(p.card),
            p.set,
            p.card_transfers
        ),
    }
    println!("scheme {}, issuer counter {}", r.scheme, r.issuer_counter);
}

fn print_evidence(e: &settlement::Evidence) {
    let (card, device) = (CardId(e.card), DeviceId(e.device));
    match &e.entry {
        None => println!("purse {card} does not list PSD {device}"),
        Some(p) => println!(
            "purse {card}: last credit from PSD {device} is its transfer {} ({} credits, {} in \
             all, closure {})",
            p.last_transfer,
            p.count,
            Amount(p.total),
            p.closure
        ),
    }
    println!(
        "purse count {}, forgotten through {}, released with counter {}",
        e.card_transfers, e.forgotten_through, e.counter
    );
}

fn open_card(state: &Path) -> Result<sim::FileCard> {
    sim::open_file_card(state, Clock::System)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("opening the card in {}", state.display()))
}

fn kind_of(card: &sim::FileCard) -> String {
    card.kind().map_or("unreadable".into(), |k| k.to_string())
}

/// Whether `card` may be served to `clients` clients at once (`serve --clients`): only a
/// virtual meter box, whose only volatile state is its selection, or a blank card (the data
/// center personalizes it as a box at its first start). A PSD's or a purse's applet keeps
/// its sessions and secure state in volatile memory, which every client would share: one
/// client's session would run, or be torn down, under another's commands.
fn shareable(card: &sim::FileCard, clients: u16) -> Result<()> {
    let why = match card.kind() {
        Some(sim::CardKind::Vbox | sim::CardKind::Blank) => return Ok(()),
        Some(kind) => format!(
            "it is a {kind}, whose applets keep sessions and secure state in volatile memory \
             that {clients} clients would share and trample"
        ),
        None => "its memory cannot be read, so what it is cannot be told".to_string(),
    };
    bail!(
        "refusing to serve the card to {clients} clients at once (--clients {clients}): {why}; \
         only a virtual meter box (or a blank card to be personalized as one) may be shared \
         (serve this card with --clients 1)"
    )
}

fn run_scripts(state: Option<&Path>, clock: Clock, scripts: &[PathBuf]) -> Result<ExitCode> {
    let mut persistent = state
        .map(|s| sim::open_file_card(s, clock).map_err(|e| anyhow!("{e}")))
        .transpose()?;
    for path in scripts {
        let steps = read_script(path)?;
        let mut fresh;
        let card: &mut dyn SimulatedCard = match persistent.as_mut() {
            Some(c) => c,
            None => {
                fresh = sim::mem_card(clock).map_err(|e| anyhow!("{e}"))?;
                &mut fresh
            }
        };
        card.reset();
        let cell = std::cell::RefCell::new(card);
        let result = script::run(
            &steps,
            |apdu| {
                let mut reply = Vec::new();
                cell.borrow_mut().handle(apdu, &mut reply);
                tracing::debug!(apdu = %hex_spaced(apdu), response = %hex_spaced(&reply));
                reply
            },
            || cell.borrow_mut().reset(),
        );
        match result {
            Ok(r) => println!(
                "{}: ok ({} APDUs, {} expectations, {} resets)",
                path.display(),
                r.apdus,
                r.expectations,
                r.resets
            ),
            Err(m) => {
                eprintln!("{}: {m}", path.display());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_script(path: &Path) -> Result<Vec<script::Step>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    script::parse(&text).with_context(|| format!("in {}", path.display()))
}

fn default_secrets_path(state: &Path) -> PathBuf {
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "card".into());
    state.with_file_name(format!("{name}.secrets.json"))
}

/// `X.secrets.json` -> `X.baselines.json` (next to the secrets file).
fn baselines_path(secrets: &Path) -> PathBuf {
    let name = secrets
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "card.secrets.json".into());
    let stem = name.strip_suffix(".secrets.json").unwrap_or(&name);
    secrets.with_file_name(format!("{stem}.baselines.json"))
}

fn vpcd_address(addr: &str, slot: Option<u16>) -> Result<String> {
    let Some(slot) = slot else {
        return Ok(addr.to_string());
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--vpcd {addr}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--vpcd {addr}: bad port"))?;
    let port = port
        .checked_add(slot)
        .ok_or_else(|| anyhow!("--slot {slot}: port out of range"))?;
    Ok(format!("{host}:{port}"))
}

fn parse_fixed_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow!("{what}: expected {} hex digits", 2 * N))
}
