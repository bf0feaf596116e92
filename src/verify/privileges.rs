//! The privilege audit: which source columns the connected role could read (itself, or
//! through any role it belongs to) that the mapping does not need. A DBA who grants the
//! reader one more column years later is noticed here. Through export views the role
//! needs no source column at all. Reported as findings of their own (`excess_privilege`),
//! which do not change the exit code: an auditor running `--deep` needs more on purpose,
//! so run verify as the nightly role to audit that role.

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Error;
use crate::plan::{Plan, SourceAccess};

/// A column the role can read that the mapping does not need, or the whole database for
/// a superuser (`table` and `column` empty).
#[derive(Debug, Clone, Serialize)]
pub struct ExcessPrivilege {
    /// The role that can read it: the connected role, whether the privilege is its own,
    /// PUBLIC's or a role's it belongs to (itself or with SET ROLE).
    pub role: String,
    /// `schema.table`.
    pub table: String,
    /// The column.
    pub column: String,
    /// What to do.
    pub fix: &'static str,
}

/// At most this many columns are listed (the count stays complete in the log).
const LISTED: usize = 200;

/// Runs the audit on `client`, a connection to the source as the role shadan reads as.
pub async fn audit(client: &Client, plan: &Plan) -> Result<Vec<ExcessPrivilege>, Error> {
    let context = "auditing the source role's privileges";
    let superuser: Option<String> = client
        .query_typed_opt(
            "SELECT r.rolname::pg_catalog.text FROM pg_catalog.pg_roles r \
             WHERE r.rolsuper AND pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER') LIMIT 1",
            &[],
        )
        .await
        .map_err(Error::db(context))?
        .map(|r| r.get(0));
    if let Some(role) = superuser {
        return Ok(vec![ExcessPrivilege {
            role,
            table: String::new(),
            column: String::new(),
            fix:
                "a superuser can read everything: read the source as the role `shadan grants` makes",
        }]);
    }
    let mut needed: Vec<String> = Vec::new();
    if plan.source_access == SourceAccess::Tables {
        for t in &plan.tables {
            for c in crate::grants::columns_read(t) {
                needed.push(format!(
                    "{}\u{1f}{}\u{1f}{c}",
                    t.source.schema, t.source.name
                ));
            }
        }
    }
    let rows = client
        .query(
            "SELECT DISTINCT CURRENT_USER::pg_catalog.text, \
                    pg_catalog.quote_ident(n.nspname::pg_catalog.text) OPERATOR(pg_catalog.||) '.' \
                      OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname::pg_catalog.text), \
                    a.attname::pg_catalog.text \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid \
                  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped \
             CROSS JOIN pg_catalog.pg_roles r \
             WHERE pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER') \
               AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'v', 'm', 'f']::\"char\"[]) \
               AND n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'shadan_export']::name[]) \
               AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%' \
               AND NOT (n.nspname::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.chr(31) \
                        OPERATOR(pg_catalog.||) c.relname::pg_catalog.text \
                        OPERATOR(pg_catalog.||) pg_catalog.chr(31) OPERATOR(pg_catalog.||) a.attname::pg_catalog.text) \
                   OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) \
               AND pg_catalog.has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT') \
             ORDER BY 2, 3",
            &[&needed],
        )
        .await
        .map_err(Error::db(context))?;
    if rows.len() > LISTED {
        tracing::warn!(
            columns = rows.len(),
            listed = LISTED,
            "the source role can read many columns it does not need"
        );
    }
    Ok(rows
        .iter()
        .take(LISTED)
        .map(|r| ExcessPrivilege {
            role: r.get(0),
            table: r.get(1),
            column: r.get(2),
            fix: "revoke it, from the role, from a role it belongs to or from PUBLIC (whichever \
                  granted it); `shadan grants` prints the least-privilege script",
        })
        .collect())
}
