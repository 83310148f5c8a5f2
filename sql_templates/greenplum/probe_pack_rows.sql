-- Rows of doctor's probe pack (rolled back): keys 0-99, hashed over the segments; ctq.segment_key
-- needs a row on segment 0, whose plan is shown (100 keys do not promise a row on every segment of
-- a large cluster).
INSERT INTO {{table}} SELECT g, 0, -1, 0, '', '', '' FROM generate_series(0, 99) g
