{#- Training and deployment.

    As a post-hook, so that a model of the training data retrains whenever dbt rebuilds it (the
    champion/challenger gate decides whether the new version is deployed):
      {{ config(post_hook=sqlml.sqlml_train('churn', this, 'churned', exclude=['id'], time_budget='2 minutes')) }}

    As an operation:
      dbt run-operation sqlml_train_model --args '{project: churn, relation: customers, target: churned}'
      dbt run-operation sqlml_deploy_model --args '{project: churn, strategy: rollback}'
-#}

{% macro sqlml_train(project, relation, target, task=none, algorithms=none, time_budget='60 seconds', metric=none,
                     test_size=0.2, exclude=none, options=none) -%}
  select * from sqlml.train({{ sqlml.literal(project) }}, {{ sqlml.relation_text(relation) }}, {{ sqlml.literal(target) }},
      task => {{ sqlml.literal(task) }}, algorithms => {{ sqlml.text_array(algorithms) }},
      time_budget => {{ sqlml.literal(time_budget) }}::interval, metric => {{ sqlml.literal(metric) }},
      test_size => {{ test_size }}, exclude => {{ sqlml.text_array(exclude) }},
      options => {{ sqlml.literal(tojson(options or {})) }}::jsonb)
{%- endmacro %}

{% macro sqlml_deploy(project, strategy='best_score', version=none) -%}
  select * from sqlml.deploy({{ sqlml.literal(project) }}, {{ sqlml.literal(strategy) }}, {{ sqlml.literal(version) }}::int)
{%- endmacro %}

{% macro sqlml_train_model(project, relation, target, task=none, algorithms=none, time_budget='60 seconds',
                           metric=none, test_size=0.2, exclude=none, options=none) %}
  {% set result = run_query(sqlml.sqlml_train(project, relation, target, task, algorithms, time_budget, metric,
                                              test_size, exclude, options)) %}
  {% set row = result.rows[0] %}
  {% do log("sqlml: " ~ row['project'] ~ " version " ~ row['version'] ~ ": " ~ row['algorithm'] ~ " " ~ row['metric']
            ~ "=" ~ row['score'] ~ (", deployed" if row['deployed'] else ", not deployed"), info=true) %}
  {% do run_query("commit") %}
{% endmacro %}

{% macro sqlml_deploy_model(project, strategy='best_score', version=none) %}
  {% set row = run_query(sqlml.sqlml_deploy(project, strategy, version)).rows[0] %}
  {% do log("sqlml: " ~ row['project'] ~ " version " ~ row['version'] ~ " (" ~ row['algorithm'] ~ ") deployed by "
            ~ row['strategy'], info=true) %}
  {% do run_query("commit") %}
{% endmacro %}
