//! `openpsd license …`: the register sets of a PSD as licenses (seed 003). `list` shows the
//! slots, the pending request and the exported sets (and files in `--dir`); `export` parks
//! a set in a file and frees its slot (Fig. 5); `import` brings it back, once.
//!
//! Export is two-phase on the card, and this command keeps the file's side of it: the
//! blob is written to a temporary file, synced, renamed and the directory synced **before**
//! the card is told to commit. Killed at any point, running the same export again finishes
//! it: the card answers the same blob until it commits, and a commit asked twice answers
//! the same. The file *is* the money while the set is outside the PSD.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use openpsd_core::client::ClientError;
use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::{ExportState, LicenseInfo, SlotInfo};
use openpsd_core::types::*;
use openpsd_core::Status;
use openpsd_host::{CardSpec, PsdClient};
use serde_json::json;

use crate::psd_commands::open_psd;

/// The file name of an exported set: license, device and epoch, so two exports never
/// share a name.
pub fn blob_file_name(blob: &Blob) -> String {
    format!(
        "license-{}-{}-e{}.psdset",
        blob.set.license.0, blob.device, blob.epoch
    )
}

/// `openpsd license request`: Fig. 4 from the mailer's desk, each step shown.
#[allow(clippy::too_many_arguments)]
pub fn request(
    spec: Option<CardSpec>,
    meter: &crate::account_commands::MeterArgs,
    license: u32,
    origin: &str,
    txn: Option<String>,
    replace: bool,
    cert_dir: Option<&Path>,
    json_out: bool,
) -> Result<()> {
    use openpsd_core::psd::license::install::Install;
    use openpsd_core::psd::license::request::LicenseAsk;
    use openpsd_protocol::license::MeterLicenseOrder;

    let client = crate::account_commands::meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    let origin = PostalCode::new(origin.as_bytes())
        .ok_or_else(|| anyhow!("--origin: 1 to 10 of A-Z 0-9 space -"))?;
    let ask = LicenseAsk {
        license: LicenseId(license),
        origin,
    };
    let resumed = txn.is_some();
    let txn = match txn {
        Some(t) => t,
        None => {
            let mut t = [0u8; 8];
            getrandom::fill(&mut t).map_err(|e| anyhow!("random transaction ID: {e}"))?;
            hex::encode(t)
        }
    };
    progress(
        json_out,
        &format!("license order {txn} (if interrupted, run again with --txn {txn})"),
    );
    // A resumed order the meter granted already: straight to the install (which the PSD
    // may have done too). Otherwise the PSD's pending request, or a new one.
    let granted = if resumed {
        match client.license_order(&txn) {
            Ok(g) => Some(g),
            Err(openpsd_host::refill::RefillError::Meter { code, .. })
                if code == "unknown_license_order" =>
            {
                None
            }
            Err(e) => return Err(e).context("looking up the order"),
        }
    } else {
        None
    };
    let grant = match granted {
        Some(g) => {
            progress(
                json_out,
                "1-2/4 the meter server has this order's grant already",
            );
            g
        }
        None => {
            progress(
                json_out,
                "1/4 the PSD makes the license key and signs the request (proof of possession + device)",
            );
            let request = psd
                .license_request(&ask, replace && !resumed)
                .map_err(|e| explain(e, "license request"))?;
            progress(
                json_out,
                "2/4 the meter server passes it on: the manufacturer checks it, the postal authority grants, the manufacturer countersigns",
            );
            client
                .order_license(&MeterLicenseOrder {
                    client_txn_id: txn.clone(),
                    device_id: info.device.to_string(),
                    request: hex::encode(request.encode()),
                })
                .context("ordering the license")?
        }
    };
    let install_bytes =
        hex::decode(&grant.install).map_err(|_| anyhow!("the grant's install data is not hex"))?;
    let install = Install::decode(&install_bytes)
        .map_err(|_| anyhow!("the grant's install data does not decode"))?;
    progress(
        json_out,
        &format!(
            "3/4 granted: license {} at {}, valid {} to {}, certificate serial {}",
            grant.fields.license,
            grant.fields.origin,
            grant.fields.not_before,
            grant.fields.not_after,
            grant.fields.serial
        ),
    );
    let cert_path = match cert_dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            let p = d.join(format!(
                "license-{}-{}.pem",
                grant.fields.license, info.device
            ));
            write_durably(&p, grant.certificate.as_bytes())?;
            Some(p)
        }
        None => None,
    };
    progress(
        json_out,
        "4/4 the PSD checks both signatures and creates the register set",
    );
    let (slot, key_id) = match psd.license_install(&install) {
        Ok((slot, key_id, _)) => (slot.0, key_id),
        // Installed by an earlier run of this order: find it.
        Err(ClientError::Refused(_, _, Status::GrantAlreadyUsed)) => {
            let lic = psd.license_info()?;
            lic.slots
                .iter()
                .enumerate()
                .find_map(|(i, s)| match s {
                    SlotInfo::Set {
                        license, key_id, ..
                    } if license.0 == grant.fields.license => {
                        Some((u8::try_from(i).unwrap_or(u8::MAX), *key_id))
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    anyhow!("the PSD says this grant was used, but holds no set for its license")
                })?
        }
        Err(e) => return Err(explain(e, "installing the license")),
    };
    if json_out {
        println!(
            "{}",
            json!({"client_txn_id": txn, "slot": slot, "license": grant.fields.license,
                "origin": grant.fields.origin, "key_id": hex::encode(key_id.0),
                "not_before": grant.fields.not_before, "not_after": grant.fields.not_after,
                "serial": grant.fields.serial,
                "certificate": cert_path.map(|p| p.display().to_string())})
        );
    } else {
        println!(
            "license {} installed in slot {slot} (key {}); refill it with --set {slot}",
            grant.fields.license,
            hex::encode(key_id.0)
        );
    }
    Ok(())
}

