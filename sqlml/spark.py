"""Spark scale-out, for users who outgrow one server.

- :func:`score`: score a Spark DataFrame with a model pulled from the registry (its sha256
  verified), ONNX Runtime inside ``mapInPandas``. The ONNX bytes travel once per executor as a
  broadcast; each Python worker creates one ONNX Runtime session per model and keeps it for
  every partition it processes (Spark reuses Python workers). Outputs are those of
  ``sqlml.predict_batch``: prediction, label, probabilities.
- :func:`read_table`: a PostgreSQL table or SELECT as a DataFrame through Spark's JDBC source,
  optionally read in parallel partitions of a numeric column.
- :func:`train_on_sample`: for a table too big to train on in one backend: Spark reads it,
  draws a sample of the size the governor allows one training job (``sqlml.memory_per_job`` and
  the governor's cost model; stratified on the target for classification), writes the sample
  into PostgreSQL and runs ``sqlml.train`` on it. The log line and the returned dict say how many
  rows of how many were used, and why.

Needs the ``spark`` extra (pyspark, pyarrow), Java 17+, and PostgreSQL's JDBC driver
(``/usr/share/java/postgresql.jar`` from Debian's libpostgresql-jdbc-java; scripts/system-deps.sh).
"""

from __future__ import annotations

import logging
import re
import sys

from sqlml.errors import INVALID_PARAMETER, SqlmlError

log = logging.getLogger("sqlml.spark")

JDBC_JAR = "/usr/share/java/postgresql.jar"
_TABLE_NAME = re.compile(r"(?:[a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}")  # fullmatch: no final newline
OUTPUTS = ("prediction", "label", "probabilities")


# --- sessions and JDBC ----------------------------------------------------------------------------

def local_session(cores: int = 2, app_name: str = "sqlml", jars: str = JDBC_JAR, memory: str = "1g"):
    """A local-mode SparkSession set up for sqlml: the JDBC driver on the classpath, Python workers
    running this interpreter (it has sqlml and onnxruntime), timestamps in UTC (as sqlml reads them),
    everything bound to 127.0.0.1."""
    import os

    from pyspark.sql import SparkSession

    # PySpark starts its Python workers with $PYSPARK_PYTHON (default: python3 on PATH), not with
    # the spark.pyspark.python setting, in local mode
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode talks to itself on loopback only
    return (SparkSession.builder.master(f"local[{int(cores)}]").appName(app_name)
            .config("spark.jars", jars)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", memory)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", str(int(cores)))
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
            .getOrCreate())


def jdbc_options(dsn: str) -> dict:
    """Spark JDBC options (url, user, password, driver) for a libpq DSN or URI."""
    from psycopg2.extensions import parse_dsn

    p = parse_dsn(dsn)
    host = p.get("host", "localhost")
    if host.startswith("/"):
        raise SqlmlError(f"Spark's JDBC source cannot use the Unix socket {host}", sqlstate=INVALID_PARAMETER,
                         hint="pass a DSN with a TCP host, e.g. postgresql://user@127.0.0.1:5432/db")
    url = f"jdbc:postgresql://{host}:{p.get('port', '5432')}/{p.get('dbname', p.get('user', 'postgres'))}"
    opts = {"url": url, "driver": "org.postgresql.Driver", "user": p.get("user", "postgres")}
    if p.get("password"):
        opts["password"] = p["password"]
    return opts


def read_table(spark, dsn: str, relation: str, partition_column: str | None = None, num_partitions: int = 2,
               fetch_size: int = 10000):
    """``relation`` (a table name or one SELECT) as a Spark DataFrame through the JDBC source.

    With ``partition_column`` (numeric), ``num_partitions`` executors read ranges of it in parallel.
    """
    from sqlml.data.relation import parse_relation

    rel = parse_relation(relation)  # validated like sqlml.train validates it: one read-only SELECT or a name
    reader = spark.read.format("jdbc").options(**jdbc_options(dsn)).option("fetchsize", str(int(fetch_size)))
    source = rel.qualified if rel.name else f"({rel.query}) AS src"
    if partition_column is None:
        return reader.option("dbtable", source).load()
    import psycopg2

    from sqlml.data.ingest import quote_ident

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT min({quote_ident(partition_column)}), max({quote_ident(partition_column)}) FROM {source}")
        low, high = cur.fetchone()
    conn.close()
    if low is None:
        return reader.option("dbtable", source).load()
    return (reader.option("dbtable", source).option("partitionColumn", partition_column)
            .option("lowerBound", str(low)).option("upperBound", str(int(high) + 1))
            .option("numPartitions", str(int(num_partitions))).load())


