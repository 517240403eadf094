#!/usr/bin/env bash
# Set up everything the repository needs, idempotently: a virtual environment in .venv with
# the pinned packages (pyproject.toml), `kd` installed editable, and the Fashion-MNIST files.
# Sourced by ./run.sh and ./test.sh; safe to run any number of times.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n==> %s\n' "$*"; }

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: Python 3.11 is needed (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    say "creating the virtual environment .venv ($("$PYTHON" --version))"
    "$PYTHON" -m venv .venv
fi

# Re-install only when the pinned requirements changed since the last successful set-up.
stamp=.venv/.kd-setup-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing torch and torchvision (pinned in pyproject.toml)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch first and on its own, so that pip takes the pinned build (on a GPU machine, install the
    # CUDA build of the same version into .venv first: pip then keeps it).
    .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
    say "installing kd and the pinned notebook and test tools"
    .venv/bin/python -m pip install --quiet -e ".[notebooks,test]"
    echo "$want" > "$stamp"
else
    say "virtual environment .venv is up to date"
fi

# the notebook kernels log errors only (no "Kernel is running over TCP" warning per notebook)
install -D -m 644 scripts/ipython_kernel_config.py .venv/etc/ipython/ipython_kernel_config.py

say "checking Fashion-MNIST"
FMNIST_SYSTEM=/usr/share/datasets/fashion-mnist
if [ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -f "$FMNIST_SYSTEM/train-images-idx3-ubyte.gz" ]; then
    echo "Fashion-MNIST found"
elif command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing Debian's dataset-fashion-mnist (files in $FMNIST_SYSTEM)"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
    echo "no apt-get: Fashion-MNIST will be downloaded through torchvision into data/fashion-mnist"
    .venv/bin/python -c "from kd import data; data.load('fashion_mnist', download=True)"
fi
.venv/bin/python -c "from kd import data; d = data.load('fashion_mnist'); print(f'Fashion-MNIST: {len(d.y_train)} training, {len(d.y_eval)} test images')"