/// `openpsd license list`.
pub fn list(spec: Option<CardSpec>, dir: Option<&Path>, json_out: bool) -> Result<()> {
    let (mut psd, info) = open_psd(spec)?;
    let lic = psd.license_info()?;
    let mut slots = Vec::new();
    for (i, s) in lic.slots.iter().enumerate() {
        if let SlotInfo::Set {
            license,
            key_id,
            not_after,
            frozen,
            ..
        } = s
        {
            let r = psd.registers(RegisterSetIndex(slot_byte(i)?))?;
            slots.push((i, *license, *key_id, *not_after, *frozen, r));
        }
    }
    let files = match dir {
        Some(d) => files_in(d, &lic)?,
        None => Vec::new(),
    };
    if json_out {
        let sets: Vec<_> = slots
            .iter()
            .map(|(i, l, k, na, frozen, r)| {
                json!({"slot": i, "license": l.0, "key_id": hex::encode(k.0),
                    "valid_until": na.map(|d| d.to_string()), "frozen": frozen,
                    "origin": r.origin.to_string(), "ar": r.ar.0, "dr": r.dr.0,
                    "control_sum": r.control_sum.0, "pieces": r.pieces.0})
            })
            .collect();
        let exports: Vec<_> = lic
            .exports
            .iter()
            .map(|e| {
                json!({"license": e.license.0, "epoch": e.epoch, "slot": e.slot,
                    "state": match e.state { ExportState::Preparing => "preparing",
                        ExportState::Outstanding => "outstanding",
                        ExportState::Retired => "retired" },
                    "control_sum": e.control_sum.0, "dr": e.dr.0,
                    "digest": hex::encode(e.digest)})
            })
            .collect();
        let files: Vec<_> = files
            .iter()
            .map(|(p, b, state)| {
                json!({"file": p.display().to_string(), "license": b.set.license.0,
                    "epoch": b.epoch, "dr": b.set.dr.0,
                    "usable": *state == Some(ExportState::Outstanding),
                    "retired": *state == Some(ExportState::Retired)})
            })
            .collect();
        println!(
            "{}",
            json!({"device_id": info.device.to_string(), "sets": sets, "exports": exports,
                "pending_request": lic.pending.map(|(c, l)| json!({"counter": c, "license": l.0})),
                "files": files})
        );
        return Ok(());
    }
    println!("device {}", info.device);
    for (i, l, k, na, frozen, r) in &slots {
        let valid = na.map_or("personalized".to_string(), |d| format!("valid until {d}"));
        println!(
            "slot {i}: license {l} origin {}  DR {}  AR {}  pieces {}  key {}  {valid}{}",
            r.origin,
            r.dr,
            r.ar,
            r.pieces.0,
            hex::encode(k.0),
            if *frozen {
                "  FROZEN (export prepared)"
            } else {
                ""
            }
        );
    }
    for (i, s) in lic.slots.iter().enumerate() {
        if *s == SlotInfo::Free {
            println!("slot {i}: free");
        }
    }
    if let Some((c, l)) = lic.pending {
        println!("license request {c} pending (license {l})");
    }
    for e in &lic.exports {
        println!(
            "exported: license {} epoch {} ({})  DR {}  control sum {}",
            e.license,
            e.epoch,
            match e.state {
                ExportState::Preparing => "preparing: run the export again to finish it",
                ExportState::Outstanding => "on disk",
                ExportState::Retired => {
                    "retired: never imported again; `license retire` books its refund, \
                     then forgets it"
                }
            },
            e.dr,
            e.control_sum
        );
    }
    for (p, b, state) in &files {
        println!(
            "file {}: license {} epoch {} DR {}  {}",
            p.display(),
            b.set.license,
            b.epoch,
            b.set.dr,
            match state {
                Some(ExportState::Outstanding) => "importable",
                Some(ExportState::Retired) => "retired: kept as evidence, it can never be used",
                _ => "spent or an old copy: it can never be used",
            }
        );
    }
    Ok(())
}

