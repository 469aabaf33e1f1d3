//! `POST /v1/licenses/retirements`: a register set the PSD gave up (RETIRE SET, seed 003)
//! is refunded to its owner's deposit, and its grant revoked at the postal authority. Two
//! uses: the write-off of a lost exported file (the PSD's table still knew the set's
//! control sum and DR), and a replaced PSD's set withdrawn (C11: "new grant; the old one
//! audited, withdrawn, refunded").
//!
//! The receipt is signed by the device key, so it is checked under the key the KMS
//! registered, then against the set's history here: its control sum may not exceed what
//! the back office ever credited the set (baseline + refill messages issued), nor fall
//! below the last accepted audit's, and its AR may not fall below that audit's. A PSD
//! whose holder forged a receipt (a software PSD's key can be read out) could claim a
//! higher DR than it had, within those bounds; the post office then finds every piece it
//! mails above the receipt's AR (`used_after_retirement`, [`SetCredit::retired_ar`]).
//!
//! A refill of the set still outstanding ends with the retirement: released if its message
//! never left; settled by the receipt's control sum if it left (applied: debited; not
//! applied: released), so no hold stays held for a set that can take no message.
//!
//! Crash order: the retirement is stored (`booked`) before the RC is called, the RC books
//! the refund once per reference, and the row turns `refunded` after; the same receipt
//! again (a host that lost the answer, or a meter that crashed between) resumes where it
//! stopped and answers the same. Once retired, the (device, license) is served no more:
//! its audits are refused as a license the device does not hold.
//!
//! [`SetCredit::retired_ar`]: openpsd_protocol::SetCredit

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rusqlite::{params, OptionalExtension};

use openpsd_core::psd::license::export::Blob;
use openpsd_core::psd::license::retire::Receipt;
use openpsd_protocol::kms::DeviceInfo;
use openpsd_protocol::license::{GrantRevocation, GrantView, Retirement, RetirementRequest};
use openpsd_protocol::recharge::Deposit;
use openpsd_protocol::{ErrorCode, Outcome, RefillState};
use openpsd_service_kit::access::Customer;
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs, to_sql_int};
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::store::{read_baseline, read_last};
use crate::Meter;

const STEP: &str = "license_retire";

/// The retirements the meter booked.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS retirements (
    device_id     TEXT NOT NULL,
    epoch         INTEGER NOT NULL,
    license       INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    control_sum   INTEGER NOT NULL,
    dr            INTEGER NOT NULL,             -- refunded
    final_ar      INTEGER NOT NULL,             -- control_sum - dr
    pieces        INTEGER,                      -- from the exported file, if the host had it
    receipt       TEXT NOT NULL,                -- hex
    revoked_grant TEXT,                         -- serial, once revoked
    state         TEXT NOT NULL CHECK (state IN ('booked', 'refunded')),
    retired_at    INTEGER NOT NULL,
    PRIMARY KEY (device_id, epoch)
);
CREATE INDEX IF NOT EXISTS retirements_by_license ON retirements (device_id, license);
";

fn inconsistent(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::AuditInconsistent,
        STEP,
        message,
    )
}

/// Whether the device's set of `license` was retired (it is served no more).
pub(crate) fn is_retired(
    c: &rusqlite::Connection,
    device: &str,
    license: u32,
    step: &str,
) -> Result<bool, ApiError> {
    c.query_row(
        "SELECT 1 FROM retirements WHERE device_id = ?1 AND license = ?2",
        params![device, i64::from(license)],
        |_| Ok(()),
    )
    .optional()
    .storage(step)
    .map(|r| r.is_some())
}

