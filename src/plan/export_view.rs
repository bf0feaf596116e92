//! With `source_access = "views"`, the export view each table is read through: it must
//! belong to the export owner role and compute exactly this mapping's projection.

use std::collections::BTreeSet;

use super::{query, Problem, TablePlan};
use crate::catalog::Catalog;
use crate::mapping::name::QualifiedName;

/// With `source_access = "views"`: the export view must exist, have exactly the copied
/// columns with identical types, and compute this table's projection.
pub(super) fn check(
    table: &TablePlan,
    own_retailer: &str,
    source: &Catalog,
    line: usize,
    problems: &mut Vec<Problem>,
) {
    let view = query::export_view(&table.source);
    let fix = "run `shadan grants --views` for this mapping and have the source DBA apply it";
    let label = table.source.to_string();
    let Some(info) = source.table(&view).filter(|v| v.kind == 'v') else {
        problems.push(Problem::table(
            line,
            Some(&label),
            format!(
                "the export view {} does not exist or the role cannot see it; {fix}",
                view.sql()
            ),
        ));
        return;
    };
    // The view computes whatever its owner wrote: it must be the export owner role the
    // grants script creates for the role reading it, in a schema of that role, or a
    // neighbour who got there first could compute every row.
    let export_owner = crate::grants::export_owner(&source.current_user);
    if info.owner != export_owner || info.schema_owner != export_owner {
        problems.push(Problem::table(
            line,
            Some(&label),
            format!(
                "the export view {} is owned by {} in a schema owned by {}, not by {}, the role \
                 `shadan grants --views --role {}` creates: a view of another role can compute \
                 anything; have the DBA drop it (and the schema, if another role owns it) and apply the grants script",
                crate::ident::escape_controls(&view.sql()),
                crate::ident::escape_controls(&crate::ident::quote_ident(&info.owner)),
                crate::ident::escape_controls(&crate::ident::quote_ident(&info.schema_owner)),
                crate::ident::escape_controls(&crate::ident::quote_ident(&export_owner)),
                crate::ident::escape_controls(&source.current_user),
            ),
        ));
        return;
    }
    // It must read the mapped table, and only it: a view still bound to a table renamed
    // away would compute the projection of the wrong rows.
    if info.view_reads != [table.source.clone()] {
        problems.push(Problem::table(
            line,
            Some(&label),
            format!(
                "the export view {} reads {}, not the mapped table {}; {fix}",
                crate::ident::escape_controls(&view.sql()),
                crate::ident::escape_controls(
                    &info
                        .view_reads
                        .iter()
                        .map(QualifiedName::sql)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                crate::ident::escape_controls(&table.source.sql()),
            ),
        ));
        return;
    }
    let expected: BTreeSet<(&str, &str)> = table
        .columns
        .iter()
        .map(|c| (c.source.as_str(), c.type_name.as_str()))
        .collect();
    // Besides the projection, the view may carry its table's row `xmin` for sync.
    let actual: BTreeSet<(&str, &str)> = info
        .columns
        .iter()
        .filter(|c| {
            (c.name.as_str(), c.type_name.as_str())
                != (crate::source::changes::CHANGE_COLUMN, "xid")
        })
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect();
    let made_for = format!(
        "{}{}",
        crate::grants::VIEW_COMMENT_PREFIX,
        table.projection_digest(own_retailer)
    );
    if expected != actual || info.comment.as_deref() != Some(made_for.as_str()) {
        problems.push(Problem::table(
            line,
            Some(&label),
            format!(
                "the export view {} computes a different projection than this mapping; {fix}",
                view.sql()
            ),
        ));
    }
}
