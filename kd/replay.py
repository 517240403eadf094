"""A teacher's outputs on a seed's batches, computed once and replayed (as FKD: Shen & Xing, "A Fast
Knowledge Distillation Framework for Visual Recognition", ECCV 2022).

One seed fixes a run's batches whatever its method (paired seeds), so the teacher's logits on them are
the same for KD, DKD, DIST, NKD ... trained with that seed and that teacher. A run whose method
declares `replays_teacher` (its one use of the teacher in a step is `teacher_logits(teacher, batch.x)`, or on
what the method makes of batch.x from the seed alone, its `teacher_inputs`: MixUp-KD's mixed batch)
records those logits epoch by epoch under `<root>/<key>/epoch_<k>.pt`, and a later run of the same
stream replays them instead of running the teacher. On a CPU a forward is deterministic for a given
machine and thread count, both in the key, so a replayed run is bit for bit the run it would have been
(tests/test_train.py). Each batch's images carry a fingerprint (a position-weighted sum per image): a
batch whose fingerprint differs from the recorded one is computed by the teacher, so a change in the
data pipeline can never hand back another batch's logits. The folder is a cache: delete it at will.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from kd.io import atomic_save, atomic_write_text


def fingerprint(x: torch.Tensor) -> torch.Tensor:
    """One float64 per image: its pixels weighted by their position (a crop or a flip changes it)."""
    flat = x.reshape(x.shape[0], -1).double()
    return flat @ torch.arange(1, flat.shape[1] + 1, dtype=torch.float64, device=x.device)


def stream_key(cfg, method, device: torch.device) -> dict:
    """What fixes a run's training batches and its teacher's logits on them (with the method's
    `teacher_inputs`, e.g. MixUp-KD's mixing, where the teacher does not see the batch itself)."""
    from kd.env import cpu_capability
    from kd.train import TRAIN_VERSION

    key = {"teacher": cfg._map_teacher(lambda t: t.identity()), "dataset": cfg.dataset,
           "train_subset": cfg.train_subset, "eval_subset": cfg.eval_subset, "val_fraction": cfg.val_fraction,
           "data_seed": cfg.subset_seed, "views": cfg.views,
           "seed": cfg.seed, "batch_size": cfg.batch_size, "crop_pad": cfg.crop_pad, "flip": cfg.flip,
           "cutout": cfg.cutout, "same_class": method.same_class, "every_anchor": method.every_anchor,
           "every_sample": method.every_sample, "train_version": TRAIN_VERSION, "device": device.type,
           "cpu_capability": cpu_capability(), "threads": torch.get_num_threads()}
    inputs = method.teacher_inputs()
    if inputs is not None:  # the teacher sees what the method makes of the batch: a stream of its own
        key["teacher_inputs"] = inputs
    return key


class TeacherReplay:
    """The teacher of each epoch of one run: replaying a recorded epoch, or recording this one."""

    def __init__(self, root: str | Path, key: dict, teacher):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder, self.teacher = Path(root) / digest, teacher
        self.replayed_epochs, self.recomputed_batches = 0, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "key.json").exists():
            atomic_write_text(self.folder / "key.json", json.dumps(key, indent=1, sort_keys=True))
        self._file = self._stored = None

    def epoch(self, epoch: int) -> "TeacherReplay":
        """Start `epoch`: replay its recorded logits if present, else record them."""
        self._file = self.folder / f"epoch_{epoch}.pt"
        self._stored, self._recorded, self._step, self._mismatch = None, [], 0, False
        if self._file.exists():
            try:
                self._stored = torch.load(self._file, weights_only=True)
            except Exception:  # unreadable (files are written atomically, so a disk error): record it anew
                self._stored = None
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fp, k = fingerprint(x), self._step
        self._step += 1
        if self._stored is not None:
            if k < len(self._stored["fingerprints"]) and torch.equal(self._stored["fingerprints"][k], fp):
                return self._stored["logits"][k]
            self._mismatch = True
            self.recomputed_batches += 1
            return self.teacher(x)
        logits = self.teacher(x)
        self._recorded.append((fp, logits.detach().clone()))
        return logits

    def end_epoch(self) -> None:
        """Keep a fully recorded epoch; count a fully replayed one."""
        if self._stored is None and self._recorded:
            atomic_save({"fingerprints": [fp for fp, _ in self._recorded],
                         "logits": [z for _, z in self._recorded]}, self._file)
        elif self._stored is not None and not self._mismatch and self._step == len(self._stored["logits"]):
            self.replayed_epochs += 1
