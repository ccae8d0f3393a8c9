"""Scoring in place against pulling the data out, in batch and in real time, on a throwaway cluster.

One run, one generated table (--rows, default 1,000,000 rows x 20 feature columns: 15 numbers and
5 text categories, some NULLs), three deployed models trained on a 20,000-row sample: ``p``,
``sqlml.train(..., algorithms => '{lightgbm}', time_budget => '20 seconds', options =>
'{"n_estimators": 100, "ensemble": false}')``, LightGBM with exactly 100 trees (a budget of its
own: a shorter one, spent by a cold backend's imports, would sprint and stop the boosting at the
deadline); ``p_auto``, what ``sqlml.train`` picks by itself (every algorithm, ensembles allowed,
--auto-budget); and ``p_large``, the same as ``p`` with 1,000 trees (60 seconds), a model whose
evaluation, not PostgreSQL's reads and writes, sets the floor. sqlml scores with the model compiled to
native code (sqlml/onnx/compiled.py); ONNX Runtime runs with one thread everywhere. Printed per
model, each as a ratio to (c) and to the ONNX Runtime floor (d):

  (a) CREATE TABLE AS SELECT id, sqlml.predict('p', t) FROM t t: serially, then with the default
      parallel query settings (2 workers per Gather); and serially with the row as jsonb
      (sqlml.predict('p', to_jsonb(t)))
  (b) sqlml.score('p', 't', ...) and CREATE TABLE AS SELECT * FROM sqlml.predict_batch('p', 't', 'id'),
      whose model runs on a background thread of the backend while the backend reads the next
      chunk and writes the last (sqlml/scoring/overlap.py): two cores, like the client and its backend
  (c) the client baseline: psycopg2 fetch (server-side cursor, 100k rows per fetch) -> numpy ->
      onnxruntime on the registered ONNX -> COPY (id, prediction) into a new table
  (d) the floor: a plain scan of the same columns in the server (count() of each), plus
      onnxruntime on the same data already in numpy (the model's core graph), and for reference the
      compiled code on that data
  (e) PostgreSQL's share of (b), without any model: score's own row query of the features, every
      column counted, run to the end in the server, plus a table of as many scored rows written by
      SQL alone. What (b) costs beyond it is the model (overlapped), the call's fixed work and
      COPY's parsing of the scored rows.

and whether sqlml's predictions equal ONNX Runtime's (the client's): labels, largest probability gap.

Then the peak memory of the backend during sqlml.score (at --rows and at a tenth of it, and at
--big-rows if given, e.g. 10,000,000); single-row latency p50/p99 over --calls round trips of
``SELECT sqlml.predict('p', t) FROM t t WHERE id = $1`` (sent as a simple query, and prepared once)
against a FastAPI/uvicorn service on loopback that fetches the row from PostgreSQL (prepared) and
predicts with a scikit-learn pipeline (refit
client-side with sqlml's own preprocessing, the deployed model's hyperparameters and the same
training rows; its agreement with the deployed model is printed); pgbench with 8 clients calling
predict for --pgbench-seconds; and the cold first call (Python, imports and model load from the
compiled cache) for p, p_large and p_auto. --batch-only skips all but the
batch section and the cold calls.

    make bench                                    # the default run, a few minutes
    .sqlml/venv/bin/python bench/scoring.py --rows 200000 --calls 2000     # quicker
    .sqlml/venv/bin/python bench/scoring.py --big-rows 10000000            # + memory at 10M rows
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgsession import connect, run  # noqa: E402

FEATURES = [f"x{i}" for i in range(1, 16)] + [f"c{i}" for i in range(1, 6)]
TRAIN_ROWS = 20000


def start_cluster():
    from sqlml.devcluster import throwaway

    c = throwaway("sqlml-bench-scoring-")
    return c, c.create_database("bench")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def make_table(conn, name, rows):
    """``rows`` rows: id, x1..x15 (numbers, some NULL), c1..c5 (text categories, some NULL), churned."""
    run(conn, f"DROP TABLE IF EXISTS {name} CASCADE")
    run(conn, "SELECT setseed(0.42)")
    run(conn, f"""
        CREATE TABLE {name} AS
        SELECT i AS id, x1, x2, x3, x4, x5,
          CASE WHEN random() < 0.05 THEN NULL ELSE round((x1 * 3 + random())::numeric, 2) END AS x6,
          (random() * 100)::int AS x7, (random() * 10)::int AS x8,
          CASE WHEN random() < 0.1 THEN NULL ELSE random() * 1000 END AS x9,
          random() AS x10, random() - 0.5 AS x11, (random() * 5)::int AS x12,
          CASE WHEN random() < 0.02 THEN NULL ELSE random() * 50 END AS x13, random() AS x14, random() * 2 AS x15,
          c1, (ARRAY['north', 'south', 'east', 'west'])[1 + (random() * 3)::int] AS c2,
          CASE WHEN random() < 0.05 THEN NULL ELSE 'seg' || (random() * 20)::int END AS c3,
          'p' || (random() * 50)::int AS c4,
          CASE WHEN random() < 0.1 THEN NULL ELSE (ARRAY['web', 'app', 'store'])[1 + (random() * 2)::int] END AS c5,
          (x1 + x2 * x3 - 0.5 * coalesce(x4, 0) + CASE c1 WHEN 'a' THEN 0.8 WHEN 'b' THEN -0.4 ELSE 0 END
           + random() * 1.5 > 2.2)::int AS churned
        FROM (SELECT i, random() * 2 AS x1, random() AS x2, random() * 3 AS x3,
                     CASE WHEN random() < 0.1 THEN NULL ELSE random() * 2 END AS x4, (random() * 1000)::int AS x5,
                     CASE WHEN random() < 0.05 THEN NULL
                          ELSE (ARRAY['a', 'b', 'c', 'd', 'e'])[1 + (random() * 4)::int] END AS c1
              FROM generate_series(1, {int(rows)}) AS i) AS s""")
    run(conn, f"ALTER TABLE {name} ADD PRIMARY KEY (id)")
    run(conn, f"VACUUM ANALYZE {name}")


def train(conn, project, n_estimators, budget=20):
    opts = json.dumps({"ensemble": False, "n_estimators": n_estimators})
    seconds, _ = timed(lambda: run(conn, "SELECT * FROM sqlml.train(%s, 't_train', 'churned', "
                                         "algorithms => '{lightgbm}', time_budget => make_interval(secs => %s), "
                                         "exclude => '{id}', options => %s)", (project, budget, opts)))
    info = run(conn, "SELECT m.hyperparameters, octet_length(m.onnx), m.score FROM sqlml.models m "
                     "JOIN sqlml.deployed d "
                     "ON d.model_id = m.id WHERE m.project = %s", (project,))[0]
    return seconds, info


# --- (c) and (d): the client ------------------------------------------------------------------------

def registered(conn, project="p"):
    from sqlml.data.schema import FeatureSchema

    onnx, schema = run(conn, "SELECT m.onnx, m.feature_schema FROM sqlml.models m JOIN sqlml.deployed d "
                             "ON d.model_id = m.id WHERE m.project = %s", (project,))[0]
    return bytes(onnx), FeatureSchema.from_json(schema)


def client_baseline(dsn, blob, schema, keep_inputs):
    """(seconds, {phase: seconds}, model inputs of every row if keep_inputs, probabilities by id)."""
    from sqlml.data import convert
    from sqlml.onnx.convert import run as ort_run
    from sqlml.onnx.convert import session

    sess = session(blob)
    conn = psycopg2.connect(dsn)
    phases = dict.fromkeys(["fetch", "numpy", "onnxruntime", "copy"], 0.0)
    kept, ids, preds, probas = [], [], [], []
    classes = np.asarray(schema.target.classes, dtype=np.float64)
    t0 = time.perf_counter()
    cur = conn.cursor(name="fetch")
    cur.itersize = 100000
    cur.execute(f"SELECT id, {', '.join(FEATURES)} FROM t")
    while True:
        t = time.perf_counter()
        rows = cur.fetchmany(100000)
        phases["fetch"] += time.perf_counter() - t
        if not rows:
            break
        t = time.perf_counter()
        cols = list(zip(*rows))
        raw = {f.name: np.array(col, dtype=object if f.kind == "category" else np.float64)
               for f, col in zip(schema.features, cols[1:])}
        inputs = convert.model_inputs(schema, raw)
        feeds = convert.as_feeds(schema, inputs)
        phases["numpy"] += time.perf_counter() - t
        t = time.perf_counter()
        proba = ort_run(sess, feeds, schema.target.task)
        pred = classes[proba.argmax(axis=1)]
        phases["onnxruntime"] += time.perf_counter() - t
        ids.append(np.asarray(cols[0], dtype=np.int64))
        preds.append(pred)
        probas.append(proba)
        if keep_inputs:
            kept.append(inputs)
    cur.close()
    t = time.perf_counter()
    with conn.cursor() as c:
        c.execute("DROP TABLE IF EXISTS scored_c; CREATE TABLE scored_c (id int, prediction float8)")
        buf = io.StringIO("".join(f"{i}\t{p!r}\n" for i, p in zip(np.concatenate(ids).tolist(),
                                                                    np.concatenate(preds).tolist())))
        c.copy_expert("COPY scored_c FROM STDIN", buf)
    conn.commit()
    phases["copy"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    conn.close()
    order = np.argsort(np.concatenate(ids))
    return total, phases, kept, np.concatenate(probas)[order]


def floor(conn, blob, schema, kept):
    """(scan seconds, onnxruntime core-graph seconds, compiled seconds) for the rows in ``kept``: the
    model's work alone, on the core matrix already built."""
    from sqlml.onnx.scorer import Scorer

    scan, _ = timed(lambda: run(conn, f"SELECT {', '.join(f'count({c})' for c in FEATURES)} FROM t"))
    ort = Scorer(blob, schema, compile=False)
    fast = Scorer(blob, schema)
    assert fast.engine == "compiled", fast.fallback
    core = compiled = 0.0
    for inputs in kept:
        n = len(inputs["x1"])
        feeds = fast.split.feeds(inputs, n)
        matrix = np.concatenate([feeds[ci.name].reshape(n, -1) for ci in fast.split.inputs], axis=1)
        t = time.perf_counter()
        ort.run(inputs, n) if ort.row_columns is None else ort.run_matrix(matrix)
        core += time.perf_counter() - t
        t = time.perf_counter()
        fast.run_matrix(matrix)
        compiled += time.perf_counter() - t
    return scan, core, compiled


