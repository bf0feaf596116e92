-- The retail company's copy of its own customers' meter readings. Load after retail.sql.
CREATE TABLE retail.readings (
    supply_point_id  char(22)      NOT NULL,
    read_on          date          NOT NULL,
    kwh              numeric(10,1) NOT NULL,
    PRIMARY KEY (supply_point_id, read_on)
);
