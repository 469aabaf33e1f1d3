//! The commit buffer applets write into.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{RecordId, Store, StoreError, Write};

/// Writes gathered in RAM, committed to a [`Store`] all at once or not at all.
///
/// Dropping a transaction without [`Transaction::commit`] aborts it: nothing reaches the
/// store.
pub struct Transaction<'s> {
    store: &'s mut dyn Store,
    writes: BTreeMap<RecordId, Option<Vec<u8>>>,
}

impl<'s> Transaction<'s> {
    /// Opens a transaction on `store`.
    pub fn begin(store: &'s mut dyn Store) -> Self {
        Self {
            store,
            writes: BTreeMap::new(),
        }
    }

    /// Reads a record as this transaction would leave it.
    pub fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(&id) {
            Some(v) => Ok(v.clone()),
            None => self.store.read(id),
        }
    }

    /// Sets record `id` (takes effect at commit).
    pub fn write(&mut self, id: RecordId, value: Vec<u8>) {
        self.writes.insert(id, Some(value));
    }

    /// Deletes record `id` (takes effect at commit).
    pub fn remove(&mut self, id: RecordId) {
        self.writes.insert(id, None);
    }

    /// Commits every write atomically.
    pub fn commit(self) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes: Vec<Write> = self
            .writes
            .into_iter()
            .map(|(id, value)| Write { id, value })
            .collect();
        self.store.commit(&writes)
    }
}
