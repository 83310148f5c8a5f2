-- One hop: train model $2 of run $1 for one sub-epoch on segment {{segment}} and commit the new
-- state, the hop row and (at the end of an epoch, $4) the epoch row in one atomic statement.
-- The segment is a literal, not a parameter: Greenplum only direct-dispatches on literals.
-- $1 run_id, $2 model_id, $3 epoch, $4 evaluate (last hop of the epoch), $5 cores
WITH m AS (
    SELECT mo.architecture, mo.hyperparameters, mo.seed, mo.state, p.table_name,
           p.settings ->> 'task' AS task, (p.stats ->> 'input_dim')::int AS input_dim,
           (p.stats ->> 'n_outputs')::int AS n_outputs
    FROM ctq.models mo
    JOIN ctq.runs r USING (run_id)
    JOIN ctq.packs p ON p.pack_id = r.pack_id
    WHERE mo.run_id = $1 AND mo.model_id = $2
), h AS (
    SELECT t.*
    FROM m, LATERAL ctq.train_hop(m.table_name, {{segment}}, m.architecture::text, m.hyperparameters::text,
                                  m.task, m.input_dim, m.n_outputs, m.seed, m.state, $4::boolean,
                                  $5::int[]) t
), prev AS (
    SELECT coalesce(sum(loss * rows), 0) AS loss_sum, coalesce(sum(metric * rows), 0) AS metric_sum,
           coalesce(sum(rows), 0) AS n
    FROM ctq.hops WHERE run_id = $1 AND model_id = $2 AND epoch = $3::int
), epoch_row AS (
    SELECT (prev.loss_sum + coalesce(h.loss * h.rows, 0)) / nullif(prev.n + h.rows, 0) AS train_loss,
           (prev.metric_sum + coalesce(h.metric * h.rows, 0)) / nullif(prev.n + h.rows, 0) AS train_metric,
           h.val_loss, h.val_metric, h.hop_finished
    FROM h, prev
), saved AS (
    UPDATE ctq.models mo
    SET state = h.new_state,
        status = 'training',
        updated_at = h.hop_finished,
        epochs_done = CASE WHEN $4::boolean THEN $3::int + 1 ELSE mo.epochs_done END,
        train_loss = CASE WHEN $4::boolean THEN e.train_loss ELSE mo.train_loss END,
        train_metric = CASE WHEN $4::boolean THEN e.train_metric ELSE mo.train_metric END,
        val_loss = CASE WHEN $4::boolean THEN e.val_loss ELSE mo.val_loss END,
        val_metric = CASE WHEN $4::boolean THEN e.val_metric ELSE mo.val_metric END
    FROM h, epoch_row e
    WHERE mo.run_id = $1 AND mo.model_id = $2
    RETURNING mo.model_id
), hop AS (
    INSERT INTO ctq.hops (run_id, model_id, epoch, segment, started_at, finished_at, compute_seconds, rows, loss, metric)
    SELECT $1, $2, $3::int, {{segment}}, h.hop_started, h.hop_finished, h.compute_seconds, h.rows, h.loss, h.metric
    FROM h
    RETURNING 1
), ep AS (
    INSERT INTO ctq.epochs (run_id, model_id, epoch, train_loss, train_metric, val_loss, val_metric, finished_at)
    SELECT $1, $2, $3::int, e.train_loss, e.train_metric, e.val_loss, e.val_metric, e.hop_finished
    FROM epoch_row e
    WHERE $4::boolean
    RETURNING 1
)
SELECT h.loss, h.metric, h.rows, h.compute_seconds, h.val_loss, h.val_metric, h.hop_started, h.hop_finished,
       (SELECT count(*) FROM saved) AS saved, (SELECT count(*) FROM hop) AS hops, (SELECT count(*) FROM ep) AS epochs
FROM h;
