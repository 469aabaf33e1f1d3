//! The demo (the README's main job): the three back-office services, a PSD in the card
//! simulator, a customer account with a deposit, and a mailer's host that refills the PSD
//! through the meter server (seed 000, Fig. 4) and frankes mail with it. Afterwards the card
//! stays served over card-sim's TCP transport and the back office keeps running, so the
//! `openpsd` CLI can carry on with the same card.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize;
use card_sim::sim::{self, FileCard};
use openpsd_core::platform::Platform;
use openpsd_core::psd::indicium::IndiciumRequest;
use openpsd_core::types::*;
use openpsd_host::refill::{MeterClient, RefillRequest};
use openpsd_host::session::Session;
use openpsd_host::PsdClient;
use openpsd_protocol::Credentials;
use openpsd_service_kit::tls::{self, Role};
use serde_json::{json, Value};

use openpsd_backoffice::server;

/// What the demo is told.
pub struct DemoOptions {
    /// Where the services' databases and the card live (re-used if present).
    pub data: PathBuf,
    /// Meter server, KMS and RC listen addresses.
    pub listen: [String; 3],
    /// Where the card is served over TCP afterwards.
    pub card_listen: String,
    /// The post office's listen address.
    pub post_listen: String,
    /// Refill amount.
    pub refill: Amount,
    /// Indicia to issue.
    pub indicia: u32,
    /// Stop after the scripted part instead of serving on.
    pub exit: bool,
    /// Also serve the web demo (the browser postage client) on this listener.
    pub web: Option<crate::web::WebOptions>,
}

/// The demo's customer (the mailer) and password: the demo is local to this machine, and
/// the password is printed so the CLI can log in as the same customer.
pub const CUSTOMER: &str = "demo";
/// The demo customer's password.
pub const PASSWORD: &str = "demo password";

