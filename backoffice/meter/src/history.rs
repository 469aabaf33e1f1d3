//! The history rule (step 250): an audit must follow from the last one the meter accepted
//! for the device's register set that holds the same license (wherever the set is now: a
//! set is identified by its license, not its slot), given the refills applied in between; and what the
//! meter learns from it (which holds to settle, how).

use openpsd_protocol::HoldState;
use openpsd_protocol::{Baseline, HoldRequest, Outcome, VerifiedAudit};
use openpsd_service_kit::codec;
use openpsd_service_kit::error::ApiError;

use crate::STEP_CHECK;

// ------------------------------------------------------------------------ audit history

/// An audit as the KMS verified it.
#[derive(Clone, Debug)]
pub(crate) struct Audited {
    pub(crate) hex: String,
    pub(crate) device_id: String,
    pub(crate) license: u32,
    pub(crate) set: u8,
    pub(crate) ar: u64,
    pub(crate) dr: u64,
    pub(crate) control_sum: u64,
    pub(crate) pieces: u32,
    pub(crate) refills: u32,
    pub(crate) transferred: u64,
    pub(crate) pending: u64,
    pub(crate) last_combination_id: String,
    pub(crate) nonce: String,
    /// Certificate-meter fees inside AR (seed 004).
    pub(crate) fees: u64,
    /// Paid services counted.
    pub(crate) services: u32,
    /// The newest rate table version the PSD holds (0: none).
    pub(crate) rate_table: u32,
}

impl Audited {
    pub(crate) fn from_verified(v: VerifiedAudit, hex: &str, step: &str) -> Result<Self, ApiError> {
        let bad =
            |what: &str| ApiError::unavailable(step, format!("the KMS answered a bad {what}"));
        let device = codec::device_id(&v.device_id, step).map_err(|_| bad("device ID"))?;
        let comb: [u8; 8] = codec::hex_array("last_combination_id", &v.last_combination_id, step)
            .map_err(|_| bad("combination ID"))?;
        let nonce: [u8; 16] =
            codec::hex_array("nonce", &v.nonce, step).map_err(|_| bad("nonce"))?;
        // Registers beyond SQLite's integers cannot be recorded; no real device has them.
        for x in [v.ar, v.dr, v.control_sum, v.transferred, v.pending, v.fees] {
            if i64::try_from(x).is_err() {
                return Err(ApiError::audit_inconsistent(
                    STEP_CHECK,
                    "register out of range",
                ));
            }
        }
        Ok(Self {
            hex: hex.to_ascii_lowercase(),
            device_id: codec::device_hex(&device),
            license: v.license,
            set: v.set,
            ar: v.ar,
            dr: v.dr,
            control_sum: v.control_sum,
            pieces: v.pieces,
            refills: v.refills,
            transferred: v.transferred,
            pending: v.pending,
            last_combination_id: hex::encode(comb),
            nonce: hex::encode(nonce),
            fees: v.fees,
            services: v.services,
            rate_table: v.rate_table,
        })
    }
}

/// The last accepted audit of a device's set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Last {
    pub(crate) license: u32,
    pub(crate) ar: u64,
    pub(crate) dr: u64,
    pub(crate) control_sum: u64,
    pub(crate) pieces: u32,
    pub(crate) refills: u32,
    pub(crate) last_combination_id: String,
    /// Certificate-meter fees reported (0 before the set paid any).
    pub(crate) fees: u64,
    /// Paid services reported.
    pub(crate) services: u32,
}

/// A combination the back office made, as far as the audit check needs it.
#[derive(Clone, Debug)]
pub(crate) struct Known {
    /// The meter refill it belongs to (`None`: made at the RC outside this meter).
    pub(crate) client_txn_id: Option<String>,
    pub(crate) device_id: String,
    pub(crate) license: u32,
    pub(crate) amount: u64,
    pub(crate) control_sum: u64,
    pub(crate) refills: u32,
    /// The RC's hold state, for foreign combinations.
    pub(crate) rc_state: Option<HoldState>,
    /// One of this meter's refills that it settled `released` (it must never apply).
    pub(crate) released: bool,
}