def postgres_share(conn, blob, schema):
    """(read seconds, write seconds): what ``sqlml.score`` asks of PostgreSQL whatever the model. The
    read: score's own row query of the features (``sqlml.scoring.chunks.rows_query``: the id, each
    number as float8, each category as text), every column counted, over the whole table; the
    write: a table of as many scored rows, filled by SQL alone (score's rows come by COPY)."""
    from sqlml.onnx.scorer import Scorer
    from sqlml.scoring import chunks

    rows = chunks.rows_query("public.t", list(schema.features), Scorer(blob, schema).row_columns, "id")
    counted = ", ".join(f"count({item})" for item in rows.items)  # every column computed, none planned away
    read, _ = timed(lambda: run(conn, f"SELECT {counted} FROM public.t AS src"))
    run(conn, "DROP TABLE IF EXISTS scored_e")
    write, _ = timed(lambda: run(conn, "CREATE TABLE scored_e AS SELECT id, (id % 2)::float8 AS prediction, "
                                       "(id % 2)::text AS label, ARRAY[0.25::float8, 0.75] AS probabilities FROM t"))
    return read, write


# --- memory -------------------------------------------------------------------------------------------

def backend_pid(conn):
    return run(conn, "SELECT pg_backend_pid()")[0][0]


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_memory(dsn, table):
    """(seconds, idle RssAnon MB, peak RssAnon MB) of a backend running sqlml.score over ``table``."""
    conn = connect(dsn)
    run(conn, f"SELECT sqlml.predict('p', t) FROM {table} t LIMIT 1")  # libraries and model loaded: the idle level
    pid = backend_pid(conn)
    idle = status_kb(pid, "RssAnon")
    peak, done = [idle], threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], status_kb(pid, "RssAnon"))
            except OSError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run(conn, f"DROP TABLE IF EXISTS {table}_scored")
    seconds, _ = timed(lambda: run(conn, f"SELECT sqlml.score('p', '{table}', '{table}_scored', 'id')"))
    done.set()
    sampler.join()
    conn.close()
    return seconds, idle / 1024, peak[0] / 1024


