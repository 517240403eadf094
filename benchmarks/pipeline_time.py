"""Wall time of the whole pipeline for a profile, with GPU utilisation sampled while it runs.

Two ways to run the pipeline (--mode):

  dvc       `dvc repro` (data -> teachers -> every paper notebook through papermill -> report),
            when dvc and papermill are installed (the CPU set-up: .venv). Cold by default: in a
            scratch copy of the repository (tracked and untracked-not-ignored files, without
            results/ and runs/), so nothing is cached and the working tree is left alone.
  run-many  plain Python, for machines without Jupyter/papermill/dvc (the GPU machine):
            `python -m kd data`, `python -m kd teachers` (what dvc's `teachers` stage runs), then
            `python -m kd run-many --paper <p>` for every paper that has a kd/experiments/<p>.py
            (the notebooks' trainings).
            Cold by default: fresh temporary KD_RUNS / KD_RESULTS folders.
  auto      dvc when both dvc and papermill are found, else run-many.

--in-place runs in the working tree with its caches instead (an incremental run: finished
runs are reused). In dvc mode the summary gives each stage's wall time (from the moment dvc
announces it to the next one's), and their sums for the teachers and the notebook stages.
With nvidia-smi present, a background thread samples GPU utilisation every --interval seconds
into a CSV (results/benchmarks/pipeline_<profile>_<device>_gpu.csv) and the summary gives the
mean % busy over the whole run and per phase.

Goals: quick profile <= 8 min on the 2-core CPU (issue 23); full profile <= 30 min on one
H100 with the GPU >= 70% busy while the trainings run (issue 14).

    python benchmarks/pipeline_time.py --profile quick --dry-run     # show what would run
    python benchmarks/pipeline_time.py --profile quick               # CPU, dvc repro, cold
    python benchmarks/pipeline_time.py --profile full --mode run-many  # GPU machine, no dvc
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402  (imports torch only to name the device)

REPO = bc.REPO
GOALS_MIN = {"quick": 8.0, "full": 30.0}
UTIL_GOAL = 70.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=("quick", "full", "paper"))
    p.add_argument("--mode", default="auto", choices=("auto", "dvc", "run-many"))
    p.add_argument("--papers", help="comma-separated papers (default: dvc.yaml's paper stages)")
    p.add_argument("--targets", help="dvc: comma-separated stages for `dvc repro` (default: all)")
    p.add_argument("--workers", type=int, help="run-many: concurrent trainings (default: the profile's)")
    p.add_argument("--skip-teachers", action="store_true",
                   help="run-many: no separate teachers phase (run-many trains the ones it needs)")
    p.add_argument("--phases", help="run-many: only these phases, by name (data, teachers, or a paper), e.g. "
                   "to split a long run over several calls with one --work-dir")
    p.add_argument("--work-dir", help="run-many: keep runs and results in this folder (KD_RUNS=<dir>/runs, "
                   "KD_RESULTS=<dir>/results) across calls instead of a fresh temporary one")
    p.add_argument("--in-place", action="store_true",
                   help="run in the working tree with its caches (incremental) instead of cold")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder of a cold run")
    p.add_argument("--gpu-sample", default="auto", choices=("auto", "on", "off"),
                   help="sample nvidia-smi utilisation (default: when nvidia-smi exists)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between GPU samples")
    p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
    p.add_argument("--out", help="results JSON (default results/benchmarks/pipeline_<profile>_<device>.json)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- planning

def venv_bin() -> Path:
    return REPO / ".venv" / "bin"


def find_tool(name: str) -> str | None:
    local = venv_bin() / name
    return str(local) if local.exists() else shutil.which(name)


def dvc_papers() -> list[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return list(stages["paper"]["foreach"])


def device_label(profile: str) -> str:
    """The device the profile trains on, as a file-name slug (no CUDA context is created)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if params["profiles"].get(profile, {}).get("device", "cpu") == "cpu":
        return "cpu"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            name = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=30).stdout.strip().splitlines()[0]
            return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        except (subprocess.SubprocessError, IndexError, OSError):
            pass
    return "cpu"


