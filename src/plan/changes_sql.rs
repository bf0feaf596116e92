//! The SQL of a sync by changes (see [`crate::source::changes`]): the rows of a table
//! written at or after a horizon, each with the position of the batch it falls in; the
//! rows in scope per range; the keys of a range; and the target's rows for given keys.

use super::query::{
    op, range_predicates_for, select, setting_as, RangeShape, SessionSetting, SettingValue,
};
use super::TablePlan;
use crate::ident::quote_ident;

/// Session setting holding the horizon's 32-bit transaction id.
pub const HORIZON_SETTING: &str = "shadan.horizon";

/// The setting holding key column `column` of cut `cut` (the upper bound of the batch at
/// position `cut` in key order).
fn cut_setting(cut: usize, column: usize) -> String {
    format!("shadan.cut_{}_{}", cut + 1, column + 1)
}

/// The settings for the cuts between a table's batches in key order: each batch's upper
/// bound, the last batch's (unbounded) excepted.
pub fn cut_settings(uppers: &[&[String]]) -> Vec<SessionSetting> {
    let mut settings = Vec::new();
    for (cut, values) in uppers.iter().enumerate() {
        for (column, value) in values.iter().enumerate() {
            settings.push(SessionSetting {
                name: cut_setting(cut, column),
                value: SettingValue::Text(value.clone()),
            });
        }
    }
    settings
}

/// The predicate "the tuple was written by a transaction at or after the horizon".
///
/// `age(xid)` is `(int32) (stable_next - xid)`, where `stable_next` is fixed for the
/// transaction, so for two xids within 2^31 of it, `age(a) <= age(b)` means `a` is not
/// older than `b`; a frozen or bootstrap xid is `INT_MAX` old. Rows of a snapshot's
/// transactions all lie within that window once the horizon does (the caller falls back
/// to reading everything when it does not); a tuple older than the window (raw xmin kept
/// by freezing) has wrapped and shows a negative age or one above the horizon's, and is
/// correctly left out.
pub fn changed_predicate(xmin: &str) -> String {
    changed_since(xmin, HORIZON_SETTING)
}

/// [`changed_predicate`] with the horizon in the setting `horizon`.
fn changed_since(xmin: &str, horizon: &str) -> String {
    let age = format!("pg_catalog.age({xmin})");
    format!(
        "{age} {} 0 AND {age} {} pg_catalog.age({})",
        op(">="),
        op("<="),
        setting_as(horizon, "pg_catalog.xid")
    )
}

/// How a statement that visits every row of a table in scope (the probe, the changed
/// rows, the counts by batch, the key buckets, the lookup of lost keys) reaches them.
///
/// Values are bound through session settings, so the planner sees `owner = $1`, not
/// the owner, and estimates it as one owner among all ([`Reach::of`]). With the
/// successor retailer holding most rows that picks a bitmap scan of the owner's index
/// over nearly every page: 1.3 to 2 times the time of reading the table in order. So
/// where the target holds a large share of the table's rows, the scope predicates are
/// written so that no index can serve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The scope holds a small share of the table: the planner may use an index on a
    /// scope column.
    Planned,
    /// The scope holds a large share (or the table's size is unknown): read the table
    /// in order.
    Sequential,
}

impl Reach {
    /// The reach for a table whose checkpoints hold `held` rows and whose source the
    /// server estimates at `estimate` rows (`pg_class.reltuples`; negative: never
    /// counted). An index pays only below about a tenth of the table.
    pub fn of(held: u64, estimate: f64) -> Self {
        if estimate > 0.0 && (held as f64) * 10.0 < estimate {
            Reach::Planned
        } else {
            Reach::Sequential
        }
    }
}

/// The setting holding the horizon of the table at `index` in the plan, for
/// [`TablePlan::source_probe`], which reads many tables in one statement.
pub fn table_horizon_setting(index: usize) -> String {
    format!("shadan.horizon_{}", index + 1)
}

