-- Operations in psql: data quality, evaluation on new labels, drift, retraining when drift is flagged.
-- Run: psql -X -v ON_ERROR_STOP=1 "$DSN" -f examples/operations.sql   (after `sqlml demo` loaded the samples)
-- Checks are pg_temp.check(condition, message): with ON_ERROR_STOP a failed one stops the script
-- with a non-zero exit. The script can be run again.

CREATE FUNCTION pg_temp.check(ok boolean, message text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION 'check failed: %', message; END IF; END $$;

-- 1. Data quality before training: per column type, NULL share, distinct values, range, warnings.
SELECT column_name, type, kind, round(null_share::numeric, 3) AS nulls, distinct_values, min, max,
       round(mean::numeric, 3) AS mean, warnings
FROM sqlml.profile('diabetes', 'progression') ORDER BY column_name;
SELECT pg_temp.check((SELECT warnings[1] LIKE 'id_like:%' FROM sqlml.profile('diabetes') WHERE column_name = 'id'),
                     'a row number is flagged as an identifier');

-- A copy of the target is refused before any search (sqlml.profile says why; SQLSTATE 22000).
CREATE TEMP VIEW diabetes_leak AS SELECT *, progression * 2 AS leak FROM diabetes;
DO $$
BEGIN
    PERFORM sqlml.train('ops_leak', 'diabetes_leak', 'progression', time_budget => '3 seconds');
    RAISE EXCEPTION 'check failed: training on a copy of the target must be refused';
EXCEPTION WHEN data_exception THEN
    RAISE NOTICE 'refused as expected: %', SQLERRM;
END $$;

-- 2. Train (the profile's warnings arrive as NOTICEs and are stored with the model).
SELECT version AS trained FROM sqlml.train('ops_diab', 'diabetes', 'progression', exclude => '{id}',
                                           time_budget => '4 seconds') \gset
SELECT version, profile->'warnings' AS warnings, importance->>'note' AS importance
FROM sqlml.models WHERE project = 'ops_diab' AND version = :trained;

-- 3. Evaluation on newly labelled rows: every metric, next to its holdout value at training.
SELECT metric, round(value::numeric, 3) AS value, round(holdout_value::numeric, 3) AS at_training, rows
FROM sqlml.evaluate('ops_diab', 'SELECT * FROM diabetes WHERE id % 4 = 0');
SELECT pg_temp.check((SELECT count(*) FROM sqlml.evaluations WHERE project = 'ops_diab') >= 1, 'evaluations are stored');

-- 4. Drift: the same population, then a shifted one (bmi 30% higher).
SELECT feature, round(psi::numeric, 4) AS psi, drift FROM sqlml.monitor('ops_diab', 'diabetes') ORDER BY psi DESC LIMIT 3;
CREATE TEMP VIEW diabetes_later AS SELECT id, age, sex, bmi * 1.3 AS bmi, bp, s1, s2, s3, s4, s5, s6, progression FROM diabetes;
SELECT feature, round(psi::numeric, 4) AS psi, drift FROM sqlml.monitor('ops_diab', 'diabetes_later') ORDER BY psi DESC LIMIT 3;
SELECT pg_temp.check((SELECT drift FROM sqlml.drift WHERE project = 'ops_diab' AND feature = 'bmi' ORDER BY id DESC LIMIT 1)
                     = 'major', 'a 30% shift of bmi is major drift');

-- 5. Retrain when drift is flagged; a new version is deployed only through the champion/challenger
--    gate. With pg_cron: SELECT cron.schedule_in_database('ops-diab-drift', '*/15 * * * *',
--    $$SELECT * FROM sqlml.retrain_if_drifted('ops_diab', 'diabetes_recent')$$, current_database());
SELECT * FROM sqlml.retrain_if_drifted('ops_diab', 'diabetes_later', time_budget => '3 seconds');
SELECT version, strategy, reason->>'why' AS why FROM sqlml.deployments WHERE project = 'ops_diab' ORDER BY id DESC LIMIT 1;

-- 6. What Prometheus sees (integrations/prometheus/sqlml-queries.yaml).
SELECT * FROM sqlml.prediction_counts() WHERE project = 'ops_diab';
SELECT * FROM sqlml.job_counts();