# --- real time ------------------------------------------------------------------------------------------

def percentiles(samples):
    s = np.sort(np.asarray(samples)) * 1000
    return float(np.percentile(s, 50)), float(np.percentile(s, 99))


def db_latency(dsn, ids, prepared):
    """p50, p99 of single-row predicts, sent as simple queries or through a prepared statement (what
    psycopg 3, JDBC and asyncpg do with a query they run often: planned once per session)."""
    conn = connect(dsn)
    cur = conn.cursor()
    sql = "SELECT sqlml.predict('p', t) FROM t t WHERE id = %s"
    if prepared:
        cur.execute("PREPARE predict_one(int) AS SELECT sqlml.predict('p', t) FROM t t WHERE id = $1")
        sql = "EXECUTE predict_one(%s)"
    for i in ids[:200]:  # warm: model loaded, plans cached
        cur.execute(sql, (int(i),))
        cur.fetchone()
    out = []
    for i in ids:
        t = time.perf_counter()
        cur.execute(sql, (int(i),))
        cur.fetchone()
        out.append(time.perf_counter() - t)
    conn.close()
    return percentiles(out)


def refit_pipeline(conn, schema):
    """A scikit-learn pipeline like the deployed model: sqlml's preprocessing and LightGBM with the
    deployed hyperparameters, fitted on the same training rows (same view, same holdout split)."""
    from sklearn.pipeline import Pipeline

    from sqlml.automl import preprocess
    from sqlml.automl.estimators import SPECS
    from sqlml.data import convert
    from sqlml.data.task import task_of

    params = run(conn, "SELECT m.hyperparameters FROM sqlml.models m JOIN sqlml.deployed d ON d.model_id = m.id "
                       "WHERE m.project = 'p'")[0][0]
    rows = run(conn, f"SELECT {', '.join(FEATURES)}, churned FROM t_train")
    cols = list(zip(*rows))
    raw = {f.name: np.array(col, dtype=object if f.kind == "category" else np.float64)
           for f, col in zip(schema.features, cols)}
    y = np.array(cols[-1], dtype=int)
    X = convert.as_frame(schema, convert.model_inputs(schema, raw))
    task, spec = task_of(schema.target.task), SPECS["lightgbm"]
    train_idx, _ = task.holdout(y, 0.2, 42)
    X_train = X.iloc[train_idx].reset_index(drop=True)
    plan = preprocess.Plan.from_data(schema, X_train)
    est = spec.build(params, task, 1, 42)  # one thread, like everything here
    pipe = Pipeline([("pre", preprocess.build(plan, spec.encoding)), ("model", est)])
    pipe.fit(X_train, y[train_idx], model__categorical_feature=plan.categorical_indices() or "auto")
    return pipe


