"""A model's explainer: built from the fitted pipeline at training time, stored beside its ONNX.

What the contributions explain (per row and output, ``contributions.sum() + base == raw output``):

  linear        the decision function: log-odds of the second class (binary), one logit per class
                (multiclass), the value (regression). Contribution of an encoded column
                ``coef * (x - E[x])``, E over the rows the model was fitted on.
  lightgbm      the raw score: log-odds (binary), one raw score per class (multiclass), the value.
                TreeSHAP, path-dependent, by LightGBM itself (``pred_contrib``) on the stored booster.
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
code) and summed back to the model input, then to the feature (a date's calendar parts, a vector's
dimensions): one contribution per raw column.

Stored as one ``bytes`` (``to_bytes``): a JSON header and numpy arrays in an ``.npz``, read with
``allow_pickle=False`` (nothing in it runs code).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import MULTICLASS, FeatureSchema
from sqlml.explain.treeshap import Forest, Tree

FORMAT = 1


@dataclass
class Encoding:
    """The columns a member's estimator sees, each made from one model input.

    ``columns``: ["num", input, fill or None, shift, scale] (``(fillna(x) - shift) / scale``),
    ["onehot", input, category], ["ordinal", input, [categories]] (code, NaN if unknown)."""

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

    def contributions(self, T: np.ndarray) -> np.ndarray:
        return (T - self.center)[:, :, None] * self.coef.T[None, :, :]

    def arrays(self) -> dict:
        return {"coef": self.coef, "intercept": self.intercept, "center": self.center}


class Trees(Member):
    kind = "trees"

    def __init__(self, counts, left, right, feature, threshold, value, cover, n_columns: int):
        self._arrays = {"counts": counts, "left": left, "right": right, "feature": feature, "threshold": threshold,
                        "value": value, "cover": cover}
        self.n_columns = n_columns
        bounds = np.concatenate([[0], np.cumsum(counts)])
        trees = [Tree(*(a[s:e] for a in (left, right, feature, threshold, value, cover)))
                 for s, e in zip(bounds[:-1], bounds[1:])]
        self.forest = Forest(trees, 1.0 / len(trees), n_columns)
        self.base = self.forest.base

    def contributions(self, T: np.ndarray) -> np.ndarray:
        return self.forest.shap_values(T)

    def arrays(self) -> dict:
        return dict(self._arrays)


class LightGBM(Member):
    kind = "lightgbm"

    def __init__(self, model: str, n_outputs: int, n_columns: int):
        import lightgbm as lgb

        self.model, self.n_outputs, self.n_columns = model, n_outputs, n_columns
        self.booster = lgb.Booster(model_str=model)
        probe = self._contrib(np.zeros((1, n_columns)))
        self.base = probe[0, -1, :]  # the bias column is the same for every row

    def _contrib(self, T):
        out = self.booster.predict(np.asarray(T, dtype=np.float32).astype(np.float64), pred_contrib=True,
                                   num_threads=1)
        return np.asarray(out).reshape(len(T), self.n_outputs, self.n_columns + 1).transpose(0, 2, 1)

    def contributions(self, T: np.ndarray) -> np.ndarray:
        return self._contrib(T)[:, :-1, :]

    def arrays(self) -> dict:
        return {"model": np.frombuffer(self.model.encode(), dtype=np.uint8)}


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
    def outputs(self) -> list[str] | None:
        """Class labels of the outputs (multiclass), else None (one output)."""
        return [str(c) for c in self.schema.target.classes] if self.schema.target.task == MULTICLASS else None

    def explain(self, inputs: dict, n: int) -> Explanation:
        """Contributions for ``n`` rows of model inputs (``sqlml.data.convert.model_inputs``)."""
        total = np.zeros((n, len(self.features), len(self.base)))
        for (w, enc, member), to_feature in zip(self.members, self.to_feature):
            c = member.contributions(enc.transform(inputs, n))
            for j in range(c.shape[1]):
                total[:, to_feature[j], :] += w * c[:, j, :]
        return Explanation(total, self.base)

    def importance(self, inputs: dict, n: int) -> list[dict]:
        """Mean |contribution| per feature over the rows (summed over the outputs), largest first."""
        e = self.explain(inputs, n)
        imp = np.abs(e.contributions).mean(axis=0).sum(axis=1)
        return sorted(({"feature": f, "importance": float(v)} for f, v in zip(self.features, imp)),
                      key=lambda d: -d["importance"])

    def to_bytes(self) -> bytes:
        header = {"format": FORMAT, "members": []}
        arrays = {}
        for i, (w, enc, member) in enumerate(self.members):
            entry = {"weight": w, "kind": member.kind, "columns": enc.columns}
            if isinstance(member, LightGBM):
                entry["outputs"] = member.n_outputs
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
        if header.get("format") != FORMAT:
            raise ValueError(f"explainer format {header.get('format')} is not {FORMAT}")
        members = []
        for i, entry in enumerate(header["members"]):
            a = {k[len(f"m{i}_"):]: data[k] for k in data.files if k.startswith(f"m{i}_")}
            enc = Encoding(entry["columns"])
            width = len(enc.columns)
            if entry["kind"] == "linear":
                member = Linear(a["coef"], a["intercept"], a["center"])
            elif entry["kind"] == "trees":
                member = Trees(**{k: a[k] for k in ("counts", "left", "right", "feature", "threshold", "value",
                                                     "cover")}, n_columns=width)
            else:
                member = LightGBM(bytes(a["model"]).decode(), entry["outputs"], width)
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
    k = _outputs(schema)
    name = type(est).__name__
    if name.startswith("LGBM"):
        return enc, LightGBM(est.booster_.model_to_string(), k, width)
    if hasattr(est, "estimators_") and hasattr(est.estimators_[0], "tree_"):
        return enc, _forest(est, schema, width)
    if hasattr(est, "coef_"):
        center = pre.transform(background).astype(np.float64).mean(axis=0)
        coef, intercept = np.atleast_2d(est.coef_), np.atleast_1d(est.intercept_)
        return enc, Linear(coef, intercept, center)
    raise ValueError(f"no explanation for {name}")


def _forest(est, schema: FeatureSchema, width: int) -> Trees:
    classify = hasattr(est, "classes_")
    n_classes = len(schema.target.classes)
    parts = {k: [] for k in ("left", "right", "feature", "threshold", "value", "cover")}
    counts = []
    for tree in est.estimators_:
        t = tree.tree_
        if classify:
            v = t.value[:, 0, :] / t.value[:, 0, :].sum(axis=1, keepdims=True)
            full = np.zeros((t.node_count, n_classes))
            full[:, np.asarray(est.classes_).astype(int)] = v  # a class absent from the rows fitted predicts 0
            v = full[:, 1:2] if schema.target.task != MULTICLASS else full
        else:
            v = t.value[:, 0, :1]
        counts.append(t.node_count)
        for k, a in (("left", t.children_left), ("right", t.children_right), ("feature", t.feature),
                     ("threshold", t.threshold), ("value", v), ("cover", t.weighted_n_node_samples)):
            parts[k].append(a)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["left"], arrays["right"], arrays["feature"] = (arrays[k].astype(np.int32) for k in ("left", "right", "feature"))
    return Trees(np.asarray(counts, dtype=np.int64), n_columns=width, **arrays)
