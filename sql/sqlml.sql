-- sqlml: AutoML inside PostgreSQL. The one source of the extension's scripts.
--
-- sqlml/extension.py builds from this file the install script of the current version
-- (sqlml--<version>.sql) and its upgrade scripts (sqlml--<old>--<version>.sql), adding the
-- guards and the PL/Python preamble; `sqlml install` (and the test suite) writes them into the
-- server's extension directory. sql/README.md says how to change the schema.
--
-- Sections, each opened by a marker line:
--   -- @schema        what holds data or state: installed once; a change also goes into the
--                     migration sql/upgrades/sqlml--<old>--<version>.sql
--   -- @definitions   functions, views, comments, grants (CREATE OR REPLACE only): every upgrade
--                     replays them all, so an upgraded database gets exactly these
--
-- Every PL/Python body is one call into sqlml.server.api, which the preamble loads into GD['sqlml']
-- at a backend's first call. No logic lives in SQL: errors become clean SQL errors in Python.
--
-- Public functions are SECURITY INVOKER: training and batch scoring read data with the caller's
-- privileges. Registry tables are written only through sqlml._privileged (see
-- sqlml/server/privileged.py). Each function states its volatility and parallel safety.

-- @schema

-- schema: created here, not by the control file, so that DROP EXTENSION removes it too

CREATE SCHEMA sqlml;
COMMENT ON SCHEMA sqlml IS 'sqlml: AutoML inside PostgreSQL';

-- tables: the registry

CREATE TABLE sqlml.projects (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}$'),
    task          text NOT NULL CHECK (task IN ('binary', 'multiclass', 'regression', 'forecast')),
    target        text NOT NULL,
    owner         name NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_version  integer NOT NULL DEFAULT 0   -- versions count up from here and never repeat
);

CREATE TABLE sqlml.models (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project           text NOT NULL REFERENCES sqlml.projects (name),
    version           integer NOT NULL,
    algorithm         text NOT NULL,
    task              text NOT NULL,
    metric            text NOT NULL,               -- the metric the search optimised
    score             float8,                      -- its value on the holdout
    metrics           jsonb NOT NULL,              -- every task metric on the holdout, validation score
    hyperparameters   jsonb NOT NULL,
    feature_schema    jsonb NOT NULL,              -- features, their kinds, the ONNX inputs, the target
    classes           jsonb,
    onnx              bytea NOT NULL,              -- the whole pipeline: raw columns in, prediction out
    sha256            text NOT NULL,               -- of onnx, checked at every load
    opset             integer NOT NULL,
    parity            jsonb NOT NULL,              -- ONNX vs fitted pipeline on the holdout
    relation          text NOT NULL,               -- lineage: what it was trained on
    rows              bigint NOT NULL,
    data_fingerprint  text NOT NULL,
    library_versions  jsonb NOT NULL,
    created_by        name NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    train_seconds     float8,
    job_id            bigint,
    profile           jsonb,                       -- data-quality report of the training data (sqlml.profile)
    baseline          jsonb,                       -- drift baselines: per-feature and prediction distributions
    importance        jsonb,                       -- mean |contribution| per feature on the holdout (sqlml.importance)
    diagnostics       jsonb,                       -- holdout ROC / confusion matrix / residual sample for the card
    meta_features     vector(14),                  -- the dataset, described for warm starts (sqlml/automl/meta.py)
    warm_start        jsonb,                       -- its best configurations, tried first by similar trainings
    forecaster        jsonb,                       -- forecast models: per-series state, tails, intervals (sqlml/forecast/model.py)
    explainer         bytea,                       -- what sqlml.explain needs (sqlml/explain/model.py); NULL: imported
    origin            text NOT NULL DEFAULT 'trained' CHECK (origin IN ('trained', 'imported')),  -- lineage
    UNIQUE (project, version),
    UNIQUE (id, project, version)                  -- lets a deployment reference all three
);

CREATE TABLE sqlml.deployments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the latest row per project is live
    project      text NOT NULL REFERENCES sqlml.projects (name),
    model_id     bigint NOT NULL REFERENCES sqlml.models (id),
    version      integer NOT NULL,
    strategy     text NOT NULL,
    reason       jsonb,
    deployed_by  name NOT NULL,
    deployed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (model_id, project, version) REFERENCES sqlml.models (id, project, version)  -- never another project's model
);
CREATE INDEX ON sqlml.deployments (project, id DESC);

