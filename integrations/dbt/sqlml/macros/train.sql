{#- Training and deployment.

    As a post-hook that runs after the model's transaction has committed (`transaction: false`),
    so that readers of the rebuilt relation are never blocked by the training (inside the
    transaction, the relation stays exclusively locked for the whole time budget):
      {{ config(post_hook={"sql": "{{ sqlml.sqlml_train('churn', this, 'churned', exclude=['id']) }}",
                           "transaction": false}) }}
    The macro runs the training itself and writes its result to dbt's log (dbt does not show
    NOTICEs), for example
      sqlml: churn version 3: lightgbm roc_auc=0.9712, deployed
    Training is idempotent: a rebuild on the same data with the same arguments returns the
    version already trained (options={'force': true} trains anyway).

    As an operation:
      dbt run-operation sqlml_train_model --args '{project: churn, relation: customers, target: churned}'
      dbt run-operation sqlml_deploy_model --args '{project: churn, strategy: rollback}'

    sqlml_train_sql renders the bare statement, for whoever wants to run it some other way.
-#}

{% macro sqlml_train_sql(project, relation, target, task=none, algorithms=none, time_budget='60 seconds', metric=none,
                         test_size=0.2, exclude=none, options=none) -%}
  select * from sqlml.train({{ sqlml.literal(project) }}, {{ sqlml.relation_text(relation) }}, {{ sqlml.literal(target) }},
      task => {{ sqlml.literal(task) }}, algorithms => {{ sqlml.text_array(algorithms) }},
      time_budget => {{ sqlml.literal(time_budget) }}::interval, metric => {{ sqlml.literal(metric) }},
      test_size => {{ test_size }}, exclude => {{ sqlml.text_array(exclude) }},
      options => {{ sqlml.literal(tojson(options or {})) }}::jsonb)
{%- endmacro %}

{#- Runs the training now (at execution; renders nothing, so as a hook it leaves no statement for
    dbt to run), logs the result row and commits the registry write. Returns nothing. -#}
{% macro sqlml_train(project, relation, target, task=none, algorithms=none, time_budget='60 seconds', metric=none,
                     test_size=0.2, exclude=none, options=none) -%}
  {%- if execute -%}
    {%- set result = run_query(sqlml.sqlml_train_sql(project, relation, target, task, algorithms, time_budget, metric,
                                                     test_size, exclude, options)) -%}
    {%- set row = result.rows[0] -%}
    {%- do log("sqlml: " ~ row['project'] ~ " version " ~ row['version'] ~ ": " ~ row['algorithm'] ~ " " ~ row['metric']
              ~ "=" ~ row['score'] ~ (", deployed" if row['deployed'] else ", not deployed"), info=true) -%}
    {%- do run_query("commit") -%}
  {%- endif -%}
{%- endmacro %}

{% macro sqlml_deploy(project, strategy='best_score', version=none) -%}
  select * from sqlml.deploy({{ sqlml.literal(project) }}, {{ sqlml.literal(strategy) }}, {{ sqlml.literal(version) }}::int)
{%- endmacro %}

{% macro sqlml_train_model(project, relation, target, task=none, algorithms=none, time_budget='60 seconds',
                           metric=none, test_size=0.2, exclude=none, options=none) %}
  {% do sqlml.sqlml_train(project, relation, target, task, algorithms, time_budget, metric, test_size, exclude, options) %}
{% endmacro %}

{% macro sqlml_deploy_model(project, strategy='best_score', version=none) %}
  {% set row = run_query(sqlml.sqlml_deploy(project, strategy, version)).rows[0] %}
  {% do log("sqlml: " ~ row['project'] ~ " version " ~ row['version'] ~ " (" ~ row['algorithm'] ~ ") deployed by "
            ~ row['strategy'], info=true) %}
  {% do run_query("commit") %}
{% endmacro %}
