//! The demo: one PSD on the simulator's file store, driven through APDUs the way a host
//! and the back office would drive it (seed 000's refill, the indicium flow). The key
//! management system is a stand-in here — it keeps K1 in a file beside the card's state —
//! until the back office exists.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use card_sim::file_store::FileStore;
use card_sim::os_platform::OsPlatform;
use openpsd_core::crypto::{IndiciumKey, MacKey};
use openpsd_core::platform::Platform;
use openpsd_core::psd::audit::AuditData;
use openpsd_core::psd::device::{DeviceInfo, LicenseSlot, Personalization};
use openpsd_core::psd::indicium::{self, IndiciumRequest};
use openpsd_core::psd::refill::RefillCombination;
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::{host, psd_card};
use openpsd_core::types::*;
use openpsd_core::Card;

type SimCard = Card<FileStore, OsPlatform>;

const SET: RegisterSetIndex = RegisterSetIndex(0);

/// Runs the demo.
pub fn run(state: Option<PathBuf>, refill: &str, indicia: u32) -> Result<()> {
    let amount = parse_amount(refill)?;
    let dir = state.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("openpsd-demo-{}", std::process::id()))
    });
    let card_dir = dir.join("card");
    let k1_file = dir.join("kms-k1.hex");
    let fresh = !card_dir.join("state.log").exists();
    let store = if fresh {
        FileStore::create(&card_dir)
    } else {
        FileStore::open(&card_dir)
    }
    .map_err(|e| anyhow!("{e}"))
    .with_context(|| format!("card state in {}", card_dir.display()))?;
    let mut card = psd_card(store, OsPlatform).map_err(|e| anyhow!("loading the card: {e}"))?;
    println!("card state: {}", card_dir.display());

    send(&mut card, "SELECT PSD", &host::select())?;
    let info = DeviceInfo::decode(&send(&mut card, "GET DATA", &host::get_data())?)
        .map_err(|_| anyhow!("GET DATA response malformed"))?;
    let (info, k1) = match info {
        Some(info) => (info, read_k1(&k1_file)?),
        None => personalize(&mut card, &k1_file)?,
    };
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
    OsPlatform.fill_random(&mut nonce);
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
    OsPlatform.fill_random(&mut combination_id);
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

    let today = OsPlatform
        .today()
        .ok_or_else(|| anyhow!("system clock is before 2000"))?;
    let pieces = [
        (85, b"20095" as &[u8], 1),
        (160, b"80331", 2),
        (270, b"50667", 3),
    ];
    for n in 0..indicia {
        let (postage, dest, rate) = pieces[n as usize % pieces.len()];
        let mut txn = [0u8; 8];
        OsPlatform.fill_random(&mut txn);
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

fn personalize(card: &mut SimCard, k1_file: &Path) -> Result<(DeviceInfo, MacKey)> {
    let mut k1 = [0u8; 16];
    OsPlatform.fill_random(&mut k1);
    let mut serial = [0u8; 4];
    OsPlatform.fill_random(&mut serial);
    let mut vendor = [0u8; 32];
    let vendor = loop {
        OsPlatform.fill_random(&mut vendor);
        if let Some(k) = IndiciumKey::from_bytes(&vendor) {
            break k.public_key();
        }
    };
    let mut device = *b"DEMO0000";
    device[4..].copy_from_slice(&serial);
    let p = Personalization {
        device: DeviceId(device),
        k1,
        vendor_public_key: vendor,
        max_postage: Amount(10_000),
        max_dr: Amount(1_000_000),
        licenses: vec![LicenseSlot {
            license: LicenseId(4711),
            origin: PostalCode::new(b"10115").ok_or_else(|| anyhow!("bad code"))?,
        }],
    };
    send(card, "PERSONALIZE", &host::personalize(&p))?;
    // The demo KMS's copy of K1: a separate file, never part of the card's state.
    write_private(k1_file, &hex::encode(k1))?;
    let info = DeviceInfo::decode(&send(card, "GET DATA", &host::get_data())?)
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("card not personalized after PERSONALIZE"))?;
    println!(
        "personalized a new PSD (K1 for the demo KMS in {})",
        k1_file.display()
    );
    Ok((info, MacKey::new(k1)))
}

fn read_k1(path: &Path) -> Result<MacKey> {
    let text =
        fs::read_to_string(path).with_context(|| format!("demo KMS key {}", path.display()))?;
    let bytes: [u8; 16] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{} does not hold a 16-byte hex key", path.display()))?;
    Ok(MacKey::new(bytes))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn read_registers(card: &mut SimCard) -> Result<Registers> {
    Registers::decode(&send(card, "READ REGISTERS", &host::read_registers(SET))?)
        .map_err(|_| anyhow!("READ REGISTERS response malformed"))
}

fn print_registers(what: &str, r: &Registers) {
    println!(
        "{what}: license {} origin {} AR {} DR {} control sum {} pieces {} refills {}",
        r.license, r.origin, r.ar, r.dr, r.control_sum, r.pieces.0, r.refills.0
    );
}

/// Sends one APDU, logs the exchange, and returns the data of a `9000` response.
fn send(card: &mut SimCard, what: &str, apdu: &[u8]) -> Result<Vec<u8>> {
    let resp = card.transmit(apdu);
    tracing::debug!(command = what, apdu = %hex::encode_upper(apdu), response = %hex::encode_upper(&resp));
    host::data(&resp).map(<[u8]>::to_vec).map_err(|s| {
        anyhow!(
            "{what}: card answered {:04X} ({})",
            host::sw(&resp),
            s.describe()
        )
    })
}

/// Parses an amount in currency units ("25", "25.5", "25.00") into minor units.
fn parse_amount(text: &str) -> Result<Amount> {
    let (units, cents) = match text.split_once('.') {
        Some((u, c)) if !c.is_empty() && c.len() <= 2 => (u, format!("{c:0<2}")),
        None => (text, "00".to_string()),
        _ => bail!("amount {text:?}: use units with at most two decimals, e.g. 25.00"),
    };
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(units) || !ok(&cents) {
        bail!("amount {text:?}: use units with at most two decimals, e.g. 25.00");
    }
    let minor = units
        .parse::<u64>()
        .ok()
        .and_then(|u| u.checked_mul(100))
        .and_then(|u| u.checked_add(cents.parse().ok()?));
    match minor {
        Some(m) if m > 0 => Ok(Amount(m)),
        _ => bail!("amount {text:?} out of range"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_amount;
    use openpsd_core::types::Amount;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("25.00").unwrap(), Amount(2500));
        assert_eq!(parse_amount("25.5").unwrap(), Amount(2550));
        assert_eq!(parse_amount("7").unwrap(), Amount(700));
        for bad in ["", "0", "1.234", "-1", "1,00", ".5", "x"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }
}
