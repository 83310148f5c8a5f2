-- Copy model $3 of run $2's state of $4 hops from the shard of key $5 to the shard of key $1: a call
-- Citus delegates to the worker of $1 (hop_functions.sql), outside any transaction block.
SELECT ctq.citus_move_state($1::int, $2::bigint, $3::int, $4::int, $5::int)
