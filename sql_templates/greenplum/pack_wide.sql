-- A wide source's packing statements planned by the planner (GreenplumEngine.fill_pack): ORCA's
-- time grows with the terms of each row's encoding, one per feature column. Measured on a
-- 2-primary cluster, packing with ORCA vs the planner: 32 columns x 300k rows 2.4-2.6 s vs 2.5 s
-- (x 1M: 6.7 s vs 9.4 s), 100 x 100k 2.7 vs 1.8 s, 200 x 20k 2.8 vs 1.3 s, 600 x 20k 8.3 vs 2.5 s,
-- 1,598 x 2k 8.5 vs 1.8 s (a user trial's table). In the profile's transaction, which the packing
-- shares: SET LOCAL ends with it.
SET LOCAL optimizer = off;
