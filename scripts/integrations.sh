#!/usr/bin/env bash
# Tools the integration tests drive, each kept out of sqlml's own venv (which the server imports
# from) because they would change it (idempotent; called by scripts/setup.sh, so `make setup` and
# CI create them):
#   .sqlml/dbt-venv         dbt-core + dbt-postgres (tests/test_dbt.py runs `dbt run` and `dbt test`)
#   .sqlml/spark-venv       sqlml (editable) with the `spark` extra: PySpark and pyarrow. pyarrow
#                           must stay out of the server's venv: with it, pandas 3 stores text
#                           columns in Arrow arrays instead of Python ones, inside the server too.
#   .sqlml/triton-schema    Triton's model_config_pb2, to parse exported config.pbtxt files
#                           (tritonclient's own dependencies would downgrade the server's ml_dtypes)
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.sqlml
PY=${SQLML_SERVER_PYTHON:-$(PYTHONPATH=. python3 -m sqlml.devcluster python)}

# dbt: a plain `pip install dbt-postgres` resolves to a dbt-core pre-release whose build downloads
# a parser from the internet and fails (DESIGN.md); these pins install from PyPI alone.
DBT_PINS=("dbt-postgres==1.11.0" "dbt-core==1.11.16")
dbt_version() {  # offline (`dbt --version` asks PyPI for the latest release)
  "$STATE/dbt-venv/bin/python" -c "import importlib.metadata as m; print(m.version('dbt-core'), m.version('dbt-postgres'))" 2>/dev/null
}
if [ "$(dbt_version)" != "1.11.16 1.11.0" ]; then
  echo "integrations: creating $STATE/dbt-venv (${DBT_PINS[*]})"
  "$PY" -m venv "$STATE/dbt-venv"
  "$STATE/dbt-venv/bin/python" -m pip install -q --disable-pip-version-check "${DBT_PINS[@]}"
fi

if [ ! -x "$STATE/spark-venv/bin/python" ]; then
  echo "integrations: creating $STATE/spark-venv (sqlml[spark])"
  "$PY" -m venv "$STATE/spark-venv"
fi
# editable, so that the suite's Spark checks run this checkout; pip only changes what differs from the pins
"$STATE/spark-venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[server,spark]"

TRITON=tritonclient==2.73.0
if [ ! -f "$STATE/triton-schema/tritonclient/grpc/model_config_pb2.py" ]; then
  echo "integrations: fetching Triton's model config schema ($TRITON, without its dependencies)"
  "$STATE/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --target "$STATE/triton-schema" "$TRITON"
fi
echo "integrations: ok: dbt-core/dbt-postgres $(dbt_version), pyspark $("$STATE/spark-venv/bin/python" -c 'import pyspark; print(pyspark.__version__)'), $TRITON schema"
