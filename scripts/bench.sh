#!/usr/bin/env bash
# Benchmark: shadan beside raw PostgreSQL on exactly the same rows, measured side by side
# in one run on two fresh local clusters. Each figure is the median of RUNS runs (default
# 3) with the slowest and fastest shown, because timings on a shared machine are noisy:
# read the ratios, not the absolute times. Prints figures only; nothing here is a test.
#
#   scripts/bench.sh [N]          # N supply points and contracts (default 1,000,000)
#
#   pipe     psql -c "COPY (<shadan's own projection query>) TO STDOUT (FORMAT binary)" |
#            psql -c "<shadan's own COPY target FROM STDIN (FORMAT binary)>", tables in parallel
#   cutover  shadan cutover --jobs 1 and --jobs 2, the target emptied before each run
#   read     COPY of the projection and of the target tables to /dev/null, all in parallel
#   verify   shadan verify and verify --deep --jobs 2
#   sync     shadan sync --jobs 2 after no change, and after changing 1% of contracts
#            (switches both ways, move-outs, capacity and address changes), by changes
#            since the last run's horizon; what crossed from the source that night
#   unusual  single runs, time and peak RSS: verify with 200,000 extra target rows, and
#            sync, verify and cutover with one 200 MB text value
#
#   Both databases are created with the locale most installations default to, C.UTF-8
#   (BENCH_LOCALE=C for the byte-order locale): both sides then share the collation, and
#   batch ranges use each side's own key index.
#   BENCH_SOURCE_ICU=1 scripts/bench.sh [N]   # the joint database on ICU en-US instead:
#            the two sides' collations differ, text key ranges compare bytes
#            (COLLATE "C"), which the key's index cannot serve: the source reads runs of
#            batches by one scan and a sort per worker; this measures what that costs
set -euo pipefail
n=${1:-1000000}
runs=${RUNS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SHADAN_LOCAL_DIR=${SHADAN_BENCH_DIR:-$root/.shadan-bench}
export SHADAN_SOURCE_PORT=${SHADAN_BENCH_SOURCE_PORT:-55441}
export SHADAN_TARGET_PORT=${SHADAN_BENCH_TARGET_PORT:-55442}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
psql="$bin/psql -X -q -v ON_ERROR_STOP=1"
mapping=mappings/retail.toml

cargo build --release --quiet
shadan=${CARGO_TARGET_DIR:-$root/target}/release/shadan
trap 'scripts/pg-local.sh stop >/dev/null' EXIT
scripts/pg-local.sh stop >/dev/null 2>&1 || true
scripts/pg-local.sh start >/dev/null
eval "$(scripts/pg-local.sh env)"
out=$SHADAN_LOCAL_DIR
locale=${BENCH_LOCALE:-C.UTF-8}
for side in joint retail; do
    url=$SHADAN_SOURCE
    [ "$side" = retail ] && url=$SHADAN_TARGET
    $psql -d "${url%/*}/postgres" -c "DROP DATABASE $side" >/dev/null
    $psql -d "${url%/*}/postgres" -c "CREATE DATABASE $side TEMPLATE template0 ENCODING 'UTF8' LOCALE '$locale'" >/dev/null
    $psql -d "$url" -f "schema/$side.sql" >/dev/null
done
echo "both databases: locale $locale"
if [ -n "${BENCH_SOURCE_ICU:-}" ]; then
    admin=${SHADAN_SOURCE%/joint}/postgres
    $psql -d "$admin" -c "DROP DATABASE joint" >/dev/null
    $psql -d "$admin" -c "CREATE DATABASE joint TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'" >/dev/null
    $psql -d "$SHADAN_SOURCE" -f schema/joint.sql >/dev/null
    echo "the joint database collates with ICU en-US"
fi

echo "generating $n supply points and contracts ..."
PSQL="$bin/psql" scripts/gen-data.sh "$n" >/dev/null
$psql -d "$SHADAN_SOURCE" -c "VACUUM ANALYZE" >/dev/null
plan_json=$("$shadan" plan --mapping "$mapping" --json)
rows=$($psql -At -d "$SHADAN_SOURCE" -c "SELECT (SELECT count(*) FROM joint.supply_points) \
    + (SELECT count(*) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail')")

# Per table: PGOPTIONS for the source session (the values shadan binds), source query,
# target COPY statement, target table; taken from shadan's own plan.
mapfile -t tables < <(python3 - "$plan_json" <<'PY'
import json, sys
plan = json.loads(sys.argv[1])
base = ["-c shadan.own_retailer=" + plan["mapping"]["own_retailer"]]
for t in plan["tables"]:
    opts = base + ["-c %s={%s}" % (s["name"], ",".join(s["value"])) for s in t["settings"]]
    print("\t".join([" ".join(opts), t["query"], t["copy_in"], t["target"]]))
PY
)

now() { date +%s.%N; }
empty_target() {
    $psql -d "$SHADAN_TARGET" -c "DROP SCHEMA IF EXISTS shadan CASCADE" \
        -c "TRUNCATE retail.supply_points, retail.contracts" -c "CHECKPOINT" >/dev/null 2>&1
    $psql -d "$SHADAN_SOURCE" -c "CHECKPOINT" >/dev/null
}
target_rows() {
    $psql -At -d "$SHADAN_TARGET" -c "SELECT (SELECT count(*) FROM retail.supply_points) + (SELECT count(*) FROM retail.contracts)"
}
written() {
    $psql -At -d "$SHADAN_TARGET" -c "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'retail'"
}

raw_pipe() {
    local pids=() line options query copy_in target
    for line in "${tables[@]}"; do
        IFS=$'\t' read -r options query copy_in target <<<"$line"
        ( PGOPTIONS="$options" $psql -d "$SHADAN_SOURCE" -c "COPY ($query) TO STDOUT (FORMAT binary)" |
            $psql -d "$SHADAN_TARGET" -c "$copy_in" ) &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    [ "$(target_rows)" = "$rows" ] || { echo "the raw pipe copied $(target_rows) rows, expected $rows" >&2; exit 1; }
}
raw_read() {
    local pids=() line options query copy_in target
    for line in "${tables[@]}"; do
        IFS=$'\t' read -r options query copy_in target <<<"$line"
        PGOPTIONS="$options" $psql -d "$SHADAN_SOURCE" -c "COPY ($query) TO STDOUT (FORMAT binary)" >/dev/null &
        pids+=($!)
        $psql -d "$SHADAN_TARGET" -c "COPY $target TO STDOUT (FORMAT binary)" >/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
shadan_run() { # args...: runs shadan, keeps its peak RSS (KB) in $out/rss
    /usr/bin/time -f %M -o "$out/rss" "$shadan" "$@" >"$out/stdout" 2>"$out/err" ||
        { cat "$out/err" >&2; exit 1; }
}
cutover_run() { empty_target; shadan_run cutover --mapping "$mapping" --jobs "$1"; [ "$(target_rows)" = "$rows" ]; }
change=0
one_percent() { # a different 1% of contracts each time
    change=$((change + 1))
    $psql -d "$SHADAN_SOURCE" >/dev/null <<SQL
UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id % 1000 = 10 * $change + 1 AND retailer_code = 'R0001';
UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id % 1000 = 10 * $change + 2 AND supply_kind = 'retail';
DELETE FROM joint.contracts WHERE contract_id % 1000 = 10 * $change + 3;
UPDATE joint.contracts SET contracted_capacity_kva = 6.0, phone = '022-999-000$change' WHERE contract_id % 1000 IN (10 * $change + 4, 10 * $change + 5, 10 * $change + 6, 10 * $change + 7);
UPDATE joint.supply_points SET address = address || ' ${change}F' WHERE right(supply_point_id, 3)::int IN (10 * $change + 8, 10 * $change + 9, 10 * $change);
UPDATE joint.contracts SET wheeling_rate_plan = 'changed $change' WHERE contract_id % 1000 = 10 * $change + 9;
SQL
}

declare -A med lo hi rss
measure() { # key prepare-function command...: median, min and max seconds of $runs runs
    local key=$1 prepare=$2; shift 2
    local times=() peak=0 i start
    for ((i = 0; i < runs; i++)); do
        $prepare
        start=$(now)
        "$@"
        times+=("$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(now)")")
        [ -f "$out/rss" ] && [ "$(cat "$out/rss")" -gt "$peak" ] && peak=$(cat "$out/rss")
        rm -f "$out/rss"
    done
    read -r med[$key] lo[$key] hi[$key] < <(python3 -c "import sys, statistics as s; t = sorted(map(float, sys.argv[1:])); print(s.median(t), t[0], t[-1])" "${times[@]}")
    rss[$key]=$((peak / 1024))
}
nothing() { :; }

echo "measuring, $runs runs each ..."
measure pipe empty_target raw_pipe
measure cutover1 nothing cutover_run 1
measure cutover2 nothing cutover_run 2
measure read nothing raw_read
measure verify nothing shadan_run verify --mapping "$mapping" --jobs 2
measure deep nothing shadan_run verify --mapping "$mapping" --jobs 2 --deep
shadan_run sync --mapping "$mapping" --jobs 2
measure sync_none nothing shadan_run sync --mapping "$mapping" --jobs 2 --json
measure sync_1pct one_percent shadan_run sync --mapping "$mapping" --jobs 2 --json
# Rows written must equal rows changed: one more 1% night, counters read around it.
one_percent
sleep 1 # let the server publish its table counters
before=$(written)
shadan_run sync --mapping "$mapping" --jobs 2 --json
sleep 1
written_1pct=$(( $(written) - before ))
changed_1pct=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sum(sum(t['changes'].values()) for t in m['tables']))" "$out/stdout")
# What crossed from the source on that night, per table (the sync manifest's report).
received_1pct=$(python3 - "$out/stdout" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for t in m["tables"]:
    s = t["sync"]
    print(f"  {t['target']:<24} {s['path']} path: {s['source_rows']:,} rows and {s['source_keys']:,} keys "
          f"received, {s['source_bytes']:,} bytes; {s['batches_skipped']} of {s['batches']} batches skipped"
          + (f" ({s['reason']})" if s["reason"] else ""))
PY
)

row() { # label key baseline-key how
    python3 - "$1" "$rows" "${med[$2]}" "${lo[$2]}" "${hi[$2]}" "${med[$3]}" "$4" "${rss[$2]:-0}" <<'PY'
import sys
label, rows, m, lo, hi, base, how, rss = sys.argv[1:]
m, lo, hi, base = map(float, (m, lo, hi, base))
ratio = base / m if how == "speed" else m / base
rss = f"{rss} MB" if rss != "0" else "-"
print(f"{label:<32} {m:>7.2f} {lo:>6.2f}-{hi:<6.2f} {int(rows)/m:>12,.0f} {ratio:>7.2f}  {rss:>8}")
PY
}
printf '\nshadan benchmark: %s rows (%s supply points + own contracts), %s cores, median of %s runs, locale %s%s\n' \
    "$rows" "$n" "$(nproc)" "$runs" "$locale" "${BENCH_SOURCE_ICU:+ (joint database: ICU en-US)}"
printf '%-32s %7s %13s %12s %7s  %8s\n' "run" "median" "min-max (s)" "rows/s" "ratio" "peak RSS"
echo "-- speed relative to the raw COPY pipe (higher is faster)"
row "raw COPY pipe, tables parallel" pipe pipe speed
row "shadan cutover --jobs 1" cutover1 pipe speed
row "shadan cutover --jobs 2" cutover2 pipe speed
echo "-- speed relative to a raw parallel read of both sides"
row "raw binary read, both sides" read read speed
row "shadan verify --jobs 2" verify read speed
row "shadan verify --deep --jobs 2" deep read speed
echo "-- time relative to cutover --jobs 2 (lower is faster)"
row "shadan sync, nothing changed" sync_none cutover2 time
row "shadan sync, 1% changed" sync_1pct cutover2 time
python3 -c "import sys; print(f'verify --deep takes {float(sys.argv[1])/float(sys.argv[2]):.2f}x the time of verify')" "${med[deep]}" "${med[verify]}"
echo "sync after a 1% night: rows written (pg_stat_user_tables) $written_1pct, rows changed (its manifest) $changed_1pct"
echo "from the source on that night:"
echo "$received_1pct"

# Round trips: both links through scripts/delay-proxy.py, 10 ms each way (a 20 ms round
# trip, as between two data centres). (time delayed - time direct) / 20 ms counts the
# round trips a run waits for; medians of $runs runs each way.
delay_ms=10
proxy_source=$((SHADAN_SOURCE_PORT + 100))
proxy_target=$((SHADAN_TARGET_PORT + 100))
python3 scripts/delay-proxy.py "$proxy_source" "$SHADAN_SOURCE_PORT" "$delay_ms" &
proxies=($!)
python3 scripts/delay-proxy.py "$proxy_target" "$SHADAN_TARGET_PORT" "$delay_ms" &
proxies+=($!)
trap 'kill "${proxies[@]}" 2>/dev/null; scripts/pg-local.sh stop >/dev/null' EXIT
sleep 0.5
delayed() { # command...: runs it with both servers reached through the delaying proxies
    SHADAN_SOURCE=${SHADAN_SOURCE/:$SHADAN_SOURCE_PORT\//:$proxy_source/} \
        SHADAN_TARGET=${SHADAN_TARGET/:$SHADAN_TARGET_PORT\//:$proxy_target/} "$@"
}
round_trips() { # label mapping command-args...: direct and delayed medians, round trips
    local label=$1 map=$2
    shift 2
    measure rt_direct nothing shadan_run "$@" --mapping "$map"
    measure rt_delayed nothing delayed shadan_run "$@" --mapping "$map"
    python3 -c "import sys; d, w = float(sys.argv[2]), float(sys.argv[3]); print(f'{sys.argv[1]:<40} {d:>6.2f} s direct {w:>6.2f} s at 20 ms  {(w - d) / 0.020:>6.1f} round trips')" \
        "$label" "${med[rt_direct]}" "${med[rt_delayed]}"
}
echo "-- round trips at a 20 ms round trip to each server"
round_trips "sync, nothing changed" "$mapping" sync --jobs 2
round_trips "verify --jobs 2" "$mapping" verify --jobs 2

# Many tables: 200 mapped tables of 2,000 rows each, per-table overhead (single runs).
many=200
many_rows=2000
for side in "$SHADAN_SOURCE" "$SHADAN_TARGET"; do
    extra=""
    [ "$side" = "$SHADAN_SOURCE" ] && extra=", o text NOT NULL"
    $psql -d "$side" >/dev/null <<SQL
CREATE SCHEMA many;
DO \$\$ BEGIN FOR i IN 1..$many LOOP
  EXECUTE format('CREATE TABLE many.t%s (id int PRIMARY KEY, v text$extra)', lpad(i::text, 3, '0'));
END LOOP; END \$\$;
SQL
done
$psql -d "$SHADAN_SOURCE" >/dev/null <<SQL
DO \$\$ BEGIN FOR i IN 1..$many LOOP
  EXECUTE format('INSERT INTO many.t%s SELECT g, ''v'' || g, CASE WHEN g %% 4 = 0 THEN ''R0002'' ELSE ''R0001'' END FROM generate_series(1, $many_rows) g', lpad(i::text, 3, '0'));
END LOOP; END \$\$;
ANALYZE;
SQL
many_mapping=$out/many.toml
python3 - "$many" >"$many_mapping" <<'PY'
import sys
print('[mapping]\nname = "many"\nown_retailer = "R0001"')
for i in range(1, int(sys.argv[1]) + 1):
    print(f'\n[[table]]\nsource = "many.t{i:03}"\ntarget = "many.t{i:03}"\nkey = ["id"]\nscope = "own"\nowner = "o"\n')
    print('[table.columns]\nid = "public"\nv = "own"\no = "non_public"')
PY
echo "-- $many tables of $many_rows rows (single runs; per table = total / $many)"
many_run() { # label command...
    local start
    start=$(now)
    "${@:2}"
    python3 -c "import sys; t = float(sys.argv[3]) - float(sys.argv[2]); print(f'{sys.argv[1]:<48} {t:>7.2f} s  {t * 1000 / int(sys.argv[4]):>6.1f} ms/table')" \
        "$1" "$start" "$(now)" "$many"
}
many_run "plan, $many tables" shadan_run plan --mapping "$many_mapping"
many_run "cutover --jobs 2, $many tables" shadan_run cutover --mapping "$many_mapping" --jobs 2
many_run "sync, nothing changed, $many tables" shadan_run sync --mapping "$many_mapping" --jobs 2
many_run "verify --jobs 2, $many tables" shadan_run verify --mapping "$many_mapping" --jobs 2
round_trips "sync, nothing changed, $many tables" "$many_mapping" sync --jobs 2
round_trips "verify --jobs 2, $many tables" "$many_mapping" verify --jobs 2

# Bounded memory and time where data is unusual (single runs; exit codes 3 expected).
shadan_any() { /usr/bin/time -f %M -o "$out/rss" "$shadan" "$@" >"$out/stdout" 2>"$out/err" || true; }
timed() { # label command...: one run, seconds and peak RSS
    local start
    start=$(now)
    "${@:2}"
    python3 -c "import sys; print(f'{sys.argv[1]:<48} {float(sys.argv[3]) - float(sys.argv[2]):>7.2f} s  {int(sys.argv[4]) // 1024:>6} MB')" \
        "$1" "$start" "$(now)" "$(tail -n 1 "$out/rss")"
}
echo "-- unusual data (single runs)"
$psql -d "$SHADAN_TARGET" -c "INSERT INTO retail.supply_points SELECT 'X' || lpad(g::text, 21, '0'), 'extra', '000-0000', 'low', 'x' FROM generate_series(1, 200000) g" >/dev/null
timed "verify, 200,000 extra target rows" shadan_any verify --mapping "$mapping" --jobs 2
$psql -d "$SHADAN_TARGET" -c "DELETE FROM retail.supply_points WHERE supply_point_id LIKE 'X%'" >/dev/null
$psql -d "$SHADAN_SOURCE" -c "UPDATE joint.supply_points SET address = repeat('長い住所 ', 16000000) WHERE supply_point_id = (SELECT min(supply_point_id) FROM joint.supply_points)" >/dev/null
timed "sync, one 200 MB text value changed" shadan_any sync --mapping "$mapping" --jobs 2
timed "verify, one 200 MB text value" shadan_any verify --mapping "$mapping" --jobs 2
empty_target
timed "cutover --jobs 2, one 200 MB text value" shadan_any cutover --mapping "$mapping" --jobs 2
