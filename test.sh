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
say "running the tests (unit tests, then every notebook with nbval)"
python -m pytest tests notebooks --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@"
