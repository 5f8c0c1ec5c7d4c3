//! The Merkle tree's right edge, kept in memory while appending or verifying.
//!
//! Hashing and proofs are RFC 6962 / RFC 9162 as implemented by `tlog_tiles` (a port of
//! Go's `sumdb/tlog`). Hashes are stored in its dense "stored hash" order (Crosby and
//! Wallach): record `n` adds its leaf hash and one hash per subtree it completes, at
//! `stored_hash_index(0, n)` onwards. A tlog-tiles tile is then a run of stored hashes of
//! one level, so tiles are read, never recomputed.

use tlog_tiles::{Hash, node_hash, record_hash};

/// The roots of the complete subtrees covering the first `size` leaves, largest first:
/// enough to append the next leaf and to compute the tree head.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)`; levels strictly decrease.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The empty tree.
    #[must_use]
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its subtree hashes, as
    /// returned for the indexes of [`Frontier::indexes`].
    ///
    /// # Panics
    /// If `hashes` does not have one hash per subtree.
    #[must_use]
    pub fn from_hashes(size: u64, hashes: &[Hash]) -> Frontier {
        let levels: Vec<u8> = (0..64u8).rev().filter(|l| size >> l & 1 == 1).collect();
        assert_eq!(levels.len(), hashes.len(), "one hash per complete subtree");
        Frontier {
            size,
            nodes: levels.into_iter().zip(hashes.iter().copied()).collect(),
        }
    }

    /// The stored-hash indexes of the complete subtrees of a tree of `size` leaves,
    /// largest first (the order [`Frontier::from_hashes`] takes).
    #[must_use]
    pub fn indexes(size: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size >> level & 1 == 1 {
                out.push(tlog_tiles::stored_hash_index(level, start >> level));
                start += 1 << level;
            }
        }
        out
    }

    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a record; returns the hashes to store for it, in stored order: its leaf
    /// hash, then each subtree root it completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<Hash> {
        self.push_hash(record_hash(data))
    }

    /// [`Frontier::push`] for a leaf hash already computed.
    pub fn push_hash(&mut self, leaf: Hash) -> Vec<Hash> {
        let mut stored = vec![leaf];
        let mut level = 0u8;
        let mut h = leaf;
        while let Some(&(l, left)) = self.nodes.last() {
            if l != level {
                break;
            }
            self.nodes.pop();
            h = node_hash(left, h);
            level += 1;
            stored.push(h);
        }
        self.nodes.push((level, h));
        self.size += 1;
        stored
    }

    /// The RFC 6962 tree head of the leaves pushed so far.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut h)) = it.next() else {
            return tlog_tiles::EMPTY_HASH;
        };
        for &(_, left) in it {
            h = node_hash(left, h);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tlog_tiles::{HashReader, stored_hash_index, stored_hashes, tree_hash};

    struct Mem(RefCell<Vec<Hash>>);
    impl HashReader for Mem {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            let v = self.0.borrow();
            Ok(indexes
                .iter()
                .map(|&i| v[usize::try_from(i).expect("index")])
                .collect())
        }
    }

    /// The frontier produces exactly the stored hashes and roots `tlog_tiles` computes.
    #[test]
    fn agrees_with_tlog_tiles() {
        let mem = Mem(RefCell::new(Vec::new()));
        let mut f = Frontier::new();
        for n in 0..300u64 {
            let data = format!("record {n}");
            let expected = stored_hashes(n, data.as_bytes(), &mem).expect("stored");
            assert_eq!(
                stored_hash_index(0, n),
                u64::try_from(mem.0.borrow().len()).expect("len")
            );
            let got = f.push(data.as_bytes());
            assert_eq!(got, expected, "record {n}");
            mem.0.borrow_mut().extend(expected);
            assert_eq!(
                f.root(),
                tree_hash(n + 1, &mem).expect("root"),
                "size {}",
                n + 1
            );
            let idx = Frontier::indexes(n + 1);
            let again = Frontier::from_hashes(n + 1, &mem.read_hashes(&idx).expect("read"));
            assert_eq!(again.root(), f.root());
        }
    }
}