/// Step 250: is `a` what the device can show after `last` (or, for the set's first audit,
/// exactly its registered `baseline`), given the combination its audit names (`applied`,
/// looked up when the refill count moved by one)?
pub(crate) fn check_history(
    last: Option<&Last>,
    baseline: Option<&Baseline>,
    a: &Audited,
    applied: Option<&Known>,
) -> Result<(), String> {
    let sum =
        a.ar.checked_add(a.dr)
            .and_then(|s| s.checked_add(a.pending));
    if sum != Some(a.control_sum) {
        return Err("AR + DR + pending is not the control sum".into());
    }
    if a.transferred > a.ar {
        return Err("more transferred to purses than AR holds".into());
    }
    if a.transferred
        .checked_add(a.fees)
        .is_none_or(|used| used > a.ar)
    {
        return Err("transferred to purses and fees paid exceed AR".into());
    }
    // The first audit of a set must show what registration recorded: value put on the
    // card before it (an offline refill) is value the ledger never saw.
    let Some(l) = last else {
        return match baseline {
            Some(b) if a.control_sum == b.control_sum && a.refills == b.refills => Ok(()),
            Some(b) => Err(format!(
                "first audit of the set shows control sum {} and refill count {}; registered \
                 baseline {} and {}",
                a.control_sum, a.refills, b.control_sum, b.refills
            )),
            None => Err("the set has no registered baseline".into()),
        };
    };
    if a.license != l.license {
        return Err(format!("license {} after {}", a.license, l.license));
    }
    if a.ar < l.ar {
        return Err(format!("AR went down from {} to {}", l.ar, a.ar));
    }
    if a.fees < l.fees {
        return Err(format!("fees went down from {} to {}", l.fees, a.fees));
    }
    // Fees are paid out of DR into AR: they cannot have grown by more than AR did.
    if a.fees - l.fees > a.ar.saturating_sub(l.ar) {
        return Err(format!(
            "fees rose by {} while AR rose by {}",
            a.fees - l.fees,
            a.ar.saturating_sub(l.ar)
        ));
    }
    if a.services < l.services {
        return Err(format!(
            "service count went down from {} to {}",
            l.services, a.services
        ));
    }
    if a.pieces < l.pieces {
        return Err(format!(
            "piece count went down from {} to {}",
            l.pieces, a.pieces
        ));
    }
    if a.refills < l.refills {
        return Err(format!(
            "refill count went down from {} to {}",
            l.refills, a.refills
        ));
    }
    if a.refills == l.refills {
        if a.control_sum != l.control_sum || a.last_combination_id != l.last_combination_id {
            return Err(format!(
                "control sum {} without a refill since the last accepted audit ({})",
                a.control_sum, l.control_sum
            ));
        }
        return Ok(());
    }
    if a.refills != l.refills.saturating_add(1) {
        return Err(format!(
            "{} refills since the last accepted audit; at most one can be outstanding",
            a.refills - l.refills
        ));
    }
    let Some(k) = applied else {
        return Err(format!(
            "the refill applied ({}) is not one the back office made",
            a.last_combination_id
        ));
    };
    if k.device_id != a.device_id || k.license != a.license {
        return Err("the refill applied was made for another device or license".into());
    }
    if k.control_sum != l.control_sum || k.refills != l.refills {
        return Err(
            "the refill applied was bound to another state than the last accepted audit".into(),
        );
    }
    let expected = l
        .control_sum
        .checked_add(k.amount)
        .ok_or("control sum overflow")?;
    if a.control_sum != expected {
        return Err(format!(
            "control sum {} is not the last accepted {} plus the refill applied since ({})",
            a.control_sum, l.control_sum, k.amount
        ));
    }
    Ok(())
}

/// An outstanding refill of a device, as settlement needs it.
#[derive(Clone, Debug)]
pub(crate) struct Outstanding {
    pub(crate) client_txn_id: String,
    pub(crate) device_id: String,
    pub(crate) account_id: String,
    pub(crate) amount: u64,
    pub(crate) license: Option<u32>,
    /// Control sum and refill count its combination is bound to (once its audit was accepted).
    pub(crate) binding: Option<(u64, u32)>,
    pub(crate) combination_id: Option<String>,
    /// The void issued when its owner cancelled it after the message left.
    pub(crate) void_combination_id: Option<String>,
}

impl Outstanding {
    pub(crate) fn hold_request(&self, control_sum: u64, refills: u32) -> HoldRequest {
        HoldRequest {
            request_id: request_id(&self.device_id, &self.client_txn_id),
            account_id: self.account_id.clone(),
            device_id: self.device_id.clone(),
            license: self.license.unwrap_or_default(),
            amount: self.amount,
            control_sum,
            refills,
        }
    }
}

/// The RC request ID of a refill: its client transaction ID scoped by device.
pub(crate) fn request_id(device_id: &str, client_txn_id: &str) -> String {
    format!("{device_id}/{client_txn_id}")
}

/// What an accepted audit settles.
pub(crate) enum Settlement {
    /// One of this meter's refills.
    Own {
        client_txn_id: String,
        combination_id: Option<String>,
        hold: HoldRequest,
        outcome: Outcome,
    },
    /// A combination made at the RC outside this meter, shown applied.
    Foreign { combination_id: String },
}

pub(crate) struct Judgement {
    pub(crate) settlements: Vec<Settlement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audited(ar: u64, dr: u64, pieces: u32, refills: u32, comb: &str) -> Audited {
        Audited {
            hex: String::new(),
            device_id: "5053440000000001".into(),
            license: 4711,
            set: 0,
            ar,
            dr,
            control_sum: ar + dr,
            pieces,
            refills,
            transferred: 0,
            pending: 0,
            last_combination_id: comb.into(),
            nonce: "00".repeat(16),
            fees: 0,
            services: 0,
            rate_table: 0,
        }
    }

