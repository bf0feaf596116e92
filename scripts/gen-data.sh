#!/usr/bin/env bash
# Fills the reference joint schema (schema/joint.sql) with N supply points and N
# contracts, deterministically (every attribute derives from md5 of the row number).
#
#   scripts/gen-data.sh N [SOURCE_URL]     # default URL: $SHADAN_SOURCE
#   scripts/gen-data.sh 1000000            # about a minute on a small machine
#
# Distribution of contracts: ~70% with the retail company's own code R0001 (supply kind
# retail), ~28% spread over 40 other retailers R0002..R0041, ~1% last-resort supply by
# the grid company (N0001), ~1% FIT purchase contracts still under R0001 (the legacy
# case the `only` filter must keep out). Names, phones, capacities and wheeling numbers
# are realistic in shape; ~5% of phones and kana are NULL, some names are empty strings.
# Rows are appended after the highest existing number, so the script can be run again.
set -euo pipefail
n=${1:?usage: gen-data.sh N [SOURCE_URL]}
url=${2:-${SHADAN_SOURCE:?set SHADAN_SOURCE or pass the source URL}}
psql=${PSQL:-psql}

"$psql" -X -q -v ON_ERROR_STOP=1 -v n="$n" -d "$url" <<'SQL'
INSERT INTO joint.retailers (retailer_code, name, name_kana, registered_on)
SELECT code, name, kana, date '2016-04-01' + (i * 17)
FROM (VALUES ('R0001', '東北みらい電力', 'トウホクミライデンリョク', 0),
             ('N0001', '東北送配電（最終保障供給）', 'トウホクソウハイデン', 1)) v(code, name, kana, i)
UNION ALL
SELECT 'R' || lpad(g::text, 4, '0'), '新電力' || g || '号', 'シンデンリョク' || g, date '2016-04-01' + g * 23
FROM generate_series(2, 41) g
ON CONFLICT DO NOTHING;

CREATE TEMP TABLE gen AS
SELECT i, md5(i::text) AS h,
       ('x' || substr(md5(i::text), 1, 8))::bit(32)::int & 2147483647 AS r
FROM (SELECT greatest(coalesce((SELECT max(contract_id) FROM joint.contracts), 0),
                      coalesce((SELECT max(substr(supply_point_id, 3)::bigint) FROM joint.supply_points
                                WHERE supply_point_id ~ '^03[0-9]{20}$'), 0)) AS last) l,
     generate_series(l.last + 1, l.last + :n) i;

INSERT INTO joint.supply_points (supply_point_id, address, postal_code, voltage_class, area, meter_id, updated_at)
SELECT '03' || lpad(i::text, 20, '0'),
       (ARRAY['宮城県仙台市青葉区','宮城県仙台市泉区','岩手県盛岡市','青森県八戸市','秋田県秋田市','山形県山形市','福島県郡山市','新潟県新潟市中央区'])[1 + r % 8]
         || (1 + r % 9) || '丁目' || (1 + (r / 9) % 30) || '-' || (1 + (r / 270) % 20),
       lpad((980 + r % 20)::text, 3, '0') || '-' || lpad((r % 10000)::text, 4, '0'),
       CASE WHEN r % 1000 = 0 THEN 'extra_high' WHEN r % 50 = 0 THEN 'high' ELSE 'low' END,
       (ARRAY['仙台','盛岡','青森','秋田','山形','福島','新潟'])[1 + (r / 7) % 7],
       'M' || upper(substr(h, 9, 10)),
       timestamptz '2024-01-01 00:00:00+09' + (r % 31536000) * interval '1 second'
FROM gen;

INSERT INTO joint.contracts (contract_id, supply_point_id, holder_name, holder_name_kana, phone,
       contracted_capacity_kva, load_equipment_capacity_kw, main_breaker_amperes, night_equipment,
       retailer_code, supply_kind, wheeling_contract_no, wheeling_rate_plan, start_date, end_date, updated_at)
SELECT i,
       '03' || lpad(i::text, 20, '0'),
       CASE WHEN r % 997 = 0 THEN '' ELSE
       (ARRAY['佐藤','鈴木','高橋','田中','伊藤','渡辺','山本','中村','小林','加藤','阿部','菅原'])[1 + r % 12]
         || ' ' || (ARRAY['太郎','花子','一郎','美咲','健太','陽子','大輔','由美'])[1 + (r / 12) % 8] END,
       CASE WHEN r % 20 = 0 THEN NULL ELSE
       (ARRAY['サトウ','スズキ','タカハシ','タナカ','イトウ','ワタナベ','ヤマモト','ナカムラ','コバヤシ','カトウ','アベ','スガワラ'])[1 + r % 12]
         || ' ' || (ARRAY['タロウ','ハナコ','イチロウ','ミサキ','ケンタ','ヨウコ','ダイスケ','ユミ'])[1 + (r / 12) % 8] END,
       CASE WHEN r % 19 = 0 THEN NULL ELSE
         '0' || (22 + r % 3) || '-' || lpad(((r / 3) % 1000)::text, 3, '0') || '-' || lpad(((r / 3000) % 10000)::text, 4, '0') END,
       (ARRAY[3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.5])[1 + r % 7]::numeric(8,1),
       round(((r % 3000) / 100.0 + 1.5)::numeric, 1),
       (ARRAY[30, 40, 50, 60])[1 + r % 4],
       r % 9 = 0,
       CASE WHEN r % 100 = 0 THEN 'N0001'
            WHEN r % 100 = 1 THEN 'R0001'
            WHEN r % 100 < 72 THEN 'R0001'
            ELSE 'R' || lpad((2 + r % 40)::text, 4, '0') END,
       CASE WHEN r % 100 = 0 THEN 'last_resort' WHEN r % 100 = 1 THEN 'fit_purchase' ELSE 'retail' END,
       'WC' || upper(substr(h, 1, 14)),
       (ARRAY['低圧標準接続送電サービス','低圧時間帯別接続送電サービス','高圧標準接続送電サービス'])[1 + r % 3],
       date '2016-04-01' + r % 3000,
       CASE WHEN r % 50 = 7 THEN date '2025-03-31' END,
       timestamptz '2025-01-01 00:00:00+09' + (r % 31536000) * interval '1 second'
FROM gen;

ANALYZE joint.supply_points;
ANALYZE joint.contracts;
SQL
