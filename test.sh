#!/usr/bin/env bash
# Set everything up, then run the tests: the unit tests (tests/) and every notebook under
# nbval on its default (quick) parameters. Runs and results go to a temporary folder, so the
# committed results/ and your runs/ cache are not touched.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
source .venv/bin/activate
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export KD_RUNS="$scratch/runs" KD_RESULTS="$scratch/results" MPLBACKEND=Agg
# Two pytest processes side by side, one per core and one thread each (KD_THREADS overrides the profiles' threads:
# more threads than cores stall OpenMP): the `full`-profile smoke test (every notebook on the `full` paths; its own
# runs and results) and everything else (the unit tests, then every notebook under nbval on `quick`, then the smoke
# test of the papers in $foreground_smoke, which balance the two: about 1770 s against 1450 s without them). The smoke
# test's report is printed after the other's; the exit status fails if either failed.
export KD_THREADS=1 OMP_NUM_THREADS=1
smoke_test=tests/test_full_profile_smoke.py::test_notebook_runs_on_the_full_profile_paths
foreground_smoke=("$smoke_test[crd]")
say "running the tests: the full-profile smoke test in the background, the unit tests and nbval in the foreground"
python -m pytest tests/test_full_profile_smoke.py "${foreground_smoke[@]/#/--deselect=}" -p no:cacheprovider "$@" \
    > "$scratch/smoke.log" 2>&1 &
smoke=$!
status=0
python -m pytest tests notebooks --ignore tests/test_full_profile_smoke.py --nbval-lax \
    --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@" || status=$?
# (exit status 5: the arguments selected none of them)
python -m pytest "${foreground_smoke[@]}" -p no:cacheprovider "$@" || { rc=$?; (( rc == 5 )) || status=$rc; }
smoke_status=0
wait "$smoke" || smoke_status=$?
say "the full-profile smoke test (tests/test_full_profile_smoke.py)"
cat "$scratch/smoke.log"
exit $(( status || smoke_status ))
