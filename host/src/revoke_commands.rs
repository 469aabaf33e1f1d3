//! `openpsd cert revoke` (seed 004, Fig. 6): the PSD signs a revocation request for a key
//! slot, the meter passes it to the back office's CA (which revokes the certificate at once
//! in its CRL and OCSP and answers a signed order), the PSD applies the order (REVOKE KEY:
//! the key retired and its scalar erased, the Revocation fee paid from DR or owed until the
//! next refill), and the PSD's confirmation is recorded at the CA.
//!
//! Every step can be run again: the CA answers the same order for the same certificate and
//! the PSD the same confirmation for the same order, so an interrupted run is finished by
//! running it again.

use anyhow::{anyhow, Context, Result};
use openpsd_core::psd::certmeter::revoke::{Outcome, Reason};
use openpsd_core::types::RegisterSetIndex;
use openpsd_host::CardSpec;
use serde_json::json;

use crate::cert_commands::{explain, regs_json};
use crate::psd_commands::open_psd;

/// A reason by its RFC 5280 name.
pub fn parse_reason(s: &str) -> Result<Reason, String> {
    Reason::from_name(s)
        .ok_or_else(|| format!("'{s}': one of {}", Reason::ALL.map(Reason::name).join(", ")))
}

/// `openpsd cert revoke --slot N [--reason R] [--set S]`.
pub fn cert_revoke(
    spec: Option<CardSpec>,
    meter: &crate::account_commands::MeterArgs,
    slot: u8,
    reason: Reason,
    set: u8,
    json_out: bool,
) -> Result<()> {
    let client = crate::account_commands::meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    let device = info.device.to_string();
    let say = |line: &str| {
        if !json_out {
            eprintln!("{line}");
        }
    };
    // Orders the CA forced on the device first: they carry lower counters than the one
    // asked for now, and the PSD applies rising counters only.
    let forced = client
        .apply_revocations(&mut psd, info.device, RegisterSetIndex(set), &mut |l| {
            say(l)
        })
        .context("pending revocation orders")?;
    if let Some(done) = forced.iter().find(|a| a.slot == slot && a.result.is_ok()) {
        if json_out {
            println!(
                "{}",
                json!({"slot": slot, "serial": done.serial, "counter": done.counter,
                       "reason": done.reason, "forced": true})
            );
        } else {
            println!(
                "slot {slot} was revoked by the CA already (certificate {}, order {}): applied",
                done.serial, done.counter
            );
        }
        return Ok(());
    }
    say("1/4 REVOCATION REQUEST: the PSD signs the request with its device key");
    let mut challenge = [0u8; 16];
    getrandom::fill(&mut challenge).map_err(|e| anyhow!("no randomness: {e}"))?;
    let request = psd
        .revocation_request(slot, reason, &challenge)
        .map_err(|e| explain(e, "signing the revocation request"))?;
    say("2/4 the CA checks it, revokes the certificate (CRL, OCSP) and signs the order");
    let answer = client
        .request_revocation(&device, &request)
        .context("the revocation request")?;
    let order = hex::decode(&answer.order)
        .map_err(|_| anyhow!("the meter answered an order that is not hex"))?;
    say("3/4 REVOKE KEY: the PSD retires the key, erases it and pays (or owes) the fee");
    let (confirmation, c) = psd
        .revoke_key(RegisterSetIndex(set), &order)
        .map_err(|e| explain(e, "applying the revocation order"))?;
    let regs = psd
        .registers(RegisterSetIndex(c.set))
        .map_err(|e| explain(e, "reading the registers"))?;
    let due = psd
        .certmeter_info()
        .map_err(|e| explain(e, "reading the certificate meter"))?
        .fees_due;
    say("4/4 the confirmation is recorded at the CA");
    let record = client
        .confirm_revocation(&device, &confirmation)
        .context("recording the confirmation")?;
    let outcome = match c.outcome {
        Outcome::Paid => "paid",
        Outcome::Due => "due",
    };
    let check = "openssl verify -crl_check -CRLfile crl.der -CAfile ca.pem CERT.pem   \
         (crl.der from the CA's public URL /v1/ca/crl.der; ca.pem and the certificate as \
         `openpsd cert request` wrote them)";
    if json_out {
        println!(
            "{}",
            json!({
                "slot": c.slot, "serial": answer.certificate.serial, "counter": c.counter,
                "reason": reason.name(), "outcome": outcome, "fee": c.fee.0, "set": c.set,
                "fees_due": due.0, "registers": regs_json(&regs),
                "confirmed_at": record.confirmed_at, "openssl": check,
            })
        );
        return Ok(());
    }
    println!(
        "certificate {} (slot {}) revoked: {}, order {}",
        answer.certificate.serial,
        c.slot,
        reason.name(),
        c.counter
    );
    println!(
        "fee {} {outcome} (set {}); AR {} DR {}; fees due {}",
        c.fee, c.set, regs.ar, regs.dr, due
    );
    if c.outcome == Outcome::Due {
        println!("paid services wait until the next refill settles the fees due");
    }
    println!("check it: {check}");
    Ok(())
}
