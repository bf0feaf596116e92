//! Row keys as they travel in binary COPY tuples, and how they are used outside COPY:
//! bound back as query parameters byte for byte (exact for every type, no text round
//! trip), and rendered for reports. Keys are public by rule (the plan enforces it), so
//! they are the only row data that may appear in a report.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Client;

use crate::error::Error;
use crate::plan::TablePlan;

/// FNV-1a: a fast hasher for maps keyed by encoded keys. Keys are public and come from
/// the two databases, not from an adversary choosing them to collide, so a DoS-resistant
/// hasher buys nothing here.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map from encoded keys to `V`.
pub type KeyMap<V> = HashMap<Vec<u8>, V, BuildHasherDefault<Fnv>>;

/// A value already in PostgreSQL's binary format for the parameter's type, sent as is,
/// or NULL (`None`). Used only for key fields read from a binary COPY of a column of that
/// exact type. (A source key is never NULL; a target key can be, under a nullable unique
/// index, and then binds as NULL rather than as an empty value.)
#[derive(Debug, Clone, Copy)]
pub struct RawValue<'a>(pub Option<&'a [u8]>);

impl ToSql for RawValue<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Splits an encoded key (see [`crate::copy::tuple::key_bytes`]) into its fields; `None`
/// for a NULL field.
pub fn key_fields(key: &[u8]) -> Vec<Option<&[u8]>> {
    let mut fields = Vec::new();
    let mut p = 0;
    while p + 4 <= key.len() {
        let len = i32::from_be_bytes([key[p], key[p + 1], key[p + 2], key[p + 3]]);
        p += 4;
        if len < 0 {
            fields.push(None);
            continue;
        }
        let end = (p + len as usize).min(key.len());
        fields.push(Some(&key[p..end]));
        p = end;
    }
    fields
}

