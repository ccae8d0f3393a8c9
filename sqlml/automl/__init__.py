"""AutoML core: preprocessing, estimators as data, the budgeted search, ensembles, meta-features."""