    #[test]
    fn certificate_meter_fees_stay_inside_ar_and_never_fall() {
        let comb = "00".repeat(8);
        let mut before = last(100, 400, 3, 1, &comb);
        before.fees = 20;
        before.services = 2;
        // A postmark's fee of 5: AR up, DR down, fees and services up.
        let mut a = audited(105, 395, 3, 1, &comb);
        a.fees = 25;
        a.services = 3;
        assert!(check_history(Some(&before), None, &a, None).is_ok());
        // Fees that fall, or a service count that falls, are refused.
        let mut fell = a.clone();
        fell.fees = 19;
        assert!(check_history(Some(&before), None, &fell, None).is_err());
        let mut fewer = a.clone();
        fewer.services = 1;
        assert!(check_history(Some(&before), None, &fewer, None).is_err());
        // Fees and transfers together above AR cannot be.
        let mut over = a;
        over.transferred = 90;
        assert!(check_history(Some(&before), None, &over, None).is_err());
    }

    #[test]
    fn value_moved_to_a_purse_keeps_the_audit_history_consistent() {
        let comb = "00".repeat(8);
        let before = last(100, 900, 1, 1, &comb);
        // 50 pending for a purse: AR + DR + pending is still the control sum.
        let mut a = audited(100, 850, 1, 1, &comb);
        a.control_sum = 1000;
        a.pending = 50;
        assert_eq!(check_history(Some(&before), None, &a, None), Ok(()));
        // Completed: pending moved on to AR and counted as transferred.
        let mut done = audited(150, 850, 1, 1, &comb);
        done.transferred = 50;
        assert_eq!(check_history(Some(&before), None, &done, None), Ok(()));
        // Pending that does not add up, or more transferred than AR, is refused.
        a.pending = 60;
        assert!(check_history(Some(&before), None, &a, None).is_err());
        done.transferred = 151;
        assert!(check_history(Some(&before), None, &done, None).is_err());
    }

    fn last(ar: u64, dr: u64, pieces: u32, refills: u32, comb: &str) -> Last {
        Last {
            license: 4711,
            ar,
            dr,
            control_sum: ar + dr,
            pieces,
            refills,
            last_combination_id: comb.into(),
            fees: 0,
            services: 0,
        }
    }

    const NONE: &str = "0000000000000000";
    const C1: &str = "0101010101010101";

    fn known(amount: u64, cs: u64, refills: u32) -> Known {
        Known {
            client_txn_id: Some("t".into()),
            device_id: "5053440000000001".into(),
            license: 4711,
            amount,
            control_sum: cs,
            refills,
            rc_state: None,
            released: false,
        }
    }

    #[test]
    fn history_checks() {
        let l = last(100, 400, 3, 1, NONE);
        // First audit: exactly the registered baseline.
        let zero = Baseline {
            control_sum: 0,
            refills: 0,
        };
        assert!(check_history(None, Some(&zero), &audited(0, 0, 0, 0, NONE), None).is_ok());
        assert!(check_history(None, Some(&zero), &audited(0, 500, 0, 1, C1), None).is_err());
        assert!(check_history(None, None, &audited(0, 0, 0, 0, NONE), None).is_err());
        let funded = Baseline {
            control_sum: 500,
            refills: 1,
        };
        assert!(check_history(None, Some(&funded), &audited(0, 500, 0, 1, C1), None).is_ok());
        assert!(check_history(None, Some(&funded), &audited(0, 400, 0, 1, C1), None).is_err());
        // Spending postage: AR up, DR down, same control sum.
        assert!(check_history(Some(&l), None, &audited(150, 350, 4, 1, NONE), None).is_ok());
        // Rolled back.
        assert!(check_history(Some(&l), None, &audited(50, 450, 2, 1, NONE), None).is_err());
        assert!(check_history(Some(&l), None, &audited(100, 400, 2, 1, NONE), None).is_err());
        // Control sum moved without a refill.
        assert!(check_history(Some(&l), None, &audited(100, 500, 3, 1, NONE), None).is_err());
        // One refill of 1000, known and bound to the last audit.
        let a = audited(100, 1400, 3, 2, C1);
        assert!(check_history(Some(&l), None, &a, Some(&known(1000, 500, 1))).is_ok());
        // Unknown, wrongly bound, wrong amount.
        assert!(check_history(Some(&l), None, &a, None).is_err());
        assert!(check_history(Some(&l), None, &a, Some(&known(1000, 400, 1))).is_err());
        assert!(check_history(Some(&l), None, &a, Some(&known(999, 500, 1))).is_err());
        // Two refills at once.
        assert!(check_history(
            Some(&l),
            None,
            &audited(100, 1400, 3, 3, C1),
            Some(&known(1000, 500, 1))
        )
        .is_err());
        // Inconsistent registers.
        let mut bad = audited(100, 400, 3, 1, NONE);
        bad.control_sum = 501;
        assert!(check_history(Some(&l), None, &bad, None).is_err());
    }
}
