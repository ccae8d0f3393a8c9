"""What monitoring and the model card need from a training, computed before its version is
registered (pure: no database; the budget's checkpoint serves cancels)."""

from __future__ import annotations

import time

from sqlml.monitor import diagnostics, drift, importance

REGISTER_RESERVE = 0.2  # seconds of the training budget kept for the registry write after importance


def training_artifacts(trained, candidate, raw: dict, budget, data_profile, explainer) -> dict:
    """Model columns for operations: the data profile, drift baselines (features on the training
    rows, at most a 50k sample; predictions on the holdout), holdout diagnostics, and importance
    (mean |contribution| of the registered model's ``explainer`` on the holdout) within what is
    left of the budget (checking for a cancel between chunks).

    Holdout figures come from the candidate's honest model, the one that never saw the holdout
    (the registered model may have been refitted on it)."""
    schema = trained.schema
    task, classes = schema.target.task, schema.target.classes
    holdout_out = candidate.honest_pred
    baseline = {"features": drift.feature_baselines(schema.features, raw),
                "prediction": drift.prediction_baseline(task, holdout_out, classes)}
    deadline = time.monotonic() + budget.remaining() - REGISTER_RESERVE
    imp = importance.mean_abs_contribution(explainer, trained.holdout_inputs, deadline, checkpoint=budget.checkpoint)
    return {"profile": diagnostics.jsonable(data_profile) if data_profile else None,
            "baseline": diagnostics.jsonable(baseline), "importance": diagnostics.jsonable(imp),
            "diagnostics": diagnostics.summarise(task, trained.holdout_y, holdout_out, classes)}