impl TablePlan {
    /// The position, in key order, of the batch a source row falls in, given `cuts`
    /// cut settings ([`cut_settings`]): a binary search written as nested CASE, so a
    /// row costs about log2(batches) comparisons, made with the same operators and
    /// collations as every range query.
    fn batch_position(&self, first: usize, last: usize) -> String {
        self.position_among(first, last, &self.source_key_ordered())
    }

    /// [`Self::batch_position`] over the given key columns (the source's or the
    /// target's, each with its `COLLATE` clause).
    fn position_among(&self, first: usize, last: usize, keys: &[String]) -> String {
        if first == last {
            return format!("{first}");
        }
        let mid = (first + last) / 2;
        let lhs = row(keys);
        let bound = row(&self
            .key()
            .iter()
            .enumerate()
            .map(|(i, k)| setting_as(&cut_setting(mid, i), &k.type_name))
            .collect::<Vec<_>>());
        format!(
            "CASE WHEN {lhs} {} {bound} THEN {} ELSE {} END",
            op("<="),
            self.position_among(first, mid, keys),
            self.position_among(mid + 1, last, keys)
        )
    }

    /// The projection of the rows written at or after the horizon ([`HORIZON_SETTING`])
    /// per `xmin_column`, with the position of each row's batch (`cuts` + 1 batches) as
    /// an extra last column, ordered by it, so that the rows of one batch arrive together
    /// and a batch can be written as soon as it is complete. Read as an unnamed statement
    /// ([`crate::copy::select_as_copy`]).
    pub fn source_changes_select(&self, cuts: usize, xmin_column: &str, reach: Reach) -> String {
        let mut preds = self.scope_predicates_reaching(reach);
        preds.push(changed_predicate(&quote_ident(xmin_column)));
        self.positioned_select(cuts, &preds)
    }

    /// `COPY (...) TO STDOUT (FORMAT binary)` of the projection of a stretch of
    /// consecutive batches: the rows within `range` (the first batch's lower bound, the
    /// last one's upper), each with the position of its batch among the stretch's
    /// `cuts` + 1 as an extra last column, ordered by it. One scan and one sort read a
    /// stretch whose ranges no index serves, instead of one scan per batch.
    pub fn source_stretch_copy(&self, cuts: usize, range: RangeShape) -> String {
        let mut preds = self.scope_predicates();
        preds.extend(range_predicates_for(
            self,
            &self.source_key_ordered(),
            range,
        ));
        self.positioned_copy(cuts, &preds)
    }

