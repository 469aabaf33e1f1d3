//! An in-memory store that behaves like a chip's EEPROM under power loss.
//!
//! The memory ([`Nvm`]) is a set of cells written one at a time; a cell write is the unit
//! a power cut can interrupt. A commit of *n* records makes 2*n* + 2 cell writes, in the
//! order a Java Card commit buffer does:
//!
//! 1. each record into a journal cell,
//! 2. the commit marker (count + digest of the journal) — **the commit point**,
//! 3. each record into its home cell,
//! 4. the marker erased.
//!
//! Re-opening ([`MemStore::open`]) finishes a commit whose marker is intact and discards
//! one whose marker is missing or torn. Every cell carries a check value bound to its
//! address, so a torn write is detected rather than believed. Tests can cut power at write
//! *k* ([`PowerCut`]), either cleanly (the write never happens) or tearing it (half the
//! new bytes land).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{RecordId, Store, StoreError, Write};
use crate::crypto::sha256;

const HOME: u32 = 0x0000_0000;
const JOURNAL: u32 = 0x0001_0000;
const MARKER: u32 = 0x0002_0000;
const CHECK_LEN: usize = 8;

/// The raw non-volatile memory of a simulated chip: what survives a power cut.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nvm {
    cells: BTreeMap<u32, Vec<u8>>,
}

impl Nvm {
    /// A blank chip.
    pub fn blank() -> Self {
        Self::default()
    }

    /// Flips one bit of the home cell of record `id` (for tests of corrupted state).
    /// Returns false if the record has no home cell.
    pub fn corrupt_record(&mut self, id: RecordId) -> bool {
        match self.cells.get_mut(&(HOME | u32::from(id))) {
            Some(cell) if !cell.is_empty() => {
                cell[0] ^= 0x01;
                true
            }
            _ => false,
        }
    }
}

/// Where and how power is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerCut {
    /// The 0-based index (counted over the store's life, see [`MemStore::writes`]) of the
    /// cell write during which power is lost.
    pub at_write: u64,
    /// If true, half of the new bytes of that write land (a torn write); otherwise the
    /// write does not happen at all.
    pub torn: bool,
}

/// The in-memory [`Store`].
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    nvm: Nvm,
    writes: u64,
    cut: Option<PowerCut>,
    dead: bool,
}

fn frame(key: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + CHECK_LEN);
    v.extend_from_slice(payload);
    v.extend_from_slice(&check(key, payload));
    v
}

fn check(key: u32, payload: &[u8]) -> [u8; CHECK_LEN] {
    let mut input = Vec::with_capacity(4 + payload.len());
    input.extend_from_slice(&key.to_be_bytes());
    input.extend_from_slice(payload);
    let h = sha256(&input);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&h[..CHECK_LEN]);
    out
}

/// The payload of a cell if its check value holds.
fn unframe(key: u32, cell: &[u8]) -> Option<&[u8]> {
    let split = cell.len().checked_sub(CHECK_LEN)?;
    let (payload, tag) = cell.split_at(split);
    (check(key, payload) == tag).then_some(payload)
}

impl MemStore {
    /// A store on a blank chip.
    pub fn new() -> Self {
        Self::default()
    }

    /// Powers up a chip: finishes or discards an interrupted commit, then checks every
    /// record. Damaged records are an error, never an empty store.
    pub fn open(nvm: Nvm) -> Result<Self, StoreError> {
        let mut store = MemStore {
            nvm,
            writes: 0,
            cut: None,
            dead: false,
        };
        store.recover()?;
        for (&key, cell) in &store.nvm.cells {
            if key & 0xFFFF_0000 == HOME && unframe(key, cell).is_none() {
                return Err(StoreError::Corrupt("record check value mismatch"));
            }
        }
        Ok(store)
    }

    /// Powers up a chip with a power cut armed during the recovery itself (a second power
    /// loss while an interrupted commit is being finished). `Err` hands back the memory as
    /// that second cut left it.
    pub fn open_with_cut(nvm: Nvm, cut: PowerCut) -> Result<Self, Nvm> {
        let mut store = MemStore {
            nvm,
            writes: 0,
            cut: Some(cut),
            dead: false,
        };
        match store.recover() {
            Ok(()) => {
                store.cut = None;
                Ok(store)
            }
            Err(_) => Err(store.nvm),
        }
    }

    /// The chip's memory as it is now (what a power cut would leave).
    pub fn nvm(&self) -> &Nvm {
        &self.nvm
    }

    /// Cell writes made since this store was opened.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Arms (or, with `None`, disarms) a power cut.
    pub fn set_power_cut(&mut self, cut: Option<PowerCut>) {
        self.cut = cut;
    }

