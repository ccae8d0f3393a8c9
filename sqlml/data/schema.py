"""What a model's features are: their kinds, the ONNX inputs they become, and the target.

A *feature* is a column of the training relation. Each becomes one or more *model inputs*,
the inputs of the ONNX graph: a number becomes one float input, a text column one string input,
a date its calendar parts, a pgvector column one float input per dimension. The mapping is the
only preprocessing outside the graph ("type conversion"), shared by training and scoring
(``sqlml.data.convert``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

NUMERIC, BOOLEAN, CATEGORY, DATE, TIMESTAMP, VECTOR = "numeric", "boolean", "category", "date", "timestamp", "vector"

# PostgreSQL type name (pg_type.typname) -> feature kind
# Models compute in float32 (ONNX); a finite number beyond this would become Infinity there, and
# the model's answer NaN. Such values are refused (22003), at training and at scoring.
FLOAT32_MAX = 3.4028234663852886e38
MAX_SEED = 2**32 - 1  # the largest random_state numpy and scikit-learn take

PG_KINDS = {
    # not money: it has no cast to float8
    **dict.fromkeys(["int2", "int4", "int8", "float4", "float8", "numeric", "oid"], NUMERIC),
    "bool": BOOLEAN,
    **dict.fromkeys(["text", "varchar", "bpchar", "name", "char", "citext", "uuid", "inet", "cidr"], CATEGORY),
    "date": DATE,
    **dict.fromkeys(["timestamp", "timestamptz"], TIMESTAMP),
    "vector": VECTOR,
}
INTEGER_TYPES = {"int2", "int4", "int8", "bool"}

DATE_PARTS = ("year", "month", "day", "weekday", "yearday", "epoch_days")
TIMESTAMP_PARTS = DATE_PARTS + ("hour", "minute")

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)

NULL_CATEGORY = "__null__"  # ONNX string tensors cannot hold NULL


@dataclass(frozen=True)
class Feature:
    """One column of the training relation used as a feature."""

    name: str
    kind: str
    pg_type: str
    dim: int = 0  # vector columns only

    @property
    def inputs(self) -> list[str]:
        """Names of the ONNX inputs this column becomes, in order."""
        if self.kind in (NUMERIC, BOOLEAN, CATEGORY):
            return [self.name]
        if self.kind == DATE:
            return [f"{self.name}__{p}" for p in DATE_PARTS]
        if self.kind == TIMESTAMP:
            return [f"{self.name}__{p}" for p in TIMESTAMP_PARTS]
        return [f"{self.name}__{i}" for i in range(self.dim)]

    @property
    def is_text(self) -> bool:
        return self.kind == CATEGORY


@dataclass(frozen=True)
class Target:
    name: str
    pg_type: str
    task: str
    classes: tuple = ()  # sorted class labels (classification), as they appear in the column

    @property
    def numeric_labels(self) -> bool:
        """Labels are numbers (integer targets); text and boolean labels are read as text."""
        return PG_KINDS.get(self.pg_type) == NUMERIC


@dataclass(frozen=True)
class FeatureSchema:
    """Features in training order, plus the target: stored with each model as JSON."""

    features: tuple[Feature, ...]
    target: Target
    dropped: dict = field(default_factory=dict)  # column -> why it is not a feature

    @property
    def inputs(self) -> list[tuple[str, bool]]:
        """(ONNX input name, is_text) in graph order."""
        return [(name, f.is_text) for f in self.features for name in f.inputs]

    @property
    def numeric_inputs(self) -> list[str]:
        return [n for n, text in self.inputs if not text]

    @property
    def text_inputs(self) -> list[str]:
        return [n for n, text in self.inputs if text]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "features": [asdict(f) for f in self.features],
            "target": {**asdict(self.target), "classes": list(self.target.classes)},
            "dropped": self.dropped,
            "inputs": [{"name": n, "type": "string" if t else "float"} for n, t in self.inputs],
        }

    @classmethod
    def from_json(cls, d: dict) -> FeatureSchema:
        t = d["target"]
        return cls(
            features=tuple(Feature(**f) for f in d["features"]),
            target=Target(t["name"], t["pg_type"], t["task"], tuple(t.get("classes") or ())),
            dropped=d.get("dropped", {}),
        )


def kind_of(pg_type: str) -> str | None:
    """The feature kind of a PostgreSQL type (typname), or None if sqlml cannot use it."""
    return PG_KINDS.get(pg_type)
