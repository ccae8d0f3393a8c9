"""The AutoML front: wires the data, the task and the budget to the search. No database here.

``train(...)`` takes raw columns (see ``sqlml.data.convert``) and the raw target, infers or checks
the task, encodes the labels, splits off a seeded stratified holdout, runs the search on the rest
and scores the winner on the holdout. It returns everything the server needs to convert, verify
and register the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from sqlml.automl import meta, metrics, preprocess
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import DEFAULT_ALGORITHMS, SPECS
from sqlml.automl.search import Problem, Result, Search, predict
from sqlml.data import convert
from sqlml.data.schema import BINARY, INTEGER_TYPES, MULTICLASS, PG_KINDS, REGRESSION, TASKS, FeatureSchema
from sqlml.data.task import task_of
from sqlml.errors import DATA_EXCEPTION, INVALID_PARAMETER, SqlmlError

INTEGER_CLASS_LIMIT = 20  # an integer target with at most this many values is a label


@dataclass
class Candidate:
    """A fitted model that could be registered.

    ``model`` is what would be exported (refitted on every row, when there was time), and
    ``holdout_pred`` its predictions on the holdout, for the parity check. ``honest_model`` is the
    same configuration trained without the holdout: its predictions there (``honest_pred``) give
    the metrics, the diagnostics and the deployment gate's score.
    """

    model: object
    algorithm: str
    params: dict
    holdout_pred: np.ndarray
    holdout_metrics: dict
    honest_model: object = None
    honest_pred: np.ndarray = None
    refit: str = "training part"  # or "all rows"


@dataclass
class Trained:
    schema: FeatureSchema  # with the target's classes
    metric: str
    result: Result
    holdout_index: np.ndarray  # holdout rows, as positions in the raw columns
    holdout_inputs: dict  # model inputs of the holdout rows
    holdout_y: np.ndarray  # encoded
    train_rows: int
    X_holdout: object = field(repr=False, default=None)
    X_train: object = field(repr=False, default=None)  # the training part's model inputs (DataFrame)
    meta_features: list = field(default_factory=list)  # sqlml.automl.meta.meta_features of the training part
    warm_started: int = 0  # configurations borrowed from similar past trainings
    final_model: object = None  # the winner refitted on every row, or None (no time left, or not asked)
    test_size: float = 0.2

    def fitted_on(self, candidate: Candidate):
        """The model-input DataFrame ``candidate.model`` was fitted on (linear explanations' E[x])."""
        if candidate.refit == "all rows":
            return pd.concat([self.X_train, self.X_holdout], ignore_index=True)
        return self.X_train

    def best_configurations(self) -> list[dict]:
        """What a similar future training should try first."""
        return meta.best_configurations(self.result.trials)

    def candidate(self, model, algorithm, params, final=None) -> Candidate:
        """``model`` trained on the training part; ``final`` the same refitted on every row."""
        task, k = task_of(self.schema.target.task), len(self.schema.target.classes)
        honest = predict(model, self.X_holdout, task, k)
        exported = model if final is None else final
        pred = honest if final is None else predict(final, self.X_holdout, task, k)
        fitted_on = "all rows" if final is not None else self.result.fitted_on
        return Candidate(exported, algorithm, params, pred, metrics.all_metrics(task, self.holdout_y, honest),
                         honest_model=model, honest_pred=honest, refit=fitted_on)

    def candidates(self):
        """The winner first; if it is an ensemble, then its members, best first (parity fallbacks)."""
        yield self.candidate(self.result.model, self.result.algorithm, self.result.params, self.final_model)
        for trial, model, _ in sorted(self.result.members, key=lambda m: m[0].loss):
            yield self.candidate(model, trial.algorithm, {**trial.params, "n_estimators": trial.n_estimators})


def infer_task(target_name: str, pg_type: str, y_raw: np.ndarray) -> tuple[str, str]:
    """(task, why) from the target's type and values."""
    kind = PG_KINDS.get(pg_type)
    values = [v for v in y_raw if v is not None and not (isinstance(v, float) and np.isnan(v))]
    distinct = len(set(values))
    if kind != "numeric" or pg_type == "bool":
        task = BINARY if distinct <= 2 else MULTICLASS
        return task, f'target "{target_name}" is {pg_type} with {distinct} distinct values'
    if pg_type in INTEGER_TYPES and distinct <= INTEGER_CLASS_LIMIT:
        task = BINARY if distinct <= 2 else MULTICLASS
        return task, f'target "{target_name}" is an integer with {distinct} distinct values'
    return REGRESSION, f'target "{target_name}" is {pg_type} with {distinct} distinct values'


def train(schema: FeatureSchema, columns: dict, y_raw, *, task: str | None, metric: str | None,
          algorithms: list[str] | None, test_size: float, seed: int, budget: Budget, threads: int = 1,
          on_trial=None, reserve_seconds: float = 1.0, note=None, ensemble: bool = True,
          n_estimators: int | None = None, similar=None, refit_all: bool | None = None, run_fit=None,
          max_scoring_us: float | None = None, bagging: bool | None = None, folds: int | None = None) -> Trained:
    """``note(message)`` is called with what the user should know (task inference, the plan);
    ``similar(meta_features, task)`` returns configurations that won on similar past trainings;
    ``run_fit(fit)`` runs each model fit (see ``Search``). ``refit_all``: refit the winner on every
    row when the budget allows (None), always (True: the caller asked for it, even past the
    budget), or never (False). ``bagging``: keep the fold models instead of refitting (see
    ``Search``); refit_all=True asks for a refit, so it turns bagging off. ``folds``: the validation
    scheme (1: one holdout), instead of the search's choice."""
    note = note or (lambda message: None)
    target = schema.target
    if task is None:
        task, why = infer_task(target.name, target.pg_type, y_raw)
        note(f"task inferred as {task}: {why} (pass task => '...' to choose)")
    elif task not in TASKS:
        raise SqlmlError(f'unknown task "{task}"', hint=f"use one of: {', '.join(TASKS)}, or NULL to infer it")
    if task == MULTICLASS and len({v for v in y_raw if v is not None}) == 2:
        task = BINARY
    y, classes, keep = task_of(task).encode_target(target.name, y_raw, target.numeric_labels)
    if task == BINARY and len(classes) > 2:
        task = MULTICLASS
        note(f"task is multiclass: the target has {len(classes)} classes")
    task = task_of(task)
    metric = task.check_metric(metric)
    if not keep.all():
        note(f"{int((~keep).sum())} rows with a NULL target are not used")
    schema = replace(schema, target=replace(target, task=task.name, classes=classes))
    inputs = convert.model_inputs(schema, columns)
    inputs = {k: v[keep] for k, v in inputs.items()}
    y = y[keep]
    if len(y) < 10:
        raise SqlmlError(f"the relation has {len(y)} usable rows; training needs at least 10",
                         hint="check the relation and its filter; rows with a NULL target are not used",
                         sqlstate=DATA_EXCEPTION)
    if not 0.05 <= test_size <= 0.5:
        raise SqlmlError(f"test_size is {test_size}; it must be between 0.05 and 0.5", sqlstate=INVALID_PARAMETER)
    train_idx, test_idx = task.holdout(y, test_size, seed)
    frame = convert.as_frame(schema, inputs)
    X_train, X_test = frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    plan = preprocess.Plan.from_data(schema, X_train)
    problem = Problem(X=X_train, y=y[train_idx], task=task, metric=metric, plan=plan,
                      n_classes=len(classes), threads=threads, seed=seed)
    specs = [SPECS[a] for a in (algorithms or DEFAULT_ALGORITHMS) if task.name in SPECS[a].tasks]
    described = meta.meta_features(X_train, y[train_idx], task, list(plan.text))
    warm = similar(described, task.name) if similar else []
    if warm:
        note(f"warm start: {len(warm)} configurations that won on similar past trainings are tried first")
    search = Search(problem, specs, budget, on_trial=on_trial, reserve_seconds=reserve_seconds, use_ensemble=ensemble,
                    n_estimators=n_estimators, warm_start=warm, final_rows=None if refit_all is False else len(y),
                    run_fit=run_fit, max_scoring_us=max_scoring_us, bagging=False if refit_all else bagging,
                    folds=folds)
    validation = ("a validation split" if search.validation == "holdout"
                  else search.validation.replace("cv", "cross-validation"))
    note(f"searching {', '.join(s.name for s in specs)} for the best {metric}: {validation} of the "
         f"{len(train_idx)} training rows; {len(test_idx)} other rows held out to score the winner; "
         f"budget {budget.seconds:.0f}s")
    if search.sprint:  # refit_all=True still refits it on every row: asked for, whatever the clock
        note(f"{max(budget.remaining(), 0.0):.1f}s of the budget left after startup: "
             f"one trial of {search.specs[0].name}"
             + ("" if refit_all else ", registered as fitted on the validation split's fit part (no refit)"))
    search.run()
    result = search.finish()
    # The holdout has measured the configuration; the registered model learns from every row.
    final = None
    if refit_all or (refit_all is None and search.affords_final_refit(result)):
        final = search.refit_on(result, pd.concat([X_train, X_test], ignore_index=True),
                                np.concatenate([y[train_idx], y[test_idx]]))
    elif refit_all is None and not search.sprint and not result.bagged:
        note("no time left to refit on every row: the model registered is the one trained without the holdout")
    return Trained(schema=schema, metric=metric, result=result, holdout_index=np.flatnonzero(keep)[test_idx],
                   holdout_inputs={k: v[test_idx] for k, v in inputs.items()}, holdout_y=y[test_idx],
                   train_rows=len(train_idx), X_holdout=X_test, X_train=X_train, meta_features=described,
                   warm_started=len(warm), final_model=final, test_size=test_size)
