//! The saved state: the PSD's persistent store as one byte string, and back.
//!
//! ```text
//! "OPSDSTAT" (8) | version 01 | record count u16 | { id u16 | length u32 | bytes } * count |
//! SHA-256 of everything before it (32)
//! ```
//!
//! The check value catches corruption (a truncated file, a flipped bit), not tampering: it
//! has no key. At rest the page seals the blob (AES-GCM, `js/storage.js`). A blob that does
//! not decode is an error, never an empty store.

use openpsd_core::crypto::sha256;
use openpsd_core::store::{MemStore, RecordId, Store, Write};
use openpsd_core::wire::{Reader, Writer};
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};

/// First bytes of a saved state.
pub const MAGIC: &[u8; 8] = b"OPSDSTAT";
/// Layout version.
pub const VERSION: u8 = 1;
const CHECK_LEN: usize = 32;

/// Serializes every committed record of `store`.
pub fn encode(store: &MemStore) -> ApiResult<Vec<u8>> {
    let unreadable = |e| ApiError::state(format!("store unreadable: {e}"));
    let ids = store.ids().map_err(unreadable)?;
    let count = u16::try_from(ids.len()).map_err(|_| ApiError::state("too many records"))?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u16(count);
    for id in ids {
        let value = Zeroizing::new(store.read(id).map_err(unreadable)?.unwrap_or_default());
        let len = u32::try_from(value.len()).map_err(|_| ApiError::state("record too long"))?;
        out.put_u16(id);
        out.put_u32(len);
        out.extend_from_slice(&value);
    }
    let check = sha256(&out);
    out.extend_from_slice(&check);
    Ok(out)
}

/// A store holding the records of a saved state; anything malformed is a `StateError`.
pub fn decode(bytes: &[u8]) -> ApiResult<MemStore> {
    let bad = |why: &str| ApiError::state(format!("not a saved PSD state: {why}"));
    let split = bytes
        .len()
        .checked_sub(CHECK_LEN)
        .ok_or_else(|| bad("too short"))?;
    let (body, check) = bytes.split_at(split);
    if !body.starts_with(MAGIC) {
        return Err(bad("wrong magic"));
    }
    if sha256(body).as_slice() != check {
        return Err(bad("check value mismatch (damaged or changed)"));
    }
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let malformed = |_| bad("truncated or malformed record");
    if r.u8().map_err(malformed)? != VERSION {
        return Err(bad("unknown version"));
    }
    let count = r.u16().map_err(malformed)?;
    let mut writes = Vec::with_capacity(usize::from(count));
    let mut last: Option<RecordId> = None;
    for _ in 0..count {
        let id = r.u16().map_err(malformed)?;
        if last.is_some_and(|l| l >= id) {
            return Err(bad("records out of order"));
        }
        last = Some(id);
        let len = usize::try_from(r.u32().map_err(malformed)?).map_err(|_| bad("record length"))?;
        let value = r.take(len).map_err(malformed)?.to_vec();
        writes.push(Write {
            id,
            value: Some(value),
        });
    }
    r.finish().map_err(|_| bad("bytes after the last record"))?;
    let mut store = MemStore::new();
    let result = store.commit(&writes);
    for w in &mut writes {
        if let Some(v) = w.value.as_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
    result.map_err(|e| ApiError::state(format!("state does not load: {e}")))?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(records: &[(RecordId, &[u8])]) -> MemStore {
        let mut s = MemStore::new();
        let writes: Vec<Write> = records
            .iter()
            .map(|(id, v)| Write {
                id: *id,
                value: Some(v.to_vec()),
            })
            .collect();
        s.commit(&writes).unwrap();
        s
    }

    #[test]
    fn round_trip() {
        let s = store_with(&[(0x0100, b"device"), (0x0110, b""), (0x0101, b"counters")]);
        let blob = encode(&s).unwrap();
        let back = decode(&blob).unwrap();
        assert_eq!(back.ids().unwrap(), vec![0x0100, 0x0101, 0x0110]);
        assert_eq!(back.read(0x0101).unwrap().unwrap(), b"counters");
        assert_eq!(back.read(0x0110).unwrap().unwrap(), b"");
        assert_eq!(encode(&back).unwrap(), blob);
    }

    #[test]
    fn every_damage_is_an_error() {
        let blob = encode(&store_with(&[(1, b"abc"), (2, b"defg")])).unwrap();
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x40;
            let e = decode(&b).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::State, "byte {i}");
        }
        for n in 0..blob.len() {
            assert!(decode(&blob[..n]).is_err(), "truncated to {n}");
        }
        assert!(decode(&[blob.as_slice(), b"x"].concat()).is_err());
    }

    #[test]
    fn well_checked_but_malformed_bodies_are_refused() {
        let seal = |body: &[u8]| [body, &sha256(body)].concat();
        let mut dup = MAGIC.to_vec();
        dup.extend_from_slice(&[1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(decode(&seal(&dup)).unwrap_err().message.contains("order"));
        let mut long = MAGIC.to_vec();
        long.extend_from_slice(&[1, 0, 1, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(decode(&seal(&long)).is_err());
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&[2, 0, 0]);
        assert!(decode(&seal(&v2)).unwrap_err().message.contains("version"));
    }
}
