-- The sqlml tour on the embedded dev cluster: `make demo` runs this with psql.
-- The sample tables (breast_cancer, iris, diabetes) ship with scikit-learn; `sqlml demo` loads them.

SELECT sqlml.version();

-- 1. AutoML where the data lives: the task is inferred, the budget is wall-clock for the whole call.
SELECT * FROM sqlml.train('diagnosis', 'breast_cancer', 'diagnosis', time_budget => '15 seconds');

-- 2. The leaderboard of that training: every candidate the search tried.
SELECT algorithm, count(*) AS trials, round(max(score)::numeric, 4) AS best_validation_roc_auc
FROM sqlml.leaderboard
WHERE project = 'diagnosis' AND version = (SELECT max(version) FROM sqlml.models WHERE project = 'diagnosis')
GROUP BY algorithm ORDER BY 3 DESC;

-- 3. Score rows in place, in any SELECT.
SELECT id, diagnosis, sqlml.predict_label('diagnosis', b) AS predicted,
       round((sqlml.predict_proba('diagnosis', b))[2]::numeric, 4) AS p_malignant
FROM breast_cancer b ORDER BY id LIMIT 5;

-- 4. A challenger: trained, registered, deployed only if it beats the champion on the same holdout.
SELECT * FROM sqlml.train('diagnosis', 'breast_cancer', 'diagnosis', algorithms => '{linear}', time_budget => '5 seconds');
SELECT * FROM sqlml.deploy('diagnosis', 'most_recent');
SELECT * FROM sqlml.deploy('diagnosis', 'rollback');

-- 5. The registry: versions, metrics, lineage.
SELECT version, algorithm, metric, round(score::numeric, 4) AS score, rows, created_by, created_at::timestamp(0)
FROM sqlml.models WHERE project = 'diagnosis' ORDER BY version DESC LIMIT 5;
SELECT * FROM sqlml.deployed;

-- 6. Regression and multiclass work the same way; batch scoring is columnar.
SELECT * FROM sqlml.train('progression', 'diabetes', 'progression', time_budget => '10 seconds');
SELECT * FROM sqlml.predict_batch('progression', 'SELECT * FROM diabetes WHERE id <= 5', 'id');
