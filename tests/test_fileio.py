"""fileio: JSON-safe values and atomic npz files."""

from __future__ import annotations

import json
import math

import numpy as np

from replication.fileio import json_safe, write_npz


def test_json_safe_makes_numpy_and_non_finite_values_strict_json():
    value = {1: [np.float32(0.5), np.int64(3), math.nan, (math.inf, -math.inf)], "b": np.bool_(True)}
    assert json_safe(value) == {"1": [0.5, 3, None, [None, None]], "b": True}
    assert json_safe(value, infinity_as_string=True)["1"][3] == ["inf", "-inf"]
    json.dumps(json_safe(value), allow_nan=False)


def test_write_npz_round_trips_and_leaves_no_partial_file(tmp_path):
    arrays = {"maps": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "b"])}
    write_npz(tmp_path / "sub" / "maps.npz", arrays)
    with np.load(tmp_path / "sub" / "maps.npz") as data:
        assert set(data.files) == set(arrays)
        assert np.array_equal(data["maps"], arrays["maps"])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["maps.npz"]
