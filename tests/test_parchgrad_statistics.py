"""The ParchGrad statistics stage: the authors' bug beside the corrected statistics, the
summaries, the statistics sets, and the stage on a trimmed MNIST set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import stage_context
from replication.attribution import ChannelStatistics, LayerStatistics
from replication.errors import ConfigError
from replication.experiments.parchgrad import statistics as S
from replication.experiments.parchgrad.statistics_checks import select_high, selection_difference
from replication.models import create_model


def test_authors_bug_copies_the_last_convs_statistics():
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % 3
    gaps = {name: torch.rand(300, c, generator=gen) + 0.3 * (labels == 1)[:, None]
            for name, c in (("a", 4), ("b", 6), ("last", 8))}
    fixed = ChannelStatistics.from_gaps(gaps, labels, 3)
    bug = S.authors_bug_statistics(gaps, labels, 3, fixed)
    last = bug.layer("last").log_p
    for name, c in (("a", 4), ("b", 6)):
        assert torch.equal(bug.layer(name).log_p, last[:c])
        assert not torch.equal(fixed.layer(name).log_p, last[:c])
        assert bug.layer(name).shapiro_p is fixed.layer(name).shapiro_p  # per layer, shared
    assert torch.equal(fixed.layer("last").log_p, last)
    assert S.last_layer_copy(bug) == {"a": True, "b": True, "last": True}
    assert S.last_layer_copy(fixed) == {"a": False, "b": False, "last": True}
    assert bug.meta["bug_source_layer"] == "last" and bug.meta["options"]["authors_stats_bug"]
    table = selection_difference(fixed, bug, q=0.25).set_index("layer")
    assert table.loc["last", "jaccard_mean"] == 1.0
    assert (selection_difference(fixed, fixed)["jaccard_mean"] == 1.0).all()

    wide = {"a": torch.rand(300, 9, generator=gen), "last": gaps["last"]}
    with pytest.raises(ConfigError, match="more channels than the last conv"):
        S.authors_bug_statistics(wide, labels, 3, ChannelStatistics.from_gaps(wide, labels, 3))
    instance = ChannelStatistics.from_gaps(gaps, labels, 3, "instance")
    with pytest.raises(ConfigError, match="instance mode"):
        S.authors_bug_statistics(gaps, labels, 3, instance)


def test_summary_counts_float32_ties():
    labels = torch.arange(2000) % 2
    gap = torch.randn(2000, 20, generator=torch.Generator().manual_seed(0))
    gap[:, 0] += 40.0 * (labels == 0)                  # p underflows float32 for class 0
    gap[:, 1] += 60.0 * (labels == 0)
    exact = ChannelStatistics.from_gaps({"conv": gap}, labels, 2, shapiro=False).layer("conv")
    assert S.float32_underflow(exact.log_p)[:2, 0].all()
    assert select_high(exact.log_p, 0.05)[:, 0].sum() == 1  # exact p: one channel
    summary = S.statistics_summary(ChannelStatistics("class", {"conv": LayerStatistics(
        log_p=exact.log_p)}), q=0.05)
    assert summary["layers"]["conv"]["float32_underflow"] == pytest.approx(2 / 40)
    assert summary["layers"]["conv"]["classes_tied_beyond_q"] == 0.5


def test_mnist_statistics_set_excludes_the_validation_split(tmp_path, mirror):
    from replication.data import mnist

    mnist.prepare("mnist", tmp_path, mirror=mirror)
    dataset = S.mnist_statistics_set(tmp_path, validation_size=5000)
    images, labels = mnist.load(tmp_path, "train")
    assert len(dataset) == 55_000
    assert torch.equal(dataset[0][0][0], torch.from_numpy(images[5000] / np.float32(255)))
    assert int(dataset[0][1]) == labels[5000]


def test_statistics_stage_writes_corrected_and_bug_statistics(tmp_path, mirror):
    """The stage on a seeded draw of 300 images of the MNIST statistics set with an untrained
    CNN."""
    from replication.data import mnist

    mnist.prepare("mnist", tmp_path / "mnist", mirror=mirror)
    torch.manual_seed(0)
    torch.save({"state_dict": create_model("mnist_cnn").model.state_dict()}, tmp_path / "cnn.pt")
    ctx = stage_context(
        "parchgrad_statistics", inputs={"mnist": tmp_path / "mnist", "mnist_cnn": tmp_path / "cnn.pt"},
        outputs={"out": tmp_path / "stats", "metrics": tmp_path / "metrics"},
        parchgrad={"models": {"mnist_cnn": {"checkpoint": "cnn.pt"}},
                   "statistics": {"models": ["mnist_cnn"], "subset": {"mnist_cnn": 300}}})
    S.run(ctx)
    corrected = ChannelStatistics.load(tmp_path / "stats" / "mnist_cnn.pt")
    bug = ChannelStatistics.load(tmp_path / "stats" / "mnist_cnn-authors-bug.pt")
    assert corrected.mode == "class" and list(corrected.layers) == ["conv1", "conv2"]
    assert S.last_layer_copy(bug) == {"conv1": True, "conv2": True}
    summary = json.loads((tmp_path / "metrics" / "mnist_cnn.json").read_text())
    assert summary["n_images"] == 300 and summary["fallback_note"] == ""
    assert summary["subset_note"] == "300 of the set's 55000 images, drawn with seed 0"
    assert list(summary["options"]) == ["equal_var", "pvalue_precision", "authors_stats_bug",
                                        "shapiro", "shapiro_max_samples", "seed"]
    assert summary["authors_bug"]["last_layer_copy"] == {"conv1": True, "conv2": True}
    assert 0 <= summary["shapiro_below_0.05"]["fraction"] <= 1


def test_a_statistics_subset_is_a_seeded_draw_in_the_sets_order():
    data = TensorDataset(torch.arange(100).float()[:, None], torch.arange(100))
    drawn, note = S.seeded_subset(data, 10, seed=3)
    again, _ = S.seeded_subset(data, 10, seed=3)
    labels = drawn.tensors[1]
    assert len(drawn) == 10 and torch.equal(labels, again.tensors[1])
    assert torch.equal(labels, labels.sort().values) and not torch.equal(labels, torch.arange(10))
    assert note == "10 of the set's 100 images, drawn with seed 3"
    assert S.seeded_subset(data, None, 0) == (data, "") and S.seeded_subset(data, 100, 0)[1] == ""