/// The stored retirement of (device, epoch): (receipt hex, answer).
fn read(
    c: &rusqlite::Connection,
    device: &str,
    epoch: u64,
) -> Result<Option<(String, String, Retirement)>, ApiError> {
    type Raw = (i64, String, i64, i64, String, Option<String>, String, i64);
    let raw: Option<Raw> = c
        .query_row(
            "SELECT license, account_id, dr, final_ar, receipt, revoked_grant, state, retired_at
             FROM retirements WHERE device_id = ?1 AND epoch = ?2",
            params![device, to_sql_int(epoch, STEP)?],
            |r| r.try_into(),
        )
        .optional()
        .storage(STEP)?;
    raw.map(
        |(license, account_id, dr, final_ar, receipt, revoked_grant, state, at)| {
            Ok((
                receipt,
                state,
                Retirement {
                    device_id: device.to_owned(),
                    license: u32::try_from(license)
                        .map_err(|_| ApiError::internal(STEP, "license out of range"))?,
                    epoch,
                    refunded: from_sql_int(dr, STEP)?,
                    account_id,
                    final_ar: from_sql_int(final_ar, STEP)?,
                    revoked_grant,
                    retired_at: from_sql_int(at, STEP)?,
                },
            ))
        },
    )
    .transpose()
}

/// The most the back office put on the set: its baseline plus every refill whose message
/// left the meter.
fn credited(c: &rusqlite::Connection, device: &str, license: u32) -> Result<u64, ApiError> {
    let v: i64 = c
        .query_row(
            "SELECT COALESCE((SELECT control_sum FROM license_baselines
                              WHERE device_id = ?1 AND license = ?2), 0)
                  + COALESCE((SELECT SUM(amount) FROM refills
                              WHERE device_id = ?1 AND license = ?2
                                AND state IN ('message_issued', 'completed')), 0)",
            params![device, i64::from(license)],
            |r| r.get(0),
        )
        .storage(STEP)?;
    from_sql_int(v, STEP)
}

