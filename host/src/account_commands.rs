//! `openpsd signup`, `login`, `logout`, `whoami`: the mailer's account at the meter server,
//! and the one place the refill and inspection commands get their meter client from
//! (URL, CA and credential: flags, then environment, then the saved session).

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use openpsd_host::refill::MeterClient;
use openpsd_host::session::Session;
use openpsd_protocol::Credentials;
use serde_json::json;

/// Where the meter server is and how to trust it.
#[derive(clap::Args, Debug, Clone)]
pub struct MeterArgs {
    /// The meter server (default: the logged-in session's, else https://127.0.0.1:8700).
    #[arg(long, env = "OPENPSD_METER")]
    pub meter: Option<String>,
    /// The CA certificate (PEM) the meter's certificate chains to, e.g. the back office's
    /// pki/ca.crt (default: the session's, else the system's roots).
    #[arg(long, env = "OPENPSD_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// Sign-up and log-in: who, and how the password is given.
#[derive(clap::Args, Debug, Clone)]
pub struct LoginArgs {
    #[command(flatten)]
    pub meter: MeterArgs,
    /// The username.
    #[arg(long)]
    pub username: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

const DEFAULT_METER: &str = "https://127.0.0.1:8700";

/// A meter client with the credential in force: `OPENPSD_API_KEY`, else the saved
/// session's token (refused once expired), else none (the meter then answers 401).
pub fn meter_client(args: &MeterArgs) -> Result<MeterClient> {
    let session = Session::load()?;
    let meter = args
        .meter
        .clone()
        .or_else(|| session.as_ref().map(|s| s.meter.clone()))
        .unwrap_or_else(|| DEFAULT_METER.to_owned());
    let ca = args
        .ca
        .clone()
        .or_else(|| session.as_ref().and_then(|s| s.ca.clone()));
    let token = match std::env::var("OPENPSD_API_KEY") {
        Ok(key) if !key.is_empty() => Some(key),
        _ => match &session {
            Some(s) if s.meter.trim_end_matches('/') == meter.trim_end_matches('/') => {
                if s.expires_at <= unix_now() {
                    bail!("your session with {meter} expired: run `openpsd login` again");
                }
                Some(s.token.clone())
            }
            _ => None,
        },
    };
    if token.is_none() {
        bail!(
            "not logged in to {meter}: run `openpsd login --meter {meter} --username NAME` \
             (or set OPENPSD_API_KEY)"
        );
    }
    Ok(MeterClient::new(&meter, ca.as_deref(), token.as_deref())?)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn credentials(args: &LoginArgs) -> Result<Credentials> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("password for {}: ", args.username))
            .context("reading the password")?
    };
    Ok(Credentials {
        username: args.username.clone(),
        password,
    })
}

fn anonymous(args: &MeterArgs) -> Result<(String, MeterClient)> {
    let meter = args
        .meter
        .clone()
        .unwrap_or_else(|| DEFAULT_METER.to_owned());
    let client = MeterClient::new(&meter, args.ca.as_deref(), None)?;
    Ok((meter, client))
}

/// `openpsd signup`: opens an account, then logs in.
pub fn sign_up(args: &LoginArgs, json_out: bool) -> Result<()> {
    let (_, client) = anonymous(&args.meter)?;
    let creds = credentials(args)?;
    let c = client.sign_up(&creds).context("signing up")?;
    if !json_out {
        println!("signed up as {} (account {})", c.username, c.account_id);
    }
    log_in_with(args, &creds, json_out)
}

/// `openpsd login`: a session token, saved 0600.
pub fn log_in(args: &LoginArgs, json_out: bool) -> Result<()> {
    let creds = credentials(args)?;
    log_in_with(args, &creds, json_out)
}

fn log_in_with(args: &LoginArgs, creds: &Credentials, json_out: bool) -> Result<()> {
    let (meter, client) = anonymous(&args.meter)?;
    let s = client.log_in(creds).context("logging in")?;
    let session = Session {
        meter,
        ca: args
            .meter
            .ca
            .as_ref()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone())),
        token: s.token,
        expires_at: s.expires_at,
        username: s.customer.username,
        account_id: s.customer.account_id,
    };
    let path = session.save()?;
    if json_out {
        println!(
            "{}",
            json!({"username": session.username, "account_id": session.account_id,
                   "expires_at": session.expires_at, "session_file": path})
        );
    } else {
        println!(
            "logged in as {} (account {}); session kept in {}",
            session.username,
            session.account_id,
            path.display()
        );
    }
    Ok(())
}

/// `openpsd logout`: ends the session at the meter and forgets it here.
pub fn log_out(json_out: bool) -> Result<()> {
    if let Some(s) = Session::load()? {
        let client = MeterClient::new(&s.meter, s.ca.as_deref(), Some(&s.token))?;
        client.log_out().context("logging out")?;
    }
    Session::remove()?;
    if json_out {
        println!("{}", json!({"logged_out": true}));
    } else {
        println!("logged out");
    }
    Ok(())
}

/// `openpsd whoami`: the customer and their deposit.
pub fn who_am_i(args: &MeterArgs, json_out: bool) -> Result<()> {
    let me = meter_client(args)?.me().context("asking the meter")?;
    if json_out {
        println!("{}", serde_json::to_string(&me)?);
    } else {
        let a = &me.account;
        println!(
            "{} (account {}): available {}, held {}, debited {}",
            me.customer.username,
            a.account_id,
            openpsd_core::types::Amount(a.available),
            openpsd_core::types::Amount(a.held),
            openpsd_core::types::Amount(a.debited)
        );
    }
    Ok(())
}