CREATE TABLE sqlml.trials (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project        text NOT NULL REFERENCES sqlml.projects (name),
    job_id         bigint,
    model_version  integer,                 -- the version the training registered
    n              integer NOT NULL,        -- order within the training
    algorithm      text NOT NULL,
    params         jsonb,
    status         text NOT NULL,           -- ok | failed | timeout | parity_failed
    metric         text,
    score          float8,                  -- validation score
    fit_seconds    float8,
    elapsed        float8,                  -- seconds since the training started, when the trial ended
    origin         text,                    -- portfolio | warm_start | search
    n_estimators   integer,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON sqlml.trials (project, model_version);

-- tables: operations: data quality, evaluation on new labels, drift, retraining, metrics
--
-- Time series are append-only: one sqlml.evaluations row per evaluate call, one sqlml.drift row per
-- feature (and one for the predictions) per monitor call, all rows of a call sharing measured_at.

CREATE TABLE sqlml.evaluations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project       text NOT NULL REFERENCES sqlml.projects (name),
    model_id      bigint NOT NULL REFERENCES sqlml.models (id),
    version       integer NOT NULL,
    relation      text NOT NULL,
    rows          bigint NOT NULL,                 -- labelled rows scored
    skipped       jsonb NOT NULL,                  -- rows not scored, by reason (NULL label, label never seen)
    metrics       jsonb NOT NULL,                  -- every metric of the task
    evaluated_by  name NOT NULL,
    evaluated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON sqlml.evaluations (project, evaluated_at);
COMMENT ON TABLE sqlml.evaluations IS 'Metrics of a model on newly labelled rows, one row per sqlml.evaluate call';

CREATE TABLE sqlml.drift (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project      text NOT NULL REFERENCES sqlml.projects (name),
    model_id     bigint NOT NULL REFERENCES sqlml.models (id),
    version      integer NOT NULL,
    relation     text NOT NULL,
    feature      text NOT NULL,                   -- a feature, or 'prediction' for the model's output
    what         text NOT NULL CHECK (what IN ('feature', 'prediction')),
    psi          float8 NOT NULL,                 -- population stability index against the training baseline
    drift        text NOT NULL CHECK (drift IN ('none', 'moderate', 'major')),
    rows         bigint NOT NULL,
    detail       jsonb NOT NULL,                  -- expected and actual bin shares, thresholds
    measured_by  name NOT NULL,
    measured_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON sqlml.drift (project, measured_at);
COMMENT ON TABLE sqlml.drift IS 'Population stability index per feature and of the predictions, one set of rows per sqlml.monitor call';

-- security: roles, project privileges, row-level security on the registry, audit log
--
-- sqlml_user may call sqlml and score the projects granted to it; sqlml_developer may also create
-- projects (it owns what it creates); sqlml_admin has every privilege on every project and reads the
-- whole audit log. Superusers are admins. Roles are cluster-wide: they are created if absent and are
-- not dropped with the extension (`sqlml uninstall` drops them when no database uses them).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqlml_user') THEN
        CREATE ROLE sqlml_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqlml_developer') THEN
        CREATE ROLE sqlml_developer NOLOGIN IN ROLE sqlml_user;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqlml_admin') THEN
        CREATE ROLE sqlml_admin NOLOGIN IN ROLE sqlml_developer;
    END IF;
END
$$;

CREATE TABLE sqlml.grants (
    project     text NOT NULL REFERENCES sqlml.projects (name),
    grantee     name NOT NULL,                 -- a role, or 'public' for every sqlml_user
    privilege   text NOT NULL CHECK (privilege IN ('predict', 'train', 'deploy', 'own')),
    granted_by  name NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, grantee, privilege)
);
COMMENT ON TABLE sqlml.grants IS 'Project privileges beyond ownership: predict, train, deploy, own (every privilege implies predict; own implies all)';

CREATE TABLE sqlml.audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      name NOT NULL,                  -- current_user of the call
    login      name NOT NULL DEFAULT session_user,
    action     text NOT NULL,                  -- train | deploy | rollback | grant | revoke | predict_batch | score
    project    text NOT NULL,
    version    integer,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ON sqlml.audit_log (actor, id);
COMMENT ON TABLE sqlml.audit_log IS 'Who trained, deployed, rolled back, granted, revoked or batch-scored what, and when';

-- @definitions

-- views

CREATE OR REPLACE VIEW sqlml.deployed WITH (security_invoker = true) AS  -- row-level security applies to the reader
SELECT DISTINCT ON (d.project) d.project, d.version, m.algorithm, m.metric, m.score, d.strategy,
       d.deployed_by, d.deployed_at, d.model_id
FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
ORDER BY d.project, d.id DESC;
COMMENT ON VIEW sqlml.deployed IS 'The live model of each project';

CREATE OR REPLACE VIEW sqlml.leaderboard WITH (security_invoker = true) AS  -- row-level security applies to the reader
SELECT project, model_version AS version, n, algorithm, status, metric, score, fit_seconds, params
FROM sqlml.trials;
COMMENT ON VIEW sqlml.leaderboard IS 'Every candidate each training tried';

-- functions: installation

CREATE OR REPLACE FUNCTION sqlml.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].version()
$$;

COMMENT ON FUNCTION sqlml.version() IS 'Version of the sqlml Python package the server runs';

CREATE OR REPLACE FUNCTION sqlml.doctor() RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].doctor()
$$;

COMMENT ON FUNCTION sqlml.doctor() IS 'The server half of `sqlml doctor`: its Python and whether each package sqlml needs imports';

-- functions: training and deployment

