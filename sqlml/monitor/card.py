"""The model card: one self-contained HTML page about a model, its pictures embedded as PNG.

``collect(ex, project, version)`` reads what the card shows from the registry (through an
:class:`sqlml.executor.Executor`, as the connected role: row-level security applies);
``render(card)`` draws it. Everything plotted was stored at training (column ``diagnostics``:
holdout predictions of the registered ONNX model, summarised; ``importance``: permutation
importance on the holdout) or by ``sqlml.evaluate`` / ``sqlml.monitor`` since: the card never
reads the training data again, and says where each picture comes from.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime

from sqlml.errors import OBJECT_NOT_IN_PREREQUISITE_STATE, UNDEFINED_OBJECT, SqlmlError

IMPORTANCE_BARS = 20
HISTORY_ROWS = 20


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def collect(ex, project: str, version: int | None = None) -> dict:
    """Everything the card shows, as plain data. ``version`` None: the deployed one, else the latest."""
    rows = ex.execute("SELECT name, task, target, owner, created_at FROM sqlml.projects WHERE name = $1", [project])
    if not rows:
        raise SqlmlError(f'project "{project}" does not exist (or you may not read it)', sqlstate=UNDEFINED_OBJECT,
                         hint="SELECT name FROM sqlml.projects lists the projects you may read")
    card = {"project": rows[0]}
    deployed = ex.execute("SELECT version, deployed_at, strategy FROM sqlml.deployed WHERE project = $1", [project])
    card["deployed"] = deployed[0] if deployed else None
    if version is None:
        version = deployed[0]["version"] if deployed else None
    where = "project = $1 AND version = $2" if version is not None else "project = $1 ORDER BY version DESC LIMIT 1"
    params = [project, version] if version is not None else [project]
    models = ex.execute(
        "SELECT id, version, algorithm, task, metric, score, metrics, hyperparameters, feature_schema, classes, "
        "sha256, opset, parity, relation, rows, data_fingerprint, library_versions, created_by, created_at, "
        f"train_seconds, profile, importance, diagnostics FROM sqlml.models WHERE {where}", params)
    if not models:
        raise SqlmlError(f'project "{project}" has no model' + (f" version {version}" if version else "s"),
                         sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE, hint="train one: SELECT * FROM sqlml.train(...)")
    model = models[0]
    for key in ("metrics", "hyperparameters", "feature_schema", "parity", "library_versions", "profile",
                "importance", "diagnostics", "classes"):
        model[key] = _json(model[key])
    card["model"] = model
    card["trials"] = ex.execute(
        "SELECT n, algorithm, status, score, fit_seconds, params FROM sqlml.trials "
        "WHERE project = $1 AND model_version = $2 ORDER BY n", [project, model["version"]])
    card["deployments"] = ex.execute(
        "SELECT version, strategy, deployed_by, deployed_at, reason FROM sqlml.deployments WHERE project = $1 "
        f"ORDER BY id DESC LIMIT {HISTORY_ROWS}", [project])
    card["evaluations"] = ex.execute(
        "SELECT version, relation, rows, metrics, evaluated_at FROM sqlml.evaluations WHERE project = $1 "
        f"ORDER BY id DESC LIMIT {HISTORY_ROWS}", [project])
    card["drift"] = ex.execute(
        "SELECT version, relation, feature, what, psi, drift, rows, measured_at FROM sqlml.drift "
        "WHERE project = $1 AND measured_at = (SELECT max(measured_at) FROM sqlml.drift WHERE project = $1) "
        "ORDER BY psi DESC", [project])
    for e in card["evaluations"]:
        e["metrics"] = _json(e["metrics"])
    return card


# --- pictures ---------------------------------------------------------------------------------

def _figure(width=5.0, height=3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, alt: str) -> str:
    """An <img> with the figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def roc_plot(roc: dict) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(roc["fpr"], roc["tpr"], color="#1f6feb", lw=2, label=f'ROC (AUC {roc["auc"]:.3f})')
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f'ROC curve, positive class "{roc["positive"]}"')
    ax.legend(loc="lower right")
    return _png(fig, "ROC curve")