/// The exported-set files in `dir`, each with whether this PSD would take it back.
fn files_in(dir: &Path, lic: &LicenseInfo) -> Result<Vec<(PathBuf, Blob, Option<ExportState>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("psdset") {
            continue;
        }
        let bytes = fs::read(&path)?;
        let Ok(blob) = Blob::decode(&bytes) else {
            continue;
        };
        let digest = Blob::digest_of(&bytes);
        let state = lic
            .exports
            .iter()
            .find(|e| e.epoch == blob.epoch && e.digest == digest)
            .map(|e| e.state);
        out.push((path, blob, state));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn slot_byte(i: usize) -> Result<u8> {
    u8::try_from(i).map_err(|_| anyhow!("slot {i} out of range"))
}

/// Which set `export` means: `--set` or `--license`.
fn find_slot(psd: &mut PsdClient, set: Option<u8>, license: Option<u32>) -> Result<u8> {
    if let Some(s) = set {
        return Ok(s);
    }
    let license = license.ok_or_else(|| anyhow!("export: --set SLOT or --license N"))?;
    let lic = psd.license_info()?;
    lic.slots
        .iter()
        .position(|s| matches!(s, SlotInfo::Set { license: l, .. } if l.0 == license))
        .map(slot_byte)
        .transpose()?
        .ok_or_else(|| anyhow!("license {license} is not resident in this PSD"))
}

/// Writes `bytes` to `path` durably: a temporary file, synced, renamed, directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("psdset.tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// EXPORT SET prepare, the file written durably to `to`, commit: what `license export`
/// does (and `license retire`'s first step). Each step is shown after `step`. Idempotent:
/// a prepared export is finished with the same blob, a commit asked twice answers the same.
fn export_slot(
    psd: &mut PsdClient,
    slot: RegisterSetIndex,
    to: &Path,
    json_out: bool,
    step: &str,
) -> Result<(PathBuf, Vec<u8>, Blob, u64)> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    progress(
        json_out,
        &format!("{step}1/3 preparing: the PSD freezes the set and seals it"),
    );
    let bytes = psd
        .export_prepare(slot)
        .map_err(|e| explain(e, "preparing the export"))?;
    let blob = Blob::decode(&bytes).map_err(|_| anyhow!("the PSD's blob does not decode"))?;
    let path = to.join(blob_file_name(&blob));
    progress(
        json_out,
        &format!(
            "{step}2/3 writing {} (synced before the PSD lets go)",
            path.display()
        ),
    );
    write_durably(&path, &bytes)?;
    pause_point("export-written");
    progress(
        json_out,
        &format!("{step}3/3 committing: the PSD frees the slot"),
    );
    let epoch = psd
        .export_commit(slot, &Blob::digest_of(&bytes))
        .map_err(|e| explain(e, "committing the export"))?;
    Ok((path, bytes, blob, epoch))
}

