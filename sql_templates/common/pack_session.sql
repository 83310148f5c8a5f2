-- Settings of a packing connection: the same scan order every time, and a sorted (not hashed)
-- GROUP BY so one buffer at a time is in memory, whatever the size of the table.
SET synchronize_seqscans = off;
SET enable_hashagg = off;
SET work_mem = '64MB';
