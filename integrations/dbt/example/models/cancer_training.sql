-- The training data: four rows in five (the fifth is kept aside and scored by cancer_scored).
-- The post-hook trains project dbt_cancer on this view each time dbt builds it, after the view's
-- transaction has committed (transaction: false), so readers of the view never wait for the
-- training. sqlml's gate deploys the new version only if it beats the deployed one on the same
-- holdout; on unchanged data with unchanged arguments the existing version is returned.
{{ config(
    materialized='view',
    post_hook={"sql": "{{ sqlml.sqlml_train('dbt_cancer', this, 'diagnosis', exclude=['id'], time_budget=var('training_budget')) }}",
               "transaction": false}
) }}

select * from {{ source('samples', 'breast_cancer') }} where id % 5 <> 0
