"""The microservice baseline of bench/scoring.py: a FastAPI app that, per request, fetches one row's
features from PostgreSQL and predicts with a fitted scikit-learn pipeline.

Started by the benchmark under uvicorn on 127.0.0.1 with SQLML_BENCH_DSN (the database) and
SQLML_BENCH_PIPELINE (a pickle of {"pipeline", "schema", "table"} written by the benchmark).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import psycopg2
from fastapi import FastAPI

from sqlml.data import convert
from sqlml.data.ingest import quote_ident
from sqlml.data.schema import CATEGORY, FeatureSchema

with open(os.environ["SQLML_BENCH_PIPELINE"], "rb") as f:
    _state = pickle.load(f)
pipeline = _state["pipeline"]
schema = FeatureSchema.from_json(_state["schema"])
conn = psycopg2.connect(os.environ["SQLML_BENCH_DSN"])
conn.autocommit = True
with conn.cursor() as _cur:  # planned once, as the in-database side's prepared statement
    _cur.execute(f"PREPARE fetch_row(int) AS SELECT {', '.join(quote_ident(f.name) for f in schema.features)} "
                 f"FROM {_state['table']} WHERE id = $1")
SQL = "EXECUTE fetch_row(%s)"

app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True}


@app.get("/predict/{row_id}")
def predict(row_id: int):
    with conn.cursor() as cur:
        cur.execute(SQL, (row_id,))
        row = cur.fetchone()
    raw = {f.name: np.array([v], dtype=object if f.kind == CATEGORY else np.float64)
           for f, v in zip(schema.features, row)}
    X = convert.as_frame(schema, convert.model_inputs(schema, raw))
    proba = pipeline.predict_proba(X)[0]
    return {"id": row_id, "prediction": int(proba.argmax()), "probabilities": proba.tolist()}
