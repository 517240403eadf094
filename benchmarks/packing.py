"""Multi-run packing: N small trainings at once on one device against one at a time.

Small CIFAR / Fashion-MNIST models leave most of an H100 idle in one process (kernel launch
latency, small kernels); kd.runs.run_many therefore trains several runs at once in separate
processes (spawn). This measures what that buys.

--mode steps (default): N spawned processes each train their own student from their own
  teacher with our loop (kd.data.Loader on the device + the kd.methods "kd" step, as
  kd.train.fit runs it) on synthetic data shaped like the `full` profile's (1x28x28,
  10 classes, batch 128). Each process warms up, waits at a barrier, then trains --steps
  steps. Aggregate images/s = all processes' images / (last finish - first start). The
  one-at-a-time figure is N = 1 (one process alone); running N trainings one after another
  gives that same rate, so the ratio agg(N) / agg(1) is the speed-up packing gives.
--mode fit: the real thing, with kd.runs.run_many: N configurations of the profile
  (different seeds, --epochs each) trained with workers=N, against the same N trained
  with workers=1, each into a fresh temporary runs folder. Includes process start-up,
  dataset loading, evaluation and checkpoint writing. Needs the profile's dataset.

    python benchmarks/packing.py                                  # GPU: N = 1, 2, 4, 8
    python benchmarks/packing.py --quick --device cpu             # CPU: N = 1, 2, few steps
    python benchmarks/packing.py --mode fit --profile full        # kd.runs.run_many, full profile
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda or cpu (default: cuda if available)")
    p.add_argument("--mode", choices=("steps", "fit"), default="steps")
    p.add_argument("--n", help="numbers of concurrent trainings (default 1,2,4,8; --quick 1,2)")
    p.add_argument("--teacher", default="resnet20", help="teacher model, or 'none' for CE training (steps mode)")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--shape", default="1,28,28", help="image shape C,H,W (default Fashion-MNIST's)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="per training (default 128, the full profile's)")
    p.add_argument("--steps", type=int, help="timed steps per process (default 300; --quick 3)")
    p.add_argument("--warmup", type=int, help="untimed steps per process (default 20; --quick 1)")
    p.add_argument("--num-images", type=int, help="synthetic images per process (default 20000; --quick 1024)")
    p.add_argument("--threads", type=int,
                   help="torch threads per process (default: CPU cores // N, at least 1)")
    p.add_argument("--profile", help="fit mode: the params.yaml profile (default full on CUDA, quick on CPU)")
    p.add_argument("--epochs", type=int, default=2, help="fit mode: epochs per training (default 2)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a CPU smoke run")
    p.add_argument("--out", help="results JSON (default results/benchmarks/packing_<mode>_<device>.json)")
    args = p.parse_args(argv)
    defaults = dict(n=("1,2", "1,2,4,8"), steps=(3, 300), warmup=(1, 20), num_images=(1024, 20000))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.n = sorted({int(v) for v in args.n.split(",") if v} | {1})
    args.shape = tuple(int(v) for v in args.shape.split(","))
    if args.teacher.lower() == "none":
        args.teacher = None
    return args


# ----------------------------------------------------------------------------- steps mode

def _worker(rank: int, cfg: dict, barrier, queue) -> None:
    try:
        torch.set_num_threads(cfg["threads"])
        device = torch.device(cfg["device"])
        c = cfg["shape"][0]
        x, y = bc.synthetic_split(cfg["num_images"], cfg["shape"], cfg["classes"], seed=rank)
        torch.manual_seed(rank)
        student = bc.kd_models.create(cfg["student"], cfg["classes"], in_channels=c)
        teacher = (bc.kd_models.create(cfg["teacher"], cfg["classes"], in_channels=c)
                   if cfg["teacher"] else None)
        loop = bc.OursLoop(teacher, student, x, y, batch_size=cfg["batch_size"], device=device,
                           mean=(0.5,) * c, std=(0.25,) * c, crop_pad=2, seed=rank,
                           method="kd" if teacher is not None else "ce")
        loop.run(cfg["warmup"])
        barrier.wait(timeout=900)
        start = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes of the machine
        seconds, images = loop.run(cfg["steps"])
        queue.put({"rank": rank, "start": start, "end": time.monotonic(), "seconds": seconds, "images": images})
    except BaseException as e:  # report, and release the others from the barrier
        try:
            barrier.abort()
        finally:
            queue.put({"rank": rank, "error": f"{type(e).__name__}: {e}"})


def run_concurrent(n: int, cfg: dict) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, cfg, barrier, queue), daemon=True) for rank in range(n)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    results = []
    try:
        while len(results) < n:
            try:
                results.append(queue.get(timeout=5))
            except queue_module.Empty:
                reported = {r["rank"] for r in results}
                dead = [r for r, p in enumerate(procs) if r not in reported and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"N={n}: training process {dead[0]} died (exit code "
                                       f"{procs[dead[0]].exitcode}) without reporting") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    errors = [r for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"N={n}: a training process failed: {errors[0]['error']}")
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    images = sum(r["images"] for r in results)
    return {"n": n, "aggregate_images_per_s": images / span, "span_s": span, "images": images,
            "per_process_images_per_s": [r["images"] / r["seconds"] for r in results],
            "wall_s_including_startup": time.monotonic() - t0}


def steps_mode(args, device) -> dict:
    rows = []
    for n in args.n:
        cfg = {"device": str(device), "teacher": args.teacher, "student": args.student, "shape": args.shape,
               "classes": args.classes, "batch_size": args.batch_size, "num_images": args.num_images,
               "steps": args.steps, "warmup": args.warmup,
               "threads": args.threads or max(1, (os.cpu_count() or 1) // n)}
        row = run_concurrent(n, cfg)
        row["threads_per_process"] = cfg["threads"]
        rows.append(row)
        base = rows[0]["aggregate_images_per_s"]
        print(f"N={n}: aggregate {bc.fmt_rate(row['aggregate_images_per_s'])} images/s "
              f"({row['images']} images in {row['span_s']:.1f} s; per process "
              f"{', '.join(bc.fmt_rate(v) for v in row['per_process_images_per_s'])}); "
              f"x{row['aggregate_images_per_s'] / base:.2f} vs one at a time", flush=True)
    base = rows[0]["aggregate_images_per_s"]
    for row in rows:
        row["ratio_vs_one_at_a_time"] = row["aggregate_images_per_s"] / base
    return {"rows": rows}


# ----------------------------------------------------------------------------- fit mode

def fit_mode(args, device) -> dict:
    from kd import runs as kd_runs
    from kd.params import Profile

    profile = args.profile or ("full" if device.type == "cuda" else "quick")
    P = Profile(profile)
    rows = []
    for n in args.n:
        configs = [P.config(args.student, "ce", seed=s, epochs=args.epochs) for s in range(n)]
        images = sum(c.epochs * (c.train_subset or 0) for c in configs)
        timing = {}
        for workers in sorted({1, n}):
            root = Path(tempfile.mkdtemp(prefix=f"kd_packing_n{n}_w{workers}_"))
            try:
                t0 = time.monotonic()
                kd_runs.run_many(configs, root=root, device=str(device), workers=workers, progress=False)
                timing[workers] = time.monotonic() - t0
            finally:
                shutil.rmtree(root, ignore_errors=True)
        row = {"n": n, "wall_s_one_at_a_time": timing[1], "wall_s_concurrent": timing[n],
               "speedup": timing[1] / timing[n], "training_images": images,
               "aggregate_images_per_s_concurrent": images / timing[n] if images else None,
               "aggregate_images_per_s_one_at_a_time": images / timing[1] if images else None}
        rows.append(row)
        print(f"N={n}: one at a time {timing[1]:.1f} s, {n} at once {timing[n]:.1f} s: "
              f"x{row['speedup']:.2f}", flush=True)
    return {"profile": profile, "model": args.student, "epochs": args.epochs, "rows": rows}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = bc.resolve_device(args.device)
    env = bc.environment(device)
    print(f"device: {env['device_name']} ({device}); mode {args.mode}; N in {args.n}", flush=True)
    if args.mode == "steps":
        print(f"each training: {args.teacher or 'no teacher'} -> {args.student}, input {args.shape}, "
              f"{args.classes} classes, batch {args.batch_size}, warm-up {args.warmup}, {args.steps} timed steps",
              flush=True)
        result = steps_mode(args, device)
    else:
        result = fit_mode(args, device)
    out = Path(args.out) if args.out else bc.RESULTS / f"packing_{args.mode}_{bc.device_slug(device)}.json"
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    bc.atomic_write_json(out, {"benchmark": "packing", "mode": args.mode, "environment": env,
                               "settings": settings, **result,
                               "command": " ".join([os.path.basename(sys.executable), *sys.argv])})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