/// Runs the demo.
pub async fn run(o: DemoOptions) -> Result<()> {
    std::fs::create_dir_all(&o.data).with_context(|| format!("creating {}", o.data.display()))?;
    let pki = server::local_pki(&o.data)?;
    let addrs = [o.listen[0].as_str(), &o.listen[1], &o.listen[2]];
    let h = server::spawn_all_on(&o.data, &pki, addrs, server::DEFAULT_RATE).await?;
    println!(
        "back office: meter {}  KMS {}  recharging center {}",
        h.meter.url, h.kms.url, h.recharge.url
    );
    // The virtual meter (seed 001): the data center with its secure box, its box's key
    // registered at the KMS by the operator (the same again on a rerun).
    let (datacenter, dc_box) = server::start_datacenter(
        &openpsd_datacenter::Config::new(
            o.data.join("datacenter"),
            [&h.vendor.url, &h.kms.url, &h.recharge.url],
            pki.clone(),
        ),
        "127.0.0.1:0",
        server::DEFAULT_RATE,
    )
    .await?;
    let post_office = server::start_post_with(
        &o.data.join("post"),
        None,
        &o.post_listen,
        [&h.kms.url, &h.meter.url, &h.pa.url],
        Some(&datacenter.url),
        &pki,
        server::DEFAULT_RATE,
    )
    .await?;
    println!("post office {}", post_office.url);
    let web = match &o.web {
        Some(w) => {
            let w = crate::web::WebOptions {
                post: Some(post_office.url.clone()),
                datacenter: Some(datacenter.url.clone()),
                ..w.clone()
            };
            let svc = crate::web::start_in(&w, &h, Some(&o.data)).await?;
            println!("web listening on {}", svc.url);
            Some(svc)
        }
        None => None,
    };
    // The operator (issuer and payments desk) calls the KMS and the RC with its certificate.
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls::client_config(&pki, Some(Role::Operator))?)
        .build()?;

    post(
        &http,
        &format!("{}/v1/vbox/boxes", h.kms.url),
        &json!({"box_id": openpsd_service_kit::codec::device_hex(&dc_box.box_id),
                "txn_key": hex::encode(dc_box.txn_key), "depth": dc_box.depth}),
    )
    .await?;
    println!(
        "data center (virtual meter) {}: box {} registered at the KMS",
        datacenter.url,
        openpsd_service_kit::codec::device_hex(&dc_box.box_id)
    );

    // The certificate meter (seed 004): the vendor publishes a rate table and vouches for
    // the CA's key (the same again on a rerun); the mailer's host loads both at its next
    // refill or inspection (docs/certmeter.md).
    post(
        &http,
        &format!("{}/v1/rates", h.vendor.url),
        &json!({"version": 1, "effective": "2000-01-01",
                "fees": {"postmark": 10, "certificate": 500}}),
    )
    .await?;
    let ca_key = std::fs::read_to_string(o.data.join("ca").join(openpsd_ca::PUBLIC_KEY_FILE))
        .context("the CA's public key")?;
    post(
        &http,
        &format!("{}/v1/anchors", h.vendor.url),
        &json!({"kind": "ca", "public_key": ca_key.trim()}),
    )
    .await?;
    println!(
        "certificate authority {} (CRL and OCSP at {}); rate table 1 published: postmark 0.10, certificate 5.00",
        h.ca.url, h.ca_public.url
    );
    println!("vendor {} (rate tables and trust anchors)", h.vendor.url);

    // The vendor's personalization station makes the PSD and registers it with the KMS.
    let card_dir = o.data.join("card");
    let secrets_path = o.data.join("card.secrets.json");
    retire_k1_card(&card_dir, &secrets_path)?;
    let fresh = !card_dir.join("state.log").exists();
    if fresh {
        let kms_public_key = personalize_kms_key(&o.data)?;
        let secrets_path = secrets_path.clone();
        let card_dir = card_dir.clone();
        // The back office's vendor and postal authority: the card accepts the licenses
        // they grant (`openpsd license request`, docs/licenses.md).
        let licensing = (h.vendor_public_key, h.postal_authority.clone());
        tokio::task::spawn_blocking(move || {
            make_card(&card_dir, &secrets_path, kms_public_key, licensing)
        })
        .await??;
    }
    let secrets: Value = serde_json::from_str(&std::fs::read_to_string(&secrets_path)?)?;
    post(&http, &format!("{}/v1/devices", h.kms.url), &secrets).await?;
    println!(
        "PSD {} registered with the KMS (its public key; the KMS holds no secret of it)",
        secrets["device_id"].as_str().unwrap_or("?")
    );

    // The mailer signs up at the meter (which opens the deposit account) and logs in; the
    // payments desk books the deposit (once per payment reference, so again on a rerun).
    let meter = h.meter.url.clone();
    let ca = pki.ca_cert();
    let (m, c) = (meter.clone(), ca.clone());
    let session = tokio::task::spawn_blocking(move || customer_session(&m, &c)).await??;
    let account = session.account_id.clone();
    let acct = post(
        &http,
        &format!("{}/v1/accounts/{account}/deposits", h.recharge.url),
        &json!({"amount": 10_000, "reference": format!("{account}-initial-deposit")}),
    )
    .await?;
    println!(
        "customer {CUSTOMER}, account {account}: available {}",
        Amount(acct["available"].as_u64().unwrap_or(0))
    );
    // The PSD at the meter server: owned by the customer's account, from zero (a fresh
    // PSD; registering again is the same registration).
    post(
        &http,
        &format!("{}/v1/devices", h.meter.url),
        &json!({"device_id": secrets["device_id"], "account_id": account}),
    )
    .await?;
    println!("PSD registered with the meter server, owned by account {account}");

    // The mailer's host: refill through the meter server, then frank.
    let (refill, indicia) = (o.refill, o.indicia);
    let dir = card_dir.clone();
    tokio::task::spawn_blocking(move || mailer(&dir, &session, refill, indicia)).await??;

    let acct: Value = http
        .get(format!("{}/v1/accounts/{account}", h.recharge.url))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "account {account}: available {}  held {}  debited {}  (deposited {})",
        Amount(acct["available"].as_u64().unwrap_or(0)),
        Amount(acct["held"].as_u64().unwrap_or(0)),
        Amount(acct["debited"].as_u64().unwrap_or(0)),
        Amount(acct["deposited"].as_u64().unwrap_or(0)),
    );
    if o.exit {
        if let Some(web) = web {
            web.stop().await;
        }
        post_office.stop().await;
        datacenter.stop().await;
        h.stop().await;
        return Ok(());
    }

    // Serve on: the card over TCP for `openpsd`, the back office over HTTP.
    let listener = TcpListener::bind(&o.card_listen)
        .with_context(|| format!("card listener {}", o.card_listen))?;
    let card_addr = listener.local_addr()?;
    std::thread::spawn(move || -> Result<()> {
        let mut card = sim::open_file_card(&card_dir, Clock::System).map_err(|e| anyhow!("{e}"))?;
        card_sim::transport::run_tcp_server(listener, &mut card)?;
        Ok(())
    });
    println!("\nthe card is served at tcp:{card_addr}; the back office keeps running. Try:");
    let cli = sibling_binary("openpsd");
    println!("  {cli} --card tcp:{card_addr} status");
    println!(
        "  {cli} login --meter {} --ca {} --username {CUSTOMER}   (password: {PASSWORD})",
        h.meter.url,
        pki.ca_cert().display()
    );
    println!("  {cli} --card tcp:{card_addr} refill --amount 10.00");
    println!("  {cli} --card tcp:{card_addr} indicium --postage 0.85 --to 20095");
    println!("  {cli} --card tcp:{card_addr} inspect    (loads the rate table and the CA's key)");
    println!("  {cli} --card tcp:{card_addr} cert request --purpose postmark");
    println!(
        "  {cli} --card tcp:{card_addr} postmark README.md --ca ca.pem   (then the openssl command it prints)"
    );
    println!(
        "  {} run --clock none tests/scripts/*.apdu   (the card simulator: the APDU scripts in process)",
        sibling_binary("card-sim")
    );
    println!(
        "  {} post scan --pki {} --post {} LABELS...   (the post office)",
        sibling_binary("backoffice"),
        pki.dir().display(),
        post_office.url
    );
    println!(
        "Ctrl-C stops the demo; run it again with --data {} to continue.",
        o.data.display()
    );
    if let Some(web) = &web {
        println!(
            "\nthe web demo (a browser PSD, refills, labels): open {}/ in a browser",
            web.url
        );
    }
    let _ = tokio::signal::ctrl_c().await;
    if let Some(web) = web {
        web.stop().await;
    }
    post_office.stop().await;
    datacenter.stop().await;
    h.stop().await;
    Ok(())
}

