"""Spark scoring (sqlml.spark, local mode) against in-database ``sqlml.score`` on the same rows.

A table of N rows (10 float features, a binary label) and one LightGBM model of 100 trees; then,
timed in the same run:
  in-database   SELECT sqlml.score(project, table, into_table, 'id')   (reads, scores, writes a table)
  spark         read through JDBC (2 partitions of id) -> sqlml.spark.score -> write back through JDBC
  spark, no IO  the same, with Spark's `noop` sink: reading and scoring, no write
Reported as rows/s and as ratios to in-database scoring. Spark's session start (JVM, ~10-20 s) is
reported apart: it is paid once per application, not per scoring run.

    .sqlml/spark-venv/bin/python bench/spark_scoring.py               # 200k rows, local[2]
    .sqlml/spark-venv/bin/python bench/spark_scoring.py --rows 50000 --cores 2 --dsn postgresql://...

Without --dsn it starts a throwaway cluster whose server imports sqlml from .sqlml/venv (the
server's venv: pyarrow, which this venv has, stays out of it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlml.install import CHECKOUT  # noqa: E402

SERVER_VENV = CHECKOUT / ".sqlml" / "venv"


def start_cluster():
    from sqlml.devcluster import Cluster, free_port, private_installation, service_user
    from sqlml.install import install_files

    purelib = subprocess.check_output([str(SERVER_VENV / "bin" / "python"), "-c",
                                       "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    private_installation()
    install_files(SERVER_VENV)
    state = Path(tempfile.mkdtemp(prefix="sqlml-bench-"))
    os.chmod(state, 0o755)
    shutil.chown(state, service_user())
    c = Cluster(state, port=free_port(), environment={"SQLML_SITE_PACKAGES": purelib})
    c.start()
    return c, c.create_database("bench_spark")


def prepare(dsn: str, rows: int) -> None:
    import sqlml

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_rows, bench_train")
        cols = ", ".join(f"(random() * {k + 1})::float8 AS f{k}" for k in range(10))
        cur.execute(f"CREATE TABLE bench_rows AS SELECT i AS id, {cols} FROM generate_series(1, %s) AS i", (rows,))
        cur.execute("ALTER TABLE bench_rows ADD COLUMN label text")
        cur.execute("UPDATE bench_rows SET label = "
                    "CASE WHEN f0 + f1 - f2 + 0.3 * f3 * random() > 0.9 THEN 'yes' ELSE 'no' END")
        cur.execute("ALTER TABLE bench_rows ADD PRIMARY KEY (id)")
        cur.execute("VACUUM ANALYZE bench_rows")
        cur.execute("CREATE TABLE bench_train AS SELECT * FROM bench_rows WHERE id <= 20000")
    conn.close()
    with sqlml.connect(dsn) as ml:
        ml.train("bench_spark", "bench_train", "label", exclude=["id"], algorithms=["lightgbm"], time_budget=20,
                 options={"n_estimators": 100})


def in_database(dsn: str) -> float:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_scored_db")
        t = time.perf_counter()
        cur.execute("SELECT sqlml.score('bench_spark', 'bench_rows', 'bench_scored_db', 'id')")
        seconds = time.perf_counter() - t
    conn.close()
    return seconds


def with_spark(spark, dsn: str, write: bool) -> float:
    from sqlml import spark as ss

    t = time.perf_counter()
    rows = ss.read_table(spark, dsn, "bench_rows", partition_column="id", num_partitions=2).drop("label")
    scored = ss.score(rows, dsn, "bench_spark")
    if write:
        opts = ss.jdbc_options(dsn)
        scored.write.option("batchsize", "10000").jdbc(opts["url"], "bench_scored_spark", mode="overwrite",
                                                       properties={k: v for k, v in opts.items() if k != "url"})
    else:
        scored.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="runs of each, best kept")
    p.add_argument("--dsn", help="a database with sqlml (default: a throwaway cluster)")
    args = p.parse_args()

    from sqlml import spark as ss

    cluster = None
    dsn = args.dsn
    if dsn is None:
        cluster, dsn = start_cluster()
    try:
        print(f"preparing {args.rows} rows and a 100-tree LightGBM model ...", flush=True)
        prepare(dsn, args.rows)
        t = time.perf_counter()
        spark = ss.local_session(cores=args.cores)
        spark.sparkContext.setLogLevel("ERROR")
        start = time.perf_counter() - t
        with_spark(spark, dsn, write=False)  # warm: Python workers, ONNX sessions, JDBC driver
        db = min(in_database(dsn) for _ in range(args.repeat))
        noio = min(with_spark(spark, dsn, write=False) for _ in range(args.repeat))
        full = min(with_spark(spark, dsn, write=True) for _ in range(args.repeat))
        spark.stop()
        n = args.rows
        print(f"\nscoring {n} rows, 10 features, LightGBM 100 trees, local[{args.cores}], best of {args.repeat}")
        print(f"  {'in-database sqlml.score':<40} {db:7.2f} s  {n / db:10.0f} rows/s  1.00x")
        print(f"  {'spark: JDBC read, score, JDBC write':<40} {full:7.2f} s  {n / full:10.0f} rows/s  {db / full:.2f}x")
        print(f"  {'spark: JDBC read, score (noop sink)':<40} {noio:7.2f} s  {n / noio:10.0f} rows/s  {db / noio:.2f}x")
        print(f"  spark session start (once per application): {start:.1f} s")
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
