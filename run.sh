#!/usr/bin/env bash
# The main job: set everything up, then run the whole pipeline (dvc repro) on the active
# profile of params.yaml (`quick` by default: 9 minutes on 2 cores of an Intel Xeon with AMX, set-up
# included when the packages need no download; the AMD EPYC machines measured before were about 1.5
# times slower).
# Results: results/<profile>/README.md, results/<profile>/<paper>/, and the executed notebooks.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
source .venv/bin/activate
say "running the pipeline: dvc repro (profile: $(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])'))"
dvc repro "$@"
say "done: see results/$(python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])')/README.md"
