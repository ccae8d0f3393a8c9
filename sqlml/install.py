"""Install sqlml into a PostgreSQL server: the server-side venv, the extension files, the database.

PL/Python runs the interpreter the server was linked against, not the ``python3`` on PATH, so the
server-side venv is made with that interpreter (found from ``plpython3.so``'s libpython).
The extension directory then gets the control file, the SQL scripts, ``sqlml_boot.py`` and
``sqlml.python`` (the venv's site-packages path: the setting each backend reads once, on the
first call of any sqlml function).

Standard library only (psycopg2 is imported lazily): the developer setup of a checkout
(``sqlml.devcluster``, run by ``scripts/setup.sh``) uses it before the venv exists.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlml import __version__

CHECKOUT = Path(__file__).resolve().parent.parent
# The extension's files ship in the checkout's sql/ or, installed from a wheel, in <prefix>/share/sqlml.
SQL_DIRS = (CHECKOUT / "sql", Path(sys.prefix) / "share" / "sqlml")


class InstallError(RuntimeError):
    """An installation step failed; the message says which and how to fix it."""


def run(cmd, **kwargs) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if out.returncode != 0:
        raise InstallError(f"{' '.join(map(str, cmd))} failed:\n{out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def pg_config() -> str:
    """Path of pg_config: $PG_CONFIG, else the newest /usr/lib/postgresql/N, else PATH."""
    if os.environ.get("PG_CONFIG"):
        return os.environ["PG_CONFIG"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_config"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which("pg_config")
    if not path:
        raise InstallError("pg_config not found: install postgresql-server-dev-NN or set PG_CONFIG")
    return path


def pg_bindir() -> str:
    return run([pg_config(), "--bindir"])


def extension_dir() -> Path:
    return Path(run([pg_config(), "--sharedir"])) / "extension"


def server_python() -> str:
    """The interpreter PL/Python embeds: the python3.X whose libpython plpython3.so links to."""
    lib = Path(run([pg_config(), "--pkglibdir"])) / "plpython3.so"
    if not lib.exists():
        raise InstallError(f"{lib} not found: install postgresql-plpython3-NN (scripts/system-deps.sh does)")
    match = re.search(r"libpython(3\.\d+)", run(["ldd", str(lib)]))
    if not match:
        raise InstallError(f"cannot tell which libpython {lib} links to (ldd shows none)")
    version = match.group(1)
    for candidate in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}", shutil.which(f"python{version}")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise InstallError(f"PL/Python links libpython{version} but no python{version} executable was found")


def sql_dir() -> Path:
    for d in SQL_DIRS:
        if (d / "sqlml.sql").exists():
            return d
    raise InstallError(f"sqlml's SQL files not found in {', '.join(map(str, SQL_DIRS))}")


def site_packages(venv: Path) -> str:
    return run([str(Path(venv) / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])


def server_requirements(requirements: list[str]) -> list[str]:
    """The requirements of the server-side venv among sqlml's metadata (``importlib.metadata.requires``):
    the package's own and those of its ``server`` extra, markers removed."""
    out = []
    for r in requirements:
        spec, _, marker = r.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if extra is None or extra.group(1) == "server":
            out.append(spec.strip())
    return out


def make_venv(venv: Path, extras: tuple[str, ...] = (), editable: bool = True) -> None:
    """Create (or update) a venv with the server's interpreter and install sqlml with its pinned
    server stack (the extra ``server``; the package alone is only the client), plus ``extras``.

    From a checkout the install is editable (unless ``editable`` is false, for a checkout the
    server cannot read), so a new connection sees a code change.
    """
    venv = Path(venv)
    if not (venv / "bin" / "python").exists():
        run([server_python(), "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if (CHECKOUT / "pyproject.toml").exists():
        run(pip + (["-e"] if editable else []) + [f"{CHECKOUT}[{','.join(('server', *extras))}]"])
        package = CHECKOUT / "sqlml" if editable else None  # pip byte-compiles what it copies
    else:  # installed from a wheel: install the same pinned dependencies, then copy the package
        from importlib.metadata import requires

        run(pip + server_requirements(requires("sqlml") or []))
        package = Path(site_packages(venv)) / "sqlml"
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(Path(__file__).resolve().parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    if package is not None:
        # The server's OS user cannot write __pycache__ here: without the .pyc files every new
        # backend would compile sqlml's sources before its first call.
        run([python, "-m", "compileall", "-q", str(package)])


def install_files(venv: Path) -> Path:
    """Build the extension files into the server's extension directory and point it at ``venv``."""
    dest = extension_dir()
    if not os.access(dest, os.W_OK):
        raise InstallError(f"{dest} is not writable: run as root (or the owner of the PostgreSQL installation)")
    from sqlml.extension import build

    build(sql_dir(), dest)
    (dest / "sqlml.python").write_text(site_packages(venv) + "\n")
    os.chmod(dest / "sqlml.python", 0o644)
    return dest


def remove_files() -> None:
    dest = extension_dir()
    for f in [dest / "sqlml.control", dest / "sqlml_boot.py", dest / "sqlml.python", *dest.glob("sqlml--*.sql")]:
        f.unlink(missing_ok=True)


def connect(dsn: str):
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _execute(dsn: str, *statements: str):
    """Run ``statements`` in autocommit mode; return the first row of the last one."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()


@dataclass(frozen=True)
class DatabaseInstall:
    """What ``install_database`` did: the extension's version before (None: it was not created)
    and after, and the sqlml version the server runs."""

    before: str | None
    after: str
    server: str

    def describe(self) -> str:
        if self.before is None:
            did = f"CREATE EXTENSION sqlml: ok, extension {self.after}"
        elif self.before != self.after:
            did = (f"ALTER EXTENSION sqlml UPDATE: upgraded in place from {self.before} to {self.after} "
                   "(models, deployments, grants and history are kept)")
        else:
            did = f"extension sqlml {self.after}: already up to date"
        return f"{did}; the server runs sqlml {self.server}"


def install_database(dsn: str) -> DatabaseInstall:
    """CREATE EXTENSION sqlml, or ALTER EXTENSION sqlml UPDATE when an older version is created
    (an upgrade in place: the registry and its history stay)."""
    installed = "SELECT extversion FROM pg_extension WHERE extname = 'sqlml'"
    before = _execute(dsn, installed)
    if before is None:
        _execute(dsn, "CREATE EXTENSION sqlml CASCADE")
    elif before[0] != __version__:
        _execute(dsn, "ALTER EXTENSION sqlml UPDATE")
    return DatabaseInstall(before[0] if before else None, _execute(dsn, installed)[0],
                           _execute(dsn, "SELECT sqlml.version()")[0])


# Cluster-wide roles CREATE EXTENSION sqlml creates if absent (roles are not part of an extension).
ROLES = ("sqlml_user", "sqlml_developer", "sqlml_admin")


def uninstall_database(dsn: str) -> bool:
    """DROP EXTENSION sqlml, then its roles unless something else still uses them.

    Returns whether the roles were dropped. They are kept (all three, so sqlml elsewhere keeps
    working) when sqlml_user still holds privileges in another database, which is the case
    whenever another database of the cluster has sqlml installed, or owns anything.
    """
    _execute(dsn, "DROP EXTENSION IF EXISTS sqlml CASCADE")
    import psycopg2

    conn = connect(dsn)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))
            present = [r[0] for r in cur.fetchall()]
            if present:
                cur.execute("DROP ROLE " + ", ".join(present))  # one statement: all or none
        conn.commit()
        return True
    except psycopg2.errors.DependentObjectsStillExist:
        conn.rollback()
        return False
    finally:
        conn.close()
