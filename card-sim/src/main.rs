//! `card-sim`: hosts openpsd cards as processes with persistent memory, for pcscd's vpcd
//! reader, for TCP clients and for APDU scripts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::{self, parse_amount, parse_license, write_secrets, Request};
use card_sim::script::{self, hex_spaced};
use card_sim::sim::{self, SimulatedCard};
use card_sim::transport::{self, VPCD_DEFAULT};
use clap::{Parser, Subcommand, ValueEnum};
use openpsd_core::psd::device::LicenseSlot;
use openpsd_core::types::{Amount, DeviceId};

/// openpsd card simulator: persistent virtual cards for pcscd (vpcd), TCP clients and APDU
/// scripts.
#[derive(Parser, Debug)]
#[command(name = "card-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// Postal security device.
    Psd,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a blank card (personalize it later with PERSONALIZE APDUs or `personalize`).
    Create {
        /// Directory for the card's state (must not hold a card yet).
        #[arg(long)]
        state: PathBuf,
        /// Kind of card.
        #[arg(long, value_enum, default_value = "psd")]
        kind: Kind,
    },
    /// Make a new personalized PSD: keys generated inside the card; prints its device ID and
    /// public key; writes what the back office needs (device ID, K1, public key) to a
    /// separate secrets file, never into the card's state.
    Personalize {
        /// Directory for the card's state (created; must not hold a card yet).
        #[arg(long)]
        state: PathBuf,
        /// Kind of card.
        #[arg(long, value_enum, default_value = "psd")]
        kind: Kind,
        /// Where to write the back office's secrets (JSON, mode 0600).
        /// Default: `<state>.secrets.json` beside the state directory.
        #[arg(long)]
        secrets: Option<PathBuf>,
        /// Device ID: 16 hex digits (default: "PSD" and 5 random bytes).
        #[arg(long)]
        device_id: Option<String>,
        /// License and origin postal code of a register set, e.g. 4711:10115 (repeat for
        /// up to 4 register sets).
        #[arg(long = "license", default_value = "4711:10115", value_parser = parse_license)]
        licenses: Vec<LicenseSlot>,
        /// Highest postage for one piece, in currency units.
        #[arg(long, default_value = "100.00", value_parser = parse_amount)]
        max_postage: Amount,
        /// Highest value of the descending register, in currency units.
        #[arg(long, default_value = "10000.00", value_parser = parse_amount)]
        max_dr: Amount,
        /// Days an audit accepted by the back office (RECEIPT) keeps the device printing;
        /// 0 turns inspection off (a card with no back office to reach).
        #[arg(long, default_value_t = 0)]
        inspection_days: u16,
        /// The vendor's public key (SEC1 uncompressed, 130 hex digits); default: a fresh
        /// throwaway key.
        #[arg(long)]
        vendor_key: Option<String>,
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
        /// Listen for clients of the same framing at ADDR (e.g. 127.0.0.1:35990).
        #[arg(long)]
        tcp: Option<String>,
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
        Command::Create {
            state,
            kind: Kind::Psd,
        } => {
            sim::create_file_card(&state, Clock::System).map_err(|e| anyhow!("{e}"))?;
            println!("blank PSD created in {}", state.display());
        }
        Command::Personalize {
            state,
            kind: Kind::Psd,
            secrets,
            device_id,
            licenses,
            max_postage,
            max_dr,
            inspection_days,
            vendor_key,
        } => {
            let secrets_path = secrets.unwrap_or_else(|| default_secrets_path(&state));
            if secrets_path.exists() {
                bail!(
                    "{} exists already; not overwriting another card's secrets",
                    secrets_path.display()
                );
            }
            let device = device_id
                .map(|h| parse_fixed_hex::<8>(&h, "--device-id").map(DeviceId))
                .transpose()?;
            let vendor_public_key = vendor_key
                .map(|h| parse_fixed_hex::<65>(&h, "--vendor-key"))
                .transpose()?;
            if state.exists() {
                bail!(
                    "{} exists already; personalize makes a new card",
                    state.display()
                );
            }
            let req = Request {
                device,
                vendor_public_key,
                max_postage,
                max_dr,
                inspection_days,
                licenses,
            };
            // All or nothing: a card whose personalization (or whose secrets file) failed is
            // of no use — its K1 would be known to nobody — so it is removed again.
            let made = (|| {
                let mut card =
                    sim::create_file_card(&state, Clock::System).map_err(|e| anyhow!("{e}"))?;
                let (info, secrets) =
                    personalize::personalize(&mut card, &mut OsPlatform::default(), &req)?;
                write_secrets(&secrets_path, &secrets)?;
                Ok::<_, anyhow::Error>(info)
            })();
            let info = match made {
                Ok(info) => info,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&state);
                    let _ = std::fs::remove_file(sim::storage_key_path(&state));
                    return Err(e.context(format!("nothing was kept in {}", state.display())));
                }
            };
            println!("device_id {}", info.device);
            println!("key_id {}", hex::encode(info.key_id.0));
            println!("public_key {}", hex::encode(info.public_key));
            println!("secrets {}", secrets_path.display());
        }
        Command::Serve {
            state,
            vpcd,
            slot,
            tcp,
            clock,
        } => {
            let mut card = sim::open_file_card(&state, clock)
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("opening the card in {}", state.display()))?;
            if let Some(addr) = tcp {
                let listener =
                    TcpListener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
                tracing::info!(addr = %listener.local_addr()?, state = %state.display(), "serving the card over TCP");
                transport::run_tcp_server(listener, &mut card)?;
            } else {
                let addr = vpcd_address(vpcd.as_deref().unwrap_or(VPCD_DEFAULT), slot)?;
                tracing::info!(%addr, state = %state.display(), "serving the card to vpcd");
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
                cell.borrow_mut().transmit(apdu, &mut reply);
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