/// The KMS's public key, from the file the KMS writes in its data directory.
fn personalize_kms_key(data: &Path) -> Result<[u8; 65]> {
    card_sim::kms_key::read_public(&data.join("kms").join(card_sim::kms_key::PUBLIC_KEY_FILE))
}

/// A demo card personalized before the asymmetric refill suite (its secrets file has
/// `k1`) can no longer be refilled: it is moved aside, with its file, and a new card is
/// made. The old card keeps its value and can still print (`openpsd --card state:DIR`).
fn retire_k1_card(card_dir: &Path, secrets_path: &Path) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(secrets_path) else {
        return Ok(());
    };
    let secrets: Value = serde_json::from_str(&text)?;
    if secrets.get("k1").is_none() {
        return Ok(());
    }
    let aside = card_dir.with_file_name("card.k1-retired");
    anyhow::ensure!(
        !aside.exists(),
        "{} exists: move it away (an older demo card) and start again",
        aside.display()
    );
    std::fs::rename(card_dir, &aside)?;
    let key = card_dir.with_file_name("card.storage-key");
    if key.exists() {
        std::fs::rename(&key, aside.with_file_name("card.k1-retired.storage-key"))?;
    }
    std::fs::rename(
        secrets_path,
        aside.with_file_name("card.k1-retired.secrets.json"),
    )?;
    println!(
        "the demo card was personalized for the retired K1 refill suite (it answers 9A16 to \
         refills); moved to {} — a new card is made",
        aside.display()
    );
    Ok(())
}

fn make_card(
    card_dir: &Path,
    secrets_path: &Path,
    kms_public_key: [u8; 65],
    (vendor_public_key, postal_authority): ([u8; 65], openpsd_core::psd::device::PostalAuthority),
) -> Result<()> {
    let mut card = sim::create_file_card(card_dir, Clock::System).map_err(|e| anyhow!("{e}"))?;
    let slot = personalize::parse_license("4711:10115").map_err(|e| anyhow!(e))?;
    let mut req = crate::web::psd_request(slot.license.0, slot.origin, kms_public_key);
    req.vendor_public_key = Some(vendor_public_key);
    req.postal_authority = Some(postal_authority);
    let (info, secrets) = personalize::personalize(&mut card, &mut OsPlatform::default(), &req)?;
    personalize::write_secrets(secrets_path, &secrets)?;
    println!(
        "personalized PSD {} (key generated inside the card; key ID {})",
        info.device,
        hex::encode(info.key_id.0)
    );
    Ok(())
}

