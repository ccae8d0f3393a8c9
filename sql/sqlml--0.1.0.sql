-- sqlml 0.1.0: AutoML inside PostgreSQL.
--
-- Every PL/Python function below opens with the same one-line preamble. The first sqlml function a
-- backend calls finds the server's share directory (through the postgres binary, so that parallel
-- workers, which cannot run SPI, can do it too), runs extension/sqlml_boot.py from there, and leaves
-- the module sqlml.server.api in GD['sqlml']; later calls only look it up. No logic lives in SQL:
-- the bodies call sqlml.server, where errors become clean SQL errors.
--
-- Public functions are SECURITY INVOKER: training and batch scoring read data with the caller's
-- privileges. Registry tables are written only through sqlml._privileged (see
-- sqlml/server/privileged.py).

\echo Use "CREATE EXTENSION sqlml CASCADE" to load this file. \quit

-- schema: created here, not by the control file, so that DROP EXTENSION removes it too

CREATE SCHEMA sqlml;
COMMENT ON SCHEMA sqlml IS 'sqlml: AutoML inside PostgreSQL';

-- tables: the registry

CREATE TABLE sqlml.projects (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}$'),
    task          text NOT NULL CHECK (task IN ('binary', 'multiclass', 'regression')),
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
    UNIQUE (project, version)
);

CREATE TABLE sqlml.deployments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the latest row per project is live
    project      text NOT NULL REFERENCES sqlml.projects (name),
    model_id     bigint NOT NULL REFERENCES sqlml.models (id),
    version      integer NOT NULL,
    strategy     text NOT NULL,
    reason       jsonb,
    deployed_by  name NOT NULL,
    deployed_at  timestamptz NOT NULL DEFAULT clock_timestamp()
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
    n_estimators   integer,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON sqlml.trials (project, model_version);

-- views

CREATE VIEW sqlml.deployed AS
SELECT DISTINCT ON (d.project) d.project, d.version, m.algorithm, m.metric, m.score, d.strategy,
       d.deployed_by, d.deployed_at, d.model_id
FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
ORDER BY d.project, d.id DESC;
COMMENT ON VIEW sqlml.deployed IS 'The live model of each project';

CREATE VIEW sqlml.leaderboard AS
SELECT project, model_version AS version, n, algorithm, status, metric, score, fit_seconds, params
FROM sqlml.trials;
COMMENT ON VIEW sqlml.leaderboard IS 'Every candidate each training tried';

-- functions: installation

CREATE FUNCTION sqlml.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].version()
$$;

COMMENT ON FUNCTION sqlml.version() IS 'Version of the sqlml Python package the server runs';

CREATE FUNCTION sqlml.doctor() RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].doctor()
$$;

COMMENT ON FUNCTION sqlml.doctor() IS 'The server half of `sqlml doctor`: its Python and whether each package sqlml needs imports';

-- functions: training and deployment

CREATE FUNCTION sqlml._train(project text, relation text, target text, task text, algorithms text[],
    budget_seconds float8, metric text, test_size float8, exclude text[], options jsonb) RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, deployed boolean)
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].train(project, relation, target, task, algorithms, budget_seconds, metric, test_size, exclude, options)
$$;

CREATE FUNCTION sqlml.train(
    project text, relation text, target text,
    task text DEFAULT NULL, algorithms text[] DEFAULT NULL, time_budget interval DEFAULT '60 seconds',
    metric text DEFAULT NULL, test_size float8 DEFAULT 0.2, exclude text[] DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, deployed boolean)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM sqlml._train($1, $2, $3, $4, $5, extract(epoch FROM $6)::float8, $7, $8, $9, $10)
$$;
COMMENT ON FUNCTION sqlml.train(text, text, text, text, text[], interval, text, float8, text[], jsonb) IS
'AutoML: train models for project on relation (table, view or one SELECT) to predict target within time_budget; registers the best and deploys it through the champion/challenger gate';

CREATE FUNCTION sqlml.deploy(project text, strategy text DEFAULT 'best_score', version integer DEFAULT NULL) RETURNS TABLE (project text, version integer, algorithm text, metric text, score float8, strategy text, deployed_at timestamptz)
LANGUAGE plpython3u VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].deploy(project, strategy, version)
$$;

COMMENT ON FUNCTION sqlml.deploy(text, text, integer) IS 'Deploy a model of project: strategy best_score, most_recent or rollback, or an explicit version';

-- functions: scoring
--
-- STABLE, not IMMUTABLE: a deploy changes the answer. PARALLEL SAFE: model loading needs no SPI in workers.
-- A row argument goes through a SQL wrapper (PL/Python cannot take record or anyelement).

