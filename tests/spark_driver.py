"""The Spark half of tests/test_spark.py, run by .sqlml/spark-venv's Python (PySpark and pyarrow
live there, not in the server's venv): one local[2] session runs every scenario the test asks
for and prints one JSON object with what it saw. The test (server venv) prepares the database and
checks the results against sqlml in the database.

    .sqlml/spark-venv/bin/python tests/spark_driver.py '{"dsn": ..., "scenarios": [...]}'
"""

from __future__ import annotations

import json
import logging
import sys

from sqlml import spark as ss
from sqlml.errors import SqlmlError


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def error(fn) -> dict:
    try:
        fn()
    except SqlmlError as e:
        return {"sqlstate": e.sqlstate, "message": e.message, "hint": e.hint}
    return {"sqlstate": None, "message": "no error"}


def main(config: dict) -> dict:
    dsn, out = config["dsn"], {}
    lines = Lines()
    logging.getLogger("sqlml.spark").addHandler(lines)
    logging.getLogger("sqlml.spark").setLevel(logging.INFO)
    spark = ss.local_session(cores=2)
    try:
        for s in config["scenarios"]:
            name = s["name"]
            if s["kind"] == "score":
                df = ss.read_table(spark, dsn, s["relation"], partition_column="id", num_partitions=s["partitions"])
                counter = spark.sparkContext.accumulator(0)
                rows = ss.score(df, dsn, s["project"], session_counter=counter) \
                    .select("id", "prediction", "label", "probabilities").collect()
                out[name] = {"partitions": df.rdd.getNumPartitions(), "sessions": counter.value,
                             "rows": {str(r["id"]): [r["prediction"], r["label"], r["probabilities"]] for r in rows}}
            elif s["kind"] == "refusals":
                project = s["project"]
                out[name] = {
                    "missing_feature": error(lambda: ss.score(
                        ss.read_table(spark, dsn, "SELECT id, age, sex FROM diabetes"), dsn, project)),  # noqa: B023
                    "clash": error(lambda: ss.score(
                        ss.read_table(spark, dsn, "SELECT *, 1.0 AS prediction FROM diabetes"), dsn, project)),  # noqa: B023
                    "not_a_select": error(lambda: ss.read_table(spark, dsn, "DELETE FROM diabetes")),
                    "bad_sample_table": error(lambda: ss.train_on_sample(
                        spark, dsn, "x", "iris", "species", sample_table="x; DROP TABLE iris")),
                }
            elif s["kind"] == "train":
                lines.lines.clear()
                out[name] = {"result": ss.train_on_sample(spark, dsn, **s["args"]), "log": list(lines.lines)}
    finally:
        spark.stop()
    return out


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print("SPARK-RESULT " + json.dumps(result, default=str))
