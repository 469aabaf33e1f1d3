//! Rate tables and trust anchors (seed 004, step 257 and claim 12; `docs/rates.md`): the
//! vendor signs them with the key every PSD carries as `vendor_public_key`, so a PSD
//! believes a fee or a CA key only if the manufacturer published it, whoever delivers it
//! (the meter server pushes them at contact).
//!
//! * `POST /v1/rates` (operator): a table gets the next version (versions only rise, as
//!   the PSD refuses an older one) and an effective date not before the last table's (a
//!   later table with an earlier date would take effect behind its predecessor's back).
//!   The optional `version` makes a retry safe: the same content under the same version
//!   answers the stored table.
//! * `GET /v1/rates` (meter, operator): the table in effect today and every later one.
//! * `POST /v1/anchors` (operator): a key of a kind (`ca`, `creditor`) gets the next
//!   version of that kind; the key the newest anchor of the kind names already answers that
//!   anchor, so re-running a set-up script signs nothing new.
//! * `GET /v1/anchors` (meter, operator): the newest anchor of each kind.
//!
//! Every check runs before the one transaction that stores, so a refusal writes nothing.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use openpsd_core::crypto::{self, PUBLIC_KEY_LEN};
use openpsd_core::psd::certmeter::anchor::{Anchor, AnchorKind};
use openpsd_core::psd::certmeter::rates::{RateTable, Service, MAX_RATES};
use openpsd_core::types::{Amount, Date};
use openpsd_protocol::vendor::{
    anchor_kind_key, anchor_kind_of_key, code, service_key, service_of_key, AnchorRequest,
    AnchorView, Anchors, RatePublication, RateTableView, RateTables,
};
use openpsd_service_kit::codec;
use openpsd_service_kit::db::{from_sql_int, now_secs};
use openpsd_service_kit::error::{ApiError, StorageContext};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::{err, Vendor};

/// The vendor's tables of what it signed for PSDs.
pub(crate) const SCHEMA: &str = "
-- Rate tables the vendor signed: versions rise, effective dates never go back.
CREATE TABLE IF NOT EXISTS rate_tables (
    version      INTEGER PRIMARY KEY,
    effective    TEXT NOT NULL,              -- YYYY-MM-DD
    signed       TEXT NOT NULL,              -- the signed table (LOAD RATE TABLE), hex
    published_at INTEGER NOT NULL
);
-- Trust anchors the vendor signed, per kind (1 certificate CA, 2 creditor).
CREATE TABLE IF NOT EXISTS trust_anchors (
    kind       INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    public_key TEXT NOT NULL,                -- SEC1 uncompressed, hex
    signed     TEXT NOT NULL,                -- the signed anchor (LOAD TRUST ANCHOR), hex
    signed_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, version)
);
";

const STEP_RATES: &str = "vendor_rates";
const STEP_ANCHORS: &str = "vendor_anchors";

/// The table a publication asks for (its version not yet known).
fn requested_table(p: &RatePublication) -> Result<(Date, Vec<(Service, Amount)>), ApiError> {
    let step = STEP_RATES;
    let effective: Date = p.effective.parse().map_err(|_| {
        ApiError::bad_request(
            step,
            format!("effective: '{}' is not a date YYYY-MM-DD", p.effective),
        )
    })?;
    if p.fees.is_empty() || p.fees.len() > MAX_RATES {
        return Err(ApiError::bad_request(
            step,
            format!("fees: 1 to {MAX_RATES} services"),
        ));
    }
    let mut fees = Vec::with_capacity(p.fees.len());
    for (name, fee) in &p.fees {
        let service = service_of_key(name).ok_or_else(|| {
            let known: Vec<&str> = Service::ALL.into_iter().map(service_key).collect();
            ApiError::bad_request(
                step,
                format!("fees: no service '{name}' (one of {})", known.join(", ")),
            )
        })?;
        fees.push((service, Amount(*fee)));
    }
    // The signed form lists services by code; the JSON object is keyed by name.
    fees.sort_by_key(|(s, _)| *s);
    Ok((effective, fees))
}

