-- `ctq validation`: the rows of {{source}} a run held out for validation, with all their columns, as a new
-- table: the packing's own rule (packing.profile_sql, Engine.pack_select), the row key of the pack's seed.
CREATE TABLE {{dest}} AS
SELECT t.* FROM {{source}} t
WHERE abs(({{key}}) % {{modulus}}) < {{cut}};
