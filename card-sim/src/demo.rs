//! The demo: one PSD on the simulator's file store, driven through APDUs the way a host
//! and the back office would drive it (seed 000's refill, the indicium flow). The key
//! management system is a stand-in here — it reads K1 from the personalization secrets
//! file beside the card's state — until the back office exists.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use card_sim::os_platform::{Clock, OsPlatform};
use card_sim::personalize::{self, read_secrets, send, write_secrets, Request};
use card_sim::sim::{create_file_card, open_file_card, FileCard};
use openpsd_core::crypto::MacKey;
use openpsd_core::platform::Platform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::host;
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::receipt::Receipt;
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::types::*;

const SET: RegisterSetIndex = RegisterSetIndex(0);

/// Runs the demo.
pub fn run(state: Option<PathBuf>, amount: Amount, indicia: u32) -> Result<()> {
    let dir = state.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("openpsd-demo-{}", std::process::id()))
    });
    let card_dir = dir.join("card");
    let secrets_file = dir.join("card.secrets.json");
    let mut platform = OsPlatform::new(Clock::System);
    let fresh = !card_dir.join("state.log").exists();
    let mut card = if fresh {
        create_file_card(&card_dir, Clock::System)
    } else {
        open_file_card(&card_dir, Clock::System)
    }
    .map_err(|e| anyhow!("{e}"))
    .with_context(|| format!("card state in {}", card_dir.display()))?;
    println!("card state: {}", card_dir.display());

    let info = if fresh {
        let req = Request {
            device: None,
            vendor_public_key: None,
            max_postage: Amount(10_000),
            max_dr: Amount(1_000_000),
            inspection_days: 28,
            licenses: vec![personalize::parse_license("4711:10115").map_err(|e| anyhow!(e))?],
        };
        let (info, secrets) = personalize::personalize(&mut card, &mut platform, &req)?;
        write_secrets(&secrets_file, &secrets)?;
        println!(
            "personalized a new PSD; the back office's secrets are in {}",
            secrets_file.display()
        );
        info
    } else {
        send(&mut card, "SELECT PSD", &host::select())?;
        DeviceInfo::decode(&send(&mut card, "GET DATA", &host::get_data())?)
            .ok()
            .flatten()
            .ok_or_else(|| anyhow!("the card in {} is not personalized", card_dir.display()))?
    };
    let k1: [u8; 16] = hex::decode(read_secrets(&secrets_file)?.k1)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| anyhow!("{}: k1 is not 16 hex bytes", secrets_file.display()))?;
    let k1 = MacKey::new(k1);
    println!(
        "device {}  key ID {}  public key {}",
        info.device,
        hex::encode(info.key_id.0),
        hex::encode(info.public_key)
    );
    print_registers("registers", &read_registers(&mut card)?);

    // Seed 000, Fig. 4: audit with a fresh nonce, verified under K1 (steps 210-240), a
    // refill combination bound to what the audit showed (265), MACed (275), verified and
    // credited by the PSD (290-305).
    let mut nonce = [0u8; 16];
    platform.fill_random(&mut nonce);
    let audit_msg = send(&mut card, "AUDIT", &host::audit(SET, &nonce))?;
    let audit =
        AuditData::open(&audit_msg, &k1).ok_or_else(|| anyhow!("audit MAC does not verify"))?;
    if audit.nonce != nonce {
        bail!("audit does not answer our nonce");
    }
    println!(
        "audit verified: AR {} DR {} control sum {} refills {}",
        audit.ar, audit.dr, audit.control_sum, audit.refills.0
    );
    let mut combination_id = [0u8; 8];
    platform.fill_random(&mut combination_id);
    let combination = RefillCombination {
        device: audit.device,
        license: audit.license,
        amount,
        control_sum: audit.control_sum,
        refills: audit.refills,
        combination_id,
    };
    let regs = Registers::decode(&send(
        &mut card,
        "REFILL",
        &host::refill(SET, &combination.seal(&k1)),
    )?)
    .map_err(|_| anyhow!("REFILL response malformed"))?;
    print_registers(&format!("refilled {amount}"), &regs);
    // The back office accepted the audit: its receipt renews the PSD's inspection, without
    // which a PSD personalized with inspection days refuses to frank (9A08).
    let today = platform
        .today()
        .ok_or_else(|| anyhow!("system clock is before 2000"))?;
    let receipt = Receipt {
        device: audit.device,
        nonce,
        accepted_on: today,
    }
    .seal(&k1);
    send(&mut card, "RECEIPT", &host::receipt(&receipt))?;
    println!("audit receipt accepted: inspection renewed on {today}");

    let pieces = [
        (85, b"20095" as &[u8], 1),
        (160, b"80331", 2),
        (270, b"50667", 3),
    ];
    for n in 0..indicia {
        let (postage, dest, rate) = pieces[n as usize % pieces.len()];
        let mut txn = [0u8; 8];
        platform.fill_random(&mut txn);
        let req = IndiciumRequest {
            transaction: TransactionId(txn),
            postage: Amount(postage),
            date: today,
            rate: RateCategory(rate),
            origin: regs.origin,
            destination: PostalCode::new(dest).ok_or_else(|| anyhow!("bad postal code"))?,
        };
        let ind = send(
            &mut card,
            "ISSUE INDICIUM",
            &host::issue_indicium(SET, &req),
        )?;
        let d = indicium::verify(&ind, &info.public_key).map_err(|e| anyhow!("{e}"))?;
        println!(
            "indicium #{}: {} bytes, signature verified — device {} license {} postage {} date {} {} -> {} rate {} | AR {} DR {}",
            d.pieces.0, ind.len(), d.device, d.license, d.postage, d.date, d.origin, d.destination, d.rate.0, d.ar, d.dr
        );
        println!("  {}", hex::encode(&ind));
    }
    print_registers("registers", &read_registers(&mut card)?);
    println!(
        "run again with --state {} to continue with this card",
        dir.display()
    );
    Ok(())
}

fn read_registers(card: &mut FileCard) -> Result<Registers> {
    Registers::decode(&send(card, "READ REGISTERS", &host::read_registers(SET))?)
        .map_err(|_| anyhow!("READ REGISTERS response malformed"))
}

fn print_registers(what: &str, r: &Registers) {
    println!(
        "{what}: license {} origin {} AR {} DR {} control sum {} pieces {} refills {}",
        r.license, r.origin, r.ar, r.dr, r.control_sum, r.pieces.0, r.refills.0
    );
}