fn mailer(card_dir: &Path, session: &Session, amount: Amount, indicia: u32) -> Result<()> {
    let card: FileCard =
        sim::open_file_card(card_dir, Clock::System).map_err(|e| anyhow!("{e}"))?;
    let mut psd = PsdClient::new(Box::new(card));
    let info = psd
        .select()?
        .ok_or_else(|| anyhow!("the demo card is blank"))?;
    let set = RegisterSetIndex(0);
    let mut txn = [0u8; 8];
    OsPlatform::default().fill_random(&mut txn);
    let req = RefillRequest {
        client_txn_id: hex::encode(txn),
        account_id: Some(session.account_id.clone()),
        set,
        amount,
    };
    println!(
        "refill {amount} through the meter server (client transaction {}):",
        req.client_txn_id
    );
    let client = MeterClient::new(&session.meter, session.ca.as_deref(), Some(&session.token))?;
    let out = client.refill(&mut psd, info.device, &req, &mut |line| {
        println!("  {line}")
    })?;
    let r = out.registers;
    println!(
        "registers: AR {} DR {} control sum {} pieces {} refills {}",
        r.ar, r.dr, r.control_sum, r.pieces.0, r.refills.0
    );

    let today = OsPlatform::default()
        .today()
        .ok_or_else(|| anyhow!("system clock before 2000"))?;
    let pieces = [
        (85, b"20095" as &[u8], 1),
        (160, b"80331", 2),
        (270, b"50667", 3),
    ];
    for n in 0..indicia {
        let (postage, dest, rate) = pieces[n as usize % pieces.len()];
        let mut t = [0u8; 8];
        OsPlatform::default().fill_random(&mut t);
        let req = IndiciumRequest {
            transaction: TransactionId(t),
            postage: Amount(postage),
            date: today,
            rate: RateCategory(rate),
            origin: r.origin,
            destination: PostalCode::new(dest).ok_or_else(|| anyhow!("postal code"))?,
        };
        let (bytes, d) = psd.issue_indicium(set, &req)?;
        println!(
            "indicium #{}: {} bytes, signature verified — device {} license {} postage {} {} {} -> {} | AR {} DR {}",
            d.pieces.0, bytes.len(), d.device, d.license, d.postage, d.date, d.origin, d.destination, d.ar, d.dr
        );
    }
    let r = psd.registers(set)?;
    if r.ar.checked_add(r.dr) != Some(r.control_sum) {
        bail!("registers inconsistent: {r:?}");
    }
    println!(
        "registers: AR {} DR {} control sum {} pieces {} refills {}",
        r.ar, r.dr, r.control_sum, r.pieces.0, r.refills.0
    );
    Ok(())
}

/// How to call the workspace's binary `name` built next to this one (`target/release/openpsd`
/// beside `target/release/backoffice-demo`): relative to the working directory when it lies
/// below it, so the printed commands are the ones to paste; never `cargo run`, which would
/// compile a debug build first.
fn sibling_binary(name: &str) -> String {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    else {
        return name.to_owned();
    };
    let path = dir.join(name);
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.clone());
    shown.display().to_string()
}

/// Signs the demo customer up (once) and logs in; the session is also saved where the
/// `openpsd` CLI looks when `OPENPSD_CONFIG_DIR` is DATA/openpsd (scripts/demo.sh sets it).
fn customer_session(meter: &str, ca: &Path) -> Result<Session> {
    let anon = MeterClient::new(meter, Some(ca), None)?;
    let creds = Credentials {
        username: CUSTOMER.into(),
        password: PASSWORD.into(),
    };
    match anon.sign_up(&creds) {
        Ok(_) => {}
        // Signed up on an earlier run.
        Err(openpsd_host::refill::RefillError::Meter { code, .. }) if code == "wrong_state" => {}
        Err(e) => return Err(e.into()),
    }
    let s = anon.log_in(&creds)?;
    Ok(Session {
        meter: meter.to_owned(),
        ca: Some(ca.to_path_buf()),
        token: s.token,
        expires_at: s.expires_at,
        username: s.customer.username,
        account_id: s.customer.account_id,
    })
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .await
        .with_context(|| format!("POST {url}: reply"))?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {value}");
    }
    Ok(value)
}
