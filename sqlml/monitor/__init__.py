"""Watching models: drift, evaluation, permutation importance, the model card."""
