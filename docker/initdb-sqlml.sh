#!/usr/bin/env bash
# Run once by the postgres image's entrypoint on a new data directory, while the server listens
# on its Unix socket only: the tested `sqlml install --no-files` (CREATE EXTENSION sqlml CASCADE),
# then `sqlml doctor`, which fails the first start if the server cannot import sqlml's stack.
set -euo pipefail
dsn="postgresql:///${POSTGRES_DB:-postgres}?host=/var/run/postgresql&user=${POSTGRES_USER:-postgres}"
sqlml install --no-files --dsn "$dsn"
sqlml doctor --dsn "$dsn"
