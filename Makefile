# sqlml developer commands. `make demo` and `make test` are all a newcomer needs.
VENV   := .sqlml/venv
PY     := $(VENV)/bin/python
SQLML  := $(VENV)/bin/sqlml
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: one per core (each with its own throwaway cluster; a test
# module runs whole on one worker, see tests/conftest.py). TEST_WORKERS=0 runs the suite serially.
TEST_WORKERS ?= $(shell nproc)
XDIST  := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup demo test test-loaded test-fast bench bench-automl bench-autogluon-venv bench-forecast bench-governor bench-workload bench-spark lint dev-up dev-down clean

setup:                      ## OS packages, the venv, the extension files (idempotent)
	bash scripts/setup.sh

demo: setup                 ## start the embedded cluster, load sample data, run the SQL tour
	$(SQLML) dev up
	$(SQLML) demo

test: setup                 ## the whole suite against throwaway clusters, on TEST_WORKERS workers
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-loaded: setup          ## the suite with every core kept busy by another process (it must hold under load)
	bash scripts/test-loaded.sh

test-fast: setup            ## the suite without the slow AutoML runs
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: setup                ## scoring benchmark (in place vs. pulling the data out)
	$(PY) bench/scoring.py

bench-automl: setup bench-autogluon-venv  ## sqlml.train vs. FLAML and AutoGluon at equal budgets (held-out datasets), the warm start's pay-off
	$(PY) -m pip install -q --no-deps ISLP==0.6.0   # its CSVs only: its dependencies pull in PyTorch
	$(PY) bench/automl_vs_flaml.py --budgets 30
	$(PY) bench/warm_start.py

# AutoGluon in a venv of its own: 1.6 caps pandas < 2.4, the server stack pins pandas 3. The
# tabular part with its tree learners only (no PyTorch: its neural models are left out of the bench).
AG_VENV := .sqlml/ag-venv
bench-autogluon-venv: $(AG_VENV)/bin/autogluon-ok
$(AG_VENV)/bin/autogluon-ok:
	python3 -m venv $(AG_VENV)
	$(AG_VENV)/bin/pip install -q "autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3"
	touch $@

bench-forecast: setup       ## sqlml forecasting vs. statsforecast (AutoETS, AutoTheta, SeasonalNaive)
	$(PY) -m pip install -q --no-deps statsforecast==2.1.1 coreforecast==0.0.20 utilsforecast==0.2.17 \
	    fugue==0.9.7 triad==1.0.4 adagio==0.2.6 tqdm==4.70.1 six==1.17.0 pyarrow==26.0.1 fsspec==2026.9.0   # it caps pandas < 3; its models used here never touch pandas
	$(PY) -m pip install -q statsmodels==0.15.0
	$(PY) bench/forecast.py

bench-governor: setup       ## cost model error and predict latency under training load
	$(PY) bench/governor.py

bench-workload: setup       ## interactive scoring beside training; a 5 s training in new connections
	$(PY) bench/workload.py
	$(PY) bench/cold_budget.py

bench-spark: setup          ## Spark scoring (local mode) vs. in-database sqlml.score, rows/s
	.sqlml/spark-venv/bin/python bench/spark_scoring.py

lint: setup
	$(PY) -m ruff check .

dev-up: setup
	$(SQLML) dev up

dev-down:
	$(SQLML) dev down

clean: dev-down
	rm -rf .sqlml
