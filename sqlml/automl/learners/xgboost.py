"""XGBoost: gradient boosting on histograms, leaf-wise like LightGBM, rounds chosen by early stopping.

Text categories are one-hot (NATIVE_MISSING): onnxmltools' converter cannot express XGBoost's
categorical splits. Missing numbers stay NaN, which XGBoost and its ONNX graph route alike."""

from __future__ import annotations

from sqlml.automl.spec import BOOSTING, DEFAULT_LEAVES, NATIVE_MISSING, EstimatorSpec, FitContext, Hyper

EARLY_STOPPING_ROUNDS = 50


def build(params, task, threads, seed):
    import xgboost as xgb

    cls = xgb.XGBClassifier if task.classification else xgb.XGBRegressor
    return cls(
        n_estimators=int(params.get("n_estimators", 1000)),
        learning_rate=params.get("learning_rate", 0.1),
        tree_method="hist",
        grow_policy="lossguide",
        max_depth=0,
        max_leaves=int(params.get("max_leaves", DEFAULT_LEAVES)),
        min_child_weight=params.get("min_child_weight", 1.0),
        subsample=params.get("subsample", 1.0),
        colsample_bytree=params.get("colsample_bytree", 1.0),
        reg_lambda=params.get("reg_lambda", 1.0),
        reg_alpha=params.get("reg_alpha", 0.0),
        n_jobs=threads,
        random_state=seed,
        verbosity=0,
    )


def fit(est, X, y, context: FitContext) -> int:
    """Boost up to ``n_estimators`` rounds, or to the best round on the validation rows (the model
    keeps only those, so that ONNX converts what predicts); stop at the deadline (checked every 10
    rounds). Returns the rounds kept."""
    import xgboost as xgb

    budget = context.budget

    class Deadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            if epoch % 10:
                return False
            budget.checkpoint()
            return budget.expired() and epoch > 0

    callbacks = [Deadline()]
    kwargs = {"verbose": False}
    if context.n_estimators:
        est.set_params(n_estimators=int(context.n_estimators))
    elif context.valid is not None:
        kwargs["eval_set"] = [context.valid]
        callbacks.append(xgb.callback.EarlyStopping(rounds=EARLY_STOPPING_ROUNDS, save_best=True))
    est.set_params(callbacks=callbacks)
    est.fit(X, y, **kwargs)
    est.set_params(callbacks=None)  # a fitted model holds no closure over this fit's budget
    return int(est.get_booster().num_boosted_rounds())


def leaves(params: dict, rows: int, task) -> float:
    return params.get("max_leaves", DEFAULT_LEAVES)


def register_onnx() -> None:
    """Teach skl2onnx the XGBoost estimators (the converter lives in onnxmltools)."""
    import xgboost as xgb
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(xgb.XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(xgb.XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)


SPECS = (
    EstimatorSpec(
        name="xgboost", family=BOOSTING, encoding=NATIVE_MISSING, build=build, fit=fit, leaves=leaves,
        cost=1.5, early_stopping=True, library="xgboost", register_onnx=register_onnx,
        space=(
            Hyper("learning_rate", 0.01, 0.3, log=True),
            Hyper("max_leaves", 4, 256, log=True, integer=True),
            Hyper("min_child_weight", 0.01, 20.0, log=True),
            Hyper("subsample", 0.5, 1.0),
            Hyper("colsample_bytree", 0.3, 1.0),
            Hyper("reg_lambda", 1e-3, 10.0, log=True),
        ),
        portfolio=(
            {"learning_rate": 0.1, "max_leaves": 31, "min_child_weight": 1.0, "subsample": 1.0,
             "colsample_bytree": 1.0, "reg_lambda": 1.0},
            {"learning_rate": 0.05, "max_leaves": 15, "min_child_weight": 3.0, "subsample": 0.8,
             "colsample_bytree": 0.6, "reg_lambda": 1.0},
        ),
    ),
)
