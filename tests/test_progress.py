"""One progress style: a loop shows a bar only once it has run for a few seconds."""

from __future__ import annotations

import pytest

from replication import progress as progress_module
from replication.progress import progress

pytestmark = pytest.mark.isa_independent


def test_a_short_loop_prints_no_bar(capsys):
    assert list(progress(range(3), "quick loop")) == [0, 1, 2]
    assert "quick loop" not in capsys.readouterr().err


def test_a_long_loop_shows_its_name_count_and_total(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "REFRESH_SECONDS", 0.0)
    assert list(progress(range(3), "long loop", unit="image")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "long loop" in err and "/3" in err and "image" in err


def test_the_training_loop_names_its_bar(capsys, monkeypatch):
    from collections import OrderedDict

    import torch

    from replication.schema import TrainRun
    from replication.training import fit

    monkeypatch.setattr(progress_module, "REFRESH_SECONDS", 0.0)
    model = torch.nn.Sequential(OrderedDict(flat=torch.nn.Flatten(), fc1=torch.nn.Linear(4, 2)))
    config = TrainRun(epochs=None, steps=3, batch_size=2, lr=1e-3, subset=None,
                      schedule="constant", warmup=0.3)
    history = fit(model, torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,)), config, seed=0,
                  layers=(), strength=0.0, device=torch.device("cpu"), progress="training toy")
    assert history["step"][-1] == 3
    assert "training toy" in capsys.readouterr().err
