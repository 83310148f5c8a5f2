-- ctq catalog and in-database functions. Idempotent: every statement can run again, and a newer
-- ctq upgrades an older catalog in place (ADD COLUMN IF NOT EXISTS, CREATE OR REPLACE).
CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA IF NOT EXISTS ctq;
CREATE SCHEMA IF NOT EXISTS ctq_data;   -- packed training buffers, one table per (source, settings)

CREATE TABLE IF NOT EXISTS ctq.meta (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

-- The server-side Python module (ctq/indb.py), loaded by every PL/Python function below.
CREATE TABLE IF NOT EXISTS ctq.server_code (
    name         text PRIMARY KEY,
    sha          text NOT NULL,
    source       text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ctq.packs (
    pack_id            text PRIMARY KEY,
    source_table       text NOT NULL,
    source_fingerprint text NOT NULL,
    settings           jsonb NOT NULL,
    table_name         text NOT NULL,
    stats              jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ctq.runs (
    run_id             bigserial PRIMARY KEY,
    name               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    schedule           text NOT NULL DEFAULT 'mop',
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    heartbeat_at       timestamptz,
    config             jsonb NOT NULL,
    config_fingerprint text NOT NULL,
    source_table       text NOT NULL,
    pack_id            text NOT NULL REFERENCES ctq.packs,
    segments           int NOT NULL,
    epochs             int NOT NULL,
    metric             text NOT NULL,
    metric_mode        text NOT NULL CHECK (metric_mode IN ('min', 'max')),
    run_by             text NOT NULL DEFAULT current_user,
    client_host        text,
    versions           jsonb,
    message            text,
    seed               int NOT NULL DEFAULT 0,
    cores_per_segment  int
);
-- upgrades of catalogs made by earlier versions
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS seed int NOT NULL DEFAULT 0;
ALTER TABLE ctq.runs ADD COLUMN IF NOT EXISTS cores_per_segment int;

CREATE TABLE IF NOT EXISTS ctq.models (
    run_id          bigint NOT NULL REFERENCES ctq.runs ON DELETE CASCADE,
    model_id        int NOT NULL,
    name            text NOT NULL,
    architecture    jsonb NOT NULL,
    hyperparameters jsonb NOT NULL,
    seed            int NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'training', 'succeeded', 'failed')),
    epochs_done     int NOT NULL DEFAULT 0,
    train_loss      float8,
    train_metric    float8,
    val_loss        float8,
    val_metric      float8,
    message         text,
    state           bytea,            -- checkpoint: weights + optimizer state after the last hop
    updated_at      timestamptz,
    PRIMARY KEY (run_id, model_id)
);
-- float32 state does not compress; not trying saves about a millisecond per hop
ALTER TABLE ctq.models ALTER COLUMN state SET STORAGE EXTERNAL;

-- The audit trail of MOP: one row per completed sub-epoch. The key makes every hop exactly-once.
CREATE TABLE IF NOT EXISTS ctq.hops (
    run_id          bigint NOT NULL,
    model_id        int NOT NULL,
    epoch           int NOT NULL,
    segment         int NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    compute_seconds float8 NOT NULL,
    rows            int NOT NULL,
    loss            float8,
    metric          float8,
    PRIMARY KEY (run_id, model_id, epoch, segment),
    FOREIGN KEY (run_id, model_id) REFERENCES ctq.models ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS ctq.epochs (
    run_id       bigint NOT NULL,
    model_id     int NOT NULL,
    epoch        int NOT NULL,
    train_loss   float8,
    train_metric float8,
    val_loss     float8,
    val_metric   float8,
    finished_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, model_id, epoch),
    FOREIGN KEY (run_id, model_id) REFERENCES ctq.models ON DELETE CASCADE
);

-- The leaderboard of every run, ranked by the run's own metric.
CREATE OR REPLACE VIEW ctq.leaderboard AS
SELECT s.*, rank() OVER (PARTITION BY s.run_id
                         ORDER BY CASE WHEN s.metric_mode = 'max' THEN -s.score ELSE s.score END NULLS LAST,
                                  s.model_id) AS rank
FROM (
    SELECT m.run_id, m.model_id, m.name, m.status, m.epochs_done, m.hyperparameters,
           m.train_loss, m.train_metric, m.val_loss, m.val_metric, r.metric, r.metric_mode,
           CASE r.metric WHEN 'val_loss' THEN m.val_loss
                         WHEN 'loss' THEN m.train_loss
                         WHEN 'val_accuracy' THEN m.val_metric
                         WHEN 'val_mae' THEN m.val_metric
                         ELSE m.train_metric END AS score
    FROM ctq.models m JOIN ctq.runs r USING (run_id)
) s;

-- In-database functions. Each starts with the bootstrap (sql_templates/bootstrap.py) that loads
-- ctq.server_code once per backend into GD.
CREATE OR REPLACE FUNCTION ctq.probe() RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
import json
return json.dumps(ctq.probe())
$fn$;

DROP FUNCTION IF EXISTS ctq.warmup(int[]);  -- the 0.1.0 signature
CREATE OR REPLACE FUNCTION ctq.warmup(cores int[], pack_table text, segment int, task text, input_dim int,
                                      n_outputs int, models text) RETURNS text
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, ctq.warmup, GD=GD, cores=cores, pack_table=pack_table, segment=segment, task=task,
                input_dim=input_dim, n_outputs=n_outputs, models=models)
$fn$;

CREATE OR REPLACE FUNCTION ctq.pack(source text, features text[], label text, task text,
                                    array_feature boolean, validation_fraction float8, segments int,
                                    buffer_rows int, seed int, target text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
return ctq.call(plpy, ctq.pack, source=source, features=features, label=label, task=task,
                array_feature=array_feature, validation_fraction=validation_fraction,
                segments=segments, buffer_rows=buffer_rows, seed=seed, target=target)
$fn$;

CREATE OR REPLACE FUNCTION ctq.train_hop(
    pack_table text, segment int, arch text, hyper text, task text, input_dim int, n_outputs int,
    seed int, init_state bytea, evaluate boolean, cores int[],
    OUT new_state bytea, OUT loss float8, OUT metric float8, OUT rows int, OUT compute_seconds float8,
    OUT val_loss float8, OUT val_metric float8, OUT hop_started timestamptz, OUT hop_finished timestamptz)
LANGUAGE plpython3u VOLATILE AS $fn$
{{bootstrap}}
import datetime
r = ctq.call(plpy, ctq.train_hop, GD=GD, pack_table=pack_table, segment=segment, arch=arch, hyper=hyper, task=task,
                  input_dim=input_dim, n_outputs=n_outputs, seed=seed, state=init_state,
                  evaluate=evaluate, cores=cores)
utc = datetime.timezone.utc
return {"new_state": r["state"], "loss": r["loss"], "metric": r["metric"], "rows": r["rows"],
        "compute_seconds": r["compute_seconds"], "val_loss": r["val_loss"], "val_metric": r["val_metric"],
        "hop_started": datetime.datetime.fromtimestamp(r["started_at"], utc).isoformat(),
        "hop_finished": datetime.datetime.fromtimestamp(r["finished_at"], utc).isoformat()}
$fn$;
