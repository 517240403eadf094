"""Fixtures shared by the test files."""
from contextlib import contextmanager

import pytest

from kd import train as kd_train


@pytest.fixture
def killed_at_epoch(monkeypatch):
    """`with killed_at_epoch(k): fit(...)`: the training dies with KeyboardInterrupt once epoch k
    has trained, before that epoch's files are written (as a killed process would)."""

    @contextmanager
    def kill(epoch: int):
        original = kd_train._Logger.epoch

        def die(self, row):
            if row["epoch"] == epoch:
                raise KeyboardInterrupt
            original(self, row)

        monkeypatch.setattr(kd_train._Logger, "epoch", die)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(kd_train._Logger, "epoch", original)

    return kill