/// `openpsd license export`.
pub fn export(
    spec: Option<CardSpec>,
    set: Option<u8>,
    license: Option<u32>,
    to: &Path,
    cancel: bool,
    json_out: bool,
) -> Result<()> {
    let (mut psd, _) = open_psd(spec)?;
    let slot = RegisterSetIndex(find_slot(&mut psd, set, license)?);
    if cancel {
        psd.export_cancel(slot)
            .map_err(|e| explain(e, "cancelling the export"))?;
        if json_out {
            println!("{}", json!({"cancelled": true, "slot": slot.0}));
        } else {
            println!("export of slot {} cancelled: the set is live again", slot.0);
        }
        return Ok(());
    }
    let (path, bytes, blob, epoch) = export_slot(&mut psd, slot, to, json_out, "")?;
    if json_out {
        println!(
            "{}",
            json!({"file": path.display().to_string(), "license": blob.set.license.0,
                "epoch": epoch, "dr": blob.set.dr.0, "control_sum": blob.set.control_sum.0,
                "bytes": bytes.len()})
        );
    } else {
        println!(
            "license {} exported to {} ({} bytes, DR {}). This file is the money: keep it; \
             only this PSD can import it, once.",
            blob.set.license,
            path.display(),
            bytes.len(),
            blob.set.dr
        );
    }
    Ok(())
}

/// `openpsd license import`.
pub fn import(spec: Option<CardSpec>, file: &Path, json_out: bool) -> Result<()> {
    let bytes = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let blob = Blob::decode(&bytes)
        .map_err(|_| anyhow!("{} is not an exported register set", file.display()))?;
    let (mut psd, info) = open_psd(spec)?;
    if blob.device != info.device {
        bail!(
            "{} belongs to device {}, not {}: only the PSD that exported a set can import it",
            file.display(),
            blob.device,
            info.device
        );
    }
    let slot = psd
        .import_set(&bytes)
        .map_err(|e| explain(e, "importing"))?;
    if json_out {
        println!(
            "{}",
            json!({"slot": slot.0, "license": blob.set.license.0, "epoch": blob.epoch,
                "dr": blob.set.dr.0})
        );
    } else {
        println!(
            "license {} is back in slot {} (DR {}). {} is spent now: it can never be imported again.",
            blob.set.license,
            slot.0,
            blob.set.dr,
            file.display()
        );
    }
    Ok(())
}

/// The exported file of `epoch` in `dir`, if it is there and is the one the PSD sealed
/// (same device, license, epoch and digest).
fn find_export_file(
    dir: &Path,
    device: DeviceId,
    license: LicenseId,
    epoch: u64,
    digest: &[u8],
) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("psdset") {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let Ok(blob) = Blob::decode(&bytes) else {
            continue;
        };
        if blob.device == device
            && blob.set.license == license
            && blob.epoch == epoch
            && Blob::digest_of(&bytes)[..] == *digest
        {
            found.push((path, bytes));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found.into_iter().next())
}

