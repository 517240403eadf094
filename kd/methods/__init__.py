"""Training methods: what one step computes, what state it keeps, what it needs from the loader.

Every method is a small class with the same `forward_train(student, teacher, batch)` that
returns the student's logits and a dict of weighted loss terms whose sum is minimised (the
shape of mdistiller's `Distiller`). Each lives in its own file here, with its loss functions
(pure functions, also importable from `kd.losses`), and registers itself by name;
`create(name, **hyperparameters)` looks it up, so that params.yaml selects a method by name.
Every module of this package is imported below, so a new method file needs no other edit.
"""
from __future__ import annotations

import importlib
import pkgutil

from kd.methods.base import REGISTRY, Method, available, create, register, resolved_args

MODULES = {m.name: importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)}
# each method class as an attribute, e.g. kd.methods.DKD
globals().update({cls.__name__: cls for cls in REGISTRY.values()})

__all__ = ["REGISTRY", "Method", "available", "create", "register", "resolved_args",
           *(cls.__name__ for cls in REGISTRY.values())]
