//! `backoffice`: runs the meter server, the key management system and the recharging
//! center, alone (`--role kms|recharge|meter`) or together in one process (`--role all`).
//!
//! Each service prints `ROLE listening on http://ADDR` on stdout once it accepts
//! connections (scripts and the crash tests wait for that line); logs go to stderr
//! (`RUST_LOG=debug` for more).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use openpsd_backoffice::server::{self, Service};
use openpsd_backoffice::{kms, recharge};

#[derive(Parser)]
#[command(
    name = "backoffice",
    version,
    about = "openpsd back office: meter server, key management system and recharging center for remote refills",
    long_about = "openpsd back office for remote refills (docs/refill.md): the meter server (the host's \
                  counterpart), the key management system (holds K1) and the recharging center \
                  (holds deposits). Each keeps its own SQLite database in its data directory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one service, or all three in one process.
    Serve(Serve),
    /// The demo: the three services, a PSD in the card simulator, a customer deposit, a
    /// refill through the meter server and indicia; then it keeps serving the card (over
    /// TCP, for `openpsd`) and the back office until Ctrl-C.
    Demo(Demo),
}

#[derive(clap::Args)]
struct Demo {
    /// Data directory for the services and the card (re-used when it exists).
    /// Default: a new directory under the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Meter server listen address.
    #[arg(long, default_value = "127.0.0.1:8700")]
    meter_listen: String,
    /// KMS listen address.
    #[arg(long, default_value = "127.0.0.1:8701")]
    kms_listen: String,
    /// Recharging center listen address.
    #[arg(long, default_value = "127.0.0.1:8702")]
    recharge_listen: String,
    /// Where to serve the card over TCP afterwards.
    #[arg(long, default_value = "127.0.0.1:35990")]
    card_listen: String,
    /// Amount to refill, in currency units.
    #[arg(long, default_value = "25.00")]
    refill: openpsd_core::types::Amount,
    /// Indicia to issue.
    #[arg(long, default_value_t = 3)]
    indicia: u32,
    /// Stop after the refill and the indicia instead of serving on.
    #[arg(long)]
    exit: bool,
    /// Also serve the web demo (browser postage client, wasm package, the meter server's
    /// API and the personalization room for browser PSDs) on this address, e.g.
    /// 127.0.0.1:8080. Loopback only: it hands out K1 in PERSONALIZE data.
    #[arg(long, value_name = "ADDR")]
    web: Option<String>,
    /// The web demo's page directory.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../web-demo"))]
    web_root: PathBuf,
    /// The wasm package built for the web target (served under /pkg/).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm-pkg/web"))]
    wasm_pkg: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Key management system (default port 8701).
    Kms,
    /// Recharging center (default port 8702).
    Recharge,
    /// Meter server (default port 8700).
    Meter,
    /// All three; data in DIR/kms, DIR/recharge, DIR/meter.
    All,
}

#[derive(clap::Args)]
struct Serve {
    /// Which service to run.
    #[arg(long, value_enum, default_value = "all")]
    role: Role,
    /// Data directory (created if missing): the service's SQLite file and key files.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Listen address of the service (with --role all: of the meter server).
    /// Default: 127.0.0.1 with port 8700 (meter, all), 8701 (kms) or 8702 (recharge).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// With --role all: the KMS's listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8701")]
    kms_listen: String,
    /// With --role all: the recharging center's listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8702")]
    recharge_listen: String,
    /// With --role meter: the KMS's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8701")]
    kms: String,
    /// With --role meter: the recharging center's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8702")]
    recharge: String,
    /// With --role kms (required): the recharging center's public key file, SEC1 hex
    /// (the RC writes it as recharge-public.key in its data directory).
    #[arg(long, value_name = "FILE")]
    recharge_public_key: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(s) => runtime.block_on(serve(s)),
        Command::Demo(d) => runtime.block_on(openpsd_backoffice::demo::run(
            openpsd_backoffice::demo::DemoOptions {
                data: d.data.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("openpsd-demo-{}", std::process::id()))
                }),
                listen: [d.meter_listen, d.kms_listen, d.recharge_listen],
                card_listen: d.card_listen,
                refill: d.refill,
                indicia: d.indicia,
                exit: d.exit,
                web: d.web.map(|listen| openpsd_backoffice::web::WebOptions {
                    listen,
                    root: d.web_root,
                    pkg: d.wasm_pkg,
                }),
            },
        )),
    }
}

async fn serve(s: Serve) -> Result<()> {
    let default_port = match s.role {
        Role::Meter | Role::All => 8700,
        Role::Kms => 8701,
        Role::Recharge => 8702,
    };
    let listen = s
        .listen
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    let services: Vec<(&str, Service)> = match s.role {
        Role::Kms => {
            let file = s.recharge_public_key.as_ref().context(
                "--role kms needs --recharge-public-key FILE (the recharging center's recharge-public.key)",
            )?;
            let key = kms::read_public_key(file)?;
            vec![("kms", server::start_kms(&s.data, &listen, key).await?)]
        }
        Role::Recharge => vec![("recharge", server::start_recharge(&s.data, &listen).await?)],
        Role::Meter => vec![(
            "meter",
            server::start_meter(&s.data, &listen, &s.kms, &s.recharge).await?,
        )],
        Role::All => {
            let h =
                server::spawn_all_on(&s.data, &listen, &s.kms_listen, &s.recharge_listen).await?;
            tracing::info!(
                "recharging center public key: {}",
                recharge::Recharge::public_key_path(&s.data.join("recharge")).display()
            );
            vec![("recharge", h.recharge), ("kms", h.kms), ("meter", h.meter)]
        }
    };
    for (name, svc) in &services {
        println!("{name} listening on {}", svc.url);
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    for (_, svc) in services {
        svc.stop().await;
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