/// What a stored table shows: its fields read back from the signed bytes (what the PSD
/// gets), so the view cannot disagree with the signature.
fn table_view(
    signed_hex: &str,
    published_at: i64,
    in_effect: bool,
    step: &str,
) -> Result<RateTableView, ApiError> {
    let bytes = hex::decode(signed_hex)
        .map_err(|_| ApiError::internal(step, "a stored rate table is not hex"))?;
    let t = RateTable::decode_unverified(&bytes)
        .map_err(|_| ApiError::internal(step, "a stored rate table does not decode"))?;
    Ok(RateTableView {
        version: t.version,
        effective: t.effective.to_string(),
        fees: t
            .fees
            .iter()
            .map(|(s, f)| (service_key(*s).to_owned(), f.0))
            .collect::<BTreeMap<_, _>>(),
        table: signed_hex.to_owned(),
        in_effect,
        published_at: from_sql_int(published_at, step)?,
    })
}

/// `POST /v1/rates`: `201` with the new signed table, `200` with the stored one for a
/// retry under its version.
pub(crate) async fn publish(
    State(v): State<Vendor>,
    body: Bytes,
) -> Result<(StatusCode, Json<RateTableView>), ApiError> {
    let step = STEP_RATES;
    let p: RatePublication = codec::json(&body, step)?;
    let (effective, fees) = requested_table(&p)?;
    let key = v.key.clone();
    let today = codec::today_utc();
    let (status, view) =
        v.db.run(step, move |c| {
            // Immediate: two publications at once must not both take the next version.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .storage(step)?;
            let last: Option<(u32, String)> = tx
                .query_row(
                    "SELECT version, effective FROM rate_tables ORDER BY version DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .storage(step)?;
            let last_version = last.as_ref().map_or(0, |(n, _)| *n);
            if let Some(asked) = p.version {
                if asked != 0 && asked <= last_version {
                    // A retry of a stored table answers it; anything else under a used
                    // version is a conflict.
                    let (signed, at): (String, i64) = tx
                        .query_row(
                            "SELECT signed, published_at FROM rate_tables WHERE version = ?1",
                            [asked],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .storage(step)?;
                    let stored = hex::decode(&signed)
                        .ok()
                        .and_then(|b| RateTable::decode_unverified(&b).ok());
                    let same = stored
                        .as_ref()
                        .is_some_and(|t| t.effective == effective && t.fees == fees);
                    if same {
                        let in_effect = asked == in_effect_version(&tx, today, step)?;
                        return Ok((StatusCode::OK, table_view(&signed, at, in_effect, step)?));
                    }
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::VERSION_TAKEN,
                        step,
                        format!(
                            "rate table version {asked} was published with other fields; the \
                             next version is {}",
                            last_version.saturating_add(1)
                        ),
                    ));
                }
                if asked != last_version.saturating_add(1) {
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::VERSION_TAKEN,
                        step,
                        format!(
                            "version {asked}: the next rate table version is {}",
                            last_version.saturating_add(1)
                        ),
                    ));
                }
            }
            let version = last_version.checked_add(1).ok_or_else(|| {
                ApiError::wrong_state(step, "the rate table version cannot rise any further")
            })?;
            if let Some((n, last_effective)) = &last {
                let last_effective: Date = last_effective.parse().map_err(|_| {
                    ApiError::internal(step, "a stored effective date does not parse")
                })?;
                if effective < last_effective {
                    return Err(err(
                        StatusCode::CONFLICT,
                        code::EFFECTIVE_BACKWARDS,
                        step,
                        format!(
                            "effective {effective} is before {last_effective}, the effective \
                             date of rate table {n}: a table may not take effect before its \
                             predecessor"
                        ),
                    ));
                }
            }
            let table = RateTable {
                version,
                effective,
                fees,
            };
            let signed = table
                .sign(&key)
                .ok_or_else(|| ApiError::bad_request(step, "fees: not a valid table"))?;
            let signed_hex = hex::encode(&signed);
            let at = now_secs();
            tx.execute(
                "INSERT INTO rate_tables (version, effective, signed, published_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![version, effective.to_string(), signed_hex, at],
            )
            .storage(step)?;
            let in_effect = version == in_effect_version(&tx, today, step)?;
            tx.commit().storage(step)?;
            Ok((
                StatusCode::CREATED,
                table_view(&signed_hex, at, in_effect, step)?,
            ))
        })
        .await?;
    tracing::info!(
        version = view.version,
        effective = %view.effective,
        "rate table published"
    );
    Ok((status, Json(view)))
}