def plan(args) -> dict:
    mode = args.mode
    dvc, papermill = find_tool("dvc"), find_tool("papermill")
    if mode == "auto":
        mode = "dvc" if dvc and papermill else "run-many"
    if mode == "dvc" and not dvc:
        raise SystemExit("--mode dvc: dvc not found (neither in .venv/bin nor on PATH)")
    papers = args.papers.split(",") if args.papers else dvc_papers()
    python = sys.executable
    phases, skipped = [], []
    if mode == "dvc" and (args.phases or args.work_dir):
        raise SystemExit("--phases and --work-dir are for --mode run-many (dvc decides what to run itself)")
    if mode == "dvc":
        if args.profile != yaml.safe_load((REPO / "params.yaml").read_text()).get("profile") and args.in_place:
            raise SystemExit("--in-place with dvc runs params.yaml's active profile; use a cold run (the "
                             "scratch copy gets `profile: <profile>`) or `dvc exp run -S profile=...`")
        targets = args.targets.split(",") if args.targets else []
        phases.append({"name": "dvc repro", "commands": [[dvc, "repro", *targets]]})
    else:
        phases.append({"name": "data", "commands": [[python, "-m", "kd", "data", "--profile", args.profile]]})
        if not args.skip_teachers:
            phases.append({"name": "teachers", "commands": [[python, "-m", "kd", "teachers", "--profile",
                                                              args.profile]]})
        for paper in papers:
            if not (REPO / "kd" / "experiments" / f"{paper}.py").exists():
                skipped.append(paper)
                continue
            cmd = [python, "-m", "kd", "run-many", "--paper", paper, "--profile", args.profile]
            if args.workers:
                cmd += ["--workers", str(args.workers)]
            phases.append({"name": f"run-many {paper}", "commands": [cmd]})
    if args.phases:
        keep = set(args.phases.split(","))
        names = {ph["name"].removeprefix("run-many ") for ph in phases}
        if keep - names:
            raise SystemExit(f"--phases: unknown {sorted(keep - names)}; phases are {sorted(names)}")
        phases = [ph for ph in phases if ph["name"].removeprefix("run-many ") in keep]
    smi = shutil.which("nvidia-smi")
    sample = {"auto": bool(smi), "on": True, "off": False}[args.gpu_sample]
    if sample and not smi:
        raise SystemExit("--gpu-sample on: nvidia-smi not found")
    return {"mode": mode, "papers": papers, "skipped_papers": skipped, "phases": phases,
            "gpu_sample": sample, "nvidia_smi": smi, "dvc": dvc, "papermill": papermill}


