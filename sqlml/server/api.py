"""The entry points the extension's SQL functions call (GD["sqlml"] is this module). Kept thin: SPI in, SPI
out, no ML logic.

Importing this module must stay cheap and must not import the ML stack: `doctor` has to work
when a package is missing, and a backend that only scores should not load scikit-learn.
Every function here is an entry point: errors leave it as clean SQL errors (see errors.py).
"""

import os
import time

from sqlml import __version__
from sqlml.server.sql_errors import entry, hide_tracebacks

# OpenMP threads (LightGBM, scikit-learn) spin while they wait by default: beside other busy
# backends on a shared server that turned a 0.4 s LightGBM fit into 41 s (measured, 2 cores).
# Must be set before the first OpenMP library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
hide_tracebacks()  # sqlml's errors reach SQL users without PL/Python's traceback (errors.py)


@entry
def version():
    return __version__


@entry
def doctor():
    import json
    import os

    from sqlml import stack

    return json.dumps({
        "sqlml": __version__,
        "location": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "python": stack.python_info(),
        "packages": stack.check_packages(),
    })


@entry
def privileged(token):
    from sqlml.server import privileged as p

    p.execute(token)


@entry
def train(project, relation, target, task, algorithms, budget_seconds, metric, test_size, exclude, options):
    called = time.monotonic()  # time_budget counts from here: before the ML stack is imported
    from sqlml.automl.request import TrainRequest
    from sqlml.server import governing

    request = TrainRequest(project, relation, target, task, algorithms, budget_seconds, metric, test_size, exclude,
                           options)

    def job():
        from sqlml.server import training as t  # inside the job: sqlml.jobs shows the call while it imports

        return t.train(request, called)

    # a governed job: the training admits itself (slot, sample, caps) once it knows its data's size
    return governing.run("train", project, job)


@entry
def forecast(project, horizon, relation, level):
    from sqlml.server import forecasting as f

    return f.forecast(project, horizon, relation, level)


@entry
def deploy(project, strategy, version):
    from sqlml.server import deploy as d

    return d.deploy(project, strategy, version)


_predicting = None  # sqlml.server.predicting, imported by the first scoring call (it imports numpy)


def _scoring():
    """Import the scoring module once: an import statement per call would cost ~1 us a row."""
    global _predicting
    import sqlml.server.predicting

    _predicting = sqlml.server.predicting
    return _predicting


@entry
def predict(project, features, as_array=False):
    return (_predicting or _scoring()).predict(project, features, as_array)


@entry
def predict_proba(project, features, as_array=False):
    return (_predicting or _scoring()).predict_proba(project, features, as_array)


@entry
def predict_label(project, features, as_array=False):
    return (_predicting or _scoring()).predict_label(project, features, as_array)


@entry
def predict_row(project, features, row_type):
    return (_predicting or _scoring()).predict_row(project, features, row_type)


@entry
def predict_proba_row(project, features, row_type):
    return (_predicting or _scoring()).predict_proba_row(project, features, row_type)


@entry
def predict_label_row(project, features, row_type):
    return (_predicting or _scoring()).predict_label_row(project, features, row_type)


@entry
def classes(project):
    return (_predicting or _scoring()).classes(project)


@entry
def profile(relation, target):
    from sqlml.server import monitoring

    return monitoring.profile(relation, target)


@entry
def evaluate(project, relation, version):
    from sqlml.server import monitoring

    return monitoring.evaluate(project, relation, version)


@entry
def monitor(project, relation, version, moderate, major):
    from sqlml.server import monitoring as m

    return m.monitor(project, relation, version, moderate, major)


@entry
def retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds):
    from sqlml.server import monitoring

    return monitoring.retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds)


@entry
def prediction_counts():
    from sqlml.server import monitoring

    return monitoring.prediction_counts()


@entry
def job_counts():
    from sqlml.server import monitoring

    return monitoring.job_counts()


@entry
def predict_batch(project, relation, id_column):
    from sqlml.server import batch, governing

    # materialised here so that errors surface inside the entry point (and the job), not while PostgreSQL iterates
    return governing.run("predict_batch", project, lambda: list(batch.predict_batch(project, relation, id_column)),
                        rows_of=lambda chunks: sum(c[0] for c in chunks))


@entry
def explain(project, features, as_array=False):
    from sqlml.server import explaining as e

    return e.explain(project, features, as_array)


@entry
def explain_batch(project, relation, id_column):
    from sqlml.server import explaining as e

    return e.explain_batch(project, relation, id_column)


@entry
def importance(project):
    from sqlml.server import explaining as e

    return e.importance(project)


@entry
def import_model(project, onnx, task, relation, target, columns, options):
    from sqlml.server import governing

    def job():
        from sqlml.server import importing  # inside the job: sqlml.jobs shows the call while it imports

        return importing.import_model(project, onnx, task, relation, target, columns, options)

    # a governed job: the user's graph runs under the job's memory cap (admit_import)
    return governing.run("import_model", project, job)


@entry
def score(project, relation, into_table, id_column):
    from sqlml.server import batch, governing

    return governing.run("score", project, lambda: batch.score(project, relation, into_table, id_column),
                        rows_of=int)


@entry
def grant(project, role, privilege):
    from sqlml.server import grants

    grants.grant(project, role, privilege)


@entry
def revoke(project, role, privilege):
    from sqlml.server import grants

    grants.revoke(project, role, privilege)


@entry
def jobs():
    from sqlml.server import governing

    return governing.jobs()


@entry
def cancel(job_id):
    from sqlml.server import governing

    return governing.cancel(job_id)


@entry
def governor_report():
    from sqlml.server import governing

    return governing.report()


@entry
def governor_settings():
    from sqlml.server import governing

    return governing.settings_rows()
