//! Row prints: the set of rows a batch holds in the target, as the first 8 bytes of each
//! row's hash ([`crate::digest::row_hash`]), stored beside the batch's checkpoint.
//!
//! They let sync tell, without asking the target, whether a row the source changed is
//! already there as projected: a change to non-public columns only re-writes a source row
//! whose projection the target holds already. Asking the target would show it, in the
//! retail server's statistics (`pg_stat_user_tables`) and statement logs, which keys had
//! such changes, and change times are exactly what the mapping keeps from retail. Sync
//! reads every table's prints in full every night, whatever changed, so what the retail
//! server sees depends only on changes to the projection.
//!
//! Two different rows share a print with probability 2^-64; a changed row whose print
//! equals another row's of the same batch would be taken for one already copied. With
//! 50,000 rows a batch that is about 3·10^-15 per changed row; `verify`, which compares
//! every row under a fresh random key, is the check that does not rely on it.

/// The prints of one batch's rows, sorted (a multiset: prints may collide).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowPrints(Vec<u64>);

/// The print of a row, from its row hash.
fn print(hash: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

impl RowPrints {
    /// The prints of rows given by their row hashes.
    pub fn of_hashes<'a>(hashes: impl IntoIterator<Item = &'a [u8; 32]>) -> Self {
        let mut prints: Vec<u64> = hashes.into_iter().map(print).collect();
        prints.sort_unstable();
        Self(prints)
    }

    /// Whether a row with this row hash is among them.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.0.binary_search(&print(hash)).is_ok()
    }

    /// The prints once the rows `removed` have left and `added` have come (each by row
    /// hash); a removed print not present is ignored.
    pub fn replaced<'a, 'b>(
        &self,
        removed: impl IntoIterator<Item = &'a [u8; 32]>,
        added: impl IntoIterator<Item = &'b [u8; 32]>,
    ) -> Self {
        let mut gone: Vec<u64> = removed.into_iter().map(print).collect();
        gone.sort_unstable();
        let mut next = Vec::with_capacity(self.0.len());
        let mut g = gone.iter().peekable();
        for &p in &self.0 {
            while g.next_if(|&&x| x < p).is_some() {}
            if g.next_if(|&&x| x == p).is_none() {
                next.push(p);
            }
        }
        next.extend(added.into_iter().map(print));
        next.sort_unstable();
        Self(next)
    }

    /// The prints as stored: 8 bytes each, little-endian, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    /// Prints as stored by [`RowPrints::to_bytes`]; `None` unless whole and in order.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() % 8 != 0 {
            return None;
        }
        let prints: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .collect();
        prints
            .windows(2)
            .all(|w| w[0] <= w[1])
            .then_some(Self(prints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::row_hash;

    fn h(n: u8) -> [u8; 32] {
        row_hash(&[n])
    }

    #[test]
    fn replacing_rows_keeps_the_set_exact_and_round_trips_through_storage() {
        let all = [h(1), h(2), h(3), h(3)];
        let prints = RowPrints::of_hashes(&all);
        assert_eq!(prints.to_bytes().len(), 4 * 8);
        assert!(prints.contains(&h(2)) && !prints.contains(&h(4)));
        let next = prints.replaced(&[h(3), h(2), h(9)], &[h(4)]);
        assert_eq!(next, RowPrints::of_hashes(&[h(1), h(3), h(4)]));
        assert_eq!(RowPrints::from_bytes(&next.to_bytes()), Some(next.clone()));
        let mut unordered = next.to_bytes();
        unordered.rotate_left(8);
        assert_eq!(RowPrints::from_bytes(&unordered), None);
        assert_eq!(RowPrints::from_bytes(&[0; 7]), None);
    }
}
