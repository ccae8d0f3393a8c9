{#- Generic tests for scored models. In a schema.yml:
      columns:
        - name: predicted
          data_tests:
            - sqlml.sqlml_accuracy:
                arguments: {actual: diagnosis, at_least: 0.9}
            - sqlml.sqlml_probabilities_sum_to_one   (on a float8[] column of sqlml_predict_proba)
-#}

{% test sqlml_accuracy(model, column_name, actual, at_least=0.9) %}
  {#- fails (returns a row) when the share of rows whose column_name equals actual is below at_least -#}
  select accuracy from (
      select avg(case when {{ column_name }}::text = {{ actual }}::text then 1.0 else 0.0 end) as accuracy
      from {{ model }}
  ) a
  where accuracy is null or accuracy < {{ at_least }}
{% endtest %}

{% test sqlml_probabilities_sum_to_one(model, column_name, tolerance=0.0001) %}
  select {{ column_name }} from {{ model }}
  where {{ column_name }} is null
     or abs((select sum(p) from unnest({{ column_name }}) as p) - 1) > {{ tolerance }}
     or exists (select from unnest({{ column_name }}) as p where p < 0 or p > 1)
{% endtest %}
