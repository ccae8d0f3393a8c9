-- The model lifecycle in psql: train, inspect the search, challenge the champion, deploy, roll back.
-- Run: psql -X -v ON_ERROR_STOP=1 "$DSN" -f examples/lifecycle.sql   (after `sqlml demo` loaded the samples)
-- Checks are pg_temp.check(condition, message): with ON_ERROR_STOP a failed one stops the script
-- with a non-zero exit. The script can be run again: it works with whatever versions it creates.

CREATE FUNCTION pg_temp.check(ok boolean, message text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION 'check failed: %', message; END IF; END $$;

-- 1. AutoML on iris (multiclass, inferred): 'id' identifies rows, it is not a feature.
SELECT version AS champion, algorithm, metric, round(score::numeric, 4) AS holdout_score
FROM sqlml.train('tour_iris', 'iris', 'species', exclude => '{id}', time_budget => '4 seconds') \gset
\echo trained tour_iris version :champion (:algorithm, :metric = :holdout_score)
SELECT project, version, algorithm, strategy FROM sqlml.deploy('tour_iris', version => :champion);

-- 2. What the search tried, best first (log_loss: lower is better).
SELECT n, algorithm, status, round(score::numeric, 4) AS validation_log_loss, round(fit_seconds::numeric, 2) AS fit_s
FROM sqlml.leaderboard WHERE project = 'tour_iris' AND version = :champion
ORDER BY score NULLS LAST, n;

-- 3. Predict with the deployed model: the label, and the probabilities in the order of sqlml.classes.
SELECT sqlml.classes('tour_iris');
SELECT id, species, sqlml.predict_label('tour_iris', i) AS predicted,
       (SELECT array_agg(round(p::numeric, 3)) FROM unnest(sqlml.predict_proba('tour_iris', i)) AS p) AS probabilities
FROM iris i WHERE id IN (1, 51, 101) ORDER BY id;

-- 4. A challenger restricted to the linear family, registered but never deployed automatically.
SELECT version AS challenger FROM sqlml.train('tour_iris', 'iris', 'species', exclude => '{id}', algorithms => '{linear}',
                                              time_budget => '3 seconds', options => '{"deploy": "never"}') \gset
SELECT pg_temp.check((SELECT version FROM sqlml.deployed WHERE project = 'tour_iris') = :champion,
                     'options.deploy = never must leave the champion live');

-- 5. Deploy the challenger explicitly, then roll back: every change is a row in sqlml.deployments.
SELECT project, version, algorithm, strategy FROM sqlml.deploy('tour_iris', 'most_recent');
SELECT pg_temp.check((SELECT version FROM sqlml.deployed WHERE project = 'tour_iris') = :challenger, 'most_recent');
SELECT project, version, algorithm, strategy FROM sqlml.deploy('tour_iris', 'rollback');
SELECT pg_temp.check((SELECT version FROM sqlml.deployed WHERE project = 'tour_iris') = :champion,
                     'rollback must bring the champion back');
SELECT version, strategy, deployed_by, deployed_at::timestamp(0) FROM sqlml.deployments
WHERE project = 'tour_iris' ORDER BY id DESC LIMIT 3;

-- 6. Any version stays addressable as project@version, whatever is deployed.
SELECT sqlml.predict_label('tour_iris@' || :challenger, i) AS challenger, sqlml.predict_label('tour_iris', i) AS deployed
FROM iris i WHERE id = 51;

-- 7. Lineage: what each version was trained on, by whom, with which libraries.
SELECT version, algorithm, relation, rows, left(data_fingerprint, 12) AS data, created_by,
       library_versions ->> 'scikit-learn' AS sklearn, library_versions ->> 'onnxruntime' AS onnxruntime
FROM sqlml.models WHERE project = 'tour_iris' ORDER BY version DESC LIMIT 3;
