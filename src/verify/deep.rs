//! `verify --deep`: searches every text column of every mapped target table for values of
//! non-public source fields, comparing keyed fingerprints only.
//!
//! The secrets are the values (6 characters or longer) of the source's non-public text
//! columns, and of its `own` text columns in rows that are not permitted (not owned, or
//! outside the scope). They are fingerprinted *inside the source server* as
//! `sha256(run key || value)` with a random key drawn for this run and bound as a
//! parameter, so no non-public value leaves the source, even during an audit. Values the
//! permitted projection itself holds (a common name shared by an own customer) are not
//! secrets. Each target text value, whole and split into tokens at whitespace and
//! punctuation, is fingerprinted the same way here and looked up; only fingerprints are
//! kept, and the key is forgotten when the run ends.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::report::{Leak, LeakKind};
use crate::connect::Endpoint;
use crate::copy::tuple::fields;
use crate::error::Error;
use crate::ident::quote_ident;
use crate::plan::query::{RangeShape, SessionSetting, SettingValue};
use crate::plan::{Class, Plan, TablePlan};
use crate::source::snapshot::{Session, Snapshot};

/// Shortest value treated as a secret: shorter values (codes, flags, small numbers) occur
/// by chance everywhere and would drown the report in coincidences.
pub const MIN_SECRET_CHARS: usize = 6;

/// The setting carrying the run's fingerprint key (hex).
const KEY_SETTING: &str = "shadan.fp_key";

/// Characters that separate tokens inside a target text value.
const SEPARATORS: &[char] = &[
    ',', ';', ':', '|', '/', '(', ')', '[', ']', '{', '}', '<', '>', '"', '\'', '=',
];

/// A fingerprint: the first 16 bytes of sha256(key || value).
type Fingerprint = u128;

/// Why the deep scan cannot run through export views.
pub const VIEWS_CANNOT_DEEP: &str = "verify --deep fingerprints non-public source values inside the source server, \
    which a role limited to the shadan_export views cannot read (by design); run --deep with a mapping using \
    source_access = \"tables\" and an auditor's role that may read the source tables";

/// Runs the deep scan over the target tables `search` (indexes into the plan); secrets
/// come from every mapped source table (read from the tables, never through views). Returns one `value` leak per target column where
/// secrets were found.
pub async fn scan(
    plan: &Plan,
    search: &[usize],
    src_snap: &Snapshot,
    tgt_snap: &Snapshot,
    source: &Endpoint,
    target: &Endpoint,
) -> Result<Vec<Leak>, Error> {
    let key = random_key()?;
    let trim = trim_set(&plan.source_encoding);
    let key_setting = [SessionSetting {
        name: KEY_SETTING.into(),
        value: SettingValue::Text(hex(&key)),
    }];
    let src = Session::open(source, src_snap, plan).await?;
    src.bind(&key_setting).await?;
    let mut secrets = Vec::new();
    let mut permitted = Vec::new();
    for table in &plan.tables {
        if let Some(sql) = secrets_sql(table, &trim) {
            collect(
                src.client(),
                &sql,
                &mut secrets,
                &format!("fingerprinting non-public values of {}", table.source),
            )
            .await?;
        }
        if let Some(sql) = permitted_sql(table, &trim) {
            collect(
                src.client(),
                &sql,
                &mut permitted,
                &format!("fingerprinting permitted values of {}", table.source),
            )
            .await?;
        }
    }
    drop(src);
    secrets.sort_unstable();
    secrets.dedup();
    permitted.sort_unstable();
    secrets.retain(|fp| permitted.binary_search(fp).is_err());
    drop(permitted);
    tracing::info!(
        secrets = secrets.len(),
        "deep scan: non-public values fingerprinted in the source"
    );

    let tgt = Session::open(target, tgt_snap, plan).await?;
    let mut leaks = Vec::new();
    for &i in search {
        leaks.extend(search_table(tgt.client(), &plan.tables[i], &key, &secrets).await?);
    }
    Ok(leaks)
}