CREATE OR REPLACE FUNCTION sqlml._train(project text, relation text, target text, task text, algorithms text[],
    budget_seconds float8, metric text, test_size float8, exclude text[], options jsonb) RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, deployed boolean)
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb VOLATILE AS $$
return GD['sqlml'].train(project, relation, target, task, algorithms, budget_seconds, metric, test_size, exclude, options)
$$;

CREATE OR REPLACE FUNCTION sqlml.train(
    project text, relation text, target text,
    task text DEFAULT NULL, algorithms text[] DEFAULT NULL, time_budget interval DEFAULT '60 seconds',
    metric text DEFAULT NULL, test_size float8 DEFAULT 0.2, exclude text[] DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, deployed boolean)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM sqlml._train($1, $2, $3, $4, $5, extract(epoch FROM $6)::pg_catalog.float8, $7, $8, $9, $10)
$$;
COMMENT ON FUNCTION sqlml.train(text, text, text, text, text[], interval, text, float8, text[], jsonb) IS
'AutoML: train models for project on relation (table, view or one SELECT) to predict target within time_budget; registers the best and deploys it through the champion/challenger gate';

-- functions: forecasting
--
-- One row per series and step. VOLATILE: it reads the relation of future regressors as the caller.

CREATE OR REPLACE FUNCTION sqlml.forecast(project text, horizon integer DEFAULT NULL, relation text DEFAULT NULL,
    level float8 DEFAULT 0.9)
RETURNS TABLE (series jsonb, ts timestamp, forecast float8, lower float8, upper float8)
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb VOLATILE AS $$
return GD['sqlml'].forecast(project, horizon, relation, level)
$$;
COMMENT ON FUNCTION sqlml.forecast(text, integer, text, float8) IS
'Forecast every series of a forecast project (or project@version) horizon steps ahead (default: the trained horizon), with the interval at level; relation gives the regressors'' future values';

CREATE OR REPLACE FUNCTION sqlml.deploy(project text, strategy text DEFAULT 'best_score', version integer DEFAULT NULL) RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, strategy text, deployed_at timestamptz)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].deploy(project, strategy, version)
$$;

COMMENT ON FUNCTION sqlml.deploy(text, text, integer) IS 'Deploy a model of project: strategy best_score, most_recent or rollback, or an explicit version';

-- functions: scoring
--
-- STABLE, not IMMUTABLE: a deploy changes the answer. PARALLEL SAFE: parallel workers resolve and
-- load the model without plpy's SPI (sqlml/server/pg_internals.py), in the leader's snapshot.
-- A row argument goes through an inlined SQL wrapper (PL/Python cannot take record or anyelement)
-- that hands over the row's text (t::text, ~3 us) and its type, whose columns Python reads from the
-- catalog once per statement; to_jsonb(row) costs ~18 us for 20 columns and is left for anonymous
-- records, whose column names only jsonb carries. COST 1000 (~10 us): the planner's clue that a
-- large scan is worth parallel workers.

CREATE OR REPLACE FUNCTION sqlml._predict_row(project text, features text, row_type oid) RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 1000 AS $$
return GD['sqlml'].predict_row(project, features, row_type)
$$;

CREATE OR REPLACE FUNCTION sqlml._predict_proba_row(project text, features text, row_type oid) RETURNS float8[]
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 1000 AS $$
return GD['sqlml'].predict_proba_row(project, features, row_type)
$$;

CREATE OR REPLACE FUNCTION sqlml._predict_label_row(project text, features text, row_type oid) RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE COST 1000 AS $$
return GD['sqlml'].predict_label_row(project, features, row_type)
$$;

-- jsonb arrives as its text, not through the transform: sqlml/scoring/textscan.py reads the text
-- natively (the transform built a Decimal per number, ~0.5 us each, before the model needed a float).
CREATE OR REPLACE FUNCTION sqlml._predict_jsonb(project text, features jsonb) RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict(project, features)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict(project text, features float8[]) RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict(project, features, as_array=True)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict(project text, features jsonb) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_jsonb($1, $2) $$;

CREATE OR REPLACE FUNCTION sqlml.predict(project text, features anyelement) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.pg_typeof($2) OPERATOR(pg_catalog.=) 'record'::pg_catalog.regtype
                THEN sqlml._predict_jsonb($1, pg_catalog.to_jsonb($2))
                ELSE sqlml._predict_row($1, $2::pg_catalog.text, pg_catalog.pg_typeof($2)::pg_catalog.oid) END
$$;

CREATE OR REPLACE FUNCTION sqlml._predict_proba_jsonb(project text, features jsonb) RETURNS float8[]
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict_proba(project, features)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict_proba(project text, features float8[]) RETURNS float8[]
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict_proba(project, features, as_array=True)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict_proba(project text, features jsonb) RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_proba_jsonb($1, $2) $$;

