//! SQL identifier and literal quoting: the one place where a name from a mapping or a
//! catalog becomes SQL text. Values never pass through here at run time; they are bound
//! as parameters. `quote_literal` exists only for the DDL that `grants --views` prints
//! for a DBA to review.

/// Quotes an identifier the way PostgreSQL's `quote_ident` always does: wrapped in double
/// quotes with embedded quotes doubled, so any name (mixed case, keyword, or hostile text
/// such as `a"; drop table x; --`) stays one identifier.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Writes every control character (and the Unicode line and paragraph separators) of
/// `text` as `\u{..}`. Names come from catalogs other roles write: inside a `--` comment
/// of generated SQL a line break would end the comment and turn the rest of the name into
/// SQL, and on a terminal it would forge a line (`VERIFIED …`) or an escape sequence
/// would erase one.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() || ch == '\u{2028}' || ch == '\u{2029}' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(ch)));
        } else {
            out.push(ch);
        }
    }
    out
}

/// Quotes a string literal as standard SQL (`'...'` with embedded quotes doubled).
/// Used only in reviewed DDL output, never for queries the tool runs.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(ch),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_identifier_stays_one_identifier() {
        assert_eq!(
            quote_ident(r#"a"; drop table x; --"#),
            r#""a""; drop table x; --""#
        );
    }

    #[test]
    fn a_name_in_a_comment_cannot_end_the_comment() {
        let hostile = quote_ident("x\nALTER ROLE mallory SUPERUSER;\n--");
        let safe = escape_controls(&hostile);
        assert!(!safe.contains('\n'), "{safe}");
        assert_eq!(safe, "\"x\\u{a}ALTER ROLE mallory SUPERUSER;\\u{a}--\"");
    }

    #[test]
    fn literal_doubles_quotes_and_escapes_backslashes() {
        assert_eq!(quote_literal("O'Brien"), "'O''Brien'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }
}
