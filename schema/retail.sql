-- The retail company's own database (みなし小売電気事業者): it receives only the subset
-- that mappings/retail.toml lets cross. No column here may hold grid-only information.
-- No foreign keys between the tables: shadan loads and syncs tables independently and in
-- parallel, and `verify` proves consistency with the source instead.
CREATE SCHEMA IF NOT EXISTS retail;

-- Every supply point: number and address (public for every retailer).
CREATE TABLE retail.supply_points (
    supply_point_id  char(22)  PRIMARY KEY,
    address          text      NOT NULL,
    postal_code      char(8)   NOT NULL,
    voltage_class    text      NOT NULL,
    area             text      NOT NULL
);

-- The retail company's own contracts only, with the customer fields it may hold.
CREATE TABLE retail.contracts (
    contract_id                 bigint        PRIMARY KEY,
    supply_point_id             char(22)      NOT NULL,
    holder_name                 text,
    holder_name_kana            text,
    phone_number                text,
    contracted_capacity_kva     numeric(8,1),
    load_equipment_capacity_kw  numeric(8,1),
    main_breaker_amperes        int,
    night_equipment             boolean       NOT NULL,
    start_date                  date          NOT NULL,
    end_date                    date
);
CREATE INDEX contracts_supply_point_idx ON retail.contracts (supply_point_id);
