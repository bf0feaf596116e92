//! The tool's state must be the tool's alone. It says which batches are done, and
//! cutover runs the index definitions stored there, so state another role could write is
//! refused. So is anything through which another role's code would run as the tool:
//! a trigger or a rule on a state table, or a view or table of another role read in its
//! place.
//!
//! Each check is one statement, so it sees the catalog at one moment. Once it has found
//! the `shadan` schema and everything in it owned by the tool, no other role can rename,
//! drop or add relations to it (unless granted CREATE on it, which the check also
//! refuses; a trusted extension created there by a database owner's grant of CREATE on
//! the database is owned by the bootstrap superuser, and refused as another role's), and
//! the reads and writes that follow reach the tool's own objects.

use tokio_postgres::Client;

use crate::error::Error;

/// The name of a grantee: `PUBLIC`, a role, or `#oid` for a role since dropped.
const GRANTEE: &str = "COALESCE((SELECT pg_catalog.quote_ident(g.rolname) FROM pg_catalog.pg_roles g \
     WHERE g.oid OPERATOR(pg_catalog.=) a.grantee), CASE WHEN a.grantee OPERATOR(pg_catalog.=) 0::pg_catalog.oid \
     THEN 'PUBLIC' ELSE '#' OPERATOR(pg_catalog.||) a.grantee::pg_catalog.text END)";

/// What in the `shadan` schema is not `owner`'s alone (an SQL expression naming a role),
/// one line each: the schema or a relation another role owns, a trigger (not one of a
/// constraint's own) or a rule on a relation there, and a privilege that lets another
/// role write (also one column), truncate or add triggers to one, or create in the
/// schema.
fn not_alone(owner: &str) -> String {
    let in_schema = "n.nspname OPERATOR(pg_catalog.=) 'shadan'";
    format!(
        "SELECT pg_catalog.format('%I owned by %I', n.nspname, r.rolname) \
         FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner \
         WHERE {in_schema} AND r.rolname OPERATOR(pg_catalog.<>) {owner} \
         UNION ALL \
         SELECT pg_catalog.format('%I.%I owned by %I', n.nspname, c.relname, r.rolname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner \
         WHERE {in_schema} AND r.rolname OPERATOR(pg_catalog.<>) {owner} \
         UNION ALL \
         SELECT pg_catalog.format('trigger %I on %I.%I', t.tgname, n.nspname, c.relname) \
         FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.tgrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE {in_schema} AND NOT t.tgisinternal \
         UNION ALL \
         SELECT pg_catalog.format('rule %I on %I.%I', w.rulename, n.nspname, c.relname) \
         FROM pg_catalog.pg_rewrite w JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) w.ev_class \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE {in_schema} \
         UNION ALL \
         SELECT pg_catalog.format('%s on %I.%I granted to %s', a.privilege_type, n.nspname, c.relname, {GRANTEE}) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace, \
         LATERAL pg_catalog.aclexplode(c.relacl) a \
         WHERE {in_schema} AND a.grantee OPERATOR(pg_catalog.<>) c.relowner \
           AND a.privilege_type OPERATOR(pg_catalog.=) ANY (ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER']) \
         UNION ALL \
         SELECT pg_catalog.format('%s on %I.%I (%I) granted to %s', a.privilege_type, n.nspname, c.relname, t.attname, {GRANTEE}) \
         FROM pg_catalog.pg_attribute t JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace, \
         LATERAL pg_catalog.aclexplode(t.attacl) a \
         WHERE {in_schema} AND NOT t.attisdropped AND t.attnum OPERATOR(pg_catalog.>) 0 \
           AND a.grantee OPERATOR(pg_catalog.<>) c.relowner \
           AND a.privilege_type OPERATOR(pg_catalog.=) ANY (ARRAY['INSERT', 'UPDATE']) \
         UNION ALL \
         SELECT pg_catalog.format('CREATE on schema %I granted to %s', n.nspname, {GRANTEE}) \
         FROM pg_catalog.pg_namespace n, LATERAL pg_catalog.aclexplode(n.nspacl) a \
         WHERE {in_schema} AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner \
           AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'"
    )
}

