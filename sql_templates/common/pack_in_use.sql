-- Whether a run uses pack $1.
SELECT count(*) > 0 FROM ctq.runs WHERE pack_id = $1
