#!/usr/bin/env bash
# The main job: set everything up, then run the whole pipeline (dvc repro) on the active
# profile of params.yaml (`quick` by default: 12 to 20 minutes on a 2-core CPU, by machine).
# Results: results/<profile>/README.md, results/<profile>/<paper>/, and the executed notebooks.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
source .venv/bin/activate
say "running the pipeline: dvc repro (profile: $(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])'))"
dvc repro "$@"
say "done: see results/$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])')/README.md"
