"""KD training throughput: our loop against a loop in the style of the standard CIFAR KD codebases.

For each teacher -> student pair, on CIFAR-shaped synthetic data (3x32x32 uint8 images,
100 classes: no dataset needed), in one process on one device:

  reference  batch 64 (--ref-batch-sizes): torchvision Dataset + transforms through a
             DataLoader with worker processes, float32, cudnn.benchmark, teacher forward
             every step, per-step loss/accuracy bookkeeping (RepDistiller / mdistiller style)
  ours       each of --batch-sizes (64 and 512): kd.data.Loader on the device + the
             kd.methods "kd" step as kd.train.fit runs it (bf16 autocast and channels_last
             on CUDA; --compile adds torch.compile on the student)

Every loop trains its own copy of the same initial student from a copy of the same teacher,
with the same KD loss. Each loop is warmed up (--warmup steps: cuDNN autotuning, compilation,
DataLoader workers), then timed for --steps steps in each of --rounds rounds, the loops
interleaved round by round so that machine noise hits them alike; images/s is the median
over rounds. The ratio printed is ours / reference.

FLOPs: forward FLOPs per image are counted with torch.utils.flop_counter.FlopCounterMode
(convolutions and matrix products only); a training step costs about 3x the student's
forward (forward + backward) plus the teacher's forward. Achieved TFLOP/s is that count times
images/s, shown against the GPU's dense bf16 peak (a table of data-sheet peaks by device
name; --peak-tflops overrides). On CPU the achieved GFLOP/s is shown and no peak is known.

    python benchmarks/throughput.py                          # GPU defaults
    python benchmarks/throughput.py --quick --device cpu     # a few steps, minutes on 2 cores
    python benchmarks/throughput.py --compile                # ours with torch.compile
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

DEFAULT_PAIRS = "resnet32x4:resnet8x4,resnet56:resnet20"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda if available)")
    p.add_argument("--pairs", default=DEFAULT_PAIRS, help=f"teacher:student,... (default {DEFAULT_PAIRS})")
    p.add_argument("--batch-sizes", help="our loop's batch sizes (default 64,512; --quick 64)")
    p.add_argument("--ref-batch-sizes", default="64", help="the reference loop's batch sizes (default 64)")
    p.add_argument("--steps", type=int, help="timed steps per loop per round (default 200; --quick 2)")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default 30; --quick 1)")
    p.add_argument("--rounds", type=int, help="timed rounds, loops interleaved (default 3; --quick 1)")
    p.add_argument("--num-images", type=int, help="synthetic training images (default 10000; --quick 1024)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="reference DataLoader workers (default min(8, CPU cores); RepDistiller uses 8)")
    p.add_argument("--threads", type=int, help="torch intra-op threads of the main process (default: torch's; "
                   "1 is much faster on a CPU shared with other jobs, see README)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student in our loop")
    p.add_argument("--ours-no-cudnn-benchmark", action="store_true",
                   help="turn cudnn.benchmark off in our loop (kd.train.fit turns it on, as our loop does by default)")
    p.add_argument("--sync-methods", default="kd,dkd,dist,mixup_kd,pskd,bake,zipf_ls",
                   help="CUDA: kd.methods whose training step is checked for host-GPU synchronisations "
                        "(torch.cuda.set_sync_debug_mode); '' skips the check")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    p.add_argument("--quick", action="store_true", help="tiny settings for a CPU smoke run")
    p.add_argument("--out", help="results JSON (default results/benchmarks/throughput_<device>.json)")
    args = p.parse_args(argv)
    defaults = dict(steps=(2, 200), warmup=(1, 30), rounds=(1, 3), num_images=(1024, 10000),
                    batch_sizes=("64", "64,512"))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.pairs = [tuple(pair.split(":")) for pair in args.pairs.split(",") if pair]
    if any(len(pair) != 2 for pair in args.pairs):
        p.error("--pairs takes teacher:student,teacher:student")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.ref_batch_sizes = [int(b) for b in args.ref_batch_sizes.split(",") if b]
    if max(args.batch_sizes + args.ref_batch_sizes) > args.num_images:
        p.error(f"--num-images ({args.num_images}) must be at least the largest batch size")
    return args


def bench_pair(teacher_name, student_name, args, device, x, y, peak):
    classes, shape = 100, tuple(x.shape[1:])
    teacher, student = bc.make_pair(teacher_name, student_name, classes, shape[0])
    f_s = bc.forward_flops_per_image(student, shape)
    f_t = bc.forward_flops_per_image(teacher, shape)
    train_flops = 3 * f_s + f_t
    print(f"\n{teacher_name} -> {student_name}: forward GFLOPs/image student {f_s / 1e9:.3f}, "
          f"teacher {f_t / 1e9:.3f}; training step {train_flops / 1e9:.3f} GFLOPs/image "
          f"(3 x student + teacher)", flush=True)

    loops = []
    for b in args.ref_batch_sizes:
        loops.append(bc.ReferenceLoop(copy.deepcopy(teacher), copy.deepcopy(student), x, y, batch_size=b,
                                      device=device, workers=args.workers))
    for b in args.batch_sizes:
        loops.append(bc.OursLoop(copy.deepcopy(teacher), copy.deepcopy(student), x, y, batch_size=b,
                                 device=device, compile=args.compile,
                                 cudnn_benchmark=not args.ours_no_cudnn_benchmark))
    warm = {}
    for loop in loops:
        seconds, _ = loop.run(args.warmup)
        warm[(loop.label, loop.batch_size)] = seconds
    times = {(loop.label, loop.batch_size): [] for loop in loops}
    for _ in range(args.rounds):
        for loop in loops:
            seconds, images = loop.run(args.steps)
            times[(loop.label, loop.batch_size)].append((seconds, images))

    nonfinite = {(loop.label, loop.batch_size): getattr(loop, "nonfinite", False) for loop in loops}
    rows = []
    for (label, b), ts in times.items():
        rates = [images / seconds for seconds, images in ts]
        rate = bc.median(rates)
        achieved = rate * train_flops
        rows.append({"loop": label, "batch_size": b, "images_per_s": rate,
                     "step_ms": 1e3 * bc.median([s / args.steps for s, _ in ts]),
                     "rounds_images_per_s": rates, "warmup_s": warm[(label, b)],
                     "achieved_tflops": achieved / 1e12,
                     "fraction_of_bf16_peak": (achieved / 1e12 / peak) if peak else None,
                     "precision": ("bf16 autocast" if device.type == "cuda" else "fp32")
                     if label == "ours" else "fp32",
                     "compiled": bool(args.compile) if label == "ours" else False,
                     "nonfinite_loss_seen": nonfinite[(label, b)]})
    ref = {r["batch_size"]: r["images_per_s"] for r in rows if r["loop"] == "reference"}
    ratios = {}
    for r in rows:
        if r["loop"] == "ours":
            for rb, rate in ref.items():
                ratios[f"ours_b{r['batch_size']}/reference_b{rb}"] = r["images_per_s"] / rate

    del loops, teacher, student
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"teacher": teacher_name, "student": student_name,
            "forward_flops_per_image": {"student": f_s, "teacher": f_t},
            "train_flops_per_image": train_flops, "results": rows, "ratios": ratios}


def check_syncs(args, device, x, y) -> dict:
    """Where our training step makes the host wait for the GPU, per method (CUDA only)."""
    methods = [m for m in args.sync_methods.split(",") if m]
    if device.type != "cuda" or not methods:
        return {"skipped": "CUDA only" if device.type != "cuda" else "no methods"}
    teacher_name, student_name = args.pairs[-1]
    print(f"\nhost-GPU synchronisations per training step of our loop ({teacher_name} -> {student_name}, "
          f"batch 64; torch.cuda.set_sync_debug_mode):")
    result = {}
    for name in methods:
        method = bc.kd_methods.create(name)
        if method.same_architecture:
            continue
        teacher, student = bc.make_pair(teacher_name, student_name, 100, 3)
        try:
            loop = bc.OursLoop(teacher if method.needs_teacher else None, student, x, y, batch_size=64,
                               device=device, method=name)
            result[name] = bc.sync_check(loop)
        except Exception as e:  # a failing check must not lose the throughput figures
            result[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"  {name:<10} check failed: {result[name]['error']}", flush=True)
            continue
        where = ", ".join(f"{k} x{v:g}" for k, v in result[name]["locations"].items()) or "none"
        print(f"  {name:<10} {result[name]['syncs_per_step']:g} per step: {where}", flush=True)
        del loop
    return result


def print_table(pair, peak, device):
    unit, scale = ("TFLOP/s", 1.0) if device.type == "cuda" else ("GFLOP/s", 1e3)
    print(f"{'loop':<10} {'batch':>5} {'images/s':>10} {'ms/step':>9} {unit:>9} {'% bf16 peak':>11}")
    for r in pair["results"]:
        frac = f"{100 * r['fraction_of_bf16_peak']:.1f}" if r["fraction_of_bf16_peak"] is not None else "n/a"
        print(f"{r['loop']:<10} {r['batch_size']:>5} {bc.fmt_rate(r['images_per_s']):>10} "
              f"{r['step_ms']:>9.1f} {r['achieved_tflops'] * scale:>9.2f} {frac:>11}")
    for k, v in pair["ratios"].items():
        print(f"  ratio {k}: {v:.2f}x")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = bc.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = args.peak_tflops or bc.bf16_peak_tflops(device)
    env = bc.environment(device)
    print(f"device: {env['device_name']} ({device}); torch {env['torch']}; "
          f"{'bf16 peak ' + str(peak) + ' TFLOP/s' if peak else 'no bf16 peak known for this device'}")
    print(f"settings: pairs {args.pairs}, ours at batch {args.batch_sizes}, reference at batch "
          f"{args.ref_batch_sizes} with {args.workers} workers, {args.num_images} synthetic images, "
          f"warm-up {args.warmup} steps, {args.rounds} rounds x {args.steps} steps"
          f"{', torch.compile' if args.compile else ''}", flush=True)
    x, y = bc.synthetic_split(args.num_images, (3, 32, 32), 100)
    pairs = []
    for teacher_name, student_name in args.pairs:
        pair = bench_pair(teacher_name, student_name, args, device, x, y, peak)
        print_table(pair, peak, device)
        pairs.append(pair)
    sync = check_syncs(args, device, x, y)
    if not peak:
        print("\nno bf16 peak is known for this device, so no fraction of peak is given "
              "(on CPU the loops run in float32)")
    out = Path(args.out) if args.out else bc.RESULTS / f"throughput_{bc.device_slug(device)}.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    bc.atomic_write_json(out, {"benchmark": "throughput", "environment": env, "settings": settings,
                               "bf16_peak_tflops": peak, "pairs": pairs, "sync_check": sync,
                               "command": " ".join([os.path.basename(sys.executable), *sys.argv])})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
