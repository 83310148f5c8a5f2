-- One packing worker's share of the buffers (its SELECT: pack_select.sql) into the pack table.
INSERT INTO {{table}} (segment, bucket, rows, x, y, k) {{select}}
