//! The meter's calls to the other services for one audit: the device's licenses and the
//! audit's verification (KMS), the judgement of an audit against the device's history and
//! the settlements it implies (RC), receipts (KMS). Every call is idempotent.

use axum::http::StatusCode;
use rusqlite::{params, OptionalExtension};

use openpsd_protocol::license::{code as license_code, LicenseHolder};
use openpsd_protocol::{
    AuditBody, Baseline, CombinationRecord, DeviceInfo, Outcome, ReceiptRequest, ReceiptResponse,
    Settle, Settled, SignedCombination, VerifiedAudit,
};
use openpsd_protocol::{ErrorCode, HoldState};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::now_secs;
use openpsd_service_kit::error::{ApiError, StorageContext};

use crate::alarms::AlarmKind;
use crate::history::{check_history, Audited, Judgement, Known, Settlement};
use crate::registry::{quarantined, read_device};
use crate::store::{
    read_baseline, read_granted, read_known_combination, read_last, read_outstanding,
};
use crate::{Meter, STEP_CHECK};

/// How a device holds a license.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Registered at the KMS at personalization (a baseline per set given at registration).
    Registered,
    /// Granted through this meter's `POST /v1/licenses` (baseline zero).
    Granted,
}

impl Meter {
    /// The device's licenses, from the meter's cache or the KMS.
    pub(crate) async fn licenses(
        &self,
        device_id: &str,
        step: &'static str,
    ) -> Result<Vec<(u32, String)>, ApiError> {
        let id = device_id.to_owned();
        let cached: Option<String> = self
            .db
            .run(step, move |c| {
                c.query_row(
                    "SELECT licenses FROM devices WHERE device_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .storage(step)
            })
            .await?;
        if let Some(json) = cached {
            return serde_json::from_str(&json)
                .map_err(|e| ApiError::internal(step, format!("cached licenses: {e}")));
        }
        let info: DeviceInfo = self
            .kms
            .get(&format!("/v1/devices/{device_id}"), step)
            .await?;
        let json = serde_json::to_string(&info.licenses)
            .map_err(|e| ApiError::internal(step, e.to_string()))?;
        let id = device_id.to_owned();
        self.db
            .run(step, move |c| {
                c.execute(
                    "INSERT OR REPLACE INTO devices (device_id, licenses, fetched_at) VALUES (?1, ?2, ?3)",
                    params![id, json, now_secs()],
                )
                .storage(step)
                .map(drop)
            })
            .await?;
        Ok(info.licenses)
    }

    /// The licenses granted to the device through this meter (`license_orders`).
    pub(crate) async fn granted(
        &self,
        device_id: &str,
        step: &'static str,
    ) -> Result<Vec<u32>, ApiError> {
        let d = device_id.to_owned();
        self.db.run(step, move |c| read_granted(c, &d, step)).await
    }

    /// Whether one of the account's devices holds `license` (registered at the KMS or
    /// granted through this meter): a customer may ask for a license number only if it is
    /// theirs already (a second PSD on the license, seed 003 claim 6, or a replacement).
    pub(crate) async fn account_holds_license(
        &self,
        account: &str,
        license: u32,
        step: &'static str,
    ) -> Result<bool, ApiError> {
        let a = account.to_owned();
        let devices: Vec<String> = self
            .db
            .run(step, move |c| {
                let mut st = c
                    .prepare_cached(
                        "SELECT device_id FROM registrations WHERE account_id = ?1 ORDER BY device_id",
                    )
                    .storage(step)?;
                let rows = st
                    .query_map([a], |r| r.get(0))
                    .storage(step)?
                    .collect::<Result<Vec<String>, _>>()
                    .storage(step)?;
                Ok(rows)
            })
            .await?;
        for d in devices {
            // Held, or held until the device retired it (a replaced PSD's license).
            let retired = {
                let d = d.clone();
                self.db
                    .run(step, move |c| {
                        crate::retire::is_retired(c, &d, license, step)
                    })
                    .await?
            };
            if retired || self.holds_license(&d, license, step).await?.is_some() {
                return Ok(true);
            }
        }
        // A license the PA's desk allocated to the account (`backoffice pa grant`), before
        // any of its devices holds it.
        let Some(pa) = &self.pa else {
            return Ok(false);
        };
        match pa
            .get::<LicenseHolder>(&format!("/v1/licenses/{license}"), step)
            .await
        {
            Ok(h) => Ok(h.account.as_deref() == Some(account)),
            Err(e) if e.code == license_code::UNKNOWN_LICENSE => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How the device holds `license`: registered at the KMS, granted through this meter,
    /// or not at all (`None`).
    pub(crate) async fn holds_license(
        &self,
        device_id: &str,
        license: u32,
        step: &'static str,
    ) -> Result<Option<Held>, ApiError> {
        // A set the device retired (RETIRE SET, refunded) is served no more.
        let d = device_id.to_owned();
        if self
            .db
            .run(step, move |c| {
                crate::retire::is_retired(c, &d, license, step)
            })
            .await?
        {
            return Ok(None);
        }
        if self
            .licenses(device_id, step)
            .await?
            .iter()
            .any(|(l, _)| *l == license)
        {
            return Ok(Some(Held::Registered));
        }
        Ok(self
            .granted(device_id, step)
            .await?
            .contains(&license)
            .then_some(Held::Granted))
    }

    /// A refill or inspection may name slot `set` of the device: one of its registered
    /// sets, or any slot once this meter granted it a license (a set added by LICENSE
    /// INSTALL lands in the first free slot, and IMPORT may put it elsewhere; the audit
    /// then has to name a license the device holds, which `judge` checks).
    pub(crate) async fn check_slot(
        &self,
        device_id: &str,
        set: u8,
        step: &'static str,
    ) -> Result<(), ApiError> {
        let registered = self.licenses(device_id, step).await?.len();
        if usize::from(set) < registered || !self.granted(device_id, step).await?.is_empty() {
            return Ok(());
        }
        Err(ApiError::bad_request(
            step,
            format!(
                "device {device_id} has {registered} registered register sets and no license \
                 granted through this meter: set {set} holds no license it can be served for"
            ),
        ))
    }

    /// Step 225-240: the KMS verifies the audit's signature (with the device's registered
    /// public key) and decodes it. A device the KMS serves no more is answered as the KMS
    /// said: `410 device_revoked`, `409 legacy_refill_suite`.
    pub(crate) async fn verify(&self, audit_hex: &str, step: &str) -> Result<Audited, ApiError> {
        // Refuse what is not even hex here, so the KMS only sees well-formed requests.
        codec::hex_vec("audit", audit_hex, 256, step)?;
        let v: VerifiedAudit = self
            .kms
            .post(
                "/v1/audits/verify",
                &AuditBody {
                    audit: audit_hex.to_owned(),
                },
                step,
            )
            .await?;
        Audited::from_verified(v, audit_hex, step)
    }

    /// Step 250 and settlement: checks a verified audit against the device's history and
    /// works out which holds it settles. Nothing is written here, except an alarm (and the
    /// device's quarantine) when the audit disagrees with the ledger.
    pub(crate) async fn judge(
        &self,
        step: &'static str,
        device_id: &str,
        set: u8,
        audit: &Audited,
        expected_nonce: &str,
    ) -> Result<Judgement, ApiError> {
        if audit.device_id != device_id || audit.set != set {
            return Err(ApiError::audit_inconsistent(
                STEP_CHECK,
                format!(
                    "the audit is of device {} set {}, the request is for device {device_id} set {set}",
                    audit.device_id, audit.set
                ),
            ));
        }
        if audit.nonce != expected_nonce {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AuditNonceMismatch,
                STEP_CHECK,
                "the audit does not answer this request's nonce",
            ));
        }
        // History is per license, wherever the set is now (a set can be exported and
        // imported into another slot): the license must be one the device holds —
        // registered at the KMS, or granted to it through this meter's `/v1/licenses`.
        let license = audit.license;
        let Some(held) = self.holds_license(device_id, license, step).await? else {
            return Err(ApiError::audit_inconsistent(
                STEP_CHECK,
                format!(
                    "license {license} (set {set}) is neither registered for device {device_id} \
                     nor granted to it through this meter"
                ),
            ));
        };
        let (dev, last_comb) = (device_id.to_owned(), audit.last_combination_id.clone());
        let (registered, last, baseline, outstanding, own) = self
            .db
            .run(step, move |c| {
                Ok((
                    read_device(c, &dev, step)?,
                    read_last(c, &dev, license, step)?,
                    read_baseline(c, &dev, license, step)?,
                    read_outstanding(c, &dev, step)?,
                    read_known_combination(c, &last_comb, step)?,
                ))
            })
            .await?;
        // A set a license added starts empty: until its first accepted audit records its
        // baseline row, the baseline is zero.
        let baseline = baseline.or((held == Held::Granted).then_some(Baseline {
            control_sum: 0,
            refills: 0,
        }));
        // Refused while quarantined: an audit of a device whose ledger is in doubt settles
        // nothing until an operator has looked.
        match registered {
            None => return Err(ApiError::unknown_device(step, device_id)),
            Some(d) if d.quarantined => return Err(quarantined(step, device_id)),
            Some(_) => {}
        }
        // A refill count one past the last accepted audit: the combination the audit names
        // must be one the back office made, bound to that audit's state.
        let applied = match &last {
            Some(l) if audit.refills == l.refills.saturating_add(1) => match own {
                Some(k) => Some(k),
                None => {
                    self.foreign_combination(&audit.last_combination_id, step)
                        .await?
                }
            },
            _ => None,
        };
        if let Err(m) = check_history(last.as_ref(), baseline.as_ref(), audit, applied.as_ref()) {
            let kind = if last.is_none() {
                AlarmKind::Baseline
            } else {
                AlarmKind::History
            };
            let err = ApiError::audit_inconsistent(STEP_CHECK, m);
            return Err(self
                .alarm(device_id, set, Some(license), kind, Some(&audit.hex), err)
                .await);
        }
        if let Some(k) = &applied {
            if k.released || k.rc_state == Some(HoldState::Released) {
                let err = ApiError::audit_inconsistent(
                    STEP_CHECK,
                    format!(
                        "the device applied combination {}, whose hold was released",
                        audit.last_combination_id
                    ),
                );
                return Err(self
                    .alarm(
                        device_id,
                        set,
                        Some(license),
                        AlarmKind::ReleasedApplied,
                        Some(&audit.hex),
                        err,
                    )
                    .await);
            }
        }

        let mut settlements = Vec::new();
        // The device's outstanding refills of this license (a refill's license is known
        // once its audit was accepted, and only then is anything bound or held).
        for o in outstanding.iter().filter(|o| o.license == Some(license)) {
            let Some((bound_cs, bound_refills)) = o.binding else {
                continue; // no audit accepted yet: nothing bound, nothing held
            };
            let outcome = if audit.refills == bound_refills {
                // The refill count it is bound to is not consumed: the message may still
                // apply, so the hold stays (check_history made sure the control sum agrees).
                continue;
            } else if audit.refills == bound_refills.saturating_add(1)
                && o.combination_id.as_deref() == Some(audit.last_combination_id.as_str())
            {
                Outcome::Applied
            } else if audit.refills == bound_refills.saturating_add(1)
                && o.void_combination_id.as_deref() == Some(audit.last_combination_id.as_str())
            {
                // Its void applied: the refill's precondition is gone for ever.
                Outcome::Released
            } else if audit.refills > bound_refills {
                // The refill count it was bound to is consumed by another combination: it
                // can never apply.
                // The refill count it was bound to is consumed: it can never apply.
                Outcome::Released
            } else {
                continue;
            };
            settlements.push(Settlement::Own {
                client_txn_id: o.client_txn_id.clone(),
                combination_id: o.combination_id.clone(),
                hold: o.hold_request(bound_cs, bound_refills),
                outcome,
            });
        }
        if let Some(k) = &applied {
            if k.client_txn_id.is_none() && k.rc_state == Some(HoldState::Held) {
                settlements.push(Settlement::Foreign {
                    combination_id: audit.last_combination_id.clone(),
                });
            }
        }
        Ok(Judgement { settlements })
    }

    /// A combination the meter did not make (e.g. made at the RC directly), from the RC.
    pub(crate) async fn foreign_combination(
        &self,
        id: &str,
        step: &str,
    ) -> Result<Option<Known>, ApiError> {
        match self
            .rc
            .get::<CombinationRecord>(&format!("/v1/combinations/{id}"), step)
            .await
        {
            Ok(r) => Ok(Some(Known {
                client_txn_id: None,
                device_id: r.combination.device_id.to_ascii_uppercase(),
                license: r.combination.license,
                amount: r.combination.amount,
                control_sum: r.combination.control_sum,
                refills: r.combination.refills,
                rc_state: Some(r.state),
                released: false,
            })),
            Err(e) if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::BAD_REQUEST => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Carries out settlements at the RC (idempotent). Returns the combination ID of each
    /// own settlement that had none recorded (learned by repeating the hold request). A
    /// hold the RC will not debit for value the device's `audit` shows applied — released behind the meter's back — is an alarm.
    pub(crate) async fn settle(
        &self,
        settlements: &mut [Settlement],
        audit: &Audited,
        step: &str,
    ) -> Result<(), ApiError> {
        let (device, set, audit_hex) = (
            audit.device_id.as_str(),
            (audit.set, audit.license),
            audit.hex.as_str(),
        );
        for s in settlements.iter_mut() {
            match s {
                Settlement::Own {
                    combination_id,
                    hold,
                    outcome,
                    ..
                } => {
                    if combination_id.is_none() {
                        // The refill's audit was accepted but the meter never recorded a
                        // combination (a crash between the RC's answer and our commit). Repeating
                        // the hold request returns the hold if the RC made one.
                        match self
                            .rc
                            .post::<_, SignedCombination>("/v1/combinations", hold, step)
                            .await
                        {
                            Ok(sc) => *combination_id = Some(sc.combination.combination_id),
                            Err(e) if e.status.is_client_error() => continue, // nothing held
                            Err(e) => return Err(e),
                        }
                    }
                    if let Some(id) = combination_id.as_deref() {
                        self.rc_settle_or_alarm(id, *outcome, device, set, audit_hex, step)
                            .await?;
                    }
                }
                Settlement::Foreign { combination_id } => {
                    self.rc_settle_or_alarm(
                        combination_id,
                        Outcome::Applied,
                        device,
                        set,
                        audit_hex,
                        step,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn rc_settle_or_alarm(
        &self,
        id: &str,
        outcome: Outcome,
        device: &str,
        (set, license): (u8, u32),
        audit_hex: &str,
        step: &str,
    ) -> Result<(), ApiError> {
        match self.rc_settle(id, outcome, step).await {
            Err(e) if outcome == Outcome::Applied && e.status == StatusCode::CONFLICT => {
                let err = ApiError::audit_inconsistent(
                    STEP_CHECK,
                    format!(
                        "the device applied combination {id}, but the recharging center will not \
                         debit its hold ({})",
                        e.message
                    ),
                );
                Err(self
                    .alarm(
                        device,
                        set,
                        Some(license),
                        AlarmKind::SettleRefused,
                        Some(audit_hex),
                        err,
                    )
                    .await)
            }
            r => r,
        }
    }

    pub(crate) async fn rc_settle(
        &self,
        id: &str,
        outcome: Outcome,
        step: &str,
    ) -> Result<(), ApiError> {
        let _: Settled = self
            .rc
            .post(
                &format!("/v1/combinations/{id}/settle"),
                &Settle { outcome },
                step,
            )
            .await?;
        tracing::info!(combination = id, outcome = outcome.as_str(), "settled");
        Ok(())
    }

    /// A receipt from the KMS for an accepted audit, dated today.
    pub(crate) async fn receipt(&self, audit_hex: &str, step: &str) -> Result<String, ApiError> {
        let r: ReceiptResponse = self
            .kms
            .post(
                "/v1/receipts",
                &ReceiptRequest {
                    audit: audit_hex.to_owned(),
                    accepted_on: codec::today_utc().to_string(),
                },
                step,
            )
            .await?;
        Ok(r.receipt)
    }
}
