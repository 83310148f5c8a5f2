-- The newest pack (ctq doctor shows the plan of a training query on it).
SELECT pack_id, table_name FROM ctq.packs ORDER BY created_at DESC LIMIT 1