    /// Whether power was lost (every later write fails until re-opened).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    fn cell_write(&mut self, key: u32, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        if self.dead {
            return Err(StoreError::PowerLost);
        }
        let index = self.writes;
        self.writes += 1;
        if let Some(cut) = self.cut.filter(|c| c.at_write == index) {
            self.dead = true;
            if cut.torn {
                // Half of the new bytes overwrite the start of the cell; an erase that is
                // torn leaves the old bytes half-cleared.
                let old = self.nvm.cells.get(&key).cloned().unwrap_or_default();
                let torn = match value {
                    Some(new) => {
                        let mut t = new[..new.len() / 2].to_vec();
                        if old.len() > t.len() {
                            t.extend_from_slice(&old[t.len()..]);
                        }
                        t
                    }
                    None => {
                        let mut t = old;
                        let half = t.len() / 2;
                        t[..half].iter_mut().for_each(|b| *b = 0xFF);
                        t
                    }
                };
                self.nvm.cells.insert(key, torn);
            }
            return Err(StoreError::PowerLost);
        }
        match value {
            Some(v) => self.nvm.cells.insert(key, v),
            None => self.nvm.cells.remove(&key),
        };
        Ok(())
    }

    fn journal_entries(&self, count: u16) -> Option<(Vec<Write>, [u8; 32])> {
        let mut entries = Vec::with_capacity(usize::from(count));
        let mut all = Vec::new();
        for slot in 0..u32::from(count) {
            let key = JOURNAL | slot;
            let cell = self.nvm.cells.get(&key)?;
            all.extend_from_slice(cell);
            let payload = unframe(key, cell)?;
            let (head, value) = payload.split_at_checked(3)?;
            let id = u16::from_be_bytes([head[0], head[1]]);
            let value = match head[2] {
                0 => None,
                1 => Some(value.to_vec()),
                _ => return None,
            };
            entries.push(Write { id, value });
        }
        Some((entries, sha256(&all)))
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        let Some(marker) = self.nvm.cells.get(&MARKER).cloned() else {
            return Ok(());
        };
        let committed = unframe(MARKER, &marker).and_then(|m| {
            let (count, digest) = m.split_at_checked(2)?;
            let count = u16::from_be_bytes([count[0], count[1]]);
            let (entries, actual) = self.journal_entries(count)?;
            (actual.as_slice() == digest).then_some(entries)
        });
        if let Some(entries) = committed {
            for w in entries {
                self.apply(&w)?;
            }
        }
        // A marker that is torn (or whose journal does not match it) was never a commit
        // point: the transaction is discarded.
        self.cell_write(MARKER, None)
    }

    fn apply(&mut self, w: &Write) -> Result<(), StoreError> {
        let key = HOME | u32::from(w.id);
        self.cell_write(key, w.value.as_ref().map(|v| frame(key, v)))
    }
}

impl Store for MemStore {
    fn read(&self, id: RecordId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = HOME | u32::from(id);
        match self.nvm.cells.get(&key) {
            None => Ok(None),
            Some(cell) => unframe(key, cell)
                .map(|p| Some(p.to_vec()))
                .ok_or(StoreError::Corrupt("record check value mismatch")),
        }
    }

    fn ids(&self) -> Result<Vec<RecordId>, StoreError> {
        Ok(self
            .nvm
            .cells
            .keys()
            .filter(|k| *k & 0xFFFF_0000 == HOME)
            .map(|k| (*k & 0xFFFF) as RecordId)
            .collect())
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let count = u16::try_from(writes.len())
            .map_err(|_| StoreError::Io("too many writes in one transaction".into()))?;
        let mut all = Vec::new();
        // `count` is `writes.len()`, so the zip visits every write.
        for (slot, w) in (0..count).zip(writes) {
            let key = JOURNAL | u32::from(slot);
            let mut payload = Vec::with_capacity(3 + w.value.as_ref().map_or(0, Vec::len));
            payload.extend_from_slice(&w.id.to_be_bytes());
            match &w.value {
                Some(v) => {
                    payload.push(1);
                    payload.extend_from_slice(v);
                }
                None => payload.push(0),
            }
            let cell = frame(key, &payload);
            all.extend_from_slice(&cell);
            self.cell_write(key, Some(cell))?;
        }
        let mut marker = Vec::with_capacity(34);
        marker.extend_from_slice(&count.to_be_bytes());
        marker.extend_from_slice(&sha256(&all));
        self.cell_write(MARKER, Some(frame(MARKER, &marker)))?;
        for w in writes {
            self.apply(w)?;
        }
        self.cell_write(MARKER, None)
    }

