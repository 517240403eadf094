"""Adding a paper touches only its own files (CONTRIBUTING.md): a toy paper with a new method is
added to a copy of the repository through the contract, trains through `python -m kd run-many`,
and no shared file needed a change."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ["kd", "params.yaml", "dvc.yaml", "data/paper_results.yaml", "notebooks"]
OWN = {"kd/methods/toy.py", "kd/experiments/toy.py", "notebooks/toy.ipynb", "params.yaml", "dvc.yaml",
       "data/paper_results.yaml"}  # the paper's own files and the lists it adds itself to

METHOD = '''
"""Toy: cross-entropy plus a pull towards the uniform distribution (a test of the contract)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd.methods.base import Method, check_non_negative, register

LOSSES = ("toy_loss",)


def toy_loss(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform || softmax(z)), mean over the batch."""
    log_p = F.log_softmax(logits, dim=1)
    return (-log_p.mean(1) - torch.log(torch.tensor(float(logits.shape[1])))).mean()


@register("toy")
class Toy(Method):
    def __init__(self, weight: float = 0.1):
        check_non_negative(weight=weight)
        self.weight = weight

    def forward_train(self, student, teacher, batch):
        logits = student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y), "toy": self.weight * toy_loss(logits)}
'''

EXPERIMENT = '''
"""The toy paper's trainings."""
from __future__ import annotations

SECTION_KEYS = ("weight", "model", "train")


def plan(P, sec):
    return {row: [P.config(sec["model"], method, seed=s, method_args=args, paper="toy") for s in P.seeds]
            for row, method, args in (("CE", "ce", {}), ("toy", "toy", {"weight": sec["weight"]}))}


def teacher_names(P, sec):
    return []
'''

SECTION = """
toy:
  weight: 0.5
  model: plane2
  train: {quick: {dataset: digits, train_subset: 200, eval_subset: 100, epochs: 1, batch_size: 50}}
"""


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_a_toy_paper_needs_no_change_to_any_shared_file(tmp_path):
    repo = tmp_path / "repo"
    for name in SHARED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, repo / name)
    before = _digest(repo)

    (repo / "kd/methods/toy.py").write_text(textwrap.dedent(METHOD).lstrip())
    (repo / "kd/experiments/toy.py").write_text(textwrap.dedent(EXPERIMENT).lstrip())
    (repo / "notebooks/toy.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                          "nbformat_minor": 5}))
    with open(repo / "params.yaml", "a") as f:
        f.write(SECTION)
    with open(repo / "data/paper_results.yaml", "a") as f:
        f.write('\ntoy:\n  source: "a test of the contract"\n')
    dvc = (repo / "dvc.yaml").read_text()
    last = "      - self_distillation\n"
    assert dvc.count(last) == 1
    (repo / "dvc.yaml").write_text(dvc.replace(last, last + "      - toy\n"))

    env = {**os.environ, "KD_ROOT": str(repo), "KD_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(repo),
           "OMP_NUM_THREADS": "1"}
    check = subprocess.run(
        [sys.executable, "-c", "import kd.losses, kd.methods, kd.__main__; "
         "assert kd.losses.toy_loss is kd.methods.MODULES['toy'].toy_loss; "
         "assert kd.methods.create('toy', weight=0.2).weight == 0.2; "
         "assert 'toy' in kd.__main__.studies(); print(kd.methods.Toy.__module__)"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "kd.methods.toy", "kd came from the copy"
    trained = subprocess.run([sys.executable, "-m", "kd", "run-many", "--paper", "toy", "--profile", "quick"],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    finished = sorted(p.parent.name.split("-")[1] for p in (tmp_path / "runs/quick/students").glob("*/final.json"))
    assert finished == ["ce", "toy"]

    after = _digest(repo)
    changed = {f for f in after if before.get(f) != after[f]}
    assert changed == OWN, f"shared files changed: {sorted(changed - OWN)}"
    dvc_diff = set((repo / "dvc.yaml").read_text().splitlines()) - set(dvc.splitlines())
    assert dvc_diff == {"      - toy"}, "one line in dvc.yaml"