/// The version of the table in effect on `today` (0: none yet): the highest whose
/// effective date is not after it, as the PSD chooses.
fn in_effect_version(c: &rusqlite::Connection, today: Date, step: &str) -> Result<u32, ApiError> {
    // `effective` is YYYY-MM-DD, so text order is date order.
    c.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM rate_tables WHERE effective <= ?1",
        [today.to_string()],
        |r| r.get(0),
    )
    .storage(step)
}

/// `GET /v1/rates`: the table in effect today and every later one, ascending.
pub(crate) async fn list_rates(State(v): State<Vendor>) -> Result<Json<RateTables>, ApiError> {
    let step = STEP_RATES;
    let today = codec::today_utc();
    let tables =
        v.db.run(step, move |c| {
            let current = in_effect_version(c, today, step)?;
            // Before any table is in effect, every one published is "later".
            let mut stmt = c
                .prepare(
                    "SELECT version, signed, published_at FROM rate_tables
                     WHERE version >= ?1 ORDER BY version",
                )
                .storage(step)?;
            let rows: Vec<(u32, String, i64)> = stmt
                .query_map([current], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .storage(step)?
                .collect::<Result<_, _>>()
                .storage(step)?;
            rows.iter()
                .map(|(n, signed, at)| table_view(signed, *at, *n == current, step))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Json(RateTables { tables }))
}

fn anchor_view(
    kind: AnchorKind,
    signed_hex: &str,
    signed_at: i64,
    step: &str,
) -> Result<AnchorView, ApiError> {
    let bytes = hex::decode(signed_hex)
        .map_err(|_| ApiError::internal(step, "a stored anchor is not hex"))?;
    let a = Anchor::decode_unverified(&bytes)
        .map_err(|_| ApiError::internal(step, "a stored anchor does not decode"))?;
    if a.kind != kind {
        return Err(ApiError::internal(step, "a stored anchor has another kind"));
    }
    Ok(AnchorView {
        kind: anchor_kind_key(a.kind).to_owned(),
        version: a.version,
        public_key: hex::encode(a.public_key),
        anchor: signed_hex.to_owned(),
        signed_at: from_sql_int(signed_at, step)?,
    })
}

/// The newest anchor of `kind`: (version, public key hex, signed hex, signed at).
fn newest_anchor(
    c: &rusqlite::Connection,
    kind: AnchorKind,
    step: &str,
) -> Result<Option<(u32, String, String, i64)>, ApiError> {
    c.query_row(
        "SELECT version, public_key, signed, signed_at FROM trust_anchors
         WHERE kind = ?1 ORDER BY version DESC LIMIT 1",
        [kind as u8],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
    .storage(step)
}

/// `POST /v1/anchors`: `201` with a new anchor, `200` when the newest of the kind names
/// this key already.
pub(crate) async fn trust(
    State(v): State<Vendor>,
    body: Bytes,
) -> Result<(StatusCode, Json<AnchorView>), ApiError> {
    let step = STEP_ANCHORS;
    let req: AnchorRequest = codec::json(&body, step)?;
    let kind = anchor_kind_of_key(&req.kind).ok_or_else(|| {
        ApiError::bad_request(
            step,
            format!("kind: '{}' is neither 'ca' nor 'creditor'", req.kind),
        )
    })?;
    let public_key: [u8; PUBLIC_KEY_LEN] = codec::hex_array("public_key", &req.public_key, step)?;
    if !crypto::is_valid_public_key(&public_key) {
        return Err(ApiError::bad_request(
            step,
            "public_key: not a P-256 point (SEC1 uncompressed, 04 ‖ x ‖ y)",
        ));
    }
    let key = v.key.clone();
    let key_hex = hex::encode(public_key);
    let (status, view) =
        v.db.run(step, move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .storage(step)?;
            let newest = newest_anchor(&tx, kind, step)?;
            if let Some((_, pk, signed, at)) = &newest {
                if *pk == key_hex {
                    return Ok((StatusCode::OK, anchor_view(kind, signed, *at, step)?));
                }
            }
            let version = newest
                .as_ref()
                .map_or(Some(1), |(n, ..)| n.checked_add(1))
                .ok_or_else(|| {
                    ApiError::wrong_state(step, "the anchor version cannot rise any further")
                })?;
            let signed = hex::encode(
                Anchor {
                    kind,
                    version,
                    public_key,
                }
                .sign(&key),
            );
            let at = now_secs();
            tx.execute(
                "INSERT INTO trust_anchors (kind, version, public_key, signed, signed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind as u8, version, key_hex, signed, at],
            )
            .storage(step)?;
            tx.commit().storage(step)?;
            Ok((StatusCode::CREATED, anchor_view(kind, &signed, at, step)?))
        })
        .await?;
    if status == StatusCode::CREATED {
        tracing::info!(kind = %view.kind, version = view.version, "trust anchor signed");
    }
    Ok((status, Json(view)))
}

/// `GET /v1/anchors`: the newest anchor of each kind.
pub(crate) async fn list_anchors(State(v): State<Vendor>) -> Result<Json<Anchors>, ApiError> {
    let step = STEP_ANCHORS;
    let anchors =
        v.db.run(step, move |c| {
            let mut out = Vec::new();
            for kind in [AnchorKind::CertificateCa, AnchorKind::Creditor] {
                if let Some((_, _, signed, at)) = newest_anchor(c, kind, step)? {
                    out.push(anchor_view(kind, &signed, at, step)?);
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(Anchors { anchors }))
}

/// The P-256 public key (SEC1 uncompressed) of a PEM certificate, for `backoffice vendor
/// trust --cert`: the key an anchor names is read from the CA's own certificate rather than
/// typed, so a trust anchor names exactly the key that signs the certificates.
pub fn certificate_key(pem: &[u8]) -> anyhow::Result<[u8; PUBLIC_KEY_LEN]> {
    use der::DecodePem as _;
    const EC_PUBLIC_KEY: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let cert = x509_cert::Certificate::from_pem(pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    // A CA's certificate only: the back office's TLS root or a service's certificate
    // would make PSDs trust a key that signs no certificates for them.
    let ca = cert
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca);
    anyhow::ensure!(ca, "not a CA certificate (no basicConstraints CA:TRUE)");
    let spki = cert.tbs_certificate().subject_public_key_info();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::oid::ObjectIdentifier>().ok());
    anyhow::ensure!(
        spki.algorithm.oid == EC_PUBLIC_KEY && curve == Some(P256),
        "the certificate's key is not an EC P-256 key"
    );
    let key: [u8; PUBLIC_KEY_LEN] = spki
        .subject_public_key
        .raw_bytes()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the certificate's key is not SEC1 uncompressed"))?;
    anyhow::ensure!(
        crypto::is_valid_public_key(&key),
        "the certificate's key is not a P-256 point"
    );
    Ok(key)
}
