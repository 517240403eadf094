"""Rerun one paper's committed study stage on this machine and compare the verdicts.

A CPU run's digits depend on the CPU (its model and kernels) and the thread count (README,
Determinism); the verdicts rest on paired differences over seeds and must not hinge on them.
This script retrains every run of the paper's stage (its teachers included) in a fresh run store,
with the profile's `threads` and `workers` or others given, executes the paper's notebook into a
fresh results folder (the committed testbed verdict copied there, as the stage reads it), and
writes results/benchmarks/rerun_<profile>_<paper>.json: each claim's verdict and difference,
committed and rerun, how many verdicts agree and how many differences are the same to the bit
(all of them: this machine and settings compute what the committed stage's did, and the check
tested nothing). Where this checkout still holds the committed stage's runs (`runs/<profile>`), it
also compares run with run (the same configuration, so the same seed): how far a run's last-epoch
top-1 moves under the rerun's settings, against how far it varies over seeds (`run_noise`). A
scratch folder that already holds the runs (`--scratch` of an earlier call) trains nothing again:
`runs_trained` says how many this call trained.

    OMP_NUM_THREADS=2 python benchmarks/rerun_check.py --profile cpu --threads 2 --workers 1 pskd
    OMP_NUM_THREADS=1 python benchmarks/rerun_check.py --profile cpu pskd   # another machine, same settings
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent


def run_noise(committed_root: Path, rerun_root: Path) -> dict | None:
    """Last-epoch top-1 of each run trained in both stores (the same configuration hash), grouped
    by configuration without the seed: per group, the std over seeds of the committed runs, the std
    of (rerun - committed) and the correlation over seeds; None when no run is in both."""
    import numpy as np

    def store(root):
        out = {}
        for f in sorted(root.glob("students/*/final.json")):
            config = json.loads((f.parent / "config.json").read_text())
            out[f.parent.name] = (config.pop("seed"), json.dumps(config, sort_keys=True),
                                  json.loads(f.read_text())["top1"])
        return out

    a, b = store(committed_root), store(rerun_root)
    groups: dict[str, list] = {}
    for h in sorted(set(a) & set(b)):
        seed, key, top1 = a[h]
        groups.setdefault(key, []).append((seed, top1, b[h][2]))
    if not groups:
        return None
    rows = []
    for key, runs in groups.items():
        config = json.loads(key)
        x, y = (np.array([r[i] for r in sorted(runs)]) for i in (1, 2))
        rows.append({"method": config["method"], "method_args": config["method_args"],
                     "cutout": config.get("cutout"), "seeds": len(runs),
                     "top1_sd_over_seeds": float(x.std(ddof=1)) if len(x) > 1 else None,
                     "top1_change_sd": float((y - x).std(ddof=1)) if len(x) > 1 else None,
                     "top1_correlation": float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 else None})
    change = np.concatenate([np.array([r[2] - r[1] for r in runs]) for runs in groups.values()])
    return {"runs": int(change.size), "top1_change_mean_abs": float(np.abs(change).mean()),
            "top1_change_max_abs": float(np.abs(change).max()), "groups": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--threads", type=int, help="CPU threads per training in the rerun (default: the profile's)")
    ap.add_argument("--workers", type=int, help="trainings at a time in the rerun (default: the profile's)")
    ap.add_argument("--scratch", help="folder of the rerun's runs and results (default: a new temporary one, kept)")
    ap.add_argument("paper")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from kd.__main__ import studies
    from kd.env import cpu_capability, device_name
    from kd.io import atomic_write_text
    from kd.params import load_params
    from kd.runs import runs_root

    committed_file = ROOT / "results" / args.profile / args.paper / "metrics.json"
    testbed_file = ROOT / "results" / args.profile / "testbed" / "metrics.json"
    if args.paper not in studies():  # before anything runs
        raise SystemExit(f"unknown paper {args.paper!r}; known: {', '.join(studies())}")
    for f in (committed_file, testbed_file):
        if not f.exists():
            raise SystemExit(f"{f.relative_to(ROOT)} is missing: run and commit the {args.profile} stage first")
    if any(n is not None and n < 1 for n in (args.threads, args.workers)):
        raise SystemExit("--threads and --workers must be at least 1")
    params = load_params()
    original = {k: params["profiles"][args.profile].get(k) for k in ("threads", "workers")}
    settings = {"threads": args.threads or original["threads"], "workers": args.workers or original["workers"]}

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix=f"rerun-{args.paper}-"))
    params["profiles"][args.profile].update(settings)
    (scratch / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    results = scratch / "results"
    (results / args.profile / "testbed").mkdir(parents=True, exist_ok=True)
    shutil.copy(testbed_file, results / args.profile / "testbed" / "metrics.json")
    env = {**os.environ, "KD_PARAMS": str(scratch / "params.yaml"), "KD_RUNS": str(scratch / "runs"),
           "KD_RESULTS": str(results), "MPLBACKEND": "Agg"}
    finished = lambda: len(list((scratch / "runs" / args.profile).glob("students/*/final.json")))
    before = finished()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kd", "run-many", "--paper", args.paper, "--profile", args.profile],
                   cwd=ROOT, env=env, check=True)
    subprocess.run(["papermill", f"notebooks/{args.paper}.ipynb", str(scratch / f"{args.paper}.ipynb"),
                    "-p", "profile", args.profile, "--cwd", "notebooks", "--no-progress-bar"],
                   cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - t0
    trained = finished() - before

    committed = {c["key"]: c for c in json.loads(committed_file.read_text())["claims"]}
    rerun_file = results / args.profile / args.paper / "metrics.json"
    rerun = {c["key"]: c for c in json.loads(rerun_file.read_text())["claims"]}
    claims = [{"key": k, "claim": committed[k]["claim"],
               "committed": {f: committed[k].get(f) for f in ("verdict", "difference", "ci", "p_holm")},
               "rerun": {f: rerun.get(k, {}).get(f) for f in ("verdict", "difference", "ci", "p_holm")}}
              for k in committed]
    agree = sum(c["committed"]["verdict"] == c["rerun"]["verdict"] for c in claims)
    same = sum(c["committed"]["difference"] == c["rerun"]["difference"] for c in claims)
    record = {"paper": args.paper, "profile": args.profile, "date": time.strftime("%Y-%m-%d"),
              "machine": device_name(torch.device("cpu")), "cpu_capability": cpu_capability(),
              "committed_settings": original, "rerun_settings": settings, "wall_s": round(wall),
              "runs_trained": trained, "verdicts_agree": f"{agree} of {len(claims)}",
              "differences_bit_identical": f"{same} of {len(claims)}",
              "run_noise": run_noise(runs_root(args.profile), scratch / "runs" / args.profile), "claims": claims}
    out = ROOT / "results" / "benchmarks" / f"rerun_{args.profile}_{args.paper}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"{args.paper} ({args.profile}) rerun at {settings['threads']} threads x {settings['workers']} workers: "
          f"verdicts agree on {agree} of {len(claims)}, differences the same to the bit on {same}; "
          f"wrote {out.relative_to(ROOT)} (runs kept in {scratch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