    /// `COPY` of [`Self::positioned_select`].
    fn positioned_copy(&self, cuts: usize, preds: &[String]) -> String {
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            self.positioned_select(cuts, preds)
        )
    }

    /// The projection of the source rows matching `preds`, each with its batch position
    /// among `cuts` + 1 as a last column, ordered by it.
    fn positioned_select(&self, cuts: usize, preds: &[String]) -> String {
        let mut cols = self.projection();
        cols.push(format!(
            "{}::pg_catalog.int4 AS shadan_batch",
            self.batch_position(0, cuts)
        ));
        format!(
            "{} ORDER BY {}",
            select(&cols, &self.source_from(), preds),
            cols.len()
        )
    }

    /// One row: this table's index in the plan, its source rows in scope, and how many
    /// of them were written at or after its horizon (in [`table_horizon_setting`]) per
    /// `xmin_column`: whether a sync by changes has anything to do, by one scan.
    pub fn source_probe(&self, xmin_column: &str, reach: Reach) -> String {
        select(
            &[
                format!("{}::pg_catalog.int4", self.index),
                "pg_catalog.count(*)".to_string(),
                format!(
                    "pg_catalog.count(*) FILTER (WHERE {})",
                    changed_since(
                        &quote_ident(xmin_column),
                        &table_horizon_setting(self.index)
                    )
                ),
            ],
            &self.source_from(),
            &self.scope_predicates_reaching(reach),
        )
    }

    /// [`Self::scope_predicates`], each written as `(…) IS TRUE` (the same rows: a NULL
    /// comparison admits none either way) when `reach` is sequential, which no index
    /// serves.
    fn scope_predicates_reaching(&self, reach: Reach) -> Vec<String> {
        let preds = self.scope_predicates();
        match reach {
            Reach::Planned => preds,
            Reach::Sequential => preds
                .into_iter()
                .map(|p| format!("({p}) IS TRUE"))
                .collect(),
        }
    }

    /// The number of source rows in scope, by position of their batch (`cuts` + 1
    /// batches, see [`Self::source_changes_copy`]): one scan for every batch's count.
    pub fn source_counts_by_batch(&self, cuts: usize, reach: Reach) -> String {
        format!(
            "{} GROUP BY 1",
            select(
                &[
                    format!("{}::pg_catalog.int4", self.batch_position(0, cuts)),
                    "pg_catalog.count(*)".to_string()
                ],
                &self.source_from(),
                &self.scope_predicates_reaching(reach)
            )
        )
    }

    /// Per hash bucket of the keys of the source rows in scope: the bucket, the rows and
    /// the sum of a second hash of their keys.
    pub fn source_key_buckets(&self, buckets: &KeyBuckets, reach: Reach) -> String {
        let keys: Vec<String> = self.projection()[..self.key_len].to_vec();
        bucket_sums(
            buckets,
            (&keys, &self.key_types()),
            &self.source_from(),
            &self.scope_predicates_reaching(reach),
        )
    }

    /// The key columns' types, identical on both sides.
    fn key_types(&self) -> Vec<&str> {
        self.key().iter().map(|c| c.type_name.as_str()).collect()
    }

    /// [`Self::source_key_buckets`] over the target table.
    pub fn target_key_buckets(&self, buckets: &KeyBuckets) -> String {
        let keys: Vec<String> = self.target_reads()[..self.key_len].to_vec();
        bucket_sums(buckets, (&keys, &self.key_types()), &self.target.sql(), &[])
    }

    /// `COPY (...) TO STDOUT (FORMAT binary)` of the target's keys in the buckets
    /// `wanted`, each with three more `int4` columns: its bucket, its second hash, and the
    /// position of its batch among `cuts` + 1 (the cut settings bound on the target). The
    /// bucket numbers are the tool's own integers, written as a constant array, which the
    /// server looks rows up in by hash.
    pub fn target_keys_in_buckets(
        &self,
        buckets: &KeyBuckets,
        wanted: &[i32],
        cuts: usize,
    ) -> String {
        let keys: Vec<String> = self.target_reads()[..self.key_len].to_vec();
        // The inner query names every column it returns, so no key column's own name
        // can collide with the ones added here.
        let aliases: Vec<String> = (1..=self.key_len)
            .map(|i| format!("shadan_key_{i}"))
            .collect();
        let named: Vec<String> = keys
            .iter()
            .zip(&aliases)
            .map(|(k, a)| format!("{k} AS {a}"))
            .collect();
        let ordered: Vec<String> = self
            .key()
            .iter()
            .zip(&aliases)
            .map(|(c, a)| format!("{a}{}", c.target_order.collate))
            .collect();
        let position = self.position_among(0, cuts, &ordered);
        let list: Vec<String> = wanted.iter().map(i32::to_string).collect();
        format!(
            "COPY (SELECT {aliases}, {b}, {v}, ({position})::pg_catalog.int4 \
               FROM (SELECT {named}, {h} AS shadan_h FROM {from} OFFSET 0) h \
               WHERE {b} {eq} ANY ('{{{list}}}'::pg_catalog.int4[])) \
             TO STDOUT (FORMAT binary)",
            aliases = aliases.join(", "),
            named = named.join(", "),
            b = buckets.bucket("shadan_h"),
            v = KeyBuckets::second("shadan_h"),
            h = key_hash(buckets, &keys, &self.key_types()),
            from = self.target.sql(),
            eq = op("="),
            list = list.join(","),
        )
    }

    /// Which of `count` keys (bound as `$1..`, key column by key column, each typed as its
    /// column) the source has in scope: their 1-based positions. With a broad `reach` the
    /// keys are looked up by the key's index, not the owner's.
    pub fn source_keys_in_scope(&self, count: usize, reach: Reach) -> String {
        let (values, names) = self.bound_keys(count);
        let mut preds: Vec<String> = self.projection()[..self.key_len]
            .iter()
            .zip(&names)
            .map(|(c, k)| format!("{c} {} v.{k}", op("=")))
            .collect();
        preds.extend(self.scope_predicates_reaching(reach));
        format!(
            "SELECT v.shadan_i FROM {values} WHERE EXISTS (SELECT 1 FROM {} WHERE {})",
            self.source_from(),
            preds.join(" AND ")
        )
    }

    /// `COPY (...) TO STDOUT (FORMAT binary)` of the keys of the source rows in scope
    /// within a key range: keys only, for finding the rows a batch lost.
    pub fn source_keys_copy(&self, range: RangeShape) -> String {
        let keys: Vec<String> = self.projection()[..self.key_len].to_vec();
        let mut preds = self.scope_predicates();
        preds.extend(range_predicates_for(
            self,
            &self.source_key_ordered(),
            range,
        ));
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            select(&keys, &self.source_from(), &preds)
        )
    }

    /// `COPY (...) TO STDOUT (FORMAT binary)` of the keys of the target's rows within a key
    /// range.
    pub fn target_keys_copy(&self, range: RangeShape) -> String {
        let keys: Vec<String> = self.target_reads()[..self.key_len].to_vec();
        let preds = range_predicates_for(self, &self.target_key_ordered(), range);
        format!(
            "COPY ({}) TO STDOUT (FORMAT binary)",
            select(&keys, &self.target.sql(), &preds)
        )
    }

    /// `COPY (...) TO STDOUT (FORMAT binary)` of the target's rows whose keys are in the
    /// temporary table `stage` (its columns named as the target's key columns).
    pub fn target_rows_of_staged_keys(&self, stage: &str) -> String {
        let matches: Vec<String> = self
            .key()
            .iter()
            .map(|c| {
                let k = quote_ident(&c.target);
                format!("t.{k} {} g.{k}", op("="))
            })
            .collect();
        format!(
            "COPY (SELECT {} FROM {} AS t WHERE EXISTS (SELECT 1 FROM pg_temp.{} AS g WHERE {})) \
             TO STDOUT (FORMAT binary)",
            self.target_reads().join(", "),
            self.target.sql(),
            quote_ident(stage),
            matches.join(" AND ")
        )
    }
}

