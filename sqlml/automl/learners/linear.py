"""Linear models (scikit-learn): logistic regression for classes, ridge for values."""

from __future__ import annotations

from sqlml.automl.spec import LINEAR, SCALED, EstimatorSpec, Hyper


def build(params, task, threads, seed):
    if not task.classification:
        from sklearn.linear_model import Ridge

        return Ridge(alpha=params.get("alpha", 1.0), random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=params.get("C", 1.0), max_iter=params.get("max_iter", 500), random_state=seed)


def params_for(params: dict, task) -> dict:
    """C for classifiers, alpha for ridge."""
    return {k: v for k, v in params.items() if k == ("C" if task.classification else "alpha")}


SPECS = (
    EstimatorSpec(
        name="linear", family=LINEAR, encoding=SCALED, build=build, params_for=params_for, cost=0.3,
        library="sklearn",
        space=(Hyper("C", 1e-3, 1e3, log=True, always=True), Hyper("alpha", 1e-3, 1e3, log=True, always=True)),
        portfolio=({"C": 1.0, "alpha": 1.0}, {"C": 0.1, "alpha": 10.0}, {"C": 10.0, "alpha": 0.1}),
    ),
)