# --- scoring ----------------------------------------------------------------------------------------

def pull_model(dsn: str, project: str, version: int | None = None) -> tuple[bytes, dict]:
    """(ONNX bytes, registry row) of the deployed model (or ``version``), verified against its sha256."""
    import sqlml

    with sqlml.connect(dsn) as ml:
        return ml.onnx(project, version)


_models: dict = {}  # per Python worker: sha256 -> OfflineModel, shared by the partitions it scores


def _model(blob: bytes, row: dict, counter=None):
    from sqlml.offline import OfflineModel

    model = _models.get(row["sha256"])
    if model is None:
        model = _models[row["sha256"]] = OfflineModel(blob, row)
        if counter is not None:
            counter.add(1)
    return model


def score(df, dsn: str, project: str, version: int | None = None, session_counter=None):
    """``df`` with three columns added: prediction (double), label (string), probabilities
    (array<double>, null for regression), as ``sqlml.predict_batch`` gives them.

    Columns are matched to the model's features by name; other columns pass through.
    ``session_counter``: optionally a Spark accumulator that counts the ONNX Runtime sessions
    created, to see that workers keep theirs.
    """
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    clash = [c for c in OUTPUTS if c in df.columns]
    if clash:
        raise SqlmlError(f"the DataFrame already has column{'s' if len(clash) > 1 else ''} {', '.join(clash)}",
                         hint="rename or drop them first: score adds prediction, label and probabilities",
                         sqlstate=INVALID_PARAMETER)
    blob, row = pull_model(dsn, project, version)
    missing = [f["name"] for f in row["feature_schema"]["features"] if f["name"] not in df.columns]
    if missing:
        raise SqlmlError(f"feature column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing "
                         f"from the DataFrame for project {project!r}", sqlstate="42703",
                         hint="select the columns the model was trained on")
    shipped = df.sparkSession.sparkContext.broadcast((blob, row))
    schema = StructType(df.schema.fields + [StructField("prediction", DoubleType()), StructField("label", StringType()),
                                            StructField("probabilities", ArrayType(DoubleType()))])

    def score_batches(batches):
        model = _model(*shipped.value, counter=session_counter)
        for frame in batches:
            out = model.outputs(frame)
            probabilities = None if out["probabilities"] is None else list(out["probabilities"])
            yield frame.assign(prediction=out["prediction"], label=out["label"], probabilities=probabilities)

    log.info("scoring with %s version %s (sha256 %s, verified)", row["project"], row["version"], row["sha256"][:12])
    return df.mapInPandas(score_batches, schema)


# --- training on a governed sample ---------------------------------------------------------------------

def governed_rows(dsn: str, df_schema, target: str, total_rows: int, budget_seconds: float,
                  algorithms: list | None = None, max_rows: int | None = None, memory_cap: int | None = None):
    """The governor's row plan (``sqlml.governor.admission.plan_rows``) for training on a table of
    ``total_rows`` rows with this schema: all rows, or the largest sample whose predicted peak
    memory (the governor's analytic cost model) fits ``memory_cap`` (default: the server's
    ``sqlml.memory_per_job``)."""
    from pyspark.sql.types import ArrayType, StringType

    from sqlml.automl.estimators import DEFAULT_ALGORITHMS
    from sqlml.governor import admission, costmodel
    from sqlml.governor.settings import parse_bytes

    if memory_cap is None:
        import sqlml

        with sqlml.connect(dsn) as ml:
            setting = ml.sql("SELECT setting FROM sqlml.governor_settings() WHERE name = 'sqlml.memory_per_job'")
        memory_cap = parse_bytes("memory_per_job", setting[0]["setting"])
    fields = [f for f in df_schema.fields if f.name != target]
    text = sum(1 for f in fields if isinstance(f.dataType, StringType))
    base = costmodel.Features(rows=total_rows,
                              numeric=sum(1 for f in fields if not isinstance(f.dataType, (StringType, ArrayType))),
                              category=text, text_bytes=16.0 * text, algorithms=len(algorithms or DEFAULT_ALGORITHMS),
                              budget=float(budget_seconds))
    return admission.plan_rows(total_rows, lambda n: costmodel.analytic("train", base.with_rows(n))[1], memory_cap,
                               max_rows)