/// `openpsd license retire`: a set given up for good, its DR refunded (a lost exported
/// file written off, or a replaced PSD's set withdrawn). Export if resident, RETIRE SET,
/// the receipt to the meter, forget; every step is idempotent, so running it again after
/// an interruption finishes it.
pub fn retire(
    spec: Option<CardSpec>,
    meter: &crate::account_commands::MeterArgs,
    license: u32,
    dir: &Path,
    json_out: bool,
) -> Result<()> {
    use openpsd_protocol::license::RetirementRequest;

    // The meter's credential first: nothing is given up on the card without it.
    let client = crate::account_commands::meter_client(meter)?;
    let (mut psd, info) = open_psd(spec)?;
    let lic = psd.license_info()?;
    let entry = |state: ExportState| {
        lic.exports
            .iter()
            .find(|e| e.license.0 == license && e.state == state)
            .cloned()
    };
    let resident = lic
        .slots
        .iter()
        .position(|s| matches!(s, SlotInfo::Set { license: l, .. } if l.0 == license));
    // An entry retired by an earlier run comes first (its refund may not be booked yet),
    // then an outstanding export, then the resident set (exported now).
    let mut file = None;
    let epoch = if let Some(e) = entry(ExportState::Retired) {
        progress(
            json_out,
            &format!(
                "1/4 license {license} was retired already (epoch {}): finishing it",
                e.epoch
            ),
        );
        e.epoch
    } else if let Some(e) = entry(ExportState::Outstanding) {
        progress(
            json_out,
            &format!(
                "1/4 license {license} is exported already (epoch {}, DR {}): no export needed",
                e.epoch, e.dr
            ),
        );
        e.epoch
    } else if let Some(slot) = resident {
        let slot = RegisterSetIndex(slot_byte(slot)?);
        progress(
            json_out,
            &format!(
                "1/4 exporting license {license} from slot {} to {} (the file stays as the evidence)",
                slot.0,
                dir.display()
            ),
        );
        let (path, bytes, _, epoch) = export_slot(&mut psd, slot, dir, json_out, "    ")?;
        file = Some((path, bytes));
        epoch
    } else if entry(ExportState::Preparing).is_some() {
        bail!(
            "license {license}: an export of this set is being prepared: run `openpsd license \
             export --license {license}` again to finish it, or cancel it"
        );
    } else {
        bail!(
            "license {license} is neither resident nor exported in this PSD (a retirement \
             finished before leaves nothing on the card: see `openpsd license list`)"
        );
    };

    let receipt = psd
        .retire_set(epoch)
        .map_err(|e| explain(e, "retiring the set"))?;
    if receipt.device != info.device || receipt.epoch != epoch || receipt.license.0 != license {
        bail!("the PSD's receipt is not for epoch {epoch} of license {license}");
    }
    progress(
        json_out,
        &format!(
            "2/4 retired: the PSD gave up epoch {epoch} of license {license} (DR {}) and signed \
             a receipt; the file can never be imported again",
            receipt.dr
        ),
    );
    pause_point("retired");

    if file.is_none() {
        file = find_export_file(dir, info.device, receipt.license, epoch, &receipt.digest)?;
    }
    match &file {
        Some((path, _)) => progress(
            json_out,
            &format!(
                "3/4 the meter server books the receipt, with {} as the set's last registers",
                path.display()
            ),
        ),
        None => progress(
            json_out,
            &format!(
                "3/4 the meter server books the receipt; no file of epoch {epoch} in {}: it is \
                 written off (the receipt is the evidence)",
                dir.display()
            ),
        ),
    }
    let booked = client
        .retire_license(&RetirementRequest {
            device_id: info.device.to_string(),
            receipt: hex::encode(receipt.encode()),
            blob: file.as_ref().map(|(_, b)| hex::encode(b)),
        })
        .context(
            "booking the receipt at the meter (the set is retired on the card; run this \
             command again to retry: the receipt is the same)",
        )?;
    progress(
        json_out,
        &format!(
            "    refunded {} to account {}{}",
            Amount(booked.refunded),
            booked.account_id,
            match &booked.revoked_grant {
                Some(s) => format!("; the postal authority revoked grant {s}"),
                None => String::new(),
            }
        ),
    );

    // The card keeps the last entry of a PSD without a set or a postal authority (it could
    // never hold a set again): forget answers `6985` there, and the entry stays, retired
    // (harmless: it can never be imported, and booking it again is the same refund).
    let forgotten = match psd.forget_retired(epoch) {
        Ok(()) => {
            progress(
                json_out,
                "4/4 the PSD forgot the retired entry (its place in the export table is free)",
            );
            true
        }
        Err(ClientError::Refused(_, _, Status::ConditionsNotSatisfied)) => {
            progress(
                json_out,
                "4/4 kept: the retired entry is all this PSD holds, and it has no postal \
                 authority to be granted a set again; the entry stays, retired",
            );
            false
        }
        Err(e) => return Err(explain(e, "forgetting the retired entry")),
    };

    let file_name = file.as_ref().map(|(p, _)| p.display().to_string());
    if json_out {
        println!(
            "{}",
            json!({"device_id": info.device.to_string(), "license": license, "epoch": epoch,
                "dr": receipt.dr.0, "control_sum": receipt.control_sum.0,
                "receipt": hex::encode(receipt.encode()), "file": file_name,
                "refunded": booked.refunded, "account_id": booked.account_id,
                "final_ar": booked.final_ar, "revoked_grant": booked.revoked_grant,
                "retired_at": booked.retired_at, "forgotten": forgotten})
        );
    } else {
        println!(
            "license {license} retired: {} refunded to account {}{}. {}",
            Amount(booked.refunded),
            booked.account_id,
            match &booked.revoked_grant {
                Some(s) => format!(", grant {s} revoked"),
                None => String::new(),
            },
            match &file_name {
                Some(f) => format!("{f} stays as the evidence: it can never be imported again."),
                None => "The lost file is written off: it can never be imported again.".into(),
            }
        );
    }
    Ok(())
}

