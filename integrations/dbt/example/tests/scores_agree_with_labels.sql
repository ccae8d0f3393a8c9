-- The label and the probability come from the same model: malignant exactly when p_malignant wins.
select id, predicted, p_malignant
from {{ ref('cancer_scored') }}
where (predicted = 'malignant') <> (p_malignant > 0.5)
