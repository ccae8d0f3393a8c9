"""The data checks a training runs before its search. Pure: raw columns in, a verdict out.

The data profile (``sqlml.data.profile``) of the features and the target becomes one NOTICE per
warning a user should read, and an error when a problem blocks the training (a feature that is a
copy of the target). Warnings the training reports itself in its own words are left out: empty and
infinite columns (refused with their own message), and integer identifiers, which it drops
("is not used: it identifies rows").
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlml.data import profile as profiling
from sqlml.data.columns import identifier
from sqlml.data.schema import CATEGORY, NUMERIC, Feature, kind_of
from sqlml.errors import DATA_EXCEPTION, SqlmlError

SILENT_AT_TRAINING = {"empty", "infinite"}  # training refuses these itself, with its own message


def target_kind(pg_type: str) -> str:
    """How a target column is read: numbers as numbers, booleans and text as text labels."""
    return NUMERIC if kind_of(pg_type) == NUMERIC else CATEGORY


@dataclass(frozen=True)
class Verdict:
    report: dict  # the profile, stored with the model
    notices: list[str]  # one "data quality: ..." line per warning to show
    error: SqlmlError | None  # set when a problem blocks the training


def check_training_data(features: list[Feature], raw: dict, n: int, target: str, target_pg_type: str, y_raw,
                        task: str) -> Verdict:
    """Profile ``n`` training rows: ``raw`` holds each feature's column (``sqlml.data.convert``
    layouts), ``y_raw`` the target's; ``task`` is the training's (given or inferred)."""
    columns = [profiling.Column(f.name, f.pg_type, f.kind, raw[f.name]) for f in features]
    columns.append(profiling.Column(target, target_pg_type, target_kind(target_pg_type), y_raw))
    report = profiling.profile(n, columns, target=target, task=task)
    dropped_ids = {f.name for f in features if f.kind != CATEGORY and identifier(f, raw[f.name], n)}
    notices = []
    for col in report["columns"]:
        for w in col["warnings"]:
            if w["code"] in SILENT_AT_TRAINING or (w["code"] == "id_like" and (col["kind"] == CATEGORY
                                                                              or col["name"] in dropped_ids)):
                continue
            subject = f'column "{col["name"]}"'
            message = w["message"] if w["message"].startswith(subject) else subject + ": " + w["message"]
            notices.append(f"data quality: {message}")
    error = SqlmlError("the training data has a blocking problem: " + "; ".join(report["blocking"]),
                       sqlstate=DATA_EXCEPTION,
                       hint="see SELECT * FROM sqlml.profile(relation, target)") if report["blocking"] else None
    return Verdict(report, notices, error)
