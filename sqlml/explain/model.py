"""A model's explainer: built from the fitted pipeline at training time, stored beside its ONNX.

What the contributions explain (per row and output, ``contributions.sum() + base == raw output``):

  linear        the decision function: log-odds of the second class (binary), one logit per class
                (multiclass), the value (regression). Contribution of an encoded column
                ``coef * (x - E[x])``, E over the rows the model was fitted on.
  boosting      the raw score: log-odds (binary), one raw score per class (multiclass), the value.
  (lightgbm,    TreeSHAP (``sqlml.explain.treeshap``) on the trees the estimator's spec reads out of
  xgboost,      the fitted model (``add_tree_reader``), with the library's own covers (LightGBM's
  catboost)     data counts, what its ``pred_contrib`` uses; XGBoost's hessian sums; CatBoost's leaf
                weights).
  random forest, extra trees
                the average of the trees: probability of the second class (binary), of each class
                (multiclass), the value. A forest averages probabilities: it has no log-odds, its
                probability is its raw output. TreeSHAP (``sqlml.explain.treeshap``) on the trees
                and node covers kept at training time (ONNX's TreeEnsemble has no covers).
  ensemble      the weighted average (weights summing to 1) of its members' raw outputs as above:
                contributions are the same average of the members' contributions. (Soft voting
                averages probabilities, so this sum is not the ensemble's log-odds; it is what the
                members' margins say, each exact.)

Contributions are computed per encoded column (a one-hot category, a scaled number, an ordinal
code, a category's target mean for a class) and summed back to the model input, then to the
feature (a date's calendar parts, a vector's dimensions): one contribution per raw column.

Stored as one ``bytes`` (``to_bytes``): a JSON header and numpy arrays in an ``.npz``, read with
``allow_pickle=False`` (nothing in it runs code).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import MULTICLASS, FeatureSchema
from sqlml.explain.treeshap import NAN, Forest, Tree

FORMAT = 2  # 2: an encoded column may be a target mean ("means"), which format 1 readers do not know
READABLE = (1, 2)
_tree_readers: dict = {}  # library module name -> reader(estimator, outputs) -> (trees, scale)


def add_tree_reader(library: str, reader) -> None:
    """``reader(estimator, outputs)`` reads a fitted boosted model of ``library`` as ``(trees, scale)``:
    per tree a dict of node lists as ``_stack`` takes them (values of shape (nodes, outputs), in raw
    score units, the model's initial score added to the first tree of each output), and the factor
    the trees' sum is multiplied by. An estimator spec's ``explain_trees``, added with it to
    ``sqlml.automl.estimators``."""
    _tree_readers[library] = reader


@dataclass
class Encoding:
    """The columns a member's estimator sees, each made from one model input.

    ``columns``: ["num", input, fill or None, shift, scale] (``(fillna(x) - shift) / scale``),
    ["onehot", input, category], ["ordinal", input, [categories]] (code, NaN if unknown),
    ["means", input, {category: mean}, the mean of unknown ones] (target means)."""

    columns: list

    @classmethod
    def from_transformer(cls, ct) -> Encoding:
        """From a fitted ColumnTransformer of ``sqlml.automl.preprocess.build``."""
        cols = []
        for name, trans, inputs in ct.transformers_:
            if trans == "drop" or name == "remainder":
                continue
            if trans == "passthrough" or (type(trans).__name__ == "FunctionTransformer" and trans.func is None):
                cols += [["num", i, None, 0.0, 1.0] for i in inputs]
            elif hasattr(trans, "named_steps"):  # imputer [+ scaler]
                fill = trans.named_steps["impute"].statistics_
                scaler = trans.named_steps.get("scale")
                shift = scaler.mean_ if scaler is not None else np.zeros(len(inputs))
                scale = scaler.scale_ if scaler is not None else np.ones(len(inputs))
                cols += [["num", i, float(f), float(m), float(s)] for i, f, m, s in zip(inputs, fill, shift, scale)]
            elif type(trans).__name__ == "OneHotEncoder":
                cols += [["onehot", i, str(c)] for i, cats in zip(inputs, trans.categories_) for c in cats]
            elif type(trans).__name__ == "OrdinalEncoder":
                cols += [["ordinal", i, [str(c) for c in cats]] for i, cats in zip(inputs, trans.categories_)]
            elif type(trans).__name__ == "TargetMeans":
                cols += [["means", inputs[i], means, default] for i, means, default in trans.columns()]
            else:
                raise ValueError(f"no explanation for the preprocessing step {type(trans).__name__}")
        return cls(cols)

    def transform(self, inputs: dict, n: int) -> np.ndarray:
        """The encoded matrix (n, columns), float64, for model inputs (name -> array (n,))."""
        out = np.empty((n, len(self.columns)))
        for j, col in enumerate(self.columns):
            kind, name = col[0], col[1]
            x = inputs[name]
            if kind == "num":
                v = np.asarray(x, dtype=np.float64)
                if col[2] is not None:
                    v = np.where(np.isnan(v), col[2], v)
                out[:, j] = (v - col[3]) / col[4]
            elif kind == "onehot":
                out[:, j] = np.asarray(x, dtype=object) == col[2]
            elif kind == "means":
                means, default = col[2], col[3]
                out[:, j] = [means.get(v, default) for v in x]
            else:
                codes = {c: float(i) for i, c in enumerate(col[2])}
                out[:, j] = [codes.get(v, np.nan) for v in x]
        return out

    def sources(self) -> list[str]:
        return [c[1] for c in self.columns]


class Member:
    """One estimator behind its encoding: ``contributions(T) -> (n, columns, outputs)``, ``base``."""

    kind: str
    base: np.ndarray


class Linear(Member):
    kind = "linear"

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, center: np.ndarray):
        self.coef, self.intercept, self.center = np.atleast_2d(coef), np.atleast_1d(intercept), center
        self.base = self.intercept + self.coef @ center

    def contributions(self, T: np.ndarray, interrupt=None) -> np.ndarray:
        return (T - self.center)[:, :, None] * self.coef.T[None, :, :]

    def arrays(self) -> dict:
        return {"coef": self.coef, "intercept": self.intercept, "center": self.center}


class Trees(Member):
    """A sum of trees times ``scale`` (1 / trees for a forest's average, 1 for boosting), as node
    arrays stacked tree after tree (``counts`` nodes each). Categorical splits: ``cat_start`` and
    ``cat_count`` per node into ``cat_values`` (count 0 for numerical splits)."""

    kind = "trees"
    FIELDS = (
        "counts",
        "left",
        "right",
        "feature",
        "threshold",
        "value",
        "cover",
        "default_left",
        "missing",
        "cat_start",
        "cat_count",
        "cat_values",
    )

    def __init__(self, arrays: dict, scale: float, n_columns: int):
        self._arrays, self.scale, self.n_columns = arrays, scale, n_columns
        bounds = np.concatenate([[0], np.cumsum(arrays["counts"])])
        trees = []
        for s, e in zip(bounds[:-1], bounds[1:]):
            a = {k: arrays[k][s:e] for k in self.FIELDS[1:10]}
            cats = [
                None if c == 0 else arrays["cat_values"][st : st + c].tolist()
                for st, c in zip(a.pop("cat_start"), arrays["cat_count"][s:e])
            ]
            trees.append(Tree(**a, categories=cats))
        self.forest = Forest(trees, scale, n_columns)
        self.base = self.forest.base

    def contributions(self, T: np.ndarray, interrupt=None) -> np.ndarray:
        return self.forest.shap_values(T, interrupt=interrupt)

    def arrays(self) -> dict:
        return dict(self._arrays)


@dataclass
class Explanation:
    """Per row, feature and output: ``contributions`` (n, features, outputs); ``base`` (outputs,)."""

    contributions: np.ndarray
    base: np.ndarray

    def output(self) -> np.ndarray:
        """The raw output explained, (n, outputs)."""
        return self.contributions.sum(axis=1) + self.base


class Explainer:
    """Contributions per feature of a model's raw output (see the module docstring)."""

    def __init__(self, schema: FeatureSchema, members: list):
        """``members``: [(weight, Encoding, Member)], weights summing to 1."""
        self.schema, self.members = schema, members
        self.features = [f.name for f in schema.features]
        of_input = {i: k for k, f in enumerate(schema.features) for i in f.inputs}
        self.to_feature = [np.array([of_input[s] for s in enc.sources()]) for _, enc, _ in members]
        self.base = sum(w * m.base for w, _, m in members)

    @property
    def has_trees(self) -> bool:
        """Whether a member is a tree ensemble (explained by TreeSHAP, ``sqlml.explain.native``)."""
        return any(isinstance(m, Trees) for _, _, m in self.members)

    @property
    def outputs(self) -> list[str] | None:
        """Class labels of the outputs (multiclass), else None (one output)."""
        return [str(c) for c in self.schema.target.classes] if self.schema.target.task == MULTICLASS else None

    def explain(self, inputs: dict, n: int, interrupt=None) -> Explanation:
        """Contributions for ``n`` rows of model inputs (``sqlml.data.convert.model_inputs``);
        ``interrupt()``, if given, is called every so often during long work (it may raise)."""
        total = np.zeros((n, len(self.features), len(self.base)))
        for (w, enc, member), to_feature in zip(self.members, self.to_feature):
            c = member.contributions(enc.transform(inputs, n), interrupt)
            for j in range(c.shape[1]):
                total[:, to_feature[j], :] += w * c[:, j, :]
        return Explanation(total, self.base)

    def importance(self, inputs: dict, n: int) -> list[dict]:
        """Mean |contribution| per feature over the rows (summed over the outputs), largest first."""
        e = self.explain(inputs, n)
        imp = np.abs(e.contributions).mean(axis=0).sum(axis=1)
        return sorted(
            ({"feature": f, "importance": float(v)} for f, v in zip(self.features, imp)), key=lambda d: -d["importance"]
        )

    def to_bytes(self) -> bytes:
        header = {"format": FORMAT, "members": []}
        arrays = {}
        for i, (w, enc, member) in enumerate(self.members):
            entry = {"weight": w, "kind": member.kind, "columns": enc.columns}
            if isinstance(member, Trees):
                entry["scale"] = member.scale
            header["members"].append(entry)
            arrays.update({f"m{i}_{k}": v for k, v in member.arrays().items()})
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, schema: FeatureSchema) -> Explainer:
        data = np.load(io.BytesIO(blob), allow_pickle=False)
        header = json.loads(bytes(data["header"]).decode())
        if header.get("format") not in READABLE:
            raise ValueError(f"explainer format {header.get('format')} is not one of {READABLE}")
        members = []
        for i, entry in enumerate(header["members"]):
            a = {k[len(f"m{i}_") :]: data[k] for k in data.files if k.startswith(f"m{i}_")}
            enc = Encoding(entry["columns"])
            width = len(enc.columns)
            if entry["kind"] == "linear":
                member = Linear(a["coef"], a["intercept"], a["center"])
            else:
                member = Trees({k: a[k] for k in Trees.FIELDS}, entry["scale"], width)
            members.append((entry["weight"], enc, member))
        return cls(schema, members)


# --- building from a fitted model -------------------------------------------------------------------


def build(model, schema: FeatureSchema, background) -> Explainer:
    """The explainer of a fitted pipeline or voting ensemble of pipelines (``sqlml.automl``).

    ``background``: the model-input DataFrame the model was fitted on (for linear models' E[x])."""
    if hasattr(model, "estimators_") and hasattr(model, "named_estimators_"):  # Voting*
        weights = np.asarray(model.weights if model.weights is not None else np.ones(len(model.estimators_)), float)
        weights = weights / weights.sum()
        members = [(float(w), *_member(p, schema, background)) for w, p in zip(weights, model.estimators_)]
    else:
        members = [(1.0, *_member(model, schema, background))]
    return Explainer(schema, members)


def _outputs(schema: FeatureSchema) -> int:
    return len(schema.target.classes) if schema.target.task == MULTICLASS else 1


def _member(pipeline, schema: FeatureSchema, background):
    """(Encoding, Member) of a fitted Pipeline([("pre", ColumnTransformer), ("model", estimator)])."""
    pre, est = pipeline.named_steps["pre"], pipeline.named_steps["model"]
    enc = Encoding.from_transformer(pre)
    width = len(enc.columns)
    name = type(est).__name__
    reader = _tree_readers.get(type(est).__module__.split(".")[0])
    if reader is not None:
        trees, scale = reader(est, _outputs(schema))
        return enc, _stack(trees, scale, width)
    if hasattr(est, "estimators_") and hasattr(est.estimators_[0], "tree_"):
        return enc, _forest(est, schema, width)
    if hasattr(est, "coef_"):
        center = pre.transform(background).astype(np.float64).mean(axis=0)
        coef, intercept = np.atleast_2d(est.coef_), np.atleast_1d(est.intercept_)
        return enc, Linear(coef, intercept, center)
    raise ValueError(f"no explanation for {name}")


def _stack(trees: list[dict], scale: float, width: int) -> Trees:
    """A Trees member from per-tree node arrays (dicts of ``Trees.FIELDS[1:]`` but the categories,
    given as ``categories``: a list per node of codes or None)."""
    arrays = {"counts": np.array([len(t["left"]) for t in trees], dtype=np.int64)}
    for k in ("left", "right", "feature", "threshold", "value", "cover", "default_left", "missing"):
        arrays[k] = np.concatenate([np.asarray(t[k]) for t in trees])
    cats = [c for t in trees for c in t["categories"]]
    counts = np.array([0 if c is None else len(c) for c in cats], dtype=np.int64)
    arrays["cat_start"] = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    arrays["cat_count"] = counts
    arrays["cat_values"] = np.array([v for c in cats if c is not None for v in c], dtype=np.float64)
    for k, dtype in (
        ("left", np.int32),
        ("right", np.int32),
        ("feature", np.int32),
        ("default_left", bool),
        ("missing", np.int8),
    ):
        arrays[k] = arrays[k].astype(dtype)
    return Trees(arrays, scale, width)


def _forest(est, schema: FeatureSchema, width: int) -> Trees:
    """scikit-learn's forests: the average of the trees (probabilities of classifiers)."""
    classify = hasattr(est, "classes_")
    n_classes = len(schema.target.classes)
    trees = []
    for tree in est.estimators_:
        t = tree.tree_
        if classify:
            v = t.value[:, 0, :] / t.value[:, 0, :].sum(axis=1, keepdims=True)
            full = np.zeros((t.node_count, n_classes))
            full[:, np.asarray(est.classes_).astype(int)] = v  # a class absent from the rows fitted predicts 0
            v = full[:, 1:2] if schema.target.task != MULTICLASS else full
        else:
            v = t.value[:, 0, :1]
        # x <= t goes left, NaN goes right (the forests' inputs are imputed: no NaN reaches them)
        trees.append(
            {
                "left": t.children_left,
                "right": t.children_right,
                "feature": t.feature,
                "threshold": t.threshold,
                "value": v,
                "cover": t.weighted_n_node_samples,
                "default_left": np.zeros(t.node_count, bool),
                "missing": np.full(t.node_count, NAN, np.int8),
                "categories": [None] * t.node_count,
            }
        )
    return _stack(trees, 1.0 / len(trees), width)
