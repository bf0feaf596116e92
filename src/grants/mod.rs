//! `shadan grants`: least-privilege SQL for the source DBA.
//!
//! Direct mode: a login role with USAGE on the source schemas and column-level SELECT on
//! exactly the columns the mapping reads (key, public, own, and the owner and `only`
//! columns, which are only evaluated inside the source). `--views` mode: security-barrier
//! views in `shadan_export` that compute the projection inside the source, owned by a
//! non-login role; the tool's role may read those views and nothing else, so it cannot
//! see an owner column or any non-public column at all.
//!
//! The output is idempotent and commented. Unlike the queries the tool runs, the view
//! definitions must contain `own_retailer` and the `only` values as literals; they are
//! quoted here and reviewed by the DBA before being applied.

mod leftover;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::ident::{escape_controls, quote_ident, quote_literal};
use crate::mapping::name::QualifiedName;
use crate::plan::query::export_view;
use crate::plan::query::op;
use crate::plan::{Class, Plan, Scope, TablePlan, EXPORT_SCHEMA};

/// Default name of the role shadan connects to the source as.
pub const DEFAULT_ROLE: &str = "shadan_reader";

/// The text every export view's comment starts with; followed by the blake3 of the
/// projection it computes ([`crate::plan::TablePlan::projection_digest`]).
pub const VIEW_COMMENT_PREFIX: &str = "shadan export view, projection blake3 ";

/// The SQL script for the source DBA.
pub fn script(plan: &Plan, role: &str, views: bool) -> String {
    let mut out = String::new();
    let r = quote_ident(role);
    let _ = writeln!(
        out,
        "-- shadan grants for mapping {:?} (blake3 {}), shadan {}\n\
         -- Review, then apply as the owner of the source tables or a superuser:\n\
         --   psql -v ON_ERROR_STOP=1 -d <joint database> -f this-file.sql\n\
         -- Running it again is harmless: it converges on the same privileges.\n",
        plan.mapping_name,
        plan.mapping_digest,
        env!("CARGO_PKG_VERSION")
    );
    // Views bind their operators when created: under a pinned search_path (and with
    // qualified operators) no object a neighbour put in `public` can stand in for them.
    let _ = writeln!(
        out,
        "BEGIN;\nSET LOCAL search_path = pg_catalog, pg_temp;\n"
    );
    let _ = writeln!(
        out,
        "-- The login role shadan connects as. No password is set here: set one yourself,\n\
         -- ALTER ROLE {rc} PASSWORD '<fill in>';  -- SCRAM; shadan takes no client certificates.\n\
         DO $shadan$ BEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {}) THEN\n        CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION;\n    END IF;\nEND $shadan$;\n",
        quote_literal(role),
        rc = escape_controls(&r),
    );
    if views {
        views_mode(&mut out, plan, role);
    } else {
        direct_mode(&mut out, plan, role);
    }
    leftover::check(&mut out, plan, role, views);
    let _ = writeln!(out, "COMMIT;");
    out
}

/// Source columns a table's queries read, in table-plan order, without duplicates: what
/// the reading role needs, and all it needs.
pub(crate) fn columns_read(t: &TablePlan) -> Vec<String> {
    let mut seen = BTreeSet::new();
    t.columns
        .iter()
        .map(|c| c.source.clone())
        .chain(t.owner.iter().map(|o| o.name.clone()))
        .chain(t.only.iter().map(|f| f.column.name.clone()))
        .filter(|c| seen.insert(c.clone()))
        .collect()
}

fn list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table name for a `--` comment.
fn commented(name: &QualifiedName) -> String {
    escape_controls(&name.sql())
}

fn schemas(plan: &Plan) -> BTreeSet<String> {
    plan.tables
        .iter()
        .map(|t| t.source.schema.clone())
        .collect()
}

fn direct_mode(out: &mut String, plan: &Plan, role: &str) {
    let r = quote_ident(role);
    for schema in schemas(plan) {
        let q = quote_ident(&schema);
        let _ = writeln!(
            out,
            "-- Lets the role name objects in {}; grants no data.\nGRANT USAGE ON SCHEMA {q} TO {r};\n",
            escape_controls(&q)
        );
    }
    for t in &plan.tables {
        let read = columns_read(t);
        let change = Change::of(t);
        let never: Vec<String> = t
            .non_public
            .iter()
            .filter(|c| !read.contains(&c.name))
            .map(|c| escape_controls(&quote_ident(&c.name)))
            .collect();
        let _ =
            writeln!(
            out,
            "-- {} -> {}: only the columns the mapping reads. The owner and `only` columns are\n\
             -- evaluated inside this server and never copied. Not readable: {}.\n\
             {}\
             REVOKE ALL ON TABLE {} FROM {r};\n\
             GRANT SELECT ({}{}) ON TABLE {} TO {r};\n",
            commented(&t.source),
            commented(&t.target),
            if never.is_empty() { "(none)".to_string() } else { never.join(", ") },
            change.note,
            t.source.sql(),
            list(&read),
            change.grant,
            t.source.sql()
        );
    }
}

/// The script's parts for a table's row `xmin`, which sync reads changes by: granted
/// for a table (a view has none, and is always read in full).
struct Change {
    note: &'static str,
    grant: &'static str,
    column: String,
}

