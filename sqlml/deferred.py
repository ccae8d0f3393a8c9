"""Heavy modules that libraries import eagerly but a training rarely uses, imported at first use instead.

``import sklearn`` imports ``scipy.stats`` (through ``sklearn.utils.fixes``), and ``sklearn.metrics``,
``sklearn.linear_model`` and ``sklearn.model_selection`` take ``rankdata`` and ``gmean`` from it:
measured with ``python -X importtime``, ``scipy.stats`` is more than half of what a cold backend
spends importing the stack of a short training (its distributions are built at import), although
no estimator of the portfolio calls it in a fit. ``defer_scipy_stats()`` puts a stand-in in
``sys.modules``: names taken from it while it stands in are callables that import the real
module at their first call, or first attribute read, and forward to it; reading anything else
from the stand-in imports it as well. After that first use everything is the real module.

Only the training's entry calls it, before anything imports scikit-learn; where scipy.stats is
already imported it does nothing.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types

_NAME = "scipy.stats"
# The names scikit-learn, LightGBM, XGBoost, CatBoost and skl2onnx take from scipy.stats at import (all
# called inside functions, never subclassed or used in isinstance). Any other name, e.g. a class a
# library would subclass at import, loads the real module: deferring it could not be transparent.
DEFERRABLE = frozenset({"chi2", "gmean", "rankdata", "spearmanr"})
_lock = threading.RLock()


class _Deferred:
    """A name of the deferred module, resolved at its first use."""

    def __init__(self, module: _StandIn, name: str):
        self._module, self._name = module, name

    def _target(self):
        return getattr(self._module._real(), self._name)

    def __call__(self, *args, **kwargs):
        return self._target()(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._target(), name)

    def __repr__(self):
        return f"<deferred {_NAME}.{self._name}>"


class _StandIn(types.ModuleType):
    """``scipy.stats`` until first used."""

    def __init__(self):
        super().__init__(_NAME)
        self.__dict__["_loaded"] = None
        self.__dict__["__spec__"] = None  # read by every ``import scipy.stats``: not a reason to load it

    def _real(self):
        with _lock:
            if self._loaded is None:
                if sys.modules.get(_NAME) is self:
                    del sys.modules[_NAME]
                real = importlib.import_module(_NAME)
                sys.modules["scipy"].stats = real
                self.__dict__["_loaded"] = real
            return self._loaded

    def __getattr__(self, name):
        importing = self._loaded is None and _importing()
        if name == "__path__" and importing:  # ``from scipy.stats import x`` asks whether it is a package:
            raise AttributeError(name)  # no, so that x is read from the stand-in
        if importing and name in DEFERRABLE:
            return _Deferred(self, name)  # ``from scipy.stats import rankdata`` while a module loads
        return getattr(self._real(), name)  # submodule imports (they read __path__ from importlib) too


def _importing() -> bool:
    """True while a module's top level runs (a ``from ... import`` there): the caller's caller's
    frame is a module's code."""
    frame = sys._getframe(2)
    return frame is not None and frame.f_code.co_name == "<module>"


def defer_scipy_stats() -> bool:
    """Stand in for ``scipy.stats`` until it is used; False if it is already imported (or scipy is missing)."""
    with _lock:
        if _NAME in sys.modules:
            return False
        try:
            import scipy
        except ImportError:
            return False
        stand_in = _StandIn()
        sys.modules[_NAME] = stand_in
        scipy.stats = stand_in
        return True