CREATE OR REPLACE FUNCTION sqlml.predict_proba(project text, features anyelement) RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.pg_typeof($2) OPERATOR(pg_catalog.=) 'record'::pg_catalog.regtype
                THEN sqlml._predict_proba_jsonb($1, pg_catalog.to_jsonb($2))
                ELSE sqlml._predict_proba_row($1, $2::pg_catalog.text, pg_catalog.pg_typeof($2)::pg_catalog.oid) END
$$;

CREATE OR REPLACE FUNCTION sqlml._predict_label_jsonb(project text, features jsonb) RETURNS text
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict_label(project, features)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict_label(project text, features float8[]) RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].predict_label(project, features, as_array=True)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict_label(project text, features jsonb) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_label_jsonb($1, $2) $$;

CREATE OR REPLACE FUNCTION sqlml.predict_label(project text, features anyelement) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_catalog.pg_typeof($2) OPERATOR(pg_catalog.=) 'record'::pg_catalog.regtype
                THEN sqlml._predict_label_jsonb($1, pg_catalog.to_jsonb($2))
                ELSE sqlml._predict_label_row($1, $2::pg_catalog.text, pg_catalog.pg_typeof($2)::pg_catalog.oid) END
$$;

COMMENT ON FUNCTION sqlml.predict(text, anyelement) IS 'Score a row (columns matched by name) with the deployed model of project (or project@version): the value, the numeric label, or the class index';
COMMENT ON FUNCTION sqlml.predict_proba(text, anyelement) IS 'Class probabilities of a row, in the order of sqlml.classes(project)';
COMMENT ON FUNCTION sqlml.predict_label(text, anyelement) IS 'The predicted label of a row, as text';

CREATE OR REPLACE FUNCTION sqlml.classes(project text) RETURNS text[]
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
return GD['sqlml'].classes(project)
$$;

COMMENT ON FUNCTION sqlml.classes(text) IS 'Class labels of project, in the order predict_proba reports them';

-- predict_batch: the scores come from Python as one row of arrays per chunk (~32k rows), unnested
-- here: PL/Python converts every value of a set-returning function's rows through its text, and
-- per-row tuples cost more than the model. Predictions travel as exact int8s (sqlml/scoring/chunks.py).
-- The wrapper runs in the caller's search_path (not pinned: relation is resolved there), so every
-- operator, function and type it names is qualified with pg_catalog: no schema on that path (before
-- pg_catalog or not) can offer a better match (tests/test_hostile.py).
CREATE OR REPLACE FUNCTION sqlml._predict_batch_chunks(project text, relation text, id_column text)
RETURNS TABLE (n int8, int_ids int8[], text_ids text[], packed int8[], floats float8[], class int8[],
               labels text[], class_values float8[], class_labels text[], k int, probabilities float8[])
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].predict_batch(project, relation, id_column)
$$;

CREATE OR REPLACE FUNCTION sqlml.predict_batch(project text, relation text, id_column text) RETURNS TABLE (id text, prediction float8, label text, probabilities float8[])
LANGUAGE sql VOLATILE AS $$
SELECT coalesce(u.i::pg_catalog.text, u.t),
       coalesce((u.p OPERATOR(pg_catalog.>>) 10)::pg_catalog.float8 OPERATOR(pg_catalog.*)
                pg_catalog.power(2::pg_catalog.float8, ((u.p OPERATOR(pg_catalog.&) 1023::pg_catalog.int8)
                                                        OPERATOR(pg_catalog.-) 512::pg_catalog.int8)::pg_catalog.float8),
                u.f, c.class_values[u.c]),
       coalesce(u.l, c.class_labels[u.c]),
       c.probabilities[((u.o OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) c.k) OPERATOR(pg_catalog.+) 1
                       : u.o OPERATOR(pg_catalog.*) c.k]
FROM sqlml._predict_batch_chunks(project, relation, id_column) AS c
CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(c.int_ids), pg_catalog.unnest(c.text_ids), pg_catalog.unnest(c.packed),
                              pg_catalog.unnest(c.floats), pg_catalog.unnest(c.class), pg_catalog.unnest(c.labels))
     WITH ORDINALITY AS u(i, t, p, f, c, l, o)
$$;

COMMENT ON FUNCTION sqlml.predict_batch(text, text, text) IS 'Score every row of relation, columnar; id is id_column as text';

-- The id in its own type, so that the result joins back without a cast (ON b.id = t.id) and
-- drivers read it as what it is: predict_batch('churn', 'customers', 'id', NULL::int). PL/Python
-- cannot take anyelement, so this wrapper casts the text ids of the function above, in one
-- statement; the type's name comes from the catalog (pg_typeof), qualified where not visible.
-- No SET search_path: relation is resolved in the caller's, as by the function above.
CREATE OR REPLACE FUNCTION sqlml.predict_batch(project text, relation text, id_column text, id_type anyelement)
RETURNS TABLE (id anyelement, prediction float8, label text, probabilities float8[])
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY EXECUTE pg_catalog.format('SELECT b.id::%s, b.prediction, b.label, b.probabilities '
                                           'FROM sqlml.predict_batch($1, $2, $3) b', pg_catalog.pg_typeof(id_type))
        USING project, relation, id_column;
