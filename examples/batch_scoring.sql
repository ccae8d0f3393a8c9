-- Scoring many rows: per row in any SELECT, set-returning and columnar, or into a table.
-- Run: psql -X -v ON_ERROR_STOP=1 "$DSN" -f examples/batch_scoring.sql   (after `sqlml demo` loaded the samples)

-- A regression model on diabetes (442 rows, 10 numeric features).
SELECT * FROM sqlml.train('tour_diabetes', 'diabetes', 'progression', exclude => '{id}', time_budget => '4 seconds');

-- 1. Per row: sqlml.predict takes the row itself (columns matched by name), jsonb, or a float8[].
SELECT id, progression, round(sqlml.predict('tour_diabetes', d)::numeric, 1) AS predicted
FROM diabetes d ORDER BY id LIMIT 5;

-- 2. Set-returning and columnar: the relation is read once and scored in chunks; the fourth
--    argument gives the id its type (without it, the id is text).
SELECT id, round(prediction::numeric, 1) AS predicted
FROM sqlml.predict_batch('tour_diabetes', 'SELECT * FROM diabetes WHERE age > 60', 'id', NULL::int)
ORDER BY id LIMIT 5;

-- 3. Into a table, then join back: the usual shape of a nightly scoring job.
DROP TABLE IF EXISTS tour_diabetes_scored;
SELECT sqlml.score('tour_diabetes', 'diabetes', 'tour_diabetes_scored', 'id') AS rows_scored;
SELECT round(sqrt(avg((d.progression - s.prediction) ^ 2))::numeric, 1) AS rmse_in_sample,
       round(avg(abs(d.progression - s.prediction))::numeric, 1) AS mae_in_sample
FROM diabetes d JOIN tour_diabetes_scored s USING (id);

-- The three ways agree on every row (ONNX computes in float32: to 1e-5, relative).
DO $$ BEGIN
  ASSERT (SELECT count(*) FROM tour_diabetes_scored) = 442, 'score must write one row per input row';
  ASSERT (SELECT max(abs(s.prediction - sqlml.predict('tour_diabetes', d)) / greatest(abs(s.prediction), 1))
          FROM diabetes d JOIN tour_diabetes_scored s USING (id)) < 1e-5, 'score and predict must agree';
  ASSERT (SELECT max(abs(b.prediction - s.prediction) / greatest(abs(s.prediction), 1))
          FROM sqlml.predict_batch('tour_diabetes', 'diabetes', 'id', NULL::int) b
          JOIN tour_diabetes_scored s ON s.id = b.id) < 1e-5, 'predict_batch and score must agree';
END $$;

-- 4. Classification into a table: label and probabilities per row, then a confusion matrix.
SELECT * FROM sqlml.train('tour_cancer', 'breast_cancer', 'diagnosis', exclude => '{id}', time_budget => '4 seconds');
DROP TABLE IF EXISTS tour_cancer_scored;
SELECT sqlml.score('tour_cancer', 'SELECT * FROM breast_cancer', 'tour_cancer_scored', 'id') AS rows_scored;
SELECT b.diagnosis AS actual, s.label AS predicted, count(*)
FROM breast_cancer b JOIN tour_cancer_scored s USING (id) GROUP BY 1, 2 ORDER BY 1, 2;
DO $$ BEGIN
  ASSERT (SELECT avg((b.diagnosis = s.label)::int) FROM breast_cancer b JOIN tour_cancer_scored s USING (id)) > 0.9,
         'in-sample accuracy on breast_cancer should exceed 0.9';
END $$;
