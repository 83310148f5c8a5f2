-- A hop's training on one segment (ctq/engines/citus.py): the router query of its shard (pack rows
-- and the state's parts, all filtered on the segment's key: postgres/train_query.sql,
-- citus/state_parts_rows.sql), run whole on that shard's worker. Returns the ctq.hop_result; the
-- trained state stays in the worker backend's GD for hop_store.sql. $1 the parameters (JSON), $2
-- run_id, $3 model_id, $4 the hops the model's stored state has trained.
SELECT t.r FROM ({{train_query}}) t
