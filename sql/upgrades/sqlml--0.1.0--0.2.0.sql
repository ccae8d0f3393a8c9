-- Migration of the schema from 0.1.0 to 0.2.0: what sql/sqlml.sql's -- @schema sections gained or
-- changed since 0.1.0, in the order it must run. The built upgrade script runs this first, then
-- replays every -- @definitions statement of sql/sqlml.sql. Drop here any function or view whose
-- signature, return type or columns changed (CREATE OR REPLACE cannot change those), so that the
-- replay creates it anew; then re-grant nothing by hand: the replayed grants cover it.

-- 0.1.0 pasted the PL/Python preamble into each function; 0.2.0 builds the same preamble from one
-- place, so the replay below leaves every 0.1.0 function's body as a fresh 0.2.0 install has it.

-- sqlml.jobs gained the columns lane and wait_reason (workload classes): _jobs() returns them, so
-- it and the view over it are created anew by the replay.
DROP VIEW sqlml.jobs;
DROP FUNCTION sqlml._jobs();

-- Forecasting: a project's task may be 'forecast'; a forecast model keeps its per-series state.
-- (The constraint keeps the name a fresh install gives it.)
ALTER TABLE sqlml.projects DROP CONSTRAINT projects_task_check;
ALTER TABLE sqlml.projects ADD CONSTRAINT projects_task_check
    CHECK (task IN ('binary', 'multiclass', 'regression', 'forecast'));
ALTER TABLE sqlml.models ADD COLUMN forecaster jsonb;

-- sqlml.explain and sqlml.import_model (issue 19): a model's explainer and where it came from.
ALTER TABLE sqlml.models ADD COLUMN explainer bytea;
ALTER TABLE sqlml.models ADD COLUMN origin text NOT NULL DEFAULT 'trained' CHECK (origin IN ('trained', 'imported'));
