-- Prepare segment {{segment}}'s backend for run $1 (see indb.warmup): $2 its cores.
SELECT ctq.warmup($2::int[], p.table_name, {{segment}}, p.settings ->> 'task', (p.stats ->> 'input_dim')::int,
                  (p.stats ->> 'n_outputs')::int,
                  (SELECT jsonb_agg(DISTINCT jsonb_build_array(m.architecture,
                                                               m.hyperparameters - 'learning_rate' - 'batch_size'))::text
                   FROM ctq.models m WHERE m.run_id = r.run_id AND m.status <> 'failed'))
FROM ctq.runs r JOIN ctq.packs p ON p.pack_id = r.pack_id
WHERE r.run_id = $1;
