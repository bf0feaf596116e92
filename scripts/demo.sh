#!/usr/bin/env bash
# The whole information firewall on two local PostgreSQL clusters, in one command:
#
#   scripts/demo.sh          # install PostgreSQL if needed, start clusters, run the story
#   scripts/demo.sh stop     # stop the clusters and remove everything the demo made
#
# plan -> cutover -> verify --deep -> one simulated night of changes -> sync -> verify --deep,
# on 100,000 generated customers (DEMO_CUSTOMERS to change). Rerunnable: each run starts
# from fresh databases. Everything lives under ./.shadan-demo/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export SHADAN_LOCAL_DIR=$root/.shadan-demo
export SHADAN_SOURCE_PORT=${DEMO_SOURCE_PORT:-55451}
export SHADAN_TARGET_PORT=${DEMO_TARGET_PORT:-55452}
customers=${DEMO_CUSTOMERS:-100000}

if [ "${1:-}" = stop ]; then
    exec scripts/pg-local.sh stop
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    step "installing PostgreSQL (Debian package postgresql)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql libssl-dev pkg-config >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
psql="$bin/psql -X -q -v ON_ERROR_STOP=1"

step "building shadan"
cargo build --release --quiet
shadan=${CARGO_TARGET_DIR:-$root/target}/release/shadan
mapping=mappings/retail.toml

step "starting two clusters: the grid company's joint database and the retail database"
scripts/pg-local.sh start >/dev/null
eval "$(scripts/pg-local.sh env)"
# Fresh databases on every run.
$psql -d "${SHADAN_SOURCE%/*}/postgres" -c "DROP DATABASE IF EXISTS joint WITH (FORCE)"
$psql -d "${SHADAN_TARGET%/*}/postgres" -c "DROP DATABASE IF EXISTS retail WITH (FORCE)"
scripts/pg-local.sh start

step "generating $customers supply points and contracts in the joint database"
PSQL="$bin/psql" scripts/gen-data.sh "$customers"

step "shadan plan: what may cross, by class, and the query that runs in the source"
"$shadan" plan --mapping "$mapping"

step "shadan cutover: the first copy, from one snapshot, in batches"
"$shadan" cutover --mapping "$mapping" --jobs 2 --batch-rows 20000

step "shadan verify --deep: independent proof and leak audit"
"$shadan" verify --mapping "$mapping" --deep

step "a night passes in the joint database"
$psql -d "$SHADAN_SOURCE" <<'SQL'
-- 200 own customers switch to other retailers; 150 customers of others switch to us.
UPDATE joint.contracts SET retailer_code = 'R0007', updated_at = now()
 WHERE contract_id IN (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail' ORDER BY contract_id LIMIT 200);
UPDATE joint.contracts SET retailer_code = 'R0001', updated_at = now()
 WHERE contract_id IN (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0012' AND supply_kind = 'retail' ORDER BY contract_id LIMIT 150);
-- 50 customers move out: their contracts end and are removed.
DELETE FROM joint.contracts
 WHERE contract_id IN (SELECT contract_id FROM joint.contracts WHERE retailer_code = 'R0001' ORDER BY contract_id DESC LIMIT 50);
-- Address corrections, capacity changes.
UPDATE joint.supply_points SET address = address || ' 2F', updated_at = now() WHERE supply_point_id LIKE '%17';
UPDATE joint.contracts SET contracted_capacity_kva = 6.0, updated_at = now() WHERE contract_id % 500 = 3 AND retailer_code = 'R0001';
-- A non-public column changes: nothing of it may reach retail, so sync writes nothing for it.
UPDATE joint.contracts SET wheeling_rate_plan = '低圧標準接続送電サービス（改定）', updated_at = now() WHERE contract_id % 7 = 0;
SQL
PSQL="$bin/psql" scripts/gen-data.sh 300 >/dev/null   # 300 new customers

step "shadan sync: only what changed; customers who left lose their fields tonight"
"$shadan" sync --mapping "$mapping" --jobs 2

step "shadan verify --deep after the night"
"$shadan" verify --mapping "$mapping" --deep

step "what crossed the firewall, and what did not"
$psql -At -d "$SHADAN_SOURCE" -F ' ' <<'SQL' >"$SHADAN_LOCAL_DIR/source-counts"
SELECT (SELECT count(*) FROM joint.supply_points),
       (SELECT count(*) FROM joint.contracts WHERE retailer_code = 'R0001' AND supply_kind = 'retail'),
       (SELECT count(*) FROM joint.contracts WHERE retailer_code <> 'R0001' AND supply_kind = 'retail'),
       (SELECT count(*) FROM joint.contracts WHERE supply_kind = 'last_resort'),
       (SELECT count(*) FROM joint.contracts WHERE supply_kind = 'fit_purchase');
SQL
$psql -At -d "$SHADAN_TARGET" -F ' ' <<'SQL' >"$SHADAN_LOCAL_DIR/target-counts"
SELECT (SELECT count(*) FROM retail.supply_points), (SELECT count(*) FROM retail.contracts);
SQL
read -r sp own other lastresort fit <"$SHADAN_LOCAL_DIR/source-counts"
read -r tsp tct <"$SHADAN_LOCAL_DIR/target-counts"
cat <<EOF2
  crossed:  $tsp of $sp supply points (number, address, postal code, voltage class, area)
            $tct of $own contracts of the own retailer R0001 (holder, phone, capacities, dates)
  stayed:   $other contracts with other retailers, $lastresort last-resort supply and $fit FIT
            purchase customers; for every contract the retailer code, supply kind, wheeling
            contract number and rate plan; meter ids and change times of every supply point.
            Non-public columns were never selected: they did not leave the joint server.
  proof:    the run manifests are in the retail database: SELECT * FROM shadan.runs;
  stop:     scripts/demo.sh stop
EOF2
