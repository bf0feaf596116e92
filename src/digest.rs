//! Step 6 of the data path: blake3 digests of rows, batches and tables.
//!
//! A row's hash is blake3 (keyed with a fixed, derived key for domain separation) of its
//! binary tuple: the same bytes on both sides when the values are equal. For comparing
//! sets of rows regardless of order and of how they were split into batches, each row
//! also expands (blake3 XOF) into 32 lanes of 64 bits that are summed lane by lane: a
//! multiset hash in the style of LtHash. Sums compose (batch -> table), so a table digest
//! does not depend on batch boundaries or worker order, and at 2048 bits the
//! generalised-birthday attacks that break a plain 256-bit sum are out of reach.

use std::sync::OnceLock;

/// Lanes of the multiset accumulator.
pub const LANES: usize = 32;

fn row_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| blake3::derive_key("shadan 2026-11 row digest v1", b""))
}

/// The 32-byte hash of one row (its binary tuple).
pub fn row_hash(tuple: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(row_key(), tuple).as_bytes()
}

/// The hash of a tuple's first `fields` fields as if they were the whole tuple: equal to
/// [`row_hash`] of the tuple without its trailing fields. Lets a source row carry an extra
/// audit-only column and still be compared with the target row.
pub fn row_hash_of_prefix(tuple: &[u8], fields: usize) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(row_key());
    hasher.update(&(fields as i16).to_be_bytes());
    hasher.update(crate::copy::tuple::key_bytes(tuple, fields));
    *hasher.finalize().as_bytes()
}

/// An order-independent digest of a multiset of rows: row count and lane sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accumulator {
    /// Rows added.
    pub rows: u64,
    lanes: [u64; LANES],
}

impl Default for Accumulator {
    fn default() -> Self {
        Self {
            rows: 0,
            lanes: [0; LANES],
        }
    }
}

impl Accumulator {
    /// Adds one row given as its binary tuple and returns its [`row_hash`] (the first 32
    /// bytes of the same XOF output), so a row is hashed once for both uses.
    pub fn add_row_hashed(&mut self, tuple: &[u8]) -> [u8; 32] {
        let mut out = [0u8; LANES * 8];
        let mut hasher = blake3::Hasher::new_keyed(row_key());
        hasher.update(tuple);
        hasher.finalize_xof().fill(&mut out);
        self.add_lanes(&out);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&out[..32]);
        hash
    }

    fn add_lanes(&mut self, out: &[u8; LANES * 8]) {
        for i in 0..LANES {
            let mut word = [0u8; 8];
            word.copy_from_slice(&out[i * 8..i * 8 + 8]);
            self.lanes[i] = self.lanes[i].wrapping_add(u64::from_le_bytes(word));
        }
        self.rows += 1;
    }

    /// Adds one row given as its binary tuple.
    pub fn add_row(&mut self, tuple: &[u8]) {
        let mut hasher = blake3::Hasher::new_keyed(row_key());
        hasher.update(tuple);
        let mut out = [0u8; LANES * 8];
        hasher.finalize_xof().fill(&mut out);
        self.add_lanes(&out);
    }

    /// Adds another accumulator (the union of two multisets).
    pub fn merge(&mut self, other: &Accumulator) {
        for (a, b) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.rows += other.rows;
    }

    /// Removes a sub-multiset added before (the rows a batch lost or replaced): the
    /// digest of what remains, as if those rows had never been added.
    pub fn remove(&mut self, other: &Accumulator) {
        for (a, b) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *a = a.wrapping_sub(*b);
        }
        self.rows = self.rows.saturating_sub(other.rows);
    }

    /// The lanes as bytes, for storing a batch digest in the target's state.
    pub fn lane_bytes(&self) -> Vec<u8> {
        self.lanes.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    /// Rebuilds an accumulator from stored lane bytes and a row count.
    pub fn from_lane_bytes(rows: u64, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LANES * 8 {
            return None;
        }
        let mut lanes = [0u64; LANES];
        for (lane, b) in lanes.iter_mut().zip(bytes.chunks_exact(8)) {
            *lane = u64::from_le_bytes(b.try_into().ok()?);
        }
        Some(Self { rows, lanes })
    }

    /// The digest as hex: blake3 over the row count and the lanes.
    pub fn hex(&self) -> String {
        let mut hasher = blake3::Hasher::new_derive_key("shadan 2026-11 table digest v1");
        hasher.update(&self.rows.to_le_bytes());
        hasher.update(&self.lane_bytes());
        hasher.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_batching_but_not_content() {
        let rows: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut whole = Accumulator::default();
        rows.iter().for_each(|r| whole.add_row(r));
        let (mut a, mut b) = (Accumulator::default(), Accumulator::default());
        rows.iter().rev().take(37).for_each(|r| a.add_row(r));
        rows.iter().rev().skip(37).for_each(|r| b.add_row(r));
        a.merge(&b);
        assert_eq!(a.hex(), whole.hex());
        let mut changed = Accumulator::default();
        rows.iter().skip(1).for_each(|r| changed.add_row(r));
        changed.add_row(b"other");
        assert_ne!(changed.hex(), whole.hex());
        let stored = Accumulator::from_lane_bytes(whole.rows, &whole.lane_bytes()).unwrap();
        assert_eq!(stored, whole);
    }

    #[test]
    fn prefix_hash_equals_the_hash_of_the_shorter_tuple() {
        let mut long = Vec::new();
        crate::copy::tuple::encode_tuple(
            &mut long,
            [Some(&b"k"[..]), None, Some(&b"\x01"[..])].into_iter(),
        );
        let mut short = Vec::new();
        crate::copy::tuple::encode_tuple(&mut short, [Some(&b"k"[..]), None].into_iter());
        assert_eq!(row_hash_of_prefix(&long, 2), row_hash(&short));
        assert_ne!(row_hash_of_prefix(&long, 1), row_hash(&short));
    }

    #[test]
    fn the_xof_prefix_is_the_row_hash() {
        let mut acc = Accumulator::default();
        assert_eq!(acc.add_row_hashed(b"tuple"), row_hash(b"tuple"));
        let mut plain = Accumulator::default();
        plain.add_row(b"tuple");
        assert_eq!(acc, plain);
    }

    #[test]
    fn removing_rows_gives_the_digest_of_the_rest() {
        let mut all = Accumulator::default();
        let mut rest = Accumulator::default();
        let mut gone = Accumulator::default();
        for i in 0..50u32 {
            all.add_row(&i.to_be_bytes());
            if i % 7 == 0 {
                gone.add_row(&i.to_be_bytes());
            } else {
                rest.add_row(&i.to_be_bytes());
            }
        }
        all.remove(&gone);
        assert_eq!(all, rest);
    }

    #[test]
    fn a_duplicated_row_changes_the_digest() {
        let mut once = Accumulator::default();
        once.add_row(b"r");
        let mut twice = once;
        twice.add_row(b"r");
        assert_ne!(once.hex(), twice.hex());
    }
}
