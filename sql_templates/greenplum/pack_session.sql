-- Packing on Greenplum: the same scan order every time.
SET synchronize_seqscans = off;
