"""The portfolio learned offline (bench/learn_portfolio.py), shipped as sqlml/automl/portfolio.json,
and the benchmark's split it was learned from."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sqlml.automl import portfolio
from sqlml.automl.estimators import SPECS
from sqlml.data.task import task_of

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import datasets  # noqa: E402
import generated  # noqa: E402
import learn_portfolio  # noqa: E402


def test_learned_configurations_lie_in_their_estimators_spaces():
    learned = portfolio.learned()
    assert learned and sum(len(c) for c in learned.values()) == len(portfolio.order())
    for name, configs in learned.items():
        spec = SPECS[name]
        domains = {h.name: h for h in spec.space}
        for params in configs:
            for key, value in params.items():
                if key == "n_estimators" and key not in domains:
                    continue
                assert domains[key].clip(value) == value, (name, key, value)
            for task in spec.tasks:  # every configuration builds an estimator
                assert spec.build(spec.params_for(params, task_of(task)), task_of(task), 1, 0) is not None


def test_order_is_the_greedy_order_and_improves():
    order = portfolio.order()
    losses = [e["mean_normalised_loss"] for e in order]
    assert losses == sorted(losses, reverse=True)
    assert all(e["relative_cost"] > 0 and not math.isnan(e["relative_cost"]) for e in order)
    # learned from the tuning part only
    import json

    data = json.loads(portfolio.PATH.read_text())
    assert set(data["learned_from"]) <= set(datasets.TUNING)


def test_learned_returns_copies():
    first = portfolio.learned()
    name = next(iter(first))
    first[name][0]["mutated"] = True
    assert "mutated" not in portfolio.learned()[name][0]


def test_greedy_covers_datasets_before_repeating_strength():
    # candidate 0 and 1 are each best on one dataset; 2 is good on average but best nowhere
    losses = np.array([[1.0, 3.0, 1.5, 4.0],
                       [3.0, 1.0, 1.5, 4.0],
                       [2.0, 2.0, 1.6, 4.0]])
    norm = learn_portfolio.normalise(losses)
    assert norm.min(axis=1).tolist() == [0.0, 0.0, 0.0]
    picks = learn_portfolio.greedy(norm, cost=np.ones(4), size=3)
    assert [j for j, _ in picks][:1] == [2]  # alone, the best on average
    assert {j for j, _ in picks[1:]} == {0, 1}
    assert picks[-1][1] == 0.0


def test_greedy_ties_go_to_the_cheaper_configuration():
    losses = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]])
    picks = learn_portfolio.greedy(learn_portfolio.normalise(losses), cost=np.array([5.0, 1.0, 1.0]), size=1)
    assert picks[0][0] == 1


def test_split_is_fixed_disjoint_and_spans_the_kinds():
    assert not set(datasets.TUNING) & set(datasets.HELDOUT)
    assert set(datasets.TUNING) | set(datasets.HELDOUT) == set(datasets.DATASETS) == set(datasets.KIND)
    assert len(datasets.DATASETS) >= 25


@pytest.mark.parametrize("make", [generated.orders, generated.churn, generated.tickets])
def test_generated_tables_are_the_same_for_the_same_seed(make):
    a, b = make(rows=2000), make(rows=2000)
    assert a.equals(b)
    assert not a.equals(make(rows=2000, seed=7))


def test_the_estimators_it_covers_take_their_portfolio_from_it():
    learned = portfolio.learned()
    assert {"lightgbm", "linear"} <= set(learned)
    for name, configs in learned.items():
        assert SPECS[name].portfolio == configs
    # the hand-written seeds of the grid are candidates only, no longer what the search tries
    seeds = [p for a, p in learn_portfolio.SEEDS if a == "lightgbm"]
    assert SPECS["lightgbm"].portfolio != tuple(seeds)
    assert all((a, p) in learn_portfolio.CANDIDATES for a, p in learn_portfolio.SEEDS)


def test_the_learned_order_comes_first_then_the_estimators_it_does_not_cover():
    from sqlml.automl import policy

    order = portfolio.order()
    specs = sorted((SPECS[a] for a in ("lightgbm", "linear", "random_forest", "extra_trees")), key=lambda s: s.cost)
    entries = policy.portfolio_entries(specs, [e["algorithm"] for e in order])
    assert [(s.name, p) for s, p in entries[:len(order)]] == [(e["algorithm"], e["params"]) for e in order]
    rest = entries[len(order):]
    # the forests' hand-written entries, interleaved cheapest estimator first
    assert [s.name for s, _ in rest] == ["extra_trees", "random_forest", "extra_trees", "random_forest",
                                         "extra_trees"]
    assert [p for s, p in rest if s.name == "random_forest"] == list(SPECS["random_forest"].portfolio)
    # every entry once
    assert len(entries) == sum(len(s.portfolio) for s in specs)


def test_turns_of_estimators_not_in_the_search_pass():
    from sqlml.automl import policy

    order = portfolio.order()
    entries = policy.portfolio_entries([SPECS["lightgbm"]], [e["algorithm"] for e in order])
    assert [p for _, p in entries] == [e["params"] for e in order if e["algorithm"] == "lightgbm"]
