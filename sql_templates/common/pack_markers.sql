-- One empty marker row per segment: when a backend has the segment's data cached, the targeted
-- query filters out every buffer row, and the marker still carries the segment to the aggregate.
INSERT INTO {{table}} (segment, bucket, rows, x, y, k)
SELECT s, -1, 0, ''::bytea, ''::bytea, ''::bytea FROM generate_series(0, {{segments}} - 1) s;