END
$$;

COMMENT ON FUNCTION sqlml.predict_batch(text, text, text, anyelement) IS 'Score every row of relation, columnar; id is id_column in the type of id_type (pass NULL::int, NULL::uuid...)';

-- functions: explanations (sqlml/explain/model.py says what the contributions add up to)
--
-- Not PARALLEL SAFE: an explanation reads the model's explainer through SPI.

CREATE OR REPLACE FUNCTION sqlml._explain_jsonb(project text, features jsonb)
RETURNS TABLE (feature text, value text, contribution float8, class text)
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE AS $$
return GD['sqlml'].explain(project, features)
$$;

CREATE OR REPLACE FUNCTION sqlml.explain(project text, features float8[])
RETURNS TABLE (feature text, value text, contribution float8, class text)
LANGUAGE plpython3u STABLE AS $$
return GD['sqlml'].explain(project, features, as_array=True)
$$;

CREATE OR REPLACE FUNCTION sqlml.explain(project text, features jsonb)
RETURNS TABLE (feature text, value text, contribution float8, class text)
LANGUAGE sql STABLE AS $$ SELECT * FROM sqlml._explain_jsonb($1, $2) $$;

CREATE OR REPLACE FUNCTION sqlml.explain(project text, features anyelement)
RETURNS TABLE (feature text, value text, contribution float8, class text)
LANGUAGE sql STABLE AS $$ SELECT * FROM sqlml._explain_jsonb($1, pg_catalog.to_jsonb($2)) $$;

COMMENT ON FUNCTION sqlml.explain(text, anyelement) IS 'Why the model of project (or project@version) predicts what it does for a row: one contribution per feature to the raw output (log-odds for binary, the value for regression, per class for multiclass), plus a (base) row; they add up to the raw output';

-- One folded row per input row, after a header row (features IS NOT NULL) naming the folded
-- contributions and their classes: PL/Python converts each value through its text, so arrays of
-- values and int8-packed floats (sqlml/explain/rows.py) cost a fraction of one row per feature.
CREATE OR REPLACE FUNCTION sqlml._explain_batch(project text, relation text, id_column text)
RETURNS TABLE (id text, vals text[], packed int8[], contributions float8[], features text[], classes text[])
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].explain_batch(project, relation, id_column)
$$;

-- Unfolded here. Like every SQL wrapper it runs in the caller's search_path, where a schema may come
-- before pg_catalog: every operator, function and type it names is pg_catalog's, by name.
CREATE OR REPLACE FUNCTION sqlml.explain_batch(project text, relation text, id_column text)
RETURNS TABLE (id text, feature text, value text, contribution float8, class text)
LANGUAGE sql VOLATILE AS $$
    WITH b AS MATERIALIZED (SELECT * FROM sqlml._explain_batch($1, $2, $3))
    SELECT b.id, h.features[u.o::pg_catalog.int4],
           b.vals[((u.o OPERATOR(pg_catalog.-) 1::pg_catalog.int8) OPERATOR(pg_catalog.%)
                   (pg_catalog.array_length(b.vals, 1)::pg_catalog.int8 OPERATOR(pg_catalog.+) 1::pg_catalog.int8))::pg_catalog.int4],
           coalesce((u.p OPERATOR(pg_catalog.>>) 10)::pg_catalog.float8 OPERATOR(pg_catalog.*)
                    pg_catalog.power(2::pg_catalog.float8, ((u.p OPERATOR(pg_catalog.&) 1023::pg_catalog.int8)
                                                            OPERATOR(pg_catalog.-) 512::pg_catalog.int8)::pg_catalog.float8),
                    u.c),
           h.classes[u.o::pg_catalog.int4]
    FROM b AS h, b, LATERAL ROWS FROM (pg_catalog.unnest(b.packed), pg_catalog.unnest(b.contributions))
         WITH ORDINALITY AS u(p, c, o)
    WHERE h.features IS NOT NULL AND b.features IS NULL
$$;

COMMENT ON FUNCTION sqlml.explain_batch(text, text, text) IS 'sqlml.explain for every row of relation, set-based; id is id_column as text';

