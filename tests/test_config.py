"""params.yaml: one override order, every key known, every value typed; errors name the fix."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Literal

import pytest
import yaml

from conftest import ROOT
from replication.config import (PROFILES, PerModelSettings, deep_merge, effective_params,
                                load_params, load_settings, merge_layers)
from replication.errors import ConfigError
from replication.settings import Count, Range, Settings, settings

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


def _params(tmp_path, edit) -> object:
    """The repository's params.yaml with ``edit(raw)`` applied, written to a temporary file."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_every_profile_loads_and_validates():
    for profile in PROFILES:
        params = load_params(ROOT / "params.yaml", profile)
        assert params["profile"] == profile and "profiles" not in params
    assert load_params(ROOT / "params.yaml", "paper")["imagenet"]["source"] == "ilsvrc2012_val"
    assert load_params(ROOT / "params.yaml", "quick")["imagenet"]["source"] == "sample"


def test_mappings_merge_key_by_key_and_leave_the_base_alone():
    base = {"a": {"x": 1, "y": 2}, "b": 3}
    assert deep_merge(base, {"a": {"y": 5}}) == {"a": {"x": 1, "y": 5}, "b": 3}
    assert base == {"a": {"x": 1, "y": 2}, "b": 3}


@settings
class _Inner(Settings):
    images: Count
    steps: int = 8


@settings
class _Section(PerModelSettings):
    mode: Literal["a", "b"] = "a"
    inner: _Inner
    models: dict[str, "_Section"] = None  # type: ignore[assignment]


def test_a_profile_beats_a_base_per_model_entry():
    """The override order: base, base's model entry, profile, profile's model entry."""
    base = {"inner": {"images": 100}, "models": {"m": {"inner": {"images": 50, "steps": 16}}}}
    profile = {"inner": {"images": 2}, "models": {"n": {"mode": "b"}}}
    merged = merge_layers(_Section, base, profile)
    assert merged["inner"] == {"images": 2}
    assert merged["models"]["m"] == {"inner": {"images": 2, "steps": 16}}  # the profile wins
    assert merged["models"]["n"] == {"inner": {"images": 2}, "mode": "b"}


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["profiles"]["smoke"]["sanity_checks"]["mnist"].update(imags=4),
     r"profiles.smoke.sanity_checks.mnist.imags: unknown key; did you mean 'images'"),
    (lambda r: r["data"].update(validaton_size=100),
     r"data.validaton_size: unknown key; did you mean 'validation_size'"),
    (lambda r: r.update(sanity_check={}), r"sanity_check: unknown key; did you mean 'sanity_checks'"),
    (lambda r: r["profiles"]["smoke"]["sanity_checks"]["mnist"].update(images=-4),
     r"sanity_checks.mnist.images is -4; it must be >= 0"),
    (lambda r: r["profiles"]["smoke"]["sanity_checks"]["mnist"].update(images="4"),
     r"sanity_checks.mnist.images is '4' \(a string\); it must be .*integer.*remove the quotes"),
    (lambda r: r["profiles"]["smoke"]["sanity_checks"]["mnist"].update(images=2.5),
     r"sanity_checks.mnist.images is 2.5 \(a number\)"),
    (lambda r: r.update(seed="0"), r"seed is '0' \(a string\)"),
    (lambda r: r["data"]["network"].update(attempts=0), r"data.network.attempts is 0; it must be >= 1"),
    (lambda r: r["data"]["network"].update(timeout_secs=5),
     r"data.network.timeout_secs: unknown key; did you mean 'timeout_seconds'"),
    (lambda r: r.update(profile="smok"), r"unknown profile 'smok'; did you mean 'smoke'"),
    (lambda r: r.update(device="gpu"), r"device is 'gpu'"),
])
def test_a_bad_setting_is_an_error_that_names_the_fix(tmp_path, edit, message):
    path = _params(tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, "smoke" if "profile" not in message else None)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: quick\nseed: [0\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        load_settings(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")


def test_params_check_runs_before_dvc_and_fails_on_a_profile_typo(tmp_path):
    """What `make reproduce` runs before `dvc repro`: a typo stops it, with the message."""
    path = _params(tmp_path, lambda r: r.update(profile="smok"))
    result = subprocess.run([sys.executable, "-m", "replication", "params", "--check",
                             "--params", str(path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown profile 'smok'; did you mean 'smoke'" in result.stderr
    assert "params --check" in (ROOT / "Makefile").read_text()


def test_every_profile_is_checked_not_only_the_active_one(tmp_path):
    path = _params(tmp_path, lambda r: r["profiles"]["paper"].setdefault("train", {}).update(
        epoch=3))
    with pytest.raises(ConfigError, match="profiles.paper.train.epoch: unknown key"):
        effective_params(yaml.safe_load(path.read_text()), "quick")


def test_settings_ranges_and_choices():
    @settings
    class Knobs(Settings):
        fraction: Annotated[float, Range(gt=0, le=1)]
        kind: Literal["x", "y"]

    assert Knobs.from_params({"fraction": 1, "kind": "y"}, "k").fraction == 1
    with pytest.raises(ConfigError, match="k.fraction is 0; it must be > 0"):
        Knobs.from_params({"fraction": 0, "kind": "x"}, "k")
    with pytest.raises(ConfigError, match="k.kind is 'z' .*one of 'x', 'y'"):
        Knobs.from_params({"fraction": 0.5, "kind": "z"}, "k")
    with pytest.raises(ConfigError, match="params.yaml lacks k.kind"):
        Knobs.from_params({"fraction": 0.5}, "k")
    with pytest.raises(ConfigError, match="k.fraction is true"):
        Knobs.from_params({"fraction": True, "kind": "x"}, "k")
    with pytest.raises(ConfigError, match="k.fraction is nan"):
        Knobs.from_params({"fraction": float("nan"), "kind": "x"}, "k")