def confusion_plot(confusion: dict) -> str:
    import numpy as np

    matrix = np.asarray(confusion["matrix"], dtype=float)
    classes = confusion["classes"]
    k = len(classes)
    fig = _figure(max(4.0, 0.5 * k + 2.5), max(3.4, 0.45 * k + 2))
    ax = fig.add_subplot()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (holdout)")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                        color="white" if shares[i, j] > 0.6 else "black", fontsize=9)
    return _png(fig, "Confusion matrix")


def residual_plots(diag: dict) -> str:
    import numpy as np

    actual, predicted = np.asarray(diag["actual"]), np.asarray(diag["predicted"])
    fig = _figure(9.0, 3.6)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    left.scatter(actual, predicted, s=8, alpha=0.6, color="#1f6feb")
    left.plot([lo, hi], [lo, hi], color="#999", ls="--", lw=1)
    left.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (holdout)")
    right.scatter(predicted, actual - predicted, s=8, alpha=0.6, color="#d1242f")
    right.axhline(0, color="#999", ls="--", lw=1)
    right.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals (holdout)")
    return _png(fig, "Predicted vs actual and residuals")


def forecast_plots(diag: dict) -> str:
    """Per stored series: history, the backtest forecast with its interval, and the actuals."""
    import numpy as np

    series = diag["series"]
    fig = _figure(9.0, 2.6 * max(len(series), 1))
    for k, s in enumerate(series):
        ax = fig.add_subplot(len(series), 1, k + 1)
        hist_ts = np.array(s["history_ts"], dtype="datetime64[s]")
        ts = np.array(s["ts"], dtype="datetime64[s]")
        ax.plot(hist_ts, s["history"], color="#444", lw=1, label="history")
        ax.fill_between(ts, s["lower"], s["upper"], color="#1f6feb", alpha=0.2,
                        label=f"{round(diag['level'] * 100)}% interval")
        ax.plot(ts, s["forecast"], color="#1f6feb", lw=1.5, label="forecast")
        actual = np.array([np.nan if v is None else v for v in s["actual"]], dtype=float)
        ax.plot(ts, actual, color="#d1242f", lw=1, ls="--", label="actual")
        ax.set_title(", ".join(f"{k}={v}" for k, v in s["series"].items()) or "the series", fontsize=9)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig, "History, forecast and interval")


def importance_plot(features: list[dict], unit: str) -> str:
    top = features[:IMPORTANCE_BARS][::-1]
    fig = _figure(6.0, max(2.5, 0.3 * len(top) + 1.2))
    ax = fig.add_subplot()
    ax.barh([f["feature"] for f in top], [f["importance"] for f in top], color="#2da44e")
    ax.set(xlabel=f"mean |contribution| to the {unit}", title="Feature importance (holdout)")
    return _png(fig, "Feature importance")


RAW_OUTPUT = {"binary": "log-odds (probability for forests)", "multiclass": "class scores, summed over classes",
              "regression": "predicted value"}


def drift_plot(drift: list[dict]) -> str:
    rows = drift[:IMPORTANCE_BARS][::-1]
    colors = {"none": "#2da44e", "moderate": "#d4a72c", "major": "#d1242f"}
    fig = _figure(6.0, max(2.5, 0.3 * len(rows) + 1.2))
    ax = fig.add_subplot()
    ax.barh([r["feature"] for r in rows], [r["psi"] for r in rows], color=[colors[r["drift"]] for r in rows])
    for x in (0.1, 0.25):
        ax.axvline(x, color="#999", ls="--", lw=1)
    ax.set(xlabel="population stability index", title="Drift at the latest sqlml.monitor call")
    return _png(fig, "Drift per feature")


def evaluation_plot(evaluations: list[dict], metric: str) -> str | None:
    points = [(e["evaluated_at"], e["metrics"].get(metric)) for e in reversed(evaluations)
              if e["metrics"].get(metric) is not None]
    if len(points) < 2:
        return None
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    from matplotlib import dates

    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="#1f6feb")
    ax.set(ylabel=metric, title=f"{metric} on newly labelled rows over time")
    locator = dates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    return _png(fig, f"{metric} over time")


