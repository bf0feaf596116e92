-- The grid company's joint customer database (一般送配電事業者 / NW side), modeled on the
-- systems named in the seed reports. Everything here belongs to the grid company; the
-- retail company may see only what mappings/retail.toml lets cross.
CREATE SCHEMA IF NOT EXISTS joint;

-- Registered retailers (小売電気事業者). Public register; not needed by retail's copy.
CREATE TABLE joint.retailers (
    retailer_code  char(5)     PRIMARY KEY,
    name           text        NOT NULL,
    name_kana      text,
    registered_on  date        NOT NULL
);

-- Supply points (供給地点). Number and address may be seen by every retailer.
CREATE TABLE joint.supply_points (
    supply_point_id  char(22)    PRIMARY KEY,          -- 供給地点特定番号, 22 digits
    address          text        NOT NULL,             -- 供給地点住所
    postal_code      char(8)     NOT NULL,             -- 〒980-8550
    voltage_class    text        NOT NULL CHECK (voltage_class IN ('extra_high', 'high', 'low')),
    area             text        NOT NULL,             -- service area / branch office
    meter_id         text,                             -- smart meter serial (grid equipment)
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Supply contracts at each supply point, with whichever retailer the customer chose.
CREATE TABLE joint.contracts (
    contract_id                 bigint       PRIMARY KEY,
    supply_point_id             char(22)     NOT NULL REFERENCES joint.supply_points,
    holder_name                 text,                  -- 契約名義
    holder_name_kana            text,
    phone                       text,                  -- 電話番号
    contracted_capacity_kva     numeric(8,1),          -- 契約容量
    load_equipment_capacity_kw  numeric(8,1),          -- 負荷設備容量
    main_breaker_amperes        int,                   -- 主開閉器容量
    night_equipment             boolean      NOT NULL DEFAULT false,  -- 深夜機器
    retailer_code               char(5)      NOT NULL REFERENCES joint.retailers,
    supply_kind                 text         NOT NULL
        CHECK (supply_kind IN ('retail', 'last_resort', 'fit_purchase')),
    wheeling_contract_no        text,                  -- 託送契約番号
    wheeling_rate_plan          text,                  -- 託送料金メニュー
    start_date                  date         NOT NULL,
    end_date                    date,
    updated_at                  timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX contracts_supply_point_idx ON joint.contracts (supply_point_id);
CREATE INDEX contracts_retailer_idx ON joint.contracts (retailer_code);

-- FIT purchase contracts (再エネ特定契約): the grid company buys renewable output.
-- Never the retail company's business; not mapped.
CREATE TABLE joint.fit_purchase_contracts (
    fit_contract_id      bigint       PRIMARY KEY,
    supply_point_id      char(22)     NOT NULL REFERENCES joint.supply_points,
    generator_kind       text         NOT NULL CHECK (generator_kind IN ('solar', 'wind', 'hydro', 'biomass', 'geothermal')),
    generator_capacity_kw numeric(8,1) NOT NULL,
    purchase_price_yen   numeric(6,2) NOT NULL,   -- per kWh
    certified_on         date         NOT NULL,
    holder_name          text,
    updated_at           timestamptz  NOT NULL DEFAULT now()
);
