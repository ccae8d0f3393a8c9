"""The deployment gate: does a version just registered (trained or imported) replace the deployed one?

Pure: the server hands it the champion as it stood before the training and at the registry write,
and both scores on the same data (a tabular holdout, a forecast's backtest windows). A challenger
is deployed when the project has no champion, or when it beats the champion on that data; never
when another model was deployed meanwhile, nor when the champion cannot be scored on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    """How challenger and champion are measured on the same data, and how the decision says it."""

    measure: str  # what the reason names the score by: "auc", "backtest MASE"
    better: Callable[[float, float], bool]  # (challenger, champion) -> the challenger is strictly better
    where: str  # the data both were scored on: "on the same holdout"
    unscorable: str  # why a champion without a score on that data cannot be compared
    champion_is: str = ""  # what of the champion was scored, before its score: "recipe "


def holdout(metric: str) -> Comparison:
    """A tabular model's: ``metric`` on the training's holdout (an import's: on its relation)."""
    from sqlml.automl import metrics

    return Comparison(metric, lambda a, b: metrics.better(metric, a, b), "on the same holdout",
                      "cannot be scored on this holdout (other classes or columns)")


BACKTEST = Comparison(
    "backtest MASE", lambda a, b: a < b, "on the same windows",
    "cannot be backtested on these windows (its members were not among this training's candidates)",
    champion_is="recipe ")


def decide(comparison: Comparison, mode: str, champion: dict | None, champion_before: dict | None,
           champion_score: float | None, score: float) -> dict:
    """{"deploy": bool, "why": text, and the champion's version and scores when one was compared}.

    ``mode``: options.deploy ('auto' or 'never'); ``champion``: the deployed model ({"id", "version"})
    when the version was registered, ``champion_before`` when the training started (None: none);
    ``champion_score``: the champion's score on the challenger's data (None: it cannot be scored on it).
    """
    if mode == "never":
        return {"deploy": False, "why": "options.deploy is 'never'"}
    if champion is None:
        return {"deploy": True, "why": "first model of the project"}
    version = champion["version"]
    if champion_before is None or champion["id"] != champion_before["id"]:
        return {"deploy": False, "why": "another model was deployed while this one trained",
                "champion_version": version}
    if champion_score is None:
        return {"deploy": False, "champion_version": version,
                "why": f"the deployed version {version} {comparison.unscorable}; deploy explicitly"}
    won = comparison.better(score, champion_score)
    return {"deploy": bool(won), "champion_version": version, "champion_score": champion_score,
            "challenger_score": score,
            "why": f"{comparison.measure} {score:.4f} vs deployed version {version}'s {comparison.champion_is}"
                   f"{champion_score:.4f} {comparison.where}" + ("" if won else ": not better")}
