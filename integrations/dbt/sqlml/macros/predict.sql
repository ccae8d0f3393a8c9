{#- Scoring inside a model's SELECT. relation_alias is the alias of the row to score, as in
      select c.id, {{ sqlml.sqlml_predict('churn', 'c', trained_by=ref('churn_training')) }} as churn_score
      from {{ ref('customers') }} c
    Columns are matched to the model's features by name; other columns are ignored. project may be
    'name' (the deployed model) or 'name@3' (version 3).

    trained_by (optional, any macro here): the ref() of the model whose hook trains the project.
    The macro renders nothing from it; passing it is what tells dbt to build that model first (no
    manual `-- depends_on:` line). -#}

{% macro sqlml_predict(project, relation_alias, trained_by=none) -%}
  sqlml.predict({{ sqlml.literal(project) }}, {{ relation_alias }})
{%- endmacro %}

{% macro sqlml_predict_label(project, relation_alias, trained_by=none) -%}
  sqlml.predict_label({{ sqlml.literal(project) }}, {{ relation_alias }})
{%- endmacro %}

{#- All class probabilities (float8[], in the order of sqlml.classes(project)), or with class_label
    the probability of that one class. -#}
{% macro sqlml_predict_proba(project, relation_alias, class_label=none, trained_by=none) -%}
  {%- if class_label is none -%}
    sqlml.predict_proba({{ sqlml.literal(project) }}, {{ relation_alias }})
  {%- else -%}
    (sqlml.predict_proba({{ sqlml.literal(project) }}, {{ relation_alias }}))[array_position(sqlml.classes({{ sqlml.literal(project) }}), {{ sqlml.literal(class_label) }})]
  {%- endif -%}
{%- endmacro %}

{#- The model version that scores the rows of this statement: a column to keep beside the scores
    ('name@3' renders 3; 'name' the version deployed when the statement starts, read once). -#}
{% macro sqlml_model_version(project, trained_by=none) -%}
  {%- set name, _, version = (project | string).partition('@') -%}
  {%- if version -%} {{ version | int }}
  {%- else -%} (select d.version from sqlml.deployed d where d.project = {{ sqlml.literal(name) }})
  {%- endif -%}
{%- endmacro %}