/// For the kill -9 tests: with `OPENPSD_PAUSE_AT=<name>` the command stops here (saying
/// so on stderr) until it is killed.
fn pause_point(name: &str) {
    if std::env::var("OPENPSD_PAUSE_AT").is_ok_and(|v| v == name) {
        eprintln!("paused at {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

fn progress(json_out: bool, line: &str) {
    if !json_out {
        eprintln!("{line}");
    }
}

/// A refusal in the words a mailer needs.
fn explain(e: ClientError, step: &str) -> anyhow::Error {
    let why = match &e {
        ClientError::Refused(_, _, s) => match s {
            Status::ExportNotOutstanding if step == "retiring the set" => {
                "the PSD has no export of this epoch (imported back, or forgotten already)"
            }
            Status::ExportNotOutstanding => {
                "older or duplicate copy: it can never be used (the PSD took this set back \
                 already, or exported it again since)"
            }
            Status::SecurityStatusNotSatisfied => {
                "the file was altered, or sealed by another PSD: it cannot be used here"
            }
            Status::WrongDevice => "the file belongs to another device",
            Status::NotEnoughMemory if step == "installing the license" => {
                "no free slot: export a set first, then run this order again with its --txn"
            }
            Status::NotEnoughMemory => {
                "no free slot: export another set first (the file stays valid)"
            }
            Status::ExportTableFull => {
                "16 sets are exported already: import one before exporting another"
            }
            Status::TransferPending => {
                "a transfer to a purse is pending on this set: resolve it first (openpsd resolve)"
            }
            Status::SetFrozen => "the set is frozen by an export: finish or cancel it",
            Status::LicenseExists => "this PSD holds that license already (resident or exported)",
            Status::NoPostalAuthority => {
                "this PSD was personalized without the postal authority's key: it cannot take licenses"
            }
            Status::ConditionsNotSatisfied if step == "retiring the set" => {
                "an export of this set is being prepared: run `license export` again to finish \
                 it, or cancel it"
            }
            Status::ConditionsNotSatisfied if step == "forgetting the retired entry" => {
                "the entry is not retired"
            }
            Status::ConditionsNotSatisfied if step == "license request" => {
                "another license request is pending: finish it (--txn) or replace it (--replace)"
            }
            _ => "",
        },
        _ => "",
    };
    if why.is_empty() {
        anyhow!("{step}: {e}")
    } else {
        anyhow!("{step}: {why} ({e})")
    }
}
