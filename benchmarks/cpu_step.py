"""CPU candidates for the `cpu` study's training step, each against today's step in the same run.

The study's typical runs: a resnet8 student distilled from the resnet14 teacher (0.1 CE + 0.9 KD at
T 4) and the same student trained alone (CE), on 1x28x28 images of 10 classes (Fashion-MNIST's
shape, synthetic pixels), batch 64, one thread, `kd.train.train_step` on `kd.data.Loader` batches
(benchmarks/bench_common.OursLoop). The candidates of the speed issue, each a change of how a step
runs, not of what it computes:

  kd                  today's KD step: float32, NCHW (the baseline of every ratio)
  kd channels_last    student, teacher and batches in channels_last
  kd teacher bf16     the teacher's forward under CPU bf16 autocast, its logits cast back to float32
  kd teacher bf16 channels_last   the same, with networks and batches in channels_last (oneDNN's
                      bf16 convolutions, AMX on CPUs that have it, prefer that layout)
  kd all bf16         the whole step under CPU bf16 autocast (as kd.train.fit runs a step on CUDA)
  ce bf16             the student alone, its step under CPU bf16 autocast
  kd student compile  torch.compile on the student (inductor's C++ backend)
  kd channels_last + compile   the two together
  kd cached teacher   the teacher's logits handed over ready-made: the most that reusing teacher
                      outputs across student runs (FKD, Shen & Xing, ECCV 2022) could save
  ce                  the student alone: the step without a teacher

Rounds interleave the variants (every variant times `steps` steps per round after its warm-up);
images/s is the median over rounds, the ratio that median over the baseline's. Weights are random
(throughput does not depend on them). Writes results/benchmarks/cpu_step.json.

    OMP_NUM_THREADS=1 python benchmarks/cpu_step.py                # ~6 minutes on one core
    OMP_NUM_THREADS=1 python benchmarks/cpu_step.py --steps 3 --rounds 1 --warmup 1 --out /tmp/x.json
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
from kd.env import cpu_capability  # noqa: E402


class Bf16Forward(torch.nn.Module):
    """A network's forward under CPU bf16 autocast; float32 logits out, as the loss expects."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net(x).float()


class CachedTeacher(torch.nn.Module):
    """Logits that cost nothing: stands for teacher outputs computed once and reused."""

    def __init__(self, num_classes: int, batch_size: int):
        super().__init__()
        self.register_buffer("logits", torch.randn(batch_size, num_classes))

    def forward(self, x):
        return self.logits[: x.shape[0]]


def variants(teacher, student, classes: int, batch: int) -> dict[str, dict]:
    """{label: OursLoop keyword arguments}; every variant gets its own copies of the networks."""
    t, s = (lambda: copy.deepcopy(teacher)), (lambda: copy.deepcopy(student))
    return {
        "kd": dict(teacher=t(), student=s()),
        "kd channels_last": dict(teacher=t(), student=s(), channels_last=True),
        "kd teacher bf16": dict(teacher=Bf16Forward(t()), student=s()),
        "kd teacher bf16 channels_last": dict(teacher=Bf16Forward(t()), student=s(), channels_last=True),
        "kd all bf16": dict(teacher=t(), student=s(), cpu_bf16=True),
        "kd student compile": dict(teacher=t(), student=s(), compile=True),
        "kd channels_last + compile": dict(teacher=t(), student=s(), channels_last=True, compile=True),
        "kd cached teacher": dict(teacher=CachedTeacher(classes, batch), student=s()),
        "ce": dict(teacher=None, student=s(), method="ce"),
        "ce bf16": dict(teacher=None, student=s(), method="ce", cpu_bf16=True),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="resnet14")
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per variant (compilation included)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated variants not to run")
    ap.add_argument("--out", default=str(bc.RESULTS / "cpu_step.json"))
    args = ap.parse_args(argv)
    if min(args.batch_size, args.steps, args.rounds, args.threads) < 1 or args.warmup < 0:
        raise SystemExit("--batch-size, --steps, --rounds and --threads must be at least 1, --warmup at least 0")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    classes, shape = 10, (1, 28, 28)
    x, y = bc.synthetic_split(2000, shape, classes)
    teacher, student = bc.make_pair(args.teacher, args.student, classes, shape[0])
    chosen = variants(teacher, student, classes, args.batch_size)
    skip = [v.strip() for v in args.skip.split(",") if v.strip()]
    unknown = [v for v in skip if v not in chosen]
    if unknown or "kd" in skip:
        raise SystemExit(f"--skip: unknown variant(s) {unknown} or the baseline 'kd'; variants: {list(chosen)}")
    loops, warmup_s = {}, {}
    for label, kw in chosen.items():
        if label in skip:
            continue
        loops[label] = bc.OursLoop(x=x, y=y, batch_size=args.batch_size, device=device, mean=(0.2860,),
                                   std=(0.3530,), crop_pad=2, **kw)
        t0 = time.perf_counter()
        loops[label].run(args.warmup)
        warmup_s[label] = time.perf_counter() - t0
        print(f"{label}: warm-up {warmup_s[label]:.1f} s", flush=True)
    rates: dict[str, list[float]] = {label: [] for label in loops}
    for r in range(args.rounds):
        for label, loop in loops.items():
            seconds, images = loop.run(args.steps)
            rates[label].append(images / seconds)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    base = bc.median(rates["kd"])
    rows = {label: {"images_per_s": bc.median(v), "rounds": v, "ratio_to_kd": bc.median(v) / base,
                    "warmup_s": warmup_s[label]} for label, v in rates.items()}
    print(f"\n{'variant':<28} {'images/s':>9} {'x today':>8}")
    for label, row in rows.items():
        print(f"{label:<28} {row['images_per_s']:>9.0f} {row['ratio_to_kd']:>7.2f}x")
    result = {"benchmark": "cpu_step", "pair": f"{args.teacher} -> {args.student}", "classes": classes,
              "image_shape": list(shape), "batch_size": args.batch_size, "threads": args.threads,
              "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "baseline": "kd",
              "variants": rows, "environment": {**bc.environment(device), "cpu_capability": cpu_capability()},
              "date": time.strftime("%Y-%m-%d")}
    print(f"wrote {bc.atomic_write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
