-- Rows the model never saw, scored in place by the deployed dbt_cancer model. trained_by makes dbt
-- build cancer_training (whose hook trains dbt_cancer) first.
{{ config(materialized='table') }}

select b.id,
       b.diagnosis,
       {{ sqlml.sqlml_predict_label('dbt_cancer', 'b', trained_by=ref('cancer_training')) }} as predicted,
       {{ sqlml.sqlml_predict_proba('dbt_cancer', 'b', class_label='malignant') }} as p_malignant,
       {{ sqlml.sqlml_predict_proba('dbt_cancer', 'b') }} as probabilities,
       {{ sqlml.sqlml_model_version('dbt_cancer') }} as model_version
from {{ source('samples', 'breast_cancer') }} b
where b.id % 5 = 0
