//! The end of the grants script: the role's attributes set explicitly, and a check that
//! fails the whole script when the role could still read anything the mapping does not
//! need. Column-level GRANTs only add; a `GRANT SELECT … TO PUBLIC` made years ago, or a
//! role the login role belongs to, would still open non-public columns to it. Revoking
//! those is the DBA's decision (other teams may rely on them), so the script stops and
//! names them instead of signing off.

use std::fmt::Write as _;

use super::columns_read;
use crate::ident::{quote_ident, quote_literal};
use crate::plan::Plan;

/// Appends the attribute settings and the leftover-privilege check for `role`. In views
/// mode the role may read no column of the source schemas at all.
pub(super) fn check(out: &mut String, plan: &Plan, role: &str, views: bool) {
    let r = quote_ident(role);
    let role_literal = quote_literal(role);
    let allowed: Vec<String> = if views {
        Vec::new()
    } else {
        plan.tables
            .iter()
            .flat_map(|t| {
                let table = quote_literal(&t.source.sql());
                columns_read(t).into_iter().map(move |c| {
                    format!(
                        "({table}::pg_catalog.regclass::pg_catalog.oid, {})",
                        quote_literal(&c)
                    )
                })
            })
            .collect()
    };
    let not_allowed = if allowed.is_empty() {
        "true".to_string()
    } else {
        format!(
            "(c.oid, a.attname::pg_catalog.text) NOT IN (VALUES {})",
            allowed.join(", ")
        )
    };
    let _ = writeln!(
        out,
        "-- The role's attributes, whatever they were: no superuser, no bypassing row security,\n\
         -- no inherited privileges of roles it may belong to.\n\
         ALTER ROLE {r} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;\n\
         -- Nothing else remains readable: stop here if the role can still read a column the\n\
         -- mapping does not need (through PUBLIC, say) or belongs to another role.\n\
         DO $shadan$\nDECLARE\n    leftover text;\n    member_of text;\nBEGIN\n    \
         SELECT pg_catalog.string_agg(pg_catalog.format('%I.%I.%I', n.nspname, c.relname, a.attname), ', ')\n      \
         INTO leftover\n      \
         FROM pg_catalog.pg_class c\n      \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace\n      \
         JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid\n           \
         AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped\n     \
         WHERE n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', {export}]::name[])\n       \
         AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%'\n       \
         AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'f']::\"char\"[])\n       \
         AND {not_allowed}\n       \
         AND pg_catalog.has_column_privilege({role_literal}, c.oid, a.attnum, 'SELECT');\n    \
         IF leftover IS NOT NULL THEN\n        \
         RAISE EXCEPTION 'role % can still read columns the mapping does not need: %; revoke those grants (also any to PUBLIC) and run this script again', {role_literal}, leftover;\n    \
         END IF;\n    \
         SELECT pg_catalog.string_agg(pg_catalog.format('%I.%I', n.nspname, p.proname), ', ')\n      \
         INTO leftover\n      \
         FROM pg_catalog.pg_proc p\n      \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace\n     \
         WHERE p.prosecdef\n       \
         AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema']::name[])\n       \
         AND pg_catalog.has_function_privilege({role_literal}, p.oid, 'EXECUTE');\n    \
         IF leftover IS NOT NULL THEN\n        \
         RAISE EXCEPTION 'role % can run SECURITY DEFINER functions, which read with their owner''s privileges: %; revoke EXECUTE (also from PUBLIC) and run this script again', {role_literal}, leftover;\n    \
         END IF;\n    \
         SELECT pg_catalog.string_agg(pg_catalog.quote_ident(g.rolname::pg_catalog.text), ', ') INTO member_of\n      \
         FROM pg_catalog.pg_auth_members m\n      \
         JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid\n      \
         JOIN pg_catalog.pg_roles u ON u.oid OPERATOR(pg_catalog.=) m.member\n     \
         WHERE u.rolname OPERATOR(pg_catalog.=) {role_literal};\n    \
         IF member_of IS NOT NULL THEN\n        \
         RAISE EXCEPTION 'role % belongs to %, whose privileges it can take with SET ROLE; revoke those memberships and run this script again', {role_literal}, member_of;\n    \
         END IF;\nEND $shadan$;\n",
        export = quote_literal(crate::plan::EXPORT_SCHEMA),
    );
}
