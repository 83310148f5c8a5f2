-- Whether pack $1 has its ctq.packs row.
SELECT count(*) > 0 FROM ctq.packs WHERE pack_id = $1
