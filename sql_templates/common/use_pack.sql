-- Record that this session's run uses pack $1 (ctq.use_pack: grants its readers SELECT on it).
SELECT ctq.use_pack($1)
