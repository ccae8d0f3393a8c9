"""Real datasets that ship inside installed packages (no download at run time), as DataFrames.

ISLP's CSVs (``pip install --no-deps ISLP==0.6.0``; `make bench-automl` installs it) and
scikit-learn's bundled loaders. Each entry: name -> (DataFrame with an ``id`` column, target,
task). Categorical columns are text; where a dataset has no missing values, a seeded 5% of some
feature cells are blanked, so that the comparison covers missing values too (the same cells for
both systems).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"


def _islp(name: str) -> pd.DataFrame:
    import ISLP

    return pd.read_csv(Path(ISLP.__file__).parent / "data" / f"{name}.csv")


def _snake(df: pd.DataFrame) -> pd.DataFrame:
    df = df.rename(columns=lambda c: re.sub(r"[^a-z0-9]+", "_", str(c).lower()).strip("_") or "col")
    return df.loc[:, ~df.columns.duplicated()]


def _blank(df: pd.DataFrame, columns, share=0.05, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = df.copy()
    for c in columns:
        df.loc[rng.random(len(df)) < share, c] = np.nan if df[c].dtype.kind in "fi" else None
    return df


def default():
    df = _snake(_islp("Default"))
    df["default"] = df["default"].astype(str)
    return _blank(df, ["balance", "income", "student"]), "default", BINARY


def caravan():
    df = _snake(_islp("Caravan"))
    return _blank(df, ["mostype", "maanthui", "mgemleef"]), "purchase", BINARY


def oj():
    df = _snake(_islp("OJ"))
    for c in ("store7", "storeid", "store"):
        if c in df:
            df[c] = df[c].astype(str)
    return _blank(df, ["pricech", "pricemm", "loyalch"]), "purchase", BINARY


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    df = pd.DataFrame(d.data, columns=[f"px{i}" for i in range(d.data.shape[1])])
    df["digit"] = [f"d{t}" for t in d.target]
    return _blank(df, [f"px{i}" for i in (20, 28, 36, 44)]), "digit", MULTICLASS


def wage_education():
    df = _snake(_islp("Wage")).drop(columns=["logwage"])
    df["education"] = df["education"].astype(str)
    return _blank(df, ["age", "wage", "health_ins"]), "education", MULTICLASS


def wage():
    df = _snake(_islp("Wage")).drop(columns=["logwage"])
    return _blank(df, ["age", "education", "jobclass"]), "wage", REGRESSION


def bikeshare():
    df = _snake(_islp("Bikeshare")).drop(columns=["casual", "registered"], errors="ignore")
    for c in ("mnth", "weathersit", "season"):
        if c in df:
            df[c] = df[c].astype(str)
    return _blank(df, ["temp", "hum", "windspeed", "weathersit"]), "bikers", REGRESSION


def nyse():
    df = _snake(_islp("NYSE"))
    df = df.drop(columns=[c for c in ("date", "train") if c in df])
    df["day_of_week"] = df["day_of_week"].astype(str)
    return _blank(df, ["dj_return", "log_volatility"]), "log_volume", REGRESSION


DATASETS = {f.__name__: f for f in (default, caravan, oj, digits, wage_education, wage, bikeshare, nyse)}


def load(name: str):
    """(DataFrame with id first, target, task)."""
    df, target, task = DATASETS[name]()
    df = df.reset_index(drop=True)
    df = df.drop(columns=[c for c in df.columns if c.startswith("unnamed")], errors="ignore")
    df.insert(0, "id", np.arange(1, len(df) + 1))
    for c in df.columns:
        if df[c].dtype == bool:
            df[c] = df[c].astype(str)
        elif df[c].dtype.kind not in "fi":
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df, target, task
