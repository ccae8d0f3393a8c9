#!/usr/bin/env bash
# `make test` while busy processes, one per core, keep every core of the machine occupied: the suite
# must hold when it does not have the machine to itself (no test may depend on what a wall-clock
# budget buys). The suite runs on one xdist worker per core as `make test` does, so the cores carry
# twice the processes they have room for. SQLML_BUSY sets the number of busy processes; PYTEST_ARGS
# and TEST_WORKERS pass through to `make test` (e.g. PYTEST_ARGS=tests/test_cli.py to try one file).
# Prints the wall-clock time either way.
set -uo pipefail
cd "$(dirname "$0")/.."
busy=${SQLML_BUSY:-$(nproc)}
pids=()
stop_busy() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait "${pids[@]}" 2>/dev/null
}
trap stop_busy EXIT
for _ in $(seq "$busy"); do
  python3 -c 'while True: pass' &
  pids+=("$!")
done
start=$(date +%s)
make test PYTEST_ARGS="${PYTEST_ARGS:-}"
status=$?
echo "test-loaded: make test exited $status beside $busy busy processes on $(nproc) cores in $(( $(date +%s) - start )) s"
exit "$status"
