//! Which columns can be keys. A key is matched by its binary form: sync and verify compare
//! the binary form of each row's key on both sides, batches are key ranges evaluated on
//! both servers, and deletes find rows by key. That is exact only when equal keys have one
//! binary form (or, for an unconstrained numeric, one form once its display scale is set
//! aside: [`crate::key::matching`]) and both servers order them alike, so `plan` refuses
//! every other key here, before anything is written.

use crate::catalog::ColumnInfo;

/// Built-in types whose equality is equality of their binary form, by OID: bool, bytea,
/// "char", name, int8, int2, int4, text, oid, varchar, date, timestamp, timestamptz,
/// uuid; char(n) with a length (its values are padded to it); and numeric (see
/// [`NUMERIC`]). Not float
/// (0 = -0), interval (1 day = 24 hours), timetz, citext (case-folded), or enums and other
/// user-defined types (their order is a per-database definition).
const EXACT_KEY_TYPES: &[u32] = &[
    16, 17, 18, 19, 20, 21, 23, 25, 26, 1043, 1082, 1114, 1184, 2950,
];

/// bpchar: exact only with a declared length.
const BPCHAR: u32 = 1042;

/// numeric. Every value is stored with its leading and trailing zero digit groups
/// stripped and zero always positive, so equal values differ at most in their display
/// scale: with a declared precision and scale, as `numeric(12,0)` for keys migrated from
/// Oracle's `NUMBER(12)`, never (every value is rounded to the scale on its way in);
/// unconstrained, 5.0 and 5.00 are one key in two forms ([`has_forms`]).
const NUMERIC: u32 = 1700;

/// Whether equal values of `col` can differ in binary form (an unconstrained numeric):
/// rows are then matched by the key with its display scale set aside, and the form the
/// source holds is written.
pub fn has_forms(col: &ColumnInfo) -> bool {
    col.representation_oid == NUMERIC && col.representation_typmod < 0
}

/// Why `col` cannot be a key column (on the side `side`), if it cannot.
pub fn key_column_problem(col: &ColumnInfo, side: &str) -> Option<String> {
    let exact = EXACT_KEY_TYPES.contains(&col.representation_oid)
        || col.representation_oid == NUMERIC
        || (col.representation_oid == BPCHAR && col.representation_typmod >= 0);
    if !exact {
        return Some(format!(
            "the {side} key column has type {}, whose equal values can differ in binary form \
             (float 0 = -0, citext 'A' = 'a', interval 1 day = 24 hours) or whose order is defined \
             per database; key on integer, bigint, numeric, text, varchar, char(n), uuid, date or \
             timestamp columns",
            col.type_name
        ));
    }
    if !col.collation_deterministic {
        return Some(format!(
            "the {side} key column uses the nondeterministic collation {}, under which different \
             strings are equal; give the key column a deterministic collation",
            col.collation_label.as_deref().unwrap_or("?")
        ));
    }
    None
}

/// Why text keys cannot be compared across the two servers, if they cannot: key ranges
/// compare bytes, and the same text has other bytes in another server encoding.
pub fn encoding_problem(source: &str, target: &str) -> Option<String> {
    (source != target).then(|| {
        format!(
            "text key columns need one server encoding on both sides (source {source}, target \
             {target}): keys are ordered by their bytes; create the target database with ENCODING '{source}'"
        )
    })
}