-- The id in its own type, as predict_batch's overload gives it (the same cast of the text ids).
CREATE OR REPLACE FUNCTION sqlml.explain_batch(project text, relation text, id_column text, id_type anyelement)
RETURNS TABLE (id anyelement, feature text, value text, contribution float8, class text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY EXECUTE pg_catalog.format('SELECT b.id::%s, b.feature, b.value, b.contribution, b.class '
                                           'FROM sqlml.explain_batch($1, $2, $3) b', pg_catalog.pg_typeof(id_type))
        USING project, relation, id_column;
END
$$;

COMMENT ON FUNCTION sqlml.explain_batch(text, text, text, anyelement) IS 'sqlml.explain for every row of relation, set-based; id is id_column in the type of id_type (pass NULL::int, NULL::uuid...)';

CREATE OR REPLACE FUNCTION sqlml.importance(project text)
RETURNS TABLE (feature text, importance float8)
LANGUAGE plpython3u STABLE AS $$
return GD['sqlml'].importance(project)
$$;

COMMENT ON FUNCTION sqlml.importance(text) IS 'Global feature importance of the model of project (or project@version): mean |contribution| on the holdout, measured at training';

-- functions: bring your own model

CREATE OR REPLACE FUNCTION sqlml.import_model(project text, onnx bytea, task text, relation text,
    target text DEFAULT NULL, columns text[] DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, deployed boolean)
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb VOLATILE AS $$
return GD['sqlml'].import_model(project, onnx, task, relation, target, columns, options)
$$;

COMMENT ON FUNCTION sqlml.import_model(text, bytea, text, text, text, text[], jsonb) IS 'Register an ONNX model trained elsewhere as a version of project: inputs matched to the columns of relation by name (columns => their order for one matrix input), validated on a sample of relation (metrics when it holds target), deployed through the gate';

CREATE OR REPLACE FUNCTION sqlml.score(project text, relation text, into_table text, id_column text) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].score(project, relation, into_table, id_column)
$$;

COMMENT ON FUNCTION sqlml.score(text, text, text, text) IS 'Score every row of relation into a new table (id_column, prediction, label, probabilities)';

-- functions: operations

CREATE OR REPLACE FUNCTION sqlml.profile(relation text, target text DEFAULT NULL)
RETURNS TABLE (column_name text, type text, kind text, null_share float8, distinct_values bigint, min text, max text,
               mean float8, warnings text[])
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].profile(relation, target)
$$;
COMMENT ON FUNCTION sqlml.profile(text, text) IS 'Data-quality report of relation: per column type, NULL share, distinct values, range and warnings (with target: leakage, class imbalance)';

CREATE OR REPLACE FUNCTION sqlml.evaluate(project text, relation text, version integer DEFAULT NULL)
RETURNS TABLE (project text, version integer, metric text, value float8, holdout_value float8, rows bigint,
               evaluated_at timestamptz)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].evaluate(project, relation, version)
$$;
COMMENT ON FUNCTION sqlml.evaluate(text, text, integer) IS 'Metrics of the deployed (or given) version of project on the labelled rows of relation, stored in sqlml.evaluations';

CREATE OR REPLACE FUNCTION sqlml.monitor(project text, relation text, version integer DEFAULT NULL,
    moderate float8 DEFAULT 0.1, major float8 DEFAULT 0.25)
RETURNS TABLE (project text, version integer, feature text, what text, psi float8, drift text, rows bigint,
               measured_at timestamptz)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].monitor(project, relation, version, moderate, major)
$$;
COMMENT ON FUNCTION sqlml.monitor(text, text, integer, float8, float8) IS 'Drift of relation against the training data of the deployed (or given) version: PSI per feature and of the predictions, stored in sqlml.drift';

CREATE OR REPLACE FUNCTION sqlml._retrain_if_drifted(project text, relation text, training_relation text, threshold float8,
    budget_seconds float8)
RETURNS TABLE (project text, drifted boolean, max_psi float8, worst text, version integer, deployed boolean, decision text)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds)
$$;

CREATE OR REPLACE FUNCTION sqlml.retrain_if_drifted(project text, relation text, training_relation text DEFAULT NULL,
    threshold float8 DEFAULT 0.25, time_budget interval DEFAULT '60 seconds')
RETURNS TABLE (project text, drifted boolean, max_psi float8, worst text, version integer, deployed boolean, decision text)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM sqlml._retrain_if_drifted($1, $2, $3, $4, extract(epoch FROM $5)::pg_catalog.float8)
$$;
COMMENT ON FUNCTION sqlml.retrain_if_drifted(text, text, text, float8, interval) IS 'Monitor relation; if any PSI reaches threshold, train project again on training_relation (default: relation) and deploy only through the champion/challenger gate';

CREATE OR REPLACE FUNCTION sqlml.prediction_counts()
RETURNS TABLE (project text, predictions bigint)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].prediction_counts()
$$;
COMMENT ON FUNCTION sqlml.prediction_counts() IS 'Rows scored per project in this database, by every server process (counted in memory-mapped files, not rolled back), for the projects the caller may score';

CREATE OR REPLACE FUNCTION sqlml.job_counts()
RETURNS TABLE (state text, jobs bigint)
LANGUAGE plpython3u STABLE AS $$
return GD['sqlml'].job_counts()
$$;
COMMENT ON FUNCTION sqlml.job_counts() IS 'Jobs per state in sqlml.jobs, every state listed (all zero where there is no job queue)';

-- governor: jobs, cancellation, the cost model's report, settings
--
-- Jobs live in a cluster-wide store under the data directory ($PGDATA/sqlml), not in tables: a job
-- must be visible to every session and database while its training transaction is open, and must
-- outlive that transaction's rollback (see sqlml/governor/store.py). Settings come from the server's
-- configuration files only (ALTER SYSTEM or postgresql.conf): a user's SET cannot change them.