def service_latency(dsn, schema, pipe, ids):
    """(p50 ms, p99 ms) of GET /predict/<id> on a uvicorn service on loopback, one connection kept alive."""
    from sqlml.devcluster import free_port

    state = Path(tempfile.mkdtemp(prefix="sqlml-bench-service-"))
    with open(state / "pipeline.pkl", "wb") as f:
        pickle.dump({"pipeline": pipe, "schema": schema.to_json(), "table": "t"}, f)
    port = free_port()
    env = {**os.environ, "SQLML_BENCH_DSN": dsn, "SQLML_BENCH_PIPELINE": str(state / "pipeline.pkl"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "scoring_service:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--app-dir", str(Path(__file__).parent)],
                            env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the scoring service did not start")
            time.sleep(0.2)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out, answers = [], {}
        for n, i in enumerate(list(ids[:200]) + list(ids)):
            t = time.perf_counter()
            c.request("GET", f"/predict/{int(i)}")
            body = c.getresponse().read()
            if n >= 200:
                out.append(time.perf_counter() - t)
                answers[int(i)] = json.loads(body)["probabilities"]
        return percentiles(out), answers
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)


def pgbench(cluster, dbname, rows, seconds, clients=8):
    from sqlml.install import pg_bindir

    script = Path(tempfile.mkdtemp(prefix="sqlml-bench-pgbench-")) / "predict.sql"
    script.write_text(f"\\set id random(1, {int(rows)})\nSELECT sqlml.predict('p', t) FROM t t WHERE id = :id;\n")
    cmd = [os.path.join(pg_bindir(), "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
           "-c", str(clients), "-j", "2", "-T", str(int(seconds)), "-P", "1", "-f", str(script), dbname]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    shutil.rmtree(script.parent, ignore_errors=True)
    text = out.stdout + out.stderr
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    done = re.search(r"number of transactions actually processed: (\d+)", text)
    progress = [float(m) for m in re.findall(r"progress: [\d.]+ s, ([\d.]+) tps", text)]
    steady = float(np.mean(progress[len(progress) // 2:])) if progress else float("nan")
    return {"tps": float(tps.group(1)) if tps else float("nan"), "steady_tps": steady,
            "failed": int(failed.group(1)) if failed else (0 if out.returncode == 0 else -1),
            "transactions": int(done.group(1)) if done else 0, "returncode": out.returncode,
            "command": " ".join(cmd[:1] + ["..."] + cmd[-9:])}


def cold_call(dsn, project):
    """(ms to the first sqlml call, ms of the first predict after it, ms of the second predict), in a new
    backend (the compiled code of ``project`` is in the cache if any backend has loaded it)."""
    conn = connect(dsn)
    boot, _ = timed(lambda: run(conn, "SELECT sqlml.version()"))
    sql = f"SELECT sqlml.predict('{project}', t) FROM t t WHERE id = 1"
    first, _ = timed(lambda: run(conn, sql))
    second, _ = timed(lambda: run(conn, sql))
    conn.close()
    return boot * 1000, first * 1000, second * 1000


# --- the run --------------------------------------------------------------------------------------------

def batch(conn, dsn, project, rows, say, repeats):
    """The batch section for ``project``: (a) to (e), and agreement with ONNX Runtime. The serial
    per-row forms and the client are timed ``repeats`` times, interleaved, and so are the batch
    forms, the floor's phases and PostgreSQL's share: the best of each kept, since one run moves by
    20-40% with the machine (the parallel form is timed once)."""
    blob, schema = registered(conn, project)
    results = {}
    # the first predict on this server compiles the model unless its training had the time to (then it is
    # cached by its sha256)
    results["compile"], _ = timed(lambda: run(conn, f"SELECT sqlml.predict('{project}', t) FROM t t LIMIT 1"))
    run(conn, "DROP TABLE IF EXISTS scored_a2, scored_b, scored_b2")
    run(conn, "SET max_parallel_workers_per_gather = 0")
    results["a_serial"] = results["a_jsonb"] = float("inf")
    for _ in range(repeats):  # the per-row forms and the client (below): the best of ``repeats``, interleaved
        run(conn, "DROP TABLE IF EXISTS scored_a, scored_j")
        seconds, _ = timed(lambda: run(conn, "CREATE TABLE scored_a AS SELECT id, "
                                             f"sqlml.predict('{project}', t) FROM t t"))
        results["a_serial"] = min(results["a_serial"], seconds)
        seconds, _ = timed(lambda: run(conn, "CREATE TABLE scored_j AS SELECT id, "
                                             f"sqlml.predict('{project}', to_jsonb(t)) AS predict FROM t t"))
        results["a_jsonb"] = min(results["a_jsonb"], seconds)
    run(conn, "RESET max_parallel_workers_per_gather")
    plan = run(conn, f"EXPLAIN CREATE TABLE scored_a2 AS SELECT id, sqlml.predict('{project}', t) FROM t t")
    workers = next((int(r[0].split(":")[1]) for r in plan if "Workers Planned" in r[0]), 0)
    results["a_parallel"], _ = timed(lambda: run(conn, "CREATE TABLE scored_a2 AS SELECT id, "
                                                       f"sqlml.predict('{project}', t) FROM t t"))
    results["b_score"] = results["b_batch"] = float("inf")
    for _ in range(repeats):  # the batch forms: the best of ``repeats`` too (one run moves by 20-30%)
        run(conn, "DROP TABLE IF EXISTS scored_b, scored_b2")
        seconds, _ = timed(lambda: run(conn, f"SELECT sqlml.score('{project}', 't', 'scored_b', 'id')"))
        results["b_score"] = min(results["b_score"], seconds)
        seconds, _ = timed(lambda: run(conn, "CREATE TABLE scored_b2 AS SELECT * FROM "
                                             f"sqlml.predict_batch('{project}', 't', 'id')"))
        results["b_batch"] = min(results["b_batch"], seconds)
    results["c"], phases, kept, probas = client_baseline(dsn, blob, schema, keep_inputs=True)
    for _ in range(repeats - 1):
        seconds, again, _, _ = client_baseline(dsn, blob, schema, keep_inputs=False)
        if seconds < results["c"]:
            results["c"], phases = seconds, again
    floors, shares = [floor(conn, blob, schema, kept) for _ in range(repeats)], \
        [postgres_share(conn, blob, schema) for _ in range(repeats)]
    scan, core, compiled = (min(f[i] for f in floors) for i in range(3))  # each phase's best of ``repeats``
    results["e_read"], results["e_write"] = (min(s[i] for s in shares) for i in range(2))
    results["d"], results["d_compiled"] = scan + core, scan + compiled
    del kept
    differ = run(conn, "SELECT count(*) FILTER (WHERE a.predict IS DISTINCT FROM c.prediction), "
                       "count(*) FILTER (WHERE b.prediction IS DISTINCT FROM c.prediction), "
                       "count(*) FILTER (WHERE a2.predict IS DISTINCT FROM c.prediction), "
                       "count(*) FILTER (WHERE j.predict IS DISTINCT FROM c.prediction) "
                       "FROM scored_c c JOIN scored_a a USING (id) JOIN scored_b b USING (id) "
                       "JOIN scored_a2 a2 USING (id) "
                       "JOIN scored_j j USING (id)")[0]
    with conn.cursor() as cur:
        cur.execute("SELECT probabilities FROM scored_b ORDER BY id")
        inside = np.array([r[0] for r in cur.fetchall()], dtype=np.float64)
    gap = float(np.abs(inside - probas).max())
    c, d = results["c"], results["d"]
    say(f"Batch, {rows:,} rows, model {project} (seconds; / client and / floor: time ratios, lower is better; "
        f"each the best of {repeats})")
    lines = [("(a) CREATE TABLE AS ... sqlml.predict(p, t), serial", "a_serial"),
             (f"(a) the same, parallel query ({workers} workers planned)", "a_parallel"),
             ("(a) the row as jsonb: sqlml.predict(p, to_jsonb(t)), serial", "a_jsonb"),
             ("(b) sqlml.score", "b_score"),
             ("(b) CREATE TABLE AS ... sqlml.predict_batch", "b_batch"),
             ("(c) client: fetch -> numpy -> onnxruntime -> COPY", "c"),
             ("(d) floor: scan + onnxruntime (core graph) on numpy", "d"),
             ("(d) for reference: scan + the compiled code on numpy", "d_compiled")]
    for label, key in lines:
        say(f"  {label:<60} {results[key]:7.2f}s  {results[key] / c:5.2f}x client  {results[key] / d:5.2f}x floor")
    say("  client phases: " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()))
    say(f"  floor phases: scan {scan:.2f}s, onnxruntime {core:.2f}s, compiled {compiled:.2f}s "
        f"(compiled / onnxruntime: {compiled / core:.2f}x)")
    share = results["e_read"] + results["e_write"]
    say(f"  PostgreSQL's share of (b), no model: score's row query {results['e_read']:.2f}s + a table of "
        f"{rows:,} scored rows {results['e_write']:.2f}s = {share:.2f}s, {share / d:.2f}x floor")
    say(f"  per-row serial / client: {results['a_serial'] / c:.2f}x; jsonb / row form: "
        f"{results['a_jsonb'] / results['a_serial']:.2f}x; "
        f"sqlml.score / onnxruntime floor: {results['b_score'] / d:.2f}x; "
        f"parallel speedup of (a): {results['a_serial'] / results['a_parallel']:.2f}x")
    say(f"  labels differing from onnxruntime's (the client's): (a) {differ[0]}, (b) {differ[1]}, "
        f"(a parallel) {differ[2]}, (a jsonb) {differ[3]}; largest probability gap of (b): {gap:.2g}")
    say("  first predict on this server (compiles the model unless its training did): "
        f"{results['compile'] * 1000:.0f} ms")
    say()
    return blob, schema


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=0, help="also measure score's memory on a table this big")
    ap.add_argument("--calls", type=int, default=5000, help="single-row calls for p50/p99")
    ap.add_argument("--pgbench-seconds", type=int, default=15)
    ap.add_argument("--auto-budget", type=int, default=30, help="seconds for sqlml.train to pick p_auto")
    ap.add_argument("--batch-only", action="store_true", help="only the batch section and the cold calls")
    ap.add_argument("--repeats", type=int, default=3, help="runs of (a) serial, (a) jsonb and (c), the best kept")
    args = ap.parse_args()
    cluster, dsn = start_cluster()
    dbname = dsn.rsplit("/", 1)[1]
    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    try:
        conn = connect(dsn)
        say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
        say(f"machine: {os.cpu_count()} cores, PostgreSQL {run(conn, 'SHOW server_version')[0][0]}, "
            f"max_parallel_workers_per_gather {run(conn, 'SHOW max_parallel_workers_per_gather')[0][0]}, "
            f"load average {os.getloadavg()[0]:.1f}")
        t, _ = timed(lambda: make_table(conn, "t", args.rows))
        size = run(conn, "SELECT pg_size_pretty(pg_table_size('t'))")[0][0]
        say(f"data: t, {args.rows:,} rows x 20 features (15 numbers, 5 text categories, NULLs), {size}; "
            f"generated in {t:.1f}s")
        step = max(args.rows // TRAIN_ROWS, 1)
        run(conn, f"CREATE VIEW t_train AS SELECT * FROM t WHERE id % {step} = 0 ORDER BY id")  # one order: one split
        secs, (params, onnx_bytes, auc) = train(conn, "p", 100)
        say(f"model p: LightGBM {params['n_estimators']} trees, {params['num_leaves']} leaves max, learning rate "
            f"{params['learning_rate']}; ONNX {onnx_bytes / 1024:.0f} kB; holdout ROC AUC {auc:.3f}; "
            f"trained in {secs:.1f}s")
        secs, _ = timed(lambda: run(conn, "SELECT * FROM sqlml.train('p_auto', 't_train', 'churned', "
                                          f"time_budget => '{args.auto_budget} seconds', exclude => '{{id}}')"))
        algorithm, hp, kb, auc = run(conn, "SELECT m.algorithm, m.hyperparameters, octet_length(m.onnx) / 1024, "
                                           "m.score "
                                           "FROM sqlml.models m JOIN sqlml.deployed d ON d.model_id = m.id "
                                           "WHERE m.project = 'p_auto'")[0]
        say(f"model p_auto: sqlml.train's own pick in {args.auto_budget}s: {algorithm} {json.dumps(hp)[:300]}; "
            f"ONNX {kb} kB; holdout ROC AUC {auc:.3f}; trained in {secs:.1f}s")
        secs, (params, onnx_bytes, auc) = train(conn, "p_large", 1000, budget=60)
        say(f"model p_large: LightGBM {params['n_estimators']} trees, {params['num_leaves']} leaves max, learning "
            f"rate {params['learning_rate']}; ONNX {onnx_bytes / 1024:.0f} kB; holdout ROC AUC {auc:.3f}; "
            f"trained in {secs:.1f}s (where the model, not PostgreSQL, sets the floor)")
        say("threads: onnxruntime 1 (the client's and the floor's); sqlml's compiled code runs on the backend's "
            "thread, (b) on a background thread overlapped with the backend's reads and writes; parallel query "
            "adds processes, not threads")
        say()
        blob, schema = batch(conn, dsn, "p", args.rows, say, args.repeats)
        batch(conn, dsn, "p_auto", args.rows, say, args.repeats)
        batch(conn, dsn, "p_large", args.rows, say, args.repeats)

        if not args.batch_only:
            say("Memory of the backend during sqlml.score (RssAnon: idle with the model loaded -> peak)")
            sizes = [("t_small", max(args.rows // 10, 1000)), ("t", args.rows)]
            if args.big_rows:
                sizes.append(("t_big", args.big_rows))
            for name, n in sizes:
                if name != "t":
                    make_table(conn, name, n)
                secs, idle, peak = peak_memory(dsn, name)
                say(f"  {n:>12,} rows: {idle:6.0f} MB -> {peak:6.0f} MB (+{peak - idle:.0f} MB), {secs:.1f}s")
                if name != "t":
                    run(conn, f"DROP TABLE {name}, {name}_scored")
            say()

            rng = np.random.default_rng(7)
            ids = rng.integers(1, args.rows + 1, size=args.calls)
            pipe = refit_pipeline(conn, schema)
            p50, p99 = db_latency(dsn, ids, prepared=False)
            q50, q99 = db_latency(dsn, ids, prepared=True)
            (s50, s99), answers = service_latency(dsn, schema, pipe, ids[:args.calls])
            sample = sorted(answers)[:2000]
            inside = dict(run(conn, "SELECT id, sqlml.predict_proba('p', t) FROM t t WHERE id = ANY(%s)", (sample,)))
            gap = max(abs(answers[i][1] - inside[i][1]) for i in sample)
            same = np.mean([np.argmax(answers[i]) == np.argmax(inside[i]) for i in sample])
            say(f"Single row, {args.calls:,} calls over one connection (ms)")
            say("  SELECT sqlml.predict('p', t) FROM t t WHERE id = $1, simple query     "
                f"p50 {p50:6.3f}  p99 {p99:6.3f}")
            say(f"  the same, prepared once (EXECUTE predict_one($1))              p50 {q50:6.3f}  p99 {q99:6.3f}")
            say(f"  FastAPI/uvicorn service (prepared fetch of the row + sklearn)   p50 {s50:6.3f}  p99 {s99:6.3f}")
            say(f"  in place is {s50 / p50:.1f}x lower at p50, {s99 / p99:.1f}x at p99 (simple query); "
                f"{s50 / q50:.1f}x and {s99 / q99:.1f}x (prepared)")
            say(f"  service's pipeline vs the deployed model on {len(sample)} rows: same label {same:.1%}, "
                f"max probability gap {gap:.2g}")
            bench = pgbench(cluster, dbname, args.rows, args.pgbench_seconds)
            say(f"  pgbench, 8 clients, {args.pgbench_seconds}s: {bench['tps']:.0f} tps "
                f"({bench['steady_tps']:.0f} tps in "
                f"the second half), {bench['transactions']:,} transactions, {bench['failed']} failed")
            say()

        say("Cold first call in a new session, the compiled cache warm (ms): first sqlml call (Python, sqlml) -> "
            "first predict (imports, model load) -> second predict")
        for project in ("p", "p_large", "p_auto"):
            kb = run(conn, "SELECT octet_length(m.onnx) / 1024 FROM sqlml.models m JOIN sqlml.deployed d "
                           "ON d.model_id = m.id WHERE m.project = %s", (project,))[0][0]
            boot, first, second = cold_call(dsn, project)
            say(f"  {project:<8} ONNX {kb:>6} kB: {boot:7.1f} -> {first:7.1f} -> {second:6.2f}   "
                f"(first sqlml call + first predict: {boot + first:.0f} ms)")
        conn.close()
    finally:
        cluster.destroy()
    return lines


if __name__ == "__main__":
    main()
