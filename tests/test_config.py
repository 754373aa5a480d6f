"""params.yaml: profiles merge over the base sections; errors name the problem."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from replication.config import PROFILES, deep_merge, get, load_params
from replication.errors import ConfigError

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


def test_every_profile_loads_from_the_repository_params():
    for profile in PROFILES:
        params = load_params(ROOT / "params.yaml", profile)
        assert params["profile"] == profile and "profiles" not in params
    assert load_params(ROOT / "params.yaml", "paper")["imagenet"]["source"] == "ilsvrc2012_val"
    assert load_params(ROOT / "params.yaml", "quick")["imagenet"]["source"] == "sample"


def test_profile_overrides_only_what_it_states():
    base = {"a": {"x": 1, "y": 2}, "b": 3}
    assert deep_merge(base, {"a": {"y": 5}}) == {"a": {"x": 1, "y": 5}, "b": 3}
    assert base == {"a": {"x": 1, "y": 2}, "b": 3}


def test_unknown_profile_and_missing_keys_are_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "fast", "profiles": {p: {} for p in PROFILES}}))
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*smoke"):
        load_params(path)
    params = load_params(path, "smoke")
    with pytest.raises(ConfigError, match="'data.network.attempts'"):
        get(params, "data.network.attempts")
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
