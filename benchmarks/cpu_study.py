"""Run papers' stages of a study profile one after another and record each stage's wall time.

A stage is what `dvc repro paper@<p>` runs, in two timed steps: the paper's trainings
(`python -m kd run-many`, `workers` at a time, one thread each) and its notebook through
papermill (which finds the runs in the cache and does the analysis). Each stage's result goes
to results/benchmarks/<profile>_stages.json at once (atomically), with the number of runs the
stage trained: a stage that reuses another's runs (the testbed's CE and KD students, say) is
not cold, and the record says by how much.

    OMP_NUM_THREADS=1 python benchmarks/cpu_study.py --profile cpu dkd pskd   # 2-core CPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def finished_runs(store: Path) -> int:
    return sum(1 for p in store.glob("*/final.json")) if store.is_dir() else 0


def timed(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("papers", nargs="+")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from kd.__main__ import studies
    from kd.env import cpu_capability, device_name
    from kd.io import atomic_write_text
    from kd.params import Profile

    P = Profile(args.profile)
    unknown = [p for p in args.papers if p not in studies()]
    if unknown:  # before anything runs
        raise SystemExit(f"unknown paper(s) {', '.join(unknown)}; known: {', '.join(studies())}")
    record_file = ROOT / "results" / "benchmarks" / f"{P.name}_stages.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    for paper in args.papers:
        before = finished_runs(P.students_root)
        train_s = timed([sys.executable, "-m", "kd", "run-many", "--paper", paper, "--profile", P.name])
        trained = finished_runs(P.students_root) - before
        out = Path("results") / P.name / paper  # relative: papermill records the paths in the notebook
        (ROOT / out).mkdir(parents=True, exist_ok=True)
        notebook_s = timed(["papermill", f"notebooks/{paper}.ipynb", str(out / ".running.ipynb"),  # as dvc.yaml's stage
                            "-p", "profile", P.name, "--cwd", "notebooks", "--no-progress-bar"])
        (ROOT / out / ".running.ipynb").replace(ROOT / out / f"{paper}.ipynb")
        record[paper] = {"trainings_s": round(train_s), "notebook_s": round(notebook_s),
                         "stage_s": round(train_s + notebook_s), "runs_trained": trained,
                         "workers": P.workers,
                         "threads_per_training": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
                         "cpus": os.cpu_count(), "machine": device_name(torch.device("cpu")),
                         "cpu_capability": cpu_capability(), "date": time.strftime("%Y-%m-%d")}
        atomic_write_text(record_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(f"{paper}: {record[paper]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
