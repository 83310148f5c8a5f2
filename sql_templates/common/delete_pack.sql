-- Forget a pack no run uses (0 rows deleted when one does; a run being created right now with it
-- makes the foreign key check fail instead, and the pack stays).
DELETE FROM ctq.packs p WHERE p.pack_id = $1 AND NOT EXISTS (SELECT 1 FROM ctq.runs r WHERE r.pack_id = p.pack_id);