/// Whose the state must be.
#[derive(Debug, Clone, Copy)]
pub enum Whose {
    /// The connected role's: it is about to write the state, or to act on it.
    Mine,
    /// The role that owns the `shadan` schema: an auditor reads the state of the role
    /// that wrote it, and it must be that role's alone.
    Writers,
}

impl Whose {
    /// The expected owner, as an SQL expression naming a role.
    fn owner(self) -> &'static str {
        match self {
            Whose::Mine => "CURRENT_USER",
            Whose::Writers => {
                "(SELECT o.rolname FROM pg_catalog.pg_namespace s JOIN pg_catalog.pg_roles o \
                  ON o.oid OPERATOR(pg_catalog.=) s.nspowner WHERE s.nspname OPERATOR(pg_catalog.=) 'shadan')"
            }
        }
    }
}

/// What to do about it, after the list.
const REMEDY: &str = "another role could forge checkpoints or index definitions there, or run \
    its code as the tool; drop or rename that schema, drop those triggers, rules and \
    objects, revoke those privileges, or run shadan as the schema's owner";

/// What [`not_alone`] finds as one line of text, NULL when there is nothing.
fn listed(whose: Whose) -> String {
    format!(
        "SELECT pg_catalog.string_agg(o.line, ', ') FROM ({}) AS o(line)",
        not_alone(whose.owner())
    )
}

/// The error for what [`not_alone`] found.
fn refusal(found: Option<String>) -> Result<(), Error> {
    match found {
        None => Ok(()),
        Some(found) => Err(Error::Runtime(format!(
            "the target's state schema is not the tool's alone ({}): {REMEDY}",
            crate::ident::escape_controls(&found)
        ))),
    }
}

/// Refuses a `shadan` schema that is not the tool's alone (see the module documentation).
/// Checked with the target lock ([`super::lock::TargetLock::acquire`]), again at the end
/// of the schema's own statements ([`raise_unless_alone`]), and by [`existing`].
pub(crate) async fn check(client: &Client) -> Result<(), Error> {
    let found = client
        .query_typed_one(&listed(Whose::Mine), &[])
        .await
        .map_err(Error::db(
            "checking who owns the shadan state schema in the target",
        ))?;
    refusal(found.get(0))
}

/// A statement that fails, naming what it found, when the schema is not the tool's alone:
/// the last of the schema's own statements, in their implicit transaction, so that a
/// schema another role created or renamed into place after the lock's check fails them
/// all, and none of them stays.
pub(crate) fn raise_unless_alone() -> String {
    format!(
        "DO $shadan$ DECLARE found text; BEGIN \
           {} INTO found; \
           IF found IS NOT NULL THEN \
             RAISE EXCEPTION 'the target''s state schema is not the tool''s alone (%): {}', found; \
           END IF; END $shadan$;",
        listed(Whose::Mine),
        REMEDY.replace('\'', "''")
    )
}

/// Whether the state schema exists, checked to be `whose` alone when it does, by one
/// statement (see the module documentation): a dry run reads state without creating any,
/// and `history` and `verify` read it without the target lock.
pub async fn existing(client: &Client, whose: Whose) -> Result<bool, Error> {
    let tables = |name: &str| {
        format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
               ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
             WHERE n.nspname OPERATOR(pg_catalog.=) 'shadan' AND c.relname OPERATOR(pg_catalog.=) '{name}' \
               AND c.relkind OPERATOR(pg_catalog.=) 'r')"
        )
    };
    let row = client
        .query_typed_one(
            &format!(
                "SELECT ({}), {} AND {}",
                listed(whose),
                tables("batches"),
                tables("deferred_foreign_keys")
            ),
            &[],
        )
        .await
        .map_err(Error::db(
            "looking for the shadan state schema in the target",
        ))?;
    refusal(row.get(0))?;
    Ok(row.get(1))
}
