//! Whether a meter may still print: its standing at the KMS, asked before a new indicium.
//!
//! The issuer revokes a meter at the KMS (`POST /v1/devices/{id}/revoke`); the post office
//! then refuses its indicia and the KMS seals no refill for it. Before this check the data
//! center went on printing for a revoked meter (docs/virtual-meter.md §8 said so): postage
//! charged to the mailer for labels the post office refuses. Now every new indicium (one or
//! a batch) needs the KMS's word that the meter is registered and not revoked, at most
//! [`Config::standing_recheck`](crate::Config::standing_recheck) old:
//! - revoked: `410 device_revoked`, nothing charged, and remembered for good (a revocation
//!   is never undone, so the KMS is not asked again);
//! - not registered yet (a crash between CREATE METER and the registration): registered
//!   now, then asked again;
//! - the KMS unreachable once the last word is too old: `503`, nothing charged. Printing
//!   fails closed: a label the post office may refuse is worse than no label.
//!
//! A revocation therefore stops printing within `standing_recheck` (60 s by default): the
//! same window as any cache of the KMS's answers; 0 asks before every request.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use openpsd_service_kit::error::ApiError;

use crate::Datacenter;

/// What the data center last heard from the KMS about its meters.
#[derive(Default)]
pub(crate) struct Standing {
    /// Mailer → (meter ID, when the KMS last said it is in service).
    in_service: HashMap<String, (String, Instant)>,
    /// Mailers whose meter the KMS revoked.
    revoked: HashSet<String>,
}

impl Datacenter {
    /// Refuses a new indicium for `mailer`'s meter unless the KMS has said, within
    /// `standing_recheck`, that it is registered and not revoked.
    pub(crate) async fn ensure_in_service(
        &self,
        mailer: &str,
        step: &'static str,
    ) -> Result<(), ApiError> {
        let recheck = self.config.standing_recheck;
        {
            let s = self.standing.lock().unwrap_or_else(|p| p.into_inner());
            if s.revoked.contains(mailer) {
                return Err(revoked(step, "the issuer revoked this meter"));
            }
            if let Some((_, at)) = s.in_service.get(mailer) {
                if at.elapsed() < recheck {
                    return Ok(());
                }
            }
        }
        let m = mailer.to_owned();
        let meter: String = self
            .db
            .run(step, move |c| {
                crate::indicia::meter_row(c, &m, step).map(|(meter, _, _)| meter)
            })
            .await?;
        // The word's age counts from the question, not the answer: an answer that took
        // the upstream's whole timeout must not extend the window a revocation waits.
        let asked = Instant::now();
        let answer = match self.kms.device_key(&meter, step).await {
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                // Created but never registered (a crash in between): register it now.
                self.register_meter(mailer).await?;
                match self.kms.device_key(&meter, step).await {
                    // Registered before (or just now) and still unknown: the KMS lost it
                    // (a database restored from a backup). Not the mailer's doing.
                    Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                        tracing::error!(mailer, meter = %meter, "ALARM: the KMS does not know a registered meter");
                        Err(ApiError::unavailable(
                            step,
                            "the KMS does not know this meter: printing waits until it does",
                        ))
                    }
                    other => other,
                }
            }
            other => other,
        };
        let mut s = self.standing.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(_) => {
                s.in_service.insert(mailer.to_owned(), (meter, asked));
                Ok(())
            }
            Err(e) if e.status == axum::http::StatusCode::GONE => {
                tracing::warn!(mailer, meter = %meter, "a revoked meter asked to print: refused");
                s.in_service.remove(mailer);
                s.revoked.insert(mailer.to_owned());
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

fn revoked(step: &str, message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GONE,
        openpsd_service_kit::error::ErrorCode::DeviceRevoked,
        step,
        message,
    )
}
