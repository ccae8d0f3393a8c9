select count(*) as scored
from {{ ref('cancer_scored') }}
having count(*) <> (select count(*) from {{ source('samples', 'breast_cancer') }} where id % 5 = 0)
