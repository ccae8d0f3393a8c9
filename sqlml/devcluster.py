"""A PostgreSQL cluster that sqlml manages itself: the embedded default for the demo and the tests.

``Cluster(state_dir)`` keeps everything under one directory: ``data/`` (the data directory),
``run/`` (the Unix socket), ``postgres.log``. It listens on 127.0.0.1 only, with trust
authentication for local connections: a developer's sandbox, never a production server.

PostgreSQL refuses to run as root, so when root starts it the cluster runs as the ``postgres``
OS user, and the state directory must be reachable by that user: a checkout under a private
directory (``/root`` is mode 700) gets its state under /var/lib/sqlml instead, linked from the
checkout.

Also the developer setup of a checkout (``python -m sqlml.devcluster setup``, run by ``make setup``):
the venv under the state directory and the extension files, through the production installer
(``sqlml.install``), which knows nothing of dev clusters.

Standard library only: ``scripts/setup.sh`` and the test fixture use it before any venv exists.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlml import install
from sqlml.install import InstallError, pg_bindir

DEFAULT_PORT = 54329
SUPERUSER = "postgres"
PRIVATE_STATE_ROOT = Path("/var/lib/sqlml")


def service_user() -> str:
    """The OS user that runs clusters: the current one, or ``postgres`` when we are root."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as e:
            raise InstallError("running as root needs the 'postgres' OS user: run scripts/system-deps.sh") from e
        return "postgres"
    return pwd.getpwuid(os.geteuid()).pw_name


def reachable_by(user: str, path: Path) -> bool:
    """True when ``user`` can traverse every directory down to ``path`` and read it."""
    if user == pwd.getpwuid(os.geteuid()).pw_name:
        return True
    test = f"test -r '{path}'" + (f" -a -x '{path}'" if Path(path).is_dir() else "")
    return subprocess.run(["su", user, "-s", "/bin/sh", "-c", test]).returncode == 0


