#!/usr/bin/env bash
# Install what sqlml needs from the operating system, idempotently, on Debian/Ubuntu:
# a PostgreSQL server, PL/Python, the server headers, pg_cron and pgvector.
# Safe to run again: it installs only what is missing.
set -euo pipefail

log() { echo "system-deps: $*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "system-deps: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

updated=0
apt_update() { [ "$updated" = 1 ] || { $SUDO apt-get update -qq; updated=1; }; }
missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
apt_install() {
  local want=()
  for p in "$@"; do missing "$p" && want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "apt-get install ${want[*]}"
  apt_update
  $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# The server, unless one is already there. The distribution's default major version wins.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt_install postgresql postgresql-contrib
fi
PGMAJOR=${PGMAJOR:-$(ls /usr/lib/postgresql | sort -n | tail -n 1)}
log "PostgreSQL major version $PGMAJOR"

apt_install "postgresql-plpython3-$PGMAJOR" "postgresql-server-dev-$PGMAJOR" \
  "postgresql-$PGMAJOR-cron" python3-venv python3-dev build-essential dpkg-dev ca-certificates

PG_CONFIG="/usr/lib/postgresql/$PGMAJOR/bin/pg_config"
[ -x "$PG_CONFIG" ] || PG_CONFIG=pg_config
EXTDIR="$($PG_CONFIG --sharedir)/extension"

# pgvector: the distribution's package where one exists, otherwise built from Debian's source package.
if [ ! -f "$EXTDIR/vector.control" ]; then
  apt_update
  if apt-cache show "postgresql-$PGMAJOR-pgvector" >/dev/null 2>&1; then
    apt_install "postgresql-$PGMAJOR-pgvector"
  else
    log "no postgresql-$PGMAJOR-pgvector package; building pgvector from Debian's source package"
    src=/etc/apt/sources.list.d/sqlml-pgvector-src.sources
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' | $SUDO tee "$src" >/dev/null
    build=$(mktemp -d)
    trap '$SUDO rm -f "$src"; rm -rf "$build"' EXIT
    $SUDO apt-get update -qq -o Dir::Etc::sourcelist="$src" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
    (cd "$build" && apt-get source -qq pgvector >/dev/null 2>&1 && cd pgvector-*/ \
      && make -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null && $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null)
  fi
  [ -f "$EXTDIR/vector.control" ] || { echo "system-deps: pgvector did not install into $EXTDIR" >&2; exit 1; }
fi
# A database server (docker/Dockerfile) needs only the above; what follows serves development and tests.
if [ "${SQLML_SERVER_ONLY:-0}" = 1 ]; then
  log "ok: PostgreSQL $PGMAJOR with plpython3u, pgvector and pg_cron (SQLML_SERVER_ONLY: nothing else)"
  exit 0
fi
# Operations: the Prometheus exporter that serves sqlml's metrics (integrations/prometheus), and a
# headless browser to render and check the HTML model card (`sqlml report`). sqlml starts the
# exporter itself (tests, on loopback): the service the package enables under systemd is stopped
# when this script installs the package, so that no exporter listens on all interfaces by surprise.
fresh_exporter=0
missing prometheus-postgres-exporter && fresh_exporter=1
apt_install prometheus-postgres-exporter chromium fonts-dejavu-core
if [ "$fresh_exporter" = 1 ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus-postgres-exporter >/dev/null 2>&1 || true
fi
# Connection poolers: tests/test_poolers.py runs sqlml through its own pgbouncer (transaction
# pooling, on loopback); the service the package enables under systemd is stopped, as above.
fresh_pgbouncer=0
missing pgbouncer && fresh_pgbouncer=1
apt_install pgbouncer
if [ "$fresh_pgbouncer" = 1 ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi
# Spark scale-out (sqlml.spark, tests/test_spark.py): a Java runtime for PySpark and PostgreSQL's JDBC driver
# (/usr/share/java/postgresql.jar) for Spark's JDBC source.
if ! command -v java >/dev/null 2>&1; then
  apt_install openjdk-17-jre-headless
fi
apt_install libpostgresql-jdbc-java

log "ok: PostgreSQL $PGMAJOR with plpython3u, pgvector and pg_cron; pgbouncer; Java and the PostgreSQL JDBC driver"