/// How keys are spread over hash buckets for finding the rows a table lost: `count`
/// buckets (a power of two) under a seed drawn for the run. Both are numbers the tool
/// makes, written into the SQL as literals.
#[derive(Debug, Clone, Copy)]
pub struct KeyBuckets {
    /// Buckets, a power of two.
    pub count: u32,
    /// The hash seed.
    pub seed: i64,
}

impl KeyBuckets {
    /// The bucket of a key hash, as SQL.
    fn bucket(&self, h: &str) -> String {
        format!(
            "({h} {} {})::pg_catalog.int4",
            op("&"),
            i64::from(self.count) - 1
        )
    }

    /// The second hash of a key (the hash's high half), as SQL.
    fn second(h: &str) -> String {
        format!("({h} {} 32)::pg_catalog.int4", op(">>"))
    }
}

/// The keys' hash. A key of one column of a common type is hashed by that type's own
/// extended hash function, which hash partitioning relies on to be the same on every
/// server; any other key as a row (`hash_record_extended`, which calls the same
/// functions column by column and combines them). The row costs about twice the work
/// of the function alone: ROW is built and taken apart again for every key.
fn key_hash(buckets: &KeyBuckets, keys: &[String], types: &[&str]) -> String {
    match (keys, types) {
        ([key], [type_name]) if own_hash_function(type_name).is_some() => format!(
            "pg_catalog.{}({key}, {})",
            own_hash_function(type_name).unwrap_or_default(),
            buckets.seed
        ),
        _ => format!(
            "pg_catalog.hash_record_extended(ROW({}), {})",
            keys.join(", "),
            buckets.seed
        ),
    }
}

