//! Many tables: 200 mapped tables through plan, cutover, sync and verify, on the
//! workers' connections (no connection per table). Timings are in scripts/bench.sh.

use crate::support::{s, write_mapping, TestDb};

/// Creates `count` tables `many.tNNN` with `rows` rows each on the source (every fourth
/// another retailer's) and empty ones on the target; returns their mapping.
pub fn many_tables(db: &TestDb, count: usize, rows: usize) -> String {
    let ddl = |with_data: bool, target: bool| {
        format!(
            "CREATE SCHEMA many; DO $$ BEGIN FOR i IN 1..{count} LOOP \
               EXECUTE format('CREATE TABLE many.t%s (id int PRIMARY KEY, v text{})', pg_catalog.lpad(i::text, 3, '0')); \
               {} END LOOP; END $$",
            if target { "" } else { ", o text NOT NULL" },
            if with_data {
                format!(
                    "EXECUTE format('INSERT INTO many.t%s SELECT g, ''v'' || g, CASE WHEN g %% 4 = 0 THEN ''R0002'' ELSE ''R0001'' END \
                     FROM generate_series(1, {rows}) g', pg_catalog.lpad(i::text, 3, '0'));"
                )
            } else {
                String::new()
            }
        )
    };
    db.source_sql(&ddl(true, false));
    db.target_sql(&ddl(false, true));
    let mut mapping = "[mapping]\nname = \"many\"\nown_retailer = \"R0001\"\n".to_string();
    for i in 1..=count {
        mapping.push_str(&format!(
            "\n[[table]]\nsource = \"many.t{i:03}\"\ntarget = \"many.t{i:03}\"\nkey = [\"id\"]\nscope = \"own\"\nowner = \"o\"\n\n\
             [table.columns]\nid = \"public\"\nv = \"own\"\no = \"non_public\"\n"
        ));
    }
    mapping
}

#[test]
fn two_hundred_tables_plan_cutover_sync_and_verify() {
    let db = TestDb::new();
    let path = write_mapping(&db, &many_tables(&db, 200, 200));
    db.shadan(&["plan", "--mapping", s(&path)]).expect_code(0);
    db.shadan(&["cutover", "--mapping", s(&path), "--jobs", "2"])
        .expect_code(0);
    db.source_sql(
        "UPDATE many.t007 SET v = 'changed' WHERE id = 1; DELETE FROM many.t150 WHERE id = 2",
    );
    let run = db.shadan(&["sync", "--mapping", s(&path), "--json"]);
    run.expect_code(0);
    let changed: u64 = run.json()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["changes"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(changed, 2, "{}", run.stdout);
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);
    assert_eq!(
        db.target_sql("SELECT sum(n) FROM (SELECT count(*) AS n FROM many.t001 UNION ALL SELECT count(*) FROM many.t200) x"),
        "300"
    );
}
