-- The sum of the content keys of {{source}}'s rows (Engine.row_key of a view), as text: two reads
-- of one moment give the same sum unless the rows differ between reads (packing.check_same_rows).
SELECT coalesce(sum({{key}}), 0)::text FROM {{source}} t
