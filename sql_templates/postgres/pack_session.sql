-- Settings of a packing connection: the same scan order every time; a sorted (not hashed) GROUP BY,
-- so one buffer at a time is in memory, whatever the size of the table; no JIT (compiling these
-- wide expressions cost more than the whole scan: 2-6 s of CPU on 2M x 32).
SET synchronize_seqscans = off;
SET enable_hashagg = off;
SET work_mem = '64MB';
SET jit = off;