/// `POST /v1/licenses/retirements`.
pub(crate) async fn retire(
    State(meter): State<Meter>,
    Extension(customer): Extension<Customer>,
    body: Bytes,
) -> Result<Json<Retirement>, ApiError> {
    let req: RetirementRequest = codec::json(&body, STEP)?;
    let device = codec::device_id(&req.device_id, STEP)?;
    let device_id = codec::device_hex(&device);
    let receipt_bytes =
        hex::decode(&req.receipt).map_err(|_| ApiError::bad_request(STEP, "receipt: hex"))?;
    let receipt = Receipt::decode(&receipt_bytes)
        .map_err(|_| ApiError::bad_request(STEP, "receipt: not a RETIRE SET answer"))?;
    if receipt.device != device {
        return Err(ApiError::bad_request(
            STEP,
            "receipt: made by another device than device_id",
        ));
    }
    meter
        .serving(&device_id, Some(&customer.account_id), STEP)
        .await?;
    let account = customer.account_id.clone();

    // The same receipt again: the stored answer, or the rest of a booked one.
    let (dev, epoch) = (device_id.clone(), receipt.epoch);
    let stored = meter.db.run(STEP, move |c| read(c, &dev, epoch)).await?;
    if let Some((hex_receipt, state, answer)) = &stored {
        if *hex_receipt != hex::encode(&receipt_bytes) {
            return Err(ApiError::wrong_state(
                STEP,
                format!("export {epoch} of device {device_id} was retired with another receipt"),
            ));
        }
        if state == "refunded" {
            return Ok(Json(answer.clone()));
        }
    }

    let license = receipt.license.0;
    if stored.is_none() {
        // The device key the KMS registered signed it.
        let info: DeviceInfo = meter
            .kms
            .get(&format!("/v1/devices/{device_id}"), STEP)
            .await?;
        let public_key = hex::decode(&info.public_key)
            .map_err(|_| ApiError::internal(STEP, "the KMS's public key is not hex"))?;
        if !receipt.verify(&public_key) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AuditSignatureInvalid,
                STEP,
                "the receipt's signature does not verify under the device's registered key",
            ));
        }
        // The file, when the host still has it: its registers name the last piece.
        let pieces = match &req.blob {
            None => None,
            Some(h) => {
                let bytes = hex::decode(h).map_err(|_| ApiError::bad_request(STEP, "blob: hex"))?;
                let blob = Blob::decode(&bytes)
                    .map_err(|_| ApiError::bad_request(STEP, "blob: not an exported set"))?;
                let same = Blob::digest_of(&bytes) == receipt.digest
                    && blob.device == device
                    && blob.epoch == receipt.epoch
                    && blob.set.license == receipt.license
                    && blob.set.control_sum == receipt.control_sum
                    && blob.set.dr == receipt.dr;
                if !same || !Blob::verify_signature(&bytes, &public_key) {
                    return Err(ApiError::bad_request(
                        STEP,
                        "blob: not the exported file the receipt names",
                    ));
                }
                Some(blob.set.pieces.0)
            }
        };
        if meter
            .holds_license(&device_id, license, STEP)
            .await?
            .is_none()
        {
            return Err(inconsistent(format!(
                "license {license} is not one device {device_id} holds"
            )));
        }
        // The device's outstanding refill of this set ends here: the set can never take a
        // message again, and the receipt's control sum says whether it took this one.
        let _guard = meter.lock(&device_id).await;
        meter
            .settle_outstanding_refill(&device_id, license, receipt.control_sum.0)
            .await?;
        let control_sum = receipt.control_sum.0;
        let dr = receipt.dr.0;
        let final_ar = control_sum.saturating_sub(dr);
        let (dev, acc, receipt_hex) = (
            device_id.clone(),
            account.clone(),
            hex::encode(&receipt_bytes),
        );
        meter
            .db
            .run(STEP, move |c| {
                let tx = c.transaction().storage(STEP)?;
                // One retirement per (device, license), checked where it is written: two
                // receipts of other epochs sent at once must not both be refunded.
                if is_retired(&tx, &dev, license, STEP)? {
                    return Err(ApiError::wrong_state(
                        STEP,
                        format!("the set of license {license} of device {dev} was retired already"),
                    ));
                }
                let most = credited(&tx, &dev, license)?;
                if control_sum > most {
                    return Err(inconsistent(format!(
                        "the receipt's control sum {control_sum} is above what the back office \
                         ever credited the set ({most})"
                    )));
                }
                if let Some(last) = read_last(&tx, &dev, license, STEP)? {
                    if control_sum < last.control_sum || final_ar < last.ar {
                        return Err(inconsistent(format!(
                            "the receipt (control sum {control_sum}, AR {final_ar}) is below the \
                             set's last accepted audit (control sum {}, AR {})",
                            last.control_sum, last.ar
                        )));
                    }
                } else if read_baseline(&tx, &dev, license, STEP)?.is_none() && control_sum > 0 {
                    return Err(inconsistent(format!(
                        "the set of license {license} was never audited nor registered here"
                    )));
                }
                tx.execute(
                    "INSERT INTO retirements (device_id, epoch, license, account_id, control_sum,
                         dr, final_ar, pieces, receipt, state, retired_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'booked', ?10)",
                    params![
                        dev,
                        to_sql_int(epoch, STEP)?,
                        i64::from(license),
                        acc,
                        to_sql_int(control_sum, STEP)?,
                        to_sql_int(dr, STEP)?,
                        to_sql_int(final_ar, STEP)?,
                        pieces.map(i64::from),
                        receipt_hex,
                        now_secs()
                    ],
                )
                .storage(STEP)?;
                tx.commit().storage(STEP)
            })
            .await?;
        tracing::info!(device = %device_id, license, epoch, dr, "retirement booked");
    }

    let (dev, e) = (device_id.clone(), epoch);
    let (_, _, mut answer) = meter
        .db
        .run(STEP, move |c| read(c, &dev, e))
        .await?
        .ok_or_else(|| ApiError::internal(STEP, "retirement vanished"))?;
    // The refund, once per reference at the RC.
    if answer.refunded > 0 {
        let _: serde_json::Value = meter
            .rc
            .post(
                &format!("/v1/accounts/{}/refunds", answer.account_id),
                &Deposit {
                    amount: answer.refunded,
                    reference: format!("retire-{device_id}-{epoch}"),
                },
                STEP,
            )
            .await?;
    }
    // The grant of a set a license added through this meter: revoked at the PA.
    let held = meter.granted_serial(&device_id, license, STEP).await?;
    if let (Some(serial), Some(pa)) = (held, meter.pa.as_ref()) {
        let revoked = pa
            .post::<_, GrantView>(
                &format!("/v1/grants/{serial}/revoke"),
                &GrantRevocation {
                    reason: format!("register set retired by the device (export {epoch})"),
                },
                STEP,
            )
            .await;
        match revoked {
            Ok(_) => answer.revoked_grant = Some(serial),
            // Revoked already (by this meter before a crash, or by the PA's desk).
            Err(e) if e.code == ErrorCode::WrongState.as_str() => {
                answer.revoked_grant = Some(serial);
            }
            Err(e) => return Err(e),
        }
    }
    let (dev, revoked) = (device_id.clone(), answer.revoked_grant.clone());
    meter
        .db
        .run(STEP, move |c| {
            c.execute(
                "UPDATE retirements SET state = 'refunded', revoked_grant = ?3
                 WHERE device_id = ?1 AND epoch = ?2",
                params![dev, to_sql_int(epoch, STEP)?, revoked],
            )
            .storage(STEP)
        })
        .await?;
    tracing::info!(device = %device_id, license, epoch, refunded = answer.refunded, "set retired and refunded");
    Ok(Json(answer))
}