CREATE OR REPLACE FUNCTION sqlml._jobs()
RETURNS TABLE (job_id bigint, kind text, state text, queue_position integer, role text, database text, project text,
               pid integer, submitted_at float8, started_at float8, finished_at float8, predicted_seconds float8,
               actual_seconds float8, predicted_peak_bytes bigint, actual_peak_bytes bigint, cost_model text,
               rows bigint, threads integer, error text, sqlstate text, progress text, lane text, wait_reason text)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].jobs()
$$;

CREATE OR REPLACE VIEW sqlml.jobs AS
SELECT job_id, kind, state, queue_position, role::name AS role, database::name AS database, project, pid,
       to_timestamp(submitted_at) AS submitted_at, to_timestamp(started_at) AS started_at,
       to_timestamp(finished_at) AS finished_at, predicted_seconds, actual_seconds, predicted_peak_bytes,
       actual_peak_bytes, cost_model, rows, threads, error, sqlstate,
       progress::jsonb AS progress,  -- a training's trials, best_score, best_algorithm, budget_seconds, startup_seconds, live
       lane,         -- governed (queues for a slot) or interactive (small scoring: started at once, no slot)
       wait_reason   -- why a queued job waits: the slots, its role's limit, the server's load or memory
FROM sqlml._jobs();
COMMENT ON VIEW sqlml.jobs IS 'Every training and batch-scoring job of the cluster (all databases), newest first: state queued/running/succeeded/failed/cancelled, or uncommitted/rolled_back for a job whose transaction is open/was rolled back; queue position and why it waits, lane, predicted and actual seconds and peak memory';

CREATE OR REPLACE FUNCTION sqlml.cancel(job_id bigint) RETURNS boolean
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].cancel(job_id)
$$;
COMMENT ON FUNCTION sqlml.cancel(bigint) IS 'Cancel a queued or running job (your role''s, or any for a superuser or sqlml_admin member); true once the cancel is requested (a NOTICE says if the job has not stopped within 5 s), false if it had already ended';

CREATE OR REPLACE FUNCTION sqlml.governor_report()
RETURNS TABLE (kind text, quantity text, predicted_by text, jobs integer, mdape float8, p90_ape float8, analytic_mdape float8)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].governor_report()
$$;
COMMENT ON FUNCTION sqlml.governor_report() IS 'Cost model error so far: median and 90th-percentile absolute percentage error of predicted seconds and peak memory over succeeded jobs, against the analytic estimate on the same jobs';

CREATE OR REPLACE FUNCTION sqlml.governor_settings()
RETURNS TABLE (name text, setting text, source text, description text)
LANGUAGE plpython3u VOLATILE AS $$
return GD['sqlml'].governor_settings()
$$;
COMMENT ON FUNCTION sqlml.governor_settings() IS 'The governor settings in force (from the configuration files, else defaults for this machine)';

-- private functions

CREATE OR REPLACE FUNCTION sqlml._privileged(token text) RETURNS void
LANGUAGE plpython3u VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
GD['sqlml'].privileged(token)
$$;

CREATE OR REPLACE FUNCTION sqlml._model_ref(project_name text, wanted_version integer)
RETURNS TABLE (id bigint, version integer, sha256 text)
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    -- SECURITY INVOKER on purpose: current_user is the caller, and the registry is read through its
    -- row-level security, so no argument can make this answer for another role.
    CASE sqlml.has_privilege(current_user, $1, 'predict')
    WHEN true THEN NULL;
    WHEN false THEN
        RAISE EXCEPTION 'sqlml: permission denied to score project "%"', $1 USING ERRCODE = 'insufficient_privilege',
            HINT = format('its owner or a sqlml_admin can allow it: SELECT sqlml.grant(%L, %L, ''predict'')', $1, current_user);
    ELSE
        RAISE EXCEPTION 'sqlml: project "%" does not exist', $1 USING ERRCODE = 'undefined_object',
            HINT = 'SELECT name FROM sqlml.projects lists the projects you may use';
    END CASE;
    IF $2 IS NOT NULL THEN
        RETURN QUERY SELECT m.id, m.version, m.sha256 FROM sqlml.models m WHERE m.project = $1 AND m.version = $2;
    ELSE
        RETURN QUERY SELECT m.id, m.version, m.sha256 FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
                     WHERE d.project = $1 ORDER BY d.id DESC LIMIT 1;
    END IF;
END
$$;
COMMENT ON FUNCTION sqlml._model_ref(text, integer) IS 'Which model project (at version, or deployed) means now, for a caller allowed to score it';

-- functions: privileges