def _seconds(dsn: str, time_budget) -> float:
    if isinstance(time_budget, (int, float)):
        return float(time_budget)
    import sqlml

    with sqlml.connect(dsn) as ml:
        return ml.sql("SELECT extract(epoch FROM $1::interval)::float8 AS s", [str(time_budget)])[0]["s"]


def train_on_sample(spark, dsn: str, project: str, relation: str, target: str, *, time_budget="60 seconds",
                    max_rows: int | None = None, memory_cap: int | None = None, sample_table: str | None = None,
                    partition_column: str | None = None, num_partitions: int = 2, seed: int = 42, **train_args) -> dict:
    """Read ``relation`` through Spark, sample it down to what the governor allows one training
    job, write the sample to ``sample_table`` (default ``sqlml_sample_<project>``, replaced) and
    train ``project`` on it. Returns sqlml.train's row plus rows_total, rows_sampled, sampled,
    sampled_because and sample_table."""
    import sqlml

    table = sample_table or ("sqlml_sample_" + re.sub(r"[^a-z0-9_]", "_", project.lower()))[:63]
    if not _TABLE_NAME.fullmatch(table):  # Spark's JDBC writer pastes the name into its SQL
        raise SqlmlError(f"sample_table {table!r} is not a plain table name", sqlstate=INVALID_PARAMETER,
                         hint="use letters, digits and '_', optionally schema-qualified: analytics.churn_sample")
    df = read_table(spark, dsn, relation, partition_column, num_partitions)
    if target not in df.columns:
        raise SqlmlError(f'column "{target}" not found in {relation}; columns are: {", ".join(df.columns)}',
                         sqlstate="42703", hint="pass the name of the column to predict")
    total = df.count()
    budget = _seconds(dsn, time_budget)
    plan = governed_rows(dsn, df.schema, target, total, budget, train_args.get("algorithms"), max_rows, memory_cap)
    rows = total if plan.rows is None else min(plan.rows, total)
    sample = df
    if rows < total:
        fraction = min(1.0, rows / total * 1.02)  # a little over, then cut to size
        task = train_args.get("task")
        from pyspark.sql.types import StringType

        if task in ("binary", "multiclass") or (task is None and isinstance(df.schema[target].dataType, StringType)):
            labels = [r[0] for r in df.select(target).distinct().collect()]
            sample = df.sampleBy(target, {label: fraction for label in labels}, seed)
        else:
            sample = df.sample(False, fraction, seed)
        sample = sample.limit(rows)
    why = plan.sampled_because or (f"max_rows = {max_rows}" if rows < total else None)
    if rows < total:
        log.warning("sqlml.spark: training %s on a sample of %d of %d rows of %s (%s)", project, rows, total, relation,
                    why)
    else:
        log.info("sqlml.spark: training %s on all %d rows of %s", project, total, relation)
    sample.write.jdbc(jdbc_options(dsn)["url"], table, mode="overwrite",
                      properties={k: v for k, v in jdbc_options(dsn).items() if k != "url"})
    with sqlml.connect(dsn) as ml:
        written = ml.sql(f"SELECT count(*) AS n FROM {_quote_table(table)}")[0]["n"]
        result = ml.train(project, _quote_table(table), target, time_budget=time_budget, **train_args)
    return {**result, "rows_total": total, "rows_sampled": written, "sampled": written < total,
            "sampled_because": why, "sample_table": table}


def _quote_table(name: str) -> str:
    from sqlml.data.ingest import quote_ident

    return ".".join(quote_ident(part) for part in name.split("."))
