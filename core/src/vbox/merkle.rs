//! The sharded Merkle forest that keeps meter records fresh (docs/virtual-meter.md §3).
//!
//! Records sit at dense slots. Slot `s` lies in shard `s >> depth`, at index
//! `s & (2^depth - 1)` of a complete binary tree of that depth. Hashes follow RFC 9162's
//! domain separation: leaf = SHA-256(`00` ‖ record), node = SHA-256(`01` ‖ left ‖ right); an
//! empty slot's leaf is SHA-256(`00`) (the leaf of an empty record, which no meter record
//! is), and the empty subtree of height `h` has the precomputed hash [`EmptyHashes::at`].
//!
//! The box keeps only each shard's root. The database (untrusted) keeps every inner node and
//! sends a record's `depth` siblings with each command; [`root_from`] recomputes the root
//! from a leaf and its siblings, so one function both **verifies** a path (the result must
//! be the root the box holds) and **updates** it (the same siblings with the new leaf give
//! the new root). Nothing here allocates.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Deepest tree the box accepts: 2^24 slots per shard (the box's 4,096 shards of depth 12
/// already hold 16.7 M meters; see docs/virtual-meter.md §3 for the sizes).
pub const MAX_DEPTH: u8 = 24;

/// Leaf hash of a record: SHA-256(`00` ‖ record).
pub fn leaf_hash(record: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(record);
    h.finalize().into()
}

/// Inner node hash: SHA-256(`01` ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hashes of empty subtrees of height 0 (an empty leaf) to [`MAX_DEPTH`], computed once
/// (25 SHA-256 calls) and kept by whoever checks paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmptyHashes([Hash; MAX_DEPTH as usize + 1]);

impl EmptyHashes {
    /// Computes the table.
    pub fn new() -> Self {
        let mut t = [[0u8; 32]; MAX_DEPTH as usize + 1];
        t[0] = leaf_hash(&[]);
        for h in 1..t.len() {
            t[h] = node_hash(&t[h - 1], &t[h - 1]);
        }
        Self(t)
    }

    /// The hash of an empty subtree of height `height` (0 = an empty leaf). Heights above
    /// [`MAX_DEPTH`] answer the highest one (callers check the depth first).
    pub fn at(&self, height: u8) -> Hash {
        self.0[usize::from(height.min(MAX_DEPTH))]
    }
}

impl Default for EmptyHashes {
    fn default() -> Self {
        Self::new()
    }
}

/// The root of a tree whose leaf at `index` hashes to `leaf`, given that leaf's siblings
/// from the bottom up (`siblings[0]` is the leaf's neighbour). Bit `h` of `index` says
/// whether the node at height `h` is a right child. Bits of `index` at or above
/// `siblings.len()` are ignored: the caller checks that the index fits the depth.
pub fn root_from(leaf: &Hash, index: u32, siblings: &[Hash]) -> Hash {
    let mut node = *leaf;
    for (h, sibling) in siblings.iter().enumerate() {
        let right = h < 32 && (index >> h) & 1 == 1;
        node = if right {
            node_hash(sibling, &node)
        } else {
            node_hash(&node, sibling)
        };
    }
    node
}

/// The siblings of a proof as the command carries them: `depth` hashes of 32 bytes, bottom
/// up. `None` if the bytes are not exactly that.
pub fn parse_siblings(bytes: &[u8], depth: u8) -> Option<alloc::vec::Vec<Hash>> {
    if depth > MAX_DEPTH || bytes.len() != usize::from(depth) * 32 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect(),
    )
}

/// A whole shard held in memory: every leaf hash, for the host side (the data center's
/// database, tests, the fuzz harness) to compute roots and siblings the way the box checks
/// them. Sparse: only non-empty leaves are kept, inner nodes are recomputed on demand
/// (fine for tests and for the proof sizes here; the data center keeps inner nodes in its
/// database instead).
#[derive(Clone, Debug)]
pub struct ShardTree {
    depth: u8,
    empty: EmptyHashes,
    leaves: alloc::collections::BTreeMap<u32, Hash>,
}

impl ShardTree {
    /// An empty shard of `depth` (at most [`MAX_DEPTH`]).
    pub fn new(depth: u8) -> Self {
        Self {
            depth: depth.min(MAX_DEPTH),
            empty: EmptyHashes::new(),
            leaves: alloc::collections::BTreeMap::new(),
        }
    }

    /// Sets the leaf at `index` to the hash of `record`.
    pub fn set(&mut self, index: u32, record: &[u8]) {
        self.leaves.insert(index, leaf_hash(record));
    }