def scratch_copy(profile: str, mode: str) -> Path:
    """A copy of the repository's tracked and untracked-not-ignored files, without results/ and
    runs/ (so every stage runs), with params.yaml's `profile:` set."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    root = Path(tempfile.mkdtemp(prefix=f"kd_pipeline_{profile}_"))
    for f in files:
        if not f or f.startswith(("results/", "runs/")) or not (REPO / f).is_file():
            continue
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    fm = REPO / "data" / "fashion-mnist"  # git-ignored dataset files the loader looks for
    if fm.exists():
        (root / "data").mkdir(exist_ok=True)
        os.symlink(fm, root / "data" / "fashion-mnist")
    params = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(re.sub(r"(?m)^profile:\s*\S+", f"profile: {profile}", params, count=1))
    if mode == "dvc":  # a scratch folder is no git repository
        subprocess.run([find_tool("dvc"), "config", "--local", "core.no_scm", "true"], cwd=root, check=True)
    return root


def environment_for(workdir: Path, cold: bool) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}" if venv_bin().exists() else env.get("PATH", "")
    env["PYTHONPATH"] = f"{workdir}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(workdir)
    if cold:  # the copy's (or a fresh) runs/results/params, never the working tree's
        env["KD_RUNS"] = str(workdir / "runs")
        env["KD_RESULTS"] = str(workdir / "results")
        env["KD_PARAMS"] = str(workdir / "params.yaml")
    return env


# ----------------------------------------------------------------------------- GPU sampler

class GPUSampler(threading.Thread):
    """Polls nvidia-smi every `interval` s; appends (t, gpu index, util %, memory MiB) rows to a CSV."""

    def __init__(self, smi: str, csv_path: Path, interval: float = 1.0):
        super().__init__(daemon=True)
        self.smi, self.csv_path, self.interval = smi, csv_path, interval
        self.samples: list[tuple[float, int, float, float]] = []
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "gpu", "utilization_gpu_pct", "memory_used_mib"])
            next_t = time.monotonic()
            while not self._halt.is_set():
                t = time.monotonic() - self.t0
                for row in self._query():
                    sample = (round(t, 2), *row)
                    self.samples.append(sample)
                    w.writerow(sample)
                f.flush()
                next_t += self.interval
                self._halt.wait(max(0.0, next_t - time.monotonic()))

    def _query(self):
        try:
            out = subprocess.run([self.smi, "--query-gpu=index,utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (subprocess.SubprocessError, OSError):
            return []
        rows = []
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            try:
                rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
            except (ValueError, IndexError):
                continue
        return rows

    def stop(self):
        self._halt.set()
        self.join(timeout=15)

    def summary(self, start: float, end: float, gpu: int = 0) -> dict | None:
        """Mean utilisation of `gpu` between two times (seconds since the sampler started)."""
        vals = [u for t, g, u, _ in self.samples if g == gpu and start <= t <= end]
        if not vals:
            return None
        return {"samples": len(vals), "mean_util_pct": sum(vals) / len(vals),
                "fraction_of_samples_busy": sum(v > 0 for v in vals) / len(vals),
                "max_memory_mib": max((m for t, g, _, m in self.samples if g == gpu and start <= t <= end),
                                      default=None)}


# ----------------------------------------------------------------------------- running

STAGE_LINE = re.compile(r"^Running stage '([^']+)':")


def run_phase(phase: dict, cwd: Path, env: dict, log) -> dict:
    """Run a phase's commands one after another, their output into the log; stop at the first
    failure. `stages`: each dvc stage's wall time, from dvc's "Running stage" line to the next."""
    t0 = time.monotonic()
    failures, stages = [], []
    for cmd in phase["commands"]:
        print(f"$ {' '.join(cmd)}", flush=True)
        with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc:
            for line in proc.stdout:
                log.write(line)
                stage = STAGE_LINE.match(line)
                if stage:
                    stages.append({"stage": stage.group(1), "start_s": time.monotonic() - t0})
        for this, after in zip(stages, stages[1:] + [{"start_s": time.monotonic() - t0}]):
            this.setdefault("wall_s", after["start_s"] - this["start_s"])
        if proc.returncode != 0:
            failures.append({"command": " ".join(cmd), "returncode": proc.returncode})
            break
    result = {"name": phase["name"], "commands": len(phase["commands"]), "wall_s": time.monotonic() - t0,
              "failures": failures}
    if stages:
        kind = lambda name: "teachers" if name == "teachers" else \
            "notebooks" if name == "testbed" or name.startswith("paper@") else "other"  # noqa: E731
        result["stage_wall_s"] = {k: sum(st["wall_s"] for st in stages if kind(st["stage"]) == k)
                                  for k in ("teachers", "notebooks", "other")}
        result["stages"] = stages
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    p = plan(args)
    label = device_label(args.profile)
    part = "_" + re.sub(r"[^A-Za-z0-9_-]+", "-", args.phases) if args.phases else ""
    out = Path(args.out) if args.out else bc.RESULTS / f"pipeline_{args.profile}_{label}{part}.json"
    gpu_csv = out.with_name(out.stem + "_gpu.csv")
    log_path = out.with_name(out.stem + ".log")
    cold = not args.in_place
    where = ("a scratch copy of the repository (cold: nothing cached)" if cold and p["mode"] == "dvc" else
             f"the working tree with KD_RUNS/KD_RESULTS under {args.work_dir}" if cold and args.work_dir else
             "the working tree with fresh temporary KD_RUNS/KD_RESULTS (cold)" if cold else
             "the working tree and its caches (incremental)")

    print(f"profile {args.profile}, mode {p['mode']}, device {label}, in {where}")
    if p["skipped_papers"]:
        print(f"papers without kd/experiments/<paper>.py (no plain-Python trainings to run): "
              f"{', '.join(p['skipped_papers'])}")
    for ph in p["phases"]:
        print(f"phase {ph['name']}:")
        for cmd in ph["commands"]:
            print(f"    {' '.join(cmd)}")
    sampling = f"every {args.interval:.1f} s -> {gpu_csv}" if p["gpu_sample"] else "off (no nvidia-smi)"
    print(f"GPU utilisation sampling: {sampling}")
    print(f"log -> {log_path}; summary -> {out}")
    goal = GOALS_MIN.get(args.profile)
    if goal:
        print(f"goal: <= {goal:.0f} min{' with the GPU >= %d%% busy' % UTIL_GOAL if args.profile == 'full' else ''}")
    if args.dry_run:
        print("dry run: nothing was run")
        return 0

    if cold and p["mode"] == "dvc":
        workdir = scratch_copy(args.profile, "dvc")
    elif cold:
        workdir = REPO
        if args.work_dir:
            scratch = Path(args.work_dir).resolve()
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"kd_pipeline_{args.profile}_"))
    else:
        workdir = REPO
    env = environment_for(workdir, cold and p["mode"] == "dvc")
    if cold and p["mode"] == "run-many":
        env["KD_RUNS"], env["KD_RESULTS"] = str(scratch / "runs"), str(scratch / "results")
    env.setdefault("PYTHONUNBUFFERED", "1")

    sampler = None
    if p["gpu_sample"]:
        sampler = GPUSampler(p["nvidia_smi"], gpu_csv, args.interval)
        sampler.start()
    t_start = time.monotonic()
    phases = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_path, "w") as log:
            for ph in p["phases"]:
                t_ph = time.monotonic() - (sampler.t0 if sampler else t_start)
                result = run_phase(ph, workdir, env, log)
                result["start_s"] = t_ph
                if sampler:
                    result["gpu"] = sampler.summary(t_ph, t_ph + result["wall_s"])
                phases.append(result)
                util = (f", GPU {result['gpu']['mean_util_pct']:.0f}% busy"
                        if sampler and result.get("gpu") else "")
                print(f"  {ph['name']}: {result['wall_s'] / 60:.1f} min{util}"
                      f"{'  FAILED: ' + str(result['failures']) if result['failures'] else ''}", flush=True)
                if result.get("stage_wall_s"):
                    print("    " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in result["stage_wall_s"].items()),
                          flush=True)
                if result["failures"]:
                    break
    finally:
        total = time.monotonic() - t_start
        if sampler:
            sampler.stop()
        # the committed log names no folder of this machine (commands print absolute paths)
        folders = {str(workdir): "<scratch copy>", str(REPO): "<repository>"}
        if cold and p["mode"] == "run-many":
            folders[str(scratch)] = "<scratch>"
        text = log_path.read_text(errors="replace")
        for folder in sorted(folders, key=len, reverse=True):
            text = text.replace(folder, folders[folder])
        log_path.write_text(text)
    training = [ph for ph in phases if ph["name"] not in ("data",)]
    summary = {"benchmark": "pipeline_time", "profile": args.profile, "mode": p["mode"], "device": label,
               "cold": cold, "total_wall_s": total, "total_wall_min": total / 60, "goal_min": goal,
               "ok": all(not ph["failures"] for ph in phases) and len(phases) == len(p["phases"]),
               "phases": phases, "skipped_papers": p["skipped_papers"],
               "environment": {"python": sys.version.split()[0], "cpu_count": os.cpu_count()},
               "within_goal": goal is None or total / 60 <= goal,
               "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
               "log": str(log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path)}
    if sampler:
        summary["gpu"] = sampler.summary(0, float("inf"))
        if training:
            start = min(ph["start_s"] for ph in training)
            summary["gpu_while_training"] = sampler.summary(start, start + sum(ph["wall_s"] for ph in training))
        summary["gpu_csv"] = str(gpu_csv)
    bc.atomic_write_json(out, summary)
    print(f"total {total / 60:.1f} min" + (f" (goal <= {goal:.0f} min)" if goal else "")
          + (f"; GPU mean {summary['gpu']['mean_util_pct']:.0f}% busy" if sampler and summary.get("gpu") else ""))
    print(f"wrote {out}")
    if cold and p["mode"] == "run-many" and args.work_dir:
        print(f"runs and results kept in {scratch}")
    elif cold and not args.keep:
        shutil.rmtree(workdir if p["mode"] == "dvc" else scratch, ignore_errors=True)
    elif cold:
        print(f"kept {workdir if p['mode'] == 'dvc' else scratch}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
