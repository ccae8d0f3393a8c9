"""A mixed workload: interactive scoring beside training, with this machine's default settings.

Clients (threads of this process, one connection each, paced like dashboards and apps):
``--predict-clients`` (8) call single-row ``sqlml.predict`` every ``--predict-every`` seconds, and
``--batch-clients`` (4) call ``sqlml.predict_batch`` over 150 rows every ``--batch-every`` seconds
(a call that takes longer than its interval is followed at once by the next).

Phases, each ``--seconds`` long or as long as the trainings run:
1. idle: the scoring clients alone. Latency p50/p95/p99 per kind of call.
2. training alone: two trainings submitted at once (with one slot, one runs and one queues), no
   scoring. Trials per second of search.
3. training under scoring: the same two trainings while the clients score. Latency of the calls made
   while a training ran, and the trainings' trials per second.

Printed side by side: predict_batch p95 and predict p99 under training as ratios to idle (targets
<= 3x and <= 2x), and trials per second under scoring as a share of alone (target >= 75%). The
training connections train once beforehand (1 s) so that the measured trainings run in warm
backends, as pooled connections do; the ML stack's import is measured by bench/cold_budget.py.

    .sqlml/venv/bin/python bench/workload.py
    .sqlml/venv/bin/python bench/workload.py --baseline   # also with workload classes off, for contrast
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgsession import configure, connect, run  # noqa: E402

FEATURES = 10


def setup(conn):
    """Tables: ``train_data`` (20k rows) for the model ``wl`` that scores, ``train5k`` (its first 5000
    rows: trials of a fraction of a second, enough of them to count) for the measured trainings,
    ``batch150`` for predict_batch."""
    cols = ", ".join(f"((i * {7919 + 13 * k}) % 1000) / 100.0 + random() AS x{k}" for k in range(FEATURES))
    run(conn, f"""CREATE TABLE train_data AS SELECT i AS id, {cols},
                  ((i * 7919) % 1000) / 100.0 + random() * 3 > 6.5 AS label FROM generate_series(1, 20000) AS i""")
    run(conn, "CREATE TABLE batch150 AS SELECT * FROM train_data WHERE id <= 150")
    run(conn, "CREATE TABLE train5k AS SELECT * FROM train_data WHERE id <= 5000")
    run(conn, "ANALYZE train5k")
    run(conn, "ANALYZE train_data")
    run(conn, "ANALYZE batch150")
    run(conn, "SELECT * FROM sqlml.train('wl', 'train_data', 'label', time_budget => '5 seconds', "
              "algorithms => '{lightgbm}', exclude => '{id}')")
    return [float(v) for v in run(conn,
                                  f"SELECT {', '.join(f'x{k}' for k in range(FEATURES))} FROM batch150 LIMIT 1")[0]]


class Client(threading.Thread):
    """One paced scoring client: (start, seconds) of every call until ``stop`` is set."""

    def __init__(self, dsn, kind, every, row, stop):
        super().__init__(daemon=True)
        self.conn, self.kind, self.every, self.row, self.stop = connect(dsn), kind, every, row, stop
        self.calls: list[tuple[float, float]] = []
        self.errors = 0
        self.call()  # warm the backend (the model's session) before measuring
        self.calls.clear()

    def call(self):
        t = time.monotonic()
        if self.kind == "predict":
            run(self.conn, "SELECT sqlml.predict('wl', %s::float8[])", (self.row,))
        else:
            run(self.conn, "SELECT count(*) FROM sqlml.predict_batch('wl', 'batch150', 'id')")
        self.calls.append((t, time.monotonic() - t))

    def run(self):
        rng = np.random.default_rng(self.ident)
        time.sleep(rng.uniform(0, self.every))  # clients out of step with each other
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                self.call()
            except psycopg2.Error:
                self.errors += 1
            next_at = max(next_at + self.every, time.monotonic() - self.every)
            time.sleep(max(next_at - time.monotonic(), 0))


def scoring(dsn, args, row):
    stop = threading.Event()
    clients = [Client(dsn, "predict", args.predict_every, row, stop) for _ in range(args.predict_clients)]
    clients += [Client(dsn, "predict_batch", args.batch_every, row, stop) for _ in range(args.batch_clients)]
    return clients, stop


def latency(clients, kind, start, end):
    ms = np.array([s * 1000 for c in clients if c.kind == kind for t, s in c.calls if start <= t < end])
    if not len(ms):
        return {"calls": 0}
    return {"calls": int(len(ms)), "p50_ms": float(np.median(ms)), "p95_ms": float(np.quantile(ms, 0.95)),
            "p99_ms": float(np.quantile(ms, 0.99)), "max_ms": float(ms.max())}


def trainings(dsn, conns, tag, budget):
    """Two trainings submitted at once on the warm connections; returns (start, end, their jobs)."""
    done = []

    def train(conn, project):
        run(conn, "SELECT * FROM sqlml.train(%s, 'train5k', 'label', time_budget => make_interval(secs => %s), "
                  """exclude => '{id}', options => '{"seed": 1, "deploy": "never"}')""", (project, budget))
        done.append(project)

    threads = [threading.Thread(target=train, args=(c, f"{tag}{k}"), daemon=True) for k, c in enumerate(conns)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    watcher = connect(dsn)
    jobs = run(watcher, "SELECT project, actual_seconds, (progress->>'trials')::int, "
                        "(progress->>'startup_seconds')::float8, extract(epoch FROM started_at - submitted_at)::float8 "
                        "FROM sqlml.jobs WHERE project LIKE %s ORDER BY job_id", (f"{tag}%",))
    watcher.close()
    out = [{"project": p, "slot_seconds": s, "trials": n, "startup_seconds": st, "queued_seconds": q}
           for p, s, n, st, q in jobs]
    assert len(done) == len(conns), "a training failed"
    trials = sum(j["trials"] for j in out)
    search = sum(j["slot_seconds"] for j in out)
    return start, end, {"jobs": out, "trials": trials, "slot_seconds": search, "trials_per_second": trials / search}


def measure(dsn, args, row, label):
    print(f"\n== {label} ==", flush=True)
    trainer_conns = [connect(dsn) for _ in range(2)]
    for k, c in enumerate(trainer_conns):  # warm backends, as a pool's connections are
        run(c, "SELECT * FROM sqlml.train(%s, 'batch150', 'label', time_budget => '1 second', "
               """algorithms => '{linear}', exclude => '{id}', options => '{"deploy": "never"}')""",
            (f"warm{label}{k}",))
    clients, stop = scoring(dsn, args, row)
    for c in clients:
        c.start()
    t0 = time.monotonic()
    time.sleep(args.seconds)
    t1 = time.monotonic()
    idle = {k: latency(clients, k, t0, t1) for k in ("predict", "predict_batch")}
    stop.set()
    for c in clients:
        c.join()
    print(f"idle scoring: {fmt(idle)}", flush=True)

    _, _, alone = trainings(dsn, trainer_conns, f"alone{label}", args.budget)
    print(f"training alone: {alone['trials']} trials in {alone['slot_seconds']:.1f}s of search "
          f"= {alone['trials_per_second']:.2f} trials/s", flush=True)

    clients, stop = scoring(dsn, args, row)
    for c in clients:
        c.start()
    time.sleep(2)  # the clients are in step
    start, end, loaded = trainings(dsn, trainer_conns, f"loaded{label}", args.budget)
    stop.set()
    for c in clients:
        c.join()
    under = {k: latency(clients, k, start, end) for k in ("predict", "predict_batch")}
    print(f"scoring under training: {fmt(under)}", flush=True)
    print(f"training under scoring: {loaded['trials']} trials in {loaded['slot_seconds']:.1f}s of search "
          f"= {loaded['trials_per_second']:.2f} trials/s", flush=True)
    for c in trainer_conns:
        c.close()
    result = {"idle": idle, "under_training": under, "training_alone": alone, "training_under_scoring": loaded,
              "errors": sum(c.errors for c in clients)}
    result["ratios"] = {
        "predict_batch_p95": under["predict_batch"]["p95_ms"] / idle["predict_batch"]["p95_ms"],
        "predict_p99": under["predict"]["p99_ms"] / idle["predict"]["p99_ms"],
        "trials_kept": loaded["trials_per_second"] / alone["trials_per_second"],
    }
    r = result["ratios"]
    print(f"predict_batch p95 {r['predict_batch_p95']:.2f}x idle (target <= 3x); predict p99 {r['predict_p99']:.2f}x "
          f"idle (target <= 2x); training keeps {r['trials_kept']:.0%} of its trials per second (target >= 75%)",
          flush=True)
    return result


def fmt(stats):
    return "; ".join(f"{k} p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms "
                     f"({s['calls']} calls)" for k, s in stats.items() if s["calls"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predict-clients", type=int, default=8)
    ap.add_argument("--batch-clients", type=int, default=4)
    ap.add_argument("--predict-every", type=float, default=0.05, help="seconds between a client's predict calls")
    ap.add_argument("--batch-every", type=float, default=0.5, help="seconds between a client's predict_batch calls")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the idle measurement")
    ap.add_argument("--budget", type=float, default=12.0, help="time_budget of each measured training")
    ap.add_argument("--baseline", action="store_true",
                    help="also run with workload classes off (interactive_seconds 0, training_nice 0)")
    ap.add_argument("--out", default="bench/results/workload.json")
    args = ap.parse_args(argv)
    from sqlml.devcluster import throwaway

    cluster = throwaway("sqlml-bench-workload-")
    dsn = cluster.create_database("bench")
    load = os.getloadavg()
    print(f"command: {' '.join(sys.argv)}; {os.cpu_count()} cores; load average at start "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    try:
        conn = connect(dsn)
        row = setup(conn)
        settings = run(conn, "SELECT name, setting, source FROM sqlml.governor_settings()")
        print("settings: " + ", ".join(f"{n}={s} ({src})" for n, s, src in settings), flush=True)
        conn.close()
        results = {"settings": settings, "with workload classes": measure(dsn, args, row, "")}
        if args.baseline:
            configure(dsn, interactive_seconds="0", training_nice="0")
            results["without (interactive_seconds 0, training_nice 0)"] = measure(dsn, args, row, "off")
    finally:
        cluster.destroy()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cores": os.cpu_count(), **results}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