/// An encoded key as rows are matched by: every field at the positions `forms` (an
/// unconstrained numeric, see [`crate::plan::keys::has_forms`]) with the smallest display
/// scale that shows all its digits, so that 5.0 and 5.00, one key to both servers, are
/// one key here too; the result is still a valid binary form of the same value (a server
/// truncates digits a smaller scale would hide, so the scale is never set below them).
/// Other keys are matched as they are.
pub fn matching<'k>(key: &'k [u8], forms: &[usize]) -> std::borrow::Cow<'k, [u8]> {
    if forms.is_empty() {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = key.to_vec();
    let (mut p, mut i) = (0, 0);
    while p + 4 <= out.len() {
        let len = i32::from_be_bytes([out[p], out[p + 1], out[p + 2], out[p + 3]]);
        p += 4;
        let end = p + len.max(0) as usize;
        if len >= 8 && forms.contains(&i) && end <= out.len() {
            let scale = numeric_scale(&out[p..end]);
            out[p + 6..p + 8].copy_from_slice(&scale.to_be_bytes());
        }
        p = end;
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// The smallest display scale that shows every digit of a numeric in binary form:
/// ndigits, weight, sign, dscale (2 bytes each), then ndigits base-10000 digits, the
/// first of weight `weight` (no leading or trailing zero digit as the server stores it).
/// NaN and the infinities have no digits, and scale 0.
fn numeric_scale(value: &[u8]) -> u16 {
    let ndigits = i16::from_be_bytes([value[0], value[1]]);
    let weight = i16::from_be_bytes([value[2], value[3]]);
    let fraction_groups = i32::from(ndigits) - i32::from(weight) - 1;
    let last_at = 8 + 2 * (ndigits.max(1) as usize - 1);
    if ndigits <= 0 || fraction_groups <= 0 || value.len() < last_at + 2 {
        return 0;
    }
    let mut last = u16::from_be_bytes([value[last_at], value[last_at + 1]]);
    let mut scale = fraction_groups * 4;
    while last != 0 && last % 10 == 0 {
        last /= 10;
        scale -= 1;
    }
    scale.clamp(0, i32::from(u16::MAX)) as u16
}

/// Whether any field of an encoded key is NULL: such a row cannot be the source's (source
/// keys are NOT NULL) and is never looked up by key.
pub fn has_null_field(key: &[u8]) -> bool {
    key_fields(key).iter().any(Option::is_none)
}

/// Checks, as the rows of a source view are read, that the key the mapping names for it
/// is unique and never NULL: a view has no index to guarantee it. Batches are key ranges,
/// so two rows with one key always meet in the same batch.
#[derive(Debug)]
pub struct KeyCheck {
    key_len: usize,
    forms: Vec<usize>,
    seen: KeyMap<()>,
    /// What was found first: `"NULL"` or `"not unique"`.
    pub problem: Option<&'static str>,
}

impl KeyCheck {
    /// A check for the keys of `table`'s rows.
    pub fn new(table: &TablePlan) -> Self {
        Self {
            key_len: table.key_len,
            forms: table.key_forms.clone(),
            seen: KeyMap::default(),
            problem: None,
        }
    }

    /// Takes one tuple's key into account.
    pub fn add(&mut self, tuple: &[u8]) {
        if self.problem.is_some() {
            return;
        }
        let key = crate::copy::tuple::key_bytes(tuple, self.key_len);
        if has_null_field(key) {
            self.problem = Some("NULL");
        } else if self
            .seen
            .insert(matching(key, &self.forms).into_owned(), ())
            .is_some()
        {
            self.problem = Some("not unique");
        }
    }

    /// The error for a problem found, naming the relation (never a key value).
    pub fn error(&self, table: &TablePlan) -> Option<Error> {
        self.problem.map(|what| {
            Error::Runtime(format!(
                "the key ({}) of the source view {} is {what} in its rows; a view must give every row \
                 one key: fix the view's definition; nothing of this batch was kept",
                table.key().iter().map(|c| c.source.as_str()).collect::<Vec<_>>().join(", "),
                table.source
            ))
        })
    }
}

/// Checks inside the source that the view `table`'s key is unique and never NULL within
/// the batch's range (bound on `client`), counting rows outside the scope too: a key
/// shared by an owned and a foreign row means ownership is ambiguous, so the run stops
/// (fail closed) rather than copy either.
pub async fn check_view_key(
    client: &Client,
    table: &TablePlan,
    range: crate::plan::query::RangeShape,
) -> Result<(), Error> {
    let ambiguous: bool = client
        .query_one(&table.source_view_key_ambiguous(range), &[])
        .await
        .map_err(Error::db(format!(
            "checking the key of the source view {}",
            table.source
        )))?
        .get(0);
    let mut check = KeyCheck::new(table);
    if ambiguous {
        check.problem = Some("NULL or not unique (rows outside the scope counted)");
    }
    check.error(table).map_or(Ok(()), Err)
}

/// Renders encoded keys of `table` as JSON arrays (`[9000001]`, `["0300…", "x"]`) on any
/// server that has the key's types.
pub async fn render(
    client: &Client,
    table: &TablePlan,
    keys: &[Vec<u8>],
) -> Result<Vec<String>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let casts: Vec<String> = table
        .key()
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.type_name))
        .collect();
    let sql = format!(
        "SELECT pg_catalog.jsonb_build_array({})::text",
        casts.join(", ")
    );
    let context = || format!("rendering sample keys of {}", table.target);
    let statement = client.prepare(&sql).await.map_err(Error::db(&context))?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let values: Vec<RawValue> = key_fields(key).into_iter().map(RawValue).collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let row = client
            .query_one(&statement, &params)
            .await
            .map_err(Error::db(&context))?;
        out.push(row.get(0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A numeric in binary form, as one encoded key field.
    fn field(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for part in [ndigits.to_be_bytes(), weight.to_be_bytes()] {
            v.extend_from_slice(&part);
        }
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        let mut key = (v.len() as i32).to_be_bytes().to_vec();
        key.extend(v);
        key
    }

    #[test]
    fn numeric_forms_match_at_the_smallest_scale_that_keeps_every_digit() {
        // 5, 5.0 and 5.00 are one key; -0.5 keeps its scale of 1 and 1e-20 its 20.
        let five = field(1, 0, 0, 0, &[5]);
        for form in [field(1, 0, 0, 1, &[5]), field(1, 0, 0, 2, &[5])] {
            assert_eq!(matching(&form, &[0]), matching(&five, &[0]));
        }
        let half = field(1, -1, 0x4000, 3, &[5000]);
        assert_eq!(
            matching(&half, &[0]).as_ref(),
            &field(1, -1, 0x4000, 1, &[5000])[..]
        );
        let tiny = field(1, -5, 0, 25, &[1]);
        assert_eq!(
            matching(&tiny, &[0]).as_ref(),
            &field(1, -5, 0, 20, &[1])[..]
        );
        // 12.3400 is 12.34; 0 in any scale is 0; NaN stays NaN.
        let dec = field(2, 0, 0, 4, &[12, 3400]);
        assert_eq!(
            matching(&dec, &[0]).as_ref(),
            &field(2, 0, 0, 2, &[12, 3400])[..]
        );
        assert_eq!(
            matching(&field(0, 0, 0, 3, &[]), &[0]).as_ref(),
            &field(0, 0, 0, 0, &[])[..]
        );
        let nan = field(0, 0, 0xC000, 0, &[]);
        assert_eq!(matching(&nan, &[0]).as_ref(), &nan[..]);
        // Only the fields named change.
        assert_eq!(
            matching(&field(1, 0, 0, 2, &[5]), &[1]).as_ref(),
            &field(1, 0, 0, 2, &[5])[..]
        );
    }
}
