"""One AutoGluon fit and its test predictions, run by bench/automl_vs_flaml.py in AutoGluon's own venv
(`make bench-autogluon-venv`: AutoGluon 1.6 caps pandas < 2.4, the server stack pins pandas 3).

    .sqlml/ag-venv/bin/python bench/autogluon_run.py JOB_DIR

JOB_DIR holds train.csv, test.csv and job.json ({target, task, budget, presets, cores, columns:
{name: "number" | "text"}}); this writes JOB_DIR/result.json ({seconds, best, classes}) and
JOB_DIR/pred.npy (probabilities in ``classes`` order, or values). CPU only, without AutoGluon's
neural models (they need PyTorch, which its venv does not have).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

EVAL_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}
NEURAL = ["NN_TORCH", "FASTAI", "TABM", "REALMLP", "TABPFNV2", "MITRA", "TABICL", "TABDPT"]


def read(path: Path, columns: dict) -> pd.DataFrame:
    dtypes = {c: (float if kind == "number" else str) for c, kind in columns.items()}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])


def main(job_dir: str) -> None:
    from autogluon.tabular import TabularPredictor

    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    columns, target, task = job["columns"], job["target"], job["task"]
    train, test = read(job_dir / "train.csv", columns), read(job_dir / "test.csv", columns)
    predictor = TabularPredictor(label=target, problem_type=task, eval_metric=EVAL_METRIC[task],
                                 path=str(job_dir / "models"), verbosity=0)
    # Stacking presets check for stacked overfitting first (DyStack, a quarter of the time) in a
    # sub-fit that needs Ray; without it, 1.6.3's in-process fallback fails ("Learner is already
    # fit"). Off, the preset stacks as it would have when the check passes, with the whole budget.
    stacking = {"dynamic_stacking": False} if job["presets"] in ("best_quality", "high_quality", "good_quality") else {}
    start = time.monotonic()
    predictor.fit(train, time_limit=job["budget"], presets=job["presets"], num_cpus=job["cores"], num_gpus=0,
                  excluded_model_types=NEURAL, **stacking)
    seconds = time.monotonic() - start
    X = test.drop(columns=[target])
    classes = []
    if task == "regression":
        pred = np.asarray(predictor.predict(X), dtype=np.float64)
    else:
        proba = predictor.predict_proba(X)
        classes = [str(c) for c in proba.columns]
        pred = proba.to_numpy(dtype=np.float64)
    np.save(job_dir / "pred.npy", pred)
    (job_dir / "result.json").write_text(json.dumps({"seconds": seconds, "best": predictor.model_best,
                                                     "classes": classes}))


if __name__ == "__main__":
    main(sys.argv[1])