    /// The hash of the subtree of `height` whose leftmost leaf is `start`.
    fn subtree(&self, height: u8, start: u32) -> Hash {
        let width = 1u64 << height;
        let end = u64::from(start) + width;
        let any = self
            .leaves
            .range(start..)
            .next()
            .is_some_and(|(k, _)| u64::from(*k) < end);
        if !any {
            return self.empty.at(height);
        }
        if height == 0 {
            return self.leaves.get(&start).copied().unwrap_or(self.empty.at(0));
        }
        let half = 1u32 << (height - 1);
        node_hash(
            &self.subtree(height - 1, start),
            &self.subtree(height - 1, start.wrapping_add(half)),
        )
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.subtree(self.depth, 0)
    }

    /// The siblings of the leaf at `index`, bottom up.
    pub fn siblings(&self, index: u32) -> alloc::vec::Vec<Hash> {
        (0..self.depth)
            .map(|h| {
                let start = ((index >> h) ^ 1) << h;
                self.subtree(h, start)
            })
            .collect()
    }

    /// The siblings as the command carries them (`depth` × 32 bytes).
    pub fn proof(&self, index: u32) -> alloc::vec::Vec<u8> {
        self.siblings(index).concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const DEPTH: u8 = 6;

    fn tree(records: &[(u32, Vec<u8>)]) -> ShardTree {
        let mut t = ShardTree::new(DEPTH);
        for (i, r) in records {
            t.set(*i, r);
        }
        t
    }

    #[test]
    fn empty_root_is_the_empty_subtree_and_domains_are_separated() {
        let e = EmptyHashes::new();
        assert_eq!(ShardTree::new(DEPTH).root(), e.at(DEPTH));
        assert_ne!(e.at(0), [0; 32]);
        // A leaf can never read as a node: the first byte of what is hashed differs.
        let (l, r) = ([1u8; 32], [2u8; 32]);
        let mut as_leaf = Vec::from(l);
        as_leaf.extend_from_slice(&r);
        assert_ne!(leaf_hash(&as_leaf), node_hash(&l, &r));
    }

    fn records() -> impl Strategy<Value = Vec<(u32, Vec<u8>)>> {
        proptest::collection::vec(
            (
                0u32..(1 << DEPTH),
                proptest::collection::vec(any::<u8>(), 1..40),
            ),
            1..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The path of every leaf proves the root; the same siblings with a new leaf give
        /// the root of the tree with that leaf replaced.
        #[test]
        fn paths_verify_and_updates_compose(recs in records(), new in proptest::collection::vec(any::<u8>(), 1..40)) {
            let mut t = tree(&recs);
            let root = t.root();
            let (i, _) = &recs[0];
            let current = t.leaves[i];
            let sib = t.siblings(*i);
            prop_assert_eq!(root_from(&current, *i, &sib), root);
            // Update: the new root from the old siblings is the rebuilt tree's root.
            let predicted = root_from(&leaf_hash(&new), *i, &sib);
            t.set(*i, &new);
            prop_assert_eq!(predicted, t.root());
            // Two updates in a row, each with the siblings of the tree of its time.
            let (j, _) = recs[recs.len() - 1].clone();
            let sib_j = t.siblings(j);
            let predicted = root_from(&leaf_hash(b"second"), j, &sib_j);
            t.set(j, b"second");
            prop_assert_eq!(predicted, t.root());
        }

        /// A changed leaf, sibling or index does not prove the root; nor does the record
        /// that was current before an update.
        #[test]
        fn any_change_is_refused(recs in records(), bit in 0usize..256, level in 0usize..DEPTH as usize) {
            let mut t = tree(&recs);
            let (i, rec) = recs[0].clone();
            let leaf = leaf_hash(&rec);
            // The last write of index i wins in `tree`; use what the tree holds.
            let leaf = if t.leaves[&i] == leaf { leaf } else { t.leaves[&i] };
            let root = t.root();
            let sib = t.siblings(i);
            let mut bad_leaf = leaf;
            bad_leaf[bit / 8] ^= 1 << (bit % 8);
            prop_assert_ne!(root_from(&bad_leaf, i, &sib), root);
            let mut bad_sib = sib.clone();
            bad_sib[level][bit / 8] ^= 1 << (bit % 8);
            prop_assert_ne!(root_from(&leaf, i, &bad_sib), root);
            // Another index: refused unless the sibling it swaps with is the node itself
            // (two identical subtrees, e.g. both empty; not the case for a filled leaf's
            // path except with a hash collision).
            let moved = i ^ (1 << level);
            prop_assert_ne!(root_from(&leaf, moved, &sib), root);
            // Stale: after the record changes, its old leaf no longer proves the root.
            t.set(i, b"changed");
            prop_assert_ne!(root_from(&leaf, i, &t.siblings(i)), t.root());
            prop_assert_ne!(root_from(&leaf, i, &sib), t.root());
        }
    }
}
