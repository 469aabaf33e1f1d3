//! `backoffice-demo`: the demo (the README's main job). The three back-office services, a
//! PSD in the card simulator, a customer deposit, a refill through the meter server and
//! indicia; then it keeps serving the card (over TCP, for `openpsd`) and the back office
//! until Ctrl-C. With `--web ADDR` also the web demo (browser postage client, wasm package,
//! the meter server's API and the personalization room for browser PSDs).
//!
//! `backoffice demo ARGS` runs this program with the same arguments.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "backoffice-demo",
    version,
    about = "openpsd demo: the three back-office services, a PSD in the card simulator refilled through the meter server, indicia; then serves the card and the back office until Ctrl-C"
)]
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
    /// Post office listen address (the page's "verify a label" asks it).
    #[arg(long, default_value = "127.0.0.1:8703")]
    post_listen: String,
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
    /// 127.0.0.1:8080. Loopback only: it is the personalization room.
    #[arg(long, value_name = "ADDR")]
    web: Option<String>,
    /// The web demo's page directory.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web-demo"))]
    web_root: PathBuf,
    /// The wasm package built for the web target (served under /pkg/).
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wasm-pkg/web"))]
    wasm_pkg: PathBuf,
}

fn main() -> Result<()> {
    let d = Demo::parse();
    let runtime = openpsd_service_kit::server::runtime()?;
    runtime.block_on(openpsd_demo::demo::run(openpsd_demo::demo::DemoOptions {
        data: d.data.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("openpsd-demo-{}", std::process::id()))
        }),
        listen: [d.meter_listen, d.kms_listen, d.recharge_listen],
        card_listen: d.card_listen,
        post_listen: d.post_listen,
        refill: d.refill,
        indicia: d.indicia,
        exit: d.exit,
        web: d.web.map(|listen| openpsd_demo::web::WebOptions {
            listen,
            root: d.web_root,
            pkg: d.wasm_pkg,
            post: None,
            datacenter: None,
        }),
    }))
}
