"""sqlml.deferred: scipy.stats imported at its first use, not when scikit-learn is imported."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys
from sqlml import deferred
deferred.defer_scipy_stats()
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
X = np.random.default_rng(0).random((200, 3)); y = (X[:, 0] > 0.5).astype(int)
auc = roc_auc_score(y, LogisticRegression().fit(X, y).predict_proba(X)[:, 1])
before = type(sys.modules["scipy.stats"]).__name__
import sklearn.metrics._ranking as ranking  # took rankdata from the stand-in: a deferred name
ranks = ranking.rankdata([3.0, 1.0, 2.0]).tolist()
after = type(sys.modules["scipy.stats"]).__name__
from scipy.stats.mstats import mquantiles  # a submodule import finds the real package
import scipy.stats
print(json.dumps([auc, before, ranks, after, mquantiles([1, 2, 3, 4]).tolist(), scipy.stats.norm.cdf(0.0),
                  deferred.defer_scipy_stats()]))
"""


def test_scipy_stats_waits_for_its_first_use_then_is_the_real_module():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    auc, before, ranks, after, quantiles, cdf, again = json.loads(out.stdout)
    assert auc > 0.99
    assert before == "_StandIn"  # scikit-learn imported and a model fitted and scored: scipy.stats not loaded
    assert ranks == [3.0, 1.0, 2.0] and after == "module"
    assert quantiles == [1.45, 2.5, 3.55] and cdf == 0.5
    assert again is False  # already imported: nothing to defer


SUBCLASS = """
import json, sys, types
from sqlml import deferred
deferred.defer_scipy_stats()
# a library that subclasses a scipy.stats class at import: not a deferrable name, so the real module loads
library = types.ModuleType("library")
exec("from scipy.stats import rv_continuous\\n"
     "class Flat(rv_continuous):\\n    def _pdf(self, x):\\n        return 1.0 + 0 * x", library.__dict__)
library.__dict__["__name__"] = "library"
print(json.dumps([type(sys.modules["scipy.stats"]).__name__, float(library.Flat(a=0, b=1).cdf(0.25))]))
"""


def test_a_class_taken_at_import_loads_the_real_module():
    out = subprocess.run([sys.executable, "-c", SUBCLASS], capture_output=True, text=True, check=True)
    loaded, cdf = json.loads(out.stdout)
    assert loaded == "module" and abs(cdf - 0.25) < 1e-9
