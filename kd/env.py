"""Where a run ran: the machine, the threads, the software and the code's commit.

Recorded in every run's final.json (`provenance`) and in the benchmarks' results. A CPU run is
bit-identical on the same CPU model and kernel instruction set (`cpu_capability`: AVX2, AVX512...)
with the same thread count and torch version; other thread counts or CPUs give different numbers
(README, "Reproducibility").
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """The git commit of the kd checkout, and whether kd/ had uncommitted changes (None outside git)."""
    def git(*args):
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--untracked-files=no", "--", "kd") if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, changes = None, None
    return {"git_commit": commit, "kd_modified": bool(changes) if commit else None}


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch to here (AVX2, AVX512...): one CPU model
    name ("AMD EPYC") covers generations with different kernels, so runs record it beside the name."""
    return torch.backends.cpu.get_cpu_capability()


def provenance(device: torch.device) -> dict:
    """What a run records about where it ran."""
    return {"device": str(device), "device_name": device_name(device), "cpu_capability": cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            **code_version()}
