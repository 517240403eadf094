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
top-1 moves under the rerun's settings, against how far it varies over seeds (`run_noise`), and tests
whether the settings changed what the verdicts rest on (`settings_effect`: each configuration's
accuracy, and each pair of configurations' per-seed contrast, rerun against committed). A
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


def paired_runs(committed_root: Path, rerun_root: Path) -> dict[str, dict[int, tuple[float, float]]]:
    """Last-epoch top-1 of each run trained in both stores (the same configuration hash), grouped by
    configuration without the seed: {configuration (JSON): {seed: (committed, rerun)}}."""
    def store(root):
        out = {}
        for f in sorted(root.glob("students/*/final.json")):
            config = json.loads((f.parent / "config.json").read_text())
            out[f.parent.name] = (config.pop("seed"), json.dumps(config, sort_keys=True),
                                  json.loads(f.read_text())["top1"])
        return out

    a, b = store(committed_root), store(rerun_root)
    groups: dict[str, dict[int, tuple[float, float]]] = {}
    for h in sorted(set(a) & set(b)):
        seed, key, top1 = a[h]
        groups.setdefault(key, {})[seed] = (top1, b[h][2])
    return groups


def group_label(key: str) -> str:
    """A configuration's method, its arguments that are set (not off or 0) and its cutout."""
    config = json.loads(key)
    args = ", ".join(f"{k} {v}" for k, v in sorted(config["method_args"].items()) if v not in (False, 0, None))
    return f"{config['method']}" + (f" ({args})" if args else "") + (f", cutout {config['cutout']}"
                                                                       if config.get("cutout") else "")


def run_noise(groups: dict) -> dict | None:
    """Run against run: per configuration, the std over seeds of the committed runs, the std of
    (rerun - committed) and the correlation over seeds; None when no run is in both stores."""
    import numpy as np

    if not groups:
        return None
    rows = []
    for key, runs in groups.items():
        config = json.loads(key)
        x, y = (np.array([runs[s][i] for s in sorted(runs)]) for i in (0, 1))
        rows.append({"method": config["method"], "method_args": config["method_args"],
                     "cutout": config.get("cutout"), "seeds": len(runs),
                     "top1_sd_over_seeds": float(x.std(ddof=1)) if len(x) > 1 else None,
                     "top1_change_sd": float((y - x).std(ddof=1)) if len(x) > 1 else None,
                     "top1_correlation": float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 else None})
    change = np.array([r - c for runs in groups.values() for c, r in runs.values()])
    return {"runs": int(change.size), "top1_change_mean_abs": float(np.abs(change).mean()),
            "top1_change_max_abs": float(np.abs(change).max()), "groups": rows}


def settings_effect(groups: dict, margin: float) -> dict | None:
    """Do the rerun's settings (a thread count) change what the verdicts rest on? Tested, not read
    off the verdicts: a verdict near its threshold flips under any new draw of run-level noise.

    - `main`: per configuration, rerun against committed top-1 paired by seed (kd.stats.compare,
      TOST with the paper's `margin`): does the setting shift a configuration's accuracy?
    - `contrasts`: per pair of configurations on their common seeds, the contrast (a - b) in the
      rerun against the committed one, paired by seed: a difference-in-differences. Its CI holding
      0 says the rerun's settings did not detectably change the comparison; `p_holm` (the paired t
      of "the contrast changed", Holm over the pairs) and the TOST verdict say how sure.
    None when no configuration has 3 seeds in both stores."""
    import itertools

    from kd import stats

    groups = {k: v for k, v in groups.items() if len(v) >= stats.MIN_SEEDS}
    if not groups:
        return None
    summary = lambda r: {"difference": r["difference"], "ci": r["ci"], "n": r["n"],  # noqa: E731
                         "verdict": r["verdict"], "evidence": r["evidence"]}
    main = []
    for key, runs in groups.items():
        seeds = sorted(runs)
        r = stats.compare([runs[s][1] for s in seeds], [runs[s][0] for s in seeds], claim="equivalent", margin=margin)
        main.append({"configuration": group_label(key), **summary(r)})
    contrasts, changed = [], []
    for (ka, a), (kb, b) in itertools.combinations(groups.items(), 2):
        seeds = sorted(set(a) & set(b))
        if len(seeds) < stats.MIN_SEEDS:
            continue
        rerun = [a[s][1] - b[s][1] for s in seeds]
        committed = [a[s][0] - b[s][0] for s in seeds]
        r = stats.compare(rerun, committed, claim="equivalent", margin=margin)
        changed.append(stats.compare(rerun, committed, claim="better")["p"])  # two-sided: the CI excludes 0
        contrasts.append({"a": group_label(ka), "b": group_label(kb), **summary(r)})
    for row, p in zip(contrasts, stats.holm(changed)):
        row["p_holm"] = p
    return {"margin": margin, "test": "paired by seed; TOST with the paper's margin (equivalent = reproduced)",
            "main": main, "contrasts": contrasts,
            "contrasts_with_ci_holding_0": f"{sum(c['ci'][0] <= 0 <= c['ci'][1] for c in contrasts)} of "
                                           f"{len(contrasts)}",
            "contrasts_changed_after_holm": sum(c["p_holm"] < stats.ALPHA for c in contrasts),
            "contrasts_equivalent": f"{sum(c['verdict'] == 'reproduced' for c in contrasts)} of {len(contrasts)}"}


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
    from kd.params import Profile, load_params
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
    groups = paired_runs(runs_root(args.profile), scratch / "runs" / args.profile)
    margin = float(Profile(args.profile, params=params, check_device=False).section(args.paper)["margin"])
    record = {"paper": args.paper, "profile": args.profile, "date": time.strftime("%Y-%m-%d"),
              "machine": device_name(torch.device("cpu")), "cpu_capability": cpu_capability(),
              "committed_settings": original, "rerun_settings": settings, "wall_s": round(wall),
              "runs_trained": trained, "verdicts_agree": f"{agree} of {len(claims)}",
              "differences_bit_identical": f"{same} of {len(claims)}",
              "run_noise": run_noise(groups), "settings_effect": settings_effect(groups, margin), "claims": claims}
    out = ROOT / "results" / "benchmarks" / f"rerun_{args.profile}_{args.paper}.json"
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"{args.paper} ({args.profile}) rerun at {settings['threads']} threads x {settings['workers']} workers: "
          f"verdicts agree on {agree} of {len(claims)}, differences the same to the bit on {same}; "
          f"wrote {out.relative_to(ROOT)} (runs kept in {scratch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
