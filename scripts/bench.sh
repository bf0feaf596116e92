#!/usr/bin/env bash
# Benchmark: shadan against a raw binary COPY pipe of exactly the same projected rows,
# measured side by side in one run on two fresh local clusters. Prints figures only:
# timings on a shared machine are noisy, so read the ratios, not the absolute times.
#
#   scripts/bench.sh [N]          # N supply points and contracts (default 1,000,000)
#
#   pipe     psql -c "COPY (<shadan's own projection query>) TO STDOUT (FORMAT binary)" |
#            psql -c "<shadan's own COPY target FROM STDIN (FORMAT binary)>", tables in parallel
#   cutover  shadan cutover --jobs 1 and --jobs 2, the target emptied before each run
set -euo pipefail
n=${1:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SHADAN_LOCAL_DIR=${SHADAN_BENCH_DIR:-$root/.shadan-bench}
export SHADAN_SOURCE_PORT=${SHADAN_BENCH_SOURCE_PORT:-55441}
export SHADAN_TARGET_PORT=${SHADAN_BENCH_TARGET_PORT:-55442}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
psql="$bin/psql -X -q -v ON_ERROR_STOP=1"
mapping=mappings/retail.toml

cargo build --release --quiet
shadan=$root/target/release/shadan
trap 'scripts/pg-local.sh stop >/dev/null' EXIT
scripts/pg-local.sh stop >/dev/null 2>&1 || true
scripts/pg-local.sh start >/dev/null
eval "$(scripts/pg-local.sh env)"

echo "generating $n supply points and contracts ..."
PSQL="$bin/psql" scripts/gen-data.sh "$n" >/dev/null
$psql -d "$SHADAN_SOURCE" -c "VACUUM ANALYZE" >/dev/null
plan_json=$("$shadan" plan --mapping "$mapping" --json)
rows=$($psql -At -d "$SHADAN_SOURCE" -c "SELECT (SELECT count(*) FROM joint.supply_points) \
    + (SELECT count(*) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail')")

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
reset_target() {
    $psql -d "$SHADAN_TARGET" -c "DROP SCHEMA IF EXISTS shadan CASCADE" \
        -c "TRUNCATE retail.supply_points, retail.contracts" -c "CHECKPOINT" >/dev/null 2>&1
    $psql -d "$SHADAN_SOURCE" -c "CHECKPOINT" >/dev/null
}
target_rows() {
    $psql -At -d "$SHADAN_TARGET" -c "SELECT (SELECT count(*) FROM retail.supply_points) + (SELECT count(*) FROM retail.contracts)"
}

# Lines of: PGOPTIONS for the source session (the values shadan binds), TAB, source
# query, TAB, target COPY statement; one line per table, taken from shadan's own plan.
mapfile -t pipes < <(python3 - "$plan_json" <<'PY'
import json, sys
plan = json.loads(sys.argv[1])
base = ["-c shadan.own_retailer=" + plan["mapping"]["own_retailer"]]
for t in plan["tables"]:
    opts = base + ["-c %s={%s}" % (s["name"], ",".join(s["value"])) for s in t["settings"]]
    print("\t".join([" ".join(opts), t["query"], t["copy_in"]]))
PY
)

declare -A secs rss
reset_target
start=$(now)
pids=()
for line in "${pipes[@]}"; do
    IFS=$'\t' read -r options query copy_in <<<"$line"
    ( PGOPTIONS="$options" $psql -d "$SHADAN_SOURCE" -c "COPY ($query) TO STDOUT (FORMAT binary)" |
        $psql -d "$SHADAN_TARGET" -c "$copy_in" ) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
secs[pipe]=$(since "$start")
[ "$(target_rows)" = "$rows" ] || { echo "the raw pipe copied $(target_rows) rows, expected $rows" >&2; exit 1; }

for jobs in 1 2; do
    reset_target
    start=$(now)
    /usr/bin/time -f %M -o "$SHADAN_LOCAL_DIR/rss" "$shadan" cutover --mapping "$mapping" --jobs "$jobs" \
        >/dev/null 2>"$SHADAN_LOCAL_DIR/err" || { cat "$SHADAN_LOCAL_DIR/err" >&2; exit 1; }
    secs[cutover$jobs]=$(since "$start")
    rss[cutover$jobs]=$(( $(cat "$SHADAN_LOCAL_DIR/rss") / 1024 ))
    [ "$(target_rows)" = "$rows" ] || { echo "cutover copied $(target_rows) rows, expected $rows" >&2; exit 1; }
done

# verify, beside a raw parallel binary read of both sides (the target as cutover left it).
start=$(now)
pids=()
for line in "${pipes[@]}"; do
    IFS=$'\t' read -r options query copy_in <<<"$line"
    target=${copy_in#COPY }; target=${target%% (*}
    PGOPTIONS="$options" $psql -d "$SHADAN_SOURCE" -c "COPY ($query) TO STDOUT (FORMAT binary)" >/dev/null &
    pids+=($!)
    $psql -d "$SHADAN_TARGET" -c "COPY $target TO STDOUT (FORMAT binary)" >/dev/null &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
secs[read]=$(since "$start")

for mode in plain deep; do
    flag=; [ "$mode" = deep ] && flag=--deep
    start=$(now)
    /usr/bin/time -f %M -o "$SHADAN_LOCAL_DIR/rss" "$shadan" verify --mapping "$mapping" --jobs 2 $flag \
        >/dev/null 2>"$SHADAN_LOCAL_DIR/err" || { cat "$SHADAN_LOCAL_DIR/err" >&2; exit 1; }
    secs[verify_$mode]=$(since "$start")
    rss[verify_$mode]=$(( $(cat "$SHADAN_LOCAL_DIR/rss") / 1024 ))
done

# sync after nothing changed, then after changing 1% of contracts (switches away and
# to the own retailer, moves out, address and capacity changes).
written() {
    $psql -At -d "$SHADAN_TARGET" -c "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables WHERE schemaname = 'retail'"
}
sync_run() { # key
    local before; before=$(written)
    start=$(now)
    /usr/bin/time -f %M -o "$SHADAN_LOCAL_DIR/rss" "$shadan" sync --mapping "$mapping" --jobs 2 --json \
        >"$SHADAN_LOCAL_DIR/manifest" 2>"$SHADAN_LOCAL_DIR/err" || { cat "$SHADAN_LOCAL_DIR/err" >&2; exit 1; }
    secs[$1]=$(since "$start")
    rss[$1]=$(( $(cat "$SHADAN_LOCAL_DIR/rss") / 1024 ))
    sleep 1 # let the server publish the table counters
    written_rows[$1]=$(( $(written) - before ))
    changed_rows[$1]=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sum(sum(t['changes'].values()) for t in m['tables']))" "$SHADAN_LOCAL_DIR/manifest")
}
declare -A written_rows changed_rows
sync_run sync_none
$psql -d "$SHADAN_SOURCE" >/dev/null <<'SQL'
UPDATE joint.contracts SET retailer_code = 'R0002' WHERE contract_id % 1000 = 1 AND retailer_code = 'R0001';
UPDATE joint.contracts SET retailer_code = 'R0001' WHERE contract_id % 1000 = 2 AND supply_kind = 'retail';
DELETE FROM joint.contracts WHERE contract_id % 1000 = 3;
UPDATE joint.contracts SET contracted_capacity_kva = 6.0, phone = '022-999-0000' WHERE contract_id % 1000 IN (4, 5, 6, 7);
UPDATE joint.supply_points SET address = address || ' 2F' WHERE right(supply_point_id, 3) IN ('008', '009', '010');
UPDATE joint.contracts SET wheeling_rate_plan = 'changed' WHERE contract_id % 1000 = 11;
SQL
sync_run sync_1pct

row() { # label key [baseline key]
    python3 - "$1" "$rows" "${secs[$2]}" "${secs[${3:-pipe}]}" "${rss[$2]:--}" <<'PY'
import sys
label, rows, s, pipe, rss = sys.argv[1:]
rss = rss + " MB" if rss != "-" else rss
print(f"{label:<30} {float(s):>9.2f} {int(rows)/float(s):>14,.0f} {float(pipe)/float(s):>10.2f}x {rss:>10}")
PY
}
printf '\nshadan benchmark: %s rows copied (%s supply points + own contracts), %s cores\n' "$rows" "$n" "$(nproc)"
printf '%-30s %9s %14s %11s %10s\n' "run" "seconds" "rows/s" "vs pipe" "peak RSS"
row "raw COPY pipe (parallel)" pipe
row "shadan cutover --jobs 1" cutover1
row "shadan cutover --jobs 2" cutover2
printf '%-30s %9s %14s %11s %10s\n' "" "" "" "vs read" ""
row "raw binary read, both sides" read read
row "shadan verify --jobs 2" verify_plain read
row "shadan verify --deep --jobs 2" verify_deep read
python3 -c "import sys; print(f'verify --deep / verify: {float(sys.argv[1])/float(sys.argv[2]):.2f}x')" "${secs[verify_deep]}" "${secs[verify_plain]}"
printf '%-30s %9s %14s %11s %10s\n' "" "" "" "vs cutover" ""
row "shadan sync, nothing changed" sync_none cutover2
row "shadan sync, 1% changed" sync_1pct cutover2
for k in sync_none sync_1pct; do
    echo "$k: rows written (pg_stat_user_tables) ${written_rows[$k]}, rows changed (manifest) ${changed_rows[$k]}"
done