    /// Erases the journal: once the marker is gone its cells are dead copies, and an older
    /// commit's may still hold a record's earlier value (a key erased since).
    fn forget_history(&mut self) -> Result<(), StoreError> {
        let journal: Vec<u32> = self
            .nvm
            .cells
            .keys()
            .copied()
            .filter(|k| *k & 0xFFFF_0000 == JOURNAL)
            .collect();
        for key in journal {
            self.cell_write(key, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn w(id: RecordId, v: &[u8]) -> Write {
        Write {
            id,
            value: Some(v.to_vec()),
        }
    }

    #[test]
    fn commit_then_reopen_reads_back() {
        let mut s = MemStore::new();
        s.commit(&[w(1, b"one"), w(2, b"two")]).unwrap();
        let s = MemStore::open(s.nvm().clone()).unwrap();
        assert_eq!(s.read(1).unwrap(), Some(b"one".to_vec()));
        assert_eq!(s.ids().unwrap(), vec![1, 2]);
    }

    #[test]
    fn every_cut_point_is_all_or_nothing() {
        let mut base = MemStore::new();
        base.commit(&[w(1, b"old-1"), w(2, b"old-2")]).unwrap();
        let start = MemStore::open(base.nvm().clone()).unwrap();
        let txn = [w(1, b"new-1"), Write { id: 2, value: None }, w(3, b"new-3")];
        let mut cuts = 0;
        for torn in [false, true] {
            for k in 0.. {
                let mut s = start.clone();
                s.set_power_cut(Some(PowerCut { at_write: k, torn }));
                if s.commit(&txn).is_ok() {
                    break;
                }
                cuts += 1;
                let r = MemStore::open(s.nvm().clone()).unwrap();
                let state = (r.read(1).unwrap(), r.read(2).unwrap(), r.read(3).unwrap());
                let old = (Some(b"old-1".to_vec()), Some(b"old-2".to_vec()), None);
                let new = (Some(b"new-1".to_vec()), None, Some(b"new-3".to_vec()));
                assert!(
                    state == old || state == new,
                    "cut {k} torn {torn}: {state:?}"
                );
                // Writes 0-2 fill the journal and write 3 is the marker: a cut at or before
                // it (clean or torn) leaves the old state; any later cut, the new one.
                assert_eq!(state == new, k >= 4, "cut {k} torn {torn}");
            }
        }
        assert_eq!(cuts, 2 * 8);
    }

    #[test]
    fn a_second_power_cut_during_recovery_still_gives_all_or_nothing() {
        let mut base = MemStore::new();
        base.commit(&[w(1, b"old-1")]).unwrap();
        let start = MemStore::open(base.nvm().clone()).unwrap();
        let txn = [w(1, b"new-1"), w(2, b"new-2")];
        let mut double_cuts = 0;
        for torn in [false, true] {
            for k in 0..6 {
                let mut s = start.clone();
                s.set_power_cut(Some(PowerCut { at_write: k, torn }));
                assert!(s.commit(&txn).is_err());
                let after_one = MemStore::open(s.nvm().clone()).unwrap();
                let expected = (after_one.read(1).unwrap(), after_one.read(2).unwrap());
                for j in 0.. {
                    for torn2 in [false, true] {
                        match MemStore::open_with_cut(
                            s.nvm().clone(),
                            PowerCut {
                                at_write: j,
                                torn: torn2,
                            },
                        ) {
                            Ok(_) => {}
                            Err(nvm) => {
                                double_cuts += 1;
                                let r = MemStore::open(nvm).unwrap();
                                let got = (r.read(1).unwrap(), r.read(2).unwrap());
                                assert_eq!(got, expected, "cut {k}/{torn}, then {j}/{torn2}");
                            }
                        }
                    }
                    if MemStore::open_with_cut(
                        s.nvm().clone(),
                        PowerCut {
                            at_write: j,
                            torn: false,
                        },
                    )
                    .is_ok()
                    {
                        break;
                    }
                }
            }
        }
        assert!(double_cuts > 10, "recovery was cut {double_cuts} times");
    }

    #[test]
    fn damaged_record_is_an_error_not_a_blank_store() {
        let mut s = MemStore::new();
        s.commit(&[w(7, b"registers")]).unwrap();
        let mut nvm = s.nvm().clone();
        assert!(nvm.corrupt_record(7));
        assert!(matches!(MemStore::open(nvm), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn dead_store_refuses_writes() {
        let mut s = MemStore::new();
        s.set_power_cut(Some(PowerCut {
            at_write: 0,
            torn: false,
        }));
        assert_eq!(s.commit(&[w(1, b"x")]), Err(StoreError::PowerLost));
        assert_eq!(s.commit(&[w(1, b"x")]), Err(StoreError::PowerLost));
        assert!(s.is_dead());
    }
}
