"""Sample tables from datasets that ship inside scikit-learn (no download at run time).

``load_all(conn)`` creates, in schema ``public`` of the connected database:
  breast_cancer  569 rows, 30 numeric features, ``diagnosis`` text label (binary)
  iris           150 rows, 4 numeric features, ``species`` text label (multiclass)
  diabetes       442 rows, 10 numeric features, ``progression`` (regression)
Each has an ``id`` column. Tables that exist are left as they are.
"""

from __future__ import annotations

import io
import re

import numpy as np


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def datasets() -> dict:
    """name -> (feature names, X, target name, y as list)."""
    from sklearn import datasets as d

    bc, iris, diab = d.load_breast_cancer(), d.load_iris(), d.load_diabetes(scaled=False)
    return {
        "breast_cancer": ([_snake(f) for f in bc.feature_names], bc.data, "diagnosis",
                          [bc.target_names[t] for t in bc.target]),
        "iris": ([_snake(f.replace("(cm)", "")) for f in iris.feature_names], iris.data, "species",
                 [iris.target_names[t] for t in iris.target]),
        "diabetes": ([_snake(f) for f in diab.feature_names], diab.data, "progression", list(diab.target)),
    }


def load_table(conn, name: str, features, X: np.ndarray, target: str, y) -> bool:
    """Create and fill ``name``; False when it already exists."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"public.{name}",))
        if cur.fetchone()[0] is not None:
            return False
        ttype = "text" if isinstance(y[0], str) else "float8"
        cols = ", ".join(f"{f} float8" for f in features)
        cur.execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, {cols}, {target} {ttype})")
        buf = io.StringIO()
        for i, (row, label) in enumerate(zip(X, y)):
            buf.write("\t".join([str(i + 1), *map(repr, map(float, row)), str(label)]) + "\n")
        buf.seek(0)
        cur.copy_expert(f"COPY public.{name} (id, {', '.join(features)}, {target}) FROM STDIN", buf)
        cur.execute(f"ANALYZE public.{name}")
    return True


def load_all(conn) -> list[str]:
    """Load every sample table that is missing, each in its own transaction."""
    loaded, autocommit = [], conn.autocommit
    conn.autocommit = False
    try:
        for name, (features, X, target, y) in datasets().items():
            if load_table(conn, name, features, X, target, y):
                loaded.append(name)
            conn.commit()
    finally:
        conn.rollback()
        conn.autocommit = autocommit
    return loaded