CREATE OR REPLACE FUNCTION sqlml.has_privilege(role name, project text, privilege text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Like has_table_privilege(role, ...): anyone may ask about any role (privileges are not secret).
    IF $3 IS NULL OR $3 NOT IN ('predict', 'train', 'deploy', 'own') THEN
        RAISE EXCEPTION 'sqlml: unknown privilege "%"', $3 USING ERRCODE = 'invalid_parameter_value',
            HINT = 'use predict, train, deploy or own';
    END IF;
    IF NOT EXISTS (SELECT FROM sqlml.projects p WHERE p.name = $2) THEN
        RETURN NULL;
    END IF;
    -- roles are joined from pg_roles (pg_has_role raises for a name that no longer exists)
    RETURN EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'sqlml_admin' AND pg_has_role($1, r.oid, 'USAGE'))
        OR EXISTS (SELECT FROM sqlml.projects p JOIN pg_roles r ON r.rolname = p.owner
                   WHERE p.name = $2 AND pg_has_role($1, r.oid, 'USAGE'))
        OR EXISTS (SELECT FROM sqlml.grants g LEFT JOIN pg_roles r ON r.rolname = g.grantee
                   WHERE g.project = $2 AND (g.grantee = 'public' OR pg_has_role($1, r.oid, 'USAGE'))
                     AND (g.privilege IN ($3, 'own') OR $3 = 'predict'));
END
$$;
COMMENT ON FUNCTION sqlml.has_privilege(name, text, text) IS 'Whether role may predict, train, deploy or own project (NULL if there is no such project)';

CREATE OR REPLACE FUNCTION sqlml.has_privilege(project text, privilege text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml.has_privilege(current_user, $1, $2) $$;
COMMENT ON FUNCTION sqlml.has_privilege(text, text) IS 'Whether the current role may predict, train, deploy or own project';

CREATE OR REPLACE FUNCTION sqlml.grant(project text, role name, privilege text) RETURNS void
LANGUAGE plpython3u VOLATILE AS $$
GD['sqlml'].grant(project, role, privilege)
$$;
COMMENT ON FUNCTION sqlml.grant(text, name, text) IS 'Allow role (or public) to predict, train, deploy or own project; needs own on it';

CREATE OR REPLACE FUNCTION sqlml.revoke(project text, role name, privilege text) RETURNS void
LANGUAGE plpython3u VOLATILE AS $$
GD['sqlml'].revoke(project, role, privilege)
$$;
COMMENT ON FUNCTION sqlml.revoke(text, name, text) IS 'Take back a privilege given with sqlml.grant; needs own on project';

-- @schema

-- Row-level security: a role sees the registry rows of the projects it may score, never the ONNX of
-- others. The extension owner (which sqlml._privileged runs as) and superusers are not subject to it.
ALTER TABLE sqlml.projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.models ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.trials ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY may_score ON sqlml.projects FOR SELECT USING (sqlml.has_privilege(current_user, name, 'predict'));
CREATE POLICY may_score ON sqlml.models FOR SELECT USING (sqlml.has_privilege(current_user, project, 'predict'));
CREATE POLICY may_score ON sqlml.deployments FOR SELECT USING (sqlml.has_privilege(current_user, project, 'predict'));
CREATE POLICY may_score ON sqlml.trials FOR SELECT USING (sqlml.has_privilege(current_user, project, 'predict'));
ALTER TABLE sqlml.evaluations ENABLE ROW LEVEL SECURITY;
ALTER TABLE sqlml.drift ENABLE ROW LEVEL SECURITY;
CREATE POLICY may_score ON sqlml.evaluations FOR SELECT USING (sqlml.has_privilege(current_user, project, 'predict'));
CREATE POLICY may_score ON sqlml.drift FOR SELECT USING (sqlml.has_privilege(current_user, project, 'predict'));
CREATE POLICY own_or_grantee ON sqlml.grants FOR SELECT USING (
    sqlml.has_privilege(current_user, project, 'own') OR grantee = 'public'
    OR EXISTS (SELECT FROM pg_roles r WHERE r.rolname = grantee AND pg_has_role(current_user, r.oid, 'USAGE')));
CREATE POLICY own_rows_or_admin ON sqlml.audit_log FOR SELECT USING (
    actor = current_user OR EXISTS (SELECT FROM pg_roles r WHERE r.rolname = 'sqlml_admin' AND pg_has_role(current_user, r.oid, 'USAGE')));

-- pg_dump dumps the rows of these extension tables (and their identity sequences' positions).
SELECT pg_catalog.pg_extension_config_dump('sqlml.projects', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.models', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.models_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.deployments', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.deployments_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.trials', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.trials_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.grants', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.evaluations', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.evaluations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.drift', '');
SELECT pg_catalog.pg_extension_config_dump('sqlml.drift_id_seq', '');

-- @definitions

-- grants (keep last, so that they cover every table and function above): only members of sqlml_user
-- may use sqlml; they read the registry (row-level security decides which rows) and never write it:
-- sqlml._privileged does, after checking the caller's project privileges.

REVOKE ALL ON ALL TABLES IN SCHEMA sqlml FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sqlml FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA sqlml FROM PUBLIC;
GRANT USAGE ON SCHEMA sqlml TO PUBLIC;
GRANT EXECUTE ON FUNCTION sqlml.version() TO PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sqlml TO sqlml_user;
GRANT SELECT ON ALL TABLES IN SCHEMA sqlml TO sqlml_user;
