"""The pure parts of a training's path, without a database: the request's validation, the data
checks before the search, the deployment gate. Tables of (input, expected)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from sqlml.automl.request import TrainRequest, check_arguments, number
from sqlml.data import quality
from sqlml.data.schema import CATEGORY, NUMERIC, Feature
from sqlml.errors import DATA_EXCEPTION, INVALID_PARAMETER, SqlmlError
from sqlml.forecast import options as forecast_options
from sqlml.registry import gate

# --- the request ------------------------------------------------------------------------------------

VALID = dict(project="churn", target="y", task=None, algorithms=None, budget_seconds=60.0, metric=None,
             test_size=0.2, exclude=None, options={})


@pytest.mark.parametrize("change, fragment", [
    ({"project": "bad name"}, 'invalid project name "bad name"'),
    ({"project": "churn\n"}, "invalid project name"),
    ({"project": None}, "invalid project name"),
    ({"target": " "}, "target is empty"),
    ({"budget_seconds": 0.5}, "time_budget of 0.5 seconds is out of range"),
    ({"budget_seconds": math.inf}, "out of range"),
    ({"task": "clustering"}, 'unknown task "clustering"'),
    ({"algorithms": ["svm"]}, 'unknown algorithm "svm"'),
    ({"algorithms": []}, "algorithms is empty"),
    ({"metric": "accuracyy"}, 'unknown metric "accuracyy"'),
    ({"test_size": 0.9}, "test_size is 0.9"),
    ({"options": [1]}, "options must be a JSON object"),
    ({"options": {"sede": 1}}, 'unknown option "sede"'),
    ({"options": {"seed": True}}, 'option "seed" must be int'),
    ({"options": {"seed": Decimal("1.5")}}, 'option "seed" must be int'),
    ({"options": {"n_estimators": Decimal(0)}}, 'option "n_estimators" is 0'),
    ({"options": {"max_rows": Decimal("1e400")}}, "beyond 64 bits"),
    ({"options": {"max_scoring_us": Decimal(0)}}, 'option "max_scoring_us" must be positive'),
    ({"options": {"deploy": "always"}}, """option "deploy" is 'always'"""),
])
def test_bad_requests_are_refused_before_any_data(change, fragment):
    with pytest.raises(SqlmlError) as e:
        check_arguments(**{**VALID, **change})
    assert fragment in e.value.message and e.value.sqlstate == INVALID_PARAMETER


FORECAST_OPTIONS = {"time_column": "day", "horizon": 7}


def tabular(algorithms=None, metric=None):
    return check_arguments(**{**VALID, "algorithms": algorithms, "metric": metric})


def forecast(algorithms=None, metric=None):
    return forecast_options.check_options(dict(FORECAST_OPTIONS), algorithms, metric)


@pytest.mark.parametrize("caller, algorithms, metric, fragment, hint", [
    # one check of algorithms and one of metric (sqlml.automl.request) serve both trainings, in their words
    (tabular, ["svm"], None, 'unknown algorithm "svm"', "lightgbm"),
    (tabular, [], None, "algorithms is empty", "pass NULL for the AutoML portfolio"),
    (tabular, None, "accuracyy", 'unknown metric "accuracyy"', "use one of: accuracy"),
    (forecast, ["prophet"], None, 'unknown forecasting algorithm "prophet"', "theta"),
    (forecast, ["xgboost"], None, 'unknown forecasting algorithm "xgboost"', "theta"),  # a tabular learner
    (forecast, [], None, "algorithms is empty", "pass NULL for every forecaster"),
    (forecast, None, "rmse", 'metric "rmse" is not a forecasting metric', "pass NULL or 'mase'"),
])
def test_algorithms_and_metric_are_checked_alike_for_both_trainings(caller, algorithms, metric, fragment, hint):
    with pytest.raises(SqlmlError) as e:
        caller(algorithms, metric)
    assert (e.value.sqlstate, fragment, hint) == (INVALID_PARAMETER, fragment, hint)
    assert fragment in e.value.message and hint in e.value.hint


@pytest.mark.parametrize("caller, algorithms, metric", [
    (tabular, ["linear", "lightgbm"], "rmse"),
    (tabular, None, "r2"),  # a metric of some task: the task's own check follows once it is known
    (forecast, ["ets", "lightgbm"], "mase"),
    (forecast, None, None),
])
def test_known_algorithms_and_metrics_pass_for_both_trainings(caller, algorithms, metric):
    caller(algorithms, metric)


@pytest.mark.parametrize("options, parsed", [
    ({}, {}),
    ({"seed": Decimal(7)}, {"seed": 7}),
    ({"max_scoring_us": Decimal(20)}, {"max_scoring_us": 20.0}),
    ({"ensemble": False, "deploy": "never"}, {"ensemble": False, "deploy": "never"}),
])
def test_options_are_parsed(options, parsed):
    assert TrainRequest("churn", "t", "y", options=options).checked_options() == parsed


@pytest.mark.parametrize("value, expected", [(Decimal(3), 3), (Decimal("0.5"), 0.5), ("x", "x"), (True, True)])
def test_jsonb_numbers(value, expected):
    assert number("k", value) == expected and type(number("k", value)) is type(expected)


def test_the_fingerprint_of_a_request_ignores_force_and_orders_lists():
    features = [Feature("a", NUMERIC, "float8"), Feature("b", CATEGORY, "text")]
    r = TrainRequest("churn", "t", "y", algorithms=["linear", "lightgbm"], budget_seconds=5, exclude=["z", "id"])
    assert r.fingerprint(features, {"force": True, "seed": 7}) == {
        "features": ["a", "b"], "target": "y", "task": None, "algorithms": ["lightgbm", "linear"],
        "budget_seconds": 5.0, "metric": None, "test_size": 0.2, "exclude": ["id", "z"], "options": {"seed": 7}}
    assert TrainRequest("p", "t", "y", task="forecast").forecast and not r.forecast


# --- the data checks before the search --------------------------------------------------------------

N = 200
RNG = np.random.default_rng(0)
LABELS = np.array(["yes", "no"] * (N // 2), dtype=object)
NOISE = RNG.normal(size=N)


def _verdict(columns: dict, y=LABELS, task="binary"):
    features = [Feature(name, NUMERIC if values.dtype != object else CATEGORY,
                        "float8" if values.dtype != object else "text") for name, values in columns.items()]
    return quality.check_training_data(features, columns, N, "y", "text", y, task)


@pytest.mark.parametrize("columns, notices, blocking", [
    ({"x": NOISE}, [], None),
    ({"x": NOISE, "flat": np.ones(N)}, ['data quality: column "flat": a single value (1.0)'], None),
    ({"x": NOISE, "empty": np.full(N, np.nan)}, [], None),  # training refuses it in its own words
    ({"x": NOISE, "copy": np.where(LABELS == "yes", 1.0, 0.0)}, ['data quality: column "copy" is a copy'],
     'column "copy" is a copy of the target'),
    ({"x": NOISE, "mail": np.array([f"u{i}@example.com" for i in range(N)], dtype=object)},
     ['data quality: column "mail"'], None),
])
def test_data_checks(columns, notices, blocking):
    verdict = _verdict(columns)
    assert len(verdict.notices) == len(notices)
    for got, want in zip(verdict.notices, notices):
        assert got.startswith(want), got
    if blocking is None:
        assert verdict.error is None
    else:
        assert blocking in verdict.error.message and verdict.error.sqlstate == DATA_EXCEPTION
    assert verdict.report["rows"] == N and [c["name"] for c in verdict.report["columns"]][-1] == "y"


def test_an_integer_identifier_is_left_to_the_training_to_report():
    ids = np.arange(1, N + 1, dtype=float)
    features = [Feature("id", NUMERIC, "int4"), Feature("x", NUMERIC, "float8")]
    verdict = quality.check_training_data(features, {"id": ids, "x": NOISE}, N, "y", "text", LABELS, "binary")
    assert not verdict.notices and any(w["code"] == "id_like" for w in verdict.report["columns"][0]["warnings"])


@pytest.mark.parametrize("pg_type, kind", [("float8", NUMERIC), ("int4", NUMERIC), ("bool", CATEGORY),
                                           ("text", CATEGORY)])
def test_target_kind(pg_type, kind):
    assert quality.target_kind(pg_type) == kind


# --- the deployment gate ----------------------------------------------------------------------------

V1, V2 = {"id": 1, "version": 1}, {"id": 2, "version": 2}
AUC = gate.holdout("roc_auc")


@pytest.mark.parametrize("comparison, mode, champion, before, champion_score, score, deploy, why", [
    (AUC, "never", None, None, None, 0.9, False, "options.deploy is 'never'"),
    (AUC, "auto", None, None, None, 0.9, True, "first model of the project"),
    (AUC, "auto", V2, V1, 0.8, 0.9, False, "another model was deployed while this one trained"),
    (AUC, "auto", V1, None, 0.8, 0.9, False, "another model was deployed while this one trained"),
    (AUC, "auto", V1, V1, None, 0.9, False,
     "the deployed version 1 cannot be scored on this holdout (other classes or columns); deploy explicitly"),
    (AUC, "auto", V1, V1, 0.8, 0.9, True, "roc_auc 0.9000 vs deployed version 1's 0.8000 on the same holdout"),
    (AUC, "auto", V1, V1, 0.9, 0.9, False,
     "roc_auc 0.9000 vs deployed version 1's 0.9000 on the same holdout: not better"),
    (AUC, "auto", V1, V1, 0.8, float("nan"), False, "not better"),
    (gate.holdout("rmse"), "auto", V1, V1, 2.0, 1.5, True, "rmse 1.5000 vs deployed version 1's 2.0000"),
    (gate.holdout("rmse"), "auto", V1, V1, 1.0, 1.5, False, ": not better"),
    (gate.BACKTEST, "auto", V1, V1, 1.2, 0.9, True,
     "backtest MASE 0.9000 vs deployed version 1's recipe 1.2000 on the same windows"),
    (gate.BACKTEST, "auto", V1, V1, 0.8, 0.9, False, "on the same windows: not better"),
    (gate.BACKTEST, "auto", V1, V1, None, 0.9, False,
     "the deployed version 1 cannot be backtested on these windows (its members were not among this "
     "training's candidates); deploy explicitly"),
    (gate.BACKTEST, "never", V1, V1, 2.0, 0.9, False, "options.deploy is 'never'"),
])
def test_gate(comparison, mode, champion, before, champion_score, score, deploy, why):
    decision = gate.decide(comparison, mode, champion, before, champion_score, score)
    assert decision["deploy"] is deploy and why in decision["why"]
    if champion is not None and mode != "never":
        assert decision["champion_version"] == champion["version"]


# --- lineage and drift rows -------------------------------------------------------------------------

def test_the_data_fingerprint_follows_the_values_not_the_column_order():
    from sqlml.registry.lineage import fingerprint

    a, b = np.array([1.0, 2.0]), np.array(["x", None], dtype=object)
    assert fingerprint(2, {"a": a, "b": b}, [0, 1]) == fingerprint(2, {"b": b, "a": a}, [0, 1])
    assert len({fingerprint(2, {"a": a, "b": b}, [0, 1]), fingerprint(2, {"a": a + 1, "b": b}, [0, 1]),
                fingerprint(2, {"a": a, "b": b}, [1, 0]), fingerprint(3, {"a": a, "b": b}, [0, 1])}) == 4


@pytest.mark.parametrize("moderate, major", [(None, 0.25), (0.3, 0.2), (0, 0.25), (-0.1, 0.25)])
def test_drift_thresholds_must_be_ordered(moderate, major):
    from sqlml.monitor import drift

    with pytest.raises(SqlmlError) as e:
        drift.check_thresholds(moderate, major)
    assert e.value.sqlstate == INVALID_PARAMETER and "are not ordered" in e.value.message


@pytest.mark.parametrize("psi, level", [(0.05, "none"), (0.15, "moderate"), (0.3, "major")])
def test_drift_row(psi, level):
    from sqlml.monitor import drift

    r = drift.row("price", "feature", {"psi": psi}, 10, 0.1, 0.25)
    assert r == {"feature": "price", "what": "feature", "psi": psi, "drift": level, "rows": 10,
                 "detail": {"psi": psi, "moderate": 0.1, "major": 0.25}}
