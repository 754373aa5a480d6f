"""ParchGrad toy studies: the H-vs-L sums (claim C1) and the checkerboard linearity (C13)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from replication.errors import ConfigError
from replication.experiments.parchgrad import toys
from tolerance import FLOAT64, assert_close, atol


def test_seed_21_reproduces_the_authors_sums():
    sums = toys.toy_sums(21, "code_uniform").set_index("group")
    expected = {"H": (-0.1805, 0.4810), "L": (0.4055, -0.2554), "total": (0.2250, 0.2256)}
    for group, (dim1, dim2) in expected.items():  # the authors printed 4 decimals: ±half a unit
        assert sums.loc[group, "dim1"] == pytest.approx(dim1, abs=5e-5)
        assert sums.loc[group, "dim2"] == pytest.approx(dim2, abs=5e-5)
    assert abs(sums.loc["total", "direction_deg"] - 45.0) < 1.0


def test_vectors_follow_each_reading():
    uniform = toys.toy_vectors(3, "code_uniform")
    assert len(uniform) == 110 and set(uniform["group"]) == {"H", "L"}
    high, low = uniform[uniform.group == "H"], uniform[uniform.group == "L"]
    assert high["dim1"].abs().max() <= 0.05 and high["dim2"].abs().max() <= 0.5
    assert low[["dim1", "dim2"]].abs().to_numpy().max() <= 0.05
    # Same randn stream: the variance reading scales the 0.1 entries by √10, keeps the 1.0 ones.
    std = toys.toy_vectors(3, "text_normal_std")
    var = toys.toy_vectors(3, "text_normal_var")
    assert_close(var["dim1"], std["dim1"] * np.sqrt(10), ops=3, dtype=FLOAT64)
    np.testing.assert_array_equal(var.loc[var.group == "H", "dim2"],  # unscaled: the same draws
                                  std.loc[std.group == "H", "dim2"])
    with pytest.raises(ConfigError, match="code_uniform"):
        toys.toy_vectors(0, "gaussian")


def test_seed_sweep_fractions_are_deterministic():
    sweep = toys.toy_seed_sweep()
    assert len(sweep) == 3000
    summary = toys.toy_sweep_summary(sweep).set_index("reading")
    assert list(summary.index) == list(toys.READINGS)
    fractions = summary["fraction_l_dominated"]
    assert ((fractions > 0) & (fractions < 1)).all()
    pd.testing.assert_frame_equal(summary, check_exact=True, right=toys.toy_sweep_summary(toys.toy_seed_sweep()
                                                                  ).set_index("reading"))
    row = sweep[(sweep.reading == "code_uniform") & (sweep.seed == 21)].iloc[0]
    assert row["l_dominated"] and row["angle_total_to_diagonal_deg"] < 1.0
    # The sweep and the one-seed table agree, exactly: the same draws summed by the same calls.
    assert row["total_dim2"] == toys.toy_sums(21).iloc[2]["dim2"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkerboard_input_gradient_is_linear_in_k(dtype):
    table = toys.checkerboard_table(dtype=dtype)
    assert len(table) == 9 and set(table["stride"]) == {1, 2, 3}
    # Linear in k up to rounding: the scaled output gradient goes back through the two convs'
    # backward sums (12·7·7 and 64·7·7 terms), then is divided by k.
    rounding = atol(1.0, ops=12 * 49 + 64 * 49 + 2, dtype=dtype)
    assert (table["relative_deviation"] <= rounding).all()
    for _, rows in table.groupby("stride"):
        scaled = rows["max_abs_grad_over_k"].to_numpy()
        assert_close(scaled, np.full_like(scaled, scaled[0]), ops=2 * (12 * 49 + 64 * 49 + 2),
                     dtype=dtype)
        assert rows["max_abs_grad"].max() / rows["max_abs_grad"].min() == pytest.approx(
            1e6, rel=2 * rounding)


def test_checkerboard_shapes_and_readings():
    grad = toys.checkerboard_input_gradient(stride=2, k=1.0)
    assert grad.shape == (1, 1, 10, 10) and grad.abs().max() > 0
    assert toys.checkerboard_network(3).get_submodule("2").stride == (3, 3)
    assert toys.checkerboard_network(3, stride_on="first").get_submodule("2").stride == (1, 1)
    # Stride 1 is the same network whatever stride_on says; strides > 1 differ.
    first = toys.checkerboard_table(strides=[1, 2], scales=[1.0], stride_on="first")
    both = toys.checkerboard_table(strides=[1, 2], scales=[1.0], stride_on="both")
    assert first.loc[0, "max_abs_grad"] == both.loc[0, "max_abs_grad"]
    assert first.loc[1, "max_abs_grad"] != both.loc[1, "max_abs_grad"]
    with pytest.raises(ConfigError, match="stride_on"):
        toys.checkerboard_network(2, stride_on="middle")