# --- the page -----------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits=4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else f"{value:.{digits}f}"
    return _e(value)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if isinstance(value, datetime) else _e(value)


def _table(headers: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """A table of already escaped cells; ``headers`` None: no header row."""
    head = "" if headers is None else "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">{head}<tbody>{body}</tbody></table>'


CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #57606a; margin-bottom: 16px; }
.facts { display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; margin: 12px 0; }
.fact { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px; }
.fact b { display: block; font-size: 18px; } .fact span { color: #57606a; font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #57606a; font-size: 12px; margin: 2px 0 8px; }
.warn { color: #9a6700; } .block { color: #d1242f; font-weight: 600; }
.pics { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
img { max-width: 100%; border: 1px solid #d0d7de; border-radius: 6px; }
code { background: #f6f8fa; padding: 0 4px; border-radius: 4px; }
"""


def render(card: dict) -> str:
    """The card as one HTML document (UTF-8, no external resources)."""
    p, m = card["project"], card["model"]
    metrics = m["metrics"] or {}
    holdout = metrics.get("holdout", {})
    deployed = card["deployed"]
    live = deployed is not None and deployed["version"] == m["version"]
    parts = [f"<h1>Model card: {_e(p['name'])} version {_e(m['version'])}</h1>",
             f'<div class="sub">{_e(m["task"])} model predicting <code>{_e(p["target"])}</code> from '
             f'<code>{_e(m["relation"])}</code>; {"deployed" if live else "not deployed"}'
             + (f" (the deployed version is {_e(deployed['version'])})" if deployed and not live else "")
             + f"; generated {_when(datetime.now().astimezone())}</div>"]
    facts = [(m["algorithm"], "algorithm"), (_num(m["score"]), f"holdout {m['metric']}"),
             (_num(metrics.get("holdout_rows")), "holdout rows"), (_num(m["rows"]), "training relation rows")]
    parts.append('<div class="facts">' + "".join(f'<div class="fact"><b>{_e(v) if not isinstance(v, str) else v}</b>'
                                                 f"<span>{_e(k)}</span></div>" for v, k in facts) + "</div>")
    parts += _metrics_section(m, holdout, metrics, card["evaluations"])
    parts += _performance_section(m)
    parts += _importance_section(m)
    parts += _leaderboard_section(p["name"], m, card["trials"])
    parts += _drift_section(card["drift"])
    parts += _profile_section(m["profile"])
    parts += _lineage_section(p, m, card["deployments"])
    title = f"sqlml model card: {p['name']} v{m['version']}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def _metrics_section(m, holdout, metrics, evaluations) -> list[str]:
    out = ["<h2>Metrics</h2>"]
    validation = metrics.get("validation", {})
    rows = [[_e(k), _num(v)] for k, v in holdout.items()]
    out.append(_table(["metric", f"holdout ({_num(metrics.get('holdout_rows'))} rows)"], rows))
    if validation:
        out.append(f'<p class="note">Search: {_e(validation.get("method"))} {_e(m["metric"])} '
                   f"{_num(validation.get(m['metric']))} on {_num(metrics.get('train_rows'))} training rows.</p>")
    if evaluations:
        names = list(evaluations[0]["metrics"])
        rows = [[_when(e["evaluated_at"]), _e(e["version"]), _e(e["relation"]), _num(e["rows"])]
                + [_num(e["metrics"].get(k)) for k in names] for e in evaluations]
        out.append("<p>On newly labelled rows (<code>sqlml.evaluate</code>), newest first:</p>")
        out.append(_table(["evaluated", "version", "relation", "rows", *names], rows))
        pic = evaluation_plot(evaluations, m["metric"])
        if pic:
            out.append(pic)
    else:
        out.append('<p class="note">No evaluation on new labels yet: <code>SELECT * FROM sqlml.evaluate(project, '
                   "relation)</code> adds one.</p>")
    return out


def _performance_section(m) -> list[str]:
    diag = m["diagnostics"]
    out = ["<h2>Performance on the holdout</h2>"]
    if not diag:
        return out + ['<p class="note">This version has no stored holdout diagnostics (trained before sqlml stored '
                      "them).</p>"]
    if m["task"] == "forecast":
        return ["<h2>Forecasts on the backtest</h2>", forecast_plots(diag),
                f'<p class="note">Source: {_e(diag["source"])}, stored at training for the largest series. '
                "Not recomputed for the card.</p>"]
    pics = []
    if diag.get("roc"):
        pics.append(roc_plot(diag["roc"]))
    if diag.get("confusion"):
        pics.append(confusion_plot(diag["confusion"]))
    if diag.get("actual"):
        pics.append(residual_plots(diag))
        q = diag.get("residual_quantiles", {})  # jsonb keeps keys shortest first ("0.5" before "0.05")
        pics.append(_table(["residual quantile", "value"],
                           [[_e(k), _num(q[k])] for k in sorted(q, key=float)]))
    out.append('<div class="pics">' + "".join(pics) + "</div>")
    out.append(f'<p class="note">Source: {_e(diag["source"])} ({_num(diag["rows"])} rows)'
               + (f'; the residual plots show a sample of {len(diag["actual"])}' if diag.get("actual") else "")
               + ". Not recomputed for the card.</p>")
    return out


def _importance_section(m) -> list[str]:
    imp = m["importance"]
    out = ["<h2>Feature importance</h2>"]
    if not imp or not imp.get("features"):
        return out + [f'<p class="note">Not available: {_e((imp or {}).get("note", "not computed for this version"))}.'
                      "</p>"]
    out.append(importance_plot(imp["features"], RAW_OUTPUT.get(m["task"], "raw output")))
    shown = len(imp["features"][:IMPORTANCE_BARS])
    top = f"the {shown} most important of {len(imp['features'])} shown" if shown < len(imp["features"]) else "all shown"
    out.append(f'<p class="note">Mean absolute contribution of each feature to the registered model\'s raw output '
               f'(exact TreeSHAP or linear contributions, as <code>sqlml.explain</code> gives them), at training '
               f'({top}): {_e(imp["note"])}.</p>')
    return out


def params_text(params) -> str:
    """Hyperparameters as a reader writes them: ``learning_rate 0.05, num_leaves 31``, numbers to 4
    significant digits, nested values (an ensemble's members) as compact JSON."""
    items = []
    for k, v in sorted((params or {}).items()):
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, sort_keys=True, separators=(",", ":"))
        items.append(f"{k} {v}")
    return ", ".join(items)


def leaderboard(trials: list[dict], higher: bool) -> list[dict]:
    """One row per algorithm, best first: its best trial, how many it ran and how many failed
    (project names never hold a quote, so the SQL in the note needs no escaping beyond HTML)."""
    by_algorithm: dict[str, dict] = {}
    for t in trials:
        row = by_algorithm.setdefault(t["algorithm"],
                                      {"algorithm": t["algorithm"], "best": None, "tried": 0, "failed": 0})
        row["tried"] += 1
        if t["score"] is None:
            row["failed"] += 1
        elif row["best"] is None or (t["score"] > row["best"]["score"] if higher
                                     else t["score"] < row["best"]["score"]):
            row["best"] = t
    scored = sorted((r for r in by_algorithm.values() if r["best"]),
                    key=lambda r: -r["best"]["score"] if higher else r["best"]["score"])
    return scored + [r for r in by_algorithm.values() if not r["best"]]


def _leaderboard_section(project: str, m, trials) -> list[str]:
    from sqlml.automl.metrics import HIGHER_IS_BETTER

    higher = HIGHER_IS_BETTER.get(m["metric"], True)
    rows = [[_num(i + 1) if r["best"] else "", _e(r["algorithm"]), _num(r["best"]["score"]) if r["best"] else "failed",
             f'{r["tried"]}' + (f' ({r["failed"]} failed)' if r["failed"] else ""),
             _num(r["best"]["fit_seconds"], 2) if r["best"] else "",
             _e(params_text(_json(r["best"]["params"]))) if r["best"] else ""]
            for i, r in enumerate(leaderboard(trials, higher))]
    out = ["<h2>Leaderboard</h2>",
           f'<p class="note">{len(trials)} candidates tried by the training of version {_e(m["version"])}; the best of '
           f"each algorithm (validation {_e(m['metric'])}, {'higher' if higher else 'lower'} is better). Every trial: "
           f"<code>SELECT * FROM sqlml.leaderboard WHERE project = '{_e(project)}'</code>.</p>"]
    return out + [_table(["rank", "algorithm", f"best {m['metric']}", "trials", "fit s", "parameters"], rows)]


def _drift_section(drift) -> list[str]:
    out = ["<h2>Drift</h2>"]
    if not drift:
        return out + ['<p class="note">Not monitored yet: <code>SELECT * FROM sqlml.monitor(project, relation)</code>.'
                      "</p>"]
    first = drift[0]
    out.append(f'<p class="note">Latest <code>sqlml.monitor</code>: {_e(first["relation"])}, '
               f'{_num(first["rows"])} rows, '
               f'{_when(first["measured_at"])}, version {_e(first["version"])}.</p>')
    return out + [drift_plot(drift)]


def _profile_section(profile) -> list[str]:
    out = ["<h2>Training data profile</h2>"]
    if not profile:
        return out + ['<p class="note">No profile stored for this version.</p>']
    rows = []
    for c in profile["columns"]:
        warnings = "<br>".join(f'<span class="{"block" if w["blocking"] else "warn"}">{_e(w["code"])}</span>: '
                               f'{_e(w["message"])}' for w in c["warnings"])
        rows.append([_e(c["name"]) + (" (target)" if c.get("target") else ""), _e(c["type"]), _e(c["kind"]),
                     f'{c["null_share"]:.1%}', _num(c["distinct"]), _num(c["min"]), _num(c["max"]), _num(c["mean"]),
                     warnings])
    out.append(f'<p class="note">{_num(profile["rows"])} rows, {profile["warnings"]} warnings '
               "(<code>sqlml.profile</code> at training).</p>")
    return out + [_table(["column", "type", "kind", "NULL", "distinct", "min", "max", "mean", "warnings"], rows)]


def parity_text(parity: dict) -> str:
    """The stored ONNX parity check in words (never Python reprs such as True or None)."""
    if not parity:
        return "not recorded"
    verdict = "passed" if parity.get("ok") else f"failed ({parity.get('reason')})"
    text = (f"{verdict} on {parity.get('rows')} holdout rows: labels differ on {parity.get('label_mismatch', 0):.2%} "
            f"of them, largest relative error {parity.get('max_relative_error', 0):.2g}")
    rejected = parity.get("rejected") or []
    return text + "".join(f"; {r['algorithm']} not registered ({r['reason']})" for r in rejected)


def _lineage_section(p, m, deployments) -> list[str]:
    libs = ", ".join(f"{k} {v}" for k, v in sorted((m["library_versions"] or {}).items()))
    parity = m["parity"] or {}
    facts = [("trained on", f"<code>{_e(m['relation'])}</code>, {_num(m['rows'])} rows"),
             ("data fingerprint", f"<code>{_e(m['data_fingerprint'])}</code>"),
             ("trained by", f"{_e(m['created_by'])}, {_when(m['created_at'])}, {_num(m['train_seconds'], 3)} s"),
             ("model", f"ONNX opset {_e(m['opset'])}, sha256 <code>{_e(m['sha256'])}</code>"),
             ("ONNX parity", _e(parity_text(parity))),
             ("hyperparameters", _e(params_text(m["hyperparameters"]))),
             ("libraries", _e(libs)), ("project", f"owner {_e(p['owner'])}, created {_when(p['created_at'])}")]
    out = ["<h2>Lineage</h2>", _table(None, [[f"<b>{k}</b>", v] for k, v in facts], "lineage")]
    if deployments:
        rows = [[_when(d["deployed_at"]), _e(d["version"]), _e(d["strategy"]), _e(d["deployed_by"]),
                 _e((_json(d["reason"]) or {}).get("why", ""))] for d in deployments]
        out += ["<p>Deployments, newest first:</p>", _table(["when", "version", "strategy", "by", "why"], rows)]
    return out
