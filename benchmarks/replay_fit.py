"""Teacher outputs replayed (kd.replay) over a whole training run of a study profile, against the run
that computes them, in one process.

Trains the testbed's KD student (the profile's first seed, its teacher from the teachers stage) twice
into a scratch folder, with the profile's threads and evaluations: first recording the teacher's
logits, then replaying them. Checks that the two runs are the same to the bit (metrics.csv without its
timing column, the final metrics, the model) and, when the run store holds that run trained before on
this kind of machine (same CPU name, capability and thread count), that the recording run equals it
too. Prints the ratio of training times and writes results/benchmarks/replay_fit_<profile>.json.

    OMP_NUM_THREADS=1 python benchmarks/replay_fit.py --profile cpu      # ~7 minutes on one core
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kd import runs as kd_runs  # noqa: E402
from kd import train as kd_train  # noqa: E402
from kd.env import cpu_capability, device_name  # noqa: E402
from kd.experiments import Study  # noqa: E402
from kd.io import atomic_write_text  # noqa: E402

NOT_RESULTS = ("files", "provenance", "teacher_replay", "train_time_s", "epoch_time_s")


def outcome(run_dir: Path) -> tuple[pd.DataFrame, dict, dict]:
    """What a run computed: its per-epoch metrics without timings, its final metrics, its weights."""
    history = pd.read_csv(run_dir / "metrics.csv")
    history = history[[c for c in history.columns if not c.endswith("_time_s")]]
    final = {k: v for k, v in json.loads((run_dir / "final.json").read_text()).items() if k not in NOT_RESULTS}
    return history, final, torch.load(run_dir / "model.pt", weights_only=True)


def same(a, b) -> bool:
    (ha, fa, ma), (hb, fb, mb) = a, b
    return ha.equals(hb) and fa == fb and ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    S = Study("testbed", args.profile)
    P = S.P
    cfg = S.plan()["control"]["KD"][0]
    teacher_run = kd_runs.find(cfg.teacher, [P.teacher_root(n) for n in S.teacher_names()])
    if teacher_run is None:
        raise SystemExit(f"the testbed's teacher is not trained on {P.name}: run `dvc repro teachers` first")
    teacher = teacher_run.model("cpu")
    scratch = Path(tempfile.mkdtemp(prefix="replay_fit_"))
    times = {}
    with kd_runs.num_threads(P.threads):
        for label in ("recording", "replaying"):
            t0 = time.perf_counter()
            summary = kd_train.fit(cfg, scratch / label, teacher=teacher, device="cpu", evaluations=P.evaluations,
                                   teacher_outputs=scratch / "teacher_outputs", progress=False)
            times[label] = {"wall_s": time.perf_counter() - t0, "train_time_s": summary["train_time_s"],
                            "teacher_replay": summary["teacher_replay"]}
            print(f"{label}: {times[label]}", flush=True)
    identical = same(outcome(scratch / "recording"), outcome(scratch / "replaying"))
    stored = kd_runs.find(cfg, [P.students_root])
    here = {"device_name": device_name(torch.device("cpu")), "cpu_capability": cpu_capability(),
            "threads": P.threads}
    before = None
    if stored is not None:
        prov = stored.summary["provenance"]
        if all(prov.get(k) == v for k, v in here.items()):
            before = same(outcome(stored.path), outcome(scratch / "recording"))
    ratio = times["recording"]["train_time_s"] / times["replaying"]["train_time_s"]
    result = {"benchmark": "replay_fit", "profile": P.name, "run": f"{cfg.model} KD from {teacher_run.path.name}, "
              f"seed {cfg.seed}, {cfg.epochs} epochs, {cfg.train_subset} images", "times": times,
              "speedup_train_time": ratio, "replayed_run_identical": identical,
              "recording_run_identical_to_stored_run": before, "machine": here, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    out = ROOT / "results" / "benchmarks" / f"replay_fit_{P.name}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"replaying / recording training time: {ratio:.2f}x faster; replayed run identical: {identical}; "
          f"identical to the stored run: {before}")
    print(f"wrote {out.relative_to(ROOT)} (scratch runs in {scratch}, safe to delete)")
    return 0 if identical and before is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
