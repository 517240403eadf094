"""Run stages of a study profile one after another and record each stage's wall time.

A paper's stage is what `dvc repro paper@<p>` runs, in two timed steps: the paper's trainings
(`python -m kd run-many`, `workers` at a time, one thread each) and its notebook through
papermill (which finds the runs in the cache and does the analysis); `teachers` is the
teachers stage (`python -m kd teachers`: every teacher the profile uses). Each stage's result
goes to results/benchmarks/<profile>_stages.json at once (atomically, merged into the file as it
is then), with the number of runs the stage trained: a stage that reuses another's runs (the
testbed's CE and KD students, say) is not cold, and the record says by how much.

    OMP_NUM_THREADS=1 python benchmarks/cpu_study.py --profile cpu teachers testbed dkd   # 2-core CPU
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
    """Finished runs under `store` (students: <store>/<run>; teachers: <store>/<name>/<run>)."""
    return sum(1 for _ in store.rglob("final.json")) if store.is_dir() else 0


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
    unknown = [p for p in args.papers if p != "teachers" and p not in studies()]
    if unknown:  # before anything runs
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; known: teachers, {', '.join(studies())}")
    record_file = ROOT / "results" / "benchmarks" / f"{P.name}_stages.json"
    for stage in args.papers:
        if stage == "teachers":
            store = P.runs_root / "teachers"
            before = finished_runs(store)
            train_s = timed([sys.executable, "-m", "kd", "teachers", "--profile", P.name])
            notebook_s = 0.0
        else:
            store = P.students_root
            before = finished_runs(store)
            train_s = timed([sys.executable, "-m", "kd", "run-many", "--paper", stage, "--profile", P.name])
            out = Path("results") / P.name / stage  # relative: papermill records the paths in the notebook
            (ROOT / out).mkdir(parents=True, exist_ok=True)
            notebook_s = timed(["papermill", f"notebooks/{stage}.ipynb", str(out / ".running.ipynb"),  # as dvc.yaml's
                                "-p", "profile", P.name, "--cwd", "notebooks", "--no-progress-bar"])
            (ROOT / out / ".running.ipynb").replace(ROOT / out / f"{stage}.ipynb")
        entry = {"trainings_s": round(train_s), "notebook_s": round(notebook_s),
                 "stage_s": round(train_s + notebook_s), "runs_trained": finished_runs(store) - before,
                 "workers": P.workers,
                 "threads_per_training": int(os.environ.get("OMP_NUM_THREADS", 0)) or None,
                 "cpus": os.cpu_count(), "machine": device_name(torch.device("cpu")),
                 "cpu_capability": cpu_capability(), "date": time.strftime("%Y-%m-%d")}
        # read again: another process may have recorded a stage meanwhile
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        record[stage] = entry
        atomic_write_text(record_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(f"{stage}: {entry}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
