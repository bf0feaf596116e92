-- Meter readings in the joint database, whose retailer lives on the contract in force on
-- the reading's date, not on the reading: "owner via a join". Load after joint.sql.
CREATE TABLE joint.meter_readings (
    supply_point_id  char(22)      NOT NULL REFERENCES joint.supply_points,
    read_on          date          NOT NULL,
    kwh              numeric(10,1) NOT NULL,
    meter_reader     text,                      -- grid staff who read it: never
    PRIMARY KEY (supply_point_id, read_on)
);

-- Written and owned by the grid company's DBA, reviewed with the mapping: each reading
-- with the retailer and kind of the contract in force that day. A reading under two
-- overlapping contracts would appear twice; shadan stops on the duplicate key.
CREATE VIEW joint.readings_by_retailer AS
SELECT r.supply_point_id, r.read_on, r.kwh, r.meter_reader, c.retailer_code, c.supply_kind
FROM joint.meter_readings r
JOIN joint.contracts c
  ON c.supply_point_id = r.supply_point_id
 AND r.read_on >= c.start_date
 AND (c.end_date IS NULL OR r.read_on <= c.end_date);
