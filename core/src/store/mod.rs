//! The card's persistent memory: records changed only by all-or-nothing commits.
//!
//! Like Java Card's transaction, an applet gathers its writes in a [`Transaction`] (a RAM
//! commit buffer) and commits them at once: after a power loss at any instant, the store
//! re-opens holding either every write of the transaction or none of them. Implementations:
//! [`MemStore`] (tests and wasm; can be told to lose power at write *k*) and the simulator's
//! append/shadow file store (`card-sim`). A store that cannot be read back is an error,
//! never an empty card.

mod mem;
mod sealed;
mod txn;

pub use mem::{MemStore, Nvm, PowerCut};
pub use sealed::{SealedStore, StorageKey, STORAGE_KEY_LEN};
pub use txn::Transaction;

use alloc::vec::Vec;

/// A record's address. Applets own disjoint ranges (the PSD uses `0x01xx`).
pub type RecordId = u16;

/// Why the store could not read or commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Power was lost during the commit; the device is dead until re-opened.
    PowerLost,
    /// The stored bytes are damaged or of an unknown format; never treated as empty.
    Corrupt(&'static str),
    /// The backing medium failed (the message says how).
    Io(alloc::string::String),
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::PowerLost => f.write_str("power lost during commit"),
            StoreError::Corrupt(why) => write!(f, "persistent state corrupt: {why}"),
            StoreError::Io(why) => write!(f, "persistent store I/O error: {why}"),
        }
    }
}

/// One write of a commit: set record `id` to `value`, or delete it when `value` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The record.
    pub id: RecordId,
    /// Its new content, or `None` to delete it.
    pub value: Option<Vec<u8>>,
}

/// Persistent memory with atomic multi-record commits.
pub trait Store {
    /// The committed content of record `id`, if any.
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every record id that holds a value, ascending.
    fn ids(&self) -> Result<Vec<RecordId>, StoreError>;

    /// Makes all `writes` durable at once. On `Err` the caller must assume nothing
    /// happened *yet*: after a power loss, re-opening the store shows either all the
    /// writes or none.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;

    /// Makes sure no earlier value of any record survives on the medium (after a commit
    /// that erased a secret, such as a revoked key's scalar). A store that overwrites in
    /// place has nothing to do; an append-only one rewrites itself. The commits stand
    /// whatever this answers.
    fn forget_history(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<S: Store + ?Sized> Store for &mut S {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).read(id)
    }
    fn ids(&self) -> Result<Vec<RecordId>, StoreError> {
        (**self).ids()
    }
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        (**self).commit(writes)
    }
    fn forget_history(&mut self) -> Result<(), StoreError> {
        (**self).forget_history()
    }
}

impl<S: Store + ?Sized> Store for alloc::boxed::Box<S> {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).read(id)
    }
    fn ids(&self) -> Result<Vec<RecordId>, StoreError> {
        (**self).ids()
    }
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        (**self).commit(writes)
    }
    fn forget_history(&mut self) -> Result<(), StoreError> {
        (**self).forget_history()
    }
}

impl core::error::Error for StoreError {}
