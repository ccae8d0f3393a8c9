"""One module per estimator library: each defines the ``SPECS`` of its estimators (``sqlml.automl.spec``)."""
