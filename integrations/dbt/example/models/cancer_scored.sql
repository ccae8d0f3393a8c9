-- Rows the model never saw, scored in place by the deployed dbt_cancer model.
{{ config(materialized='table') }}
-- depends_on: {{ ref('cancer_training') }}

select b.id,
       b.diagnosis,
       {{ sqlml.sqlml_predict_label('dbt_cancer', 'b') }} as predicted,
       {{ sqlml.sqlml_predict_proba('dbt_cancer', 'b', class_label='malignant') }} as p_malignant,
       {{ sqlml.sqlml_predict_proba('dbt_cancer', 'b') }} as probabilities
from {{ source('samples', 'breast_cancer') }} b
where b.id % 5 = 0
