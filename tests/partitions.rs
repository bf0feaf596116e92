//! Partitioned tables on either side: a source partitioned by range on a date (cut into
//! batches from a sample, never a scan of every key), a target partitioned by list, and
//! partitions attached between two syncs on both.

use crate::support::{s, write_mapping, TestDb};

const MAPPING: &str = r#"
[mapping]
name = "partitions"
own_retailer = "R0001"

[[table]]
source = "p.reading"
target = "r.reading"
key = ["read_on", "spid", "region"]
scope = "own"
owner = "retailer"

[table.columns]
read_on  = "public"
spid     = "public"
region   = "public"
kwh      = "own"
retailer = "non_public"
"#;

const EXPECTED: &str =
    "SELECT read_on, spid, region, kwh FROM p.reading WHERE retailer = 'R0001' ORDER BY 1, 2, 3";
const ACTUAL: &str = "SELECT read_on, spid, region, kwh FROM r.reading ORDER BY 1, 2, 3";

#[test]
fn range_partitioned_source_and_list_partitioned_target_cutover_sync_and_attach() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA p; \
         CREATE TABLE p.reading (read_on date, spid text, region text, kwh int, retailer text NOT NULL, \
             PRIMARY KEY (read_on, spid, region)) PARTITION BY RANGE (read_on); \
         CREATE TABLE p.reading_2024_01 PARTITION OF p.reading FOR VALUES FROM ('2024-01-01') TO ('2024-02-01'); \
         CREATE TABLE p.reading_2024_02 PARTITION OF p.reading FOR VALUES FROM ('2024-02-01') TO ('2024-03-01'); \
         CREATE TABLE p.reading_2024_03 PARTITION OF p.reading FOR VALUES FROM ('2024-03-01') TO ('2024-04-01'); \
         INSERT INTO p.reading SELECT '2024-01-01'::date + (g % 90), 'sp' || (g / 90), \
             (ARRAY['north', 'south'])[g % 2 + 1], g, CASE WHEN g % 3 = 0 THEN 'R0002' ELSE 'R0001' END \
         FROM generate_series(1, 60000) g; \
         ANALYZE p.reading; \
         CREATE TABLE p.reading_2024_04 (LIKE p.reading INCLUDING ALL); \
         INSERT INTO p.reading_2024_04 SELECT '2024-04-01'::date + (g % 30), 'sp' || g, 'east', g, 'R0001' \
             FROM generate_series(1, 3000) g",
    );
    db.target_sql(
        "CREATE SCHEMA r; \
         CREATE TABLE r.reading (read_on date, spid text, region text, kwh int, \
             PRIMARY KEY (read_on, spid, region)) PARTITION BY LIST (region); \
         CREATE TABLE r.reading_north PARTITION OF r.reading FOR VALUES IN ('north'); \
         CREATE TABLE r.reading_south PARTITION OF r.reading FOR VALUES IN ('south'); \
         CREATE TABLE r.reading_other PARTITION OF r.reading DEFAULT",
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&[
        "cutover",
        "--mapping",
        s(&path),
        "--batch-rows",
        "1000",
        "--jobs",
        "2",
    ])
    .expect_code(0);
    db.assert_same_rows(EXPECTED, ACTUAL, "after cutover");
    let batches: usize = db
        .target_sql("SELECT count(*) FROM shadan.batches")
        .parse()
        .unwrap();
    assert!(
        batches >= 10,
        "a partitioned source is cut into batches ({batches})"
    );
    db.shadan(&["verify", "--mapping", s(&path)]).expect_code(0);

    // Between two syncs: a new month on the source with a new region, loaded before the
    // cutover (its rows' xmin is older than any horizon since), and a partition for that
    // region on the target.
    db.source_sql(
        "ALTER TABLE p.reading ATTACH PARTITION p.reading_2024_04 FOR VALUES FROM ('2024-04-01') TO ('2024-05-01'); \
         UPDATE p.reading SET kwh = kwh + 1 WHERE read_on = '2024-02-10'; \
         DELETE FROM p.reading WHERE read_on = '2024-03-03'; \
         UPDATE p.reading SET retailer = 'R0002' WHERE read_on = '2024-01-05'",
    );
    db.target_sql(
        "CREATE TABLE r.reading_east (LIKE r.reading INCLUDING ALL); \
         ALTER TABLE r.reading ATTACH PARTITION r.reading_east FOR VALUES IN ('east')",
    );
    let run = db.shadan(&["sync", "--mapping", s(&path), "--json"]);
    run.expect_code(0);
    let how = &run.json()["tables"][0]["sync"];
    assert_eq!(
        how["path"], "full",
        "an attached partition's old rows are new to the projection: {how}"
    );
    db.assert_same_rows(EXPECTED, ACTUAL, "after sync");
    assert_eq!(
        db.target_sql("SELECT count(*) FROM r.reading_east"),
        "3000",
        "the new partition is filled"
    );
    db.shadan(&["verify", "--mapping", s(&path), "--deep"])
        .expect_code(0);
}

#[test]
fn a_trigger_on_one_target_partition_fails_the_batch_it_rewrites() {
    let db = TestDb::new();
    db.source_sql(
        "CREATE SCHEMA p; CREATE TABLE p.reading (read_on date, spid text, region text, kwh int, \
             retailer text NOT NULL, PRIMARY KEY (read_on, spid, region)); \
         INSERT INTO p.reading SELECT '2024-01-01'::date + (g % 90), 'sp' || g, 'north', g, 'R0001' \
         FROM generate_series(1, 500) g",
    );
    db.target_sql(
        "CREATE SCHEMA r; CREATE TABLE r.reading (read_on date, spid text, region text, kwh int, \
             PRIMARY KEY (read_on, spid, region)) PARTITION BY LIST (region); \
         CREATE TABLE r.reading_north PARTITION OF r.reading FOR VALUES IN ('north'); \
         CREATE FUNCTION public.forge() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN NEW.kwh := -1; RETURN NEW; END $$; \
         CREATE TRIGGER forge BEFORE UPDATE ON r.reading_north FOR EACH ROW EXECUTE FUNCTION public.forge()",
    );
    let path = write_mapping(&db, MAPPING);
    db.shadan(&["cutover", "--mapping", s(&path)])
        .expect_code(0);
    db.source_sql("UPDATE p.reading SET kwh = kwh + 1 WHERE spid = 'sp7'");
    let run = db.shadan(&["sync", "--mapping", s(&path)]);
    run.expect_stderr(1, "trigger");
}
