//! `card-sim`: hosts openpsd cards as processes with persistent memory.
//!
//! Today it runs the end-to-end demo (`card-sim demo`); the PC/SC (vpcd) and TCP
//! transports and the APDU script runner are the card simulator issue's work and are not
//! built yet (see README).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod demo;

/// openpsd card simulator.
#[derive(Parser, Debug)]
#[command(name = "card-sim", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Personalize a PSD (or re-open it), refill it through an audit and a MACed refill
    /// message, issue indicia, and print each decoded indicium and the registers.
    Demo {
        /// Directory holding the card's state and the demo KMS's key file. Re-running with
        /// the same directory continues with the same card. Default: a new directory
        /// under the system's temporary directory.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Amount to refill, in currency units (e.g. 25.00).
        #[arg(long, default_value = "25.00")]
        refill: String,
        /// Number of indicia to issue.
        #[arg(long, default_value_t = 3)]
        indicia: u32,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo {
            state,
            refill,
            indicia,
        } => demo::run(state, &refill, indicia),
    }
}
