-- The segment of the last recorded hop of model $2 of run $1 (where its state lies), or none.
SELECT h.segment FROM ctq.hops h WHERE h.run_id = $1 AND h.model_id = $2
ORDER BY h.epoch DESC, h.finished_at DESC LIMIT 1