impl Change {
    fn of(t: &TablePlan) -> Self {
        if matches!(t.source_kind, 'r' | 'p') {
            Change {
                note: XMIN_NOTE,
                grant: ", \"xmin\"",
                column: format!(", \"xmin\" AS {}", crate::source::changes::CHANGE_COLUMN),
            }
        } else {
            Change {
                note: "",
                grant: "",
                column: String::new(),
            }
        }
    }
}

/// What the `xmin` grant gives away, said where it is granted.
const XMIN_NOTE: &str =
    "-- \"xmin\" (the id of the transaction that wrote each row version) lets sync read only\n\
    -- the rows written since its last run. It reveals that a row was written, not what: the\n\
    -- role already sees every copied column, and whether a change touched only a non-public\n\
    -- column is never sent (such a row is re-read and found equal). It stays inside the\n\
    -- grid company's process: nothing derived from it is written to the retail side.\n";

/// The role that owns the export views read by `role` (and their schema).
pub fn export_owner(role: &str) -> String {
    format!("{role}_export_owner")
}

fn views_mode(out: &mut String, plan: &Plan, role: &str) {
    let r = quote_ident(role);
    let owner_role = export_owner(role);
    let o = quote_ident(&owner_role);
    let schema = quote_ident(EXPORT_SCHEMA);
    let _ = writeln!(
        out,
        "-- A role that cannot log in owns the export views; only it may read the tables.\n\
         DO $shadan$ BEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {}) THEN\n        CREATE ROLE {o} NOLOGIN;\n    END IF;\nEND $shadan$;\n\
         -- A schema of that name owned by anyone else could hold views that compute anything.\n\
         DO $shadan$ BEGIN\n    IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = {} \
         AND nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {})) THEN\n        \
         RAISE EXCEPTION 'schema % exists and belongs to another role: drop it, then run this script again', {};\n    \
         END IF;\nEND $shadan$;\n\
         CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {o};\n\
         -- The login role may use the export schema and nothing of the source schemas.\n\
         GRANT USAGE ON SCHEMA {schema} TO {r};\n",
        quote_literal(&owner_role),
        quote_literal(EXPORT_SCHEMA),
        quote_literal(&owner_role),
        quote_literal(EXPORT_SCHEMA),
    );
    for s in schemas(plan) {
        let _ = writeln!(
            out,
            "GRANT USAGE ON SCHEMA {} TO {o};\nREVOKE ALL ON SCHEMA {} FROM {r};",
            quote_ident(&s),
            quote_ident(&s)
        );
    }
    out.push('\n');
    for t in &plan.tables {
        let view = export_view(&t.source).sql();
        let read = columns_read(t);
        let change = Change::of(t);
        let owned = t.owner.as_ref().map(|own| {
            format!(
                "{} {} {}::{}",
                quote_ident(&own.name),
                op("="),
                quote_literal(&plan.own_retailer),
                own.base_type_name
            )
        });
        let select: Vec<String> = t
            .columns
            .iter()
            .map(|c| match (c.class, t.scope, &owned) {
                // The cast keeps the column's typmod, which a CASE with a NULL branch
                // drops (numeric(7,1) would become numeric, and the view would no
                // longer match the mapping's types).
                (Class::Own, Scope::All, Some(pred)) => {
                    format!(
                        "(CASE WHEN {pred} THEN {col} END)::{} AS {col}",
                        c.type_name,
                        col = quote_ident(&c.source)
                    )
                }
                _ => quote_ident(&c.source),
            })
            .collect();
        let mut preds = Vec::new();
        if t.scope == Scope::Own {
            preds.extend(owned.clone());
        }
        for f in &t.only {
            let values: Vec<String> = f
                .values
                .iter()
                .map(|v| format!("{}::{}", quote_literal(v), f.column.base_type_name))
                .collect();
            preds.push(format!(
                "{} {} ANY (ARRAY[{}])",
                quote_ident(&f.column.name),
                op("="),
                values.join(", ")
            ));
        }
        let filter = if preds.is_empty() {
            String::new()
        } else {
            format!("\n    WHERE {}", preds.join(" AND "))
        };
        let _ = writeln!(
            out,
            "-- {} -> {}: the permitted projection, computed here. security_barrier keeps a\n\
             -- caller's predicates from running before the view's own filter.\n\
             {note}\
             REVOKE ALL ON TABLE {src} FROM {r};\n\
             GRANT SELECT ({}{grant}) ON TABLE {src} TO {o};\n\
             CREATE OR REPLACE VIEW {view} WITH (security_barrier) AS\n    SELECT {}{column}\n    FROM {from}{filter};\n\
             ALTER VIEW {view} OWNER TO {o};\n\
             COMMENT ON VIEW {view} IS {};\n\
             REVOKE ALL ON TABLE {view} FROM PUBLIC;\n\
             GRANT SELECT ON TABLE {view} TO {r};\n",
            commented(&t.source),
            commented(&t.target),
            list(&read),
            select.join(", "),
            quote_literal(&format!("{VIEW_COMMENT_PREFIX}{}", t.projection_digest(&plan.own_retailer))),
            src = t.source.sql(),
            from = t.source_table_from(),
            note = change.note,
            grant = change.grant,
            column = change.column,
        );
    }
}
