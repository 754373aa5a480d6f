"""The cost of a profile: passes counted from the settings, nothing computed."""

from __future__ import annotations

import json

from conftest import ROOT
from replication.config import load_params
from replication.cost import Cost, render, seconds_per_pass, stage_costs


def test_training_passes_follow_the_settings():
    params = load_params(ROOT / "params.yaml", "smoke")
    rows = dict(stage_costs(params))
    smoke = params["train"]["true_labels"]
    assert rows["train@mnist-cnn-true"].forward_backward == smoke["epochs"] * smoke["subset"]
    paper = dict(stage_costs(load_params(ROOT / "params.yaml", "paper")))
    assert paper["train@mnist-cnn-true"].forward_backward == 50 * 55_000  # the authors' recipe


def test_measured_throughput_turns_passes_into_time(tmp_path):
    table = tmp_path / "throughput.json"
    table.write_text(json.dumps({"device": "a test GPU", "models": {
        "m": {"forward_backward_ms": 2.0, "forward_ms": 1.0}}}))
    rates, source = seconds_per_pass(["m"], table, tflops=1.0)
    assert rates == {"m": (0.002, 0.001)} and "a test GPU" in source
    text = render([("s", Cost("m", "x", 1800, 3600))], rates, source)
    assert "| s | 1,800 | 3,600 | 7.2 s |" in text
