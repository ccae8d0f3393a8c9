"""What a user asks of ``sqlml.train``: its ten arguments as one value, and their validation.

Pure: everything here is checked before any data is read (the relation is the server's to parse,
after the caller's right to train is checked). The server builds a :class:`TrainRequest` at the SQL
entry point and hands it down whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from sqlml.errors import INVALID_PARAMETER, SqlmlError

PROJECT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}")
MIN_BUDGET, MAX_BUDGET = 1.0, 86400.0
MAX_ROWS = 2**63 - 1  # a bigint LIMIT
OPTIONS = {"seed": int, "deploy": str, "ensemble": bool, "max_rows": int, "n_estimators": int, "refit_all": bool,
           "force": bool, "max_scoring_us": float, "bagging": bool, "folds": int}
FORECAST = "forecast"  # the task with its own orchestration (``sqlml.forecast``)


@dataclass(frozen=True)
class TrainRequest:
    """The arguments of ``sqlml.train`` as the SQL function passes them (``time_budget`` in seconds;
    ``options`` as the jsonb's dict, numbers as Decimal)."""

    project: str
    relation: str
    target: str
    task: str | None = None
    algorithms: list | None = None
    budget_seconds: float = 60.0
    metric: str | None = None
    test_size: float = 0.2
    exclude: list | None = None
    options: dict | None = None

    @property
    def forecast(self) -> bool:
        return self.task == FORECAST

    def checked_options(self) -> dict:
        """Validate everything that needs no data (tabular tasks); returns the parsed options."""
        return check_arguments(self.project, self.target, self.task, self.algorithms, self.budget_seconds,
                               self.metric, self.test_size, self.exclude, self.options)

    def fingerprint(self, features: list, options: dict) -> dict:
        """What decides a training besides its data: two trainings with the same request on data with
        the same fingerprint would search the same space for the same time (``force`` aside).
        ``features``: the columns it trains on, after the data checks; ``options``: as checked."""
        return {"features": [f.name for f in features], "target": self.target, "task": self.task,
                "algorithms": sorted(self.algorithms) if self.algorithms else None,
                "budget_seconds": float(self.budget_seconds), "metric": self.metric,
                "test_size": float(self.test_size), "exclude": sorted(self.exclude or []),
                "options": {k: v for k, v in sorted(options.items()) if k != "force"}}


def check_common(project, target, budget_seconds) -> None:
    """What every training checks, whatever its task: the project name, the target, the budget."""
    if project is None or not PROJECT_NAME.fullmatch(str(project)):  # fullmatch: "$" would let a final newline by
        raise SqlmlError(f'invalid project name "{project}"',
                         hint="use 1-63 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'",
                         sqlstate=INVALID_PARAMETER)
    if target is None or not str(target).strip():
        raise SqlmlError("target is empty", hint="name the column to predict", sqlstate=INVALID_PARAMETER)
    if budget_seconds is None or not math.isfinite(budget_seconds) or not MIN_BUDGET <= budget_seconds <= MAX_BUDGET:
        raise SqlmlError(f"time_budget of {budget_seconds} seconds is out of range",
                         hint="pass an interval between 1 second and 24 hours, such as '60 seconds'",
                         sqlstate=INVALID_PARAMETER)


def check_algorithms(algorithms, known, kind: str, null_means: str) -> None:
    """``algorithms`` as the user passed it: NULL (``null_means`` what then runs) or a non-empty list
    of names in ``known``; ``kind`` names one in the message ("algorithm", "forecasting algorithm")."""
    for a in algorithms or []:
        if a not in known:
            raise SqlmlError(f'unknown {kind} "{a}"', hint=f"use any of: {', '.join(known)}",
                             sqlstate=INVALID_PARAMETER)
    if algorithms is not None and not algorithms:
        raise SqlmlError("algorithms is empty", hint=f"pass NULL for {null_means}, or name some",
                         sqlstate=INVALID_PARAMETER)


def check_metric(metric, known, task: str | None = None, hint: str | None = None) -> None:
    """``metric`` as the user passed it: NULL (the task's default) or one of ``known``. ``task``
    ("forecasting") when ``known`` are that task's metrics, so that the message names it; ``hint``
    instead of the list of ``known``."""
    if metric is not None and metric not in known:
        raise SqlmlError(f'metric "{metric}" is not a {task} metric' if task else f'unknown metric "{metric}"',
                         hint=hint or f"use one of: {', '.join(known)}", sqlstate=INVALID_PARAMETER)


def check_arguments(project, target, task, algorithms, budget_seconds, metric, test_size, exclude, options) -> dict:
    """Validate everything that needs no data; returns the parsed options."""
    from sqlml.automl import metrics
    from sqlml.automl.estimators import SPECS
    from sqlml.data.schema import MAX_SEED, TASKS

    check_common(project, target, budget_seconds)
    if task is not None and task not in TASKS:
        raise SqlmlError(f'unknown task "{task}"', sqlstate=INVALID_PARAMETER,
                         hint=f"use one of: {', '.join(TASKS)}, forecast, or NULL to infer it")
    check_algorithms(algorithms, SPECS, "algorithm", "the AutoML portfolio")
    check_metric(metric, metrics.HIGHER_IS_BETTER)  # the task's own metrics once it is known (Task.check_metric)
    if test_size is None or not 0.05 <= test_size <= 0.5:
        raise SqlmlError(f"test_size is {test_size}; it must be between 0.05 and 0.5", sqlstate=INVALID_PARAMETER)
    options = options or {}
    if not isinstance(options, dict):
        raise SqlmlError("options must be a JSON object", hint="""for example '{"seed": 7}'""",
                         sqlstate=INVALID_PARAMETER)
    options = {k: number(k, v) for k, v in options.items()}
    for key, value in options.items():
        if key not in OPTIONS:
            raise SqlmlError(f'unknown option "{key}"', hint=f"options are: {', '.join(OPTIONS)}",
                             sqlstate=INVALID_PARAMETER)
        if OPTIONS[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = options[key] = float(value)
        if not isinstance(value, OPTIONS[key]) or (OPTIONS[key] is int and isinstance(value, bool)):
            raise SqlmlError(f'option "{key}" must be {OPTIONS[key].__name__}, got {value!r}',
                             sqlstate=INVALID_PARAMETER)
    if not 1 <= options.get("n_estimators", 1) <= 10000:
        raise SqlmlError(f'option "n_estimators" is {options["n_estimators"]}', sqlstate=INVALID_PARAMETER,
                         hint="pass the number of boosting rounds or trees, between 1 and 10000 (omit it to search it)")
    if not 1 <= options.get("folds", 1) <= 10:
        raise SqlmlError(f'option "folds" must be between 1 and 10, got {options["folds"]}',
                         sqlstate=INVALID_PARAMETER,
                         hint="pass the folds of cross-validation (1: one holdout), "
                              "or omit it to let the search choose")
    if options.get("max_scoring_us", 1.0) <= 0:
        raise SqlmlError(f'option "max_scoring_us" must be positive, got {options["max_scoring_us"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass the most one row may cost to score, in microseconds")
    if not 1 <= options.get("max_rows", 1) <= MAX_ROWS:
        raise SqlmlError(f'option "max_rows" must be between 1 and {MAX_ROWS}, got {options["max_rows"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass the number of rows to sample for training, or omit it")
    if not 0 <= options.get("seed", 0) <= MAX_SEED:
        raise SqlmlError(f'option "seed" must be between 0 and {MAX_SEED}, got {options["seed"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass a small integer such as 7, or omit it (42)")
    if options.get("deploy", "auto") not in ("auto", "never"):
        raise SqlmlError(f'option "deploy" is {options["deploy"]!r}', hint="use 'auto' (through the gate) or 'never'",
                         sqlstate=INVALID_PARAMETER)
    return options


def number(key: str, value):
    """jsonb numbers arrive as Decimal: integers become int, others float. An integer beyond 64 bits
    (1e400 is one) is no option's value, and would overflow float() or str() further on."""
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            return float(value)
        if abs(value) > MAX_ROWS:
            raise SqlmlError(f'option "{key}" is {value:.3E}, beyond 64 bits', sqlstate=INVALID_PARAMETER,
                             hint="pass a number in the option's range, or omit it")
        return int(value)
    return value
