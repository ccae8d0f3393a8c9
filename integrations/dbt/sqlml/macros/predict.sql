{#- Scoring inside a model's SELECT. relation_alias is the alias of the row to score, as in
      select c.id, {{ sqlml.sqlml_predict('churn', 'c') }} as churn_score from {{ ref('customers') }} c
    Columns are matched to the model's features by name; other columns are ignored. project may be
    'name' (the deployed model) or 'name@3' (version 3). -#}

{% macro sqlml_predict(project, relation_alias) -%}
  sqlml.predict({{ sqlml.literal(project) }}, {{ relation_alias }})
{%- endmacro %}

{% macro sqlml_predict_label(project, relation_alias) -%}
  sqlml.predict_label({{ sqlml.literal(project) }}, {{ relation_alias }})
{%- endmacro %}

{#- All class probabilities (float8[], in the order of sqlml.classes(project)), or with class_label
    the probability of that one class. -#}
{% macro sqlml_predict_proba(project, relation_alias, class_label=none) -%}
  {%- if class_label is none -%}
    sqlml.predict_proba({{ sqlml.literal(project) }}, {{ relation_alias }})
  {%- else -%}
    (sqlml.predict_proba({{ sqlml.literal(project) }}, {{ relation_alias }}))[array_position(sqlml.classes({{ sqlml.literal(project) }}), {{ sqlml.literal(class_label) }})]
  {%- endif -%}
{%- endmacro %}