impl Meter {
    /// Ends the device's outstanding refill of the set of `license` against the retired
    /// set's final control sum (caller holds the device's lock). A refill whose message
    /// never left is released; one whose message left was applied if the control sum is its
    /// precondition plus its amount (the hold is debited, the refill completed) and was not
    /// if it is the precondition (the hold is released); anything else is refused. Without
    /// this, the hold of a message the set can no longer take would stay held for ever.
    async fn settle_outstanding_refill(
        &self,
        device_id: &str,
        license: u32,
        control_sum: u64,
    ) -> Result<(), ApiError> {
        let d = device_id.to_owned();
        let outstanding: Option<String> = self
            .db
            .run(STEP, move |c| {
                c.query_row(
                    "SELECT client_txn_id FROM refills WHERE device_id = ?1
                       AND state IN ('awaiting_audit', 'audit_accepted', 'message_issued')",
                    [&d],
                    |r| r.get(0),
                )
                .optional()
                .storage(STEP)
            })
            .await?;
        let Some(id) = outstanding else {
            return Ok(());
        };
        let r = crate::refill::load_refill(self, &id, STEP, None).await?;
        // Another set's refill, or one not audited yet (its set unknown; nothing is held
        // for it, and it expires on its own): left alone.
        if r.license != Some(license) {
            return Ok(());
        }
        if r.view.state != RefillState::MessageIssued {
            self.release_unissued(&r, STEP).await?;
            return Ok(());
        }
        let (Some((bound, _)), Some(combination)) = (r.binding, r.view.combination_id.clone())
        else {
            return Err(ApiError::internal(
                STEP,
                "an issued refill without its binding",
            ));
        };
        let (outcome, state) = if Some(control_sum) == bound.checked_add(r.view.amount) {
            (Outcome::Applied, "completed")
        } else if control_sum == bound {
            (Outcome::Released, "released")
        } else {
            return Err(inconsistent(format!(
                "the receipt's control sum {control_sum} is neither refill {id}'s precondition \
                 ({bound}) nor that plus its amount"
            )));
        };
        self.rc_settle(&combination, outcome, STEP).await?;
        self.db
            .run(STEP, move |c| {
                c.execute(
                    "UPDATE refills SET state = ?2, updated_at = ?3
                     WHERE client_txn_id = ?1 AND state = 'message_issued'",
                    params![id, state, now_secs()],
                )
                .storage(STEP)
            })
            .await?;
        tracing::info!(
            device = device_id,
            license,
            outcome = outcome.as_str(),
            "outstanding refill settled by the retirement"
        );
        Ok(())
    }

    /// The serial of the grant of `license` this meter obtained for the device (the
    /// latest), if the set was added by a license.
    pub(crate) async fn granted_serial(
        &self,
        device_id: &str,
        license: u32,
        step: &'static str,
    ) -> Result<Option<String>, ApiError> {
        let d = device_id.to_owned();
        self.db
            .run(step, move |c| {
                c.query_row(
                    "SELECT json_extract(grant_json, '$.fields.serial') FROM license_orders
                     WHERE device_id = ?1 AND grant_json IS NOT NULL
                       AND json_extract(grant_json, '$.fields.license') = ?2
                     ORDER BY created_at DESC, client_txn_id DESC LIMIT 1",
                    params![d, i64::from(license)],
                    |r| r.get(0),
                )
                .optional()
                .storage(step)
            })
            .await
    }
}