/// The extended hash function of a built-in key type (as `format_type` names it), from
/// its default hash operator class; `None` for other types, domains included.
fn own_hash_function(type_name: &str) -> Option<&'static str> {
    let base = type_name.split('(').next().unwrap_or_default();
    Some(match base {
        "smallint" => "hashint2extended",
        "integer" => "hashint4extended",
        "bigint" => "hashint8extended",
        "text" | "character varying" => "hashtextextended",
        "character" => "hashbpcharextended",
        "numeric" => "hash_numeric_extended",
        "uuid" => "uuid_hash_extended",
        _ => return None,
    })
}

/// Rows and second-hash sums per bucket of the keys of `from`'s rows matching `preds`.
fn bucket_sums(
    buckets: &KeyBuckets,
    (keys, types): (&[String], &[&str]),
    from: &str,
    preds: &[String],
) -> String {
    // OFFSET 0 keeps the hash computed once per row, not once per use.
    let inner = format!(
        "{} OFFSET 0",
        select(
            &[format!("{} AS shadan_h", key_hash(buckets, keys, types))],
            from,
            preds
        )
    );
    format!(
        "SELECT {b}, pg_catalog.count(*), pg_catalog.sum({v}) FROM ({inner}) h GROUP BY 1",
        b = buckets.bucket("shadan_h"),
        v = KeyBuckets::second("shadan_h"),
    )
}

/// One column as itself, several as `ROW(...)`.
fn row(cols: &[String]) -> String {
    if cols.len() == 1 {
        cols[0].clone()
    } else {
        format!("ROW({})", cols.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_read_in_order_unless_it_is_known_to_be_a_small_share() {
        assert_eq!(Reach::of(700_000, 1_000_000.0), Reach::Sequential);
        assert_eq!(Reach::of(100_000, 1_000_000.0), Reach::Sequential);
        assert_eq!(Reach::of(99_999, 1_000_000.0), Reach::Planned);
        assert_eq!(Reach::of(0, 1_000_000.0), Reach::Planned);
        // Never counted (-1) or empty when last counted: nothing is known of the share.
        assert_eq!(Reach::of(10, -1.0), Reach::Sequential);
        assert_eq!(Reach::of(0, 0.0), Reach::Sequential);
    }

    #[test]
    fn a_key_of_one_built_in_column_is_hashed_by_its_type_s_own_function() {
        let b = KeyBuckets {
            count: 1024,
            seed: -7,
        };
        let one = |t: &str| key_hash(&b, &["\"k\"".to_string()], &[t]);
        assert_eq!(one("bigint"), "pg_catalog.hashint8extended(\"k\", -7)");
        assert_eq!(
            one("character(22)"),
            "pg_catalog.hashbpcharextended(\"k\", -7)"
        );
        assert_eq!(
            one("character varying(10)"),
            "pg_catalog.hashtextextended(\"k\", -7)"
        );
        assert_eq!(
            one("numeric(12,0)"),
            "pg_catalog.hash_numeric_extended(\"k\", -7)"
        );
        // A domain, another type, or a key of two columns: the key as a row.
        for t in [
            "\"public\".\"contract_no\"",
            "date",
            "timestamp with time zone",
        ] {
            assert!(
                one(t).starts_with("pg_catalog.hash_record_extended(ROW(\"k\")"),
                "{t}"
            );
        }
        let two = key_hash(
            &b,
            &["\"a\"".to_string(), "\"b\"".to_string()],
            &["bigint", "bigint"],
        );
        assert_eq!(
            two,
            "pg_catalog.hash_record_extended(ROW(\"a\", \"b\"), -7)"
        );
    }
}