fn random_key() -> Result<[u8; 32], Error> {
    crate::digest::random_bytes().map_err(|e| {
        Error::Runtime(format!(
            "cannot draw a fingerprint key from /dev/urandom: {e}"
        ))
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256(run key || value)` in SQL, for a text expression `value`.
fn fingerprint_sql(value: &str) -> String {
    format!(
        "pg_catalog.sha256((SELECT pg_catalog.decode(pg_catalog.current_setting('{KEY_SETTING}'), 'hex')) \
         || pg_catalog.convert_to({value}, 'UTF8'))"
    )
}

fn fingerprint(key: &[u8; 32], value: &[u8]) -> Fingerprint {
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(value)
        .finalize();
    u128::from_be_bytes(digest[..16].try_into().unwrap_or_default())
}

/// Fingerprints of the table's secrets: non-public text columns of every row, and `own`
/// text columns of rows not permitted (not owned, or outside the scope).
fn secrets_sql(table: &TablePlan, trim: &str) -> Option<String> {
    let permitted_row = {
        let mut preds: Vec<String> = table.owned_predicate().into_iter().collect();
        preds.extend(table.scope_predicates());
        if preds.is_empty() {
            "true".to_string()
        } else {
            preds.join(" AND ")
        }
    };
    let mut values: Vec<String> = table
        .non_public
        .iter()
        .filter(|c| c.is_text)
        .map(|c| format!("({}::text)", quote_ident(&c.name)))
        .collect();
    values.extend(
        table
            .columns
            .iter()
            .filter(|c| c.class == Class::Own && c.is_text)
            .map(|c| {
                format!(
                    "(CASE WHEN NOT coalesce({permitted_row}, false) THEN {}::text END)",
                    quote_ident(&c.source)
                )
            }),
    );
    fingerprints_query(&values, &table.source_table_from(), trim)
}

/// Fingerprints of the text values the permitted projection holds.
fn permitted_sql(table: &TablePlan, trim: &str) -> Option<String> {
    let values: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.is_text)
        .map(|c| format!("(shadan_projection.{}::text)", quote_ident(&c.source)))
        .collect();
    fingerprints_query(
        &values,
        &format!(
            "({}) AS shadan_projection",
            table.source_select(RangeShape::ALL)
        ),
        trim,
    )
}

/// The characters trimmed from both ends of a secret: ASCII whitespace, and on a UTF-8
/// source the ideographic space (U+3000) that pads legacy fixed-width Japanese data;
/// the same set the target side trims (see [`candidates`]).
fn trim_set(source_encoding: &str) -> String {
    if source_encoding == "UTF8" {
        "E' \\t\\n\\r' OPERATOR(pg_catalog.||) pg_catalog.chr(12288)".into()
    } else {
        "E' \\t\\n\\r'".into()
    }
}

fn fingerprints_query(values: &[String], from: &str, trim: &str) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    // Each value as stored and trimmed: a secret stored with a trailing space must match
    // the trimmed value a target holds.
    let values: Vec<String> = values
        .iter()
        .flat_map(|v| [v.clone(), format!("(pg_catalog.btrim({v}, {trim}))")])
        .collect();
    Some(format!(
        "COPY (SELECT {fp} FROM {from} CROSS JOIN LATERAL (VALUES {values}) AS shadan_v(shadan_value) \
         WHERE pg_catalog.char_length(shadan_v.shadan_value) >= {MIN_SECRET_CHARS}) TO STDOUT (FORMAT binary)",
        fp = fingerprint_sql("shadan_v.shadan_value"),
        values = values.join(", "),
    ))
}

/// Streams a one-column COPY of sha256 digests into `out`.
async fn collect(
    client: &Client,
    sql: &str,
    out: &mut Vec<Fingerprint>,
    context: &str,
) -> Result<(), Error> {
    crate::copy::fold(
        client,
        sql,
        || context.to_string(),
        out,
        |out, tuple| {
            if let Some(Some(d)) = fields(tuple).next() {
                if d.len() >= 16 {
                    out.push(u128::from_be_bytes(d[..16].try_into().unwrap_or_default()));
                }
            }
        },
    )
    .await
    .map(|_| ())
}

/// Looks up every text value of the target table, whole and by token.
async fn search_table(
    client: &Client,
    table: &TablePlan,
    key: &[u8; 32],
    secrets: &[Fingerprint],
) -> Result<Vec<Leak>, Error> {
    let columns = &table.target_search;
    if columns.is_empty() || secrets.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = table.target_reads()[..table.key_len].to_vec();
    let sql = format!(
        "COPY (SELECT pg_catalog.jsonb_build_array({})::text, {} FROM {}) TO STDOUT (FORMAT binary)",
        keys.join(", "),
        columns.iter().map(|c| c.read.as_str()).collect::<Vec<_>>().join(", "),
        table.target.sql()
    );
    let context = || format!("searching {} for non-public values", table.target);
    let is_secret = |value: &str| {
        secrets
            .binary_search(&fingerprint(key, value.as_bytes()))
            .is_ok()
    };
    let found = crate::copy::fold(
        client,
        &sql,
        context,
        vec![(0u64, Vec::<String>::new()); columns.len()],
        |found, tuple| {
            let mut values = fields(tuple);
            let row_key = values
                .next()
                .flatten()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            for (i, value) in values.enumerate() {
                let Some(bytes) = value else {
                    continue;
                };
                let text = String::from_utf8_lossy(bytes);
                let decoded = unescaped(&text);
                if candidates(&text).any(is_secret)
                    || decoded
                        .as_deref()
                        .is_some_and(|d| candidates(d).any(is_secret))
                {
                    found[i].0 += 1;
                    if found[i].1.len() < super::compare::SAMPLE_KEYS {
                        found[i].1.extend(row_key.clone());
                    }
                }
            }
        },
    )
    .await?;
    Ok(found
        .into_iter()
        .zip(columns)
        .filter(|((count, _), _)| *count > 0)
        .map(|((count, sample_keys), column)| Leak {
            kind: LeakKind::Value,
            table: table.target.to_string(),
            column: Some(column.name.clone()),
            count,
            sample_keys,
        })
        .collect())
}

/// The pieces of a target value that are compared, each at least [`MIN_SECRET_CHARS`]
/// characters long: the whole value as stored, with ASCII whitespace trimmed (as the
/// secrets are) and with all whitespace trimmed; its tokens, split at whitespace and
/// [`SEPARATORS`]; each token with leading and trailing punctuation trimmed (`WC123456.`,
/// `「WC123456」`, `WC123456。`); and the pieces of a token split at every character that
/// is neither a letter nor a digit (`WC123456-x`), so that a secret next to any
/// punctuation, ASCII or Japanese, is still seen whole.
fn candidates(text: &str) -> impl Iterator<Item = &str> {
    let whole = text.trim();
    let tokens = whole.split(|c: char| c.is_whitespace() || SEPARATORS.contains(&c));
    let mut out = vec![
        text,
        text.trim_matches([' ', '\t', '\n', '\r', '\u{3000}']),
        whole,
    ];
    for token in tokens {
        out.push(token);
        out.push(token.trim_matches(|c: char| !c.is_alphanumeric()));
        out.extend(token.split(|c: char| !c.is_alphanumeric()));
    }
    let mut seen = std::collections::HashSet::new();
    out.into_iter()
        .filter(|t| t.chars().count() >= MIN_SECRET_CHARS)
        .filter(move |t| seen.insert(*t))
}

/// The text a value means when it is written with escapes: JSON's `\uXXXX` (surrogate
/// pairs included) and `\n`-style escapes, XML's character references (`&#83;`,
/// `&#x6771;`) and entities. `json` keeps its input as typed and `xml` its references,
/// so a secret written `"\u6771\u4eac…"` (what `json.dumps` does by default) is found
/// only in this form. `None` when there is nothing to decode.
fn unescaped(text: &str) -> Option<String> {
    if !text.contains('\\') && !text.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let hex4 = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<u32> {
        let s: String = (0..4).filter_map(|_| it.next()).collect();
        (s.len() == 4)
            .then(|| u32::from_str_radix(&s, 16).ok())
            .flatten()
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('u') => {
                    let Some(hi) = hex4(&mut chars) else { continue };
                    let code = if (0xD800..0xDC00).contains(&hi) {
                        let mut look = chars.clone();
                        match (look.next(), look.next(), hex4(&mut look)) {
                            (Some('\\'), Some('u'), Some(lo)) if (0xDC00..0xE000).contains(&lo) => {
                                chars = look;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            }
                            _ => hi,
                        }
                    } else {
                        hi
                    };
                    out.extend(char::from_u32(code));
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => {}
            },
            '&' => {
                let entity: String = chars.clone().take_while(|&c| c != ';').take(12).collect();
                let decoded = match entity.as_str() {
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    e if e.starts_with("#x") || e.starts_with("#X") => {
                        u32::from_str_radix(&e[2..], 16)
                            .ok()
                            .and_then(char::from_u32)
                    }
                    e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
                    _ => None,
                };
                match decoded {
                    Some(d) if chars.clone().nth(entity.chars().count()) == Some(';') => {
                        out.push(d);
                        for _ in 0..=entity.chars().count() {
                            chars.next();
                        }
                    }
                    _ => out.push('&'),
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_values_and_tokens_are_candidates() {
        let c: Vec<&str> = candidates(" see WC1234ABCD, tel:022-123-4567 ok ").collect();
        assert_eq!(
            c,
            [
                " see WC1234ABCD, tel:022-123-4567 ok ",
                "see WC1234ABCD, tel:022-123-4567 ok",
                "WC1234ABCD",
                "022-123-4567"
            ]
        );
        assert_eq!(candidates("short").count(), 0);
        assert_eq!(
            candidates("東北電力株式会社").collect::<Vec<_>>(),
            ["東北電力株式会社"]
        );
    }

    #[test]
    fn json_escapes_and_xml_references_are_decoded() {
        assert_eq!(
            unescaped(r#"{"n":"\u0053ECRET", "a":"\u6771\u4eac\ud83d\ude00"}"#).as_deref(),
            Some(r#"{"n":"SECRET", "a":"東京😀"}"#)
        );
        assert_eq!(
            unescaped("<a>&#83;ECRET &#x6771;&amp;&lt;b&gt; &bogus; &#</a>").as_deref(),
            Some("<a>SECRET 東&<b> &bogus; &#</a>")
        );
        assert_eq!(unescaped("plain text"), None);
    }

    #[test]
    fn a_secret_next_to_punctuation_is_a_candidate() {
        for text in [
            "WCC81E728D9D4C2F.",
            "WCC81E728D9D4C2F。",
            "see WCC81E728D9D4C2F-x",
            "「WCC81E728D9D4C2F」",
            "(note:WCC81E728D9D4C2F!)",
        ] {
            assert!(
                candidates(text).any(|t| t == "WCC81E728D9D4C2F"),
                "{text}: {:?}",
                candidates(text).collect::<Vec<_>>()
            );
        }
    }
}
