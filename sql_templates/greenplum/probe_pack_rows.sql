-- Rows of doctor's probe pack table (rolled back), on every segment: ctq.segment_key finds one there.
INSERT INTO {{table}} SELECT g, 0, -1, 0, '', '', '' FROM generate_series(0, 99) g
