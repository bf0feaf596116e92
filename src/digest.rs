//! Step 6 of the data path: blake3 digests of rows, batches and tables.
//!
//! Two multiset digests, for two threat models.
//!
//! **Checkpoints and manifests** ([`Accumulator`]) use a fixed key: they must compare
//! across runs, so anyone may know the key. A writer on the joint server who knows it can
//! choose rows; against a plain 256-bit sum of row hashes, Wagner's generalised birthday
//! attack finds rows whose hashes sum to a chosen value in about 2^(256/(1+lg k)) work
//! with k lists (2^28 for k = 256), enough to hide a change from a digest comparison.
//! Hence 2048 bits there.
//!
//! **verify** ([`KeyedSum`]) recomputes both sides and trusts nothing, so its digests need
//! not outlive the run: each run draws a fresh random 256-bit key ([`RunKey`]) from the
//! operating system, used only in the process's memory. Rows planted before the run are
//! fixed before the key exists. For two different multisets A and B, the sums collide
//! when Σ c_x·H_k(x) ≡ 0 (mod 2^256), c_x = m_A(x) − m_B(x), at least one c nonzero.
//! Taking keyed blake3 as a PRF, the H_k(x) are independent and uniform; fixing all but
//! one x with c ≠ 0, the congruence c·h ≡ r has at most 2^v (v = 2-adic valuation of c)
//! solutions among 2^256 values of h. Multiplicities are below 2^63, so the chance is at
//! most 2^(63−256) = 2^−193 per comparison, plus blake3's PRF advantage; Wagner's attack
//! does not apply because the attacker cannot evaluate H_k. That is as strong as the
//! 2048-bit fixed-key sum for this purpose, at one 32-byte hash per row instead of a
//! 256-byte XOF, and 40 bytes per bucket instead of 264. The cost: verify's digests
//! differ on every run and cannot be compared with a manifest; verify compares the two
//! sides themselves, which is the stronger check (see [`crate::verify`]).
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

/// `N` bytes from the operating system's random source (`/dev/urandom`): run keys and
/// seeds that no one outside the process may know in advance.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A random key for one verify run, read from the operating system and never written
/// anywhere.
#[derive(Clone)]
pub struct RunKey([u8; 32]);

impl std::fmt::Debug for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunKey(..)")
    }
}

impl RunKey {
    /// Draws a key from `/dev/urandom`.
    pub fn random() -> std::io::Result<Self> {
        random_bytes().map(Self)
    }

    /// The keyed hash of one row (its binary tuple).
    pub fn hash(&self, tuple: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, tuple).as_bytes()
    }
}

/// An order-independent digest of a multiset of rows under a [`RunKey`]: row count and
/// the sum of the rows' keyed hashes modulo 2^256 (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyedSum {
    /// Rows added.
    pub rows: u64,
    /// Little-endian 64-bit limbs of the sum.
    sum: [u64; 4],
}

impl KeyedSum {
    /// Adds one row's keyed hash.
    pub fn add(&mut self, hash: &[u8; 32]) {
        let mut carry = false;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let word = u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            let (a, c1) = limb.overflowing_add(word);
            let (b, c2) = a.overflowing_add(carry as u64);
            *limb = b;
            carry = c1 || c2;
        }
        self.rows += 1;
    }

    /// Adds another sum (the union of two multisets).
    pub fn merge(&mut self, other: &KeyedSum) {
        let mut carry = false;
        for (limb, word) in self.sum.iter_mut().zip(other.sum) {
            let (a, c1) = limb.overflowing_add(word);
            let (b, c2) = a.overflowing_add(carry as u64);
            *limb = b;
            carry = c1 || c2;
        }
        self.rows += other.rows;
    }

    /// The digest as hex (valid for this run's key only).
    pub fn hex(&self) -> String {
        let mut hasher = blake3::Hasher::new_derive_key("shadan 2026-12 verify digest v1");
        hasher.update(&self.rows.to_le_bytes());
        for limb in self.sum {
            hasher.update(&limb.to_le_bytes());
        }
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
    fn keyed_sums_ignore_order_carry_across_limbs_and_depend_on_the_key() {
        let key = RunKey::random().unwrap();
        let rows: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let (mut whole, mut a, mut b) = (
            KeyedSum::default(),
            KeyedSum::default(),
            KeyedSum::default(),
        );
        rows.iter().for_each(|r| whole.add(&key.hash(r)));
        rows.iter().rev().take(77).for_each(|r| a.add(&key.hash(r)));
        rows.iter().rev().skip(77).for_each(|r| b.add(&key.hash(r)));
        a.merge(&b);
        assert_eq!(a, whole);
        let mut other_key = KeyedSum::default();
        let key2 = RunKey::random().unwrap();
        rows.iter().for_each(|r| other_key.add(&key2.hash(r)));
        assert_ne!(other_key.hex(), whole.hex());
        // 2^256 - 1 plus 1 wraps to 0 through every limb.
        let mut wrap = KeyedSum::default();
        wrap.add(&[0xff; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        wrap.add(&one);
        assert_eq!(wrap.sum, [0; 4]);
        assert_eq!(wrap.rows, 2);
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
