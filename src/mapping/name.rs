//! Qualified table names as the mapping writes them: `schema.table`, each part exactly as
//! the catalog stores it, with a part in double quotes when it contains a dot.

use std::fmt;

use serde::Serialize;

use crate::ident::quote_ident;

/// A `schema.table` name, case-sensitive and unquoted, as stored in `pg_namespace` and
/// `pg_class`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// The schema name, exactly as in the catalog.
    pub schema: String,
    /// The table name, exactly as in the catalog.
    pub name: String,
}

impl QualifiedName {
    /// Builds a name from its two catalog parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses the mapping notation: `schema.table`, where a part containing a dot (or a
    /// double quote) is written in double quotes with embedded quotes doubled.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        Some('"') => break,
                        Some(c) => part.push(c),
                        None => return Err(format!("unterminated double quote in `{text}`")),
                    }
                }
                match chars.peek() {
                    None | Some('.') => {}
                    Some(_) => {
                        return Err(format!(
                        "unexpected text after a quoted part in `{text}`; write `\"schema\".table`"
                    ))
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    part.push(c);
                    chars.next();
                }
            }
            if part.is_empty() {
                return Err(format!("empty name part in `{text}`; write `schema.table`"));
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') => continue,
                Some(_) => unreachable!("a part ends at a dot or the end"),
            }
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(Self { schema, name }),
            Err(parts) => Err(format!(
                "`{text}` has {} part(s); write `schema.table` (double-quote a part that contains a dot)",
                parts.len()
            )),
        }
    }

    /// The name as SQL: both parts quoted, safe for any characters.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Writes a name as a TOML key: bare when it can be, else a TOML string with every
/// special character escaped (a catalog name may hold quotes or line breaks).
pub fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        toml_string(name)
    }
}

/// Writes text as a one-line TOML basic string (`"…"`), valid as a value and as a key:
/// quotes and backslashes escaped, every control character as `\uXXXX`.
pub fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for QualifiedName {
    /// Prints the mapping notation, quoting a part only when it contains a dot or a quote,
    /// so that what is printed can be pasted back into a mapping file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn part(p: &str) -> String {
            if p.contains('.') || p.starts_with('"') {
                format!("\"{}\"", p.replace('"', "\"\""))
            } else {
                p.to_string()
            }
        }
        write!(f, "{}.{}", part(&self.schema), part(&self.name))
    }
}

impl Serialize for QualifiedName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_and_strings_parse_back_whatever_the_name() {
        for name in [
            "plain",
            "it's \"x\"",
            "a\nb",
            "tab\there",
            "back\\slash",
            "東京",
            "\u{7f}del",
        ] {
            let doc = format!("{} = {}", toml_key(name), toml_string(name));
            let parsed: toml::Table = doc.parse().unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(
                parsed.get(name).and_then(|v| v.as_str()),
                Some(name),
                "{doc}"
            );
        }
    }

    #[test]
    fn plain_and_mixed_case_names_are_kept_exactly() {
        let n = QualifiedName::parse("nw.SupplyPoint").unwrap();
        assert_eq!(n, QualifiedName::new("nw", "SupplyPoint"));
        assert_eq!(n.sql(), r#""nw"."SupplyPoint""#);
    }

    #[test]
    fn quoted_part_may_contain_dots_and_quotes() {
        let n = QualifiedName::parse(r#""my.schema"."odd""name""#).unwrap();
        assert_eq!(n, QualifiedName::new("my.schema", "odd\"name"));
        assert_eq!(QualifiedName::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn wrong_number_of_parts_is_rejected() {
        assert!(QualifiedName::parse("contracts").is_err());
        assert!(QualifiedName::parse("a.b.c").is_err());
        assert!(QualifiedName::parse("a.").is_err());
        assert!(QualifiedName::parse("\"a.b").is_err());
    }
}