def as_user(user: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` as ``user`` (through su when we are root and it is another user)."""
    if os.geteuid() == 0 and user != "root":
        import shlex

        cmd = ["su", user, "-s", "/bin/sh", "-c", " ".join(shlex.quote(c) for c in cmd)]
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def project_state_dir(checkout: Path) -> Path:
    """``<checkout>/.sqlml``, or, if the service user cannot reach the checkout, a directory
    under /var/lib/sqlml that ``<checkout>/.sqlml`` links to."""
    link = checkout / ".sqlml"
    if link.is_symlink() or link.is_dir():
        return link.resolve()
    user = service_user()
    if reachable_by(user, checkout):
        link.mkdir()
        return link
    private = PRIVATE_STATE_ROOT / hashlib.sha256(str(checkout).encode()).hexdigest()[:12]
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(PRIVATE_STATE_ROOT, 0o755)
    link.symlink_to(private)
    return private


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """One cluster under ``state_dir``. All methods are idempotent."""

    state_dir: Path
    port: int = DEFAULT_PORT
    preload: tuple[str, ...] = ("pg_cron",)
    environment: dict | None = None

    def __post_init__(self):
        self.state_dir = Path(self.state_dir)
        self.user = service_user()

    @property
    def data(self) -> Path:
        return self.state_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log(self) -> Path:
        return self.state_dir / "postgres.log"

    def dsn(self, dbname: str = "sqlml", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = as_user(self.user, [os.path.join(pg_bindir(), tool), *args], env=self._env())
        if check and out.returncode != 0:
            raise InstallError(f"{tool} failed: {(out.stderr or out.stdout).strip()}\n(see {self.log})")
        return out

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(self.environment or {})
        return env

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        for d in (self.state_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, self.user)
        self._pg("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                 "--locale=C.UTF-8", "--no-sync")
        available = [lib for lib in self.preload if _library_installed(lib)]
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "shared_preload_libraries": f"'{','.join(available)}'",
            "cron.database_name": "'sqlml'",
            "fsync": "off",  # a sandbox: speed over durability
            "max_connections": "100",
            "shared_buffers": "256MB",
        }
        if "pg_cron" not in available:
            del settings["cron.database_name"]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# written by sqlml devcluster\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> None:
        self.init()
        if self.running():
            return
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-l", str(self.log), "-w", "restart")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def create_database(self, dbname: str, extension: bool = True) -> str:
        """Create ``dbname`` if absent, with ``CREATE EXTENSION sqlml CASCADE``; returns its DSN."""
        import psycopg2

        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            conn.close()
        if extension:
            install.install_database(self.dsn(dbname))
        return self.dsn(dbname)


def _library_installed(name: str) -> bool:
    return (Path(install.run([install.pg_config(), "--pkglibdir"])) / f"{name}.so").exists()


_private_pg_config: str | None = None


def private_installation() -> str:
    """This process's own copy of the PostgreSQL installation; returns its ``pg_config``.

    PostgreSQL finds its share directory (and so the extension scripts CREATE EXTENSION reads)
    relative to the real path of its binaries, so a copy of the bin directory beside a share
    directory of symlinks is an installation of its own: the real one's files, but an extension
    directory that only this process writes. Two checkouts (or CI and a developer) testing at
    once then never read each other's sqlml scripts. Made once per process, removed at exit;
    ``PG_CONFIG`` is set to it, so every ``sqlml.install`` step of this process (and of the
    commands it starts) targets it.
    """
    global _private_pg_config
    if _private_pg_config is None:
        import atexit
        import tempfile

        real = Path(pg_bindir())
        share = Path(install.run([os.path.join(real, "pg_config"), "--sharedir"]))
        pkglib = Path(install.run([os.path.join(real, "pg_config"), "--pkglibdir"]))
        root = Path(tempfile.mkdtemp(prefix="sqlml-pg-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        # the layout of the real one relative to a common prefix: <root>/lib/postgresql/15/bin, ...
        prefix = Path(os.path.commonpath([real, share, pkglib]))
        bindir = root / real.relative_to(prefix)
        shutil.copytree(real, bindir, symlinks=True)
        (root / pkglib.relative_to(prefix)).symlink_to(pkglib)
        private_share = root / share.relative_to(prefix)
        (private_share / "extension").mkdir(parents=True)
        for entry in share.iterdir():
            if entry.name != "extension":
                (private_share / entry.name).symlink_to(entry)
        for entry in (share / "extension").iterdir():
            if not entry.name.startswith("sqlml"):  # sqlml's own files: this checkout's, written later
                (private_share / "extension" / entry.name).symlink_to(entry)
        for d in [root, *root.rglob("*")]:  # the server's OS user reads it
            if d.is_dir() and not d.is_symlink():
                d.chmod(0o755)
        _private_pg_config = str(bindir / "pg_config")
        os.environ["PG_CONFIG"] = _private_pg_config
    return _private_pg_config


def throwaway(prefix: str = "sqlml-", site_packages: str | None = None) -> Cluster:
    """A started cluster in a new temporary directory, on a free port, for tests and benchmarks.

    It runs from this process's private copy of the PostgreSQL installation
    (``private_installation``). Its server imports sqlml from ``site_packages`` (default: this
    interpreter's, i.e. the code at hand). This checkout's extension files are built into that
    installation's extension directory first (milliseconds), so a cluster never depends on
    another having been made before it. The caller destroys it.
    """
    import sysconfig
    import tempfile

    private_installation()
    site = site_packages or sysconfig.get_paths()["purelib"]
    install.install_files(Path(sysconfig.get_paths()["purelib"]).parents[2])
    state = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(state, 0o755)
    shutil.chown(state, service_user())
    cluster = Cluster(state, port=free_port(), environment={"SQLML_SITE_PACKAGES": site})
    cluster.start()
    return cluster


def setup_checkout() -> Path:
    """The developer setup of a checkout: venv under the state directory, extension files.

    Returns the venv. The cluster user must be able to read the code an editable install points
    at; when it cannot (a checkout under /root), the package is copied into the venv instead and
    a code change needs ``make setup`` again.
    """
    venv = project_state_dir(install.CHECKOUT) / "venv"
    editable = reachable_by(service_user(), install.CHECKOUT / "sqlml" / "__init__.py")
    if not editable:
        print(f"setup: {service_user()} cannot read {install.CHECKOUT}; installing a copy "
              "(re-run `make setup` after changes)")
    install.make_venv(venv, ("dev", "bench"), editable=editable)
    install.install_files(venv)
    return venv


def main(argv=None) -> int:
    """``python -m sqlml.devcluster setup | python`` (used by scripts/setup.sh)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["python"]:
            print(install.server_python())
        elif argv[:1] == ["setup"]:
            print(setup_checkout())
        else:
            print(main.__doc__, file=sys.stderr)
            return 2
    except install.InstallError as e:
        print(f"sqlml setup: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
