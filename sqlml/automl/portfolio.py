"""The portfolio learned offline from the benchmark's tuning part (``bench/learn_portfolio.py``),
shipped as package data (``portfolio.json`` beside this module).

:func:`learned` gives each estimator's configurations in the shape of ``EstimatorSpec.portfolio``
(a tuple of parameter dicts, in the order they were picked): the estimators it covers take their
portfolio from it (``sqlml.automl.learners``). :func:`order` gives the picks across estimators,
best first, each with its cost relative to the script's first seed (LightGBM, learning rate 0.1,
31 leaves): the order the search tries them in (``policy.portfolio_entries``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PATH = Path(__file__).with_name("portfolio.json")


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(PATH.read_text())


def learned() -> dict[str, tuple[dict, ...]]:
    """Estimator name -> its learned configurations (copies), in the order they were picked."""
    return {name: tuple(dict(p) for p in configs) for name, configs in _data()["portfolio"].items()}


def order() -> list[dict]:
    """[{"algorithm", "params", "relative_cost", "mean_normalised_loss"}], in the greedy order."""
    return [{**entry, "params": dict(entry["params"])} for entry in _data()["order"]]
