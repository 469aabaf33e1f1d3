//! A store whose records are sealed (encrypted and authenticated) under a storage key that
//! is kept apart from the stored bytes.
//!
//! The PSD's device record holds K1 and the indicium signing key. A real card keeps them in
//! its protected EEPROM; a simulated card's memory is a file (or a browser blob), so the
//! records are sealed with AES-SIV (RFC 5297, `aes-siv`) under a 256-bit storage key the
//! host keeps elsewhere, with the record ID as associated data so a sealed record cannot be
//! moved to another ID. SIV needs no nonce — the store has no randomness of its own — and
//! its only leak, equal plaintexts giving equal ciphertexts under one key and ID, tells
//! nothing here. A record that does not open is [`StoreError::Corrupt`], never an empty one.

use alloc::vec::Vec;

use aes_siv::aead::KeyInit;
use aes_siv::siv::Aes128Siv;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{RecordId, Store, StoreError, Write};

/// Length of a storage key (AES-128-SIV: two AES-128 keys).
pub const STORAGE_KEY_LEN: usize = 32;

/// The key records are sealed under.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StorageKey([u8; STORAGE_KEY_LEN]);

impl StorageKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; STORAGE_KEY_LEN]) -> Self {
        Self(bytes)
    }

    fn cipher(&self) -> Aes128Siv {
        Aes128Siv::new(&self.0.into())
    }
}

impl core::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

/// A [`Store`] that seals every record of an inner store.
pub struct SealedStore<S> {
    inner: S,
    key: StorageKey,
}

impl<S: Store> SealedStore<S> {
    /// Seals `inner`'s records under `key`.
    pub fn new(inner: S, key: StorageKey) -> Self {
        Self { inner, key }
    }

    /// The inner store (what is actually persisted).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The inner store, mutably.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Store> Store for SealedStore<S> {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(sealed) = self.inner.read(id)? else {
            return Ok(None);
        };
        self.key
            .cipher()
            .decrypt([id.to_be_bytes()], &sealed)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("record does not open under the storage key"))
    }

    fn ids(&self) -> Result<Vec<RecordId>, StoreError> {
        self.inner.ids()
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let mut cipher = self.key.cipher();
        let mut sealed = Vec::with_capacity(writes.len());
        for w in writes {
            let value = match &w.value {
                None => None,
                Some(v) => Some(
                    cipher
                        .encrypt([w.id.to_be_bytes()], v)
                        .map_err(|_| StoreError::Io("sealing a record failed".into()))?,
                ),
            };
            sealed.push(Write { id: w.id, value });
        }
        self.inner.commit(&sealed)
    }

    fn forget_history(&mut self) -> Result<(), StoreError> {
        self.inner.forget_history()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use alloc::vec;

    fn w(id: RecordId, v: &[u8]) -> Write {
        Write {
            id,
            value: Some(v.to_vec()),
        }
    }

    #[test]
    fn round_trip_and_nothing_in_clear() {
        let mut s = SealedStore::new(MemStore::new(), StorageKey::new([7; 32]));
        s.commit(&[w(1, b"K1: secret key bytes"), w(2, b"registers")])
            .unwrap();
        assert_eq!(s.read(1).unwrap(), Some(b"K1: secret key bytes".to_vec()));
        assert_eq!(s.ids().unwrap(), vec![1, 2]);
        let raw = s.inner().read(1).unwrap().unwrap();
        assert!(
            !raw.windows(6).any(|win| win == b"secret"),
            "sealed, not in clear"
        );
    }

    #[test]
    fn wrong_key_or_moved_record_is_corrupt_not_empty() {
        let mut s = SealedStore::new(MemStore::new(), StorageKey::new([7; 32]));
        s.commit(&[w(1, b"one"), w(2, b"two")]).unwrap();
        let other = SealedStore::new(s.inner().clone(), StorageKey::new([8; 32]));
        assert!(matches!(other.read(1), Err(StoreError::Corrupt(_))));
        // Record 2's sealed bytes put under ID 1 do not open.
        let moved = s.inner().read(2).unwrap();
        s.inner_mut()
            .commit(&[Write {
                id: 1,
                value: moved,
            }])
            .unwrap();
        assert!(matches!(s.read(1), Err(StoreError::Corrupt(_))));
    }
}
