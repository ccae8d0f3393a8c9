{#- Helpers: SQL text for the values the other macros pass to sqlml (never pasted unquoted). -#}

{% macro literal(value) -%}
  {%- if value is none -%} NULL
  {%- elif value is number -%} {{ value }}
  {%- else -%} '{{ value | string | replace("'", "''") }}'
  {%- endif -%}
{%- endmacro %}

{% macro text_array(values) -%}
  {%- if values is none -%} NULL
  {%- else -%} ARRAY[{% for v in values %}{{ sqlml.literal(v) }}{% if not loop.last %}, {% endif %}{% endfor %}]::text[]
  {%- endif -%}
{%- endmacro %}

{#- A relation for sqlml.train / predict_batch: a dbt Relation (this, ref(...), source(...)) becomes
    its schema-qualified quoted name; text (a table name or one SELECT) is passed as it is. -#}
{% macro relation_text(relation) -%}
  {%- if relation is string -%} {{ sqlml.literal(relation) }}
  {%- else -%} {{ sqlml.literal(relation.include(database=False) | string) }}
  {%- endif -%}
{%- endmacro %}