CREATE FUNCTION sqlml._predict_jsonb(project text, features jsonb) RETURNS float8
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict(project, features)
$$;

CREATE FUNCTION sqlml.predict(project text, features float8[]) RETURNS float8
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict(project, features, as_array=True)
$$;

CREATE FUNCTION sqlml.predict(project text, features jsonb) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_jsonb($1, $2) $$;

CREATE FUNCTION sqlml.predict(project text, features anyelement) RETURNS float8
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_jsonb($1, to_jsonb($2)) $$;

CREATE FUNCTION sqlml._predict_proba_jsonb(project text, features jsonb) RETURNS float8[]
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict_proba(project, features)
$$;

CREATE FUNCTION sqlml.predict_proba(project text, features float8[]) RETURNS float8[]
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict_proba(project, features, as_array=True)
$$;

CREATE FUNCTION sqlml.predict_proba(project text, features jsonb) RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_proba_jsonb($1, $2) $$;

CREATE FUNCTION sqlml.predict_proba(project text, features anyelement) RETURNS float8[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_proba_jsonb($1, to_jsonb($2)) $$;

CREATE FUNCTION sqlml._predict_label_jsonb(project text, features jsonb) RETURNS text
LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict_label(project, features)
$$;

CREATE FUNCTION sqlml.predict_label(project text, features float8[]) RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict_label(project, features, as_array=True)
$$;

CREATE FUNCTION sqlml.predict_label(project text, features jsonb) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_label_jsonb($1, $2) $$;

CREATE FUNCTION sqlml.predict_label(project text, features anyelement) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT sqlml._predict_label_jsonb($1, to_jsonb($2)) $$;

COMMENT ON FUNCTION sqlml.predict(text, anyelement) IS 'Score a row (columns matched by name) with the deployed model of project (or project@version): the value, the numeric label, or the class index';
COMMENT ON FUNCTION sqlml.predict_proba(text, anyelement) IS 'Class probabilities of a row, in the order of sqlml.classes(project)';
COMMENT ON FUNCTION sqlml.predict_label(text, anyelement) IS 'The predicted label of a row, as text';

CREATE FUNCTION sqlml.classes(project text) RETURNS text[]
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].classes(project)
$$;

COMMENT ON FUNCTION sqlml.classes(text) IS 'Class labels of project, in the order predict_proba reports them';

CREATE FUNCTION sqlml.predict_batch(project text, relation text, id_column text) RETURNS TABLE (id text, prediction float8, label text, probabilities float8[])
LANGUAGE plpython3u VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].predict_batch(project, relation, id_column)
$$;

COMMENT ON FUNCTION sqlml.predict_batch(text, text, text) IS 'Score every row of relation, columnar; id is id_column as text';

CREATE FUNCTION sqlml.score(project text, relation text, into_table text, id_column text) RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].score(project, relation, into_table, id_column)
$$;

COMMENT ON FUNCTION sqlml.score(text, text, text, text) IS 'Score every row of relation into a new table (id_column, prediction, label, probabilities)';

-- private functions

CREATE FUNCTION sqlml._privileged(token text) RETURNS void
LANGUAGE plpython3u VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
GD['sqlml'].privileged(token)
$$;

CREATE FUNCTION sqlml._model_ref(project text, version integer)
RETURNS TABLE (id bigint, version integer, sha256 text)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.id, m.version, m.sha256 FROM sqlml.models m
    WHERE m.project = $1 AND $2 IS NOT NULL AND m.version = $2
    UNION ALL
    (SELECT m.id, m.version, m.sha256 FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
     WHERE d.project = $1 AND $2 IS NULL ORDER BY d.id DESC LIMIT 1)
$$;
COMMENT ON FUNCTION sqlml._model_ref(text, integer) IS 'Which model project (at version, or deployed) means now';

-- grants: the registry is read through views and functions, written only by sqlml._privileged

REVOKE ALL ON ALL TABLES IN SCHEMA sqlml FROM PUBLIC;
GRANT USAGE ON SCHEMA sqlml TO PUBLIC;
GRANT SELECT ON sqlml.projects, sqlml.deployed, sqlml.leaderboard, sqlml.deployments, sqlml.trials TO PUBLIC;
GRANT SELECT (id, project, version, algorithm, task, metric, score, metrics, hyperparameters, feature_schema,
              classes, sha256, opset, parity, relation, rows, data_fingerprint, library_versions, created_by,
              created_at, train_seconds, job_id) ON sqlml.models TO PUBLIC;
