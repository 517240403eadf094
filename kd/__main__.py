"""Command line: `python -m kd <command> --help`.

    python -m kd train --model resnet8 --dataset fashion_mnist --train-subset 2000 --epochs 3
    python -m kd train --model resnet8 --method kd --teacher-run runs/cli/resnet20-ce-<hash>
    python -m kd train --model resnet20 --init-run runs/cli/resnet20-ce-<hash> --prune 0.5   # prune, fine-tune
    python -m kd data --profile quick          # check / fetch the profile's dataset
    python -m kd teachers --profile quick      # every teacher the profile's papers use (or: teachers resnet20)
    python -m kd run-many --profile full --paper dkd --workers 8   # a notebook's trainings, no Jupyter
    python -m kd estimate --profile full       # each stage's trainings and estimated GPU minutes
    python -m kd runs list --profile cpu kd    # the run cache: list | show <part of a name> | gc [--yes]
    python -m kd report --profile quick
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from kd.io import atomic_write_text


def _train(args) -> int:
    from kd import runs
    from kd.train import TrainConfig, fit, load_model

    def finished(flag: str, path: str) -> runs.Run:
        if not (Path(path) / "final.json").exists():
            raise SystemExit(f"{flag} {path}: no finished run there (final.json missing)")
        return runs.Run(Path(path))

    teacher_model, teacher_cfg, init_run = None, None, None
    if args.teacher_run:
        teacher_run = finished("--teacher-run", args.teacher_run)
        teacher_cfg = teacher_run.config
        teacher_model = load_model(teacher_run.path)
    if args.init_run:
        init_run = finished("--init-run", args.init_run)
    if args.prune is not None and init_run is None:
        raise SystemExit("--prune needs --init-run, the finished run whose weights are pruned")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    settings["method_args"] = json.loads(args.method_args)
    settings["teacher"] = teacher_cfg
    settings["init_from"] = init_run.config if init_run else None
    settings["prune"] = {"amount": args.prune} if args.prune is not None else None
    cfg = TrainConfig(**settings)
    cfg.validate()
    out = Path(args.out) if args.out else runs.run_dir(cfg, runs.runs_root("cli"))
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports (and writes)
    if main_process:
        print(f"training {cfg.model} with {cfg.method} on {cfg.dataset} -> {out}", flush=True)
    init = init_run.model().state_dict() if init_run else None
    summary = fit(cfg, out, teacher=teacher_model, init=init, device=args.device, resume=not args.no_resume,
                  checkpoint_every=args.checkpoint_every, compile=args.compile, data_root=args.data_root)
    if main_process:
        print(json.dumps({k: summary[k] for k in ("top1", "best_top1", "nll", "ece", "train_time_s")}, indent=2))
    return 0


def _data(args) -> int:
    from kd import data
    from kd.params import Profile

    if args.dataset:  # one dataset into --root (the command DatasetNotFoundError names)
        ds = data.load(args.dataset, args.root, download=True)
        print(json.dumps({"dataset": args.dataset, "num_train": len(ds.y_train), "num_eval": len(ds.y_eval),
                          "num_classes": ds.num_classes, "image_shape": list(ds.x_train.shape[1:])}, indent=2))
        return 0
    P = Profile(args.profile)
    d = P.settings["data"]
    ds = data.load(d["dataset"], args.root, train_subset=d.get("train_subset"), eval_subset=d.get("eval_subset"),
                   val_fraction=d.get("val_fraction", 0.0), download=True)
    info = {"dataset": d["dataset"], "num_train": len(ds.y_train), "num_eval": len(ds.y_eval),
            "eval_split": ds.eval_split, "num_classes": ds.num_classes,
            "image_shape": list(ds.x_train.shape[1:]), "mean": list(ds.mean), "std": list(ds.std)}
    out = P.results_dir("data") / "data.json"  # results/<profile>/data/data.json
    atomic_write_text(out, json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return 0


def _teachers(args) -> int:
    from kd.io import write_csv
    from kd.params import Profile

    P = Profile(args.profile)
    names = list(dict.fromkeys(args.names)) or P.teacher_names()
    for name in names:
        P.teacher_config(name)  # an unknown name fails here, before anything trains or is written
    # results/<profile>/teachers/<name>.json (dvc metrics) and teacher_curves/<name>.csv (dvc plots)
    metrics_dir, curves_dir = P.results_root / "teachers", P.results_root / "teacher_curves"
    trained = P.teachers(names, progress=None)  # the missing ones, `workers` at a time
    for name in names:
        rows, history = {}, []
        for seed in P.teacher_seeds():
            run = trained[(name, seed)]
            rows[f"seed{seed}"] = {k: run.summary[k] for k in ("top1", "best_top1", "nll", "ece", "train_time_s")}
            history += run.history.assign(seed=seed).to_dict("records")
            where = run.path.relative_to(P.runs_root.parent)  # runs/<profile>/..., not this machine's path
            print(f"teacher {name} seed {seed}: top-1 {run.summary['top1']:.2f} (runs/{where})", flush=True)
        atomic_write_text(metrics_dir / f"{name}.json", json.dumps(
            {"teacher": name, "profile": P.name, "seeds": rows}, indent=2))
        write_csv(curves_dir / f"{name}.csv", history)
    if not args.names:  # the whole profile: files of teachers it no longer uses go
        for stale in [*metrics_dir.glob("*.json"), *curves_dir.glob("*.csv")]:
            if stale.stem not in names:
                stale.unlink()
    return 0


def _run_many(args) -> int:
    from kd.experiments import Study, configs

    known = studies()
    if args.paper not in known:
        raise ValueError(f"unknown paper {args.paper!r}; known: {', '.join(known)}")
    S = Study(args.paper, args.profile)
    if args.workers:
        S.P.workers = args.workers
    S.P.teachers(S.teacher_names(), progress=None)
    for group, gate in S.gates.items():
        if gate["verdict"] != "reproduced":
            print(f"{args.paper}: not training {group}: its precondition failed ({gate['evidence']})", flush=True)
    todo = configs(S.trainable(S.plan()))
    print(f"{args.paper}: {len(todo)} trainings on profile {S.P.name}, {S.P.workers} at a time", flush=True)
    S.P.run_all(todo, progress=None)
    return 0


def studies() -> list[str]:
    """The notebooks `run-many` can train for: an experiment module and a params.yaml section each."""
    import pkgutil

    import kd.experiments
    from kd.params import load_params

    params = load_params()
    return sorted(m.name for m in pkgutil.iter_modules(kd.experiments.__path__) if m.name in params)


def _runs(args) -> int:
    import shutil

    import pandas as pd

    from kd import runs
    from kd.params import Profile

    P = Profile(args.profile, check_device=False)
    rows = runs.inventory(P.runs_root)
    if args.action == "list":
        if not rows:
            print(f"no runs under runs/{P.name}")
            return 0
        df = pd.DataFrame(rows).drop(columns=["path"])
        if args.match:
            df = df[df["run"].str.contains(args.match, regex=False)]
        with pd.option_context("display.width", 250, "display.max_colwidth", 90, "display.max_rows", None):
            print(df.to_string(index=False))
        return 0
    if args.action == "show":
        found = [r for r in rows if args.match and args.match in r["run"]]
        if len(found) != 1:
            raise ValueError(f"{len(found)} runs of runs/{P.name} match {args.match!r}; give a longer part of the name")
        path = found[0]["path"]
        print(f"runs/{P.name}/{found[0]['run']}")
        print("configuration (every method hyperparameter spelled out):")
        print((path / "config.json").read_text())
        if found[0]["finished"]:
            print("final.json:")
            print((path / "final.json").read_text())
        else:
            print("unfinished (no final.json)" + (": training now" if runs.is_busy(path) else ""))
        return 0
    # gc: stale runs (never handed back again), leftovers of killed writes, locks of removed runs, teacher
    # outputs of another training-loop version; an unfinished run of this code stays: it resumes from its checkpoint
    idle = [r for r in rows if not runs.is_busy(r["path"])]
    doomed = [r["path"] for r in idle if r["stale"]]
    doomed += [p for r in idle if not r["stale"] for p in r["path"].glob(".*.tmp")]
    doomed += [p for p in P.runs_root.rglob("*.lock")
               if not p.with_suffix("").exists() and not runs.is_busy(p.with_suffix(""))]
    # teacher outputs (kd.replay) recorded by another version of the training loop are never replayed again
    from kd.train import TRAIN_VERSION
    doomed += [k.parent for k in sorted((P.runs_root / "teacher_outputs").glob("*/key.json"))
               if json.loads(k.read_text()).get("train_version") != TRAIN_VERSION]
    for p in doomed:
        print(("removing " if args.yes else "would remove ") + str(p.relative_to(P.runs_root)))
        if args.yes:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not args.yes:
        print(f"{len(doomed)} to remove; pass --yes to remove them")
    return 0


def _estimate(args) -> int:
    import pandas as pd

    from kd import estimate
    from kd.params import Profile

    P = Profile(args.profile, check_device=False)
    known = studies()
    unknown = [p for p in args.papers if p not in known]
    if unknown:  # before any counting
        raise ValueError(f"unknown paper(s) {', '.join(unknown)}; known: {', '.join(known)}")
    a = estimate.measured_assumptions(P, P.results_root.parent / "benchmarks")
    rows = estimate.estimate(P, a, args.papers or None)
    print(f"profile {P.name}, {P.workers} trainings at a time on one {P.device} device. ESTIMATE, {a.source}: "
          f"{a.seconds_per_op * 1e6:.1f} us per operation, {a.achieved_tflops:g} TFLOP/s, {a.start_s:g} s to start "
          f"a training, {P.workers if a.packing_gain is None else round(a.packing_gain, 2)}x from running "
          f"{P.workers} at once")
    table = pd.DataFrame(rows).round({"minutes_alone": 1, "minutes": 1, "tflop": 0, "runs_mib": 0, "teachers_mib": 0})
    print(table.to_string(index=False))
    over = table[table["minutes_alone"] > estimate.CHUNK_MINUTES]["stage"].tolist()
    print(f"stages over {estimate.CHUNK_MINUTES:g} minutes alone: {', '.join(over) or 'none'}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(
            {"profile": P.name, "estimate": True, "workers": P.workers, "chunk_minutes": estimate.CHUNK_MINUTES,
             "assumptions": dataclasses.asdict(a), "stages": rows}, indent=2) + "\n")
    return 0


def _report(args) -> int:
    from kd.params import Profile
    from kd.report import build_report, update_readme

    Profile(args.profile, check_device=False)  # an unknown profile fails here, before any file is written

    print(build_report(args.profile))
    if args.readme:
        update_readme(args.profile)
        print("README.md results section updated")
    return 0


def main(argv=None) -> int:
    from kd import data as kd_data
    from kd.train import SCHEDULES

    parser = argparse.ArgumentParser(prog="python -m kd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model (optionally distilled from a finished teacher run)")
    t.add_argument("--model", default="resnet8", help="a name from kd.models.available()")
    t.add_argument("--dataset", default="fashion_mnist", choices=kd_data.DATASETS)
    t.add_argument("--method", default="ce", help="a name from kd.methods.available()")
    t.add_argument("--method-args", default="{}", help='JSON, e.g. \'{"temperature": 4}\'')
    t.add_argument("--teacher-run", help="folder of a finished teacher run (for methods with a teacher)")
    t.add_argument("--train-subset", type=int, help="class-balanced training subset size")
    t.add_argument("--eval-subset", type=int, help="class-balanced test subset size")
    t.add_argument("--val-fraction", type=float, help="hold out this fraction of training data as validation")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--schedule", choices=SCHEDULES)
    t.add_argument("--warmup-epochs", type=float)
    t.add_argument("--nesterov", action="store_true", default=None)
    t.add_argument("--crop-pad", type=int)
    t.add_argument("--cutout", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--stop-epoch", type=int, help="stop after this many epochs of the --epochs schedule")
    t.add_argument("--init-run", help="folder of a finished run of the same model: start from its weights (fine-tune)")
    t.add_argument("--prune", type=float, help="with --init-run: remove this fraction of its remaining conv and "
                                                "linear weights by magnitude first (kd.prune)")
    t.add_argument("--out", help="run folder (default runs/cli/<model>-<method>-<hash>)")
    t.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints (default: every epoch)")
    t.add_argument("--compile", action="store_true", help="torch.compile the student")
    t.add_argument("--data-root", help="where the datasets are (default: data/ and system paths)")
    t.set_defaults(func=_train)

    d = sub.add_parser("data", help="check (and on a networked machine fetch) the profile's dataset, "
                                    "or the one named")
    d.add_argument("dataset", nargs="?", choices=kd_data.DATASETS,
                   help="fetch this dataset instead of the profile's")
    d.add_argument("--root", help="data folder (default: data/ and, for Fashion-MNIST, system paths)")
    d.add_argument("--profile", default=None)
    d.set_defaults(func=_data)

    te = sub.add_parser("teachers", help="train the profile's teachers (params.yaml `teachers` its papers use), "
                                         "or the ones named, for every teacher seed of the profile")
    te.add_argument("names", nargs="*", metavar="name",
                    help="only these teachers (default: every one the profile uses)")
    te.add_argument("--profile", default=None)
    te.set_defaults(func=_teachers)

    r = sub.add_parser("run-many", help="train every run a paper notebook needs, as plain Python (GPU machines)")
    r.add_argument("--paper", required=True)
    r.add_argument("--profile", default=None)
    r.add_argument("--workers", type=int, help="concurrent trainings (default: the profile's)")
    r.set_defaults(func=_run_many)

    es = sub.add_parser("estimate", help="a profile's stages before they run: trainings and estimated minutes on "
                                         "its device (sizes the full profile's GPU chunks)")
    es.add_argument("papers", nargs="*", metavar="paper", help="only these papers' stages (default: every one)")
    es.add_argument("--profile", default="full")
    es.add_argument("--out", help="also write the rows as JSON here")
    es.set_defaults(func=_estimate)

    ru = sub.add_parser("runs", help="the run cache: list, show one run, or remove stale runs (gc)")
    ru.add_argument("action", choices=("list", "show", "gc"))
    ru.add_argument("match", nargs="?", help="list: runs whose name contains this; show: part of one run's name")
    ru.add_argument("--profile", default=None)
    ru.add_argument("--yes", action="store_true", help="gc: remove (without it gc only lists)")
    ru.set_defaults(func=_runs)

    rep = sub.add_parser("report", help="write results/<profile>/README.md from the papers' metrics")
    rep.add_argument("--profile", default="quick")
    rep.add_argument("--readme", action="store_true", help="also put the table into the repository README")
    rep.set_defaults(func=_report)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
