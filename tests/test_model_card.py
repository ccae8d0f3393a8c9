"""The model card: `sqlml report` writes one self-contained HTML page per model, which headless
Chromium (Debian's package) renders with every picture loaded, for each task's plots."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

from sqlml import samples
from tests.conftest import query

BUDGET = "3 seconds"
BROWSER_SECONDS = 90
PROJECTS = {"bc": ("breast_cancer", "diagnosis", "ROC curve"), "iris": ("iris", "species", "Confusion matrix"),
            "diab": ("diabetes", "progression", "Predicted vs actual and residuals")}


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    for project, (relation, target, _) in PROJECTS.items():
        query(conn, f"SELECT * FROM sqlml.train(%s, %s, %s, time_budget => '{BUDGET}')", (project, relation, target))
    for cut in (300, 569):
        query(conn, "SELECT * FROM sqlml.evaluate('bc', %s)", (f"SELECT * FROM breast_cancer WHERE id <= {cut}",))
    query(conn, "SELECT * FROM sqlml.monitor('bc', 'SELECT * FROM breast_cancer WHERE id > 200')")
    yield conn
    conn.close()


def report(dsn, project, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sqlml.cli", "report", project, "--out", str(out), "--dsn", dsn,
                           *extra],
                          capture_output=True, text=True, timeout=120)


def chromium(*args, user_dir: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed (scripts/system-deps.sh installs it)"
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                           f"--user-data-dir={user_dir}", *args], capture_output=True, text=True,
                          timeout=BROWSER_SECONDS)


# Appended to a copy of the card: after load, write what the browser made of each picture into the page.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = 'images=' + imgs.length + ' loaded=' + imgs.filter(i => i.complete && i.naturalWidth > 0).length
    + ' sizes=' + imgs.map(i => i.naturalWidth + 'x' + i.naturalHeight).join(',');
  document.body.appendChild(out);
});</script>"""


@pytest.mark.parametrize("project", list(PROJECTS))
def test_report_renders_in_chromium_with_its_pictures(db, dsn, project, tmp_path):
    card = tmp_path / f"{project}.html"
    done = report(dsn, project, card)
    assert done.returncode == 0, done.stderr
    page = card.read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    assert PROJECTS[project][2] in page and "Leaderboard" in page and "Training data profile" in page
    assert "Mean absolute contribution of each feature" in page  # sqlml.importance's figures, not permutation
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as user_dir:
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), user_dir=Path(user_dir))
    m = re.search(r"images=(\d+) loaded=(\d+) sizes=([\dx,]*)", dom.stdout)
    assert m, dom.stderr[-2000:]
    images, loaded = int(m.group(1)), int(m.group(2))
    expected = {"bc": 3, "iris": 2, "diab": 2}[project]  # performance plot(s), importance, drift, evaluation history
    assert images >= expected and loaded == images, m.group(0)
    assert all(int(w) > 100 and int(h) > 100 for w, h in (s.split("x") for s in m.group(3).split(",")))


def test_screenshot_is_not_blank(db, dsn, tmp_path):
    from matplotlib.image import imread

    card = tmp_path / "bc.html"
    assert report(dsn, "bc", card).returncode == 0
    shot = tmp_path / "bc.png"
    with tempfile.TemporaryDirectory() as user_dir:
        chromium("--window-size=1100,1400", f"--screenshot={shot}", card.as_uri(), user_dir=Path(user_dir))
    pixels = imread(shot)
    assert pixels.shape[0] == 1400 and pixels.shape[1] == 1100
    colours = {tuple(p) for p in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 50  # text, tables and plots, not an empty page


def test_report_errors(db, dsn, tmp_path):
    missing = report(dsn, "nope", tmp_path / "x.html")
    assert missing.returncode == 1 and 'project "nope" does not exist' in missing.stderr
    version = report(dsn, "bc", tmp_path / "x.html", "--version", "9")
    assert version.returncode == 1 and "no model version 9" in version.stderr
    assert not (tmp_path / "x.html").exists()


def test_card_reads_as_text_not_python(db, dsn, tmp_path):
    """No Python reprs, quantiles in order, a leaderboard of one row per algorithm with readable parameters."""
    pages = {}
    for project in ("bc", "diab"):
        assert report(dsn, project, tmp_path / f"{project}.html").returncode == 0
        pages[project] = (tmp_path / f"{project}.html").read_text()
    for project, page in pages.items():
        text = re.sub(r"<[^>]+>|data:image/png;base64,[^\"]+", " ", page)
        assert not re.search(r"\b(True|False|None)\b", text), re.findall(r".{60}\b(?:True|False|None)\b.{20}", text)
        assert "ONNX parity" in page and "passed on " in page
        board = page.split("<h2>Leaderboard</h2>")[1].split("<h2>")[0]
        tried = int(re.search(r"(\d+) candidates tried", board).group(1))
        [(algorithms, trials)] = query(db, "SELECT count(DISTINCT algorithm), count(*) FROM sqlml.trials "
                                           "WHERE project = %s", (project,))  # one training per project here
        assert tried == trials and board.count("<tr>") - 1 == algorithms  # one row per algorithm (minus the header)
        assert '{"' not in board  # parameters as "name value", not truncated JSON
    quantiles = re.search(r"residual quantile.*?</table>", pages["diab"], re.S).group(0)
    assert [float(q) for q in re.findall(r"<td>(0\.\d+)</td><td", quantiles)] == [0.05, 0.25, 0.5, 0.75, 0.95]
